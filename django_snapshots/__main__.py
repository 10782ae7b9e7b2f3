"""``python -m django_snapshots <command>`` (or ``django-snapshots <command>``):
the ``manage.py snapshots`` commands, outside a Django project.

Without ``--settings`` or ``DJANGO_SETTINGS_MODULE``, Django is configured in
this process only, with the default storage: ``./snapshots`` under the
current directory, with checksums.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from django_snapshots._cli import (
    CommandFailed,
    Console,
    add_program_options,
    add_subcommands,
    run,
)
from django_snapshots.exceptions import SnapshotError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command from *argv* (default ``sys.argv[1:]``) and return the
    exit status: 0 on success, 1 when the command failed, 2 for bad usage,
    130 when interrupted by Ctrl-C, 141 when the reader of standard output
    went away, 143 when terminated by SIGTERM.

    .. versionadded:: 0.1
    """
    parser = _parser()
    options = parser.parse_args(argv)
    try:
        _configure_django(settings_module=options.settings, pythonpath=options.pythonpath)
        run(options, Console())
    except CommandFailed as exc:
        if options.traceback:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.returncode
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of standard output went away: stop like any Unix tool,
        # without a message (run() pointed standard output at /dev/null, so
        # that nothing complains at exit).
        return 141
    return 0


def _parser() -> argparse.ArgumentParser:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not program or program == "__main__.py":
        program = "python -m django_snapshots"
    parser = argparse.ArgumentParser(
        prog=program,
        description="Operate a django-snapshots storage.  Without --settings (or "
        "DJANGO_SETTINGS_MODULE) the storage is ./snapshots in the current directory, with "
        "checksums.  The options below may also come after the command.",
    )
    add_program_options(parser)
    add_subcommands(parser)
    return parser


def _configure_django(*, settings_module: str | None, pythonpath: str | None) -> None:
    import django
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    if pythonpath:
        sys.path.insert(0, pythonpath)
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    name = os.environ.get("DJANGO_SETTINGS_MODULE")
    if name:
        # As with manage.py, a project's settings are found from where the
        # command runs (a console script does not put it on the path).
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            django.setup()
        except (ImportError, ImproperlyConfigured, SnapshotError) as exc:
            # SnapshotError: a storage object built in the settings module
            # refused its arguments.
            raise CommandFailed(
                f"cannot load the settings module {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    elif not settings.configured:
        settings.configure(INSTALLED_APPS=["django_snapshots"])
        django.setup()


if __name__ == "__main__":
    sys.exit(main())

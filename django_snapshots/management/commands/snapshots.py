"""``manage.py snapshots <command>``: operate the configured storage stack.

The same commands run outside a project as ``python -m django_snapshots``.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_snapshots._cli import CommandFailed, Console, add_subcommands, run


class Command(BaseCommand):
    help = (
        "Operate the storage of SNAPSHOTS['STORAGE']: check, ls, put, get, rm, sync, "
        "verify, keygen, demo.  Run 'snapshots COMMAND --help' for one command."
    )
    # A backup must not be blocked by an unrelated app's system check; the
    # storage's own configuration errors are reported by each command.
    requires_system_checks: ClassVar[list[str]] = []  # type: ignore[misc]
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        # Django declares its own options (--settings, -v, ...) on this
        # parser; add_subcommands declares them on each sub-command too, so
        # that they may come after it.
        add_subcommands(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        # The raw streams, not Django's OutputWrapper: progress bars and
        # `get KEY -` need to write without an added line ending.
        console = Console(
            out=options.get("stdout") or sys.stdout,
            err=options.get("stderr") or sys.stderr,
            stdin=options.get("stdin"),
        )
        try:
            run(options, console)
        except CommandFailed as exc:
            raise CommandError(str(exc), returncode=exc.returncode) from exc
        except BrokenPipeError:
            if options.get("stdout") is None:
                # Standard output's reader went away: end quietly with the
                # status of a Unix tool, as `django-snapshots` does.
                raise SystemExit(141) from None
            raise CommandError("the output was closed before the end", returncode=141) from None

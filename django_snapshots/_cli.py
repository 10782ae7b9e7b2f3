"""The ``snapshots`` commands, shared by ``manage.py snapshots`` and
``python -m django_snapshots`` (the ``django-snapshots`` script).

:func:`add_subcommands` declares the sub-commands on an argparse parser and
:func:`run` carries one out on the configured storage
(:func:`~django_snapshots.get_storage`).  A user mistake (a missing or invalid
key, a misconfigured setting, a stack that cannot do what was asked) raises
:class:`CommandFailed` with a one-line message, which each front end prints
without a traceback before exiting with its *returncode*.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import errno
import importlib
import io
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO, cast

from tqdm import tqdm

from django_snapshots._inspect import (
    PROBE_PREFIX,
    describe_layers,
    find_checksum_layer,
    find_write_only_layer,
    is_probe_key,
    probe_storage,
)
from django_snapshots.conf import InvalidStorageSettingError, get_storage
from django_snapshots.exceptions import SnapshotError
from django_snapshots.storage.cleanup import _cleanup_of, parse_duration
from django_snapshots.storage.keys import validate_key, validate_prefix, validate_sync_prefixes
from django_snapshots.storage.protocols import requires_advanced_storage
from django_snapshots.storage.streams import ObservedReader, iter_chunks
from django_snapshots.storage.wrappers.base import StorageWrapper

__all__ = ["CommandFailed", "Console", "add_program_options", "add_subcommands", "run"]

#: What ``-`` stands for in ``put`` and ``get``.
STANDARD_STREAM = "-"

# A write can go quiet for a while (a slow link, a paused database dump)
# without having crashed: ``cleanup`` never takes a shorter age from an operator.
_MIN_CLEANUP_AGE = datetime.timedelta(minutes=1)


class CommandFailed(Exception):
    """A command could not do what was asked; the message says why in one line.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, returncode: int = 1) -> None:
        super().__init__(message)
        self.returncode = returncode


@dataclass
class Console:
    """The streams a command talks through: *out* for results, *err* for
    progress bars, *stdin* for ``put -`` (standard input when ``None``).

    .. versionadded:: 0.1
    """

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: IO[bytes] | None = None

    def print(self, text: str = "") -> None:
        if self.out is None:  # standard output closed (``>&-``): a status line goes nowhere
            return
        self.out.write(text + "\n")

    def print_during_progress(self, text: str = "") -> None:
        """Print *text* while a progress bar may be on screen, keeping the bar intact."""
        tqdm.write(text, file=self.out)

    def progress(self, *, total: int | None, desc: str, unit: str = "B") -> tqdm[Any]:
        """Return a progress bar on *err*, drawn only when *err* is a terminal."""
        byte_units = unit == "B"
        return tqdm(
            total=total, desc=desc, unit=unit, unit_scale=byte_units,
            unit_divisor=1024 if byte_units else 1000, file=self.err,
            disable=not _is_terminal(self.err), leave=False, dynamic_ncols=True,
        )  # fmt: skip

    def binary_out(self) -> IO[bytes]:
        if self.out is None:
            raise CommandFailed("standard output is closed; give a file as DEST")
        buffer = getattr(self.out, "buffer", None)
        if buffer is None:
            raise CommandFailed("this output stream does not accept bytes; give a file as DEST")
        self.out.flush()
        return buffer  # type: ignore[no-any-return]

    def binary_in(self) -> IO[bytes]:
        return self.stdin if self.stdin is not None else sys.stdin.buffer


def add_program_options(parser: argparse.ArgumentParser, *, on_subcommand: bool = False) -> None:
    """Declare Django's command options on *parser*: ``--settings``,
    ``--pythonpath``, ``-v/--verbosity``, ``--traceback``, ``--no-color`` and
    ``--force-color``.

    :func:`add_subcommands` declares them again on every sub-command
    (*on_subcommand*: hidden from its help, and without defaults, so that
    they only set what is given there), which lets them come anywhere on
    the line, as with any ``manage.py`` command.

    .. versionadded:: 0.1
    """

    def option(*flags: str, help: str, **kwargs: Any) -> None:
        if on_subcommand:
            kwargs.update(default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            kwargs["help"] = help
        parser.add_argument(*flags, **kwargs)

    option("--settings", metavar="MODULE",
           help="Django settings module to read SNAPSHOTS from, e.g. mysite.settings "
           "(default: DJANGO_SETTINGS_MODULE, else the built-in default storage)")  # fmt: skip
    option("--pythonpath", metavar="DIR",
           help="directory to add to the import path, e.g. the one holding manage.py")  # fmt: skip
    option("-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=1,
           help="verbosity level, as for any Django command (accepted, no effect)")  # fmt: skip
    option("--traceback", action="store_true", help="show the full traceback of an error")
    option("--no-color", action="store_true", help="accepted for Django's sake, no effect")
    option("--force-color", action="store_true", help="accepted for Django's sake, no effect")


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Declare every sub-command on *parser* (``dest="subcommand"``).

    .. versionadded:: 0.1
    """
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = subparsers.add_parser(
            name, help=summary, description=f"{summary}. {description}".strip()
        )
        add_program_options(sub, on_subcommand=True)
        return sub

    add("check", "Show the storage stack and test it with a round trip",
        "Prints each layer with its tier (basic or advanced), then writes, reads back, "
        f"verifies, lists and deletes a probe object under {PROBE_PREFIX!r}, with timings. "
        "Exits non-zero if any step fails.")  # fmt: skip
    ls = add("ls", "List stored keys",
             f"Prints every key starting with PREFIX, one per line.  Keys under {PROBE_PREFIX!r} "
             "(probe objects that `check` could not delete) are listed only when PREFIX starts "
             "with it.")  # fmt: skip
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX",
                    help="only keys starting with this (default: all keys)")  # fmt: skip
    put = add("put", "Store a file under a key", "Replaces any object already at KEY.")
    put.add_argument("src", metavar="SRC", help="file to store, or - for standard input")
    put.add_argument("key", metavar="KEY", help="key to store it under, e.g. db/latest.dump")
    get = add("get", "Copy a stored object to a file",
              "A new DEST is created readable by its owner only, and only once the whole object "
              "was read (and verified, when the stack checks digests).  An existing file is "
              "replaced only with --force, atomically and keeping its mode; a read-only file "
              "never is.  A symbolic link is followed: what it points to is written (a link to "
              "nothing is refused).  A character device (/dev/null, a terminal) or a FIFO is "
              "written through, as are - (standard output) and /dev/stdout: bytes go out as "
              "they are read, so a failed verification is reported (exit status 1) after "
              "them.")  # fmt: skip
    get.add_argument("key", metavar="KEY", help="key of the object to copy")
    get.add_argument("dest", metavar="DEST",
                     help="file to write, directory to write KEY's last segment into "
                     "(an existing one, or a name ending with /), or - for standard "
                     "output")  # fmt: skip
    get.add_argument("-f", "--force", action="store_true",
                     help="replace DEST if it is an existing (writable) file")  # fmt: skip
    rm = add("rm", "Delete a stored object", "Fails if nothing is stored at KEY, unless --force.")
    rm.add_argument("key", metavar="KEY", help="key of the object to delete")
    rm.add_argument("-f", "--force", action="store_true", help="do not fail if KEY is missing")
    sync = add("sync", "Mirror one prefix onto another",
               "Afterwards the keys under DST_PREFIX are exactly those under SRC_PREFIX, with "
               "the same bytes: keys only under DST_PREFIX are deleted.  Both prefixes end with "
               "'/' and must not overlap; the storage must be of the advanced tier.")  # fmt: skip
    sync.add_argument("src_prefix", metavar="SRC_PREFIX", help="e.g. daily/")
    sync.add_argument("dst_prefix", metavar="DST_PREFIX", help="e.g. mirror/daily/")
    verify = add("verify", "Check stored objects against their digests",
                 "Reads every object under PREFIX through the stack down to its Checksum layer "
                 "(logged and retried like any read; Encrypt and Compress hand the stored bytes "
                 "on as they are, so no key is needed), prints "
                 "each one that fails, and each checksum sidecar whose object is missing, and "
                 "exits non-zero if any does, or if there is nothing to verify (unless "
                 f"--allow-empty).  Keys under {PROBE_PREFIX!r} are verified only when PREFIX "
                 "starts with it.")  # fmt: skip
    verify.add_argument("prefix", nargs="?", default="", metavar="PREFIX",
                        help="only keys starting with this (default: all keys)")  # fmt: skip
    verify.add_argument("--allow-empty", action="store_true",
                        help="succeed when no object is found under PREFIX")  # fmt: skip
    cleanup = add("cleanup", "Remove what crashed writes left behind",
                  "Finds the pieces that writes killed midway left in the storage (temporary "
                  "files, partial uploads, incomplete multipart uploads), never a stored key, "
                  "and removes each one under PREFIX that nothing has written to for --older-than "
                  "(default 24h): a write still running keeps its piece fresh.  Prints one line "
                  "per leftover and a count.  With --dry-run, prints what would be removed and "
                  "changes nothing.")  # fmt: skip
    cleanup.add_argument("prefix", nargs="?", default="", metavar="PREFIX",
                         help="only leftovers under this (default: everywhere)")  # fmt: skip
    cleanup.add_argument("--older-than", default="24h", metavar="DURATION",
                         help="how long a leftover must have been left alone, as a whole number "
                         "and a unit: 90s, 30m, 24h, 7d or 2w (default: 24h; at least "
                         f"{_age(_MIN_CLEANUP_AGE)})")  # fmt: skip
    cleanup.add_argument("-n", "--dry-run", action="store_true",
                         help="only print what would be removed")  # fmt: skip
    keygen = add("keygen", "Make a new age identity for Encrypt",
                 "Writes a new secret key to FILE, created readable and writable by its owner "
                 "only (mode 0600), in the format of age-keygen, and prints its public key, the "
                 "recipient (age1...), on standard output: give the recipient to the servers "
                 "that write backups (Encrypt's recipients), and FILE to the machines that "
                 "restore them (identities_file), or to age -d -i FILE.  An existing FILE is "
                 "never replaced, and the secret key is never printed.  Needs pyrage: "
                 "pip install 'django-snapshots[encrypt]'.")  # fmt: skip
    keygen.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="identity file to create; it must not exist")  # fmt: skip
    add("demo", "Take a tour of the library on a temporary local store",
        "Builds a full stack, streams an artifact through it, shows the JSON audit log, "
        "corrupts a byte on disk and catches it, and shows a basic-tier stack refusing an "
        "advanced operation.  Touches nothing outside a temporary directory.")  # fmt: skip


def run(options: argparse.Namespace | Mapping[str, Any], console: Console) -> None:
    """Carry out the sub-command described by *options* (parsed by a parser
    set up with :func:`add_subcommands`); raise :class:`CommandFailed` on a
    user mistake or a failed operation.

    .. versionadded:: 0.1
    """
    values = dict(vars(options) if isinstance(options, argparse.Namespace) else options)
    command = _COMMANDS[values["subcommand"]]
    try:
        with _sigterm_raises(), _standard_output_for_data_only(console) as data_console:
            command(values, data_console)
    except (CommandFailed, BrokenPipeError):
        # A closed output (``get KEY - | head``) is the reader's choice, not
        # an error of the command: each front end ends quietly.
        raise
    except _Terminated:
        raise CommandFailed("terminated by SIGTERM", returncode=128 + signal.SIGTERM) from None
    except InvalidStorageSettingError as exc:
        raise CommandFailed(f"misconfigured: {exc}") from exc
    except (SnapshotError, OSError) as exc:
        raise CommandFailed(f"{type(exc).__name__}: {exc}") from exc


def _check(options: dict[str, Any], console: Console) -> None:
    storage = get_storage()
    console.print("Storage stack, outermost layer first:")
    for position, (text, tier) in enumerate(describe_layers(storage), 1):
        console.print(f"  {position}. [{tier:<8}] {text}")
    console.print(f"Round trip with a probe object under {PROBE_PREFIX!r}:")
    failed = None
    for step in probe_storage(storage):
        status = "FAILED" if step.error else "skipped" if step.skipped else "ok"
        note = step.error or step.detail
        line = f"  {step.name:<7} {status:<7} {step.seconds * 1000:9.1f} ms  {note}"
        console.print(line.rstrip())
        failed = failed or (step.name if step.error else None)
    if failed:
        raise CommandFailed(f"the storage failed the round trip at {failed}")
    console.print("OK")


def _ls(options: dict[str, Any], console: Console) -> None:
    prefix = validate_prefix(options["prefix"])
    if console.out is None:
        raise CommandFailed("standard output is closed: there is nowhere to list the keys")
    for key in _without_probes(get_storage().list(prefix), prefix):
        console.print(key)


def _put(options: dict[str, Any], console: Console) -> None:
    key = validate_key(options["key"])
    src = options["src"]
    storage = get_storage()
    with (
        _open_source(src, console) as (stream, size),
        console.progress(total=size, desc=key) as bar,
    ):
        counted = _CountingReader(stream, bar.update)
        storage.write(key, cast(IO[bytes], counted))
    console.print(f"stored {counted.count} bytes at {key}")


def _get(options: dict[str, Any], console: Console) -> None:
    key = validate_key(options["key"])
    dest = options["dest"]
    # run() points file descriptor 1 at standard error while a command
    # runs: /dev/stdout and the like are standard output only through *console*.
    to_standard_output = dest == STANDARD_STREAM or (
        _fileno(console.out) is not None and _names_standard_output(dest)
    )
    target = None
    if not to_standard_output:
        basename = key.rsplit("/", 1)[-1]
        target = _Destination.resolve(dest, basename, force=options.get("force", False))
    storage = get_storage()
    if target is not None:
        _refuse_a_destination_inside_the_store(target, storage)
    try:
        stream = storage.read(key)
    except FileNotFoundError:
        raise CommandFailed(f"no object at {key!r}") from None
    with stream, console.progress(total=None, desc=key) as bar:
        chunks = _counted(iter_chunks(stream), bar.update)
        if target is None:
            out = console.binary_out()
            for chunk in chunks:
                out.write(chunk)
            out.flush()
        else:
            target.write(chunks)


def _rm(options: dict[str, Any], console: Console) -> None:
    key = validate_key(options["key"])
    storage = get_storage()
    if not options["force"] and not storage.exists(key):
        raise CommandFailed(f"no object at {key!r}")
    storage.delete(key)


def _sync(options: dict[str, Any], console: Console) -> None:
    src, dst = validate_sync_prefixes(options["src_prefix"], options["dst_prefix"])
    storage = get_storage()
    requires_advanced_storage(storage, "sync")
    storage.sync(src, dst)  # type: ignore[attr-defined]
    console.print(f"{dst} now mirrors {src}")


def _verify(options: dict[str, Any], console: Console) -> None:
    prefix = validate_prefix(options["prefix"])
    storage = get_storage()
    checksum = find_checksum_layer(storage)
    if checksum is None:
        raise CommandFailed(
            f"the storage {storage!r} has no Checksum layer, so nothing records the digests "
            "to verify against; add django_snapshots.storage.Checksum to the stack"
        )
    if find_write_only_layer(checksum.layer) is not None:
        raise CommandFailed(
            "cannot verify: the Checksum layer sits above an Encrypt layer that holds no "
            "identity, so its digests are of plaintext this stack cannot decrypt; give Encrypt "
            "its identities, or put Checksum below Encrypt to verify ciphertext without keys"
        )
    keys, orphans = checksum.keys_to_verify(prefix)
    keys = list(_without_probes(keys, prefix))
    if not keys and not options.get("allow_empty", False):
        where = f"under {prefix!r}" if prefix else "in the storage"
        raise CommandFailed(
            f"nothing to verify: no object {where} (--allow-empty makes this a success)"
        )
    failures = 0
    with console.progress(total=len(keys), desc="verify", unit="obj") as bar:
        for key in keys:
            failure = checksum.failure(key, orphan=key in orphans)
            if failure is not None:
                failures += 1
                console.print_during_progress(f"FAILED {key}: {failure}")
            bar.update(1)
    noun = "object" if len(keys) == 1 else "objects"
    if failures:
        raise CommandFailed(f"{failures} of {len(keys)} {noun} failed verification")
    console.print(f"verified {len(keys)} {noun}: all intact")


def _cleanup(options: dict[str, Any], console: Console) -> None:
    prefix = validate_prefix(options["prefix"])
    text = options.get("older_than", "24h")
    try:
        older_than = parse_duration(text)
    except ValueError as exc:
        raise CommandFailed(f"--older-than: {exc}") from None
    # As it was read: the operator's spacing (a newline, a vertical tab)
    # must not reach the report, nor start a line of its own there.
    text = text.strip().lower()
    if older_than < _MIN_CLEANUP_AGE:
        raise CommandFailed(
            f"--older-than {text} would remove the pieces of writes that are "
            f"still running; give at least {_age(_MIN_CLEANUP_AGE)}"
        )
    dry_run = bool(options.get("dry_run", False))
    storage = get_storage()
    clean = _cleanup_of(storage, storage)
    now = datetime.datetime.now(datetime.timezone.utc)
    leftovers = clean(prefix, older_than=older_than, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for leftover in leftovers:
        details = [leftover.kind, f"last written {_age(leftover.age(now))} ago"]
        if leftover.size is not None:
            details.append(f"{leftover.size} bytes")
        # repr: leftovers are named so that no key can name them (a DEL, a
        # backslash), and an operator needs the exact name, never a shortened one.
        console.print(f"{verb} {leftover.name!r} ({', '.join(details)})")
    noun = "leftover" if len(leftovers) == 1 else "leftovers"
    where = f" under {prefix!r}" if prefix else ""
    older = f"older than {text}"
    if dry_run:
        console.print(
            f"would remove {len(leftovers)} {noun}{where} {older} (dry run: nothing changed)"
        )
    else:
        console.print(f"removed {len(leftovers)} {noun}{where} {older}")


def _age(age: datetime.timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _keygen(options: dict[str, Any], console: Console) -> None:
    output = options["output"]
    if output == STANDARD_STREAM:
        raise CommandFailed(
            "keygen never writes the secret key to standard output: give -o FILE, "
            "a file that does not exist yet"
        )
    try:
        age = importlib.import_module("pyrage")
    except ImportError:
        raise CommandFailed(
            "keygen needs pyrage: pip install 'django-snapshots[encrypt]'"
        ) from None
    identity = age.x25519.Identity.generate()
    recipient = str(identity.to_public())
    # The layout of age-keygen, which age -d -i and Encrypt both read.
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    _create_secret_file(output, f"# created: {created}\n# public key: {recipient}\n{identity}\n")
    console.print(recipient)


def _create_secret_file(path: str, text: str) -> None:
    """Create *path* readable and writable by its owner only, holding *text*;
    refuse in one line if anything (a file, a link, a device) is already
    there, and leave nothing behind on failure."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        # O_EXCL: never a file that exists, nor one a symbolic link leads to.
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CommandFailed(
            f"cannot write {path!r}: it already exists, and keygen never replaces a key "
            "(backups encrypted for it would be lost); choose another name"
        ) from None
    except OSError as exc:
        raise CommandFailed(f"cannot write {path!r}: {exc.strerror or exc}") from None
    try:
        with open(fd, "wb") as file:
            os.fchmod(fd, 0o600)  # whatever the umask allowed
            file.write(text.encode())
            file.flush()
            os.fsync(fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(exc, OSError):
            raise CommandFailed(f"cannot write {path!r}: {exc.strerror or exc}") from None
        raise


def _demo(options: dict[str, Any], console: Console) -> None:
    from django_snapshots._demo import run_demo

    run_demo(console)


_COMMANDS: dict[str, Callable[[dict[str, Any], Console], None]] = {
    "check": _check,
    "ls": _ls,
    "put": _put,
    "get": _get,
    "rm": _rm,
    "sync": _sync,
    "verify": _verify,
    "cleanup": _cleanup,
    "keygen": _keygen,
    "demo": _demo,
}


@contextlib.contextmanager
def _open_source(src: str, console: Console) -> Iterator[tuple[IO[bytes], int | None]]:
    if src == STANDARD_STREAM:
        yield console.binary_in(), None
        return
    try:
        stream = open(src, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise CommandFailed(f"cannot read {src!r}: {exc.strerror or exc}") from None
    with stream:
        yield stream, os.fstat(stream.fileno()).st_size


class _CountingReader(ObservedReader):
    def __init__(self, source: IO[bytes], on_bytes: Callable[[int], object]) -> None:
        super().__init__(source)
        self.count = 0
        self._on_bytes = on_bytes

    def _on_data(self, chunk: memoryview) -> None:
        self.count += len(chunk)
        self._on_bytes(len(chunk))

    def close(self) -> None:
        # The source belongs to the caller (a file it opened, or stdin): leave
        # it open, which ObservedReader.close would not.
        io.RawIOBase.close(self)


def _counted(chunks: Iterable[bytes], on_bytes: Callable[[int], object]) -> Iterator[bytes]:
    for chunk in chunks:
        on_bytes(len(chunk))
        yield chunk


def _without_probes(keys: Iterable[str], prefix: str) -> Iterator[str]:
    # Probe objects are the check's business, not the operator's data:
    # shown only to whoever asks for them by prefix.
    if is_probe_key(prefix):
        return iter(keys)
    return (key for key in keys if not is_probe_key(key))


@dataclass(frozen=True)
class _Destination:
    """Where ``get`` writes: *shown* is the path as the user named it, for
    messages; *path* the file written (a symbolic link resolved); *through*
    says whether it is written in place (a device or a FIFO) rather than
    replaced by renaming a complete temporary file onto it; *mode* and
    *owner* are those of the regular file it replaces, if any."""

    shown: str
    path: Path
    through: bool = False
    mode: int | None = None
    owner: tuple[int, int] | None = None

    @classmethod
    def resolve(cls, dest: str, basename: str, *, force: bool) -> _Destination:
        """Decide how to write *dest* (a directory: *basename* in it), or
        refuse in one line, before the object is read."""
        shown = dest
        if dest.endswith("/") or os.path.isdir(dest):
            if not os.path.isdir(dest):
                raise CommandFailed(f"cannot write {dest!r}: no such directory")
            shown = os.path.join(dest, basename)
        path = Path(shown)

        def refuse(reason: str) -> CommandFailed:
            return CommandFailed(f"cannot write {shown!r}: {reason}")

        try:
            status = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                raise refuse("it is a symbolic link to nothing") from None
            if not path.parent.is_dir():
                raise refuse(f"directory {str(path.parent)!r} does not exist") from None
            return cls(shown, path)
        except OSError as exc:
            raise refuse(exc.strerror or str(exc)) from None
        mode = status.st_mode
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            return cls(shown, path, through=True)
        if stat.S_ISDIR(mode):
            raise refuse("it is a directory")
        if not stat.S_ISREG(mode):
            raise refuse("it is neither a regular file, a character device nor a FIFO")
        if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise refuse(f"it is read-only (mode {stat.S_IMODE(mode):04o})")
        if not force:
            raise refuse("it already exists (--force replaces it)")
        return cls(
            shown,
            Path(os.path.realpath(path)),
            mode=stat.S_IMODE(mode),
            owner=(status.st_uid, status.st_gid),
        )

    def write(self, chunks: Iterable[bytes]) -> None:
        """Write *chunks*; an error of the destination names :attr:`shown`."""
        try:
            if self.through:
                with open(self.path, "wb", buffering=0) as file:
                    _write_chunks(file, chunks)
            else:
                self._write_atomically(chunks)
        except _WriteFailed as failed:
            exc = failed.__cause__
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CommandFailed(f"cannot write {self.shown!r}: {reason}") from exc

    def _write_atomically(self, chunks: Iterable[bytes]) -> None:
        # Same directory as the target, so the final step is a rename:
        # readers see the old file or the complete new one, and a failed or
        # corrupt read leaves the old file untouched.  The temporary name is
        # kept within NAME_MAX whatever the target's name.
        target = self.path
        with _writing():
            fd, temporary = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name[:200]}.", suffix=".part"
            )
        try:
            with os.fdopen(fd, "wb") as file:
                _write_chunks(file, chunks)
                with _writing():
                    file.flush()
                    self._keep_attributes(file.fileno())
                    os.fsync(file.fileno())
            with _writing():
                self._publish(temporary)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _keep_attributes(self, fd: int) -> None:
        if self.mode is not None:
            os.fchmod(fd, self.mode)
        if self.owner is not None and os.geteuid() == 0:
            with contextlib.suppress(OSError):
                os.fchown(fd, *self.owner)

    def _publish(self, temporary: str) -> None:
        if self.mode is not None:  # --force: replace the file
            os.replace(temporary, self.path)
            return
        # A new file: a link fails if something appeared at the path since
        # it was looked at, where a rename would silently replace it.
        try:
            os.link(temporary, self.path)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "it appeared while the object was read") from None
        except OSError:  # a filesystem without hard links
            os.replace(temporary, self.path)
        else:
            os.unlink(temporary)


class _WriteFailed(Exception):
    """An OSError of the destination (its cause), told apart from one of the storage."""


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _WriteFailed from exc


def _write_chunks(file: IO[bytes], chunks: Iterable[bytes]) -> None:
    # The chunks come from the storage: only the writes are the destination's.
    for chunk in chunks:
        with _writing():
            file.write(chunk)


class _Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread, like KeyboardInterrupt for
    Ctrl-C, so that the same cleanup runs (no ``Exception`` handler or retry
    swallows it)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    # timeout, systemd and `docker stop` send SIGTERM; by default it kills
    # the process on the spot, leaving temporary files in the store and
    # beside a destination.  Only the main thread may install a handler.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        # A second SIGTERM must not cut the cleanup of the first short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _standard_output_for_data_only(console: Console) -> Iterator[Console]:
    """Yield *console* with its output on a private copy of standard output
    while standard output itself (``sys.stdout`` and file descriptor 1)
    points at standard error, when *console* writes to standard output.

    Log lines (structlog prints to standard output unless configured
    otherwise, and a project may configure it to), warnings and anything
    else then reach standard error, never the data or keys of the command.
    """
    if _fileno(console.out) != 1:
        yield console
        return
    original = sys.stdout
    original.flush()
    data_fd = os.dup(1)
    data = open(  # noqa: SIM115 - closed in the finally below
        data_fd, "w", encoding=console.out.encoding, errors=console.out.errors, closefd=True
    )
    broken = False
    try:
        try:
            os.dup2(2, 1)
        except OSError:  # no standard error: drop what is not data
            _point_at_devnull(1)
        sys.stdout = sys.stderr
        yield dataclasses.replace(console, out=data)
        data.flush()
    except BrokenPipeError:
        broken = True
        raise
    finally:
        with contextlib.suppress(OSError):
            original.flush()
        sys.stdout = original
        if broken:
            # The reader went away: what is still buffered goes nowhere, and
            # nothing complains about it at exit.
            _point_at_devnull(data_fd)
            _point_at_devnull(1)
        else:
            os.dup2(data_fd, 1)
        with contextlib.suppress(OSError):
            data.close()


def _refuse_a_destination_inside_the_store(target: _Destination, storage: object) -> None:
    """Refuse to write ``get``'s output into the directory the stack stores
    in: ``get db/b.dump snapshots/db/a.dump --force`` would replace another
    backup, or its checksum sidecar, behind every layer's back."""
    where = Path(os.path.realpath(target.path.parent)) / target.path.name
    for location in _store_directories(storage):
        if where == location or location in where.parents:
            raise CommandFailed(
                f"cannot write {target.shown!r}: it is inside the storage's own directory "
                f"{str(location)!r}; write the copy somewhere else"
            )


def _store_directories(storage: object) -> list[Path]:
    """The local directories the bottom storage of *storage* keeps its objects in."""
    while isinstance(storage, StorageWrapper):
        storage = storage.__wrapped__
    candidates = [getattr(storage, "location", None)]
    django_storage = getattr(storage, "storage", None)  # DjangoStorageBackend
    candidates.append(getattr(django_storage, "location", None))
    return [
        Path(os.path.realpath(candidate))
        for candidate in candidates
        if isinstance(candidate, (str, os.PathLike)) and os.path.isabs(candidate)
    ]


def _names_standard_output(dest: str) -> bool:
    """Tell whether *dest* is a symbolic link to file descriptor 1, like
    ``/dev/stdout``, following the links one by one."""
    names = {"/dev/fd/1", "/proc/self/fd/1", f"/proc/{os.getpid()}/fd/1"}
    path = os.path.abspath(dest)
    for _ in range(40):  # SYMLOOP_MAX
        if path in names:
            return True
        try:
            link = os.readlink(path)
        except OSError:
            return False
        path = os.path.normpath(os.path.join(os.path.dirname(path), link))
    return False


def _point_at_devnull(fd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _fileno(stream: object) -> int | None:
    try:
        return cast(IO[str], stream).fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())

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
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO, cast

from tqdm import tqdm

from django_snapshots._inspect import (
    PROBE_PREFIX,
    describe_layers,
    find_checksum_layer,
    probe_storage,
)
from django_snapshots.conf import InvalidStorageSettingError, get_storage
from django_snapshots.exceptions import SnapshotError
from django_snapshots.storage.keys import validate_key, validate_prefix, validate_sync_prefixes
from django_snapshots.storage.protocols import requires_advanced_storage
from django_snapshots.storage.streams import ObservedReader, iter_chunks

__all__ = ["CommandFailed", "Console", "add_subcommands", "run"]

#: What ``-`` stands for in ``put`` and ``get``.
STANDARD_STREAM = "-"


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
        buffer = getattr(self.out, "buffer", None)
        if buffer is None:
            raise CommandFailed("this output stream does not accept bytes; give a file as DEST")
        self.out.flush()
        return buffer  # type: ignore[no-any-return]

    def binary_in(self) -> IO[bytes]:
        return self.stdin if self.stdin is not None else sys.stdin.buffer


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Declare every sub-command on *parser* (``dest="subcommand"``).

    .. versionadded:: 0.1
    """
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = subparsers.add_parser(
            name, help=summary, description=f"{summary}. {description}".strip()
        )
        return sub

    add("check", "Show the storage stack and test it with a round trip",
        "Prints each layer with its tier (basic or advanced), then writes, reads back, "
        f"verifies, lists and deletes a probe object under {PROBE_PREFIX!r}, with timings. "
        "Exits non-zero if any step fails.")  # fmt: skip
    ls = add("ls", "List stored keys", "Prints every key starting with PREFIX, one per line.")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX",
                    help="only keys starting with this (default: all keys)")  # fmt: skip
    put = add("put", "Store a file under a key", "Replaces any object already at KEY.")
    put.add_argument("src", metavar="SRC", help="file to store, or - for standard input")
    put.add_argument("key", metavar="KEY", help="key to store it under, e.g. db/latest.dump")
    get = add("get", "Copy a stored object to a file",
              "DEST is replaced atomically, and only once the whole object was read (and "
              "verified, when the stack checks digests); a new file is readable by its owner "
              "only.  With -, bytes go out as they are read, so a failed verification is "
              "reported (exit status 1) after them.")  # fmt: skip
    get.add_argument("key", metavar="KEY", help="key of the object to copy")
    get.add_argument("dest", metavar="DEST",
                     help="file or directory to write to, or - for standard output")  # fmt: skip
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
                 "Reads every object under PREFIX through the stack's Checksum layer, prints "
                 "each one that fails, and each checksum sidecar whose object is missing, and "
                 "exits non-zero if any does.")  # fmt: skip
    verify.add_argument("prefix", nargs="?", default="", metavar="PREFIX",
                        help="only keys starting with this (default: all keys)")  # fmt: skip
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
        command(values, console)
    except (CommandFailed, BrokenPipeError):
        # A closed output (``get KEY - | head``) is the reader's choice, not
        # an error of the command: each front end ends quietly.
        raise
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
        status = "FAILED" if step.error else "ok"
        note = step.error or step.detail
        line = f"  {step.name:<7} {status:<6} {step.seconds * 1000:9.1f} ms  {note}"
        console.print(line.rstrip())
        failed = failed or (step.name if step.error else None)
    if failed:
        raise CommandFailed(f"the storage failed the round trip at {failed}")
    console.print("OK")


def _ls(options: dict[str, Any], console: Console) -> None:
    prefix = validate_prefix(options["prefix"])
    for key in get_storage().list(prefix):
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
    target = None
    if dest != STANDARD_STREAM:
        target = Path(dest)
        if target.is_dir():
            target = target / key.rsplit("/", 1)[-1]
        if not target.parent.is_dir():
            raise CommandFailed(f"cannot write {dest!r}: directory {str(target.parent)!r} "
                                "does not exist")  # fmt: skip
    storage = get_storage()
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
            _write_atomically(target, chunks)


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
    keys, orphans = checksum.keys_to_verify(prefix)
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


def _write_atomically(target: Path, chunks: Iterable[bytes]) -> None:
    # Same directory as the target, so os.replace is a rename: readers see the
    # old file or the complete new one, and a failed or corrupt read leaves
    # the old file untouched.
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())

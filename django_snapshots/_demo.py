"""The ``snapshots demo`` tour: the library at work on a temporary local store.

It builds ``Logging(Retry(Checksum(Prefix(LocalFileSystemBackend(tmp),
"tenant-a"))))``, streams a generated artifact through it, shows the JSON
audit entries, lists, reads back verified, flips one byte on disk and catches
the integrity error, then shows a basic-tier stack refusing an advanced
operation.  Nothing outside the temporary directory is touched, and structlog
is not configured: the audit entries go through a logger made for the tour.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, MutableMapping
from contextlib import AbstractContextManager
from pathlib import Path
from time import perf_counter
from typing import Any, Protocol

import structlog

from django_snapshots.exceptions import SnapshotIntegrityError, SnapshotStorageCapabilityError
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, requires_advanced_storage
from django_snapshots.storage.streams import CHUNK_SIZE

__all__ = ["ARTIFACT_SIZE", "Console", "run_demo"]

#: Size of the generated artifact the tour streams through the stack.
ARTIFACT_SIZE = 32 * CHUNK_SIZE

_KEY = "db/2026-11-26.dump"
_TENANT = "tenant-a"


class Console(Protocol):
    """What the tour prints through: the command line's console offers it.
    Declared here so that the tour depends on nothing above it."""

    def print(self, text: str = "") -> None: ...

    def print_during_progress(self, text: str = "") -> None: ...

    def progress(self, *, total: int | None, desc: str) -> AbstractContextManager[Any]: ...


def run_demo(console: Console) -> None:
    """Run the tour, printing to *console*; raise if the library misbehaves.

    .. versionadded:: 0.1
    """
    from django.core.files.storage import FileSystemStorage

    from django_snapshots.storage import (
        Checksum,
        DjangoStorageBackend,
        LocalFileSystemBackend,
        Logging,
        Prefix,
        Retry,
    )

    say = console.print
    with tempfile.TemporaryDirectory(prefix="django-snapshots-demo-") as tmp:
        root = Path(tmp) / "store"
        say(f"django-snapshots tour, in the temporary directory {tmp}")
        say()
        say("1. A stack of wrappers around a local directory, outermost first:")
        audit = _json_logger(console)
        storage = Logging(
            Retry(Checksum(Prefix(LocalFileSystemBackend(root), _TENANT)), attempts=3),
            logger=audit,
        )
        say(f"   {storage!r}")
        say(f"   tier: {_tier(storage)}; each wrapper has the tier of the storage it wraps")
        say()

        say(f"2. Streaming a generated {_mib(ARTIFACT_SIZE)} artifact to {_KEY!r}; "
            "one JSON audit entry per operation:")  # fmt: skip
        written = hashlib.sha256()
        start = perf_counter()
        with console.progress(total=ARTIFACT_SIZE, desc="write") as bar:
            storage.stream_write(_KEY, _artifact(written, bar.update))
        say(f"   stored {_mib(ARTIFACT_SIZE)} in {perf_counter() - start:.2f} s")
        say()

        say("3. Listing through the stack shows the tenant's keys only:")
        say(f"   {storage.list('')}")
        on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        say(f"   while on disk: {', '.join(on_disk)}")
        say("   (Prefix put the key under the tenant; Checksum wrote a sidecar that")
        say("   `sha256sum -c` understands, and hides it from listings)")
        say()

        say("4. Reading it back, verified against the sidecar as it streams:")
        read = hashlib.sha256()
        with console.progress(total=ARTIFACT_SIZE, desc="read") as bar:
            for chunk in storage.stream_read(_KEY):
                read.update(chunk)
                bar.update(len(chunk))
        if read.digest() != written.digest():
            raise SnapshotIntegrityError("the demo read back other bytes than it wrote")
        say(f"   read {_mib(ARTIFACT_SIZE)}; sha256 {read.hexdigest()[:16]}... matches")
        say()

        target = root / _TENANT / _KEY
        offset = ARTIFACT_SIZE // 2
        say(f"5. Flipping one bit of byte {offset} of {target.relative_to(root)} on disk, "
            "then reading again:")  # fmt: skip
        with open(target, "r+b") as file:
            file.seek(offset)
            byte = file.read(1)[0]
            file.seek(offset)
            file.write(bytes([byte ^ 0x01]))
        try:
            for _chunk in storage.stream_read(_KEY):
                pass
        except SnapshotIntegrityError as exc:
            say(f"   caught SnapshotIntegrityError: {exc}")
        else:
            raise SnapshotIntegrityError("the demo's corrupted artifact was read without error")
        say("   (Retry did not retry it: corruption is not a transient failure)")
        say()

        say("6. A stack over a Django Storage has the basic tier only:")
        django_storage = FileSystemStorage(location=Path(tmp) / "django-media")
        basic = Logging(Checksum(DjangoStorageBackend(django_storage)), logger=audit)
        say(f"   {basic!r}")
        say(f"   tier: {_tier(basic)}; hasattr(stack, 'sync') is {hasattr(basic, 'sync')}")
        try:
            requires_advanced_storage(basic, "sync")
        except SnapshotStorageCapabilityError as exc:
            say(f"   caught SnapshotStorageCapabilityError: {exc}")
        else:
            raise SnapshotStorageCapabilityError("the demo's basic-tier stack passed as advanced")
        say()
    say("Tour complete; the temporary directory is removed.  Next: configure")
    say("SNAPSHOTS['STORAGE'] in settings.py and run `manage.py snapshots check`.")


def _artifact(digest: Any, on_bytes: Any) -> Iterator[bytes]:
    for _ in range(ARTIFACT_SIZE // CHUNK_SIZE):
        chunk = os.urandom(CHUNK_SIZE)
        digest.update(chunk)
        on_bytes(len(chunk))
        yield chunk


def _json_logger(console: Console) -> Any:
    # A logger of the tour's own: the library never configures structlog, and
    # neither does the tour (the global configuration stays untouched).
    def render(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        # What an entry is about first, then its details.
        first = {key: event[key] for key in ("event", "level", "timestamp") if key in event}
        return "   " + json.dumps({**first, **event}, default=str)

    return structlog.wrap_logger(
        _Printer(console),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            render,
        ],
        wrapper_class=structlog.BoundLogger,
    )


class _Printer:
    # The entry of a transfer is emitted while its progress bar is drawn.
    def __init__(self, console: Console) -> None:
        self._print = console.print_during_progress

    def msg(self, message: str) -> None:
        self._print(message)

    debug = info = warning = error = critical = exception = msg


def _tier(storage: object) -> str:
    return "advanced" if isinstance(storage, AdvancedSnapshotStorage) else "basic"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MiB"

"""Peak memory of a 1 GiB artifact written and read through each backend and
through the full stack.

The artifact is streamed from a generator behind a non-seekable file object
(the same 1 MiB block again and again), so it never exists in memory as a
whole; reading drains the returned file object in 1 MiB reads.  Each
variant runs in a forked child (``peak_rss_delta``), whose peak resident set
(``VmHWM``) is compared with its resident set just before the transfer.

``MemoryBackend`` is left out: it keeps every object in RAM by design.
For ``RcloneBackend`` the figure is this Python process's; the rclone
processes it drives stream through pipes and have memory of their own.

Run alone with ``python -m tests.benchmarks.bench_memory [--quick]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import django

from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.protocols import SnapshotStorage
from django_snapshots.storage.streams import CHUNK_SIZE, ChunkReader
from django_snapshots.storage.wrappers.checksum import Checksum
from django_snapshots.storage.wrappers.logging import Logging
from django_snapshots.storage.wrappers.prefix import Prefix
from django_snapshots.storage.wrappers.retry import Retry
from tests.benchmarks.common import Row, artifact, null_json_logger, peak_rss_delta

GIB = 1024**3
MIB = 1024**2
BUDGET = 64 * MIB


def backends(root: Path) -> dict[str, Callable[[], SnapshotStorage]]:
    """Each storage to measure, built lazily in the measuring child."""
    from django.core.files.storage import FileSystemStorage

    from django_snapshots.storage.django_storage import DjangoStorageBackend

    variants: dict[str, Callable[[], SnapshotStorage]] = {
        "LocalFileSystemBackend": lambda: LocalFileSystemBackend(root / "local"),
        "DjangoStorageBackend(FileSystemStorage)": lambda: DjangoStorageBackend(
            FileSystemStorage(location=root / "django")
        ),
    }
    rclone = _rclone_local(root / "rclone")
    if rclone is not None:
        variants["RcloneBackend (local remote)"] = rclone
    variants["Logging(Retry(Checksum(Prefix(Local))))"] = lambda: Logging(
        Retry(Checksum(Prefix(LocalFileSystemBackend(root / "stack"), "tenant"))),
        logger=null_json_logger(),
    )
    variants["Compress(Encrypt(Checksum(Local)))"] = lambda: _confidential(root / "confidential")
    return variants


def _confidential(location: Path) -> SnapshotStorage:
    import pyrage

    from django_snapshots.storage import Compress, Encrypt

    identity = pyrage.x25519.Identity.generate()
    return Compress(
        Encrypt(
            Checksum(LocalFileSystemBackend(location)),
            recipients=[str(identity.to_public())],
            identities=[identity],
        )
    )


def round_trip(storage: SnapshotStorage, size: int) -> None:
    """Write *size* bytes from a non-seekable stream, read them back, delete them."""
    storage.write("artifact.bin", ChunkReader(artifact(size)))  # type: ignore[arg-type]
    received = 0
    with storage.read("artifact.bin") as file:
        while chunk := file.read(CHUNK_SIZE):
            received += len(chunk)
    storage.delete("artifact.bin")
    if received != size:
        raise AssertionError(f"read {received} bytes back instead of {size}")


def measure(*, scale: float = 1.0) -> list[Row]:
    """Measure the peak memory of a write and a read of ``scale`` GiB per storage."""
    _configure_django()
    size = max(CHUNK_SIZE, int(GIB * scale))
    shown = f"{size / GIB:g} GiB" if size >= GIB else f"{size // MIB} MiB"
    rows = []
    root = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        for name, build in backends(root).items():
            delta = peak_rss_delta(lambda build=build: round_trip(build(), size))
            rows.append(
                Row(
                    f"peak RSS, {shown} write + read: {name}",
                    "RSS before the transfer",
                    None,
                    "<= 64 MiB above",
                    detail=f"+{delta / MIB:.1f} MiB",
                    met=delta <= BUDGET,
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows.append(
        Row(
            "peak RSS: MemoryBackend",
            "-",
            None,
            "-",
            detail="not measured: it keeps every object in RAM by design",
        )
    )
    return rows


def _configure_django() -> None:
    # FileSystemStorage reads its defaults from the settings.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()


def _rclone_local(location: Path) -> Callable[[], SnapshotStorage] | None:
    try:
        from django_snapshots.storage.rclone import RcloneBackend
    except ImportError:
        return None  # not part of this checkout
    return lambda: RcloneBackend(f":local:{location}")


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))

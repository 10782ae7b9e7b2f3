"""SnapshotFileStorage against the same stack called directly.

A 1 GiB artifact (scaled) goes through ``SnapshotFileStorage.save`` and back
through a full ``open().read(CHUNK_SIZE)`` loop, over
``Checksum(LocalFileSystemBackend)``; the baseline writes and reads the same
bytes through the stack's own ``write`` and ``read``.  The content is a
seekable file on disk, as Django's uploads are (``TemporaryUploadedFile``).

- Peak memory: each round trip runs in a forked child (``peak_rss_delta``);
  the target is at most 64 MiB above the child's resident set before it.
- Throughput: the two round trips are timed in pairs of rounds, each
  first in one round and second in the other (``balanced_ratios``: on this
  machine the second of two 1 GiB round trips took about 1.5 times the
  first), each starting where no earlier copy is (``remove_and_sync``); the
  figure is the direct stack's time over the Django storage's (higher is
  faster), the median over the pairs; the target is at least 0.9x.

Run alone with ``python -m tests.benchmarks.bench_files [--quick]``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import django

from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.protocols import SnapshotStorage
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.storage.wrappers.checksum import Checksum
from tests.benchmarks.common import (
    Row,
    artifact,
    balanced_ratios,
    peak_rss_delta,
    remove_and_sync,
)

GIB = 1024**3
MIB = 1024**2
BUDGET = 64 * MIB


def _source(root: Path, size: int) -> Path:
    path = root / "artifact.bin"
    with open(path, "wb") as out:
        for chunk in artifact(size):
            out.write(chunk)
    return path


def _direct(stack: SnapshotStorage, source: Path, size: int) -> None:
    with open(source, "rb") as content:
        stack.write("direct.bin", content)
    _drain(stack.read("direct.bin"), size)


def _through_files(stack: SnapshotStorage, source: Path, size: int) -> None:
    from django.core.files import File

    from django_snapshots.files import SnapshotFileStorage

    files = SnapshotFileStorage(storage=stack, allow_overwrite=True)
    with open(source, "rb") as content:
        files.save("files.bin", File(content))
    _drain(files.open("files.bin"), size)


def _drain(file: object, size: int) -> None:
    received = 0
    with file:  # type: ignore[attr-defined]
        while chunk := file.read(CHUNK_SIZE):  # type: ignore[attr-defined]
            received += len(chunk)
    if received != size:
        raise AssertionError(f"read {received} bytes back instead of {size}")


def measure(*, scale: float = 1.0) -> list[Row]:
    """Measure memory and throughput of a ``scale`` GiB round trip."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    size = max(CHUNK_SIZE, int(GIB * scale))
    shown = f"{size / GIB:g} GiB" if size >= GIB else f"{size // MIB} MiB"
    root = Path(tempfile.mkdtemp(prefix="bench-files-"))
    try:
        source = _source(root, size)
        stack = Checksum(LocalFileSystemBackend(root / "store"))
        delta = peak_rss_delta(lambda: _through_files(stack, source, size))
        direct_delta = peak_rss_delta(lambda: _direct(stack, source, size))
        # What each round trip leaves, removed before the next (remove_and_sync).
        written = {
            "baseline": [root / "store" / name for name in ("direct.bin", "direct.bin.sha256")],
            "variant": [root / "store" / name for name in ("files.bin", "files.bin.sha256")],
        }
        ratios = balanced_ratios(
            lambda: _direct(stack, source, size),
            lambda: _through_files(stack, source, size),
            pairs=4 if scale >= 1 else 5,
            before=lambda name: remove_and_sync(*written[name]),
        )
        throughput = 1 / statistics.median(ratios)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [
        Row(
            f"peak RSS, {shown} save + open().read(): SnapshotFileStorage(Checksum(Local))",
            "RSS before the transfer",
            None,
            "<= 64 MiB above",
            detail=f"+{delta / MIB:.1f} MiB (the stack called directly: "
            f"+{direct_delta / MIB:.1f} MiB)",
            met=delta <= BUDGET,
        ),
        Row(
            f"throughput, {shown} save + open().read(): SnapshotFileStorage(Checksum(Local))",
            "the same stack's write + read",
            throughput,
            ">= 0.9x",
            detail=f"quartiles of the time ratio over pairs of rounds {_quartiles(ratios)}",
        ),
    ]


def _quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    low, _, high = statistics.quantiles(values, n=4)
    return f"{low:.3f}-{high:.3f}"


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))

"""Speed-up of an incremental ``LocalFileSystemBackend.sync`` over a full one.

10,000 objects of 1 KiB (at scale 1.0; ``--quick`` stores 1/8 of them)
spread over 100 directories are mirrored from ``src/`` to ``dst/``.  Each
round removes the mirror and times the first sync, which copies everything,
then rewrites one object at the same size and times the sync that follows,
which copies that one object and only compares the size and modification
time of the others.  The figure is the median over the rounds of the first
sync's time divided by the re-sync's time in the same round, so the speed
of the disk (every copy is fsynced) and a drift of the machine's load cancel
out.

The sources are dated an hour back, as objects settled since the last
backup are: ``sync`` always copies an object changed within the last two
seconds, whose modification time may still hide a change.

Run alone with ``python -m tests.benchmarks.bench_local_sync [--quick]``.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from django_snapshots.storage.local import LocalFileSystemBackend
from tests.benchmarks.common import Row

OBJECTS = 10_000
DIRECTORIES = 100
SIZE = 1024
ROUNDS = 3
HOUR_NS = 3600 * 10**9


def measure(*, scale: float = 1.0) -> list[Row]:
    """Time a first sync and a re-sync with one changed object, side by side."""
    count = max(DIRECTORIES, int(OBJECTS * min(1.0, max(scale * 8, 1 / 8))))
    root = Path(tempfile.mkdtemp(prefix="bench-local-sync-"))
    try:
        storage = LocalFileSystemBackend(root)
        keys = _populate(storage, root, count)
        firsts, resyncs, ratios = [], [], []
        for n in range(ROUNDS):
            shutil.rmtree(root / "dst", ignore_errors=True)
            start = time.perf_counter()
            storage.sync("src/", "dst/")
            first = time.perf_counter() - start
            changed = keys[n * 7919 % len(keys)]
            _store(storage, root, changed, bytes([n + 1]) * SIZE, age_ns=HOUR_NS // 2 - n)
            start = time.perf_counter()
            storage.sync("src/", "dst/")
            resync = time.perf_counter() - start
            with storage.read("dst/" + changed[len("src/") :]) as copy:
                if copy.read() != bytes([n + 1]) * SIZE:
                    raise AssertionError(f"the re-sync did not copy the changed {changed!r}")
            firsts.append(first)
            resyncs.append(resync)
            ratios.append(first / resync)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first, resync = statistics.median(firsts), statistics.median(resyncs)
    return [
        Row(
            f"LocalFileSystemBackend.sync of {count:,} objects, 1 changed",
            "first sync (copies all)",
            statistics.median(ratios),
            ">= 50x",
            detail=(
                f"first {first:.2f} s, re-sync {resync * 1000:.0f} ms; "
                f"rounds {', '.join(f'{r:.0f}x' for r in sorted(ratios))}"
            ),
        )
    ]


def _populate(storage: LocalFileSystemBackend, root: Path, count: int) -> list[str]:
    keys = [f"src/{n % DIRECTORIES:03d}/object-{n:05d}" for n in range(count)]
    for n, key in enumerate(keys):
        _store(storage, root, key, n.to_bytes(4, "big") * (SIZE // 4), age_ns=HOUR_NS)
    return keys


def _store(
    storage: LocalFileSystemBackend, root: Path, key: str, data: bytes, *, age_ns: int
) -> None:
    storage.write(key, io.BytesIO(data))
    mtime = time.time_ns() - age_ns
    os.utime(root / key, ns=(mtime, mtime))


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))

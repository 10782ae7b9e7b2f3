"""What compressing costs: Compress(LocalFileSystemBackend) streaming a large artifact.

The same bytes, a database dump in JSON, go through variants taken in
alternation (``interleaved``):

- ``zstd``: the zstd codec alone at the same level and with the same frame
  options, compressing the artifact (or decompressing its frame, held in
  memory, a ``CHUNK_SIZE`` of output at a time), with no storage at all;
- ``compress``: ``stream_write`` of the artifact through
  ``Compress(LocalFileSystemBackend)``, or ``stream_read`` of it to the end,
  which adds the wrapper's bookkeeping and the backend's I/O (the compressed
  file, its fsync on write, the page cache on read);
- ``threads=2``: the same ``stream_write`` with two compression workers,
  against the codec alone with two workers (reported, no target).

Each figure is the throughput of ``compress`` as a fraction of the codec's
alone (target: at least 0.85x, the codec being most of the cost).  A row
gives the compression ratio of a realistic dump (what ``dumpdata`` writes
for a few thousand rows), with gzip's beside it, and a last row checks that
memory stays constant: the peak resident memory of a forked child writing
and reading the artifact through Compress.

At scale 1.0 the artifact is 1 GiB.  Run alone with
``python -m tests.benchmarks.bench_compress [--quick]``.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.memory import MemoryBackend
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.storage.wrappers.compress import (
    DEFAULT_LEVEL,
    Compress,
    CompressionParameter,
    ZstdCompressor,
    ZstdDecompressor,
)
from tests.benchmarks.common import Row, interleaved, peak_rss_delta, remove_and_sync

GIB = 1024 * 1024 * 1024
#: Distinct chunks the artifact cycles through, each a different part of a
#: dump: far enough apart (16 MiB) that zstd's window never sees a repeat.
BLOCKS = 16
#: Rows of the dump whose compression ratio is reported.
DUMP_ROWS = 5000
MEMORY_BOUND = 64 * 1024 * 1024


def measure(*, scale: float = 1.0) -> list[Row]:
    """Compare Compress(Local) with the zstd codec alone, and report a dump's ratio."""
    count = max(2, round(GIB * scale / CHUNK_SIZE))
    size = count * CHUNK_SIZE
    blocks = [_dump_bytes(CHUNK_SIZE, seed) for seed in range(BLOCKS)]

    def chunks() -> Iterator[bytes]:
        for i in range(count):
            yield blocks[i % BLOCKS]

    def codec_alone(threads: int) -> Callable[[], None]:
        def run() -> None:
            compressor = _compressor(threads)
            for chunk in chunks():
                compressor.compress(chunk)
            compressor.flush()

        return run

    rounds = 3 if scale >= 0.5 else 5
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as root:
        compress = Compress(LocalFileSystemBackend(Path(root) / "single"))
        threaded = Compress(LocalFileSystemBackend(Path(root) / "threads"), threads=2)
        # What each write leaves, removed before the next (remove_and_sync).
        written = {
            "compress": [Path(root) / "single" / "artifact"],
            "compress threads=2": [Path(root) / "threads" / "artifact"],
        }
        writes = interleaved(
            {
                "zstd": codec_alone(0),
                "compress": lambda: compress.stream_write("artifact", chunks()),
                "zstd threads=2": codec_alone(2),
                "compress threads=2": lambda: threaded.stream_write("artifact", chunks()),
            },
            rounds=rounds,
            before=lambda name: remove_and_sync(*written.get(name, ())),
        )
        stored = Path(root) / "single" / "artifact"
        frame = stored.read_bytes()

        def decompress_alone() -> None:
            decompressor = ZstdDecompressor()
            for start in range(0, len(frame), CHUNK_SIZE):
                decompressor.decompress(frame[start : start + CHUNK_SIZE], CHUNK_SIZE)
                while not decompressor.needs_input and not decompressor.eof:
                    decompressor.decompress(b"", CHUNK_SIZE)

        def read_through() -> None:
            for _ in compress.stream_read("artifact"):
                pass

        reads = interleaved({"zstd": decompress_alone, "compress": read_through}, rounds=rounds)
        shrunk = f"stored {len(frame) / 2**20:.0f} MiB, {size / len(frame):.1f}:1"
        rows.append(_row("stream_write", size, writes["zstd"], writes["compress"], shrunk))
        rows.append(_row("stream_read", size, reads["zstd"], reads["compress"], shrunk))
        rows.append(
            _row(
                "stream_write, threads=2,",
                size,
                writes["zstd threads=2"],
                writes["compress threads=2"],
                f"{size / writes['zstd'] / 2**20:.0f} MiB/s with one thread",
                target="",
            )
        )

        def round_trip() -> None:
            compress.stream_write("memory", chunks())
            for _ in compress.stream_read("memory"):
                pass

        growth = peak_rss_delta(round_trip)
        rows.insert(0, _dump_row())
        rows.append(
            Row(
                f"Compress(Local) stream_write + stream_read of {_size(size)}",
                "process memory before",
                None,
                f"<= {MEMORY_BOUND // 2**20} MiB",
                detail=f"peak resident memory grew by {growth / 2**20:.1f} MiB",
                met=growth <= MEMORY_BOUND,
            )
        )
    return rows


def _compressor(threads: int) -> ZstdCompressor:
    """The codec configured as Compress configures it (level, checksum, workers)."""
    compressor: ZstdCompressor = ZstdCompressor(
        options={
            CompressionParameter.compression_level: DEFAULT_LEVEL,
            CompressionParameter.nb_workers: threads,
            CompressionParameter.checksum_flag: 1,
        }
    )
    return compressor


def _row(
    op: str, size: int, alone: float, through: float, extra: str, target: str = ">= 0.85x"
) -> Row:
    detail = (
        f"zstd alone {alone:.2f} s, through Compress {through:.2f} s "
        f"({size / through / 2**20:.0f} MiB/s); {extra}"
    )
    return Row(
        f"Compress(Local) {op} of {_size(size)}",
        "throughput of zstd alone",
        alone / through,
        target,
        detail,
    )


def _dump_row() -> Row:
    data = _dumpdata(DUMP_ROWS, seed=0)
    inner = MemoryBackend()
    Compress(inner).write("dump.json", io.BytesIO(data))
    with inner.read("dump.json") as stream:
        compressed = len(stream.read())
    gzipped = len(gzip.compress(data, compresslevel=6))
    return Row(
        f"Compress level {DEFAULT_LEVEL} of a dumpdata JSON ({DUMP_ROWS} rows)",
        f"uncompressed ({len(data) / 2**20:.1f} MiB)",
        compressed / len(data),
        "<= 0.25x",
        f"{len(data) / compressed:.1f}:1; gzip -6 {len(data) / gzipped:.1f}:1",
    )


def _dumpdata(rows: int, *, seed: int) -> bytes:
    """What ``manage.py dumpdata --indent 2`` writes for *rows* rows of a shop:
    customers, orders and their lines, with realistic field values."""
    rng = random.Random(seed)
    words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
        "golf", "hotel", "india", "juliet", "kilo", "lima",
    ]  # fmt: skip
    objects: list[dict[str, object]] = []
    for pk in range(1, rows + 1):
        kind = pk % 3
        if kind == 0:
            fields: dict[str, object] = {
                "email": f"{rng.choice(words)}.{rng.randrange(10**6)}@example.com",
                "name": f"{rng.choice(words).title()} {rng.choice(words).title()}",
                "date_joined": f"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
                f"T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
                "is_active": rng.random() < 0.9,
            }
            model = "shop.customer"
        elif kind == 1:
            fields = {
                "customer": rng.randrange(1, rows),
                "status": rng.choice(["new", "paid", "shipped", "cancelled"]),
                "total": f"{rng.uniform(1, 900):.2f}",
                "note": " ".join(rng.choices(words, k=rng.randrange(0, 12))),
                "created": f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            }
            model = "shop.order"
        else:
            fields = {
                "order": rng.randrange(1, rows),
                "sku": f"SKU-{rng.randrange(10**5):05d}",
                "quantity": rng.randrange(1, 10),
                "unit_price": f"{rng.uniform(1, 200):.2f}",
            }
            model = "shop.orderline"
        objects.append({"model": model, "pk": pk, "fields": fields})
    return json.dumps(objects, indent=2).encode()


def _dump_bytes(size: int, seed: int) -> bytes:
    data = _dumpdata(size // 100, seed=seed)
    return (data * (size // len(data) + 1))[:size]


def _size(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / 2**20:g} MiB"


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))

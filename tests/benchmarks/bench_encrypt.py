"""What streaming encryption costs: Encrypt(LocalFileSystemBackend) against pyrage alone.

Two variants handle the same bytes, in alternation (``interleaved``):

- ``pyrage``: pyrage's ``encrypt_io`` from the artifact's chunks into a
  file, or ``decrypt_io`` of that file into a sink, in the calling thread:
  the cost of the cryptography and of the file, with no storage around it;
- ``encrypt``: ``stream_write`` or ``stream_read`` of the same bytes
  through ``Encrypt(LocalFileSystemBackend)``, which runs pyrage in a worker
  thread and hands its output over through a bounded queue, and the
  backend's own writing (with its fsync) or reading.

The figure is pyrage's time divided by Encrypt's, a throughput ratio
(target: at least 0.85x).  Reads come from the page cache (the artifact was
just written).  A last row checks that memory stays constant: the peak
resident memory of a forked child writing and reading the artifact through
Encrypt.

At scale 1.0 the artifact is 1 GiB.  Run alone with
``python -m tests.benchmarks.bench_encrypt [--quick]``.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyrage

from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.storage.wrappers.encrypt import Encrypt
from tests.benchmarks.common import Row, interleaved, peak_rss_delta, remove_and_sync

GIB = 1024 * 1024 * 1024
#: Distinct chunks the artifact cycles through (generating 1 GiB of random
#: bytes would take longer than encrypting it).
BLOCKS = 16
MEMORY_BOUND = 64 * 1024 * 1024


class _ChunksReader:
    """The artifact's chunks as a file object, for pyrage's ``encrypt_io``."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._offset = 0

    def read(self, size: int) -> bytes:
        if self._offset >= len(self._chunk):
            self._chunk, self._offset = next(self._chunks, b""), 0
        data = self._chunk[self._offset : self._offset + size]
        self._offset += len(data)
        return data


class _Sink:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def measure(*, scale: float = 1.0) -> list[Row]:
    """Compare Encrypt(Local) with pyrage alone over the same bytes."""
    count = max(2, round(GIB * scale / CHUNK_SIZE))
    size = count * CHUNK_SIZE
    rng = random.Random(1)
    blocks = [rng.randbytes(CHUNK_SIZE) for _ in range(BLOCKS)]
    identity = pyrage.x25519.Identity.generate()
    recipient = identity.to_public()

    def chunks() -> Iterator[bytes]:
        for i in range(count):
            yield blocks[i % BLOCKS]

    rounds = 3 if scale >= 0.5 else 5
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-encrypt-") as root:
        alone = Path(root) / "alone.age"
        # What each write leaves, removed before the next (remove_and_sync).
        written = {"pyrage": alone, "encrypt": Path(root) / "encrypt" / "artifact"}
        encrypt = Encrypt(
            LocalFileSystemBackend(Path(root) / "encrypt"),
            recipients=[str(recipient)],
            identities=[str(identity)],
        )

        def pyrage_write() -> None:
            with open(alone, "wb") as out:
                pyrage.encrypt_io(_ChunksReader(chunks()), out, [recipient])
                out.flush()
                os.fsync(out.fileno())

        def pyrage_read() -> None:
            with open(alone, "rb") as source:
                pyrage.decrypt_io(source, _Sink(), [identity])

        def encrypt_read() -> None:
            for _ in encrypt.stream_read("artifact"):
                pass

        writes = interleaved(
            {
                "pyrage": pyrage_write,
                "encrypt": lambda: encrypt.stream_write("artifact", chunks()),
            },
            rounds=rounds,
            before=lambda name: remove_and_sync(written[name]),
        )
        reads = interleaved({"pyrage": pyrage_read, "encrypt": encrypt_read}, rounds=rounds)
        for op, times in (("stream_write", writes), ("stream_read", reads)):
            alone_time, wrapped = times["pyrage"], times["encrypt"]
            rows.append(
                Row(
                    f"Encrypt(Local) {op} of {_size(size)}",
                    "pyrage alone (throughput)",
                    alone_time / wrapped,
                    ">= 0.85x",
                    f"pyrage {alone_time:.2f} s, Encrypt {wrapped:.2f} s "
                    f"({size / wrapped / 2**20:.0f} MiB/s)",
                )
            )

        def round_trip() -> None:
            encrypt.stream_write("memory", chunks())
            for _ in encrypt.stream_read("memory"):
                pass

        growth = peak_rss_delta(round_trip)
        rows.append(
            Row(
                f"Encrypt(Local) stream_write + stream_read of {_size(size)}",
                "process memory before",
                None,
                f"<= {MEMORY_BOUND // 2**20} MiB",
                detail=f"peak resident memory grew by {growth / 2**20:.1f} MiB",
                met=growth <= MEMORY_BOUND,
            )
        )
    return rows


def _size(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / 2**20:g} MiB"


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))

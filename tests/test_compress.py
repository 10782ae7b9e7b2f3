"""Tests for the Compress wrapper."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import random
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_snapshots.exceptions import SnapshotIntegrityError, SnapshotStoragePathError
from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    Checksum,
    LocalFileSystemBackend,
    Logging,
    MemoryBackend,
    Prefix,
    Retry,
)
from django_snapshots.storage.keys import MAX_KEY_BYTES
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.storage.wrappers.compress import AdvancedCompress, Compress
from django_snapshots.testing import Chaos, StorageConformance, assert_intercepts_every_method
from tests.benchmarks.common import peak_rss_delta
from tests.test_retry import (
    INSTANT,
    AdvancedScripted,
    BasicMemory,
    FailingReader,
    Fault,
    Pipe,
    Scripted,
    noise,
    resets,
)

#: The zstd block size: the largest block a frame holds.
BLOCK = 128 * 1024
SIZES = [
    0, 1, 2, BLOCK - 1, BLOCK, BLOCK + 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1,
    2 * CHUNK_SIZE - 1, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17,
]  # fmt: skip
MAGIC = b"\x28\xb5\x2f\xfd"
GIB = 1024 * 1024 * 1024

needs_zstd_cli = shutil.which("zstd")


def dump(rows: int, seed: int = 0) -> bytes:
    """JSON as ``manage.py dumpdata`` writes it: compressible, like real dumps."""
    rng = random.Random(seed)
    return json.dumps(
        [
            {
                "model": "shop.order",
                "pk": pk,
                "fields": {
                    "customer": rng.randrange(1, 500),
                    "status": rng.choice(["new", "paid", "shipped", "cancelled"]),
                    "total": f"{rng.uniform(1, 500):.2f}",
                    "created": f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
                },
            }
            for pk in range(1, rows + 1)
        ],
        indent=2,
    ).encode()


def sample(size: int, kind: str) -> bytes:
    if kind == "noise":
        return noise(size)
    text = dump(size // 100 + 1)
    return (text * (size // len(text) + 1))[:size]


@pytest.fixture(params=["basic", "advanced", "local"])
def inner(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The storage under the wrapper: a basic one, MemoryBackend, or local files."""
    if request.param == "basic":
        return BasicMemory()
    if request.param == "advanced":
        return MemoryBackend()
    return LocalFileSystemBackend(tmp_path / "store")


@pytest.fixture(params=["basic", "advanced"])
def tier(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stored(storage: Any, key: str) -> bytes:
    """The bytes at *key* of a storage below the wrapper, as stored."""
    with storage.read(key) as stream:
        return bytes(stream.read())


def read_all(storage: Any, key: str, piece: int = CHUNK_SIZE) -> bytes:
    received = bytearray()
    with storage.read(key) as stream:
        while data := stream.read(piece):
            received += data
    return bytes(received)


def zstandard_decompress(frame: bytes) -> bytes:
    """*frame* (one or several frames) decompressed by an independent implementation."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frame), read_across_frames=True)
    return bytes(reader.read())


def zstandard_frame(data: bytes, **options: Any) -> bytes:
    return bytes(zstandard.ZstdCompressor(**options).compress(data))


def zstandard_streamed(data: bytes, **options: Any) -> bytes:
    """A frame written as a stream, without the content size in its header."""
    compressor = zstandard.ZstdCompressor(**options).compressobj()
    return bytes(compressor.compress(data) + compressor.flush())


def skippable(payload: bytes) -> bytes:
    return (0x184D2A50).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


# Options and shape.


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"level": 23}, ValueError, "level must be between -131072 and 22"),
        ({"level": -131073}, ValueError, "level must be between"),
        ({"level": 3.0}, TypeError, "level must be an int, not float"),
        ({"level": "3"}, TypeError, "level must be an int, not str"),
        ({"level": True}, TypeError, "level must be an int, not bool"),
        ({"level": None}, TypeError, "level must be an int, not NoneType"),
        ({"threads": -1}, ValueError, "threads must be between 0 and"),
        ({"threads": 100_000}, ValueError, "threads must be between 0 and"),
        ({"threads": 2.0}, TypeError, "threads must be an int, not float"),
        ({"threads": False}, TypeError, "threads must be an int, not bool"),
    ],
)
def test_bad_options_are_refused_when_the_wrapper_is_built(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    storage = AdvancedScripted(MemoryBackend())
    with pytest.raises(error, match=message):
        Compress(storage, **options)
    assert not storage.calls


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Compress(MemoryBackend(), 3)  # type: ignore[misc]


def test_compress_keeps_the_tier_and_intercepts_every_method() -> None:
    advanced = Compress(MemoryBackend())
    basic = Compress(BasicMemory())
    assert isinstance(advanced, AdvancedCompress)
    assert isinstance(advanced, AdvancedSnapshotStorage)
    assert not isinstance(basic, AdvancedSnapshotStorage)
    assert_intercepts_every_method(advanced)
    assert_intercepts_every_method(basic)


def test_repr_shows_the_level_and_any_threads() -> None:
    assert repr(Compress(MemoryBackend())) == "Compress(MemoryBackend(), level=3)"
    assert repr(Compress(BasicMemory(), level=-5)).endswith(", level=-5)")
    assert repr(Compress(MemoryBackend(), level=19, threads=2)) == (
        "Compress(MemoryBackend(), level=19, threads=2)"
    )
    assert repr(Logging(Compress(MemoryBackend()))) == (
        "Logging(Compress(MemoryBackend(), level=3))"
    )


def test_a_missing_codec_is_reported_when_compress_is_built_not_on_import() -> None:
    # A child interpreter in which neither codec can be imported.
    script = """
import sys
sys.modules["backports.zstd"] = None
sys.modules["compression.zstd"] = None
import django_snapshots
import django_snapshots.storage
from django_snapshots.storage import MemoryBackend
from django_snapshots.storage.wrappers.compress import Compress
try:
    Compress(MemoryBackend())
except ImportError as exc:
    print(exc)
else:
    print("built without a codec")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "django-snapshots[compress]" in result.stdout
    assert "built without" not in result.stdout


# Round trips.


@pytest.mark.parametrize("kind", ["noise", "dump"])
@pytest.mark.parametrize("size", SIZES)
def test_every_size_round_trips_through_write_and_read(inner: Any, size: int, kind: str) -> None:
    data = sample(size, kind)
    storage = Compress(inner)
    storage.write("db/x", io.BytesIO(data))
    assert stored(inner, "db/x").startswith(MAGIC)
    assert read_all(storage, "db/x") == data
    with storage.read("db/x") as stream:
        assert stream.read() == data


@pytest.mark.parametrize("kind", ["noise", "dump"])
@pytest.mark.parametrize("size", SIZES)
def test_every_size_round_trips_through_stream_write_and_stream_read(
    size: int, kind: str, tmp_path: Path
) -> None:
    data = sample(size, kind)
    storage = Compress(LocalFileSystemBackend(tmp_path))
    parts = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    storage.stream_write("db/x", iter(parts))
    chunks = list(storage.stream_read("db/x"))
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)
    assert b"".join(chunks) == data


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.binary(max_size=4096) | st.binary(max_size=64).map(lambda b: b * 500),
    cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=8),
    piece=st.integers(min_value=1, max_value=5000),
    level=st.sampled_from([-3, 1, 3, 9]),
)
def test_arbitrary_bytes_in_arbitrary_chunks_round_trip(
    data: bytes, cuts: list[int], piece: int, level: int
) -> None:
    inner = MemoryBackend()
    storage = Compress(inner, level=level)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)] + [b""]
    storage.stream_write("k", iter(chunks))
    assert b"".join(storage.stream_read("k")) == data
    assert read_all(storage, "k", piece) == data
    assert zstandard_decompress(stored(inner, "k")) == data
    storage.write("w", io.BytesIO(data))
    assert read_all(storage, "w", piece) == data


def test_read_gives_full_reads_lines_and_readinto() -> None:
    lines = [b"row %d %s\n" % (n, b"x" * (n % 97)) for n in range(60_000)]
    data = b"".join(lines)
    storage = Compress(MemoryBackend())
    storage.write("lines", io.BytesIO(data))
    with storage.read("lines") as stream:
        assert stream.read(100) == data[:100]
        assert stream.readline() == data[100 : data.index(b"\n", 100) + 1]
    with storage.read("lines") as stream:
        assert list(stream) == lines


def test_write_reads_from_the_current_position_and_accepts_a_pipe() -> None:
    storage = Compress(MemoryBackend())
    content = io.BytesIO(b"HEADER|payload")
    content.read(7)
    storage.write("k", content)
    assert storage.read("k").read() == b"payload"
    data = noise(CHUNK_SIZE * 2 + 5)
    with Pipe(data) as pipe:
        storage.write("piped", pipe)
    assert storage.read("piped").read() == data


@pytest.mark.parametrize("threads", [1, 2])
def test_multithreaded_compression_writes_standard_frames(threads: int) -> None:
    data = sample(5 * CHUNK_SIZE + 3, "dump") + noise(CHUNK_SIZE)
    inner = MemoryBackend()
    storage = Compress(inner, threads=threads)
    storage.write("w", io.BytesIO(data))
    storage.stream_write("s", iter([data[:1000], data[1000:]]))
    for key in ("w", "s"):
        assert zstandard_decompress(stored(inner, key)) == data
        assert b"".join(storage.stream_read(key)) == data


def test_a_higher_level_compresses_a_dump_better() -> None:
    data = dump(5000)
    sizes = {}
    for level in (-5, 1, 19):
        inner = MemoryBackend()
        Compress(inner, level=level).write("k", io.BytesIO(data))
        sizes[level] = len(stored(inner, "k"))
    assert sizes[19] < sizes[1] < sizes[-5] < len(data)
    assert sizes[1] < len(data) / 5


# Interoperability with other zstd implementations.


@pytest.mark.parametrize("size", [0, 1, BLOCK + 1, 2 * CHUNK_SIZE + 1])
def test_objects_decompress_with_zstandard_and_carry_a_checksum(size: int) -> None:
    data = sample(size, "dump")
    inner = MemoryBackend()
    Compress(inner).write("k", io.BytesIO(data))
    frame = stored(inner, "k")
    assert zstandard.get_frame_parameters(frame).has_checksum
    assert zstandard_decompress(frame) == data


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: zstandard_frame(d), id="one frame with its size"),
        pytest.param(lambda d: zstandard_frame(d, write_checksum=True), id="with a checksum"),
        pytest.param(lambda d: zstandard_streamed(d), id="streamed, without its size"),
        pytest.param(lambda d: zstandard_frame(d, level=19, threads=2), id="level 19, threads"),
        pytest.param(lambda d: zstandard_frame(d, level=-7), id="negative level"),
        pytest.param(
            lambda d: (
                b"".join(
                    zstandard_frame(d[i : i + 70_000], write_content_size=i % 2 == 0)
                    for i in range(0, len(d), 70_000)
                )
                or zstandard_frame(b"")
            ),
            id="concatenated frames",
        ),
        pytest.param(
            lambda d: (
                skippable(b"meta")
                + zstandard_streamed(d[:1000])
                + skippable(b"")
                + zstandard_frame(d[1000:])
            ),
            id="with skippable frames",
        ),
        pytest.param(lambda d: zstandard_frame(b"") + zstandard_frame(d), id="empty frame first"),
    ],
)
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17])
def test_frames_of_zstandard_read_back(inner: Any, make: Any, size: int) -> None:
    data = sample(size, "dump")
    frame = make(data)
    assert zstandard_decompress(frame) == data
    inner.write("k", io.BytesIO(frame))
    storage = Compress(inner)
    assert read_all(storage, "k") == data
    if isinstance(storage, AdvancedSnapshotStorage):
        assert b"".join(storage.stream_read("k")) == data


def test_the_zstd_command_line_restores_objects_and_its_files_read_back(tmp_path: Path) -> None:
    zstd = needs_zstd_cli
    assert zstd is not None, "the zstd command line tool is needed (apt-get install zstd)"
    data = sample(2 * CHUNK_SIZE + 7, "dump")
    storage = Compress(LocalFileSystemBackend(tmp_path))
    storage.write("db/latest.json", io.BytesIO(data))
    restored = subprocess.run(
        [zstd, "-d", "-c", str(tmp_path / "db/latest.json")], capture_output=True, check=True
    )
    assert restored.stdout == data
    (tmp_path / "db/other.json").write_bytes(data)
    subprocess.run([zstd, "-q", "-19", "--rm", str(tmp_path / "db/other.json")], check=True)
    (tmp_path / "db/other.json.zst").rename(tmp_path / "db/other.json")
    assert read_all(storage, "db/other.json") == data


# Damaged, truncated and foreign objects.


def damaged(data: bytes, offset: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 0xFF
    return bytes(changed)


def delivered_before_failure(storage: Any, key: str, *, stream: bool) -> tuple[bytes, Exception]:
    """Read *key* to its end: the bytes delivered, and the error that must end the read."""
    if stream:
        return delivered_from(storage.stream_read(key))
    with storage.read(key) as file:
        return delivered_from(file)


def delivered_from(source: Any) -> tuple[bytes, Exception]:
    """Read a file or an iterator of chunks to its end: the bytes delivered,
    and the error that must end the read."""
    received = bytearray()
    pieces = iter(lambda: source.read(65536), b"") if hasattr(source, "read") else source
    try:
        for piece in pieces:
            received += piece
    except Exception as exc:
        return bytes(received), exc
    raise AssertionError(f"read {len(received)} bytes to a clean end")


@pytest.fixture
def frame() -> tuple[MemoryBackend, Any, bytes, bytes]:
    """An inner storage, Compress over it, the data, and its stored frame."""
    inner = MemoryBackend()
    storage = Compress(inner)
    data = sample(3 * CHUNK_SIZE + 17, "dump")[:-200] + noise(200)
    storage.write("db/x", io.BytesIO(data))
    return inner, storage, data, stored(inner, "db/x")


@pytest.mark.parametrize("where", ["magic", "header", "middle", "end"])
@pytest.mark.parametrize("stream", [False, True], ids=["read", "stream_read"])
def test_a_damaged_byte_raises_an_integrity_error_naming_the_key(
    frame: tuple[MemoryBackend, Any, bytes, bytes], where: str, stream: bool
) -> None:
    inner, storage, _data, compressed = frame
    offset = {"magic": 0, "header": 4, "middle": len(compressed) // 2, "end": -1}[where]
    inner.write("db/x", io.BytesIO(damaged(compressed, offset)))
    _received, error = delivered_before_failure(storage, "db/x", stream=stream)
    assert isinstance(error, SnapshotIntegrityError)
    assert "'db/x'" in str(error)


def test_no_single_byte_flip_ever_reads_as_other_data() -> None:
    data = dump(300)
    inner = MemoryBackend()
    storage = Compress(inner)
    storage.write("k", io.BytesIO(data))
    frame = stored(inner, "k")
    errors = 0
    for offset in range(len(frame)):
        for mask in (0x01, 0x80):
            changed = bytearray(frame)
            changed[offset] ^= mask
            inner.write("k", io.BytesIO(bytes(changed)))
            try:
                got = storage.read("k").read()
            except SnapshotIntegrityError:
                errors += 1
            else:
                # A bit that zstd ignores (a larger window, padding) is no damage.
                assert got == data, f"a flip at offset {offset} read as other data"
    assert errors > 2 * len(frame) * 0.95


@pytest.mark.parametrize("keep", ["2 bytes", "header", "middle", "all but one", "no checksum"])
@pytest.mark.parametrize("stream", [False, True], ids=["read", "stream_read"])
def test_a_truncated_frame_raises_before_the_stream_ends(
    frame: tuple[MemoryBackend, Any, bytes, bytes], keep: str, stream: bool
) -> None:
    inner, storage, data, compressed = frame
    length = {
        "2 bytes": 2,
        "header": 6,
        "middle": len(compressed) // 2,
        "all but one": len(compressed) - 1,
        "no checksum": len(compressed) - 4,
    }[keep]
    inner.write("db/x", io.BytesIO(compressed[:length]))
    received, error = delivered_before_failure(storage, "db/x", stream=stream)
    assert isinstance(error, SnapshotIntegrityError)
    assert "'db/x'" in str(error)
    assert data.startswith(received)


def test_a_frame_cut_after_its_last_block_still_raises() -> None:
    # The content is all there and only the checksum is missing: the data
    # decodes completely, and still must not read as complete.
    inner = MemoryBackend()
    storage = Compress(inner)
    storage.write("k", io.BytesIO(b"short"))
    inner.write("k", io.BytesIO(stored(inner, "k")[:-4]))
    received, error = delivered_before_failure(storage, "k", stream=True)
    assert isinstance(error, SnapshotIntegrityError)
    assert received == b"short"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"plain text, never compressed\n", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x28\xb5", id="half a magic number"),
        pytest.param(noise(3 * CHUNK_SIZE), id="noise"),
        pytest.param(zstandard_frame(b"data") + b"trailing garbage", id="trailing garbage"),
        pytest.param(zstandard_frame(b"data") + MAGIC, id="a second frame cut short"),
        pytest.param(gzip.compress(b"gzip data"), id="gzip"),
    ],
)
def test_data_that_is_not_zstd_raises_an_integrity_error_naming_the_key(
    inner: Any, content: bytes
) -> None:
    inner.write("plain/k", io.BytesIO(content))
    storage = Compress(inner)
    _, error = delivered_before_failure(storage, "plain/k", stream=False)
    assert isinstance(error, SnapshotIntegrityError)
    assert "'plain/k'" in str(error)
    if isinstance(storage, AdvancedSnapshotStorage):
        _, error = delivered_before_failure(storage, "plain/k", stream=True)
        assert isinstance(error, SnapshotIntegrityError)


@pytest.mark.parametrize("stream", [False, True], ids=["read", "stream_read"])
def test_a_stream_that_raised_an_integrity_error_stays_failed(
    frame: tuple[MemoryBackend, Any, bytes, bytes], stream: bool
) -> None:
    inner, storage, _, compressed = frame
    inner.write("db/x", io.BytesIO(compressed[:-10]))
    source = storage.stream_read("db/x") if stream else storage.read("db/x")
    _, first = delivered_from(source)
    assert isinstance(first, SnapshotIntegrityError)
    read_on = (lambda: next(source)) if stream else (lambda: source.read(65536))
    for _ in range(2):
        with pytest.raises(SnapshotIntegrityError) as again:
            read_on()
        assert again.value is first


class _Opened(BasicMemory):
    """A basic storage that keeps every stream its read() hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[IO[bytes]] = []

    def read(self, path: str) -> IO[bytes]:
        stream = super().read(path)
        self.opened.append(stream)
        return stream


def test_a_read_that_failed_or_ended_releases_the_object_below() -> None:
    inner = _Opened()
    storage = Compress(inner)
    storage.write("good", io.BytesIO(b"data" * 1000))
    inner.write("bad", io.BytesIO(b"not compressed at all"))
    good = storage.read("good")
    assert good.read() == b"data" * 1000
    bad = storage.read("bad")
    with pytest.raises(SnapshotIntegrityError):
        bad.read()
    assert [stream.closed for stream in inner.opened] == [True, True]


# A zstd bomb: a small object that expands enormously.


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of zeros as one zstd frame of a few dozen kilobytes."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(CHUNK_SIZE)
    frame = b"".join(compressor.compress(zeros) for _ in range(GIB // CHUNK_SIZE))
    return frame + compressor.flush()


def test_a_zstd_bomb_streams_in_bounded_chunks_and_bounded_memory(bomb: bytes) -> None:
    assert len(bomb) < 256 * 1024
    inner = MemoryBackend()
    inner.write("bomb", io.BytesIO(bomb))
    storage = Compress(inner)
    total = largest = 0
    tracemalloc.start()
    try:
        for chunk in storage.stream_read("bomb"):
            total += len(chunk)
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == GIB
    assert largest <= CHUNK_SIZE
    assert peak < 8 * CHUNK_SIZE, f"Python memory peaked at {peak / 2**20:.1f} MiB"


def test_a_zstd_bomb_reads_through_read_in_bounded_process_memory(bomb: bytes) -> None:
    inner = MemoryBackend()
    inner.write("bomb", io.BytesIO(bomb))
    storage = Compress(inner)

    def read_it() -> None:
        total = 0
        with storage.read("bomb") as stream:
            while piece := stream.read(CHUNK_SIZE):
                total += len(piece)
        assert total == GIB

    growth = peak_rss_delta(read_it)
    assert growth < 64 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB"


def test_writing_streams_in_bounded_memory(tmp_path: Path) -> None:
    storage = Compress(LocalFileSystemBackend(tmp_path))

    def blocks() -> Iterator[bytes]:
        # Each block distinct: repeats would compress away.
        return (random.Random(n).randbytes(CHUNK_SIZE) for n in range(256))

    def write_it() -> None:
        storage.stream_write("big", blocks())
        with Pipe(lambda out: [out.write(block) for block in blocks()]) as pipe:
            storage.write("piped", pipe)

    growth = peak_rss_delta(write_it)
    assert growth < 64 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB"
    for key in ("big", "piped"):  # noise does not shrink: all of it went through
        assert (tmp_path / key).stat().st_size > 256 * CHUNK_SIZE


# Failures of the storage below, and Retry.


@pytest.mark.parametrize("stream", [False, True], ids=["read", "stream_read"])
def test_a_failure_of_the_storage_below_passes_through_unchanged_and_stays(stream: bool) -> None:
    data = noise(3 * CHUNK_SIZE)
    error = ConnectionResetError("reset mid-stream")
    op = "stream_read" if stream else "read"
    inner = AdvancedScripted(MemoryBackend(), **{op: [Fault(error, after=CHUNK_SIZE + 10)]})
    storage = Compress(inner)
    storage.write("k", io.BytesIO(data))
    received, raised = delivered_before_failure(storage, "k", stream=stream)
    assert raised is error
    assert data.startswith(received)


def test_retry_above_compress_retries_a_broken_read_and_resumes(tier: str) -> None:
    data = sample(4 * CHUNK_SIZE, "dump") + noise(CHUNK_SIZE)
    inner = (AdvancedScripted if tier == "advanced" else Scripted)(
        MemoryBackend(), read=resets(2, after=CHUNK_SIZE // 3)
    )
    storage = Retry(Compress(inner), attempts=5, **INSTANT)
    storage.write("k", io.BytesIO(data))
    assert read_all(storage, "k") == data
    assert inner.calls["read"] == 3


def test_retry_never_retries_an_integrity_error(tier: str) -> None:
    inner = (AdvancedScripted if tier == "advanced" else Scripted)(MemoryBackend())
    inner.inner.write("k", io.BytesIO(b"not compressed"))
    storage = Retry(Compress(inner), attempts=5, **INSTANT)
    with pytest.raises(SnapshotIntegrityError):
        storage.read("k").read()
    assert inner.calls["read"] == 1


def test_a_retry_below_rewinds_the_compressed_stream_instead_of_spooling(
    tier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = sample(3 * CHUNK_SIZE, "dump") + noise(CHUNK_SIZE)
    below = (AdvancedScripted if tier == "advanced" else Scripted)(
        MemoryBackend(), write=resets(2, after=5000)
    )
    storage = Compress(Retry(below, attempts=5, **INSTANT))
    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "SpooledTemporaryFile", None)  # a spool would fail
        storage.write("k", io.BytesIO(data))
    assert below.calls["write"] == 3
    assert zstandard_decompress(stored(below.inner, "k")) == data
    with Pipe(data) as pipe:  # not seekable: Retry spools what Compress hands it
        below.faults["write"] = resets(1, after=5000)
        storage.write("piped", pipe)
    assert read_all(storage, "piped") == data


def test_the_compressed_stream_rewinds_only_to_its_start() -> None:
    from django_snapshots.storage.wrappers.compress import _CompressedContent

    compress = Compress(MemoryBackend())
    content = _CompressedContent(io.BytesIO(b"x" * 5000), compress._self_compressor)
    assert content.seekable()
    first = content.read(7)
    assert content.tell() == 7
    with pytest.raises(io.UnsupportedOperation):
        content.seek(3)
    with pytest.raises(io.UnsupportedOperation):
        content.seek(0, io.SEEK_END)
    assert content.seek(0) == 0
    assert content.read(7) == first
    assert zstandard_decompress(first + content.read()) == b"x" * 5000
    unseekable = _CompressedContent(Pipe(b"y").reader, compress._self_compressor)
    assert not unseekable.seekable()
    with pytest.raises(io.UnsupportedOperation):
        unseekable.tell()


def test_a_failing_write_keeps_the_previous_object(inner: Any) -> None:
    storage = Compress(inner)
    storage.write("k", io.BytesIO(b"good"))
    error = OSError("the disk went away")
    source = io.BytesIO(noise(5 * CHUNK_SIZE))
    failing = FailingReader(source, Fault(error, after=3 * CHUNK_SIZE), seekable=False)
    with pytest.raises(OSError, match="the disk went away"):
        storage.write("k", failing)  # type: ignore[arg-type]
    assert storage.read("k").read() == b"good"


def test_bad_content_and_bad_keys_are_refused_before_any_io() -> None:
    inner = AdvancedScripted(MemoryBackend())
    storage = Compress(inner)
    with pytest.raises(TypeError, match="binary file object"):
        storage.write("k", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(SnapshotStoragePathError):
        storage.write("../k", io.BytesIO(b"x"))
    consumed = []

    def chunks() -> Iterator[bytes]:
        consumed.append(True)
        yield b"x"

    with pytest.raises(SnapshotStoragePathError):
        storage.stream_write("/k", chunks())
    assert not consumed
    assert not inner.calls


# Keys pass through.


def test_other_operations_act_on_the_compressed_objects_as_stored() -> None:
    inner = MemoryBackend()
    storage = Compress(inner)
    for key in ("a/1", "a/2", "b/1"):
        storage.write(key, io.BytesIO(key.encode() * 1000))
    assert storage.list("a/") == inner.list("a/") == ["a/1", "a/2"]
    assert storage.recursive_list("") == ["a/1", "a/2", "b/1"]
    assert storage.exists("a/1")
    assert not storage.exists("a")
    storage.atomic_move("a/2", "c/2")
    assert inner.list("") == ["a/1", "b/1", "c/2"]
    storage.sync("a/", "m/")
    assert stored(inner, "m/1") == stored(inner, "a/1")
    assert storage.read("m/1").read() == b"a/1" * 1000
    storage.delete("a/1")
    assert inner.list("") == ["b/1", "c/2", "m/1"]


def test_compress_below_checksum_lets_sha256sum_check_the_stored_objects(tmp_path: Path) -> None:
    data = dump(2000)
    storage = Compress(Checksum(LocalFileSystemBackend(tmp_path)))
    storage.write("db/latest.json", io.BytesIO(data))
    # The stack's verify reads the compressed bytes Checksum digested.
    stored = (tmp_path / "db" / "latest.json").read_bytes()
    assert storage.verify("db/latest.json") == hashlib.sha256(stored).hexdigest()
    check = subprocess.run(
        ["sha256sum", "-c", "latest.json.sha256"], cwd=tmp_path / "db", capture_output=True
    )
    assert check.returncode == 0
    assert storage.read("db/latest.json").read() == data
    assert storage.list("") == ["db/latest.json"]


def test_checksum_above_compress_digests_the_data_and_compresses_its_sidecar(
    tmp_path: Path,
) -> None:
    data = dump(200)
    local = LocalFileSystemBackend(tmp_path)
    storage = Checksum(Compress(local))
    storage.write("db/latest.json", io.BytesIO(data))
    assert local.list("") == ["db/latest.json", "db/latest.json.sha256"]
    assert zstandard_decompress(stored(local, "db/latest.json.sha256")).startswith(
        hashlib.sha256(data).hexdigest().encode()
    )
    assert storage.read("db/latest.json").read() == data


def test_prefix_above_compress_scopes_the_keys() -> None:
    inner = MemoryBackend()
    storage = Prefix(Compress(inner), "acme")
    storage.write("db/x", io.BytesIO(b"payload"))
    assert inner.list("") == ["acme/db/x"]
    assert zstandard_decompress(stored(inner, "acme/db/x")) == b"payload"


# The storage contract holds through the wrapper and the stacks it goes in.


class _CompressConformance(StorageConformance):
    def stack_over(self, storage: Any) -> Any:
        return Compress(storage)


class TestCompressOverMemoryBackend(_CompressConformance):
    @pytest.fixture
    def storage(self) -> Any:
        return Compress(MemoryBackend())


class TestCompressOverLocalFileSystemBackend(_CompressConformance):
    max_segment_bytes = 255

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        return Compress(LocalFileSystemBackend(tmp_path), level=1, threads=1)

    def stack_over(self, storage: Any) -> Any:
        return Compress(storage, level=1, threads=1)


class TestCompressOverABasicStorage(_CompressConformance):
    @pytest.fixture
    def storage(self) -> Any:
        return Compress(BasicMemory())


class TestLoggingRetryChecksumCompressOverLocalFileSystemBackend(StorageConformance):
    max_key_bytes = MAX_KEY_BYTES - len(".sha256")
    max_segment_bytes = 255 - len(".sha256")

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        return Logging(Retry(Checksum(Compress(LocalFileSystemBackend(tmp_path)))))

    def stack_over(self, storage: Any) -> Any:
        return Logging(Retry(Checksum(Compress(storage)), attempts=3, **INSTANT))


class TestRetryOverCompressOverChaos(_CompressConformance):
    @pytest.fixture
    def storage(self) -> Any:
        chaos = Chaos(MemoryBackend(), failure_rate=0.3, seed=8)
        return Retry(Compress(chaos), attempts=30, **INSTANT)

    def stack_over(self, storage: Any) -> Any:
        return Retry(Compress(storage), attempts=3, **INSTANT)

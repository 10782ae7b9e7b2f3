"""Tests for the Checksum wrapper."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from django_snapshots.exceptions import (
    SnapshotIntegrityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    Checksum,
    LocalFileSystemBackend,
    MemoryBackend,
    Prefix,
    Retry,
)
from django_snapshots.storage.keys import MAX_KEY_BYTES
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.storage.wrappers.checksum import AdvancedChecksum, _Digest
from django_snapshots.testing import Chaos, StorageConformance, assert_intercepts_every_method
from tests.test_retry import (
    INSTANT,
    AdvancedScripted,
    BasicMemory,
    Fault,
    Pipe,
    Scripted,
    noise,
    resets,
)

#: Algorithms and the coreutils tool that checks their sidecars.
TOOLS = {
    "sha256": "sha256sum",
    "sha512": "sha512sum",
    "sha1": "sha1sum",
    "sha224": "sha224sum",
    "sha384": "sha384sum",
    "md5": "md5sum",
    "blake2b": "b2sum",
}

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17]


def hexdigest(data: bytes, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, data).hexdigest()


def sidecar_line(data: bytes, basename: str, algorithm: str = "sha256") -> bytes:
    return f"{hexdigest(data, algorithm)}  {basename}\n".encode()


@pytest.fixture(params=["basic", "advanced", "local"])
def inner(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The storage under the wrapper: a basic one, MemoryBackend, or local files."""
    if request.param == "basic":
        return BasicMemory()
    if request.param == "advanced":
        return MemoryBackend()
    return LocalFileSystemBackend(tmp_path / "store")


def flip(storage: Any, key: str, offset: int) -> bytes:
    """Flip one bit of the byte at *offset* of the object at *key*, behind the wrapper."""
    data = bytearray(storage.read(key).read())
    data[offset] ^= 0x01
    storage.write(key, io.BytesIO(bytes(data)))
    return bytes(data)


def consume(stream: IO[bytes], piece: int, received: bytearray) -> None:
    while data := stream.read(piece):
        received += data


def run_tool(tool: str, sidecar: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-c", sidecar.name], cwd=sidecar.parent, capture_output=True, text=True, check=False
    )


# Options and shape.


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"algorithm": "sha-256-nope"}, ValueError, "not available in hashlib"),
        ({"algorithm": "shake_128"}, ValueError, "variable-length digest"),
        ({"algorithm": "shake_256"}, ValueError, "variable-length digest"),
        ({"algorithm": 256}, TypeError, "algorithm must be a str"),
        ({"algorithm": ""}, ValueError, "not available in hashlib"),
        ({"strict": "yes"}, TypeError, "strict must be a bool"),
        ({"strict": None}, TypeError, "strict must be a bool"),
        ({"lock_dir": 3}, TypeError, "lock_dir must be a str or a path"),
        ({"lock_dir": "/nonexistent/locks"}, ValueError, "'/nonexistent/locks' is not a directory"),
    ],
)
def test_bad_options_are_refused_when_the_wrapper_is_built(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    storage = AdvancedScripted(MemoryBackend())
    with pytest.raises(error, match=message):
        Checksum(storage, **options)
    assert not storage.calls


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Checksum(MemoryBackend(), "sha256")  # type: ignore[call-overload]


def test_algorithm_names_are_normalized() -> None:
    inner = MemoryBackend()
    storage = Checksum(inner, algorithm="SHA256")
    assert repr(storage) == "Checksum(MemoryBackend(), algorithm='sha256')"
    storage.write("k", io.BytesIO(b"x"))
    assert inner.list("") == ["k", "k.sha256"]


def test_checksum_keeps_the_tier_and_intercepts_every_method() -> None:
    advanced = Checksum(MemoryBackend())
    basic = Checksum(BasicMemory())
    assert isinstance(advanced, AdvancedChecksum)
    assert isinstance(advanced, AdvancedSnapshotStorage)
    assert type(basic) is Checksum
    assert not isinstance(basic, AdvancedSnapshotStorage)
    assert not hasattr(basic, "stream_read")
    assert_intercepts_every_method(advanced)
    assert_intercepts_every_method(basic)


def test_repr_shows_the_algorithm_and_a_lenient_mode() -> None:
    assert repr(Checksum(MemoryBackend())) == "Checksum(MemoryBackend(), algorithm='sha256')"
    assert repr(Checksum(MemoryBackend(), algorithm="md5", strict=False)) == (
        "Checksum(MemoryBackend(), algorithm='md5', strict=False)"
    )


# Writing.


@pytest.mark.parametrize("algorithm", sorted(TOOLS))
def test_write_stores_a_sidecar_in_the_coreutils_format(algorithm: str, inner: Any) -> None:
    data = noise(CHUNK_SIZE + 5)
    Checksum(inner, algorithm=algorithm).write("db/latest.dump", io.BytesIO(data))
    assert inner.read("db/latest.dump").read() == data
    assert inner.read(f"db/latest.dump.{algorithm}").read() == sidecar_line(
        data, "latest.dump", algorithm
    )


@pytest.mark.parametrize("size", SIZES)
def test_stream_write_hashes_the_chunks_in_one_pass(size: int) -> None:
    inner = MemoryBackend()
    data = noise(size, seed=size)
    taken: list[int] = []

    def chunks() -> Iterator[bytes]:
        for start in range(0, size, 70_000):
            taken.append(start)
            yield data[start : start + 70_000]

    Checksum(inner).stream_write("a/b", chunks())
    assert inner.read("a/b").read() == data
    assert inner.read("a/b.sha256").read() == sidecar_line(data, "b")
    assert taken == list(range(0, size, 70_000))


def test_a_write_reads_its_input_once(inner: Any) -> None:
    data = noise(2 * CHUNK_SIZE + 3)
    with Pipe(data) as pipe:
        Checksum(inner).write("k", pipe)
        assert pipe.read() == b""
    assert inner.read("k.sha256").read() == sidecar_line(data, "k")


def test_chunks_reused_by_the_producer_are_hashed_as_they_were_when_handed_over() -> None:
    inner = MemoryBackend()
    buffer = bytearray(512 * 1024)
    expected = hashlib.sha256()

    def chunks() -> Iterator[bytearray]:
        for n in range(8):
            buffer[:] = noise(len(buffer), seed=n)
            expected.update(buffer)
            yield buffer  # the same object every time, changed in place

    Checksum(inner).stream_write("k", chunks())  # type: ignore[arg-type]
    assert inner.read("k.sha256").read() == f"{expected.hexdigest()}  k\n".encode()


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 700 * 1024), max_size=12), kind=st.sampled_from("bBm"))
def test_hashing_in_the_background_gives_the_digest_of_the_bytes_in_order(
    sizes: list[int], kind: str
) -> None:
    pieces = [noise(n, seed=i) for i, n in enumerate(sizes)]
    wrap: Callable[[bytes], Any] = {"b": bytes, "B": bytearray, "m": memoryview}[kind]
    with _Digest("sha256") as digest:
        for piece in pieces:
            digest.update(wrap(piece))
        assert digest.hexdigest() == hexdigest(b"".join(pieces))


def test_no_hashing_thread_outlives_its_stream() -> None:
    storage = Checksum(MemoryBackend())
    storage.write("k", io.BytesIO(noise(4 * CHUNK_SIZE)))
    with storage.read("k") as stream:
        stream.read(CHUNK_SIZE)
    chunks = storage.stream_read("k")
    next(chunks)
    chunks.close()  # type: ignore[attr-defined]
    storage.verify("k")
    alive = [t for t in threading.enumerate() if t.name == "django-snapshots-checksum"]
    assert alive == []


# Reading.


@pytest.mark.parametrize("size", SIZES)
def test_intact_objects_read_back_through_every_path(size: int, inner: Any) -> None:
    data = noise(size, seed=size)
    storage = Checksum(inner)
    storage.write("db/x", io.BytesIO(data))
    with storage.read("db/x") as stream:
        assert stream.read() == data
    with storage.read("db/x") as stream:
        received = bytearray()
        consume(stream, 1000, received)
        assert received == data
    assert storage.verify("db/x") == hexdigest(data)
    if isinstance(storage, AdvancedSnapshotStorage):
        chunks = list(storage.stream_read("db/x"))
        assert all(chunks)
        assert b"".join(chunks) == data


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_flipped_byte_is_caught_before_the_last_chunk_is_handed_out(
    data: st.DataObject, inner: Any
) -> None:
    size = data.draw(st.sampled_from([1, 2, 4096, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 9]))
    offset = data.draw(st.integers(0, size - 1))
    piece = data.draw(
        st.sampled_from([1 if size <= 4096 else 999, 1000, CHUNK_SIZE, 3 * CHUNK_SIZE])
    )
    original = noise(size, seed=offset)
    storage = Checksum(inner)
    storage.write("db/x", io.BytesIO(original))
    flip(inner, "db/x", offset)

    received = bytearray()
    with storage.read("db/x") as stream, pytest.raises(SnapshotIntegrityError):
        consume(stream, piece, received)
    # Even a consumer that stops once it has the size it expects meets the error.
    assert len(received) < size

    with pytest.raises(SnapshotIntegrityError):
        storage.verify("db/x")

    if isinstance(storage, AdvancedSnapshotStorage):
        received = bytearray()
        with pytest.raises(SnapshotIntegrityError):
            received.extend(itertools.chain.from_iterable(storage.stream_read("db/x")))
        assert len(received) < size


def test_the_integrity_error_names_the_key_and_both_digests(inner: Any) -> None:
    storage = Checksum(inner)
    storage.write("db/x", io.BytesIO(b"payload"))
    corrupt = flip(inner, "db/x", 3)
    with pytest.raises(SnapshotIntegrityError) as excinfo:
        storage.read("db/x").read()
    message = str(excinfo.value)
    assert "'db/x'" in message
    assert hexdigest(b"payload") in message
    assert hexdigest(corrupt) in message


def test_an_object_replaced_behind_the_wrapper_fails_verification(inner: Any) -> None:
    storage = Checksum(inner)
    storage.write("k", io.BytesIO(b"old"))
    inner.write("k", io.BytesIO(b"new, longer"))
    with pytest.raises(SnapshotIntegrityError, match="does not match its checksum"):
        storage.read("k").read()


def test_a_truncated_object_fails_verification(inner: Any) -> None:
    storage = Checksum(inner)
    storage.write("k", io.BytesIO(noise(CHUNK_SIZE + 10)))
    inner.write("k", io.BytesIO(noise(CHUNK_SIZE + 10)[:CHUNK_SIZE]))
    with pytest.raises(SnapshotIntegrityError):
        storage.verify("k")


def test_an_empty_object_verifies(inner: Any) -> None:
    storage = Checksum(inner)
    storage.write("empty", io.BytesIO(b""))
    assert storage.read("empty").read() == b""
    assert storage.verify("empty") == hexdigest(b"")
    inner.write("empty", io.BytesIO(b"\x00"))
    with pytest.raises(SnapshotIntegrityError):
        storage.read("empty").read()


def test_closing_a_stream_early_closes_the_storage_stream() -> None:
    opened: list[Any] = []

    class Tracked(MemoryBackend):
        def read(self, path: str) -> IO[bytes]:
            stream = super().read(path)
            opened.append(stream)
            return stream

    storage = Checksum(Tracked())
    storage.write("k", io.BytesIO(noise(3 * CHUNK_SIZE)))
    stream = storage.read("k")
    stream.close()  # before reading anything
    stream = storage.read("k")
    stream.read(10)
    stream.close()
    assert len(opened) == 4  # a sidecar and the data, twice
    assert all(s.closed for s in opened)


# Missing and malformed sidecars.


def test_a_missing_sidecar_is_an_integrity_error_when_strict(inner: Any) -> None:
    storage = Checksum(inner)
    inner.write("db/x", io.BytesIO(b"unverifiable"))
    with pytest.raises(SnapshotIntegrityError, match=r"sidecar 'db/x.sha256' is missing"):
        storage.read("db/x")
    with pytest.raises(SnapshotIntegrityError, match="missing"):
        storage.verify("db/x")
    if isinstance(storage, AdvancedSnapshotStorage):
        with pytest.raises(SnapshotIntegrityError, match="missing"):
            storage.stream_read("db/x")


def test_a_missing_sidecar_gives_unverified_data_and_a_warning_when_lenient(inner: Any) -> None:
    storage = Checksum(inner, strict=False)
    inner.write("db/x", io.BytesIO(b"unverifiable"))
    with capture_logs() as entries:
        assert storage.read("db/x").read() == b"unverifiable"
        if isinstance(storage, AdvancedSnapshotStorage):
            assert b"".join(storage.stream_read("db/x")) == b"unverifiable"
    assert entries
    for entry in entries:
        assert entry["event"] == "snapshots.checksum.unverified"
        assert entry["log_level"] == "warning"
        assert entry["path"] == "db/x"
        assert entry["sidecar"] == "db/x.sha256"
    # Verifying means having a digest: a lenient wrapper still refuses to vouch.
    with pytest.raises(SnapshotIntegrityError, match="missing"):
        storage.verify("db/x")


@pytest.mark.parametrize("strict", [True, False])
def test_a_missing_object_is_file_not_found_whatever_its_sidecar(strict: bool, inner: Any) -> None:
    storage = Checksum(inner, strict=strict)
    inner.write("orphan.sha256", io.BytesIO(sidecar_line(b"gone", "orphan")))
    for key in ("absent", "orphan"):
        with pytest.raises(FileNotFoundError):
            storage.read(key)
        with pytest.raises(FileNotFoundError):
            storage.verify(key)
        if isinstance(storage, AdvancedSnapshotStorage):
            with pytest.raises(FileNotFoundError):
                list(storage.stream_read(key))


GOOD = hexdigest(b"payload")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is not one line"),
        (b"garbage\n", "is not one line"),
        (f"{GOOD}\n".encode(), "is not one line"),
        (f"{GOOD} x.dump\n".encode(), "is not one line"),
        (f"{GOOD}  x.dump\n{GOOD}  x.dump\n".encode(), "is not one line"),
        (f"{GOOD[:-2]}  x.dump\n".encode(), "62 hex digits"),
        (f"{GOOD}00  x.dump\n".encode(), "66 hex digits"),
        (f"{GOOD[:-1]}g  x.dump\n".encode(), "is not one line"),
        (f"{GOOD}  other.dump\n".encode(), "names 'other.dump', not 'x.dump'"),
        (f"{GOOD}  db/x.dump\n".encode(), "names 'db/x.dump', not 'x.dump'"),
        (b"\xff\xfe" + GOOD.encode() + b"  x.dump\n", "is not UTF-8"),
        (f"{GOOD}  x.dump\n".encode() + b" " * 5000, "longer than 4096 bytes"),
    ],
)
def test_a_malformed_sidecar_is_an_integrity_error(
    content: bytes, problem: str, inner: Any
) -> None:
    storage = Checksum(inner, strict=False)
    inner.write("db/x.dump", io.BytesIO(b"payload"))
    inner.write("db/x.dump.sha256", io.BytesIO(content))
    with pytest.raises(SnapshotIntegrityError, match="cannot be verified") as excinfo:
        storage.read("db/x.dump").read()
    assert problem in str(excinfo.value)


@pytest.mark.parametrize(
    "content",
    [f"{GOOD.upper()}  x.dump\n", f"{GOOD} *x.dump\n", f"{GOOD}  x.dump"],
    ids=["upper-case", "binary-mode-marker", "no-final-newline"],
)
def test_sidecars_other_checksum_tools_write_are_accepted(content: str, inner: Any) -> None:
    storage = Checksum(inner)
    inner.write("db/x.dump", io.BytesIO(b"payload"))
    inner.write("db/x.dump.sha256", io.BytesIO(content.encode()))
    assert storage.read("db/x.dump").read() == b"payload"


# Sidecars are invisible.


def test_lists_leave_the_sidecars_out(inner: Any) -> None:
    storage = Checksum(inner)
    for key in ("a/1", "a/2", "b"):
        storage.write(key, io.BytesIO(b"x"))
    inner.write("a/orphan.sha256", io.BytesIO(b"left over"))
    assert storage.list("") == ["a/1", "a/2", "b"]
    assert storage.list("a/") == ["a/1", "a/2"]
    if isinstance(storage, AdvancedSnapshotStorage):
        assert storage.recursive_list("a") == ["a/1", "a/2"]


def test_a_sidecar_does_not_exist_through_the_wrapper(inner: Any) -> None:
    storage = Checksum(inner)
    storage.write("k", io.BytesIO(b"x"))
    assert storage.exists("k")
    assert not storage.exists("k.sha256")
    with pytest.raises(FileNotFoundError):
        storage.read("k.sha256")
    with pytest.raises(FileNotFoundError):
        storage.verify("k.sha256")
    storage.delete("k.sha256")
    assert inner.exists("k.sha256")
    assert storage.read("k").read() == b"x"


@pytest.mark.parametrize("key", ["r/notes.sha512", "k.md5", "k.blake2b", "k.SHA256", "k.Sha3_256"])
def test_any_algorithms_sidecar_name_is_refused_before_any_io(inner: Any, key: str) -> None:
    # Two Checksum layers with different algorithms may share a storage: a
    # sha256 stack's object "r/notes.sha512" would be overwritten by a sha512
    # stack's sidecar of "r/notes" (and case-insensitive remotes fold case).
    storage = Checksum(inner)
    with Pipe(b"payload") as pipe:
        with pytest.raises(SnapshotStoragePathError, match="reserved for checksum sidecars"):
            storage.write(key, pipe)
        assert pipe.read() == b"payload"
    assert inner.list("") == []
    if isinstance(storage, AdvancedSnapshotStorage):
        with pytest.raises(SnapshotStoragePathError, match="reserved"):
            storage.stream_write(key, iter([b"payload"]))
        storage.write("src", io.BytesIO(b"x"))
        with pytest.raises(SnapshotStoragePathError, match="reserved"):
            storage.atomic_move("src", key)
        assert storage.read("src").read() == b"x"


def test_two_checksum_stacks_with_different_algorithms_share_a_storage(inner: Any) -> None:
    sha256 = Checksum(inner)
    sha512 = Checksum(inner, algorithm="sha512")
    sha256.write("r/notes", io.BytesIO(b"by sha256"))
    sha512.write("r/other", io.BytesIO(b"by sha512"))
    # Each sees its own objects and neither sees a sidecar of the other.
    assert sha256.list("") == ["r/notes", "r/other"]
    assert not sha256.exists("r/other.sha512")
    assert sha256.read("r/notes").read() == b"by sha256"
    assert sha512.read("r/other").read() == b"by sha512"
    assert sorted(inner.list("")) == [
        "r/notes", "r/notes.sha256", "r/other", "r/other.sha512",
    ]  # fmt: skip


def test_a_second_checksum_layer_in_one_stack_is_refused() -> None:
    with pytest.raises(TypeError, match="already has a Checksum layer"):
        Checksum(Prefix(Checksum(MemoryBackend()), "t"), algorithm="sha512")


def test_writing_a_key_with_the_sidecar_suffix_is_refused_before_any_io() -> None:
    inner = AdvancedScripted(MemoryBackend())
    storage = Checksum(inner)
    with Pipe(b"payload") as pipe:
        with pytest.raises(SnapshotStoragePathError, match=r"reserved .*sidecars"):
            storage.write("db/x.sha256", pipe)
        with pytest.raises(SnapshotStoragePathError, match="reserved"):
            storage.stream_write("db/x.sha256", iter([b"payload"]))
        assert pipe.read() == b"payload"
    inner.inner.write("a", io.BytesIO(b"x"))
    with pytest.raises(SnapshotStoragePathError, match="reserved"):
        storage.atomic_move("a", "b.sha256")
    assert not inner.calls


def test_a_key_too_long_for_its_sidecar_is_refused_before_any_io() -> None:
    inner = AdvancedScripted(MemoryBackend())
    storage = Checksum(inner)
    longest = "k" * (MAX_KEY_BYTES - len(".sha256"))
    with pytest.raises(SnapshotStoragePathError, match="too long for its checksum sidecar"):
        storage.write(longest + "k", io.BytesIO(b"x"))
    assert not inner.calls
    storage.write(longest, io.BytesIO(b"x"))
    assert storage.read(longest).read() == b"x"


@pytest.mark.parametrize("key", ["", "../x", "/abs", "a//b", "a\nb"])
def test_invalid_keys_are_refused_before_any_io(key: str) -> None:
    inner = AdvancedScripted(MemoryBackend())
    storage = Checksum(inner)
    for call in (
        lambda: storage.write(key, io.BytesIO(b"x")),
        lambda: storage.stream_write(key, iter([b"x"])),
        lambda: storage.read(key),
        lambda: storage.stream_read(key),
        lambda: storage.verify(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
        lambda: storage.atomic_move(key, "ok"),
        lambda: storage.atomic_move("ok", key),
    ):
        with pytest.raises(SnapshotStoragePathError):
            call()
    assert not inner.calls


# Delete, move and sync carry the sidecar.


def test_delete_removes_the_object_and_its_sidecar(inner: Any) -> None:
    storage = Checksum(inner)
    storage.write("db/x", io.BytesIO(b"x"))
    storage.write("db/y", io.BytesIO(b"y"))
    storage.delete("db/x")
    assert inner.list("") == ["db/y", "db/y.sha256"]
    storage.delete("db/absent")


@pytest.fixture(params=["advanced", "local"])
def advanced(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "advanced":
        return MemoryBackend()
    return LocalFileSystemBackend(tmp_path / "store")


def test_atomic_move_carries_the_sidecar_and_names_the_new_basename(advanced: Any) -> None:
    storage = Checksum(advanced)
    storage.write("tmp/upload.part", io.BytesIO(b"new"))
    storage.write("db/latest.dump", io.BytesIO(b"old"))
    storage.atomic_move("tmp/upload.part", "db/latest.dump")
    assert advanced.list("") == ["db/latest.dump", "db/latest.dump.sha256"]
    assert advanced.read("db/latest.dump.sha256").read() == sidecar_line(b"new", "latest.dump")
    assert storage.read("db/latest.dump").read() == b"new"


def test_atomic_move_of_an_object_onto_itself_keeps_its_sidecar(advanced: Any) -> None:
    storage = Checksum(advanced)
    storage.write("k", io.BytesIO(b"x"))
    storage.atomic_move("k", "k")
    assert storage.verify("k") == hexdigest(b"x")


def test_atomic_move_refuses_an_object_without_sidecar_when_strict(advanced: Any) -> None:
    storage = Checksum(advanced)
    advanced.write("a", io.BytesIO(b"unverified"))
    with pytest.raises(SnapshotIntegrityError, match="missing"):
        storage.atomic_move("a", "b")
    assert advanced.list("") == ["a"]
    with pytest.raises(FileNotFoundError):
        storage.atomic_move("absent", "b")


def test_a_lenient_move_without_sidecar_drops_the_stale_sidecar_of_the_target(
    advanced: Any,
) -> None:
    storage = Checksum(advanced, strict=False)
    storage.write("b", io.BytesIO(b"old"))
    advanced.write("a", io.BytesIO(b"unverified"))
    with capture_logs() as entries:
        storage.atomic_move("a", "b")
    assert [e["event"] for e in entries] == ["snapshots.checksum.unverified"]
    assert advanced.list("") == ["b"]
    with capture_logs():
        assert storage.read("b").read() == b"unverified"


MOVE_FAILURES = {
    "writing the new sidecar": {"write": resets(1)},
    "before the data moved": {"atomic_move": resets(1)},
    "after the data moved": {"atomic_move": resets(1, after=0)},
    "removing the old sidecar": {"delete": resets(1)},
}


@pytest.mark.parametrize("where", sorted(MOVE_FAILURES))
def test_an_interrupted_move_never_leaves_data_that_passes_verification_wrongly(
    where: str, advanced: Any
) -> None:
    storage = Checksum(advanced)
    storage.write("a", io.BytesIO(b"new"))
    storage.write("b", io.BytesIO(b"old"))
    failing = Checksum(AdvancedScripted(advanced, **MOVE_FAILURES[where]))
    with pytest.raises(ConnectionResetError):
        failing.atomic_move("a", "b")
    if advanced.exists("a"):
        assert storage.read("a").read() == b"new"  # the source is intact
        # The destination is untouched, or refused until the move is run again.
        with contextlib.suppress(SnapshotIntegrityError):
            assert storage.read("b").read() == b"old"
        storage.atomic_move("a", "b")
    else:
        assert storage.read("b").read() == b"new"  # the data moved: the move is complete
        with pytest.raises(FileNotFoundError):
            storage.atomic_move("a", "b")
    assert storage.list("") == ["b"]
    assert storage.verify("b") == hexdigest(b"new")


@pytest.mark.parametrize("where", sorted(MOVE_FAILURES))
def test_retry_above_checksum_completes_an_interrupted_move(where: str, advanced: Any) -> None:
    Checksum(advanced).write("a", io.BytesIO(b"new"))
    Checksum(advanced).write("b", io.BytesIO(b"old"))
    storage = Retry(Checksum(AdvancedScripted(advanced, **MOVE_FAILURES[where])), **INSTANT)
    storage.atomic_move("a", "b")
    assert storage.list("") == ["b"]
    assert storage.verify("b") == hexdigest(b"new")


@pytest.mark.parametrize("same", [True, False], ids=["same-bytes", "other-bytes"])
def test_a_sidecar_left_without_its_object_is_never_moved(same: bool, advanced: Any) -> None:
    storage = Checksum(advanced)
    storage.write("a", io.BytesIO(b"payload"))
    storage.write("b", io.BytesIO(b"payload" if same else b"other"))
    advanced.delete("a")  # only the sidecar of "a" is left
    with pytest.raises(FileNotFoundError):
        storage.atomic_move("a", "b")
    assert storage.verify("b") == hexdigest(b"payload" if same else b"other")
    with pytest.raises(FileNotFoundError):
        storage.atomic_move("a", "c")
    assert not advanced.exists("c.sha256")


def test_sync_mirrors_the_sidecars_with_their_objects(advanced: Any) -> None:
    storage = Checksum(advanced)
    storage.write("src/a", io.BytesIO(b"a"))
    storage.write("src/deep/b", io.BytesIO(b"b"))
    storage.write("dst/stale", io.BytesIO(b"stale"))
    storage.sync("src/", "dst/")
    assert storage.list("dst/") == ["dst/a", "dst/deep/b"]
    assert storage.verify("dst/deep/b") == hexdigest(b"b")
    assert not advanced.exists("dst/stale.sha256")


# The coreutils tools agree, with no Python involved.


@pytest.mark.parametrize("algorithm", sorted(TOOLS))
def test_the_coreutils_tool_checks_a_backup_and_catches_a_flipped_byte(
    algorithm: str, tmp_path: Path
) -> None:
    local = LocalFileSystemBackend(tmp_path)
    storage = Checksum(local, algorithm=algorithm)
    storage.write("db/2026-11-26 dump.sql", io.BytesIO(noise(CHUNK_SIZE + 3)))
    sidecar = tmp_path / "db" / f"2026-11-26 dump.sql.{algorithm}"
    result = run_tool(TOOLS[algorithm], sidecar)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    flip(local, "db/2026-11-26 dump.sql", CHUNK_SIZE)
    result = run_tool(TOOLS[algorithm], sidecar)
    assert result.returncode != 0
    assert "FAILED" in result.stdout


def test_the_coreutils_tool_checks_a_moved_and_a_synced_backup(tmp_path: Path) -> None:
    local = LocalFileSystemBackend(tmp_path)
    storage = Checksum(local)
    storage.write("tmp/part-1", io.BytesIO(b"payload"))
    storage.atomic_move("tmp/part-1", "db/final.dump")
    storage.sync("db/", "mirror/")
    for directory in ("db", "mirror"):
        result = run_tool("sha256sum", tmp_path / directory / "final.dump.sha256")
        assert result.returncode == 0, result.stdout + result.stderr


# What failures leave behind: never data that passes verification wrongly.


class Torn(MemoryBackend):
    """A storage that does not replace objects atomically: a failed write
    leaves what it had received, like a naive file or a torn upload."""

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        received = bytearray()
        try:
            for chunk in chunks:
                received += chunk
        finally:
            super().stream_write(path, iter([bytes(received)]))


@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new"])
@pytest.mark.parametrize("failing", ["data-start", "data-middle", "sidecar"])
@pytest.mark.parametrize("strict", [True, False])
def test_a_failed_write_never_leaves_data_that_passes_verification_wrongly(
    existing: bool, failing: str, strict: bool
) -> None:
    old, new = noise(3000, seed=1), noise(3000, seed=2)
    torn = Torn()
    storage = Checksum(torn, strict=strict)
    if existing:
        storage.write("k", io.BytesIO(old))
    writes = {"data-start": [Fault(ConnectionResetError())],
              "data-middle": [Fault(ConnectionResetError(), after=1500)],
              "sidecar": [None, Fault(ConnectionResetError())]}[failing]  # fmt: skip
    scripted = Scripted(torn, write=writes)  # type: ignore[arg-type]
    with pytest.raises(ConnectionResetError):
        Checksum(scripted, strict=strict).write("k", io.BytesIO(new))
    with capture_logs() as entries:
        try:
            delivered = storage.read("k").read()
        except (SnapshotIntegrityError, FileNotFoundError):
            return
    if entries:
        # Only a lenient wrapper hands out data it could not verify, and it says so.
        assert not strict
        assert [e["event"] for e in entries] == ["snapshots.checksum.unverified"]
        return
    # Whatever passed verification is a whole version, the one its sidecar describes.
    assert delivered in (old, new)
    assert hexdigest(delivered) == torn.read("k.sha256").read().split()[0].decode()


def test_a_write_that_fails_while_sending_leaves_the_old_object_verifiable(inner: Any) -> None:
    storage = Checksum(inner)
    storage.write("k", io.BytesIO(b"old version"))
    failing = Scripted(inner, write=resets(1, after=4))
    with pytest.raises(ConnectionResetError):
        Checksum(failing).write("k", io.BytesIO(b"new version"))
    assert storage.verify("k") == hexdigest(b"old version")


def test_a_write_whose_sidecar_failed_is_refused_not_returned(inner: Any) -> None:
    storage = Checksum(inner)
    storage.write("k", io.BytesIO(b"old version"))
    failing = Scripted(inner, write=[None, Fault(ConnectionResetError())])  # type: ignore[list-item]
    with pytest.raises(ConnectionResetError):
        Checksum(failing).write("k", io.BytesIO(b"new version"))
    with pytest.raises(SnapshotIntegrityError, match="does not match its checksum"):
        storage.read("k").read()
    storage.write("k", io.BytesIO(b"new version"))  # writing again repairs it
    assert storage.read("k").read() == b"new version"


# Stacking with Retry and Prefix.


@pytest.mark.parametrize("order", ["Retry(Checksum)", "Checksum(Retry)"])
@pytest.mark.parametrize("source", ["seekable", "pipe"])
def test_retry_and_checksum_stack_either_way_under_faults_mid_stream(
    order: str, source: str
) -> None:
    data = noise(3 * CHUNK_SIZE + 5, seed=7)
    memory = MemoryBackend()
    faulty = AdvancedScripted(
        memory,
        write=resets(2, after=CHUNK_SIZE + 1),
        # The sidecar is read first, then the data, which fails twice in the middle.
        read=[
            None,
            Fault(ConnectionResetError(), after=CHUNK_SIZE),
            Fault(TimeoutError(), after=5),
        ],
        stream_read=resets(2, after=2 * CHUNK_SIZE),
    )
    if order == "Retry(Checksum)":
        storage = Retry(Checksum(faulty), **INSTANT)
    else:
        storage = Checksum(Retry(faulty, **INSTANT))
    if source == "pipe":
        with Pipe(data) as pipe:
            storage.write("db/x", pipe)
    else:
        storage.write("db/x", io.BytesIO(data))
    assert memory.read("db/x").read() == data
    assert memory.read("db/x.sha256").read() == sidecar_line(data, "x")
    with storage.read("db/x") as stream:
        received = bytearray()
        consume(stream, 65536, received)
    assert received == data
    assert b"".join(storage.stream_read("db/x")) == data
    flip(memory, "db/x", 2 * CHUNK_SIZE)
    faulty.faults["read"] = [None, Fault(ConnectionResetError(), after=100)]
    with pytest.raises(SnapshotIntegrityError):
        storage.read("db/x").read()


def test_retry_never_retries_an_integrity_error() -> None:
    inner = AdvancedScripted(MemoryBackend())
    storage = Retry(Checksum(inner), **INSTANT)
    storage.write("k", io.BytesIO(b"payload"))
    flip(inner.inner, "k", 0)
    inner.calls.clear()
    with pytest.raises(SnapshotIntegrityError):
        storage.read("k").read()
    assert inner.calls["read"] == 2  # the sidecar and the data, once each


def test_checksum_over_chaos_under_retry_round_trips(tmp_path: Path) -> None:
    for inner in (MemoryBackend(), LocalFileSystemBackend(tmp_path)):
        for storage in (
            Retry(Checksum(Chaos(inner, failure_rate=0.3, seed=4)), attempts=40, **INSTANT),
            Checksum(Retry(Chaos(inner, failure_rate=0.3, seed=4), attempts=40, **INSTANT)),
        ):
            for n, size in enumerate([0, 10, CHUNK_SIZE + 1, 3 * CHUNK_SIZE]):
                data = noise(size, seed=n)
                storage.write(f"w/{n}", io.BytesIO(data))
                storage.stream_write(f"s/{n}", iter([data]))
                for key in (f"w/{n}", f"s/{n}"):
                    assert storage.read(key).read() == data
                    assert b"".join(storage.stream_read(key)) == data
                    if isinstance(storage, Checksum):
                        # verify() is Checksum's own: only a Retry below it retries it.
                        assert storage.verify(key) == hexdigest(data)
            assert storage.list("") == sorted(f"{d}/{n}" for d in "sw" for n in range(4))
            for key in storage.list(""):
                storage.delete(key)


@pytest.mark.parametrize("order", ["Prefix(Checksum)", "Checksum(Prefix)"])
def test_checksum_and_prefix_stack_either_way(order: str, tmp_path: Path) -> None:
    local = LocalFileSystemBackend(tmp_path)
    if order == "Prefix(Checksum)":
        storage = Prefix(Checksum(local), "tenant-a")
    else:
        storage = Checksum(Prefix(local, "tenant-a"))
    storage.write("db/x.dump", io.BytesIO(b"payload"))
    assert local.list("") == ["tenant-a/db/x.dump", "tenant-a/db/x.dump.sha256"]
    assert local.read("tenant-a/db/x.dump.sha256").read() == sidecar_line(b"payload", "x.dump")
    assert storage.list("") == ["db/x.dump"]
    assert not storage.exists("db/x.dump.sha256")
    assert storage.read("db/x.dump").read() == b"payload"
    assert run_tool("sha256sum", tmp_path / "tenant-a/db/x.dump.sha256").returncode == 0
    storage.atomic_move("db/x.dump", "db/y.dump")
    assert run_tool("sha256sum", tmp_path / "tenant-a/db/y.dump.sha256").returncode == 0
    flip(local, "tenant-a/db/y.dump", 0)
    with pytest.raises(SnapshotIntegrityError):
        storage.read("db/y.dump").read()
    with pytest.raises(SnapshotStoragePathError):
        storage.write("db/z.sha256", io.BytesIO(b"x"))


def test_failures_of_the_storage_pass_through_unchanged() -> None:
    error = SnapshotStorageError("quota exceeded")
    inner = AdvancedScripted(MemoryBackend(), list=[Fault(error)])
    with pytest.raises(SnapshotStorageError) as excinfo:
        Checksum(inner).list("")
    assert excinfo.value is error


# The storage contract holds through the wrapper.


class _ChecksumConformance(StorageConformance):
    """The kit's checks, with the key limit of Checksum: the sidecar of key
    ``k`` is ``k.sha256``, itself a key, so a key may be at most 1017 UTF-8
    bytes long."""

    max_key_bytes = MAX_KEY_BYTES - len(".sha256")

    def stack_over(self, storage: Any) -> Any:
        return Checksum(storage)


class TestChecksumOverMemoryBackend(_ChecksumConformance):
    @pytest.fixture
    def storage(self) -> Checksum:
        return Checksum(MemoryBackend())


class TestChecksumOverLocalFileSystemBackend(_ChecksumConformance):
    max_segment_bytes = 255 - len(".sha256")

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Checksum:
        return Checksum(LocalFileSystemBackend(tmp_path))


class TestChecksumOverABasicStorage(_ChecksumConformance):
    @pytest.fixture
    def storage(self) -> Checksum:
        return Checksum(BasicMemory())


class TestRetryOverChecksumOverLocalFileSystemBackend(_ChecksumConformance):
    max_segment_bytes = 255 - len(".sha256")

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        return Retry(Checksum(LocalFileSystemBackend(tmp_path)))

    def stack_over(self, storage: Any) -> Any:
        return Retry(Checksum(storage), attempts=3, **INSTANT)


class TestChecksumOverRetryOverChaos(_ChecksumConformance):
    @pytest.fixture
    def storage(self) -> Any:
        chaos = Chaos(MemoryBackend(), failure_rate=0.3, seed=8)
        return Checksum(Retry(chaos, attempts=30, **INSTANT))

    def stack_over(self, storage: Any) -> Any:
        return Checksum(Retry(storage, attempts=3, **INSTANT))


def test_threads_reading_while_others_rewrite_a_key_never_see_a_mismatch(
    tmp_path: Path,
) -> None:
    storage = Checksum(LocalFileSystemBackend(tmp_path))
    versions = [bytes([n]) * (CHUNK_SIZE // 2 + n) for n in range(4)]
    storage.write("k", io.BytesIO(versions[0]))
    stop = threading.Event()
    failures: list[BaseException] = []

    def rewrite() -> None:
        for n in itertools.islice(itertools.cycle(range(4)), 60):
            storage.write("k", io.BytesIO(versions[n]))
        stop.set()

    def read() -> None:
        while not stop.is_set():
            try:
                for reader in (storage.read, storage.stream_read):
                    got = reader("k")
                    data = got.read() if hasattr(got, "read") else b"".join(got)
                    assert data in versions
                storage.verify("k")
            except BaseException as exc:  # collected for the assertion below
                failures.append(exc)
                stop.set()

    threads = [threading.Thread(target=rewrite)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_key_whose_sidecar_would_not_fit_under_a_prefix_below_is_refused_before_any_io() -> None:
    inner = MemoryBackend()
    storage = Checksum(Prefix(inner, "tenant"))
    room = MAX_KEY_BYTES - len("tenant/") - len(".sha256")
    fitting = "k" * 200 + "/" + "k" * (room - 201)
    storage.write(fitting, io.BytesIO(b"fits"))
    assert storage.read(fitting).read() == b"fits"
    too_long = fitting + "k"
    content = io.BytesIO(b"never read")
    with pytest.raises(SnapshotStoragePathError, match="too long for its checksum sidecar"):
        storage.write(too_long, content)
    assert content.tell() == 0
    assert inner.list("") == sorted([f"tenant/{fitting}", f"tenant/{fitting}.sha256"])


class _PausingSidecars(LocalFileSystemBackend):
    """A local backend that waits for *proceed* before storing a sidecar, once
    *armed*: a writer paused between its data and its sidecar."""

    def __init__(self, location: Path) -> None:
        super().__init__(location)
        self.armed = False
        self.paused = threading.Event()
        self.proceed = threading.Event()

    def write(self, path: str, content: IO[bytes]) -> None:
        if self.armed and path.endswith(".sha256"):
            self.armed = False
            self.paused.set()
            assert self.proceed.wait(10)
        super().write(path, content)


@pytest.mark.parametrize("through_prefix", [False, True], ids=["same-stack", "other-prefix"])
def test_writers_with_separate_stacks_leave_one_object_and_its_own_sidecar(
    tmp_path: Path, through_prefix: bool
) -> None:
    # Two stacks share no lock in memory, as in two processes: only the lock
    # file orders them, also when one reaches the key through a Prefix.
    locks = tmp_path / "locks"
    locks.mkdir()
    first_inner = _PausingSidecars(tmp_path / "data")
    first = Checksum(first_inner, lock_dir=locks)
    second = (
        Checksum(Prefix(LocalFileSystemBackend(tmp_path / "data"), "t"), lock_dir=locks)
        if through_prefix
        else Checksum(LocalFileSystemBackend(tmp_path / "data"), lock_dir=locks)
    )
    key = "t/k"
    second_key = "k" if through_prefix else key
    first.write(key, io.BytesIO(b"old"))
    first_inner.armed = True
    writer = threading.Thread(target=first.write, args=(key, io.BytesIO(b"first")))
    writer.start()
    assert first_inner.paused.wait(10)  # "first" is stored, its sidecar is not
    results: dict[str, object] = {}

    def read() -> None:
        try:
            results["read"] = second.read(second_key).read()
        except BaseException as exc:  # reported by the assertion below
            results["read"] = exc

    def write() -> None:
        second.write(second_key, io.BytesIO(b"second"))
        results["wrote"] = True

    others = [threading.Thread(target=read), threading.Thread(target=write)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(0.3)
    assert results == {}, "a reader or writer did not wait for the first writer's sidecar"
    first_inner.proceed.set()
    for thread in [writer, *others]:
        thread.join(10)
    assert results["read"] in (b"first", b"second")
    assert results["wrote"] is True
    assert first.read(key).read() == b"second"
    assert first.verify(key) == hashlib.sha256(b"second").hexdigest()


def test_lock_files_live_in_lock_dir_and_name_no_secret(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    secret = "s3cr3t-token-in-a-key"
    inner = MemoryBackend()
    storage = Checksum(inner, lock_dir=locks)
    storage.write(f"db/{secret}", io.BytesIO(b"x"))
    assert storage.read(f"db/{secret}").read() == b"x"
    assert inner.list("") == [f"db/{secret}", f"db/{secret}.sha256"]
    names = [path.name for path in locks.iterdir()]
    assert len(names) == 1
    assert names[0].startswith("django-snapshots-")
    assert names[0].endswith(".lock")
    assert secret not in names[0]
    assert "Memory" not in names[0]
    shown = f"lock_dir={str(locks)!r}"
    assert repr(storage) == f"Checksum(MemoryBackend(), algorithm='sha256', {shown})"


def test_an_unusable_lock_dir_fails_before_the_storage_is_touched(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    inner = AdvancedScripted(MemoryBackend())
    storage = Checksum(inner, lock_dir=locks)
    locks.rmdir()
    with pytest.raises(FileNotFoundError, match=r"cannot open its lock file .*pass lock_dir"):
        storage.write("k", io.BytesIO(b"x"))
    assert not inner.calls


def test_a_process_killed_while_holding_a_key_releases_its_lock(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_HOLDER, str(tmp_path / "data"), str(locks)],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"holding\n"
        storage = Checksum(LocalFileSystemBackend(tmp_path / "data"), lock_dir=locks)
        done = threading.Event()
        writer = threading.Thread(
            target=lambda: (storage.write("k", io.BytesIO(b"after")), done.set())
        )
        writer.start()
        assert not done.wait(0.3), "the write did not wait for the child's lock"
        child.kill()
        assert done.wait(10)
        writer.join()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    assert storage.read("k").read() == b"after"


# Holds the lock of "k" (between its data and its sidecar) until killed.
KILLED_HOLDER = """
import io, sys, time
from django_snapshots.storage import Checksum, LocalFileSystemBackend

class Holding(LocalFileSystemBackend):
    def write(self, path, content):
        if path.endswith(".sha256"):
            print("holding", flush=True)
            time.sleep(600)
        super().write(path, content)

Checksum(Holding(sys.argv[1]), lock_dir=sys.argv[2]).write("k", io.BytesIO(b"held"))
"""

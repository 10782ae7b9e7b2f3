"""Tests for the Retry wrapper."""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import io
import os
import pickle
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import stamina
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from django_snapshots.exceptions import (
    SnapshotIntegrityError,
    SnapshotObjectChangedError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    Checksum,
    LocalFileSystemBackend,
    MemoryBackend,
    RcloneBackend,
    Retry,
)
from django_snapshots.storage.streams import CHUNK_SIZE, ChunkReader, ReadableStream
from django_snapshots.storage.wrappers.retry import (
    SPOOL_MEMORY,
    TRANSIENT_ERRNOS,
    AdvancedRetry,
    is_transient,
)
from django_snapshots.testing import Chaos, StorageConformance, assert_intercepts_every_method
from tests.benchmarks.common import peak_rss_delta
from tests.conftest import S3Bucket

INSTANT = {"wait_initial": 0, "wait_max": 0, "wait_jitter": 0}


def noise(size: int, seed: int = 0) -> bytes:
    """*size* reproducible random bytes: a repeated or dropped run of bytes
    shows in their digest, whatever its length."""
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A storage that fails exactly where a test says.


@dataclass
class Fault:
    """One scripted failure: raise *error* before the operation starts
    (*after* is None) or once *after* bytes went through."""

    error: BaseException
    after: int | None = None
    then: Callable[[], object] | None = None

    def strike(self) -> BaseException:
        """Run *then* (once: another writer replacing the object, say) and
        return the error to raise."""
        then, self.then = self.then, None
        if then is not None:
            then()
        return self.error


class FailingReader(io.RawIOBase):
    """Passes *fault.after* bytes of *source* through, then raises *fault.error*
    on every read; with no fault, passes everything through."""

    def __init__(self, source: IO[bytes], fault: Fault | None, *, seekable: bool) -> None:
        super().__init__()
        self._source = source
        self._fault = fault
        self._left = (fault.after or 0) if fault is not None else -1
        self._seekable = seekable

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable and self._source.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self.seekable():
            raise io.UnsupportedOperation("seek")
        return self._source.seek(offset, whence)

    def tell(self) -> int:
        return self._source.tell()

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._fault is None:
            data = self._source.read(len(view))
            view[: len(data)] = data
            return len(data)
        if self._left <= 0:
            raise self._fault.strike()
        data = self._source.read(min(len(view), self._left))
        if not data:
            raise self._fault.strike()  # the failure hides the end of the stream too
        self._left -= len(data)
        view[: len(data)] = data
        return len(data)


class Scripted:
    """A basic-tier storage over *inner* whose operations fail as scripted.

    ``faults[op]`` is the list of faults the next calls of *op* meet, in
    order; ``calls`` counts every call.  Read streams are seekable unless
    *seekable_reads* is False.  With *only* set, reads of other keys (a
    sidecar, say) pass through untouched and uncounted.
    """

    def __init__(
        self,
        inner: Any,
        *,
        seekable_reads: bool = True,
        only: str | None = None,
        **faults: list[Fault],
    ) -> None:
        self.inner = inner
        self.faults = {op: list(plan) for op, plan in faults.items()}
        self.calls: Counter[str] = Counter()
        self.seekable_reads = seekable_reads
        self.only = only

    def __repr__(self) -> str:
        return "Scripted()"

    def fault(self, op: str, path: str | None = None) -> Fault | None:
        if path is not None and self.only is not None and path != self.only:
            return None
        self.calls[op] += 1
        plan = self.faults.get(op)
        fault = plan.pop(0) if plan else None
        if fault is not None and fault.after is None:
            raise fault.error
        return fault

    def read(self, path: str) -> IO[bytes]:
        fault = self.fault("read", path)
        stream = self.inner.read(path)
        if fault is None and self.seekable_reads:
            return stream  # type: ignore[no-any-return]
        return FailingReader(stream, fault, seekable=self.seekable_reads)  # type: ignore[return-value]

    def write(self, path: str, content: IO[bytes]) -> None:
        fault = self.fault("write")
        if fault is not None:
            content = FailingReader(content, fault, seekable=False)  # type: ignore[assignment]
        self.inner.write(path, content)

    def list(self, prefix: str) -> list[str]:
        self.fault("list")
        return self.inner.list(prefix)  # type: ignore[no-any-return]

    def delete(self, path: str) -> None:
        self.fault("delete")
        self.inner.delete(path)

    def exists(self, path: str) -> bool:
        self.fault("exists")
        return self.inner.exists(path)  # type: ignore[no-any-return]


class AdvancedScripted(Scripted):
    """The advanced tier of :class:`Scripted`.  A fault of ``atomic_move``
    with ``after`` set strikes after the move was done (a lost answer)."""

    def stream_read(self, path: str) -> Iterator[bytes]:
        fault = self.fault("stream_read", path)
        chunks = self.inner.stream_read(path)
        if fault is None:
            return chunks  # type: ignore[no-any-return]
        return failing_chunks(chunks, fault)

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        fault = self.fault("stream_write")
        if fault is not None:
            chunks = failing_chunks(chunks, fault)
        self.inner.stream_write(path, chunks)

    def atomic_move(self, src: str, dst: str) -> None:
        fault = self.fault("atomic_move")
        self.inner.atomic_move(src, dst)
        if fault is not None:
            raise fault.error

    def recursive_list(self, prefix: str) -> list[str]:
        self.fault("recursive_list")
        return self.inner.recursive_list(prefix)  # type: ignore[no-any-return]

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        self.fault("sync")
        self.inner.sync(src_prefix, dst_prefix)


def failing_chunks(chunks: Iterable[bytes], fault: Fault) -> Iterator[bytes]:
    """Pass *fault.after* bytes of *chunks*, then raise; like a real client,
    close the source iterator on the way out."""
    left = fault.after or 0
    source = iter(chunks)
    try:
        for chunk in source:
            if len(chunk) >= left:
                if left:
                    yield chunk[:left]
                break
            left -= len(chunk)
            yield chunk
        raise fault.strike()
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def resets(n: int, after: int | None = None) -> list[Fault]:
    return [Fault(ConnectionResetError(f"reset {i}"), after=after) for i in range(n)]


def advancing(n: int, *, by: int) -> list[Fault]:
    """*n* resets, each *by* bytes further into the object than the one
    before: every resumed read reads the bytes delivered again, then gets
    *by* bytes further before it fails."""
    return [Fault(ConnectionResetError(f"reset {i}"), after=(i + 1) * by) for i in range(n)]


class Pipe:
    """A real OS pipe fed with *data* by a thread: a non-seekable input."""

    def __init__(self, data: bytes | Callable[[IO[bytes]], None]) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = open(read_fd, "rb")  # noqa: SIM115 - closed by __exit__
        self._writer = open(write_fd, "wb")  # noqa: SIM115 - closed by the feeding thread
        feed = data if callable(data) else (lambda out: out.write(data))
        self._thread = threading.Thread(target=self._feed, args=(feed,), daemon=True)
        self._thread.start()

    def _feed(self, feed: Callable[[IO[bytes]], None]) -> None:
        with contextlib.suppress(BrokenPipeError), self._writer:
            feed(self._writer)

    def __enter__(self) -> IO[bytes]:
        return self.reader

    def __exit__(self, *exc_info: object) -> None:
        self.reader.close()
        self._thread.join()


def retry(storage: Any, **options: Any) -> Any:
    return Retry(storage, **{**INSTANT, **options})


@pytest.fixture(params=["basic", "advanced"])
def tier(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def scripted(tier: str, inner: Any = None, **faults: list[Fault]) -> Scripted:
    cls = AdvancedScripted if tier == "advanced" else Scripted
    return cls(MemoryBackend() if inner is None else inner, **faults)


class BasicMemory:
    """A basic-tier storage: MemoryBackend without its advanced methods."""

    def __init__(self) -> None:
        self._inner = MemoryBackend()

    def __repr__(self) -> str:
        return "BasicMemory()"

    def read(self, path: str) -> IO[bytes]:
        return self._inner.read(path)

    def write(self, path: str, content: IO[bytes]) -> None:
        self._inner.write(path, content)

    def list(self, prefix: str) -> list[str]:
        return self._inner.list(prefix)

    def delete(self, path: str) -> None:
        self._inner.delete(path)

    def exists(self, path: str) -> bool:
        return self._inner.exists(path)


# Options and shape.


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"attempts": 0}, ValueError, "attempts must be >= 1"),
        ({"attempts": -3}, ValueError, "attempts must be >= 1"),
        ({"attempts": 2.5}, TypeError, "attempts must be an int"),
        ({"attempts": True}, TypeError, "attempts must be an int"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": -1.0}, ValueError, "timeout must be a finite number"),
        ({"timeout": float("inf")}, ValueError, "timeout must be a finite number"),
        ({"timeout": "60"}, TypeError, "timeout must be a number"),
        ({"wait_initial": -0.1}, ValueError, "wait_initial must be a finite number"),
        ({"wait_max": float("nan")}, ValueError, "wait_max must be a finite number"),
        ({"wait_jitter": -1}, ValueError, "wait_jitter must be a finite number"),
        ({"wait_jitter": None}, TypeError, "wait_jitter must be a number"),
        ({"on": 3}, TypeError, "on must be an exception type"),
        ({"on": str}, TypeError, "on must be an Exception subclass"),
        ({"on": KeyboardInterrupt}, TypeError, "on must be an Exception subclass"),
        ({"on": ()}, TypeError, "non-empty tuple"),
        ({"on": (ValueError, "x")}, TypeError, "non-empty tuple"),
    ],
)
def test_bad_options_are_refused_when_the_wrapper_is_built(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    storage = AdvancedScripted(MemoryBackend())
    with pytest.raises(error, match=message):
        Retry(storage, **options)
    assert storage.calls == Counter()


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Retry(MemoryBackend(), 3)  # type: ignore[call-overload]


def test_retry_keeps_the_tier_and_intercepts_every_method() -> None:
    advanced = Retry(MemoryBackend())
    basic = Retry(Scripted(MemoryBackend()))
    assert isinstance(advanced, AdvancedRetry)
    assert isinstance(advanced, AdvancedSnapshotStorage)
    assert type(basic) is Retry
    assert not isinstance(basic, AdvancedSnapshotStorage)
    assert not hasattr(basic, "stream_read")
    assert_intercepts_every_method(advanced)
    assert_intercepts_every_method(basic)


def test_repr_shows_attempts_and_every_option_that_is_not_the_default() -> None:
    assert repr(Retry(MemoryBackend())) == "Retry(MemoryBackend(), attempts=5)"
    assert repr(Retry(MemoryBackend(), attempts=3, timeout=None, **INSTANT)) == (
        "Retry(MemoryBackend(), attempts=3, timeout=None, wait_initial=0.0, wait_max=0.0, "
        "wait_jitter=0.0)"
    )
    assert repr(Retry(MemoryBackend(), on=(ConnectionError,))) == (
        "Retry(MemoryBackend(), attempts=5, on=(ConnectionError,))"
    )
    assert (
        repr(Retry(MemoryBackend(), on=KeyError))
        == "Retry(MemoryBackend(), attempts=5, on=KeyError)"
    )
    assert repr(Retry(MemoryBackend(), on=is_transient)) == (
        "Retry(MemoryBackend(), attempts=5, on=is_transient)"
    )


# What is transient.


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("x"),
        ConnectionResetError(),
        ConnectionRefusedError(),
        ConnectionAbortedError(),
        BrokenPipeError(),
        TimeoutError(),
        InterruptedError(errno.EINTR, "interrupted"),
        BlockingIOError(errno.EAGAIN, "again"),
        SnapshotStorageError("throttled", transient=True),
        *(OSError(code, os.strerror(code)) for code in sorted(TRANSIENT_ERRNOS)),
    ],
    ids=repr,
)
def test_transient_failures_are_retried_by_default(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "missing"),
        PermissionError(errno.EACCES, "denied"),
        # Even with an errno that would otherwise mean "try again".
        PermissionError(errno.EAGAIN, "odd"),
        FileNotFoundError(errno.ETIMEDOUT, "odd"),
        SnapshotStoragePathError("bad key"),
        SnapshotIntegrityError("corrupt"),
        SnapshotStorageCapabilityError("basic tier"),
        SnapshotStorageError("refused"),
        SnapshotStorageError("refused", transient=False),
        OSError(errno.ENOSPC, "full"),
        OSError(errno.EIO, "i/o"),
        OSError("no errno"),
        IsADirectoryError(errno.EISDIR, "dir"),
        ValueError("x"),
        KeyError("x"),
        RuntimeError("x"),
    ],
    ids=repr,
)
def test_permanent_failures_are_never_retried_by_default(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "missing"),
        PermissionError(errno.EACCES, "denied"),
        SnapshotStoragePathError("bad key"),
        SnapshotIntegrityError("corrupt"),
        SnapshotStorageCapabilityError("basic tier"),
        SnapshotStorageError("refused"),
    ],
    ids=repr,
)
def test_a_permanent_failure_is_raised_at_the_first_try(exc: Exception, tier: str) -> None:
    storage = scripted(tier, list=[Fault(exc)])
    with pytest.raises(type(exc)) as excinfo:
        retry(storage).list("")
    assert excinfo.value is exc
    assert storage.calls["list"] == 1


# Whole operations.


@pytest.mark.parametrize("op", ["list", "exists", "delete"])
def test_basic_operations_are_tried_again_after_transient_failures(op: str, tier: str) -> None:
    storage = scripted(tier, **{op: resets(3)})
    storage.inner.write("a/b", io.BytesIO(b"x"))
    wrapper = retry(storage, attempts=4)
    result = {"list": lambda: wrapper.list("a/"), "exists": lambda: wrapper.exists("a/b"),
              "delete": lambda: wrapper.delete("a/b")}[op]()  # fmt: skip
    assert result == {"list": ["a/b"], "exists": True, "delete": None}[op]
    assert storage.calls[op] == 4


@pytest.mark.parametrize("op", ["recursive_list", "sync"])
def test_advanced_operations_are_tried_again_after_transient_failures(op: str) -> None:
    storage = AdvancedScripted(MemoryBackend(), **{op: resets(2)})
    storage.inner.write("a/b", io.BytesIO(b"x"))
    wrapper = retry(storage, attempts=3)
    if op == "sync":
        wrapper.sync("a/", "c/")
        assert storage.inner.list("") == ["a/b", "c/b"]
    else:
        assert wrapper.recursive_list("a") == ["a/b"]
    assert storage.calls[op] == 3


def test_giving_up_raises_the_last_original_exception(tier: str) -> None:
    errors = [ConnectionResetError("first"), TimeoutError("second"), BrokenPipeError("last")]
    storage = scripted(tier, exists=[Fault(e) for e in errors])
    with pytest.raises(BrokenPipeError) as excinfo:
        retry(storage, attempts=3).exists("x")
    assert excinfo.value is errors[-1]
    assert storage.calls["exists"] == 3


def test_attempts_bound_the_number_of_tries(tier: str) -> None:
    storage = scripted(tier, list=resets(100))
    with pytest.raises(ConnectionResetError, match="reset 6"):
        retry(storage, attempts=7).list("")
    assert storage.calls["list"] == 7


def test_one_attempt_means_no_retry(tier: str) -> None:
    storage = scripted(tier, list=resets(1), write=resets(1, after=3))
    wrapper = retry(storage, attempts=1)
    with pytest.raises(ConnectionResetError):
        wrapper.list("")
    with Pipe(b"payload") as pipe, pytest.raises(ConnectionResetError):
        wrapper.write("k", pipe)
    assert storage.calls == Counter({"list": 1, "write": 1})


def test_timeout_stops_the_retrying(tier: str) -> None:
    storage = scripted(tier, list=resets(1000))
    wrapper = Retry(
        storage, attempts=1000, timeout=0.1, wait_initial=0.02, wait_max=0.02, wait_jitter=0
    )
    with pytest.raises(ConnectionResetError):
        wrapper.list("")
    # Each wait lasts at least 0.02 s, so no more than 0.1 / 0.02 + 2 tries fit.
    assert 2 <= storage.calls["list"] <= 7


def test_on_replaces_the_default_choice_of_what_to_retry(tier: str) -> None:
    storage = scripted(tier, list=[Fault(KeyError("a")), Fault(KeyError("b"))],
                       exists=[Fault(ConnectionResetError())])  # fmt: skip
    wrapper = retry(storage, on=KeyError)
    assert wrapper.list("") == []
    assert storage.calls["list"] == 3
    with pytest.raises(ConnectionResetError):
        wrapper.exists("x")
    assert storage.calls["exists"] == 1


def test_on_accepts_a_tuple_and_a_predicate(tier: str) -> None:
    storage = scripted(tier, list=[Fault(KeyError("a")), Fault(IndexError("b"))])
    assert retry(storage, on=(KeyError, IndexError)).list("") == []
    assert storage.calls["list"] == 3

    seen: list[Exception] = []

    def only_odd(exc: Exception) -> bool:
        seen.append(exc)
        return "odd" in str(exc)

    storage = scripted(tier, list=[Fault(ValueError("odd")), Fault(ValueError("even"))])
    with pytest.raises(ValueError, match="even"):
        retry(storage, on=only_odd).list("")
    assert storage.calls["list"] == 2
    assert [str(e) for e in seen] == ["odd", "even"]


def test_a_predicate_may_answer_with_a_custom_wait(tier: str) -> None:
    storage = scripted(tier, list=resets(2))
    assert retry(storage, on=lambda exc: 0.0).list("") == []
    assert storage.calls["list"] == 3


def test_waits_grow_between_tries() -> None:
    storage = Scripted(MemoryBackend(), list=resets(3))
    with capture_logs() as entries:
        Retry(storage, wait_initial=0.01, wait_max=0.04, wait_jitter=0).list("")
    retries = [e for e in entries if e["event"] == "stamina.retry_scheduled"]
    assert [e["retry_num"] for e in retries] == [1, 2, 3]
    assert [e["wait_for"] for e in retries] == pytest.approx([0.01, 0.02, 0.04], abs=1e-3)


def test_retries_stop_when_stamina_is_deactivated(tier: str) -> None:
    storage = scripted(tier, list=resets(1))
    stamina.set_active(False)
    try:
        with pytest.raises(ConnectionResetError):
            retry(storage).list("")
    finally:
        stamina.set_active(True)
    assert storage.calls["list"] == 1


# Writes.


@pytest.mark.parametrize("after", [None, 0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 7])
def test_a_seekable_write_is_rewound_and_sent_whole_after_a_failure(
    after: int | None, tier: str
) -> None:
    data = noise(3 * CHUNK_SIZE + 11)
    storage = scripted(tier, write=resets(2, after=after))
    content = io.BytesIO(data)
    retry(storage).write("db/x", content)
    assert sha(storage.inner.read("db/x").read()) == sha(data)
    assert storage.calls["write"] == 3


def test_a_seekable_write_is_rewound_to_where_it_started_not_to_zero(tier: str) -> None:
    storage = scripted(tier, write=resets(1, after=4))
    content = io.BytesIO(b"HEADER|payload bytes")
    content.read(7)
    retry(storage).write("k", content)
    assert storage.inner.read("k").read() == b"payload bytes"


@pytest.mark.parametrize("after", [None, 0, 5, CHUNK_SIZE, 3 * CHUNK_SIZE + 5])
def test_a_non_seekable_write_is_spooled_and_sent_whole_after_a_failure(
    after: int | None, tier: str
) -> None:
    data = noise(3 * CHUNK_SIZE + 11, seed=1)
    storage = scripted(tier, write=resets(2, after=after))
    with Pipe(data) as pipe:
        assert not pipe.seekable()
        retry(storage).write("db/x", pipe)
        assert pipe.read() == b""  # consumed once, to the end
    assert sha(storage.inner.read("db/x").read()) == sha(data)
    assert storage.calls["write"] == 3


def test_a_non_seekable_write_larger_than_the_memory_spool_goes_through_a_temporary_file(
    tier: str,
) -> None:
    data = noise(SPOOL_MEMORY + 3 * CHUNK_SIZE + 1, seed=2)
    storage = scripted(tier, write=resets(1, after=SPOOL_MEMORY // 2))
    with Pipe(data) as pipe:
        retry(storage).write("big", pipe)
    assert sha(storage.inner.read("big").read()) == sha(data)


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "non-seekable"])
def test_a_failure_of_the_callers_own_input_is_never_retried(seekable: bool, tier: str) -> None:
    fault = Fault(ConnectionResetError("input"), after=4)
    broken = FailingReader(io.BytesIO(b"0123456789"), fault, seekable=seekable)
    storage = scripted(tier)
    with pytest.raises(ConnectionResetError, match="input"):
        retry(storage).write("k", broken)
    assert storage.calls["write"] == 1
    assert not storage.inner.exists("k")


def test_a_failure_of_the_callers_input_while_spooling_the_rest_is_raised(tier: str) -> None:
    fault = Fault(TimeoutError("source stalled"), after=50)
    broken = FailingReader(io.BytesIO(b"y" * 100), fault, seekable=False)
    storage = scripted(tier, write=resets(1, after=10))
    with pytest.raises(TimeoutError, match="source stalled"):
        retry(storage).write("k", broken)
    assert storage.calls["write"] == 1


def test_a_write_with_an_invalid_key_fails_before_reading_the_input(tier: str) -> None:
    storage = scripted(tier)
    with Pipe(b"payload") as pipe:
        with pytest.raises(SnapshotStoragePathError):
            retry(storage).write("../x", pipe)
        assert pipe.read() == b"payload"
    assert storage.calls["write"] == 0


@pytest.mark.parametrize("after", [None, 0, 3, CHUNK_SIZE + 1])
def test_stream_write_replays_its_chunks_from_a_spool(after: int | None) -> None:
    pieces = [noise(n, seed=n) for n in (1, CHUNK_SIZE, 17, 2 * CHUNK_SIZE + 3, 5)]
    taken: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i, piece in enumerate(pieces):
            taken.append(i)
            yield piece

    storage = AdvancedScripted(MemoryBackend(), stream_write=resets(2, after=after))
    retry(storage).stream_write("k", chunks())
    assert sha(storage.inner.read("k").read()) == sha(b"".join(pieces))
    assert taken == list(range(len(pieces)))  # the caller's iterator was walked once
    assert storage.calls["stream_write"] == 3


def test_a_write_failure_after_progress_restarts_the_timeout_but_not_the_count(tier: str) -> None:
    class SlowFailing(Scripted):
        """The first three tries take some bytes, spend 0.1 s, then fail."""

        def write(self, path: str, content: IO[bytes]) -> None:
            self.calls["write"] += 1
            if self.calls["write"] > 3:
                self.inner.write(path, content)
                return
            content.read(10)
            time.sleep(0.1)
            raise ConnectionResetError("dropped mid-upload")

    data = noise(1000)
    storage = SlowFailing(MemoryBackend())
    Retry(storage, attempts=4, timeout=0.05, **INSTANT).write("k", io.BytesIO(data))
    assert storage.calls["write"] == 4
    assert storage.inner.read("k").read() == data

    storage = SlowFailing(MemoryBackend())
    with pytest.raises(ConnectionResetError):
        Retry(storage, attempts=3, timeout=0.05, **INSTANT).write("k", io.BytesIO(data))
    assert storage.calls["write"] == 3


@pytest.mark.slow
def test_spooling_a_huge_non_seekable_input_keeps_memory_bounded() -> None:
    block = noise(CHUNK_SIZE + 7, seed=9)  # a dropped or repeated chunk would misalign it
    size = 300 * len(block)

    class Sink:
        """Consumes writes without keeping them; the first one fails half-way."""

        def __init__(self) -> None:
            self.tries = 0
            self.digest = ""

        def read(self, path: str) -> IO[bytes]:
            raise FileNotFoundError(path)

        def write(self, path: str, content: IO[bytes]) -> None:
            self.tries += 1
            digest, taken = hashlib.sha256(), 0
            while data := content.read(CHUNK_SIZE):
                digest.update(data)
                taken += len(data)
                if self.tries == 1 and taken >= size // 2:
                    raise ConnectionResetError("dropped half-way")
            self.digest = digest.hexdigest()

        def list(self, prefix: str) -> list[str]:
            return []

        def delete(self, path: str) -> None:
            pass

        def exists(self, path: str) -> bool:
            return False

    def produce(out: IO[bytes]) -> None:
        for _ in range(size // len(block)):
            out.write(block)

    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)

    def run() -> None:
        sink = Sink()
        with Pipe(produce) as pipe:
            Retry(sink, **INSTANT).write("huge", pipe)
        assert sink.tries == 2
        assert sink.digest == expected.hexdigest()

    growth = peak_rss_delta(run)
    assert growth < 64 * 1024 * 1024, f"memory grew by {growth / 2**20:.0f} MiB"


# Reads.


def read_in(stream: IO[bytes], size: int) -> bytes:
    parts = []
    while data := stream.read(size):
        parts.append(data)
    return b"".join(parts)


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "non-seekable"])
@pytest.mark.parametrize("after", [0, 1, 4095, CHUNK_SIZE, 2 * CHUNK_SIZE + 1])
def test_read_resumes_after_a_failure_mid_stream_without_repeating_or_dropping_bytes(
    after: int, seekable: bool, tier: str
) -> None:
    data = noise(3 * CHUNK_SIZE + 5, seed=3)
    faults = [
        Fault(ConnectionResetError("first"), after=after),
        Fault(TimeoutError("second"), after=after // 2 + 3),
    ]
    storage = scripted(tier, read=faults)
    storage.seekable_reads = seekable
    storage.inner.write("k", io.BytesIO(data))
    with retry(storage).read("k") as stream:
        delivered = read_in(stream, 4096)
    assert sha(delivered) == sha(data)
    assert storage.calls["read"] == 3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 3 * CHUNK_SIZE),
    offsets=st.lists(st.integers(0, 3 * CHUNK_SIZE), max_size=6),
    piece=st.integers(1, 2 * CHUNK_SIZE),
    seekable=st.booleans(),
)
def test_read_delivers_every_byte_exactly_once_whatever_the_failures(
    size: int, offsets: list[int], piece: int, seekable: bool
) -> None:
    data = noise(size, seed=size)
    storage = Scripted(
        MemoryBackend(), seekable_reads=seekable,
        read=[Fault(ConnectionResetError(), after=o) for o in offsets],
    )  # fmt: skip
    storage.inner.write("k", io.BytesIO(data))
    # Each fault may strike a stream opened to repair the one before.
    with retry(storage, attempts=len(offsets) + 2).read("k") as stream:
        assert read_in(stream, piece) == data


def test_read_resumes_with_a_fresh_count_after_each_repaired_failure(tier: str) -> None:
    data = noise(10 * 1000)
    # Every stream fails 1000 bytes after the one before: ten failures, far more than
    # attempts=2 allows in a row, yet each one is repaired and the next starts a fresh count.
    storage = scripted(tier, read=advancing(10, by=1000))
    storage.inner.write("k", io.BytesIO(data))
    with retry(storage, attempts=2).read("k") as stream:
        assert read_in(stream, 300) == data


def test_read_resumes_however_long_the_transfer_took(tier: str) -> None:
    data = noise(5000)
    storage = scripted(tier, read=advancing(4, by=1000))
    storage.inner.write("k", io.BytesIO(data))
    parts = []
    with Retry(storage, timeout=0.05, **INSTANT).read("k") as stream:
        while chunk := stream.read(1000):
            parts.append(chunk)
            time.sleep(0.06)  # a slow consumer: longer than the timeout each time
    assert b"".join(parts) == data


def test_read_gives_up_after_the_attempts_of_one_failure(tier: str) -> None:
    storage = scripted(tier, read=[Fault(ConnectionResetError("mid"), after=10), *resets(3)])
    storage.inner.write("k", io.BytesIO(noise(100)))
    with retry(storage, attempts=3).read("k") as stream:
        assert stream.read(10) == noise(100)[:10]
        with pytest.raises(ConnectionResetError, match="reset 1"):
            stream.read(10)
    assert storage.calls["read"] == 3


def test_a_permanent_failure_mid_stream_is_raised_without_reopening(tier: str) -> None:
    storage = scripted(tier, read=[Fault(PermissionError("revoked"), after=10)])
    storage.inner.write("k", io.BytesIO(noise(100)))
    with retry(storage).read("k") as stream, pytest.raises(PermissionError):
        read_in(stream, 7)
    assert storage.calls["read"] == 1


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "non-seekable"])
def test_a_resume_refuses_an_object_that_got_shorter(seekable: bool, tier: str) -> None:
    storage = scripted(tier, read=[Fault(ConnectionResetError(), after=50)])
    storage.seekable_reads = seekable
    storage.inner.write("k", io.BytesIO(noise(100)))
    with retry(storage).read("k") as stream:
        assert len(stream.read(50)) == 50
        storage.inner.write("k", io.BytesIO(b"short"))
        with pytest.raises(SnapshotObjectChangedError, match="'k' changed while it was being read"):
            stream.read(10)
    assert storage.calls["read"] == 2


def test_opening_a_missing_object_is_not_retried(tier: str) -> None:
    storage = scripted(tier)
    with pytest.raises(FileNotFoundError):
        retry(storage).read("absent")
    assert storage.calls["read"] == 1


def test_opening_is_retried(tier: str) -> None:
    storage = scripted(tier, read=resets(2))
    storage.inner.write("k", io.BytesIO(b"data"))
    assert retry(storage).read("k").read() == b"data"
    assert storage.calls["read"] == 3


def test_closing_the_stream_closes_the_storage_streams(tier: str) -> None:
    storage = scripted(tier, read=[Fault(ConnectionResetError(), after=3)])
    storage.seekable_reads = False
    storage.inner.write("k", io.BytesIO(b"0123456789"))
    stream = retry(storage).read("k")
    broken = stream._stream  # type: ignore[attr-defined]
    assert stream.read(5) == b"01234"  # full reads, across the resume
    assert broken.closed
    repaired = stream._stream  # type: ignore[attr-defined]
    assert stream.read(5) == b"56789"
    stream.close()
    assert repaired.closed
    with pytest.raises(ValueError, match="closed"):
        stream.read(1)


def test_read_supports_readinto_and_read_all(tier: str) -> None:
    storage = scripted(tier, read=resets(1, after=7))
    storage.inner.write("k", io.BytesIO(noise(50)))
    stream = retry(storage).read("k")
    buffer = bytearray(10)
    # A full read across the resume, as a file opened "rb" gives.
    assert stream.readinto(buffer) == 10
    assert bytes(buffer) == noise(50)[:10]
    assert stream.read() == noise(50)[10:]


class Handing(BasicMemory):
    """A basic-tier storage whose reads hand out ``make(content)``, kept in ``opened``."""

    def __init__(self, make: Callable[[bytes], Any]) -> None:
        super().__init__()
        self.make = make
        self.opened: list[Any] = []

    def read(self, path: str) -> IO[bytes]:
        with self._inner.read(path) as file:
            stream = self.make(file.read())
        self.opened.append(stream)
        return stream  # type: ignore[no-any-return]


def handing(make: Callable[[bytes], Any], data: bytes) -> Handing:
    storage = Handing(make)
    storage.write("k", io.BytesIO(data))
    return storage


class Trickle(io.BytesIO):
    """Answers a read of n bytes with at most 3, as a socket may."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(-1 if size is None or size < 0 else min(size, 3))


class Hesitant(io.BytesIO):
    """Answers every other read with None (nothing ready yet), the others
    with a bytearray."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls = 0

    def read(self, size: int | None = -1) -> Any:
        self.calls += 1
        if self.calls % 2:
            return None
        return bytearray(super().read(size))


class CountingRaw(io.RawIOBase):
    """A raw stream, whose ``readline`` io.IOBase would make a byte at a time."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.reads += 1
        return self._data.readinto(buffer)


def test_read_takes_no_more_from_a_buffered_storage_stream_than_it_delivers() -> None:
    storage = handing(io.BytesIO, noise(100_000))
    with retry(storage).read("k") as stream:
        assert stream.read(10) == noise(100_000)[:10]
        assert storage.opened[0].tell() == 10  # no buffer of its own read ahead


def test_read_completes_the_short_reads_of_the_storage_stream() -> None:
    data = noise(1000)
    with retry(handing(Trickle, data)).read("k") as stream:
        assert stream.read(10) == data[:10]
        buffer = bytearray(20)
        assert stream.readinto(buffer) == 20
        assert bytes(buffer) == data[10:30]
        assert stream.read() == data[30:]
        assert stream.read(5) == b""


def test_read_waits_for_a_storage_stream_with_nothing_ready_and_returns_bytes() -> None:
    with retry(handing(Hesitant, b"first\nsecond\nthird")).read("k") as stream:
        parts = [stream.read(3), stream.readline(), stream.read()]
    assert parts == [b"fir", b"st\n", b"second\nthird"]
    assert all(type(part) is bytes for part in parts)


class HesitantRaw(io.RawIOBase):
    """A non-blocking raw stream: every other read finds nothing ready (None),
    the others get at most 7 bytes."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self.calls += 1
        if self.calls % 2:
            return None
        return self._data.readinto(memoryview(buffer).cast("B")[:7])


NON_BLOCKING: dict[str, Callable[[bytes], Any]] = {
    "raw": HesitantRaw,
    "buffered": lambda data: io.BufferedReader(HesitantRaw(data)),
}
LINES = [b"line %02d " % i + b"x" * (i * 5) + b"\n" for i in range(12)] + [b"no newline"]


@pytest.mark.parametrize("make", NON_BLOCKING.values(), ids=NON_BLOCKING.keys())
def test_lines_of_a_non_blocking_storage_stream_are_whole_lines(make: Any) -> None:
    storage = handing(make, b"".join(LINES))
    with retry(storage).read("k") as stream:
        # A readline that met "nothing ready yet" gave b"", and iterating
        # ended there, as if the object were empty.
        assert list(stream) == LINES
    with retry(storage).read("k") as stream:
        assert stream.readline(4) == b"line"
        assert stream.readline() == LINES[0][4:]
        assert stream.readlines() == LINES[1:]
        assert stream.readline() == b""


@pytest.mark.parametrize("make", NON_BLOCKING.values(), ids=NON_BLOCKING.keys())
def test_lines_of_a_non_blocking_storage_stream_resume_whole(make: Any) -> None:
    class Dropping(Handing):
        def read(self, path: str) -> IO[bytes]:
            stream = super().read(path)
            if len(self.opened) > 1:
                return stream  # type: ignore[no-any-return]
            fault = Fault(ConnectionResetError("dropped"), after=30)
            return FailingReader(stream, fault, seekable=False)  # type: ignore[return-value]

    storage = Dropping(make)
    storage.write("k", io.BytesIO(b"".join(LINES)))
    with retry(storage).read("k") as stream:
        assert list(stream) == LINES
    assert len(storage.opened) == 2


def test_read_of_a_raw_non_blocking_storage_stream_reads_to_the_end() -> None:
    data = b"".join(LINES)
    with retry(handing(HesitantRaw, data)).read("k") as stream:
        # The raw stream's readall() stops at the first "nothing ready yet".
        assert stream.read() == data


def test_lines_of_a_raw_storage_stream_are_read_through_one_buffer() -> None:
    lines = [b"x" * 999 + b"\n"] * 3
    storage = handing(CountingRaw, b"".join(lines))
    with retry(storage).read("k") as stream:
        assert list(stream) == lines
    # io.IOBase's own readline would have read a byte per call: 3000 calls.
    assert storage.opened[0].reads < 10


def test_lines_resume_after_a_failure_mid_stream(tier: str) -> None:
    lines = [b"line %03d\n" % i for i in range(100)]
    storage = scripted(tier, read=[Fault(ConnectionResetError(), after=25)])
    storage.seekable_reads = False
    storage.inner.write("k", io.BytesIO(b"".join(lines)))
    with retry(storage).read("k") as stream:
        assert stream.readline(3) == b"lin"
        assert [b"lin" + stream.readline(), *stream] == lines
    assert storage.calls["read"] == 2


def test_a_closed_read_stream_refuses_every_read_and_closes_once() -> None:
    storage = handing(io.BytesIO, b"a\nb\n")
    stream = retry(storage).read("k")
    stream.close()
    stream.close()
    assert stream.closed
    assert storage.opened[0].closed
    reads = [stream.read, stream.readline, stream.readlines, stream.flush, stream.__enter__]
    for read in [*reads, lambda: stream.readinto(bytearray(1)), lambda: next(stream)]:
        with pytest.raises(ValueError, match="closed"):
            read()


def test_a_read_stream_dropped_unclosed_closes_the_storage_stream() -> None:
    storage = handing(io.BytesIO, b"data")
    stream = retry(storage).read("k")
    assert stream.read(2) == b"da"
    del stream
    assert storage.opened[0].closed


@pytest.mark.parametrize("buffer", [b"xyz", memoryview(b"xyz")], ids=["bytes", "memoryview"])
def test_readinto_a_read_only_buffer_is_refused_before_any_byte_is_taken(buffer: Any) -> None:
    with retry(handing(io.BytesIO, b"abcdef")).read("k") as stream:
        with pytest.raises(TypeError, match="read-write"):
            stream.readinto(buffer)
        # Taken from the storage and then dropped, these bytes were lost.
        assert stream.read() == b"abcdef"


@pytest.mark.parametrize("size", [2.5, "3", 1.0], ids=["float", "str", "whole float"])
def test_a_size_that_is_not_an_int_is_refused_and_the_stream_reads_on(size: Any) -> None:
    storage = handing(CountingRaw, b"ab\ncd\n")
    with retry(storage).read("k") as stream:
        for read in (stream.read, stream.readline):
            with pytest.raises(TypeError):
                read(size)
        # The caller's mistake, refused before any I/O, is no failure of the read.
        assert storage.opened[0].reads == 0
        assert stream.read(True) == b"a"  # an int, as io takes it
        assert stream.readline(Index(5)) == b"b\n"
        assert stream.read() == b"cd\n"


class Index:
    """An integer that is no int, as numpy's are: usable through __index__."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@pytest.mark.parametrize("op", ["read", "stream_read"])
@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_a_read_in_progress_can_be_neither_copied_nor_pickled(op: str, how: str) -> None:
    storage = MemoryBackend()
    storage.write("k", io.BytesIO(b"abcdef"))
    reading = getattr(retry(storage), op)("k")
    duplicate = {"copy": copy.copy, "deepcopy": copy.deepcopy, "pickle": pickle.dumps}[how]
    with pytest.raises(TypeError, match="cannot pickle or copy a read of 'k'"):
        duplicate(reading)
    # A copy would have read on from the same storage stream with a record of
    # its own, sharing the bytes this one delivered.
    whole = reading.read() if op == "read" else b"".join(reading)
    assert whole == b"abcdef"


@pytest.mark.parametrize(
    "after", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE]
)
def test_stream_read_resumes_after_a_failure_mid_stream(after: int) -> None:
    data = noise(3 * CHUNK_SIZE + 5, seed=4)
    storage = AdvancedScripted(MemoryBackend(), stream_read=resets(2, after=after))
    storage.inner.write("k", io.BytesIO(data))
    chunks = list(retry(storage).stream_read("k"))
    assert all(chunks)
    assert sha(b"".join(chunks)) == sha(data)
    assert storage.calls["stream_read"] == 3


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5000), max_size=8),
    offsets=st.lists(st.integers(0, 40000), max_size=6),
)
def test_stream_read_delivers_every_byte_exactly_once_whatever_the_failures(
    sizes: list[int], offsets: list[int]
) -> None:
    pieces = [noise(n, seed=i) for i, n in enumerate(sizes)]

    class Pieces(AdvancedScripted):
        def stream_read(self, path: str) -> Iterator[bytes]:
            fault = self.fault("stream_read")
            return pieces_iter() if fault is None else failing_chunks(pieces_iter(), fault)

    def pieces_iter() -> Iterator[bytes]:
        yield from pieces

    storage = Pieces(MemoryBackend(), stream_read=[Fault(TimeoutError(), after=o) for o in offsets])
    wrapper = retry(storage, attempts=len(offsets) + 2)
    assert b"".join(wrapper.stream_read("k")) == b"".join(pieces)


def test_stream_read_refuses_an_object_that_got_shorter() -> None:
    storage = AdvancedScripted(
        MemoryBackend(), stream_read=[Fault(ConnectionResetError(), after=5)]
    )
    storage.inner.write("k", io.BytesIO(b"0123456789"))
    chunks = retry(storage).stream_read("k")
    assert next(chunks) == b"01234"
    storage.inner.write("k", io.BytesIO(b"0123"))
    with pytest.raises(SnapshotObjectChangedError, match="'k' changed while it was being read"):
        next(chunks)


def test_stream_read_of_a_missing_object_fails_at_once_without_retrying() -> None:
    storage = AdvancedScripted(MemoryBackend())
    with pytest.raises(FileNotFoundError):
        retry(storage).stream_read("absent")
    assert storage.calls["stream_read"] == 1


def test_closing_stream_read_early_closes_the_storage_iterator() -> None:
    closed = []

    class Tracked(AdvancedScripted):
        def stream_read(self, path: str) -> Iterator[bytes]:
            self.calls["stream_read"] += 1
            try:
                yield b"a"
                yield b"b"
            finally:
                closed.append(path)

    chunks = retry(Tracked(MemoryBackend())).stream_read("k")
    assert next(chunks) == b"a"
    chunks.close()
    assert closed == ["k"]


# A read resumes only in the object it started, and stays failed once it failed.

#: The object being read, the bytes a read of it has taken when its
#: connection drops, and what another client replaces it with meanwhile.  The
#: drop comes after two chunks, so that Checksum below Retry has handed
#: those on (it holds back one chunk) and the resume has bytes to check.
OLD = noise(3 * CHUNK_SIZE + 5, seed=20)
DROPPED_AFTER = 2 * CHUNK_SIZE + 7
CHANGES = {
    "same length": noise(len(OLD), seed=21),
    "longer": noise(4 * CHUNK_SIZE, seed=22),
    "shorter, but longer than what was delivered": noise(DROPPED_AFTER + 100, seed=23),
    "shorter than what was delivered": noise(CHUNK_SIZE, seed=24),
    "same start, one byte changed before the drop": OLD[:CHUNK_SIZE]
    + bytes([OLD[CHUNK_SIZE] ^ 1])
    + OLD[CHUNK_SIZE + 1 :],
}
#: A replacement that starts with every byte delivered before the drop.
SAME_START = OLD[:DROPPED_AFTER] + noise(CHUNK_SIZE + CHUNK_SIZE // 2, seed=25)

#: Stack name -> how to build it over X, given the options of its Retry.
STACKS: dict[str, Callable[..., Any]] = {
    "Retry(X)": lambda x, **options: retry(x, **options),
    "Retry(Checksum(X))": lambda x, **options: retry(Checksum(x), **options),
    "Checksum(Retry(X))": lambda x, **options: Checksum(retry(x, **options)),
}


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return MemoryBackend() if request.param == "memory" else LocalFileSystemBackend(tmp_path)


def replaced_mid_read(
    backend: Any, stack: str, op: str, new: bytes, *, after: int = DROPPED_AFTER,
    old: bytes = OLD, seekable: bool = True, basic: bool = False, **options: Any,
) -> tuple[Any, Scripted]:  # fmt: skip
    """*stack* over *backend* holding *old* at "k", whose first *op* of "k"
    fails after *after* bytes, once another client has replaced it with *new*
    (through Checksum in the stacks that have one, as a real writer would).
    With *basic*, X is of the basic tier."""
    writer = Checksum(backend) if "Checksum" in stack else backend
    writer.write("k", io.BytesIO(old))
    drop = Fault(ConnectionResetError("dropped"), after=after,
                 then=lambda: writer.write("k", io.BytesIO(new)))  # fmt: skip
    cls = Scripted if basic else AdvancedScripted
    scripted = cls(backend, seekable_reads=seekable, only="k", **{op: [drop]})
    return STACKS[stack](scripted, **options), scripted


def read_whole(storage: Any, op: str, *, first: int = 0) -> bytes:
    """Read "k" whole with *op*; a ``read`` takes its *first* bytes in one call."""
    if op == "read":
        with storage.read("k") as stream:
            head = stream.read(first) if first else b""
            return head + read_in(stream, 65536)
    return b"".join(storage.stream_read("k"))


@pytest.mark.parametrize("op", ["read", "stream_read"])
@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("change", CHANGES)
def test_a_read_never_resumes_in_a_replaced_object(
    change: str, stack: str, op: str, backend: Any
) -> None:
    storage, scripted = replaced_mid_read(backend, stack, op, CHANGES[change])
    with pytest.raises(SnapshotObjectChangedError, match="'k' changed while it was being read"):
        read_whole(storage, op)
    assert scripted.calls[op] == 2  # opened, resumed once, never tried again


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("change", CHANGES)
def test_a_read_of_a_basic_storage_never_resumes_in_a_replaced_object(
    change: str, stack: str
) -> None:
    storage, scripted = replaced_mid_read(
        MemoryBackend(), stack, "read", CHANGES[change], basic=True
    )
    assert not isinstance(storage, AdvancedSnapshotStorage)
    with pytest.raises(SnapshotObjectChangedError, match="'k' changed while it was being read"):
        read_whole(storage, "read")
    assert scripted.calls["read"] == 2


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "non-seekable"])
@pytest.mark.parametrize("op", ["read", "stream_read"])
@pytest.mark.parametrize("stack", ["Retry(X)", "Retry(Checksum(X))"])
def test_a_read_resumes_in_a_replacement_that_starts_with_the_bytes_delivered(
    stack: str, op: str, seekable: bool, backend: Any
) -> None:
    storage, scripted = replaced_mid_read(backend, stack, op, SAME_START, seekable=seekable)
    assert sha(read_whole(storage, op)) == sha(SAME_START)
    assert scripted.calls[op] == 2


@pytest.mark.parametrize("op", ["read", "stream_read"])
def test_checksum_above_retry_refuses_a_replacement_that_starts_with_the_bytes_delivered(
    op: str, backend: Any
) -> None:
    # Retry below resumes in the new version, which is correct bytes for it;
    # Checksum above opened the old version's digest and rejects the new one.
    storage, _ = replaced_mid_read(backend, "Checksum(Retry(X))", op, SAME_START)
    with pytest.raises(SnapshotIntegrityError, match="'k' does not match its checksum"):
        read_whole(storage, op)


def test_a_read_resumed_in_a_replacement_re_reads_the_bytes_delivered_rather_than_seeking() -> None:
    # A same-length replacement that differs only in its first byte: a seek
    # to the resume offset would not see it.
    new = bytes([OLD[0] ^ 1]) + OLD[1:]
    storage, _ = replaced_mid_read(MemoryBackend(), "Retry(X)", "read", new, seekable=True)
    # The reads of 64 KiB that ended before the drop delivered their bytes; the
    # one it cut short delivered none.
    delivered = 10 + (DROPPED_AFTER - 10) // 65536 * 65536
    with storage.read("k") as stream:
        assert stream.read(10) == OLD[:10]
        with pytest.raises(SnapshotObjectChangedError, match=f"first {delivered} bytes"):
            read_in(stream, 65536)


# The first 64 KiB a read delivers are hashed only when a resume needs them.
SMALL = noise(64 * 1024 + 10, seed=30)


@pytest.mark.parametrize("after", [1, 4096, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1])
@pytest.mark.parametrize("op", ["read", "stream_read"])
def test_a_read_interrupted_early_never_resumes_in_a_replaced_object(op: str, after: int) -> None:
    new = bytes([SMALL[0] ^ 1]) + SMALL[1:]  # differs in the first byte only
    storage, scripted = replaced_mid_read(
        MemoryBackend(), "Retry(X)", op, new, after=after, old=SMALL
    )
    # A read delivers bytes up to the drop and nothing of the read it cuts short.
    with pytest.raises(SnapshotObjectChangedError, match=f"first {after} bytes"):
        read_whole(storage, op, first=after)
    assert scripted.calls[op] == 2


@pytest.mark.parametrize("after", [1, 4096, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1])
@pytest.mark.parametrize("op", ["read", "stream_read"])
def test_a_read_interrupted_early_resumes_in_a_replacement_that_starts_the_same(
    op: str, after: int
) -> None:
    new = SMALL[:after] + noise(100, seed=31)
    storage, _ = replaced_mid_read(MemoryBackend(), "Retry(X)", op, new, after=after, old=SMALL)
    assert sha(read_whole(storage, op, first=after)) == sha(new)


def test_a_chunk_the_storage_reuses_does_not_change_the_bytes_delivered() -> None:
    data = noise(3000, seed=32)
    opened = []

    class Reusing(MemoryBackend):
        """Yields its chunks in one buffer it overwrites; the first
        iteration fails after the first chunk."""

        def stream_read(self, path: str) -> Iterator[bytes]:
            opened.append(path)
            buffer = bytearray(1000)
            for start in range(0, len(data), 1000):
                buffer[:] = data[start : start + 1000]
                yield buffer  # type: ignore[misc]
                if len(opened) == 1:
                    buffer[:] = bytes(1000)
                    raise ConnectionResetError("dropped")

    chunks = [bytes(chunk) for chunk in retry(Reusing()).stream_read("k")]
    assert b"".join(chunks) == data
    assert len(opened) == 2


@pytest.mark.parametrize(
    "on",
    [Exception, (Exception,), lambda exc: True, lambda exc: 0.0],
    ids=["type", "tuple", "predicate", "custom wait"],
)
@pytest.mark.parametrize("op", ["read", "stream_read"])
def test_a_changed_object_is_never_retried_even_when_on_says_retry_everything(
    op: str, on: Any
) -> None:
    storage, scripted = replaced_mid_read(
        MemoryBackend(), "Retry(X)", op, CHANGES["same length"], on=on
    )
    with pytest.raises(SnapshotObjectChangedError):
        read_whole(storage, op)
    assert scripted.calls[op] == 2


def test_a_retry_above_another_does_not_retry_the_changed_object_it_reports() -> None:
    backend = MemoryBackend()
    backend.write("k", io.BytesIO(OLD))
    drop = Fault(ConnectionResetError("dropped"), after=DROPPED_AFTER,
                 then=lambda: backend.write("k", io.BytesIO(CHANGES["longer"])))  # fmt: skip
    scripted = AdvancedScripted(backend, stream_read=[drop])
    storage = retry(retry(scripted), on=lambda exc: True)
    with pytest.raises(SnapshotObjectChangedError):
        b"".join(storage.stream_read("k"))
    assert scripted.calls["stream_read"] == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    old_size=st.integers(0, 3 * CHUNK_SIZE),
    kept=st.integers(0, 3 * CHUNK_SIZE),
    added=st.integers(0, CHUNK_SIZE),
    after=st.integers(0, 3 * CHUNK_SIZE),
    stack=st.sampled_from(list(STACKS)),
    op=st.sampled_from(["read", "stream_read"]),
    seekable=st.booleans(),
)
def test_a_resumed_read_returns_one_version_whole_or_raises_never_a_splice(
    old_size: int, kept: int, added: int, after: int, stack: str, op: str, seekable: bool
) -> None:
    old = noise(old_size, seed=old_size)
    # The replacement keeps the first *kept* bytes of the old version (all of
    # them: the same object, or the old one with bytes added at its end).
    new = old[:kept] + noise(added, seed=old_size + 1)
    storage, _ = replaced_mid_read(
        MemoryBackend(), stack, op, new, after=after, old=old, seekable=seekable
    )
    try:
        result = read_whole(storage, op)
    except SnapshotObjectChangedError:
        assert new[:after] != old[:after]
        return
    except SnapshotIntegrityError:
        # Checksum above Retry verifies against the digest of the version it opened.
        assert stack == "Checksum(Retry(X))"
        assert new != old
        return
    # The drop always strikes after the replacement: whatever succeeds is the new version.
    assert sha(result) == sha(new)
    if stack == "Checksum(Retry(X))":
        assert new == old


@pytest.mark.slow
def test_a_resumed_read_checks_the_bytes_delivered_in_constant_memory() -> None:
    block = noise(CHUNK_SIZE + 7, seed=26)  # a dropped or repeated chunk would misalign it
    blocks = 300

    class Generated(ReadableStream):
        """*blocks* copies of *block*, made as they are read; *fail_at* drops it."""

        def __init__(self, fail_at: int | None) -> None:
            super().__init__()
            self.position = 0
            self.fail_at = fail_at

        def read(self, size: int | None = -1) -> bytes:
            size = CHUNK_SIZE if size is None or size < 0 else size
            if self.fail_at is not None and self.position >= self.fail_at:
                raise ConnectionResetError("dropped")
            at = self.position % len(block)
            data = block[at : at + size][: blocks * len(block) - self.position]
            self.position += len(data)
            return data

    class Source(BasicMemory):
        def __init__(self) -> None:
            super().__init__()
            self.opened = 0

        def read(self, path: str) -> IO[bytes]:
            self.opened += 1
            fail_at = 200 * len(block) if self.opened == 1 else None
            return Generated(fail_at)  # type: ignore[return-value]

    def run() -> None:
        source = Source()
        digest, size = hashlib.sha256(), 0
        with retry(source).read("huge") as stream:
            while data := stream.read(CHUNK_SIZE):
                digest.update(data)
                size += len(data)
        assert source.opened == 2
        assert size == blocks * len(block)
        expected = hashlib.sha256()
        for _ in range(blocks):
            expected.update(block)
        assert digest.hexdigest() == expected.hexdigest()

    growth = peak_rss_delta(run)
    assert growth < 64 * 1024 * 1024, f"memory grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "faults",
    [
        [Fault(PermissionError("revoked"), after=10)],
        [Fault(ConnectionResetError("mid"), after=10), *resets(2)],
    ],
    ids=["permanent", "gave up"],
)
def test_a_read_that_raised_keeps_raising_and_never_reports_the_end(
    faults: list[Fault], tier: str
) -> None:
    storage = scripted(tier, read=faults)
    storage.inner.write("k", io.BytesIO(noise(100)))
    error = type(faults[-1].error)
    with retry(storage, attempts=3).read("k") as stream:
        assert stream.read(10) == noise(100)[:10]
        with pytest.raises(error):
            stream.read(10)
        opened = storage.calls["read"]
        # The storage recovered, but the stream stays failed: an empty read
        # would look like the end of the object.
        for size in (10, 1, -1, None):
            with pytest.raises(error):
                stream.read(size)
        with pytest.raises(error):
            stream.readline()
        with pytest.raises(error):
            stream.readinto(bytearray(5))
    assert storage.calls["read"] == opened


def test_a_read_that_found_the_object_changed_keeps_raising() -> None:
    storage, scripted = replaced_mid_read(MemoryBackend(), "Retry(X)", "read", CHANGES["longer"])
    with storage.read("k") as stream:
        with pytest.raises(SnapshotObjectChangedError):
            read_in(stream, 65536)
        with pytest.raises(SnapshotObjectChangedError):
            stream.read(1)
    assert scripted.calls["read"] == 2


@pytest.mark.parametrize(
    "faults",
    [
        [Fault(PermissionError("revoked"), after=5)],
        [Fault(ConnectionResetError("mid"), after=5), *resets(2)],
    ],
    ids=["permanent", "gave up"],
)
def test_stream_read_that_raised_keeps_raising_and_never_reports_the_end(
    faults: list[Fault],
) -> None:
    storage = AdvancedScripted(MemoryBackend(), stream_read=faults)
    storage.inner.write("k", io.BytesIO(b"0123456789"))
    error = type(faults[-1].error)
    chunks = retry(storage, attempts=3).stream_read("k")
    assert next(chunks) == b"01234"
    with pytest.raises(error):
        next(chunks)
    opened = storage.calls["stream_read"]
    for _ in range(2):
        with pytest.raises(error):
            next(chunks)
    with pytest.raises(error):
        list(chunks)
    assert storage.calls["stream_read"] == opened


def test_a_file_over_a_stream_read_that_raised_never_reports_the_end() -> None:
    storage = AdvancedScripted(MemoryBackend(), stream_read=[Fault(PermissionError(), after=5)])
    storage.inner.write("k", io.BytesIO(b"0123456789"))
    with ChunkReader(retry(storage).stream_read("k")) as file:
        assert file.read(5) == b"01234"
        for _ in range(2):
            with pytest.raises(PermissionError):
                file.read(5)


def test_retry_over_rclone_on_s3_never_resumes_in_a_replaced_object(s3_bucket: S3Bucket) -> None:
    server = s3_bucket.server
    backend = RcloneBackend(
        f"s3:{s3_bucket.name}/resume",
        config={"type": "s3", "provider": "Other", "endpoint": server.endpoint_url,
                "access_key_id": server.access_key_id,
                "secret_access_key": server.secret_access_key, "region": server.region},
    )  # fmt: skip
    for op in ("read", "stream_read"):
        storage, _ = replaced_mid_read(backend, "Retry(X)", op, CHANGES["same length"])
        with pytest.raises(SnapshotObjectChangedError):
            read_whole(storage, op)
        storage, _ = replaced_mid_read(backend, "Retry(Checksum(X))", op, SAME_START)
        assert sha(read_whole(storage, op)) == sha(SAME_START)


# Moves.


def test_atomic_move_is_retried_after_a_failure_before_the_move() -> None:
    storage = AdvancedScripted(MemoryBackend(), atomic_move=resets(2))
    storage.inner.write("a", io.BytesIO(b"x"))
    retry(storage).atomic_move("a", "b")
    assert storage.inner.list("") == ["b"]
    assert storage.calls["atomic_move"] == 3


def test_atomic_move_whose_answer_was_lost_is_taken_as_done() -> None:
    storage = AdvancedScripted(MemoryBackend(), atomic_move=resets(1, after=0))
    storage.inner.write("a", io.BytesIO(b"x"))
    retry(storage).atomic_move("a", "b")
    assert storage.inner.list("") == ["b"]
    assert storage.calls["atomic_move"] == 2


def test_atomic_move_of_a_missing_object_fails_without_retrying() -> None:
    storage = AdvancedScripted(MemoryBackend())
    storage.inner.write("b", io.BytesIO(b"old"))
    with pytest.raises(FileNotFoundError):
        retry(storage).atomic_move("a", "b")
    assert storage.calls["atomic_move"] == 1
    assert storage.inner.read("b").read() == b"old"


def test_a_missing_source_is_never_taken_for_a_lost_answer() -> None:
    # The first try fails before it starts; the second finds no source while
    # the destination exists.  Without knowing that the source was there to
    # begin with, that would look like a move whose answer was lost.
    storage = AdvancedScripted(MemoryBackend(), atomic_move=resets(1))
    storage.inner.write("b", io.BytesIO(b"old"))
    with pytest.raises(FileNotFoundError):
        retry(storage).atomic_move("a", "b")
    assert storage.calls["atomic_move"] == 2
    assert storage.inner.read("b").read() == b"old"


def test_atomic_move_checks_the_source_once_and_retries_that_check() -> None:
    storage = AdvancedScripted(MemoryBackend(), exists=resets(2))
    storage.inner.write("a", io.BytesIO(b"x"))
    retry(storage).atomic_move("a", "b")
    assert storage.inner.list("") == ["b"]
    assert storage.calls == Counter({"exists": 3, "atomic_move": 1})


# Real components.


def test_retry_over_chaos_never_corrupts_data(tmp_path: Path) -> None:
    for inner in (MemoryBackend(), LocalFileSystemBackend(tmp_path)):
        storage = retry(Chaos(inner, failure_rate=0.4, seed=11), attempts=40)
        for n, size in enumerate([0, 1, 1000, CHUNK_SIZE + 1, 3 * CHUNK_SIZE]):
            data = noise(size, seed=n)
            storage.write(f"w/{n}", io.BytesIO(data))
            with Pipe(data) as pipe:
                storage.write(f"p/{n}", pipe)
            storage.stream_write(f"s/{n}", iter([data[:7], data[7:]]))
            for key in (f"w/{n}", f"p/{n}", f"s/{n}"):
                assert sha(inner.read(key).read()) == sha(data)
                with storage.read(key) as stream:
                    assert sha(read_in(stream, 65536)) == sha(data)
                assert sha(b"".join(storage.stream_read(key))) == sha(data)
        assert storage.list("w/") == [f"w/{n}" for n in range(5)]
        storage.sync("w/", "copy/")
        storage.atomic_move("copy/0", "moved")
        assert storage.exists("moved")
        storage.delete("moved")
        assert not storage.exists("moved")


def test_retry_over_local_files_resumes_reads(tmp_path: Path) -> None:
    local = LocalFileSystemBackend(tmp_path)
    data = noise(3 * CHUNK_SIZE + 1, seed=8)
    local.write("db/x", io.BytesIO(data))
    storage = AdvancedScripted(local, read=resets(2, after=CHUNK_SIZE + 3),
                               stream_read=resets(2, after=5))  # fmt: skip
    wrapper = retry(storage)
    with wrapper.read("db/x") as stream:
        assert sha(read_in(stream, 10000)) == sha(data)
    assert sha(b"".join(wrapper.stream_read("db/x"))) == sha(data)


def test_retry_above_checksum_resumes_and_still_verifies() -> None:
    data = noise(3 * CHUNK_SIZE + 9, seed=6)
    inner = AdvancedScripted(MemoryBackend())
    storage = retry(Checksum(inner))
    storage.write("k", io.BytesIO(data))
    inner.faults = {"read": [Fault(ConnectionResetError(), after=CHUNK_SIZE + 1)],
                    "stream_read": [Fault(TimeoutError(), after=2 * CHUNK_SIZE)]}  # fmt: skip
    with storage.read("k") as stream:
        assert sha(read_in(stream, 4096)) == sha(data)
    assert sha(b"".join(storage.stream_read("k"))) == sha(data)


def test_stamina_reports_each_retry() -> None:
    storage = Scripted(MemoryBackend(), list=resets(2))
    with capture_logs() as entries:
        retry(storage).list("")
    retries = [e for e in entries if e["event"] == "stamina.retry_scheduled"]
    assert len(retries) == 2
    assert all("ConnectionResetError" in e["caused_by"] for e in retries)


# The storage contract holds through the wrapper.


class TestRetryOverMemoryBackend(StorageConformance):
    @pytest.fixture
    def storage(self) -> Retry:
        return Retry(MemoryBackend())


class TestRetryOverLocalFileSystemBackend(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Retry:
        return Retry(LocalFileSystemBackend(tmp_path))


class TestRetryOverABasicStorage(StorageConformance):
    @pytest.fixture
    def storage(self) -> Retry:
        return Retry(BasicMemory())


class TestRetryOverChaos(StorageConformance):
    @pytest.fixture
    def storage(self) -> Retry:
        return Retry(Chaos(MemoryBackend(), failure_rate=0.3, seed=5), attempts=30, **INSTANT)

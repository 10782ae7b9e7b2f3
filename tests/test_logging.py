"""Tests for the Logging audit wrapper."""

from __future__ import annotations

import gc
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import pytest
import structlog
from structlog.testing import capture_logs

from django_snapshots.exceptions import SnapshotStorageError, SnapshotStoragePathError
from django_snapshots.storage import Logging, MemoryBackend, Prefix
from django_snapshots.storage.cleanup import Leftover
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.wrappers import logging as logging_module
from django_snapshots.testing import StorageConformance

COMMON = {"event", "log_level", "op", "outcome", "duration_ms", "storage"}
SECRET = "hunter2-do-not-log"


def only(entries: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(entries) == 1, entries
    return entries[0]


@pytest.fixture
def memory() -> MemoryBackend:
    storage = MemoryBackend()
    storage.write("db/a.dump", io.BytesIO(b"aaaa"))
    storage.write("db/b.dump", io.BytesIO(b"bb"))
    storage.write("media/c.jpg", io.BytesIO(b"c"))
    return storage


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    try:
        yield
    finally:
        if was_configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


# One entry per operation, with the documented keys.


OPERATIONS: dict[str, tuple[Callable[[Any], object], dict[str, Any]]] = {
    "write": (
        lambda s: s.write("db/new.dump", io.BytesIO(b"12345")),
        {"path": "db/new.dump", "bytes": 5},
    ),
    "read": (
        lambda s: s.read("db/a.dump").read(),
        {"path": "db/a.dump", "bytes": 4, "complete": True},
    ),
    "list": (lambda s: s.list("db/"), {"prefix": "db/", "count": 2}),
    "delete": (lambda s: s.delete("db/b.dump"), {"path": "db/b.dump"}),
    "exists": (lambda s: s.exists("db/a.dump"), {"path": "db/a.dump", "found": True}),
    "stream_read": (
        lambda s: list(s.stream_read("db/a.dump")),
        {"path": "db/a.dump", "bytes": 4, "complete": True},
    ),
    "stream_write": (
        lambda s: s.stream_write("db/new.dump", iter([b"12", b"345", b"6"])),
        {"path": "db/new.dump", "bytes": 6},
    ),
    "atomic_move": (
        lambda s: s.atomic_move("db/a.dump", "db/z.dump"),
        {"src": "db/a.dump", "dst": "db/z.dump"},
    ),
    "recursive_list": (lambda s: s.recursive_list(""), {"prefix": "", "count": 3}),
    "sync": (
        lambda s: s.sync("db/", "copy/"),
        {"src_prefix": "db/", "dst_prefix": "copy/"},
    ),
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_every_operation_logs_one_entry_with_its_keys(op: str, memory: MemoryBackend) -> None:
    call, expected = OPERATIONS[op]
    storage = Logging(memory)
    with capture_logs() as entries:
        call(storage)
    entry = only(entries)
    assert set(entry) == COMMON | set(expected)
    assert entry["event"] == f"snapshots.storage.{op}"
    assert entry["op"] == op
    assert entry["outcome"] == "ok"
    assert entry["log_level"] == "info"
    assert entry["storage"] == "MemoryBackend()"
    assert isinstance(entry["duration_ms"], float)
    assert entry["duration_ms"] >= 0
    for key, value in expected.items():
        assert entry[key] == value


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_every_entry_serializes_as_one_json_line(op: str, memory: MemoryBackend) -> None:
    call, _ = OPERATIONS[op]
    with capture_logs() as entries:
        call(Logging(memory))
    line = json.dumps(only(entries))
    assert "\n" not in line
    assert json.loads(line) == only(entries)


def test_operations_still_do_what_the_storage_does(memory: MemoryBackend) -> None:
    storage = Logging(memory)
    with capture_logs():
        storage.write("x", io.BytesIO(b"payload"))
        assert memory.read("x").read() == b"payload"
        assert storage.read("x").read() == b"payload"
        assert b"".join(storage.stream_read("x")) == b"payload"
        assert storage.exists("x")
        assert not storage.exists("y")
        assert storage.list("db/") == ["db/a.dump", "db/b.dump"]
        storage.atomic_move("x", "y")
        assert memory.exists("y")
        assert not memory.exists("x")
        storage.delete("y")
        assert not memory.exists("y")


def test_the_storage_key_is_the_repr_of_the_wrapped_stack(tmp_path: Path) -> None:
    local = LocalFileSystemBackend(tmp_path)
    storage = Logging(Prefix(local, "tenant-a"))
    with capture_logs() as entries:
        storage.exists("x")
    assert only(entries)["storage"] == f"Prefix({local!r}, 'tenant-a')"


def test_the_storage_repr_is_computed_once_not_per_operation() -> None:
    class Counting(MemoryBackend):
        reprs = 0

        def __repr__(self) -> str:
            type(self).reprs += 1
            return "Counting()"

    storage = Logging(Counting())
    after_construction = Counting.reprs
    with capture_logs() as entries:
        for i in range(5):
            storage.write(f"k{i}", io.BytesIO(b"x"))
            storage.read(f"k{i}").read()
            storage.exists(f"k{i}")
    assert len(entries) == 15
    assert all(entry["storage"] == "Counting()" for entry in entries)
    assert after_construction == 1
    assert Counting.reprs == 1


# Failures.


class Failing:
    """An advanced storage whose every operation fails with the same exception."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __repr__(self) -> str:
        return "Failing()"

    def _fail(self, *args: object) -> Any:
        raise self.exc

    read = write = list = delete = exists = _fail
    stream_read = stream_write = atomic_move = recursive_list = sync = _fail


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_a_failure_is_logged_as_an_error_and_re_raised_unchanged(op: str) -> None:
    call, expected = OPERATIONS[op]
    original = SnapshotStorageError(f"https://user:{SECRET}@host/bucket refused", transient=True)
    with capture_logs() as entries, pytest.raises(SnapshotStorageError) as excinfo:
        call(Logging(Failing(original)))
    assert excinfo.value is original
    entry = only(entries)
    assert entry["log_level"] == "error"
    assert entry["outcome"] == "error"
    assert entry["error"] == "SnapshotStorageError"
    assert entry["event"] == f"snapshots.storage.{op}"
    expected_keys = set(expected) - {"count", "found"}
    assert set(entry) == COMMON | {"error"} | expected_keys
    for key in expected_keys - {"bytes", "complete"}:
        assert entry[key] == expected[key]
    if "complete" in expected_keys:
        assert entry["complete"] is False
    assert SECRET not in repr(entries)


def test_an_interrupt_is_logged_and_re_raised() -> None:
    interrupt = KeyboardInterrupt()
    with capture_logs() as entries, pytest.raises(KeyboardInterrupt) as excinfo:
        Logging(Failing(interrupt)).exists("x")
    assert excinfo.value is interrupt
    assert only(entries)["error"] == "KeyboardInterrupt"


def test_a_missing_key_is_logged_with_the_builtin_error_name(memory: MemoryBackend) -> None:
    with capture_logs() as entries, pytest.raises(FileNotFoundError):
        Logging(memory).read("db/missing.dump")
    entry = only(entries)
    assert entry["error"] == "FileNotFoundError"
    assert entry["path"] == "db/missing.dump"
    assert entry["bytes"] == 0


# read and stream_read log when their stream ends.


class Clock:
    """A deterministic stand-in for ``perf_counter``: time moves only on ``tick``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class SlowFile(io.RawIOBase):
    """A file whose every read takes one second on *clock*."""

    def __init__(self, data: bytes, clock: Clock, *, fail_after: int | None = None) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._clock = clock
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._clock.tick(1.0)
        if self._fail_after is not None and self._data.tell() >= self._fail_after:
            raise ConnectionResetError("peer went away")
        data = self._data.read(min(len(buffer), 3))
        buffer[: len(data)] = data
        return len(data)


class SlowStorage(MemoryBackend):
    """Reads go through :class:`SlowFile`, three bytes at a time."""

    def __init__(self, clock: Clock, *, fail_after: int | None = None) -> None:
        super().__init__()
        self._clock = clock
        self._fail_after = fail_after

    def read(self, path: str) -> IO[bytes]:
        data = super().read(path).read()
        return SlowFile(data, self._clock, fail_after=self._fail_after)  # type: ignore[return-value]

    def stream_read(self, path: str) -> Iterator[bytes]:
        reader = self.read(path)

        def chunks() -> Iterator[bytes]:
            with reader:
                while chunk := reader.read(3):
                    yield chunk

        return chunks()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(logging_module, "perf_counter", clock)
    return clock


@pytest.mark.parametrize(
    ("seconds", "ms"), [(0.0012344, 1.234), (0.0012346, 1.235), (2.5, 2500.0), (0.0, 0.0)]
)
def test_durations_are_milliseconds_rounded_to_the_microsecond(
    clock: Clock, seconds: float, ms: float
) -> None:
    class Timed(MemoryBackend):
        def exists(self, path: str) -> bool:
            clock.tick(seconds)
            return False

    with capture_logs() as entries:
        Logging(Timed()).exists("k")
    assert only(entries)["duration_ms"] == ms


def test_read_logs_when_the_stream_is_exhausted_with_the_transfer_time(clock: Clock) -> None:
    inner = SlowStorage(clock)
    inner.write("k", io.BytesIO(b"123456789"))
    storage = Logging(inner)
    with capture_logs() as entries:
        reader = storage.read("k")
        assert entries == []
        assert reader.read(3) == b"123"
        assert reader.read(3) == b"456"
        assert reader.read(3) == b"789"
        assert entries == []
        assert reader.read(3) == b""
        entry = only(entries)
        reader.close()
    assert len(entries) == 1
    assert entry["bytes"] == 9
    assert entry["outcome"] == "ok"
    assert entry["duration_ms"] == 4000.0  # four reads of one second each: the transfer


def test_read_logs_once_when_closed_early_with_the_bytes_delivered(clock: Clock) -> None:
    inner = SlowStorage(clock)
    inner.write("k", io.BytesIO(b"123456789"))
    with capture_logs() as entries:
        reader = Logging(inner).read("k")
        assert reader.read(3) == b"123"
        reader.close()
        reader.close()
    entry = only(entries)
    assert entry["bytes"] == 3
    assert entry["outcome"] == "ok"
    assert entry["duration_ms"] == 1000.0


def test_read_logs_when_an_abandoned_stream_is_collected(memory: MemoryBackend) -> None:
    with capture_logs() as entries:
        reader = Logging(memory).read("db/a.dump")
        assert reader.read(1) == b"a"
        del reader
        gc.collect()
    assert only(entries)["bytes"] == 1


def test_read_logs_an_error_raised_mid_stream_and_re_raises_it(clock: Clock) -> None:
    inner = SlowStorage(clock, fail_after=6)
    inner.write("k", io.BytesIO(b"123456789"))
    with capture_logs() as entries:
        reader = Logging(inner).read("k")
        assert reader.read(3) == b"123"
        assert reader.read(3) == b"456"
        with pytest.raises(ConnectionResetError):
            reader.read(3)
        reader.close()
    entry = only(entries)
    assert entry["outcome"] == "error"
    assert entry["error"] == "ConnectionResetError"
    assert entry["bytes"] == 6
    assert entry["log_level"] == "error"


def test_reading_zero_bytes_is_not_the_end_of_the_stream(memory: MemoryBackend) -> None:
    with capture_logs() as entries:
        reader = Logging(memory).read("db/a.dump")
        assert reader.read(0) == b""
        assert entries == []
        assert reader.read(None) == b"aaaa"
        assert only(entries)["bytes"] == 4
        assert reader.read() == b""
        reader.close()
    assert len(entries) == 1


def test_readinto_counts_the_bytes_delivered(memory: MemoryBackend) -> None:
    buffer = bytearray(3)
    with capture_logs() as entries:
        reader = Logging(memory).read("db/a.dump")
        assert reader.readinto(buffer) == 3
        assert reader.readinto(buffer) == 1
        assert reader.readinto(buffer) == 0
    assert only(entries)["bytes"] == 4


def test_read_returns_a_context_manager_that_logs_on_exit(memory: MemoryBackend) -> None:
    with capture_logs() as entries:
        with Logging(memory).read("db/a.dump") as file:
            assert file.read(2) == b"aa"
        assert only(entries)["bytes"] == 2


def test_stream_read_logs_when_exhausted_with_the_transfer_time(clock: Clock) -> None:
    inner = SlowStorage(clock)
    inner.write("k", io.BytesIO(b"12345678"))
    with capture_logs() as entries:
        chunks = Logging(inner).stream_read("k")
        assert next(chunks) == b"123"
        assert entries == []
        assert list(chunks) == [b"456", b"78"]
    entry = only(entries)
    assert entry["bytes"] == 8
    assert entry["duration_ms"] == 4000.0


def test_stream_read_logs_once_when_closed_after_some_chunks(clock: Clock) -> None:
    inner = SlowStorage(clock)
    inner.write("k", io.BytesIO(b"12345678"))
    with capture_logs() as entries:
        chunks = Logging(inner).stream_read("k")
        assert next(chunks) == b"123"
        chunks.close()  # type: ignore[attr-defined]
        chunks.close()  # type: ignore[attr-defined]
        with pytest.raises(StopIteration):
            next(chunks)
    entry = only(entries)
    assert entry["bytes"] == 3
    assert entry["outcome"] == "ok"


def test_stream_read_logs_when_closed_before_the_first_chunk(memory: MemoryBackend) -> None:
    with capture_logs() as entries:
        chunks = Logging(memory).stream_read("db/a.dump")
        chunks.close()  # type: ignore[attr-defined]
    assert only(entries)["bytes"] == 0


def test_stream_read_closes_the_storage_iterator_when_closed(clock: Clock) -> None:
    inner = SlowStorage(clock)
    inner.write("k", io.BytesIO(b"12345678"))
    inner_chunks = inner.stream_read("k")
    next(inner_chunks)

    class Handing(MemoryBackend):
        def stream_read(self, path: str) -> Iterator[bytes]:
            return inner_chunks

    with capture_logs():
        Logging(Handing()).stream_read("k").close()  # type: ignore[attr-defined]
    assert inner_chunks.gi_frame is None  # type: ignore[attr-defined]  # the generator finished


@pytest.mark.parametrize("started", [False, True], ids=["unstarted", "started"])
def test_stream_read_logs_when_an_abandoned_iterator_is_collected(
    memory: MemoryBackend, started: bool
) -> None:
    with capture_logs() as entries:
        chunks = Logging(memory).stream_read("db/a.dump")
        if started:
            next(chunks)
        del chunks
        gc.collect()
    assert only(entries)["bytes"] == (4 if started else 0)


def test_stream_read_logs_an_error_raised_mid_stream(clock: Clock) -> None:
    inner = SlowStorage(clock, fail_after=3)
    inner.write("k", io.BytesIO(b"12345678"))
    with capture_logs() as entries:
        chunks = Logging(inner).stream_read("k")
        assert next(chunks) == b"123"
        with pytest.raises(ConnectionResetError):
            next(chunks)
    entry = only(entries)
    assert entry["error"] == "ConnectionResetError"
    assert entry["bytes"] == 3


def test_stream_read_logs_an_error_of_a_lazy_storage_at_the_first_chunk() -> None:
    class Lazy(MemoryBackend):
        def stream_read(self, path: str) -> Iterator[bytes]:
            raise FileNotFoundError(path)
            yield b""  # a generator: nothing runs before the first next()

    with capture_logs() as entries:
        chunks = Logging(Lazy()).stream_read("missing")
        assert entries == []
        with pytest.raises(FileNotFoundError):
            next(chunks)
    entry = only(entries)
    assert entry["error"] == "FileNotFoundError"
    assert entry["bytes"] == 0


# Writes count what the storage took.


class PipeLike(io.RawIOBase):
    """A non-seekable input."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._data.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class Rewinding(MemoryBackend):
    """Reads the content twice, rewinding in between, like a retrying upload,
    and records what it learned about the content."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, object] = {}

    def write(self, path: str, content: IO[bytes]) -> None:
        self.seen["seekable"] = content.seekable()
        if content.seekable():
            start = content.tell()
            content.read(2)
            content.seek(start)
            self.seen["restart"] = content.tell()
        super().write(path, content)


def test_write_counts_the_bytes_of_a_file_written_to_a_local_backend(tmp_path: Path) -> None:
    source = tmp_path / "dump"
    source.write_bytes(b"x" * 300_000)
    storage = Logging(LocalFileSystemBackend(tmp_path / "snaps"))
    with capture_logs() as entries, source.open("rb") as content:
        storage.write("db/dump", content)
    assert only(entries)["bytes"] == 300_000
    assert (tmp_path / "snaps" / "db" / "dump").read_bytes() == b"x" * 300_000


def test_write_never_closes_the_callers_content(memory: MemoryBackend) -> None:
    content = io.BytesIO(b"abc")
    with capture_logs():
        Logging(memory).write("k", content)
    gc.collect()
    assert not content.closed
    content.seek(0)
    assert content.read() == b"abc"


def test_write_counts_once_when_the_storage_rewinds_the_content() -> None:
    inner = Rewinding()
    content = io.BytesIO(b"skip:" + b"0123456789")
    content.seek(5)
    with capture_logs() as entries:
        Logging(inner).write("k", content)
    assert inner.seen == {"seekable": True, "restart": 5}
    assert inner.read("k").read() == b"0123456789"
    assert only(entries)["bytes"] == 10


def test_write_passes_on_that_a_pipe_cannot_seek() -> None:
    inner = Rewinding()
    with capture_logs() as entries:
        Logging(inner).write("k", PipeLike(b"0123456789"))  # type: ignore[arg-type]
    assert inner.seen["seekable"] is False
    assert inner.read("k").read() == b"0123456789"
    assert only(entries)["bytes"] == 10


def test_write_logs_the_bytes_taken_before_a_failure() -> None:
    class Broken(MemoryBackend):
        def write(self, path: str, content: IO[bytes]) -> None:
            content.read(4)
            raise OSError("disk full")

    with capture_logs() as entries, pytest.raises(OSError, match="disk full"):
        Logging(Broken()).write("k", io.BytesIO(b"0123456789"))
    entry = only(entries)
    assert entry["bytes"] == 4
    assert entry["error"] == "OSError"


def test_stream_write_logs_the_bytes_taken_before_a_failure() -> None:
    class Broken(MemoryBackend):
        def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
            next(chunks)
            raise OSError("disk full")

    with capture_logs() as entries, pytest.raises(OSError, match="disk full"):
        Logging(Broken()).stream_write("k", iter([b"abc", b"def"]))
    assert only(entries)["bytes"] == 3


# Content and secrets.


def test_content_is_never_logged(memory: MemoryBackend) -> None:
    content = b"CONTENT-" + SECRET.encode()
    storage = Logging(memory)
    with capture_logs() as entries:
        storage.write("k", io.BytesIO(content))
        storage.read("k").read()
        list(storage.stream_read("k"))
        storage.stream_write("j", iter([content]))
    assert len(entries) == 4
    assert SECRET not in repr(entries)


# Loggers.


def test_a_bound_logger_adds_its_context_to_every_entry(memory: MemoryBackend) -> None:
    logger = structlog.get_logger("audit").bind(tenant="acme", request_id="r-1")
    storage = Logging(memory, logger=logger)
    with capture_logs() as entries:
        storage.exists("db/a.dump")
        storage.list("")
        with pytest.raises(FileNotFoundError):
            storage.read("missing")
        storage.read("db/a.dump").read()
    assert len(entries) == 4
    for entry in entries:
        assert entry["tenant"] == "acme"
        assert entry["request_id"] == "r-1"


def test_a_logger_given_context_lazily_follows_a_configuration_made_later(
    memory: MemoryBackend, restore_structlog: None
) -> None:
    structlog.reset_defaults()  # a project that has not configured structlog yet
    lazy = Logging(memory, logger=structlog.get_logger("audit", tenant="acme"))
    eager = Logging(memory, logger=structlog.get_logger("audit").bind(tenant="acme"))
    seen: list[tuple[str, str]] = []

    def keep(logger: Any, name: str, event: dict[str, Any]) -> Any:
        seen.append((event["path"], event["tenant"]))
        raise structlog.DropEvent

    structlog.configure(processors=[keep])  # the project configures structlog now
    lazy.exists("db/a.dump")
    eager.exists("db/b.dump")  # assembled by bind() under the defaults: never seen
    assert seen == [("db/a.dump", "acme")]


def test_the_logger_is_keyword_only(memory: MemoryBackend) -> None:
    with pytest.raises(TypeError):
        Logging(memory, structlog.get_logger())  # type: ignore[call-overload]


def test_entries_go_to_the_django_snapshots_storage_logger_by_default(
    memory: MemoryBackend, caplog: pytest.LogCaptureFixture, restore_structlog: None
) -> None:
    # Built before structlog is configured: the project's configuration,
    # whenever it happens, decides where the entries go.
    storage = Logging(memory)
    structlog.configure(
        processors=[structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    with caplog.at_level(logging.INFO, logger="django_snapshots.storage"):
        storage.write("k", io.BytesIO(b"abc"))
        with pytest.raises(FileNotFoundError):
            storage.read("missing")
    records = [r for r in caplog.records if r.name == "django_snapshots.storage"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "snapshots.storage.write"),
        (logging.ERROR, "snapshots.storage.read"),
    ]
    assert records[0].bytes == 3  # type: ignore[attr-defined]
    assert records[1].error == "FileNotFoundError"  # type: ignore[attr-defined]


def test_the_logger_is_assembled_once_per_configuration_not_per_entry(
    memory: MemoryBackend, restore_structlog: None
) -> None:
    made: list[structlog.ReturnLogger] = []

    def factory(*args: Any) -> structlog.ReturnLogger:
        made.append(structlog.ReturnLogger())
        return made[-1]

    storage = Logging(memory)
    structlog.configure(processors=[], logger_factory=factory)
    storage.exists("db/a.dump")
    storage.list("db/")
    storage.read("db/a.dump").read()
    assert len(made) == 1
    structlog.configure(logger_factory=factory)  # the same factory, set again
    storage.exists("db/a.dump")
    assert len(made) == 1
    structlog.configure(logger_factory=lambda *args: factory(*args))
    storage.exists("db/a.dump")
    storage.exists("db/b.dump")
    assert len(made) == 2


def test_a_configuration_changed_after_the_first_entry_takes_effect(
    memory: MemoryBackend, restore_structlog: None
) -> None:
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []

    storage = Logging(memory)
    structlog.configure(processors=[_keeping(first)], wrapper_class=structlog.BoundLogger)
    storage.exists("db/a.dump")
    structlog.configure(processors=[_keeping(second)])
    storage.exists("db/b.dump")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    storage.exists("db/c.jpg")  # now dropped by level
    with capture_logs() as captured:  # changes the processors in place
        storage.exists("media/c.jpg")
    assert [entry["path"] for entry in first] == ["db/a.dump"]
    assert [entry["path"] for entry in second] == ["db/b.dump"]
    assert captured == []  # still dropped by level: capture_logs keeps the wrapper class
    structlog.configure(wrapper_class=structlog.BoundLogger)
    with capture_logs() as captured:
        storage.exists("media/c.jpg")
    assert [entry["path"] for entry in captured] == ["media/c.jpg"]


def test_a_configuration_made_by_another_thread_during_assembly_takes_effect_at_the_next_entry(
    memory: MemoryBackend, restore_structlog: None
) -> None:
    assembling, configured = threading.Event(), threading.Event()

    class Slow(structlog.BoundLogger):
        """Holds the first assembly until another thread has configured structlog."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if not assembling.is_set():
                assembling.set()
                configured.wait(timeout=30)

    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []

    structlog.configure(processors=[_keeping(before)], wrapper_class=Slow)
    storage = Logging(memory)
    first = threading.Thread(target=storage.exists, args=("db/a.dump",))
    first.start()
    assert assembling.wait(timeout=30)
    structlog.configure(processors=[_keeping(after)])  # while the first entry assembles
    configured.set()
    first.join(timeout=30)
    storage.exists("db/b.dump")
    storage.exists("media/c.jpg")
    # The first entry went by the configuration it was assembled under; the
    # next ones by the new one, not by the older logger kept until the next
    # structlog.configure().
    assert [entry["path"] for entry in before] == ["db/a.dump"]
    assert [entry["path"] for entry in after] == ["db/b.dump", "media/c.jpg"]


def test_the_library_never_configures_structlog(tmp_path: Path) -> None:
    code = (
        "import io, structlog, django_snapshots\n"
        "from django_snapshots.storage import Logging, MemoryBackend, Prefix\n"
        "s = Logging(Prefix(MemoryBackend(), 't'))\n"
        "s.write('k', io.BytesIO(b'x'))\n"
        "s.read('k').read()\n"
        "print(structlog.is_configured())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.stdout.strip().splitlines()[-1] == "False"


# The storage contract holds through the wrapper.


class TestLoggingOverMemoryBackend(StorageConformance):
    @pytest.fixture
    def storage(self) -> Iterator[Logging]:
        with capture_logs():
            yield Logging(MemoryBackend())

    def stack_over(self, storage: Any) -> Logging:
        return Logging(storage, logger=_silent())


class TestLoggingOverLocalFileSystemBackend(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Logging]:
        with capture_logs():
            yield Logging(LocalFileSystemBackend(tmp_path))

    def stack_over(self, storage: Any) -> Logging:
        return Logging(storage, logger=_silent())


def _silent() -> Any:
    return structlog.wrap_logger(structlog.ReturnLogger())


def _keeping(entries: list[dict[str, Any]]) -> Any:
    """A structlog processor that adds each entry to *entries* and drops it."""

    def processor(logger: Any, name: str, event: dict[str, Any]) -> Any:
        entries.append(event)
        raise structlog.DropEvent

    return processor


def test_exists_entries_say_whether_the_key_was_found() -> None:
    storage = Logging(MemoryBackend())
    with capture_logs() as entries:
        storage.write("present", io.BytesIO(b"x"))
        storage.exists("present")
        storage.exists("absent")
    found = [entry["found"] for entry in entries if entry["op"] == "exists"]
    assert found == [True, False]


def test_read_entries_say_whether_the_stream_was_read_to_its_end() -> None:
    storage = Logging(MemoryBackend())
    with capture_logs() as entries:
        storage.write("k", io.BytesIO(b"0123456789"))
        with storage.read("k") as stream:
            stream.read(3)
        with storage.read("k") as stream:
            stream.read()
        chunks = storage.stream_read("k")
        chunks.close()
        assert b"".join(storage.stream_read("k")) == b"0123456789"
    reads = [
        (entry["op"], entry["bytes"], entry["complete"])
        for entry in entries
        if entry["op"] in ("read", "stream_read")
    ]
    assert reads == [
        ("read", 3, False),
        ("read", 10, True),
        ("stream_read", 0, False),
        ("stream_read", 10, True),
    ]


class _Leaving(MemoryBackend):
    """A backend whose crashed writes left one piece under tenant acme/ and
    one under acmecorp/."""

    def cleanup(
        self, prefix: str = "", *, older_than: timedelta, dry_run: bool = False
    ) -> list[Leftover]:
        when = datetime.now(timezone.utc)
        names = ["acme/db/x\\tmp", "acmecorp/y\\tmp"]
        return [Leftover(name, "temporary file", when) for name in names if name.startswith(prefix)]


def test_cleanup_is_audited_with_the_leftovers_it_removed() -> None:
    storage = Logging(Prefix(_Leaving(), "acme"))
    with capture_logs() as entries:
        storage.cleanup("db/", older_than="2h")
    [entry] = entries
    assert entry["event"] == "snapshots.storage.cleanup"
    assert entry["log_level"] == "info"
    assert (entry["op"], entry["outcome"], entry["prefix"]) == ("cleanup", "ok", "db/")
    assert (entry["older_than_s"], entry["dry_run"], entry["count"]) == (7200.0, False, 1)
    assert entry["leftovers"] == ["db/x\\tmp"]
    assert entry["storage"] == "Prefix(MemoryBackend(), 'acme')"


def test_a_refused_cleanup_is_audited_as_an_error() -> None:
    storage = Logging(_Leaving())
    with capture_logs() as entries, pytest.raises(SnapshotStoragePathError):
        storage.cleanup("../other/", dry_run=True)
    [entry] = entries
    assert (entry["op"], entry["outcome"], entry["log_level"]) == ("cleanup", "error", "error")
    assert entry["error"] == "SnapshotStoragePathError"
    assert entry["dry_run"] is True

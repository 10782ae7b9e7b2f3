"""Tests for the Telemetry wrapper (OpenTelemetry spans and metrics)."""

from __future__ import annotations

import gc
import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from django_snapshots.exceptions import SnapshotStorageError, SnapshotStoragePathError
from django_snapshots.storage import MemoryBackend, Prefix, RcloneBackend
from django_snapshots.storage.cleanup import Leftover
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.protocols import AdvancedSnapshotStorage
from django_snapshots.storage.wrappers.telemetry import (
    ATTRIBUTES,
    METRICS,
    AdvancedTelemetry,
    Telemetry,
)
from django_snapshots.testing import StorageConformance, assert_intercepts_every_method
from tests.conftest import S3Bucket
from tests.test_rclone import s3_backend
from tests.test_retry import BasicMemory

SECRET = "hunter2-do-not-export"
NS = "snapshots.storage."
COMMON = {NS + "operation", NS + "outcome", NS + "stack"}


class Otel:
    """An SDK tracer provider and meter provider that export to memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def wrap(self, storage: Any, **options: Any) -> Any:
        return Telemetry(
            storage,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **options,
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def only_span(self) -> ReadableSpan:
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def points(self) -> dict[str, list[Any]]:
        """Every data point exported, by metric name."""
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def exported_text(self) -> str:
        """Everything exported, spans and metrics, as one text to search."""
        spans = [span.to_json() for span in self.spans()]
        data = self.reader.get_metrics_data()
        return "\n".join(spans) + "\n" + (data.to_json() if data is not None else "")


@pytest.fixture
def otel() -> Otel:
    return Otel()


def stored() -> MemoryBackend:
    storage = MemoryBackend()
    storage.write("db/a.dump", io.BytesIO(b"aaaa"))
    storage.write("db/b.dump", io.BytesIO(b"bb"))
    storage.write("media/c.jpg", io.BytesIO(b"c"))
    return storage


def basic_stored() -> BasicMemory:
    storage = BasicMemory()
    storage.write("db/a.dump", io.BytesIO(b"aaaa"))
    storage.write("db/b.dump", io.BytesIO(b"bb"))
    storage.write("media/c.jpg", io.BytesIO(b"c"))
    return storage


# One span per operation, with the documented attributes.

OPERATIONS: dict[str, tuple[Callable[[Any], object], dict[str, Any]]] = {
    "write": (
        lambda s: s.write("db/new.dump", io.BytesIO(b"12345")),
        {NS + "key": "db/new.dump", NS + "bytes": 5},
    ),
    "read": (
        lambda s: s.read("db/a.dump").read(),
        {NS + "key": "db/a.dump", NS + "bytes": 4, NS + "complete": True},
    ),
    "list": (lambda s: s.list("db/"), {NS + "prefix": "db/", NS + "count": 2}),
    "delete": (lambda s: s.delete("db/b.dump"), {NS + "key": "db/b.dump"}),
    "exists": (
        lambda s: s.exists("db/a.dump"),
        {NS + "key": "db/a.dump", NS + "found": True},
    ),
    "stream_read": (
        lambda s: list(s.stream_read("db/a.dump")),
        {NS + "key": "db/a.dump", NS + "bytes": 4, NS + "complete": True},
    ),
    "stream_write": (
        lambda s: s.stream_write("db/new.dump", iter([b"12", b"345", b"6"])),
        {NS + "key": "db/new.dump", NS + "bytes": 6},
    ),
    "atomic_move": (
        lambda s: s.atomic_move("db/a.dump", "db/z.dump"),
        {NS + "source.key": "db/a.dump", NS + "destination.key": "db/z.dump"},
    ),
    "recursive_list": (lambda s: s.recursive_list(""), {NS + "prefix": "", NS + "count": 3}),
    "sync": (
        lambda s: s.sync("db/", "copy/"),
        {NS + "source.prefix": "db/", NS + "destination.prefix": "copy/"},
    ),
    "cleanup": (
        lambda s: s.cleanup("db/", older_than=0, dry_run=True),
        {NS + "prefix": "db/", NS + "count": 0, NS + "dry_run": True},
    ),
}
BASIC = ("read", "write", "list", "delete", "exists")
DIRECTIONS = {"read": "read", "stream_read": "read", "write": "write", "stream_write": "write"}
# (operation, tier): every operation on the advanced tier, the basic ones on both.
CASES = [(op, "advanced") for op in sorted(OPERATIONS)] + [(op, "basic") for op in BASIC]


def below(tier: str) -> Any:
    return stored() if tier == "advanced" else basic_stored()


@pytest.mark.parametrize(("op", "tier"), CASES)
def test_every_operation_records_one_span_with_its_attributes(
    op: str, tier: str, otel: Otel
) -> None:
    call, expected = OPERATIONS[op]
    storage = otel.wrap(below(tier))
    call(storage)
    span = otel.only_span()
    assert span.name == f"snapshots.storage.{op}"
    assert span.kind is trace.SpanKind.INTERNAL
    assert dict(span.attributes or {}) == {
        NS + "operation": op,
        NS + "outcome": "ok",
        NS + "stack": "MemoryBackend()" if tier == "advanced" else "BasicMemory()",
        **expected,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events
    assert set(span.attributes or {}) <= set(ATTRIBUTES)


@pytest.mark.parametrize(("op", "tier"), CASES)
def test_every_operation_records_its_metrics(op: str, tier: str, otel: Otel) -> None:
    call, expected = OPERATIONS[op]
    call(otel.wrap(below(tier)))
    points = otel.points()
    [count] = points[NS + "operations"]
    assert dict(count.attributes) == {NS + "operation": op, NS + "outcome": "ok"}
    assert count.value == 1
    [duration] = points[NS + "duration"]
    assert dict(duration.attributes) == {NS + "operation": op}
    assert duration.count == 1
    assert 0 <= duration.sum < 5
    if op in DIRECTIONS:
        [moved] = points[NS + "bytes"]
        assert dict(moved.attributes) == {NS + "operation": op, NS + "direction": DIRECTIONS[op]}
        assert moved.value == expected[NS + "bytes"]
    else:
        assert NS + "bytes" not in points


def test_the_metrics_have_the_documented_names_units_and_kinds(otel: Otel) -> None:
    storage = otel.wrap(stored())
    storage.read("db/a.dump").read()
    data = otel.reader.get_metrics_data()
    assert data is not None
    [scope] = data.resource_metrics[0].scope_metrics
    assert scope.scope.name == "django_snapshots.storage"
    units = {metric.name: metric.unit for metric in scope.metrics}
    assert units == {name: unit for name, (_, unit, _) in METRICS.items()}
    kinds = {metric.name: type(metric.data).__name__ for metric in scope.metrics}
    assert kinds == {
        NS + "operations": "Sum",
        NS + "duration": "Histogram",
        NS + "bytes": "Sum",
    }
    for metric in scope.metrics:
        if metric.name != NS + "duration":
            assert metric.data.is_monotonic


def test_durations_fall_in_buckets_made_for_seconds(otel: Otel) -> None:
    otel.wrap(stored()).exists("db/a.dump")
    [duration] = otel.points()[NS + "duration"]
    # The SDK's default buckets (0, 5, 10, ... 10000) are for milliseconds:
    # every storage operation would land in the first one.
    bounds = duration.explicit_bounds
    assert any(0 < bound <= 0.001 for bound in bounds)
    assert any(0.1 <= bound <= 1 for bound in bounds)
    assert max(bounds) >= 600


def test_operations_still_do_what_the_storage_does(otel: Otel) -> None:
    storage = otel.wrap(MemoryBackend())
    storage.write("k", io.BytesIO(b"data"))
    assert storage.read("k").read() == b"data"
    assert b"".join(storage.stream_read("k")) == b"data"
    assert storage.list("") == ["k"]
    assert storage.exists("k")
    assert not storage.exists("other")
    storage.atomic_move("k", "m")
    assert storage.recursive_list("") == ["m"]
    storage.delete("m")
    assert storage.list("") == []


# Spans nest: under the caller's span, and over the storage below.


def test_spans_are_children_of_the_callers_current_span(otel: Otel) -> None:
    storage = otel.wrap(stored())
    tracer = otel.tracer_provider.get_tracer("the-project")
    with tracer.start_as_current_span("nightly backup") as parent:
        for op in sorted(OPERATIONS):
            OPERATIONS[op][0](storage)
            if op == "delete":
                storage.write("db/b.dump", io.BytesIO(b"bb"))
            if op == "atomic_move":
                storage.atomic_move("db/z.dump", "db/a.dump")
    spans = [s for s in otel.spans() if s.name != "nightly backup"]
    ours = {s.name for s in spans}
    assert {f"snapshots.storage.{op}" for op in OPERATIONS} <= ours
    context = parent.get_span_context()
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == context.span_id
        assert span.context is not None
        assert span.context.trace_id == context.trace_id


def test_streams_read_after_the_callers_span_ended_still_belong_to_it(otel: Otel) -> None:
    storage = otel.wrap(stored())
    tracer = otel.tracer_provider.get_tracer("the-project")
    with tracer.start_as_current_span("restore") as parent:
        stream = storage.read("db/a.dump")
        chunks = storage.stream_read("db/a.dump")
    assert stream.read() == b"aaaa"
    assert b"".join(chunks) == b"aaaa"
    read, stream_read = sorted(
        (s for s in otel.spans() if s.name.startswith(NS)), key=lambda s: s.name
    )
    for span in (read, stream_read):
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id


def test_the_storage_below_runs_inside_the_operations_span(otel: Otel) -> None:
    inner = otel.wrap(stored())
    outer = otel.wrap(Prefix(inner, "db"))
    outer.write("new.dump", io.BytesIO(b"x"))
    outer.read("a.dump").read()
    spans = otel.spans()
    assert [s.name for s in spans] == [NS + "write", NS + "write", NS + "read", NS + "read"]
    for child, parent in ((spans[0], spans[1]), (spans[2], spans[3])):
        assert child.parent is not None
        assert parent.context is not None
        assert child.parent.span_id == parent.context.span_id
    keys = [(span.attributes or {}).get(NS + "key") for span in spans]
    assert keys == ["db/new.dump", "new.dump", "db/a.dump", "a.dump"]


def test_the_callers_span_is_current_again_after_each_operation(otel: Otel) -> None:
    storage = otel.wrap(stored())
    tracer = otel.tracer_provider.get_tracer("the-project")
    with tracer.start_as_current_span("backup") as parent:
        storage.exists("db/a.dump")
        with pytest.raises(FileNotFoundError):
            storage.read("missing")
        storage.read("db/a.dump").close()
        assert trace.get_current_span() is parent
    assert trace.get_current_span() is trace.INVALID_SPAN


# Failures: the error status and the class name, never the message.


class Failing:
    """Every operation fails with a message that quotes a secret."""

    def _fail(self, *args: Any) -> Any:
        raise SnapshotStorageError(f"denied: https://user:{SECRET}@example.com/bucket")

    read = write = list = delete = exists = _fail
    stream_read = stream_write = atomic_move = recursive_list = sync = _fail


FAILING_CALLS: dict[str, Callable[[Any], object]] = {
    "read": lambda s: s.read("k"),
    "write": lambda s: s.write("k", io.BytesIO(b"data")),
    "list": lambda s: s.list(""),
    "delete": lambda s: s.delete("k"),
    "exists": lambda s: s.exists("k"),
    "stream_read": lambda s: s.stream_read("k"),
    "stream_write": lambda s: s.stream_write("k", iter([b"data"])),
    "atomic_move": lambda s: s.atomic_move("k", "m"),
    "recursive_list": lambda s: s.recursive_list(""),
    "sync": lambda s: s.sync("a/", "b/"),
}


@pytest.mark.parametrize("op", sorted(FAILING_CALLS))
def test_a_failure_is_recorded_once_by_class_name_and_re_raised_unchanged(
    op: str, otel: Otel
) -> None:
    storage = otel.wrap(Failing())
    with pytest.raises(SnapshotStorageError) as raised:
        FAILING_CALLS[op](storage)
    assert SECRET in str(raised.value)  # the caller still gets the whole story
    span = otel.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "SnapshotStorageError"
    assert span.attributes[NS + "outcome"] == "error"
    assert not span.events  # no exception event, which would carry the message
    [count] = otel.points()[NS + "operations"]
    assert dict(count.attributes) == {NS + "operation": op, NS + "outcome": "error"}
    assert count.value == 1
    assert SECRET not in otel.exported_text()
    assert "denied" not in otel.exported_text()


def test_an_interrupt_is_recorded_and_re_raised(otel: Otel) -> None:
    class Interrupted(MemoryBackend):
        def list(self, prefix: str) -> list[str]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        otel.wrap(Interrupted()).list("")
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "KeyboardInterrupt"


def test_a_refused_key_is_recorded_as_an_error_of_its_type(otel: Otel) -> None:
    with pytest.raises(SnapshotStoragePathError):
        otel.wrap(MemoryBackend()).read(b"db/x")  # type: ignore[arg-type]
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "SnapshotStoragePathError"
    assert span.attributes[NS + "key"] == "b'db/x'"


def test_write_records_the_bytes_taken_before_a_failure(otel: Otel) -> None:
    class Broken(MemoryBackend):
        def write(self, path: str, content: IO[bytes]) -> None:
            content.read(3)
            raise ConnectionResetError("reset")

    with pytest.raises(ConnectionResetError):
        otel.wrap(Broken()).write("k", io.BytesIO(b"123456"))
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 3
    [moved] = otel.points()[NS + "bytes"]
    assert moved.value == 3


def test_stream_write_records_the_bytes_taken_before_a_failure(otel: Otel) -> None:
    class Broken(MemoryBackend):
        def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
            next(chunks)
            raise ConnectionResetError("reset")

    with pytest.raises(ConnectionResetError):
        otel.wrap(Broken()).stream_write("k", iter([b"12", b"345"]))
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 2
    assert span.attributes["error.type"] == "ConnectionResetError"


# Streams: the span ends once, when the stream ends, fails or is closed.


def test_read_ends_its_span_when_the_stream_is_exhausted(otel: Otel) -> None:
    stream = otel.wrap(stored()).read("db/a.dump")
    assert otel.spans() == []
    assert stream.read(4) == b"aaaa"
    assert stream.read(4) == b""
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "complete"] is True
    stream.close()
    assert len(otel.spans()) == 1


def test_read_ends_its_span_once_when_closed_early(otel: Otel) -> None:
    storage = otel.wrap(stored())
    with storage.read("db/a.dump") as stream:
        assert stream.read(1) == b"a"
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 1
    assert span.attributes[NS + "complete"] is False
    assert span.status.status_code is StatusCode.UNSET
    [count] = otel.points()[NS + "operations"]
    assert count.value == 1
    [moved] = otel.points()[NS + "bytes"]
    assert moved.value == 1


def test_read_ends_its_span_when_an_abandoned_stream_is_collected(otel: Otel) -> None:
    storage = otel.wrap(stored())
    stream = storage.read("db/a.dump")
    stream.read(2)
    del stream
    gc.collect()
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 2
    assert span.attributes[NS + "complete"] is False


class BreaksMidStream(MemoryBackend):
    """Reads deliver 3 bytes, then fail."""

    def read(self, path: str) -> IO[bytes]:
        return io.BufferedReader(_Breaking(super().read(path)))

    def stream_read(self, path: str) -> Iterator[bytes]:
        yield b"abc"
        raise ConnectionResetError(f"reset by {SECRET}")


class _Breaking(io.RawIOBase):
    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._sent >= 3:
            raise ConnectionResetError(f"reset by {SECRET}")
        view = memoryview(buffer).cast("B")[: 3 - self._sent]
        data = self._source.read(len(view))
        view[: len(data)] = data
        self._sent += len(data)
        return len(data)


def test_read_records_a_failure_mid_stream_once_and_stays_failed(otel: Otel) -> None:
    storage = otel.wrap(BreaksMidStream())
    storage.write("k", io.BytesIO(b"abcdefgh"))
    otel.exporter.clear()
    stream = storage.read("k")
    assert stream.read(3) == b"abc"
    with pytest.raises(ConnectionResetError) as first:
        stream.read(3)
    with pytest.raises(ConnectionResetError) as again:
        stream.read(3)
    assert again.value is first.value
    stream.close()
    [span] = [s for s in otel.spans() if s.name == NS + "read"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ConnectionResetError"
    assert span.attributes[NS + "bytes"] == 3
    assert span.attributes[NS + "complete"] is False
    assert SECRET not in otel.exported_text()


def test_stream_read_records_a_failure_mid_stream_once_and_stays_failed(otel: Otel) -> None:
    chunks = otel.wrap(BreaksMidStream()).stream_read("k")
    assert next(chunks) == b"abc"
    with pytest.raises(ConnectionResetError) as first:
        next(chunks)
    with pytest.raises(ConnectionResetError) as again:
        next(chunks)
    assert again.value is first.value
    chunks.close()  # type: ignore[attr-defined]
    span = otel.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 3
    assert span.attributes[NS + "complete"] is False


def test_stream_read_ends_its_span_once_when_closed_after_some_chunks(otel: Otel) -> None:
    storage = otel.wrap(MemoryBackend())
    storage.write("k", io.BytesIO(b"x" * (3 * 1024 * 1024)))
    otel.exporter.clear()
    chunks = storage.stream_read("k")
    first = next(chunks)
    chunks.close()
    chunks.close()
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == len(first)
    assert span.attributes[NS + "complete"] is False


def test_stream_read_ends_its_span_when_closed_before_the_first_chunk(otel: Otel) -> None:
    storage = otel.wrap(stored())
    storage.stream_read("db/a.dump").close()
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 0


def test_stream_read_closes_the_storage_iterator_when_closed(otel: Otel) -> None:
    closed = []

    class Tracked(MemoryBackend):
        def stream_read(self, path: str) -> Iterator[bytes]:
            try:
                yield b"a"
                yield b"b"
            finally:
                closed.append(path)

    chunks = otel.wrap(Tracked()).stream_read("k")
    next(chunks)
    chunks.close()
    assert closed == ["k"]


def test_stream_read_ends_its_span_when_an_abandoned_iterator_is_collected(otel: Otel) -> None:
    storage = otel.wrap(stored())
    chunks = storage.stream_read("db/a.dump")
    del chunks
    gc.collect()
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "complete"] is False


class ShortReads(io.RawIOBase):
    """A raw stream that delivers at most 3 bytes per read, and counts its calls."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.readlines = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._data.read(min(3, len(view)))
        view[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        self.readlines += 1
        return self._data.readline(-1 if size is None else size)


def test_read_returns_full_reads_over_a_storage_that_reads_short(otel: Otel) -> None:
    class Short(MemoryBackend):
        def read(self, path: str) -> IO[bytes]:
            return ShortReads(b"0123456789")  # type: ignore[return-value]

    stream = otel.wrap(Short()).read("k")
    assert stream.read(7) == b"0123456"
    assert stream.read(7) == b"789"
    span = otel.only_span()  # the short read that reached the end ends the span
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 10
    assert span.attributes[NS + "complete"] is True
    assert stream.read(7) == b""


def test_readline_and_iteration_go_to_the_storages_own_readline(otel: Otel) -> None:
    source = ShortReads(b"one\ntwo\nthree\n")

    class Lines(MemoryBackend):
        def read(self, path: str) -> IO[bytes]:
            return source  # type: ignore[return-value]

    stream = otel.wrap(Lines()).read("k")
    assert stream.readline() == b"one\n"
    assert list(stream) == [b"two\n", b"three\n"]
    assert source.readlines == 4  # one per line, and one that found the end
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 14
    assert span.attributes[NS + "complete"] is True


def test_readinto_counts_the_bytes_delivered(otel: Otel) -> None:
    stream = otel.wrap(stored()).read("db/a.dump")
    buffer = bytearray(3)
    assert stream.readinto(buffer) == 3  # type: ignore[attr-defined]
    stream.close()
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes[NS + "bytes"] == 3


# record_keys=False: no key, prefix or tenant anywhere.


TENANT = "acme-tenant-name"
MARKER = "customer-invoices"


def every_operation(storage: Any) -> None:
    key = f"{MARKER}/db.dump"
    storage.write(key, io.BytesIO(b"data"))
    storage.read(key).read()
    storage.exists(key)
    storage.list(f"{MARKER}/")
    b"".join(storage.stream_read(key))
    storage.stream_write(f"{MARKER}/2.dump", iter([b"x"]))
    storage.atomic_move(f"{MARKER}/2.dump", f"{MARKER}/3.dump")
    storage.recursive_list(f"{MARKER}/")
    storage.sync(f"{MARKER}/", f"{MARKER}-copy/")
    storage.delete(key)
    for fails in (
        lambda: storage.read(f"{MARKER}/missing"),
        lambda: storage.read(f"{MARKER}/../escape"),
        lambda: storage.list(f"{MARKER}//"),
    ):
        with pytest.raises((FileNotFoundError, SnapshotStoragePathError)):
            fails()


def test_without_record_keys_no_key_prefix_or_tenant_is_exported(otel: Otel) -> None:
    storage = otel.wrap(Prefix(MemoryBackend(), TENANT), record_keys=False)
    every_operation(storage)
    spans = otel.spans()
    assert len(spans) == 13
    for span in spans:
        assert span.attributes is not None
        assert span.attributes[NS + "stack"] == "Prefix(MemoryBackend)"
        values = [str(v) for v in span.attributes.values()]
        values += [span.name, span.status.description or ""]
        values += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        for value in values:
            assert MARKER not in value, (span.name, value)
            assert TENANT not in value, (span.name, value)
        assert not {NS + "key", NS + "prefix"} & set(span.attributes)
    for name, points in otel.points().items():
        for point in points:
            for value in point.attributes.values():
                assert MARKER not in str(value), name
                assert TENANT not in str(value), name
    text = otel.exported_text()
    assert MARKER not in text
    assert TENANT not in text
    assert "error.type" in text  # the failures were exported, without their keys


def test_with_record_keys_the_same_operations_do_show_keys(otel: Otel) -> None:
    # The counterpart of the test above: it would pass vacuously if the
    # operations never exported a key.
    every_operation(otel.wrap(Prefix(MemoryBackend(), TENANT)))
    text = otel.exported_text()
    assert MARKER in text
    assert TENANT in text


def test_without_record_keys_the_stack_shows_class_names_only(otel: Otel, tmp_path: Path) -> None:
    local = LocalFileSystemBackend(tmp_path / "secret-location")
    storage = otel.wrap(Prefix(Telemetry(local), TENANT), record_keys=False)
    storage.exists("k")
    span = otel.spans()[-1]
    assert span.attributes is not None
    assert span.attributes[NS + "stack"] == "Prefix(Telemetry(LocalFileSystemBackend))"
    assert repr(storage).endswith(", record_keys=False)")


# Secrets of an rclone remote never reach an exporter.


def rclone_with_secret() -> RcloneBackend:
    # Built without any I/O: rclone runs only when an operation needs it.
    return RcloneBackend(
        "store:bucket",
        config={
            "type": "s3",
            "provider": "AWS",
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": SECRET,
        },
    )


@pytest.mark.parametrize("record_keys", [True, False])
def test_an_rclone_config_secret_is_never_exported(otel: Otel, record_keys: bool) -> None:
    storage = otel.wrap(rclone_with_secret(), record_keys=record_keys)
    with pytest.raises(SnapshotStoragePathError):
        storage.read("../escape")
    with pytest.raises(SnapshotStoragePathError):
        storage.write("a//b", io.BytesIO(b"x"))
    spans = otel.spans()
    assert len(spans) == 2
    assert spans[0].attributes is not None
    assert spans[0].attributes[NS + "stack"].startswith("RcloneBackend")
    assert SECRET not in otel.exported_text()


def test_real_rclone_operations_on_s3_export_no_secret(otel: Otel, s3_bucket: S3Bucket) -> None:
    storage = otel.wrap(s3_backend(s3_bucket))
    storage.write("db/x.dump", io.BytesIO(b"dump"))
    assert storage.read("db/x.dump").read() == b"dump"
    assert storage.list("db/") == ["db/x.dump"]
    with pytest.raises(FileNotFoundError):
        storage.read("db/missing").read()
    exported = otel.exported_text()
    assert len(otel.spans()) == 4
    assert "error.type" in exported
    for secret in (s3_bucket.server.secret_access_key, s3_bucket.server.access_key_id):
        assert secret not in exported


# Construction: tier, options, repr.


def test_the_tier_of_the_storage_is_kept() -> None:
    advanced = Telemetry(MemoryBackend())
    basic = Telemetry(BasicMemory())
    assert isinstance(advanced, AdvancedTelemetry)
    assert isinstance(advanced, AdvancedSnapshotStorage)
    assert not isinstance(basic, AdvancedSnapshotStorage)
    assert_intercepts_every_method(advanced)
    assert_intercepts_every_method(basic)


def test_the_repr_shows_the_stack_and_the_options() -> None:
    assert repr(Telemetry(MemoryBackend())) == "Telemetry(MemoryBackend())"
    assert repr(Telemetry(MemoryBackend(), record_keys=False)) == (
        "Telemetry(MemoryBackend(), record_keys=False)"
    )


def test_bad_options_are_refused_before_any_io() -> None:
    with pytest.raises(TypeError, match="record_keys must be True or False"):
        Telemetry(MemoryBackend(), record_keys="no")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        Telemetry(MemoryBackend(), object())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="needs a SnapshotStorage"):
        Telemetry(object())  # type: ignore[call-overload]


def test_the_stack_repr_is_computed_once_not_per_operation(otel: Otel) -> None:
    class Counted(MemoryBackend):
        reprs = 0

        def __repr__(self) -> str:
            Counted.reprs += 1
            return "Counted()"

    storage = otel.wrap(Counted())
    for _ in range(3):
        storage.exists("k")
    assert Counted.reprs == 1


def test_without_an_sdk_operations_work_and_leave_the_context_alone() -> None:
    seen = []

    class Watching(MemoryBackend):
        def exists(self, path: str) -> bool:
            seen.append(trace.get_current_span())
            return super().exists(path)

    storage = Telemetry(Watching())
    assert storage.exists("k") is False
    storage.write("k", io.BytesIO(b"v"))
    assert storage.read("k").read() == b"v"
    assert seen == [trace.INVALID_SPAN]


def test_the_documented_attribute_table_lists_every_attribute_recorded(otel: Otel) -> None:
    for op in sorted(OPERATIONS):
        OPERATIONS[op][0](otel.wrap(stored()))
    with pytest.raises(FileNotFoundError):
        otel.wrap(stored()).read("missing")
    recorded = {name for span in otel.spans() for name in (span.attributes or {})}
    assert recorded == set(ATTRIBUTES)


class Leaving(MemoryBackend):
    """A backend whose crashed writes left two pieces under tenant acme/
    and one under acmecorp/."""

    def cleanup(self, prefix: str = "", *, older_than: Any, dry_run: bool = False) -> list[Any]:
        names = ["acme/db/x\\tmp", "acme/y\\partial", "acmecorp/z\\tmp"]
        when = datetime.now(timezone.utc)
        return [Leftover(n, "temporary file", when) for n in names if n.startswith(prefix)]


def test_cleanup_records_how_many_leftovers_it_removed(otel: Otel) -> None:
    storage = otel.wrap(Prefix(Leaving(), "acme"))
    leftovers = storage.cleanup(older_than=0)
    assert [leftover.name for leftover in leftovers] == ["db/x\\tmp", "y\\partial"]
    span = otel.only_span()
    assert span.name == "snapshots.storage.cleanup"
    assert dict(span.attributes or {}) == {
        NS + "operation": "cleanup",
        NS + "outcome": "ok",
        NS + "stack": "Prefix(MemoryBackend(), 'acme')",
        NS + "prefix": "",
        NS + "count": 2,
        NS + "dry_run": False,
    }


def test_cleanup_without_keys_records_no_prefix(otel: Otel) -> None:
    storage = otel.wrap(Prefix(Leaving(), "acme"), record_keys=False)
    storage.cleanup("db/", older_than=0, dry_run=True)
    attributes = dict(otel.only_span().attributes or {})
    assert NS + "prefix" not in attributes
    assert "acme" not in repr(attributes)
    assert attributes[NS + "count"] == 1


def test_a_refused_cleanup_is_recorded_as_an_error(otel: Otel) -> None:
    storage = otel.wrap(Leaving())
    with pytest.raises(ValueError, match="must not be negative"):
        storage.cleanup(older_than=-5)
    span = otel.only_span()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"
    assert span.attributes[NS + "outcome"] == "error"


# The storage contract holds through the wrapper.


class TestTelemetryOverMemoryBackend(StorageConformance):
    @pytest.fixture
    def storage(self, otel: Otel) -> Any:
        return otel.wrap(MemoryBackend())

    def stack_over(self, storage: Any) -> Any:
        return Otel().wrap(storage)


class TestTelemetryOverLocalFileSystemBackend(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        return Telemetry(LocalFileSystemBackend(tmp_path))

    def stack_over(self, storage: Any) -> Any:
        return Telemetry(storage)


class TestTelemetryOverABasicStorage(StorageConformance):
    @pytest.fixture
    def storage(self, otel: Otel) -> Any:
        return otel.wrap(BasicMemory(), record_keys=False)

    def stack_over(self, storage: Any) -> Any:
        return Otel().wrap(storage, record_keys=False)


GLOBAL_PROVIDERS_SCRIPT = """
import io
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from django_snapshots.storage import MemoryBackend
from django_snapshots.storage.wrappers.telemetry import Telemetry

storage = Telemetry(MemoryBackend())  # built before the project sets its SDK
storage.write("k", io.BytesIO(b"data"))
exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
assert storage.read("k").read() == b"data"
print([span.name for span in exporter.get_finished_spans()])
data = reader.get_metrics_data()
print(sorted(m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics))
"""


def test_global_providers_set_after_the_stack_was_built_are_used() -> None:
    # In a child process: tests never set OpenTelemetry's global providers,
    # which can be set only once per process.
    result = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDERS_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    spans, metric_names = result.stdout.strip().splitlines()
    assert spans == "['snapshots.storage.read']"
    assert metric_names == str(sorted(METRICS))

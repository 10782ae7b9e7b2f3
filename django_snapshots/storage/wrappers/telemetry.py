"""The telemetry wrapper: one OpenTelemetry span and a few metrics per
storage operation.

    >>> import io
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> from django_snapshots.storage import MemoryBackend
    >>> from django_snapshots.storage import Telemetry
    >>> exporter = InMemorySpanExporter()
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(SimpleSpanProcessor(exporter))
    >>> storage = Telemetry(MemoryBackend(), tracer_provider=provider)
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> [span] = exporter.get_finished_spans()
    >>> span.name
    'snapshots.storage.write'
    >>> span.attributes["snapshots.storage.key"], span.attributes["snapshots.storage.bytes"]
    ('db/latest.dump', 4)

Each operation is one span named ``snapshots.storage.<operation>``, a child
of the caller's current span, and the storage below runs with it as the
current span (so a ``Telemetry`` layer lower in the stack, or an
instrumented client, nests under it).  Attributes (the keys of
``ATTRIBUTES``):

- ``snapshots.storage.operation`` and ``snapshots.storage.outcome``
  (``"ok"`` or ``"error"``); ``snapshots.storage.stack``, the ``repr`` of
  the stack below;
- ``snapshots.storage.key`` for single-key operations,
  ``snapshots.storage.prefix`` for listings,
  ``snapshots.storage.source.key`` and ``snapshots.storage.destination.key``
  for ``atomic_move``, ``snapshots.storage.source.prefix`` and
  ``snapshots.storage.destination.prefix`` for ``sync``;
- ``snapshots.storage.bytes`` for the four transfer operations,
  ``snapshots.storage.count`` for listings, ``snapshots.storage.found`` for
  ``exists``, ``snapshots.storage.complete`` for the two reads;
- on failure, ``error.type`` (OpenTelemetry's own attribute): the
  exception's class name.  The span's status is set to error, and the
  exception's message, which may quote a URL or a credential, is never
  recorded.  The exception reaches the caller unchanged.

With ``record_keys=False`` no key, prefix or tenant name is recorded:
the key and prefix attributes are left out, and the stack is recorded as
the class names of its layers (``Prefix(Checksum(LocalFileSystemBackend))``).

Metrics, through the meter ``django_snapshots.storage``:

- ``snapshots.storage.operations``, a counter of operations, by
  ``snapshots.storage.operation`` and ``snapshots.storage.outcome``;
- ``snapshots.storage.duration``, a histogram in seconds, by
  ``snapshots.storage.operation``;
- ``snapshots.storage.bytes``, a counter in bytes, by
  ``snapshots.storage.operation`` and ``snapshots.storage.direction``
  (``"read"`` or ``"write"``).

``read`` and ``stream_read`` hand out a stream; their span ends, and their
metrics are recorded, when that stream is exhausted, fails or is closed (or
is collected unclosed), with the bytes actually delivered.  The streams
keep the library's guarantees: full reads, fast ``readline``, and a
stream that raised stays failed.

Only ``opentelemetry-api`` is needed (the ``otel`` extra).  Without an
OpenTelemetry SDK configured, every span and instrument is a no-op and the
wrapper costs next to nothing.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast, overload

from django_snapshots.storage.cleanup import DEFAULT_OLDER_THAN, Leftover
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import (
    Finish,
    MeteredChunks,
    MeteredReader,
    _counted,
    _CountedContent,
    _Counter,
    check_binary_content,
)
from django_snapshots.storage.wrappers.base import StorageWrapper

try:
    from opentelemetry import context as _context
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
    from opentelemetry.metrics import _internal as _metrics_state
except ImportError as exc:  # the otel extra is not installed
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["AdvancedTelemetry", "Telemetry"]

T = TypeVar("T")

#: Name (and version) of the instrumentation scope of the tracer and the meter.
SCOPE = "django_snapshots.storage"

_NS = "snapshots.storage."
OPERATION = _NS + "operation"
OUTCOME = _NS + "outcome"
STACK = _NS + "stack"
KEY = _NS + "key"
PREFIX = _NS + "prefix"
SOURCE_KEY = _NS + "source.key"
DESTINATION_KEY = _NS + "destination.key"
SOURCE_PREFIX = _NS + "source.prefix"
DESTINATION_PREFIX = _NS + "destination.prefix"
BYTES = _NS + "bytes"
COUNT = _NS + "count"
FOUND = _NS + "found"
DRY_RUN = _NS + "dry_run"
COMPLETE = _NS + "complete"
DIRECTION = _NS + "direction"
ERROR_TYPE = "error.type"

#: The span attributes the wrapper records, and what they hold.
ATTRIBUTES = {
    OPERATION: "the operation: read, write, list, delete, exists, stream_read, ...",
    OUTCOME: '"ok" or "error"',
    STACK: "repr of the stack below (class names only with record_keys=False)",
    KEY: "the key (single-key operations)",
    PREFIX: "the prefix (list, recursive_list, cleanup)",
    SOURCE_KEY: "the key moved (atomic_move)",
    DESTINATION_KEY: "where it was moved (atomic_move)",
    SOURCE_PREFIX: "the prefix mirrored (sync)",
    DESTINATION_PREFIX: "the prefix mirrored to (sync)",
    BYTES: "bytes delivered or taken (read, write, stream_read, stream_write)",
    COUNT: "keys listed (list, recursive_list); leftovers removed, or found (cleanup)",
    DRY_RUN: "whether the cleanup only looked (cleanup)",
    FOUND: "whether the key exists (exists)",
    COMPLETE: "whether the stream was read to its end (read, stream_read)",
    ERROR_TYPE: "the exception's class name, on failure",
}

#: The metrics the wrapper records: name -> (instrument, unit, attributes).
METRICS = {
    _NS + "operations": ("counter", "{operation}", (OPERATION, OUTCOME)),
    _NS + "duration": ("histogram", "s", (OPERATION,)),
    _NS + "bytes": ("counter", "By", (OPERATION, DIRECTION)),
}

_OPERATIONS = (
    "read", "write", "list", "delete", "exists",
    "stream_read", "stream_write", "atomic_move", "recursive_list", "sync", "cleanup",
)  # fmt: skip
_SPAN_NAMES = {op: _NS + op for op in _OPERATIONS}
_DIRECTIONS = {"read": "read", "stream_read": "read", "write": "write", "stream_write": "write"}
# Metric attributes are built once: no operation allocates them.
_BY_OUTCOME = {
    (op, outcome): {OPERATION: op, OUTCOME: outcome}
    for op in _OPERATIONS
    for outcome in ("ok", "error")
}
_BY_OPERATION = {op: {OPERATION: op} for op in _OPERATIONS}
_BY_DIRECTION = {op: {OPERATION: op, DIRECTION: way} for op, way in _DIRECTIONS.items()}
# Seconds: from a local stat to an upload of many gigabytes.
_DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
_INSTALL_HINT = 'install the "otel" extra: pip install "django-snapshots[otel]"'


class Telemetry(StorageWrapper):
    """Trace every operation on *storage* as one OpenTelemetry span, and
    count operations, their durations and the bytes moved as metrics.

    *tracer_provider* and *meter_provider* default to OpenTelemetry's global
    providers, which are no-ops until the project configures an SDK; the
    library never configures one.  With *record_keys* ``False``, no key,
    prefix or tenant name appears in any span or metric.  Errors are recorded
    by class name only.

    ``Telemetry(storage)`` keeps the tier of *storage*.

    .. versionadded:: 0.1
    """

    _self_tracer: Tracer
    _self_operations: Counter
    _self_duration: Histogram
    _self_bytes: Counter
    _self_record_keys: bool
    _self_stack: str
    _self_global: bool

    if TYPE_CHECKING:
        # A type checker sees the tier through these overloads; at run time
        # StorageWrapper.__new__ picks the tier from the storage itself.  The
        # initializer is hidden from it, because mypy reads a constructor's
        # signature from __init__ rather than __new__ when a class defines both.
        @overload
        def __new__(
            cls,
            storage: AdvancedSnapshotStorage,
            /,
            *,
            tracer_provider: TracerProvider | None = None,
            meter_provider: MeterProvider | None = None,
            record_keys: bool = True,
        ) -> AdvancedTelemetry: ...
        @overload
        def __new__(
            cls,
            storage: SnapshotStorage,
            /,
            *,
            tracer_provider: TracerProvider | None = None,
            meter_provider: MeterProvider | None = None,
            record_keys: bool = True,
        ) -> Telemetry: ...
        def __new__(
            cls,
            storage: SnapshotStorage,
            /,
            *,
            tracer_provider: TracerProvider | None = None,
            meter_provider: MeterProvider | None = None,
            record_keys: bool = True,
        ) -> Any: ...

    else:

        def __init__(
            self, storage, /, *, tracer_provider=None, meter_provider=None, record_keys=True
        ):
            _check_options(record_keys)
            super().__init__(storage)
            _configure(self, storage, tracer_provider, meter_provider, record_keys)

    def _repr_options(self) -> list[str]:
        return [] if self._self_record_keys else ["record_keys=False"]

    def read(self, path: str) -> IO[bytes]:
        """Open *path*; the span ends when the returned stream ends or is closed."""
        if _quiet(self):
            return self.__wrapped__.read(path)
        source, finish = _traced_open(self, "read", self.__wrapped__.read, path)
        return cast("IO[bytes]", MeteredReader(source, finish))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store *content* at *path*, recording the bytes taken from it."""
        if _quiet(self):
            self.__wrapped__.write(path, content)
            return
        check_binary_content(content)
        counted = _CountedContent(content)
        span, start = _start(self, "write", {KEY: path})
        token = _enter(span)
        try:
            self.__wrapped__.write(path, cast("IO[bytes]", counted))
        except BaseException as exc:
            _fail(self, span, "write", start, exc, {BYTES: counted.high}, counted.high)
            raise
        finally:
            _leave(token)
        _succeed(self, span, "write", start, {BYTES: counted.high}, counted.high)

    def list(self, prefix: str) -> list[str]:
        """List the keys under *prefix*, recording how many there are."""
        if _quiet(self):
            return self.__wrapped__.list(prefix)
        return _traced_list(self, "list", self.__wrapped__.list, prefix)

    def delete(self, path: str) -> None:
        """Delete *path*."""
        if _quiet(self):
            self.__wrapped__.delete(path)
            return
        _traced_call(self, "delete", {KEY: path}, self.__wrapped__.delete, path)

    def exists(self, path: str) -> bool:
        """Tell whether *path* exists, recording what was found."""
        if _quiet(self):
            return self.__wrapped__.exists(path)
        span, start = _start(self, "exists", {KEY: path})
        token = _enter(span)
        try:
            found = self.__wrapped__.exists(path)
        except BaseException as exc:
            _fail(self, span, "exists", start, exc)
            raise
        finally:
            _leave(token)
        _succeed(self, span, "exists", start, {FOUND: bool(found)})
        return found

    def cleanup(
        self,
        prefix: str = "",
        *,
        older_than: timedelta | float = DEFAULT_OLDER_THAN,
        dry_run: bool = False,
    ) -> builtins.list[Leftover]:
        """Remove crash leftovers under *prefix* (see
        :meth:`StorageWrapper.cleanup`), recording how many."""
        clean = super().cleanup
        if _quiet(self):
            return clean(prefix, older_than=older_than, dry_run=dry_run)
        span, start = _start(self, "cleanup", {PREFIX: prefix})
        token = _enter(span)
        try:
            leftovers = clean(prefix, older_than=older_than, dry_run=dry_run)
        except BaseException as exc:
            _fail(self, span, "cleanup", start, exc, {DRY_RUN: dry_run is True})
            raise
        finally:
            _leave(token)
        _succeed(self, span, "cleanup", start, {COUNT: len(leftovers), DRY_RUN: dry_run is True})
        return leftovers


class AdvancedTelemetry(Telemetry, tier="advanced"):
    """The advanced tier of :class:`Telemetry`, returned by ``Telemetry(advanced_storage)``.

    .. versionadded:: 0.1
    """

    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the chunks of *path*; the span ends when the iterator ends or is closed."""
        if _quiet(self):
            return self.__wrapped__.stream_read(path)
        chunks, finish = _traced_open(self, "stream_read", self.__wrapped__.stream_read, path)
        return MeteredChunks(chunks, finish)

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store *chunks* at *path*, recording the bytes taken from them."""
        if _quiet(self):
            self.__wrapped__.stream_write(path, chunks)
            return
        counter = _Counter()
        span, start = _start(self, "stream_write", {KEY: path})
        token = _enter(span)
        try:
            self.__wrapped__.stream_write(path, _counted(chunks, counter))
        except BaseException as exc:
            taken = counter.bytes
            _fail(self, span, "stream_write", start, exc, {BYTES: taken}, taken)
            raise
        finally:
            _leave(token)
        _succeed(self, span, "stream_write", start, {BYTES: counter.bytes}, counter.bytes)

    def atomic_move(self, src: str, dst: str) -> None:
        """Move *src* to *dst*."""
        if _quiet(self):
            self.__wrapped__.atomic_move(src, dst)
            return
        keys = {SOURCE_KEY: src, DESTINATION_KEY: dst}
        _traced_call(self, "atomic_move", keys, self.__wrapped__.atomic_move, src, dst)

    def recursive_list(self, prefix: str) -> list[str]:
        """List the keys under *prefix* recursively, recording how many there are."""
        if _quiet(self):
            return self.__wrapped__.recursive_list(prefix)
        return _traced_list(self, "recursive_list", self.__wrapped__.recursive_list, prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Mirror *src_prefix* to *dst_prefix*."""
        if _quiet(self):
            self.__wrapped__.sync(src_prefix, dst_prefix)
            return
        prefixes = {SOURCE_PREFIX: src_prefix, DESTINATION_PREFIX: dst_prefix}
        _traced_call(self, "sync", prefixes, self.__wrapped__.sync, src_prefix, dst_prefix)


def _check_options(record_keys: object) -> None:
    if _MISSING is not None:
        raise ImportError(f"Telemetry needs opentelemetry-api; {_INSTALL_HINT}") from _MISSING
    if not isinstance(record_keys, bool):
        raise TypeError(f"Telemetry(): record_keys must be True or False, not {record_keys!r}")


def _configure(
    wrapper: Telemetry,
    storage: SnapshotStorage,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    record_keys: bool,
) -> None:
    version = _version() or ""
    # Resolved once: the global providers' proxies hand over to the SDK
    # whenever the project sets one, so the wrapper may be built first.
    wrapper._self_tracer = _trace.get_tracer(SCOPE, version, tracer_provider)
    meter = _metrics.get_meter(SCOPE, version, meter_provider)
    wrapper._self_operations = meter.create_counter(
        _NS + "operations", "{operation}", "Storage operations, by operation and outcome"
    )
    wrapper._self_duration = meter.create_histogram(
        _NS + "duration",
        "s",
        "Duration of storage operations, streams until they end",
        explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
    )
    wrapper._self_bytes = meter.create_counter(
        _NS + "bytes", "By", "Bytes read from and written to the storage"
    )
    wrapper._self_record_keys = record_keys
    wrapper._self_stack = repr(storage) if record_keys else _class_names(storage)
    wrapper._self_global = (
        tracer_provider is None and meter_provider is None and _SEES_GLOBAL_PROVIDERS
    )


# Whether this version of opentelemetry-api keeps its global providers
# where _quiet looks; if not, every operation takes the full path.
_SEES_GLOBAL_PROVIDERS = _MISSING is None and all(
    hasattr(module, name)
    for module, name in ((_trace, "_TRACER_PROVIDER"), (_metrics_state, "_METER_PROVIDER"))
)


def _quiet(wrapper: Telemetry) -> bool:
    """Tell whether *wrapper* records nothing at all: it uses the global
    providers, and the project has set neither (no SDK).  Every span and
    instrument would be a no-op then, so the operation goes straight to the
    storage below, for next to no cost; once a provider is set (which
    happens once), operations are traced from the next one on."""
    return (
        wrapper._self_global
        and _trace._TRACER_PROVIDER is None
        and _metrics_state._METER_PROVIDER is None
    )


def _version() -> str | None:
    """The installed version of the library, for the instrumentation scope."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("django-snapshots")
    except PackageNotFoundError:
        return None


def _class_names(storage: object) -> str:
    """The layers of *storage* by class name alone, e.g.
    ``Prefix(Checksum(MemoryBackend))``: no option, so no key or tenant."""
    names = []
    seen: set[int] = set()
    layer = storage
    while id(layer) not in seen:
        seen.add(id(layer))
        if isinstance(layer, StorageWrapper):
            names.append(type(layer)._basic_tier.__name__)
            layer = layer.__wrapped__
        else:
            names.append(type(layer).__name__)
            break
    return "(".join(names) + ")" * (len(names) - 1)


def _start(wrapper: Telemetry, op: str, keys: Mapping[str, object]) -> tuple[Span, float]:
    """Start the span of *op*, a child of the caller's current span."""
    attributes: dict[str, Any] = {OPERATION: op, STACK: wrapper._self_stack}
    if wrapper._self_record_keys:
        for name, value in keys.items():
            # Text as it is; a wrong type (which the storage below refuses)
            # as its repr, which an exporter can carry.
            attributes[name] = value if isinstance(value, str) else repr(value)
    span = wrapper._self_tracer.start_span(_SPAN_NAMES[op], attributes=attributes)
    return span, perf_counter()


def _enter(span: Span) -> object:
    """Make *span* the current span for the call into the storage below;
    without an SDK there is nothing to make current."""
    if not span.get_span_context().is_valid:
        return None
    return _context.attach(_trace.set_span_in_context(span))


def _leave(token: object) -> None:
    if token is not None:
        _context.detach(cast(Any, token))


def _succeed(
    wrapper: Telemetry,
    span: Span,
    op: str,
    start: float,
    attributes: Mapping[str, Any] | None = None,
    moved: int | None = None,
) -> None:
    _end(wrapper, span, op, start, "ok", attributes, moved)


def _fail(
    wrapper: Telemetry,
    span: Span,
    op: str,
    start: float,
    exc: BaseException,
    attributes: Mapping[str, Any] | None = None,
    moved: int | None = None,
) -> None:
    if span.is_recording():
        name = type(exc).__name__
        span.set_attribute(ERROR_TYPE, name)
        # The class name only: the message may quote a URL or a credential.
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, name))
    _end(wrapper, span, op, start, "error", attributes, moved)


def _end(
    wrapper: Telemetry,
    span: Span,
    op: str,
    start: float,
    outcome: str,
    attributes: Mapping[str, Any] | None,
    moved: int | None,
) -> None:
    seconds = perf_counter() - start
    if span.is_recording():
        span.set_attribute(OUTCOME, outcome)
        if attributes:
            span.set_attributes(attributes)
    span.end()
    wrapper._self_operations.add(1, _BY_OUTCOME[op, outcome])
    wrapper._self_duration.record(seconds, _BY_OPERATION[op])
    if moved is not None:
        wrapper._self_bytes.add(moved, _BY_DIRECTION[op])


def _traced_call(
    wrapper: Telemetry, op: str, keys: Mapping[str, str], call: Callable[..., T], *args: str
) -> T:
    """Run ``call(*args)`` in the span of *op*, on success or failure."""
    span, start = _start(wrapper, op, keys)
    token = _enter(span)
    try:
        result = call(*args)
    except BaseException as exc:
        _fail(wrapper, span, op, start, exc)
        raise
    finally:
        _leave(token)
    _succeed(wrapper, span, op, start)
    return result


def _traced_list(
    wrapper: Telemetry, op: str, list_keys: Callable[[str], list[str]], prefix: str
) -> list[str]:
    span, start = _start(wrapper, op, {PREFIX: prefix})
    token = _enter(span)
    try:
        keys = list_keys(prefix)
    except BaseException as exc:
        _fail(wrapper, span, op, start, exc)
        raise
    finally:
        _leave(token)
    _succeed(wrapper, span, op, start, {COUNT: len(keys)})
    return keys


def _traced_open(
    wrapper: Telemetry, op: str, open_: Callable[[str], T], path: str
) -> tuple[T, Finish]:
    """Open *path* for the read *op* in its span, and return what was opened
    with what ends the span once the stream handed out ends."""
    span, start = _start(wrapper, op, {KEY: path})
    token = _enter(span)
    try:
        opened = open_(path)
    except BaseException as exc:
        _fail(wrapper, span, op, start, exc, {BYTES: 0, COMPLETE: False})
        raise
    finally:
        _leave(token)
    return opened, _span_end(wrapper, span, op, start)


def _span_end(wrapper: Telemetry, span: Span, op: str, start: float) -> Finish:
    """What ends the span of a stream *op* handed out, once it ends."""

    def finish(exc: BaseException | None, delivered: int, complete: bool) -> None:
        attributes = {BYTES: delivered, COMPLETE: complete}
        if exc is None:
            _succeed(wrapper, span, op, start, attributes, delivered)
        else:
            _fail(wrapper, span, op, start, exc, attributes, delivered)

    return finish

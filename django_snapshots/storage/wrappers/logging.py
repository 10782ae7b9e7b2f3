"""The audit wrapper: one structlog entry per storage operation.

    >>> import io
    >>> from structlog.testing import capture_logs
    >>> from django_snapshots.storage import Logging, MemoryBackend
    >>> storage = Logging(MemoryBackend())
    >>> with capture_logs() as entries:
    ...     storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> entry = entries[0]
    >>> entry["event"], entry["outcome"], entry["path"], entry["bytes"]
    ('snapshots.storage.write', 'ok', 'db/latest.dump', 4)

Every entry has the keys ``op``, ``outcome`` (``"ok"`` or ``"error"``),
``duration_ms`` and ``storage`` (the ``repr`` of the wrapped stack), plus
``path`` for single-key operations, ``prefix`` for lists (with ``count``),
``src``/``dst`` for ``atomic_move``, ``src_prefix``/``dst_prefix`` for
``sync``, ``bytes`` for the four transfer operations, ``found`` (a bool) for
``exists``, and ``complete`` for the two reads.  ``cleanup`` is logged as
an entry ``snapshots.storage.cleanup`` with ``prefix``, ``older_than_s``
(the age limit in seconds), ``dry_run``, ``count`` and ``leftovers`` (the
names of the leftovers removed, or found by a dry run).  A failed operation
is logged at level ``error`` with ``error`` set to the exception's class name
(never its message, which may quote a URL or a credential), and the exception
is re-raised unchanged.  Content is never logged.

``read`` and ``stream_read`` hand out a stream; their entry is emitted when
that stream is exhausted or closed, with the bytes actually delivered, so
``duration_ms`` covers the transfer, and ``complete`` says whether the
consumer read to the end of the object (``False`` for a stream closed early,
or one that failed).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from datetime import timedelta
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast, overload

import structlog

from django_snapshots.storage.cleanup import DEFAULT_OLDER_THAN, Leftover, check_older_than
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

__all__ = ["AdvancedLogging", "Logging"]

T = TypeVar("T")

#: Name of the structlog logger used when none is given.
LOGGER_NAME = "django_snapshots.storage"

# structlog's lazy proxy and the configuration it assembles loggers from.
# Both are private names: a structlog that moved them leaves each proxy to
# assemble a logger per entry, as it does on its own.
_STRUCTLOG_CONFIG: Any = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
_LAZY_PROXY: Any = getattr(getattr(structlog, "_config", None), "BoundLoggerLazyProxy", None)

_EVENTS = {
    op: f"snapshots.storage.{op}"
    for op in (
        "read", "write", "list", "delete", "exists",
        "stream_read", "stream_write", "atomic_move", "recursive_list", "sync", "cleanup",
    )
}  # fmt: skip


class Logging(StorageWrapper):
    """Log every operation on *storage* as one structured audit entry.

    *logger* is any structlog logger, e.g. one with context
    (``structlog.get_logger("django_snapshots.storage", tenant="acme")``),
    which then appears in every entry.  Give the context that way rather than
    with ``.bind()``: ``bind`` assembles the logger there and then, so one
    bound before the project configures structlog keeps the configuration of
    that moment (structlog's defaults, printing to standard output) for good,
    where a lazy logger follows every later ``structlog.configure``.  By
    default the entries go to
    ``structlog.get_logger("django_snapshots.storage")``; the library never
    configures structlog, so they end up wherever the project sends its logs.
    A lazy logger (what ``structlog.get_logger`` and ``structlog.wrap_logger``
    return) is assembled once per structlog configuration rather than once
    per entry: a later ``structlog.configure`` still takes effect at the
    next entry, and a logger factory is called once per configuration.

    ``Logging(storage)`` keeps the tier of *storage*.

    .. versionadded:: 0.1
    """

    _self_logger: Any
    _self_storage: str
    _self_bound: _Assembled

    if TYPE_CHECKING:
        # A type checker sees the tier through these overloads; at run time
        # StorageWrapper.__new__ picks the tier from the storage itself.  The
        # initializer is hidden from it, because mypy reads a constructor's
        # signature from __init__ rather than __new__ when a class defines both.
        @overload
        def __new__(
            cls, storage: AdvancedSnapshotStorage, /, *, logger: Any = None
        ) -> AdvancedLogging: ...
        @overload
        def __new__(cls, storage: SnapshotStorage, /, *, logger: Any = None) -> Logging: ...
        def __new__(cls, storage: SnapshotStorage, /, *, logger: Any = None) -> Any: ...

    else:

        def __init__(self, storage, /, *, logger=None):
            super().__init__(storage)
            _configure(self, storage, logger)

    def read(self, path: str) -> IO[bytes]:
        """Open *path*; the entry is logged when the returned stream ends or is closed."""
        start = perf_counter()
        try:
            source = self.__wrapped__.read(path)
        except BaseException as exc:
            _log_error(self, "read", start, exc, path=path, bytes=0, complete=False)
            raise
        return cast("IO[bytes]", MeteredReader(source, _entry_end(self, "read", start, path)))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store *content* at *path* and log the bytes taken from it."""
        check_binary_content(content)
        counted = _CountedContent(content)
        start = perf_counter()
        try:
            self.__wrapped__.write(path, cast("IO[bytes]", counted))
        except BaseException as exc:
            _log_error(self, "write", start, exc, path=path, bytes=counted.high)
            raise
        _log_sent(self, "write", start, path, counted.high)

    def list(self, prefix: str) -> list[str]:
        """List the keys under *prefix* and log how many there are."""
        return _logged_list(self, "list", self.__wrapped__.list, prefix)

    def delete(self, path: str) -> None:
        """Delete *path* and log it."""
        _logged_call(self, "delete", self.__wrapped__.delete, path, path=path)

    def exists(self, path: str) -> bool:
        """Tell whether *path* exists and log the check, with what it found."""
        start = perf_counter()
        try:
            found = self.__wrapped__.exists(path)
        except BaseException as exc:
            _log_error(self, "exists", start, exc, path=path)
            raise
        _bound(self).info(
            _EVENTS["exists"], op="exists", outcome="ok", duration_ms=_since(start),
            storage=self._self_storage, path=path, found=found,
        )  # fmt: skip
        return found

    def cleanup(
        self,
        prefix: str = "",
        *,
        older_than: timedelta | float = DEFAULT_OLDER_THAN,
        dry_run: bool = False,
    ) -> builtins.list[Leftover]:
        """Remove crash leftovers under *prefix* (see
        :meth:`StorageWrapper.cleanup`) and log which."""
        start = perf_counter()
        try:
            leftovers = super().cleanup(prefix, older_than=older_than, dry_run=dry_run)
        except BaseException as exc:
            _log_error(self, "cleanup", start, exc, prefix=prefix, dry_run=dry_run is True)
            raise
        _log_ok(
            self, "cleanup", start, prefix=prefix,
            older_than_s=check_older_than(older_than).total_seconds(), dry_run=dry_run,
            count=len(leftovers), leftovers=[leftover.name for leftover in leftovers],
        )  # fmt: skip
        return leftovers


class AdvancedLogging(Logging, tier="advanced"):
    """The advanced tier of :class:`Logging`, returned by ``Logging(advanced_storage)``.

    .. versionadded:: 0.1
    """

    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the chunks of *path*; the entry is logged when the iterator ends or is closed."""
        start = perf_counter()
        try:
            chunks = self.__wrapped__.stream_read(path)
        except BaseException as exc:
            _log_error(self, "stream_read", start, exc, path=path, bytes=0, complete=False)
            raise
        return MeteredChunks(chunks, _entry_end(self, "stream_read", start, path))

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store *chunks* at *path* and log the bytes taken from them."""
        counter = _Counter()
        start = perf_counter()
        try:
            self.__wrapped__.stream_write(path, _counted(chunks, counter))
        except BaseException as exc:
            _log_error(self, "stream_write", start, exc, path=path, bytes=counter.bytes)
            raise
        _log_sent(self, "stream_write", start, path, counter.bytes)

    def atomic_move(self, src: str, dst: str) -> None:
        """Move *src* to *dst* and log both keys."""
        _logged_call(self, "atomic_move", self.__wrapped__.atomic_move, src, dst, src=src, dst=dst)

    def recursive_list(self, prefix: str) -> list[str]:
        """List the keys under *prefix* recursively and log how many there are."""
        return _logged_list(self, "recursive_list", self.__wrapped__.recursive_list, prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Mirror *src_prefix* to *dst_prefix* and log both prefixes."""
        _logged_call(
            self, "sync", self.__wrapped__.sync, src_prefix, dst_prefix,
            src_prefix=src_prefix, dst_prefix=dst_prefix,
        )  # fmt: skip


def _configure(wrapper: Logging, storage: SnapshotStorage, logger: Any) -> None:
    # Both are resolved once here so that no operation formats anything it does
    # not have to; the structlog proxy itself defers to the project's
    # configuration, whenever that happens (see _bound).
    wrapper._self_logger = structlog.get_logger(LOGGER_NAME) if logger is None else logger
    wrapper._self_storage = repr(storage)
    wrapper._self_bound = _Assembled()


def _bound(wrapper: Logging) -> Any:
    """The logger that takes the next entry: the given logger itself, or, for
    a lazy proxy (what ``structlog.get_logger`` and ``structlog.wrap_logger``
    return), the logger it assembles under structlog's current configuration.

    A proxy assembles a new bound logger on every call unless the project
    set ``cache_logger_on_first_use``; that costs more than the rest of an
    entry.  The assembled logger is kept with the configuration it came from
    and assembled again once ``structlog.configure`` changed any of it, so a
    project that configures structlog after building the stack, or a test
    that captures the entries, still sees every entry.
    """
    assembled = wrapper._self_bound
    kept = assembled.kept
    config = _STRUCTLOG_CONFIG
    if (
        kept is not None
        and kept[0] is config.default_processors
        and kept[1] is config.default_wrapper_class
        and kept[2] is config.default_context_class
        and kept[3] is config.logger_factory
    ):
        return kept[4]
    logger = wrapper._self_logger
    if config is None:
        return logger
    # The configuration is read before the logger is assembled from it: a
    # structlog.configure() in another thread while bind() runs then leaves
    # an older configuration on record, which the next entry finds changed,
    # where one read afterwards would pin the older logger until the next
    # configure().
    seen = (
        config.default_processors, config.default_wrapper_class,
        config.default_context_class, config.logger_factory,
    )  # fmt: skip
    if type(logger) is _LAZY_PROXY:
        logger = logger.bind()
    # One tuple, replaced whole: threads that race here each keep a logger
    # that is right for the configuration they read.
    assembled.kept = (*seen, logger)
    return logger


class _Assembled:
    """What :func:`_bound` keeps for one wrapper: the logger to call and the
    structlog configuration it was assembled under (``None`` until the first
    entry).  It derives from configuration alone, never from a call, so the
    wrapper itself stays unchanged by its operations and threads share it."""

    __slots__ = ("kept",)

    def __init__(self) -> None:
        self.kept: tuple[Any, ...] | None = None


def _entry_end(wrapper: Logging, op: str, start: float, path: str) -> Finish:
    """What logs the entry of a stream *op* handed out, once it ends."""
    event = _EVENTS[op]

    def finish(exc: BaseException | None, delivered: int, complete: bool) -> None:
        if exc is None:
            _bound(wrapper).info(
                event, op=op, outcome="ok", duration_ms=_since(start),
                storage=wrapper._self_storage, path=path, bytes=delivered, complete=complete,
            )  # fmt: skip
        else:
            _log_error(wrapper, op, start, exc, path=path, bytes=delivered, complete=False)

    return finish


def _since(start: float) -> float:
    """Milliseconds since *start*, to the microsecond (``round(ms, 3)`` cost
    a fifth of the wrapper's own time per entry)."""
    return int((perf_counter() - start) * 1e6 + 0.5) / 1000


# The entries of the frequent operations are built in one call each, with
# their fields spelled out: merging a dict of fields into the call's keywords
# cost a third of the wrapper's own time per entry.


def _log_sent(wrapper: Logging, op: str, start: float, path: str, sent: int) -> None:
    _bound(wrapper).info(
        _EVENTS[op], op=op, outcome="ok", duration_ms=_since(start),
        storage=wrapper._self_storage, path=path, bytes=sent,
    )  # fmt: skip


def _log_ok(wrapper: Logging, op: str, start: float, **fields: Any) -> None:
    _bound(wrapper).info(
        _EVENTS[op], op=op, outcome="ok", duration_ms=_since(start),
        storage=wrapper._self_storage, **fields,
    )  # fmt: skip


def _log_error(wrapper: Logging, op: str, start: float, exc: BaseException, **fields: Any) -> None:
    _bound(wrapper).error(
        _EVENTS[op], op=op, outcome="error", duration_ms=_since(start),
        storage=wrapper._self_storage, error=type(exc).__name__, **fields,
    )  # fmt: skip


def _logged_call(wrapper: Logging, op: str, call: Callable[..., T], *args: str, **fields: Any) -> T:
    """Run ``call(*args)`` and log its entry with *fields*, on success or failure."""
    start = perf_counter()
    try:
        result = call(*args)
    except BaseException as exc:
        _log_error(wrapper, op, start, exc, **fields)
        raise
    _log_ok(wrapper, op, start, **fields)
    return result


def _logged_list(
    wrapper: Logging, op: str, list_keys: Callable[[str], list[str]], prefix: str
) -> list[str]:
    start = perf_counter()
    try:
        keys = list_keys(prefix)
    except BaseException as exc:
        _log_error(wrapper, op, start, exc, prefix=prefix)
        raise
    _bound(wrapper).info(
        _EVENTS[op], op=op, outcome="ok", duration_ms=_since(start),
        storage=wrapper._self_storage, prefix=prefix, count=len(keys),
    )  # fmt: skip
    return keys

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
``exists``, and ``complete`` for the two reads.  A failed operation
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

import io
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast, overload

import structlog

from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import ObservedReader, ReadableStream, check_binary_content
from django_snapshots.storage.wrappers.base import StorageWrapper

__all__ = ["AdvancedLogging", "Logging"]

T = TypeVar("T")

#: Name of the structlog logger used when none is given.
LOGGER_NAME = "django_snapshots.storage"

_EVENTS = {
    op: f"snapshots.storage.{op}"
    for op in (
        "read", "write", "list", "delete", "exists",
        "stream_read", "stream_write", "atomic_move", "recursive_list", "sync",
    )
}  # fmt: skip


class Logging(StorageWrapper):
    """Log every operation on *storage* as one structured audit entry.

    *logger* is any structlog logger, e.g. one with bound context
    (``structlog.get_logger("django_snapshots.storage").bind(tenant="acme")``),
    whose context then appears in every entry.  By default the entries go to
    ``structlog.get_logger("django_snapshots.storage")``; the library never
    configures structlog, so they end up wherever the project sends its logs.

    ``Logging(storage)`` keeps the tier of *storage*.

    .. versionadded:: 0.1
    """

    _self_logger: Any
    _self_storage: str

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
        return cast("IO[bytes]", _LoggedReader(self, source, path, start))

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
        _log_ok(self, "write", start, path=path, bytes=counted.high)

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
        _log_ok(self, "exists", start, path=path, found=found)
        return found


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
        return _LoggedChunks(self, chunks, path, start)

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store *chunks* at *path* and log the bytes taken from them."""
        counter = _Counter()
        start = perf_counter()
        try:
            self.__wrapped__.stream_write(path, _counted(chunks, counter))
        except BaseException as exc:
            _log_error(self, "stream_write", start, exc, path=path, bytes=counter.bytes)
            raise
        _log_ok(self, "stream_write", start, path=path, bytes=counter.bytes)

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
    # Both are resolved once here so that no operation binds or formats anything
    # it does not have to; the structlog proxy itself defers to the project's
    # configuration, whenever that happens.
    wrapper._self_logger = structlog.get_logger(LOGGER_NAME) if logger is None else logger
    wrapper._self_storage = repr(storage)


def _since(start: float) -> float:
    return round((perf_counter() - start) * 1000, 3)


def _log_ok(wrapper: Logging, op: str, start: float, **fields: Any) -> None:
    wrapper._self_logger.info(
        _EVENTS[op], op=op, outcome="ok", duration_ms=_since(start),
        storage=wrapper._self_storage, **fields,
    )  # fmt: skip


def _log_error(wrapper: Logging, op: str, start: float, exc: BaseException, **fields: Any) -> None:
    wrapper._self_logger.error(
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
    _log_ok(wrapper, op, start, prefix=prefix, count=len(keys))
    return keys


class _LoggedReader(ObservedReader):
    """The stream ``Logging.read`` hands out: logs once, at EOF, error or close."""

    def __init__(self, wrapper: Logging, source: IO[bytes], path: str, start: float) -> None:
        super().__init__(source)
        self._wrapper = wrapper
        self._path = path
        self._start = start
        self._bytes = 0
        self._logged = False

    def read(self, size: int | None = -1) -> bytes:
        # The common calls, read() and read(n), go straight to the source
        # rather than through readinto and a buffer of the base class.
        if self._failure is not None:
            raise self._failure
        if self._eof or size == 0:
            return b""
        try:
            data = self._source.read(-1 if size is None else size)
        except BaseException as exc:
            self._failure = exc
            self._log_error(exc)
            raise
        if data:
            self._bytes += len(data)
            if size is None or size < 0:  # the source read to its end
                self._eof = True
                self._log_ok()
        elif data is not None:  # b"": end of stream; None: nothing ready yet
            self._eof = True
            self._log_ok()
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readline(self, size: int | None = -1) -> bytes:
        # The source's own readline: the one of the base class would read
        # one byte at a time.  Iteration goes through here too.
        if self._failure is not None:
            raise self._failure
        if self._eof or size == 0:
            return b""
        try:
            line = self._source.readline(-1 if size is None else size)
        except BaseException as exc:
            self._failure = exc
            self._log_error(exc)
            raise
        if line:
            self._bytes += len(line)
        else:
            self._eof = True
            self._log_ok()
        return line

    def readinto(self, buffer: Any) -> int:
        try:
            return super().readinto(buffer)
        except BaseException as exc:
            self._log_error(exc)
            raise

    def _on_data(self, chunk: memoryview) -> None:
        self._bytes += len(chunk)

    def _on_eof(self) -> None:
        self._log_ok()

    def _on_close(self) -> None:
        self._log_ok()

    def _log_ok(self) -> None:
        if self._logged:
            return
        self._logged = True
        _log_ok(
            self._wrapper, "read", self._start,
            path=self._path, bytes=self._bytes, complete=self._eof,
        )  # fmt: skip

    def _log_error(self, exc: BaseException) -> None:
        if not self._logged:
            self._logged = True
            _log_error(
                self._wrapper, "read", self._start, exc,
                path=self._path, bytes=self._bytes, complete=False,
            )  # fmt: skip


class _LoggedChunks(Iterator[bytes]):
    """The iterator ``Logging.stream_read`` hands out: logs once, when it is
    exhausted, fails, is closed, or is dropped unfinished (an abandoned
    generator would never log if it was closed before its first chunk).
    Once it raised, every later ``next`` raises the same exception."""

    def __init__(self, wrapper: Logging, chunks: Iterator[bytes], path: str, start: float) -> None:
        self._wrapper = wrapper
        self._chunks = chunks
        self._path = path
        self._start = start
        self._bytes = 0
        self._logged = False
        self._exhausted = False
        self._failure: BaseException | None = None

    def __next__(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._exhausted = True
            self._finish(None)
            raise
        except BaseException as exc:
            self._failure = exc
            self._finish(exc)
            raise
        self._bytes += len(chunk)
        return chunk

    def close(self) -> None:
        """Stop reading: close the storage's iterator and log the bytes delivered so far."""
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(None)

    def __del__(self) -> None:
        if not getattr(self, "_logged", True):
            self.close()

    def _finish(self, exc: BaseException | None) -> None:
        if self._logged:
            return
        self._logged = True
        if exc is None:
            _log_ok(
                self._wrapper, "stream_read", self._start,
                path=self._path, bytes=self._bytes, complete=self._exhausted,
            )  # fmt: skip
        else:
            _log_error(
                self._wrapper, "stream_read", self._start, exc,
                path=self._path, bytes=self._bytes, complete=False,
            )  # fmt: skip


class _CountedContent(ReadableStream):
    """Passes the caller's content to the storage, counting the bytes taken.

    ``high`` is the furthest point read, so a storage that rewinds and reads
    again (a retry) is not counted twice.  Seeking is passed through when
    the content supports it, and the content is never closed: it belongs
    to the caller.
    """

    def __init__(self, content: IO[bytes]) -> None:
        super().__init__()
        self._content = content
        self._position = 0
        self._origin: int | None = None
        self.high = 0

    def read(self, size: int | None = -1) -> bytes:
        data = self._content.read(-1 if size is None else size)
        if data:
            self._position += len(data)
            self.high = max(self.high, self._position)
        return data

    def seekable(self) -> bool:
        return bool(self._content.seekable())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._origin is None:
            self._origin = self._content.tell() - self._position
        where = self._content.seek(offset, whence)
        self._position = where - self._origin
        return where

    def tell(self) -> int:
        return self._content.tell()


class _Counter:
    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


def _counted(chunks: Iterator[bytes], counter: _Counter) -> Iterator[bytes]:
    for chunk in chunks:
        counter.bytes += len(chunk)
        yield chunk

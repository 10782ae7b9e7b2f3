"""Streaming helpers shared by the backends and the wrappers.

Artifacts can be many gigabytes, so nothing here ever holds more than one
chunk in memory: :func:`iter_chunks` turns a file object into chunks,
:class:`ChunkReader` turns chunks back into a file object, and
:class:`ObservedReader` is the base of every file object a wrapper hands out
(it sees each chunk as it passes, and the end of the stream).

Every stream and chunk iterator handed out **stays failed once it raised**:
a later read raises the same exception again.  A consumer that catches the
error and reads on must never see ``b""`` (or the end of an iteration),
which would make an object cut short look complete.
"""

from __future__ import annotations

import abc
import io
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, cast

__all__ = [
    "CHUNK_SIZE",
    "ChunkReader",
    "MeteredChunks",
    "MeteredReader",
    "ObservedReader",
    "ReadableStream",
    "StickyChunks",
    "buffered",
    "check_binary_content",
    "iter_chunks",
]

#: Size of the chunks the built-in backends read, write and yield.
CHUNK_SIZE = 1024 * 1024

# The buffer of buffered(): below glibc's 128 KiB mmap threshold, so that a
# read of a small object does not map and unmap a megabyte; reads of a chunk
# or more go past the buffer anyway.
_BUFFER_SIZE = 64 * 1024


def iter_chunks(content: IO[bytes], size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield *content* in non-empty chunks of at most *size* bytes until EOF.

    Works for non-seekable streams and never closes *content*.

    .. versionadded:: 0.1
    """
    read = content.read
    while True:
        chunk = read(size)
        if chunk is None:  # a non-blocking raw stream with nothing ready yet
            continue
        if not chunk:
            return
        yield bytes(chunk) if not isinstance(chunk, bytes) else chunk


class ChunkReader(io.RawIOBase):
    """A readable binary file object over an iterable of ``bytes`` chunks.

    Closing it closes the underlying iterator (so a generator's ``finally``
    runs and its resources are released).  Once the iterator raised, every
    later read raises the same exception.

    .. versionadded:: 0.1
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self._failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            # Reporting EOF here would make a stream cut short look complete.
            raise ValueError("I/O operation on closed ChunkReader")
        if self._failure is not None:
            raise self._failure
        view = memoryview(buffer).cast("B")
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
            except BaseException as exc:
                self._failure = exc
                raise
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._chunks, "close", None)
            self._pending = memoryview(b"")
            try:
                if close is not None:
                    close()
            finally:
                super().close()


def buffered(raw: io.RawIOBase) -> IO[bytes]:
    """Return *raw* as a buffered binary file: full reads until the end,
    fast ``readline`` and iteration, ``peek`` and ``readinto``, as a file
    opened with ``open(path, "rb")`` behaves.  Closing it closes *raw*.

    .. versionadded:: 0.1
    """
    return cast("IO[bytes]", io.BufferedReader(raw, buffer_size=_BUFFER_SIZE))


class ReadableStream(io.RawIOBase):
    """A readable binary stream defined by its ``read(size)`` alone.

    Base of the stand-ins that wrappers hand to the storage below in place of
    the caller's content (to count, hash or replay it): a subclass implements
    ``read``, and ``readinto`` and ``readall`` follow from it.

    .. versionadded:: 0.1
    """

    def readable(self) -> bool:
        return True

    @abc.abstractmethod
    def read(self, size: int | None = -1) -> bytes:
        """Return up to *size* bytes (everything left for -1 or None); ``b""`` at the end."""

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = _writable(buffer)
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class ObservedReader(io.RawIOBase):
    """A readable file object that passes *source* through, chunk by chunk.

    Subclasses override :meth:`_on_data` (each chunk delivered),
    :meth:`_on_eof` (the source reported end of stream; may raise to refuse
    the data, e.g. on a digest mismatch) and :meth:`_on_close` (called once,
    whether or not EOF was reached).  Once a read raised (from the source or
    from a hook), every later read raises the same exception.

    .. versionadded:: 0.1
    """

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._source = source
        self._eof = False
        self._finished = False
        self._failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._failure is not None:
            raise self._failure
        view = _writable(buffer)
        if self._eof or not view:
            return 0
        try:
            n = _read_into(self._source, view)
            if n:
                self._on_data(view[:n])
                return n
            self._eof = True
            self._on_eof()
        except BaseException as exc:
            self._failure = exc
            raise
        return 0

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._source.close()
        finally:
            super().close()
            if not self._finished:
                self._finished = True
                self._on_close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A copy would read the same source and report it again, as two
        # readers that each think they hold the stream.
        raise TypeError(f"cannot pickle or copy a {type(self).__name__}: open the object again")

    def _on_data(self, chunk: memoryview) -> None:
        """Called with each chunk as it is delivered to the reader."""

    def _on_eof(self) -> None:
        """Called once when the source reports the end of the stream."""

    def _on_close(self) -> None:
        """Called once when the reader is closed."""


#: What a metered stream reports once it ends: the error that ended it (None
#: for the end of the stream or a close), the bytes delivered, and whether
#: the consumer reached the end of the object.
Finish = Callable[[BaseException | None, int, bool], object]


class MeteredReader(ObservedReader):
    """*source* as the consumer reads it, counted: *finish* is called exactly
    once, at the end of the stream, at the first failure, or at close
    (``complete`` is true only when the end was reached).  It stays failed
    once it raised.

    ``read`` and ``readline`` go straight to the source, which keeps its
    full reads and its fast lines; a short read that is not the end is
    completed here, so reads stay full whatever the source.

    .. versionadded:: 0.1
    """

    # Every read through Logging or Telemetry makes one of these, so its
    # state is kept in slots, ``closed`` included: io.IOBase keeps ``closed``
    # in an instance dict that its close() creates, and making and filling
    # that dict cost a fifth of Logging's own time on a read of 4 KiB.  So
    # close() never calls io.RawIOBase.close(), and flush() checks ``closed``
    # itself; every other io.IOBase method, the finaliser that closes a
    # reader dropped unclosed included, reads the ``closed`` attribute.
    __slots__ = ("_bytes", "_ended", "_eof", "_failure", "_finish", "_source", "closed")
    closed: bool

    def __init__(self, source: IO[bytes], finish: Finish) -> None:
        # ObservedReader.__init__ is not called, for the same reason: these
        # are all the attributes it sets that MeteredReader uses.
        self._source = source
        self._eof = False
        self._failure: BaseException | None = None
        self._finish = finish
        self._bytes = 0
        self._ended = False
        # Last: until it is set, the finaliser leaves a half-made reader alone.
        self.closed = False

    def read(self, size: int | None = -1) -> bytes:
        if self._failure is not None:
            raise self._failure
        if self.closed:
            # Reporting the end here would make a stream cut short look complete.
            raise ValueError("I/O operation on closed file")
        want = size if type(size) is int and size >= 0 else _size_of(size)
        if self._eof or want == 0:
            return b""
        try:
            data = self._source.read(want)
            if data and len(data) < want:
                data = self._fill(data, want)
        except BaseException as exc:
            self._failure = exc
            self._end_with(exc)
            raise
        if data:
            self._bytes += len(data)
            if want < 0 or self._eof:  # the source read to its end
                self._eof = True
                self._end_with(None)
        elif data is not None:  # b"": end of stream; None: nothing ready yet
            self._eof = True
            self._end_with(None)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readline(self, size: int | None = -1) -> bytes:
        if self._failure is not None:
            raise self._failure
        if self.closed:
            raise ValueError("I/O operation on closed file")
        limit = size if type(size) is int else _size_of(size)
        if self._eof or limit == 0:
            return b""
        try:
            line = self._source.readline(limit)
            if line[-1:] != b"\n" and len(line) != limit:  # short: see _line_on
                line, self._eof = _line_on(self._source, line, limit)
        except BaseException as exc:
            self._failure = exc
            self._end_with(exc)
            raise
        self._bytes += len(line)
        if self._eof:
            self._end_with(None)
        return line

    def readinto(self, buffer: Any) -> int:
        if self._failure is None and self.closed:
            raise ValueError("I/O operation on closed file")
        view = _writable(buffer)  # the caller's mistake, not the end of the stream
        try:
            return super().readinto(view)
        except BaseException as exc:
            self._end_with(exc)
            raise

    def close(self) -> None:
        """Close the source, and report, unless the stream already ended."""
        if self.closed:
            return
        self.closed = True
        try:
            self._source.close()
        finally:
            self._on_close()

    def flush(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def _fill(self, data: bytes, size: int) -> bytes:
        """Read on after a short read until *size* bytes or the end."""
        pieces = [data]
        missing = size - len(data)
        while missing > 0:
            more = self._source.read(missing)
            if more is None:
                continue
            if not more:
                self._eof = True
                break
            pieces.append(more)
            missing -= len(more)
        return b"".join(pieces)

    def _on_data(self, chunk: memoryview) -> None:
        self._bytes += len(chunk)

    def _on_eof(self) -> None:
        self._end_with(None)

    def _on_close(self) -> None:
        self._end_with(None)

    def _end_with(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._finish(exc, self._bytes, self._eof and exc is None)
        except BaseException as error:
            # A report that failed (a log processor that raised, say) is the
            # failure of the read that ended the stream, whose bytes the
            # caller never got: later reads raise it too, never read as empty.
            if self._failure is None:
                self._failure = error
            raise


class MeteredChunks(Iterator[bytes]):
    """*chunks*, counted: *finish* is called exactly once, when they are
    exhausted, fail, are closed, or are dropped unfinished (an abandoned
    generator would never report if it was closed before its first chunk).
    Once it raised, every later ``next`` raises the same exception.

    .. versionadded:: 0.1
    """

    def __init__(self, chunks: Iterable[bytes], finish: Finish) -> None:
        self._chunks = iter(chunks)
        self._finish = finish
        self._bytes = 0
        self._ended = False
        self._exhausted = False
        self._failure: BaseException | None = None

    def __next__(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._exhausted = True
            self._end_with(None)
            raise
        except BaseException as exc:
            self._failure = exc
            self._end_with(exc)
            raise
        self._bytes += len(chunk)
        return chunk

    def close(self) -> None:
        """Stop reading: close the underlying iterator, and report."""
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._end_with(None)

    def __del__(self) -> None:
        if not getattr(self, "_ended", True):
            self.close()

    def _end_with(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._finish(exc, self._bytes, self._exhausted)
        except BaseException as error:
            # As MeteredReader does: once next() raised, it raises again.
            if self._failure is None:
                self._failure = error
            raise


class StickyChunks(Iterator[bytes]):
    """*chunks*, as an iterator that stays failed once it raised: every later
    ``next`` raises the same exception, where a generator would end the
    iteration as if the object were complete.  ``close`` closes *chunks*.

    .. versionadded:: 0.1
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._failure: BaseException | None = None

    def __next__(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        try:
            return next(self._chunks)
        except StopIteration:
            raise
        except BaseException as exc:
            self._failure = exc
            raise

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def _start_of(content: IO[bytes]) -> int | None:
    """Return where a seekable *content* is now, or None if it cannot seek."""
    try:
        if not content.seekable():
            return None
        return content.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _drain(stream: IO[bytes]) -> Iterator[bytes]:
    """Yield the chunks of *stream*, a backend's own open object, and close it."""
    # *stream* is closed when the iterator is exhausted, closed or dropped
    # (even unstarted: the stream's own finaliser closes it then).
    with stream:
        yield from iter_chunks(stream)


def _writable(buffer: Any) -> memoryview:
    """*buffer* as a writable view of bytes, or :class:`TypeError` before
    anything is read: a read-only buffer found only when the bytes read are
    copied into it would lose them, the stream having moved past them."""
    view = memoryview(buffer).cast("B")
    if view.readonly:
        raise TypeError(
            f"readinto() argument must be read-write bytes-like object, not {type(buffer).__name__}"
        )
    return view


def _size_of(size: Any) -> int:
    """The byte count of a ``read(size)`` or ``readline(size)``: -1 for None
    or any negative size, else *size* as an int; :class:`TypeError` before
    any I/O for anything else (2.5, "3"), as :mod:`io` streams do, rather
    than a failure of the source that would leave the stream failed."""
    if size is None:
        return -1
    size = operator.index(size)
    return -1 if size < 0 else size


def _line_on(stream: IO[bytes], line: bytes, limit: int) -> tuple[bytes, bool]:
    """*line*, which *stream*'s ``readline`` ended short of its newline and
    of *limit* (-1: no limit), continued to its newline, *limit* or the end
    of *stream*, as bytes; and whether it found the end, which a line read
    next would only find again.

    A buffered stream over a non-blocking one ends its ``readline`` where
    nothing more is ready yet: part of a line, or ``b""``, which looks like
    the end of the stream.  A ``read(1)`` tells: it waits through "nothing
    ready" (None), and finds ``b""`` only at the end, so a blocking stream
    pays this one call at its end.  The readers check for a short line
    themselves, which saves a call per line.
    """
    pieces = [bytes(line)]
    taken = len(line)
    while True:
        more = stream.read(1)
        while more is None:  # a non-blocking stream with nothing ready yet
            more = stream.read(1)
        if not more:
            return b"".join(pieces), True
        pieces.append(bytes(more))
        taken += len(more)
        if more == b"\n" or taken == limit:
            break
        rest = stream.readline(limit - taken if limit >= 0 else -1)
        pieces.append(bytes(rest))
        taken += len(rest)
        if rest[-1:] == b"\n" or taken == limit:
            break
    return b"".join(pieces), False


def _read_into(source: IO[bytes], view: memoryview) -> int:
    readinto: Callable[[memoryview], int | None] | None = getattr(source, "readinto", None)
    if readinto is not None:
        while True:
            n = readinto(view)
            if n is not None:
                return n
    while True:
        data = source.read(len(view))
        if data is not None:
            view[: len(data)] = data
            return len(data)


def check_binary_content(content: object) -> None:
    """Raise :class:`TypeError`, before any I/O, when *content* is not a
    binary file object: data given as ``bytes`` or ``str``, a file opened in
    text mode (``open(path)``, :class:`io.StringIO`), or an object without
    ``read``.  The message says what to pass instead.

    The built-in backends call it first thing in ``write``; a backend or
    wrapper of your own can too.

    .. versionadded:: 0.1
    """
    if isinstance(content, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"content must be a binary file object, not {type(content).__name__}: "
            "wrap the data as io.BytesIO(data)"
        )
    if isinstance(content, str):
        raise TypeError(
            "content must be a binary file object, not str: "
            "encode the text and wrap it, io.BytesIO(text.encode())"
        )
    # A django.core.files.File keeps the file it wraps in ``file``.
    if isinstance(content, io.TextIOBase) or isinstance(
        getattr(content, "file", None), io.TextIOBase
    ):
        raise TypeError(
            f"content must be a binary file object, not a text stream ({type(content).__name__}): "
            "open the file in binary mode, open(path, 'rb'), or pass io.BytesIO(text.encode())"
        )
    if not callable(getattr(content, "read", None)):
        raise TypeError(
            f"content must be a binary file object with a read() method, not "
            f"{type(content).__name__}: for instance open(path, 'rb') or io.BytesIO(data)"
        )


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

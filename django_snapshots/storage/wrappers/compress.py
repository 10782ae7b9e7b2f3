"""The compression wrapper: every object stored as a standard zstd frame.

    >>> import io
    >>> from django_snapshots.storage import MemoryBackend
    >>> from django_snapshots.storage import Compress
    >>> inner = MemoryBackend()
    >>> storage = Compress(inner)
    >>> storage.write("db/latest.json", io.BytesIO(b"[]" * 10_000))
    >>> inner.read("db/latest.json").read(4)  # the zstd magic number
    b'(\\xb5/\\xfd'
    >>> storage.read("db/latest.json").read() == b"[]" * 10_000
    True

Objects are stored as Zstandard frames (RFC 8878) with a content checksum,
so ``zstd -d`` restores them without Python, and frames written by any other
zstd implementation read back.  Keys are not renamed: ``db/latest.json`` is
stored as ``db/latest.json``.  What the wrapper guarantees:

- **Bounded memory.**  ``write`` and ``stream_write`` compress as the data
  streams, and ``read`` and ``stream_read`` decompress at most one
  ``CHUNK_SIZE`` (1 MiB) of output per step, however far a small input
  expands: a frame of a few kilobytes that decompresses to terabytes (a
  "zstd bomb") is delivered chunk by chunk, never allocated at once.
- **No silent damage to what it wrote.**  Its frames carry a content
  checksum.  An object that is not zstd data, a corrupt frame (its content
  checksum does not match) and a truncated one raise
  :class:`~django_snapshots.SnapshotIntegrityError` naming the key, before
  the stream reports its end: a consumer that reads to the end never takes a
  damaged or short object for a complete one.  Streams stay failed once they
  raised.  An integrity error is never retried by ``Retry``, while a failure
  of the storage below (a dropped connection) passes through unchanged, so
  ``Retry`` above this wrapper retries it.  Frames written by other tools
  without a content checksum (``zstd --no-check``) cannot be checked; and a
  frame appended to an object reads as part of it, as ``zstd -d`` reads it:
  against planted data, keep ``Checksum`` (or ``Encrypt``) in the stack.
- **The stock format.**  Several frames one after the other read as one
  stream, as ``zstd -d`` reads them; skippable frames are skipped.  An empty
  object is not a zstd frame (``zstd -d`` refuses it too); writing empty
  content stores a frame of a few bytes.
- **Everything else passes through.**  ``list``, ``exists``, ``delete``,
  ``atomic_move``, ``recursive_list`` and ``sync`` act on the compressed
  objects as they are.  ``Compress(storage)`` keeps the tier of *storage*.

The codec is the standard library's :mod:`compression.zstd` on Python 3.14
and later, and its backport ``backports.zstd`` (the same API, installed by
the ``django-snapshots[compress]`` extra) before: both wrap the reference C
library, offer a streaming API (``ZstdCompressor``, and ``ZstdDecompressor``
whose ``max_length`` bounds each step), and let the library compress in
worker threads of its own (``CompressionParameter.nb_workers``), which
overlap with the storage's I/O.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, cast, overload

from django_snapshots.exceptions import SnapshotIntegrityError
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import (
    CHUNK_SIZE,
    ChunkReader,
    ReadableStream,
    _start_of,
    buffered,
    check_binary_content,
    iter_chunks,
)
from django_snapshots.storage.wrappers.base import StorageWrapper

try:
    if sys.version_info >= (3, 14):
        from compression.zstd import (
            CompressionParameter,
            ZstdCompressor,
            ZstdDecompressor,
            ZstdError,
        )
    else:
        from backports.zstd import (
            CompressionParameter,
            ZstdCompressor,
            ZstdDecompressor,
            ZstdError,
        )
except ImportError as exc:  # reported when a Compress is built, not on import
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

__all__ = ["AdvancedCompress", "Compress"]

#: The level ``zstd`` itself uses by default: fast, and a good ratio.
DEFAULT_LEVEL = 3


class Compress(StorageWrapper):
    """Store every object as a zstd frame, compressed and decompressed as it streams.

    *level* is a zstd compression level, from the fast negative levels to 22;
    0 means zstd's default, 3.  Levels above 19 compress large objects with
    windows of up to 128 MiB, which reading them needs in memory too.  *threads* is the number of
    worker threads that compress each write in the background (0, the
    default, compresses in the caller's thread); decompression always runs
    in the reader's thread.  Options are keyword-only and checked when the
    wrapper is built, which raises :class:`ImportError` if the zstd codec is
    missing (install ``django-snapshots[compress]`` on Python before 3.14).

    ``Compress(storage)`` keeps the tier of *storage*.

    .. versionadded:: 0.1
    """

    # A verification reads the compressed bytes that Checksum below digested.
    changes_content = True

    _self_level: int
    _self_threads: int

    if TYPE_CHECKING:
        # A type checker sees the tier through these overloads; at run time
        # StorageWrapper.__new__ picks the tier from the storage itself.  The
        # initializer is hidden from it, because mypy reads a constructor's
        # signature from __init__ rather than __new__ when a class defines both.
        @overload
        def __new__(
            cls, storage: AdvancedSnapshotStorage, /, *, level: int = ..., threads: int = ...
        ) -> AdvancedCompress: ...
        @overload
        def __new__(
            cls, storage: SnapshotStorage, /, *, level: int = ..., threads: int = ...
        ) -> Compress: ...
        def __new__(cls, storage: SnapshotStorage, /, **options: Any) -> Any: ...

    else:

        def __init__(self, storage, /, *, level=DEFAULT_LEVEL, threads=0):
            _require_codec()
            _check_option("level", level, CompressionParameter.compression_level)
            _check_option("threads", threads, CompressionParameter.nb_workers)
            super().__init__(storage)
            self._self_level = level
            self._self_threads = threads

    def read(self, path: str) -> IO[bytes]:
        """Open *path* and return a binary file of its decompressed bytes."""
        stream = self.__wrapped__.read(path)
        return buffered(ChunkReader(_Decompressed(path, iter_chunks(stream), stream.close)))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store *content* at *path* as a zstd frame, compressing as it is read."""
        self._self_storage_key(path)
        check_binary_content(content)
        compressed = _CompressedContent(content, self._self_compressor)
        self.__wrapped__.write(path, cast(IO[bytes], compressed))

    def list(self, prefix: str) -> builtins.list[str]:
        """Return the keys under *prefix*, as stored."""
        return self.__wrapped__.list(prefix)

    def delete(self, path: str) -> None:
        """Delete *path*."""
        self.__wrapped__.delete(path)

    def exists(self, path: str) -> bool:
        """Tell whether *path* is stored."""
        return self.__wrapped__.exists(path)

    def _repr_options(self) -> builtins.list[str]:
        options = [f"level={self._self_level}"]
        if self._self_threads:
            options.append(f"threads={self._self_threads}")
        return options

    def _self_compressor(self) -> ZstdCompressor:
        """A new compressor for one object, with this wrapper's options."""
        # Typed here: the codec's stubs type constructors only for Python 3.11+.
        compressor: ZstdCompressor = ZstdCompressor(
            options={
                CompressionParameter.compression_level: self._self_level,
                CompressionParameter.nb_workers: self._self_threads,
                # Frames carry a checksum of their content, as the zstd
                # command line writes them: a damaged frame is detected even
                # where it still decodes.
                CompressionParameter.checksum_flag: 1,
            }
        )
        return compressor


class AdvancedCompress(Compress, tier="advanced"):
    """The advanced tier of :class:`Compress`, returned by ``Compress(advanced_storage)``.

    .. versionadded:: 0.1
    """

    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the decompressed chunks of *path*, none larger than ``CHUNK_SIZE``."""
        chunks = iter(self.__wrapped__.stream_read(path))
        return _Decompressed(path, chunks, getattr(chunks, "close", _nothing))

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store *chunks* at *path* as one zstd frame, compressing as they come."""
        self._self_storage_key(path)
        self.__wrapped__.stream_write(path, _compressed(chunks, self._self_compressor))

    def atomic_move(self, src: str, dst: str) -> None:
        """Move *src* to *dst* as stored."""
        self.__wrapped__.atomic_move(src, dst)

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Return the keys under *prefix*, as stored."""
        return self.__wrapped__.recursive_list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Mirror *src_prefix* to *dst_prefix*, objects compressed as they are."""
        self.__wrapped__.sync(src_prefix, dst_prefix)


# Compressing.


class _CompressedContent(ReadableStream):
    """The caller's content as the storage below reads it: a zstd frame,
    compressed a chunk at a time as it is read.

    Reads are full (``read(n)`` returns *n* bytes until the end), since some
    uploaders take a short read for the end of the file.  Seekable when the
    content is, but only back to the start (which starts the frame again): a
    storage below that retries a write rewinds it rather than spooling it.
    """

    def __init__(self, content: IO[bytes], compressor: Callable[[], ZstdCompressor]) -> None:
        super().__init__()
        self._content = content
        self._new_compressor = compressor
        self._origin = _start_of(content)
        self._restart()

    def _restart(self) -> None:
        self._compressor = self._new_compressor()
        self._chunks = iter_chunks(self._content)
        self._buffer = bytearray()
        self._position = 0
        self._finished = False

    def read(self, size: int | None = -1) -> bytes:
        wanted = -1 if size is None or size < 0 else size
        while not self._finished and (wanted < 0 or len(self._buffer) < wanted):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._buffer += self._compressor.flush()
                self._finished = True
            else:
                self._buffer += self._compressor.compress(chunk)
        if wanted < 0 or wanted >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:wanted])
            del self._buffer[:wanted]  # cheap: a bytearray drops its head in place
        self._position += len(data)
        return data

    def seekable(self) -> bool:
        return self._origin is not None

    def tell(self) -> int:
        if self._origin is None:
            raise io.UnsupportedOperation("the content cannot seek")
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._origin is None or whence != io.SEEK_SET or offset != 0:
            raise io.UnsupportedOperation(
                "content being compressed can only be rewound to where it started"
            )
        self._content.seek(self._origin)
        self._restart()
        return 0


def _compressed(
    chunks: Iterable[bytes], compressor: Callable[[], ZstdCompressor]
) -> Iterator[bytes]:
    """*chunks* compressed into one zstd frame, as non-empty chunks."""
    frame = compressor()
    for chunk in chunks:
        if chunk and (data := frame.compress(chunk)):
            yield data
    yield frame.flush()


# Decompressing.


class _Decompressed(Iterator[bytes]):
    """The decompressed bytes of the object *path*, whose compressed chunks
    are *chunks*, in non-empty chunks of at most ``CHUNK_SIZE``.

    Frames that follow each other read as one stream.  Raises
    :class:`~django_snapshots.SnapshotIntegrityError` on data that is not a
    zstd frame, on a damaged frame, and on one cut short (before the end of
    the iteration).  Failures of *chunks* pass through as they are.  Stays
    failed once it raised; *close* releases the source.
    """

    def __init__(self, path: str, chunks: Iterator[bytes], close: Callable[[], object]) -> None:
        self._path = path
        self._chunks = chunks
        self._close = close
        self._frame: ZstdDecompressor = ZstdDecompressor()
        self._in_frame = False  # the current frame has received input
        self._received = 0  # compressed bytes taken from the source
        self._done = False
        self._failure: BaseException | None = None

    def __next__(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        if self._done:
            raise StopIteration
        try:
            data = self._next_output()
        except BaseException as exc:
            self._failure = exc
            # Release the object below now (a file, a connection): this
            # iterator will never read from it again.
            with contextlib.suppress(Exception):
                self.close()
            raise
        if data is None:
            self._done = True
            self.close()
            raise StopIteration
        return data

    def close(self) -> None:
        """Stop reading and release the source."""
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._close()

    def _next_output(self) -> bytes | None:
        """The next non-empty piece of output, or None at the clean end of the data."""
        frame = self._frame
        while True:
            if frame.eof:
                # The frame is complete: what follows it is another frame.
                leftover = frame.unused_data
                frame = self._frame = ZstdDecompressor()
                self._in_frame = False
                if leftover:
                    data = self._decompress(leftover)
                    if data:
                        return data
                continue
            if not frame.needs_input:
                data = self._decompress(b"")
            else:
                chunk = next(self._chunks, None)
                if chunk is None:
                    self._check_end()
                    return None
                self._received += len(chunk)
                data = self._decompress(chunk)
            if data:
                return data

    def _decompress(self, data: bytes) -> bytes:
        if data:
            self._in_frame = True
        try:
            output: bytes = self._frame.decompress(data, CHUNK_SIZE)
        except ZstdError as exc:
            raise SnapshotIntegrityError(
                f"{self._path!r} is not valid zstd data: {exc} (the object is corrupt, or was "
                "not written compressed)"
            ) from exc
        return output

    def _check_end(self) -> None:
        """The source ended: fine between frames, an integrity error inside one."""
        if self._received == 0:
            raise SnapshotIntegrityError(
                f"{self._path!r} is empty, not a zstd frame (the object was not written "
                "compressed, or was cut short)"
            )
        if self._in_frame:
            raise SnapshotIntegrityError(
                f"{self._path!r} ends in the middle of a zstd frame, after "
                f"{self._received} compressed bytes (the object was cut short)"
            )


# Small helpers.


def _require_codec() -> None:
    if _MISSING is not None:
        raise ImportError(
            "Compress needs the zstd codec: on Python before 3.14, install the "
            "'django-snapshots[compress]' extra (pip install 'django-snapshots[compress]', "
            f"which brings backports.zstd); the import failed with: {_MISSING}"
        ) from _MISSING


def _check_option(name: str, value: object, parameter: CompressionParameter) -> None:
    """Raise unless *value* is an int within the bounds of the zstd *parameter*."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Compress {name} must be an int, not {type(value).__name__}")
    low, high = parameter.bounds()
    if not low <= value <= high:
        raise ValueError(
            f"Compress {name} must be between {low} and {high} (the bounds of this zstd "
            f"build), not {value}"
        )


def _nothing() -> None:
    pass

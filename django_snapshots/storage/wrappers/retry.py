"""The retry wrapper: try again after a transient failure, without ever
losing or repeating a byte, or splicing two versions of an object.

    >>> import io
    >>> from django_snapshots.storage import MemoryBackend, Retry
    >>> storage = Retry(MemoryBackend(), attempts=3)
    >>> storage
    Retry(MemoryBackend(), attempts=3)
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> storage.read("db/latest.dump").read()
    b'dump'

What is retried, and how:

- Only transient failures (see :func:`is_transient`), unless *on* says
  otherwise.  A missing key, a refused permission, a bad key, a digest
  mismatch, a missing capability or a changed object fails at once.
- Every operation is tried at most *attempts* times.  The waits between
  tries grow exponentially (*wait_initial*, doubling, at most *wait_max*,
  plus up to *wait_jitter* of random jitter), computed by :mod:`stamina`.
  A failure that comes *timeout* seconds or more after the failure that
  started the retrying is final.  After the last try, the **last original
  exception** is raised, so callers catch the same types as without
  ``Retry``.
- ``write`` sends the full content on every try: a seekable stream is
  rewound to where it was when ``write`` was called; any other stream (a
  pipe, a socket) is copied into a spool as the first try consumes it, up to
  8 MiB in memory and the rest in a temporary file (in :envvar:`TMPDIR`), and
  later tries read the spool.  ``stream_write`` spools its chunks the same
  way.  Memory stays bounded whatever the size of the artifact.
- ``read`` and ``stream_read`` hand out a stream that resumes after a
  failure in the middle, in the object it started and nowhere else.  It
  hashes the bytes it delivers as it delivers them (SHA-256, in the reading
  thread; only the hash is kept, except that the first 64 KiB are kept as
  they are and hashed once more follow or a resume needs them, so that a
  small read that never resumes is never hashed).  To resume, it opens the
  object again, reads as many bytes as were delivered from its start (never
  seeking past them) and hashes them: if the hashes match, it reads on from
  there, so the consumer receives every byte exactly once, and all of them
  from one version of the object (a replacement that starts with the bytes
  delivered is that version).  If they differ, or the object is now shorter,
  the read raises :class:`~django_snapshots.SnapshotObjectChangedError`
  naming the key, which is never retried, whatever *on* says.  This costs
  one hash pass over every byte read (none for a read that ends within
  64 KiB without a resume), and, per resume, reading again what was
  delivered.  Each failure starts a fresh
  count of tries and a fresh *timeout*, so a multi-gigabyte download
  survives any number of interruptions as long as each one is repaired, and
  the transfer time never counts as retrying.
- A stream that raised stays failed: every later ``read``, or ``next`` on
  the ``stream_read`` iterator, raises the same exception again, so that
  a consumer reading on never takes an empty answer for the end.
- A try that fails after it had transferred data (a write that had sent
  part of the content, a resume that had read part of the object again)
  also restarts the *timeout*, though not the count: every try of a write
  sends everything again, so *attempts* alone bounds the work.
- ``atomic_move`` is retried too.  When a try fails after the storage had
  in fact moved the object (the answer was lost), the next try finds *src*
  gone; if *src* existed when the move began, *dst* exists and *src* does
  not, the move is taken as done.  This relies on nobody else deleting
  *src* while the move is retried; checking that *src* exists costs one
  ``exists`` call per move.
- Errors raised by the caller's own input (the stream given to ``write``,
  the iterator given to ``stream_write``) are never retried: they are not
  the storage's.

Waits of 0 (``wait_initial=0, wait_max=0, wait_jitter=0``) make tests
instant; :func:`stamina.set_testing` works as well.  Each retry is reported
by stamina's instrumentation (a ``stamina.retry_scheduled`` entry on the
``stamina`` structlog logger by default).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import math
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast, overload

import stamina

from django_snapshots.exceptions import (
    SnapshotError,
    SnapshotObjectChangedError,
    SnapshotStorageError,
)
from django_snapshots.storage.keys import _show, validate_key
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import (
    CHUNK_SIZE,
    ObservedReader,
    ReadableStream,
    _line_on,
    _size_of,
    _start_of,
    buffered,
    check_binary_content,
    iter_chunks,
)
from django_snapshots.storage.wrappers.base import StorageWrapper

__all__ = ["TRANSIENT_ERRNOS", "AdvancedRetry", "Retry", "is_transient"]

T = TypeVar("T")

#: What *on* may be: an exception type, a tuple of them, or a predicate that
#: takes the exception and returns whether to retry it.
RetryOn = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], object] | None

#: :class:`OSError` numbers that mean "try again": the resource is busy, or
#: the network or the peer dropped or refused the connection.
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EAGAIN", "EWOULDBLOCK", "EBUSY", "EINTR", "ENOBUFS", "ETIMEDOUT",
        "ECONNRESET", "ECONNABORTED", "ECONNREFUSED", "EPIPE",
        "ENETDOWN", "ENETUNREACH", "ENETRESET", "EHOSTDOWN", "EHOSTUNREACH",
    )
    if hasattr(errno, name)
)  # fmt: skip

#: Bytes of a non-seekable input kept in memory before the spool moves to disk.
SPOOL_MEMORY = 8 * 1024 * 1024

# Bytes a read keeps unhashed at its start (see _Delivered).
_UNHASHED = 64 * 1024

_DEFAULT_WAITS = (0.1, 5.0, 1.0)


def is_transient(exc: BaseException) -> bool:
    """Tell whether trying again may cure *exc*: the default of ``Retry(on=None)``.

    True for :class:`ConnectionError`, :class:`TimeoutError`, a
    :class:`~django_snapshots.SnapshotStorageError` marked ``transient``, and
    an :class:`OSError` whose ``errno`` is in :data:`TRANSIENT_ERRNOS`.
    Never true for :class:`FileNotFoundError`, :class:`PermissionError`, or
    any other :class:`~django_snapshots.SnapshotError` (bad key, failed
    integrity check, missing capability).  Build your own predicate on it::

        >>> from django_snapshots.storage.wrappers.retry import is_transient
        >>> is_transient(ConnectionResetError())
        True
        >>> is_transient(FileNotFoundError())
        False

    .. versionadded:: 0.1
    """
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return False
    if isinstance(exc, SnapshotError):
        return isinstance(exc, SnapshotStorageError) and exc.transient
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


class Retry(StorageWrapper):
    """Retry the operations of *storage* that fail transiently.

    Each operation is tried up to *attempts* times; a failure that comes
    *timeout* seconds (``None``: no limit) or more after the failure that
    started the retrying is final.  Waits between tries start at
    *wait_initial* seconds, double each time up to *wait_max*, plus a random
    jitter of up to *wait_jitter*.  *on* replaces the default choice of what
    to retry (:func:`is_transient`): an exception type, a tuple of them, or a
    predicate taking the exception (it may also return a custom wait in
    seconds, as :func:`stamina.retry` allows).  When the tries run out, the
    last original exception is raised.

    Streams are handled so that no byte is lost or repeated, and a read never
    splices two versions of an object: see the module documentation above.
    Options are checked when the wrapper is built.

    ``Retry(storage)`` keeps the tier of *storage*.

    .. versionadded:: 0.1
    """

    _self_attempts: int
    _self_timeout: float | None
    _self_waits: tuple[float, float, float]
    _self_on: RetryOn
    _self_hook: Callable[[Exception], object]

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
            attempts: int = ...,
            timeout: float | None = ...,
            wait_initial: float = ...,
            wait_max: float = ...,
            wait_jitter: float = ...,
            on: RetryOn = ...,
        ) -> AdvancedRetry: ...
        @overload
        def __new__(
            cls,
            storage: SnapshotStorage,
            /,
            *,
            attempts: int = ...,
            timeout: float | None = ...,
            wait_initial: float = ...,
            wait_max: float = ...,
            wait_jitter: float = ...,
            on: RetryOn = ...,
        ) -> Retry: ...
        def __new__(cls, storage: SnapshotStorage, /, **options: Any) -> Any: ...

    else:

        def __init__(
            self,
            storage,
            /,
            *,
            attempts=5,
            timeout=60.0,
            wait_initial=0.1,
            wait_max=5.0,
            wait_jitter=1.0,
            on=None,
        ):
            attempts = _check_attempts(attempts)
            timeout = None if timeout is None else _check_seconds("timeout", timeout)
            if timeout == 0:
                raise ValueError(
                    "Retry timeout must be > 0 seconds or None; attempts=1 disables retries"
                )
            waits = (
                _check_seconds("wait_initial", wait_initial),
                _check_seconds("wait_max", wait_max),
                _check_seconds("wait_jitter", wait_jitter),
            )
            hook = _hook(on)
            super().__init__(storage)
            self._self_attempts = attempts
            self._self_timeout = timeout
            self._self_waits = waits
            self._self_on = on
            self._self_hook = hook

    # The five operations of the basic tier.

    def read(self, path: str) -> IO[bytes]:
        """Open *path*; the stream resumes where it was after a transient failure."""
        try:
            stream = self.__wrapped__.read(path)
        except Exception as exc:
            verdict = self._self_judge(exc)
            if verdict is None:
                raise
            error = exc
        else:
            return _ResumingReader(self, path, stream)  # type: ignore[return-value]
        # Retried outside the handler, so that later failures do not chain to this one.
        stream = self._self_retry(lambda: self.__wrapped__.read(path), error, verdict)
        return _ResumingReader(self, path, stream)  # type: ignore[return-value]

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store *content* at *path*, sending all of it again on each try."""
        validate_key(path)
        check_binary_content(content)
        if self._self_attempts == 1:
            self.__wrapped__.write(path, content)
            return
        with _Replay(content) as replay:
            self._self_replay(replay, lambda feed: self.__wrapped__.write(path, feed()))

    def list(self, prefix: str) -> builtins.list[str]:
        """Return the keys under *prefix*, trying again on transient failures."""
        return self._self_call(lambda: self.__wrapped__.list(prefix))

    def delete(self, path: str) -> None:
        """Delete *path*, trying again on transient failures."""
        self._self_call(lambda: self.__wrapped__.delete(path))

    def exists(self, path: str) -> bool:
        """Tell whether *path* exists, trying again on transient failures."""
        return self._self_call(lambda: self.__wrapped__.exists(path))

    def _repr_options(self) -> builtins.list[str]:
        options = [f"attempts={self._self_attempts}"]
        if self._self_timeout != 60.0:
            options.append(f"timeout={self._self_timeout!r}")
        names = ("wait_initial", "wait_max", "wait_jitter")
        for name, value, default in zip(names, self._self_waits, _DEFAULT_WAITS, strict=True):
            if value != default:
                options.append(f"{name}={value!r}")
        if self._self_on is not None:
            options.append(f"on={_describe(self._self_on)}")
        return options

    # The retrying itself, shared by both tiers.

    def _self_call(self, op: Callable[[], T], *, again: Callable[[], T] | None = None) -> T:
        """Run *op*; after a retryable failure, run *again* (default *op*) until it succeeds."""
        try:
            return op()
        except Exception as exc:
            verdict = self._self_judge(exc)
            if verdict is None:
                raise
            error = exc
        # Retried outside the handler, so that later failures do not chain to this one.
        return self._self_retry(again or op, error, verdict)

    def _self_retry(
        self,
        op: Callable[[], T],
        error: Exception,
        verdict: object,
        *,
        progress: Callable[[], int] | None = None,
        veto: Callable[[], bool] | None = None,
    ) -> T:
        """Retry *op* after *error* ended the first try (*verdict* is what
        :meth:`_self_judge` said about it).

        *progress* counts the bytes transferred so far: a try that fails after
        transferring some starts a new stamina round (a fresh *timeout*), with
        the tries left.  *veto* returning true stops all retrying.
        """
        judged: tuple[Exception, object] = (error, verdict)

        def hook(exc: Exception) -> object:
            if veto is not None and veto():
                return False
            # The predicate is asked once per failure, even if it is re-raised.
            return judged[1] if exc is judged[0] else self._self_hook(exc)

        used = 1  # tries made so far; *error* ended the last of them
        pending: Exception | None = error
        while True:
            restart: Exception | None = None
            # The first "try" of each round re-raises the failure that started
            # it, so that stamina decides on it and waits before the next try.
            for attempt in stamina.retry_context(
                on=cast(Any, hook),
                attempts=self._self_attempts - used + 1,
                timeout=self._self_timeout,
                wait_initial=self._self_waits[0],
                wait_max=self._self_waits[1],
                wait_jitter=self._self_waits[2],
            ):
                with attempt:
                    if pending is not None:
                        failed, pending = pending, None
                        raise failed
                    mark = progress() if progress is not None else 0
                    try:
                        return op()
                    except Exception as exc:
                        tries = used + attempt.num - 1
                        if (
                            progress is None
                            or progress() == mark
                            or tries >= self._self_attempts
                            or (veto is not None and veto())
                        ):
                            raise
                        verdict = self._self_judge(exc)
                        if verdict is None:
                            raise
                        restart, used, judged = exc, tries, (exc, verdict)
                if restart is not None:
                    break
            if restart is None:  # pragma: no cover - stamina returns or raises
                raise AssertionError("stamina ended without an outcome")
            pending = restart

    def _self_judge(self, exc: Exception) -> object:
        """Return what *on* says about *exc* if it is to be retried, else None."""
        if self._self_attempts == 1:
            return None
        verdict = self._self_hook(exc)
        # A predicate may answer with a custom wait (a number), which stamina
        # takes as "retry"; None counts as "no", as stamina does.
        if verdict is None or verdict is False:
            return None
        return verdict

    def _self_replay(self, replay: _Replay, send: Callable[[Callable[[], Any]], None]) -> None:
        """Send *replay* with *send*, and send it whole again after a transient failure."""
        try:
            send(replay.first)
            return
        except Exception as exc:
            verdict = None if replay.failure is not None else self._self_judge(exc)
            if verdict is None:
                raise
            error = exc
        replay.complete()
        self._self_retry(
            lambda: send(replay.again),
            error,
            verdict,
            progress=replay.transferred,
            veto=lambda: replay.failure is not None,
        )


class AdvancedRetry(Retry, tier="advanced"):
    """The advanced tier of :class:`Retry`, returned by ``Retry(advanced_storage)``.

    .. versionadded:: 0.1
    """

    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the chunks of *path*, resuming after a transient failure."""
        chunks = self._self_call(lambda: iter(self.__wrapped__.stream_read(path)))
        return _ResumingChunks(self, path, chunks)

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store *chunks* at *path*, sending all of them again on each try."""
        validate_key(path)
        if self._self_attempts == 1:
            self.__wrapped__.stream_write(path, chunks)
            return
        content = _ChunkSource(chunks)
        with _Replay(cast(IO[bytes], content)) as replay:
            self._self_replay(
                replay, lambda feed: self.__wrapped__.stream_write(path, iter_chunks(feed()))
            )

    def atomic_move(self, src: str, dst: str) -> None:
        """Move *src* to *dst*; a try that finds the move already done succeeds."""
        storage = self.__wrapped__
        # Only a source that existed when the move began can have been moved
        # by a try whose answer was lost; without it, "src not found" after a
        # failure means there was nothing to move, and dst is someone else's.
        if not self._self_call(lambda: storage.exists(src)):
            self._self_call(lambda: storage.atomic_move(src, dst))
            return

        def again() -> None:
            try:
                storage.atomic_move(src, dst)
            except FileNotFoundError:
                if storage.exists(dst) and not storage.exists(src):
                    return  # an earlier try moved it
                raise

        self._self_call(lambda: storage.atomic_move(src, dst), again=again)

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Return the keys under *prefix*, trying again on transient failures."""
        return self._self_call(lambda: self.__wrapped__.recursive_list(prefix))

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Mirror *src_prefix* to *dst_prefix*, trying again on transient failures."""
        self._self_call(lambda: self.__wrapped__.sync(src_prefix, dst_prefix))


# Options.


def _check_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Retry attempts must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"Retry attempts must be >= 1, got {value}")
    return value


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Retry {name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"Retry {name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _hook(on: object) -> Callable[[Exception], object]:
    """Turn *on* into one predicate (stamina would accept each form, but the
    wrapper consults the predicate itself too).

    A changed object is never retried, whatever *on* says: a read resumed
    again would meet the same object."""
    predicate = _predicate(on)

    def hook(exc: Exception) -> object:
        return False if isinstance(exc, SnapshotObjectChangedError) else predicate(exc)

    return hook


def _predicate(on: object) -> Callable[[Exception], object]:
    if on is None:
        return is_transient
    if isinstance(on, type):
        if not issubclass(on, Exception):
            raise TypeError(f"Retry on must be an Exception subclass, got {on!r}")
        return lambda exc: isinstance(exc, on)
    if isinstance(on, tuple):
        if not on or not all(isinstance(t, type) and issubclass(t, Exception) for t in on):
            raise TypeError(
                f"Retry on must be a non-empty tuple of Exception subclasses, got {on!r}"
            )
        return lambda exc: isinstance(exc, on)
    if callable(on):
        return cast(Callable[[Exception], object], on)
    raise TypeError(
        "Retry on must be an exception type, a tuple of them, or a predicate taking the "
        f"exception, not {type(on).__name__}"
    )


def _describe(on: object) -> str:
    if isinstance(on, type):
        return on.__name__
    if isinstance(on, tuple):
        return "(" + ", ".join(t.__name__ for t in on) + ("," if len(on) == 1 else "") + ")"
    return str(getattr(on, "__qualname__", None) or type(on).__name__)


# Writes: the caller's input, readable from its start on every try.


class _Replay:
    """The caller's content, given whole to every try of a write.

    A seekable stream is rewound to where it started.  Any other stream is
    copied into a spool while the first try reads it (``first``); after a
    failure, ``complete`` copies the rest, and every later try reads the
    spool (``again``).  Teeing rather than spooling everything up front lets
    the first try, which usually succeeds, run while the input is produced.
    ``failure`` is set when the caller's input itself fails: that is never
    retried.
    """

    def __init__(self, content: IO[bytes]) -> None:
        self._content = content
        self._start = _start_of(content)
        self._spool: IO[bytes] | None = None
        if self._start is None:
            # Closed (and its file removed) by __exit__.
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
            self._spool = cast(IO[bytes], spool)
        self._count = 0
        self.failure: BaseException | None = None

    def __enter__(self) -> _Replay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._spool is not None:
            self._spool.close()

    def transferred(self) -> int:
        """Bytes taken by the tries so far."""
        return self._count

    def first(self) -> IO[bytes]:
        return cast(IO[bytes], _Feed(self, self._content, tee=self._spool, caller=True))

    def again(self) -> IO[bytes]:
        if self._spool is not None:
            self._spool.seek(0)
            return cast(IO[bytes], _Feed(self, self._spool, tee=None, caller=False))
        try:
            self._content.seek(cast(int, self._start))
        except BaseException as exc:
            self.failure = exc
            raise
        return cast(IO[bytes], _Feed(self, self._content, tee=None, caller=True))

    def complete(self) -> None:
        """Copy what the first try left of a non-seekable input into the spool."""
        if self._spool is None:
            return
        self._spool.seek(0, io.SEEK_END)
        try:
            for chunk in iter_chunks(self._content):
                self._spool.write(chunk)
        except BaseException as exc:
            self.failure = exc
            raise


class _Feed(ReadableStream):
    """What one try of a write reads: *source*, counted, copied to *tee* if
    given, and never closed (it belongs to the caller or to the replay)."""

    def __init__(
        self, replay: _Replay, source: IO[bytes], *, tee: IO[bytes] | None, caller: bool
    ) -> None:
        super().__init__()
        self._replay = replay
        self._source = source
        self._tee = tee
        self._caller = caller

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._source.read(-1 if size is None else size)
        except BaseException as exc:
            if self._caller:
                self._replay.failure = exc
            raise
        if data:
            if self._tee is not None:
                self._tee.write(data)
            self._replay._count += len(data)
        return data


class _ChunkSource(ReadableStream):
    """The chunks given to ``stream_write`` as a non-seekable stream, so that
    they are spooled and replayed like any other input.  Closing it does
    not close the caller's iterator."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._chunk = b""
        self._offset = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            rest = self._chunk[self._offset :]
            self._chunk = b""
            return b"".join([rest, *(bytes(chunk) for chunk in self._chunks)])
        while self._offset >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._chunk, self._offset = bytes(chunk), 0
        if self._offset == 0 and len(self._chunk) <= size:
            data = self._chunk  # the common case: a whole chunk, not copied
        else:
            data = self._chunk[self._offset : self._offset + size]
        self._offset += len(data)
        return data


# Reads: streams that resume after a failure, in the object they started.


class _Delivered:
    """What a read of ``_path`` has handed out: how many bytes, and their
    hash.  The two resuming reads below derive from it, and set its state
    in their ``__init__``, in slots of their own: a separate object per read
    cost a tenth of ``Retry``'s own time on a read of 4 KiB.

    A read resumes in the object opened again only if that object starts
    with the same bytes, so that it never splices two versions.  SHA-256
    because tenants can choose content (a CRC can be forged to match), and
    because it is the fastest of :mod:`hashlib` on CPUs with SHA
    instructions.  The first :data:`_UNHASHED` bytes are kept as delivered,
    and hashed only once more follow or a resume needs their hash: most
    reads of a small object never resume, and hashing it cost a third of
    the wrapper's time on a page-cache read.  Past them only the hash is
    kept, whatever the size.
    """

    _path: str
    _size: int  # bytes delivered
    _hash: Any  # hashlib's type is private; None until first needed
    _held: builtins.list[bytes]  # the bytes delivered, until they are hashed
    _reread: int  # bytes read again by the resumes

    def _deliver(self, data: bytes) -> None:
        if not data:  # the end, which a consumer may read any number of times
            return
        self._size += len(data)
        if self._hash is None:
            if self._size <= _UNHASHED:
                # A copy of anything but bytes: a chunk the storage reuses
                # must not change what was delivered.
                self._held.append(data if type(data) is bytes else bytes(data))
                return
            self._hash_held()
        self._hash.update(data)

    def _digest(self) -> bytes:
        """The SHA-256 of the bytes delivered so far."""
        if self._hash is None:
            self._hash_held()
        return cast(bytes, self._hash.digest())

    def _reread_so_far(self) -> int:
        return self._reread

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A copy would read on from the same storage stream with a record of
        # its own of what was delivered, and resume at the wrong place.
        raise TypeError(f"cannot pickle or copy a read of {_show(self._path)}: read it again")

    def _check_again(self, chunks: Iterator[bytes]) -> bytes:
        """Read the first ``_size`` bytes of *chunks*, the object opened
        again, and return the bytes that came after them in the same chunk.

        Raise :class:`~django_snapshots.SnapshotObjectChangedError` unless
        they are the bytes delivered.
        """
        again = hashlib.sha256()
        left = self._size
        rest = memoryview(b"")
        while left:
            chunk = next(chunks, None)
            if chunk is None:
                raise self._changed(f"the object opened again has only {self._size - left} bytes")
            view = memoryview(chunk)
            taken = min(left, len(view))
            again.update(view[:taken])
            rest = view[taken:]
            left -= taken
            self._reread += taken
        if again.digest() != self._digest():
            raise self._changed(f"the first {self._size} bytes of the object opened again differ")
        return bytes(rest)

    def _hash_held(self) -> None:
        self._hash = hashlib.sha256()
        for data in self._held:
            self._hash.update(data)
        self._held.clear()

    def _changed(self, found: str) -> SnapshotObjectChangedError:
        return SnapshotObjectChangedError(
            f"{_show(self._path)} changed while it was being read: the read was interrupted "
            f"after {self._size} bytes, and {found}; read it again from the start"
        )


class _ResumingReader(ReadableStream, _Delivered):
    """The stream ``Retry.read`` hands out.

    It reads straight from the storage's stream (made buffered by
    :func:`_fast_lines` if it is not), so that nothing is buffered twice:
    ``read(n)`` is completed here after a short read, and ``readline`` is
    the storage stream's own.  It hashes the bytes it delivers; after a
    retryable failure it opens the object again, reads as many bytes, and
    reads on only if they hash the same.  Once a read raised, every later
    read raises the same exception.
    """

    # Every read of an object makes one of these, so its state is kept in
    # slots, ``closed`` included: io.IOBase keeps ``closed`` in an instance
    # dict that its close() creates, and the dict, filled, cost a third of
    # the wrapper's own time on a read of 4 KiB.  close() therefore never
    # calls io.RawIOBase.close(), and flush() checks ``closed`` itself.  (Every
    # other io.IOBase method, the finaliser that closes a stream dropped
    # unclosed included, reads the ``closed`` attribute, this slot.)
    __slots__ = (
        "_ended", "_failure", "_hash", "_held", "_path", "_reread", "_size", "_stream",
        "_wrapper", "closed",
    )  # fmt: skip
    closed: bool

    def __init__(self, wrapper: Retry, path: str, stream: IO[bytes]) -> None:
        # io.RawIOBase.__init__ sets nothing, so no base's __init__ is called.
        self._wrapper = wrapper
        # As _fast_lines does, without a call unless the stream needs a buffer.
        if getattr(type(stream), "readline", _GENERIC_READLINE) is _GENERIC_READLINE:
            stream = _fast_lines(stream)
        self._stream: IO[bytes] | None = stream
        self._failure: BaseException | None = None
        self._path = path
        self._size = 0
        self._hash = None
        self._held = []
        self._reread = 0
        self._ended = False  # a line found the end of the object
        # Last: until it is set, the finaliser leaves a half-made reader alone.
        self.closed = False

    def read(self, size: int | None = -1) -> bytes:
        if self._failure is not None:
            # The failure may have cost bytes: any answer but an exception
            # (b"" above all, the end of the object) would hide that.
            raise self._failure
        if self.closed:
            raise ValueError("I/O operation on closed file")
        # Read to the end in one call for -1: a failure part-way delivers
        # nothing, so resuming after the bytes delivered is still exact.  A
        # size that is no int is refused here: the storage stream refusing it
        # would be a failure of the read, and the stream would stay failed.
        want = size if type(size) is int and size >= 0 else _size_of(size)
        if want == 0:
            return b""
        # The usual read gets what it asked for at once, is the first 64 KiB
        # delivered, and is done here, without a call: on a read of a small
        # object each call cost a tenth of the wrapper's own time.  Any
        # other is finished by _complete or _recover.
        try:
            data = self._stream.read(want)  # type: ignore[union-attr]  # None once closed
            if (
                type(data) is bytes
                and (len(data) == want or want < 0 < len(data))
                and self._hash is None
            ):
                delivered = self._size + len(data)
                if delivered <= _UNHASHED:
                    self._size = delivered
                    self._held.append(data)  # as _deliver does
                    return data
        except BaseException as exc:
            error = exc
        else:
            return self._complete(data, want)
        # Resumed outside the handler, so that later failures do not chain to this one.
        return self._recover(error, want)

    def readline(self, size: int | None = -1) -> bytes:
        if self._failure is not None:
            raise self._failure
        if self.closed:
            raise ValueError("I/O operation on closed file")
        limit = size if type(size) is int else _size_of(size)
        if limit == 0 or self._ended:
            return b""
        try:
            return self._take(limit, True)
        except BaseException as exc:
            self._failure = exc
            raise

    def close(self) -> None:
        self.closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def flush(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def _complete(self, data: bytes | None, want: int) -> bytes:
        """Finish a read whose stream answered *data*: not yet counted as
        delivered, and maybe nothing yet (a non-blocking stream), fewer
        bytes than *want*, or a bytes-like object."""
        try:
            if data is None:
                data = self._take(want, False)
            else:
                if type(data) is not bytes:
                    data = bytes(data)
                self._deliver(data)
            if len(data) < want and data:
                data = self._fill(data, want)
        except BaseException as exc:
            self._failure = exc
            raise
        return data

    def _recover(self, error: BaseException, want: int) -> bytes:
        """Finish a read whose stream raised *error*: resume, or fail for good."""
        try:
            if not isinstance(error, Exception):
                raise error
            verdict = self._wrapper._self_judge(error)
            if verdict is None:
                raise error
            data = self._wrapper._self_retry(
                lambda: self._resume(want, False), error, verdict, progress=self._reread_so_far
            )
            if len(data) < want and data:
                data = self._fill(data, want)
        except BaseException as exc:
            self._failure = exc
            raise
        return data

    def _take(self, size: int, line: bool) -> bytes:
        """One read (a line if *line*) of at most *size* bytes, counted as
        delivered, and resumed after a retryable failure."""
        try:
            return self._take_once(size, line)
        except Exception as exc:
            verdict = self._wrapper._self_judge(exc)
            if verdict is None:
                raise
            error = exc
        # Resumed outside the handler, so that later failures do not chain to this one.
        return self._wrapper._self_retry(
            lambda: self._resume(size, line), error, verdict, progress=self._reread_so_far
        )

    def _take_once(self, size: int, line: bool) -> bytes:
        stream = self._stream
        assert stream is not None  # reopened by _resume before it reads
        if line:
            data = stream.readline(size)
            if data[-1:] != b"\n" and len(data) != size:  # short: see _line_on
                data, self._ended = _line_on(stream, data, size)
        else:
            data = stream.read(size)
            while data is None:  # a non-blocking stream with nothing ready yet
                data = stream.read(size)
        if type(data) is not bytes:
            data = bytes(data)
        self._deliver(data)
        return data

    def _fill(self, data: bytes, size: int) -> bytes:
        """Read on after a short read until *size* bytes or the end."""
        pieces = [data]
        missing = size - len(data)
        while missing > 0:
            more = self._take(missing, False)
            if not more:
                break
            pieces.append(more)
            missing -= len(more)
        return b"".join(pieces)

    def _resume(self, size: int, line: bool) -> bytes:
        broken, self._stream = self._stream, None
        if broken is not None:
            with contextlib.suppress(Exception):
                broken.close()
        self._stream = _fast_lines(self._wrapper.__wrapped__.read(self._path))
        self._check_again(_head(self._stream, self._size))
        return self._take_once(size, line)


def _fast_lines(stream: IO[bytes]) -> IO[bytes]:
    """*stream* itself when its ``readline`` is fast (a buffered stream, or
    one with a ``readline`` of its own); else *stream* buffered, as its
    ``readline`` would read it a byte at a time.  The buffer reads it through
    an ObservedReader, which waits while a non-blocking stream has nothing
    ready: a buffer over such a stream returns what it has then, which
    ``readline`` and ``read()`` would hand out as the end of a line or of
    the object."""
    if getattr(type(stream), "readline", _GENERIC_READLINE) is not _GENERIC_READLINE:
        return stream
    return buffered(ObservedReader(stream))


# What io.IOBase subclasses inherit: it reads a byte at a time from a stream without peek.
_GENERIC_READLINE = io.IOBase.readline


class _ResumingChunks(_Delivered):
    """The iterator ``Retry.stream_read`` hands out: the chunks of the
    object, resumed after a failure as :class:`_ResumingReader` does.  Once
    it raised, every later ``next`` raises the same exception rather than
    end the iteration, which would look like the end of the object."""

    __slots__ = ("_chunks", "_failure", "_hash", "_held", "_path", "_reread", "_size", "_wrapper")

    def __init__(self, wrapper: AdvancedRetry, path: str, chunks: Iterator[bytes]) -> None:
        self._wrapper = wrapper
        self._chunks: Iterator[bytes] | None = chunks
        self._failure: BaseException | None = None
        self._path = path
        self._size = 0
        self._hash = None
        self._held = []
        self._reread = 0

    def __iter__(self) -> _ResumingChunks:
        return self

    def __next__(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        if self._chunks is None:  # closed by the caller, or at the end
            raise StopIteration
        try:
            chunk = self._next()
        except BaseException as exc:
            self._failure = exc
            with contextlib.suppress(Exception):
                self.close()
            raise
        if chunk is None:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Close the storage's iterator, as closing a generator would."""
        chunks, self._chunks = self._chunks, None
        close = getattr(chunks, "close", None)
        if close is not None:
            close()

    def _next(self) -> bytes | None:
        try:
            return self._next_once()
        except Exception as exc:
            verdict = self._wrapper._self_judge(exc)
            if verdict is None:
                raise
            error = exc
        return self._wrapper._self_retry(self._resume, error, verdict, progress=self._reread_so_far)

    def _next_once(self) -> bytes | None:
        assert self._chunks is not None
        for chunk in self._chunks:
            if chunk:
                self._deliver(chunk)
                return chunk
        return None

    def _resume(self) -> bytes | None:
        with contextlib.suppress(Exception):
            self.close()
        self._chunks = iter(self._wrapper.__wrapped__.stream_read(self._path))
        rest = self._check_again(self._chunks)
        if rest:
            self._deliver(rest)
            return rest
        return self._next_once()


def _head(stream: IO[bytes], size: int) -> Iterator[bytes]:
    """Yield the first *size* bytes of *stream*, or fewer if it ends first;
    never read beyond them."""
    while size:
        data = stream.read(min(CHUNK_SIZE, size))
        if data is None:  # a non-blocking stream with nothing ready yet
            continue
        if not data:
            return
        size -= len(data)
        yield data

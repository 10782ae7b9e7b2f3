"""Fault injection for testing code that stores artifacts.

:class:`Chaos` wraps any storage and makes a share of its operations fail the
way a flaky network does: before they start, in the middle of a download
(after some bytes were delivered) and in the middle of an upload (after part
of the input was consumed).  Use it to prove that your own stack or backup
code survives such failures::

    >>> import io
    >>> from django_snapshots.storage import MemoryBackend
    >>> from django_snapshots.testing import Chaos
    >>> flaky = Chaos(MemoryBackend(), failure_rate=0.5, seed=7)
    >>> flaky
    Chaos(MemoryBackend(), failure_rate=0.5, ack_loss_rate=0.0, seed=7, latency=0.0, errors=...)
    >>> outcomes = []
    >>> for attempt in range(6):
    ...     try:
    ...         flaky.write("db.dump", io.BytesIO(b"payload"))
    ...         outcomes.append("ok")
    ...     except ConnectionError:
    ...         outcomes.append("failed")
    >>> sorted(set(outcomes))
    ['failed', 'ok']

*ack_loss_rate* adds the failure that retrying code gets wrong most often:
the operation took effect, and only its answer was lost.  Code that retries
must then find the work already done, not fail on it nor do it twice::

    >>> lossy = Chaos(MemoryBackend(), failure_rate=0.0, ack_loss_rate=1.0, seed=1)
    >>> lossy.write("db.dump", io.BytesIO(b"payload"))
    Traceback (most recent call last):
      ...
    ConnectionError: Chaos injected ConnectionError: write 'db.dump' failed after it took effect ...
    >>> lossy.__wrapped__.exists("db.dump")
    True

The same seed gives the same faults at the same places for the same
sequence of calls, so a failing test can be replayed.
"""

from __future__ import annotations

import io
import math
import random
import sys
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast, overload

from django_snapshots.exceptions import SnapshotStorageError
from django_snapshots.storage.keys import validate_key, validate_prefix, validate_sync_prefixes
from django_snapshots.storage.streams import ObservedReader, StickyChunks, check_binary_content
from django_snapshots.storage.wrappers.base import StorageWrapper

if TYPE_CHECKING:
    from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage

__all__ = ["AdvancedChaos", "Chaos"]

# Mid-stream faults strike at a byte offset whose order of magnitude is
# uniform between 1 byte and 1 GiB, so that tiny test objects and
# multi-gigabyte artifacts both see failures inside the transfer.
_MAX_OFFSET_BITS = 30


class Chaos(StorageWrapper):
    """Make a share of the operations on *storage* fail like a flaky network.

    Each operation first sleeps *latency* seconds, then fails with
    probability *failure_rate* by raising one of the *errors* types (picked
    at random, message saying the fault was injected).  A failing
    ``read``, ``write``, ``stream_read`` or ``stream_write`` fails either
    before it starts or in the middle of the transfer, with equal odds:

    - a read returns a file object (or iterator) that raises after some bytes
      were delivered, instead of returning more data or the end of stream;
    - a write hands the wrapped storage an input that raises after part of
      the caller's content was consumed, exactly like a dropped connection,
      so the wrapped storage sees its input fail.

    The other operations fail before they start.

    Each operation that no fault stopped then loses its acknowledgement with
    probability *ack_loss_rate*: the wrapped storage carries it out
    completely, and the error is raised instead of its answer, as when a
    connection drops after the server acted but before its reply arrived:

    - ``write``, ``stream_write``, ``delete``, ``atomic_move`` and ``sync``
      took effect (the whole content is stored, the key deleted, the object
      moved, the prefix mirrored), then raise;
    - ``list``, ``recursive_list`` and ``exists`` asked the storage, then
      raise instead of returning its answer;
    - ``read`` and ``stream_read`` open the object and deliver every byte of
      it, then raise where the end of the stream would be reported, so a
      caller cannot tell the transfer was complete.

    Code that retries must therefore find its earlier success (or repeat an
    idempotent operation), never report a failure for work that was done,
    nor take bytes for a whole object without the end of the stream.

    Keys and prefixes are validated first, so invalid input is always
    reported as such, never hidden behind an injected fault.  An injected
    :class:`~django_snapshots.SnapshotStorageError` is marked transient.

    *seed* makes the faults reproducible: the same seed and the same
    sequence of calls give the same faults at the same byte offsets.  Calls
    from several threads draw from one generator under a lock, so which
    thread meets which fault depends on scheduling: determinism across
    threads is best-effort.

    Calling ``Chaos(storage)`` returns an :class:`AdvancedChaos` when
    *storage* is of the advanced tier.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       *ack_loss_rate*.
    """

    _self_failure_rate: float
    _self_ack_loss_rate: float
    _self_seed: int | str | bytes | None
    _self_latency: float
    _self_errors: tuple[type[Exception], ...]
    _self_random: random.Random
    _self_lock: threading.Lock

    if TYPE_CHECKING:

        @overload
        def __new__(
            cls,
            storage: AdvancedSnapshotStorage,
            /,
            *,
            failure_rate: float = ...,
            ack_loss_rate: float = ...,
            seed: int | str | bytes | None = ...,
            latency: float = ...,
            errors: type[Exception] | tuple[type[Exception], ...] = ...,
        ) -> AdvancedChaos: ...

        @overload
        def __new__(
            cls,
            storage: SnapshotStorage,
            /,
            *,
            failure_rate: float = ...,
            ack_loss_rate: float = ...,
            seed: int | str | bytes | None = ...,
            latency: float = ...,
            errors: type[Exception] | tuple[type[Exception], ...] = ...,
        ) -> Chaos: ...

        def __new__(cls, storage: SnapshotStorage, /, **options: Any) -> Any: ...

    else:
        # Hidden from type checkers, which would read the constructor's
        # signature from __init__ and miss the tier picked by the overloads.
        def __init__(self, storage, /, **options):
            settings = _settings(**options)
            super().__init__(storage)
            (
                self._self_failure_rate,
                self._self_ack_loss_rate,
                self._self_seed,
                self._self_latency,
                self._self_errors,
            ) = settings
            self._self_random = random.Random(self._self_seed)
            self._self_lock = threading.Lock()

    def _repr_options(self) -> list[str]:
        names = ", ".join(t.__name__ for t in self._self_errors)
        if len(self._self_errors) == 1:
            names += ","
        return [
            f"failure_rate={self._self_failure_rate!r}",
            f"ack_loss_rate={self._self_ack_loss_rate!r}",
            f"seed={self._self_seed!r}",
            f"latency={self._self_latency!r}",
            f"errors=({names})",
        ]

    # The five operations of the basic tier.

    def read(self, path: str) -> IO[bytes]:
        """Return the object at *path*, possibly failing before, while or after it is read."""
        validate_key(path)
        fault = self._draw(f"read {path!r}", streaming=True)
        reader = self.__wrapped__.read(path)
        if fault is None:
            return reader
        return cast(IO[bytes], _FaultyReader(reader, fault))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store *content* at *path*, possibly failing before, while or after it is stored."""
        validate_key(path)
        check_binary_content(content)
        fault = self._draw(f"write {path!r}", streaming=True)
        if fault is None or fault.ack_lost:
            self.__wrapped__.write(path, content)
            _lose_ack(fault)
            return
        # The storage pulls the caller's content through a reader that stops
        # at the fault: nothing beyond it is consumed, as on a dropped upload.
        faulty = _FaultyReader(content, fault, owns_source=False)
        try:
            self.__wrapped__.write(path, cast(IO[bytes], faulty))
        finally:
            faulty.close()

    def list(self, prefix: str) -> list[str]:
        """Return the keys under *prefix*, or fail before asking or after the answer."""
        validate_prefix(prefix)
        fault = self._draw(f"list {prefix!r}")
        keys = self.__wrapped__.list(prefix)
        _lose_ack(fault)
        return keys

    def delete(self, path: str) -> None:
        """Delete *path*, or fail before or after deleting it."""
        validate_key(path)
        fault = self._draw(f"delete {path!r}")
        self.__wrapped__.delete(path)
        _lose_ack(fault)

    def exists(self, path: str) -> bool:
        """Tell whether *path* exists, or fail before asking or after the answer."""
        validate_key(path)
        fault = self._draw(f"exists {path!r}")
        found = self.__wrapped__.exists(path)
        _lose_ack(fault)
        return found

    def _draw(self, operation: str, *, streaming: bool = False) -> _Fault | None:
        # Sleep and decide before any I/O.  A fault that strikes before the
        # start is raised here; a mid-stream fault or a lost acknowledgement
        # is returned to the caller.
        if self._self_latency:
            time.sleep(self._self_latency)
        rng = self._self_random
        with self._self_lock:
            if rng.random() >= self._self_failure_rate:
                # Drawn only when enabled, so that adding the option left the
                # faults of every seed without it where they were.
                if self._self_ack_loss_rate and rng.random() < self._self_ack_loss_rate:
                    error = rng.choice(self._self_errors)
                    # A read delivers everything, then loses the end of stream.
                    end = sys.maxsize if streaming else None
                    return _Fault(operation=operation, error=error, offset=end, ack_lost=True)
                return None
            error = rng.choice(self._self_errors)
            offset = None
            if streaming and rng.random() < 0.5:
                offset = rng.randint(0, 2 ** rng.randint(0, _MAX_OFFSET_BITS))
        fault = _Fault(operation=operation, error=error, offset=offset)
        if offset is None:
            raise fault.exception("before it started")
        return fault


class AdvancedChaos(Chaos, tier="advanced"):
    """The advanced-tier twin of :class:`Chaos`; ``Chaos(storage)`` picks it.

    .. versionadded:: 0.1
    """

    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the object at *path*, possibly failing before, while or after it is read."""
        validate_key(path)
        fault = self._draw(f"stream_read {path!r}", streaming=True)
        chunks = self.__wrapped__.stream_read(path)
        if fault is None:
            return chunks
        return StickyChunks(_faulty_chunks(chunks, fault))

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store *chunks* at *path*, possibly failing before, while or after they are stored."""
        validate_key(path)
        fault = self._draw(f"stream_write {path!r}", streaming=True)
        if fault is None or fault.ack_lost:
            self.__wrapped__.stream_write(path, chunks)
            _lose_ack(fault)
            return
        faulty = _faulty_chunks(chunks, fault)
        try:
            self.__wrapped__.stream_write(path, faulty)
        finally:
            faulty.close()

    def atomic_move(self, src: str, dst: str) -> None:
        """Move *src* to *dst*, or fail before or after moving it."""
        validate_key(src)
        validate_key(dst)
        fault = self._draw(f"atomic_move {src!r} -> {dst!r}")
        self.__wrapped__.atomic_move(src, dst)
        _lose_ack(fault)

    def recursive_list(self, prefix: str) -> list[str]:
        """Return the keys under *prefix*, or fail before asking or after the answer."""
        validate_prefix(prefix)
        fault = self._draw(f"recursive_list {prefix!r}")
        keys = self.__wrapped__.recursive_list(prefix)
        _lose_ack(fault)
        return keys

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Mirror *src_prefix* to *dst_prefix*, or fail before or after mirroring it."""
        validate_sync_prefixes(src_prefix, dst_prefix)
        fault = self._draw(f"sync {src_prefix!r} -> {dst_prefix!r}")
        self.__wrapped__.sync(src_prefix, dst_prefix)
        _lose_ack(fault)


@dataclass(frozen=True)
class _Fault:
    """One injected failure: which operation, which error, for a
    mid-stream fault the number of bytes that get through first, and
    whether the operation completes before it fails (*ack_lost*)."""

    operation: str
    error: type[Exception]
    offset: int | None
    ack_lost: bool = False

    def exception(self, when: str) -> Exception:
        message = f"Chaos injected {self.error.__name__}: {self.operation} failed {when}"
        if issubclass(self.error, SnapshotStorageError):
            return self.error(message, transient=True)
        return self.error(message)

    def mid_stream(self, transferred: int) -> Exception:
        if self.ack_lost:
            return self.exception(f"after all {transferred} bytes (the end of the stream was lost)")
        return self.exception(f"after {transferred} bytes")


def _lose_ack(fault: _Fault | None) -> None:
    """Raise the error of *fault*, for an operation that took effect."""
    if fault is not None:
        raise fault.exception("after it took effect (the acknowledgement was lost)")


def _faulty_chunks(chunks: Iterable[bytes], fault: _Fault) -> Generator[bytes, None, None]:
    """Pass *chunks* through until *fault.offset* bytes went by, then raise
    (also when the chunks end first: the fault hides the end of the stream)."""
    assert fault.offset is not None
    remaining = fault.offset
    source = iter(chunks)
    try:
        for chunk in source:
            if len(chunk) >= remaining:
                if remaining:
                    yield chunk[:remaining]
                remaining = 0
                break
            remaining -= len(chunk)
            yield chunk
        raise fault.mid_stream(fault.offset - remaining)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


class _FaultyReader(ObservedReader):
    """A reader that delivers *fault.offset* bytes of *source*, then raises
    on every further read (also when *source* ends first).  Closing it closes
    *source* only if it *owns_source*."""

    def __init__(self, source: IO[bytes], fault: _Fault, *, owns_source: bool = True) -> None:
        super().__init__(source)
        self._fault = fault
        self._owns_source = owns_source
        self._delivered = 0
        self._failed = False

    def readinto(self, buffer: Any) -> int:
        assert self._fault.offset is not None
        remaining = self._fault.offset - self._delivered
        if self._failed or remaining <= 0:
            self._fail()
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        n = super().readinto(view[:remaining])
        self._delivered += n
        return n

    def close(self) -> None:
        if self._owns_source:
            super().close()
        else:
            io.RawIOBase.close(self)

    def _on_eof(self) -> None:
        self._fail()

    def _fail(self) -> None:
        self._failed = True
        raise self._fault.mid_stream(self._delivered)


def _settings(
    *,
    failure_rate: float = 0.1,
    ack_loss_rate: float = 0.0,
    seed: int | str | bytes | None = None,
    latency: float = 0.0,
    errors: type[Exception] | tuple[type[Exception], ...] = (ConnectionError,),
) -> tuple[float, float, int | str | bytes | None, float, tuple[type[Exception], ...]]:
    """Validate the options of :class:`Chaos` and return them normalized."""
    rate = _check_rate("failure_rate", failure_rate)
    lost = _check_rate("ack_loss_rate", ack_loss_rate)
    delay = _check_number("latency", latency)
    if delay < 0:
        raise ValueError(f"Chaos latency must be >= 0 seconds, got {latency!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str, bytes))):
        raise TypeError(f"Chaos seed must be an int, str, bytes or None, not {type(seed).__name__}")
    return rate, lost, seed, delay, _check_errors(errors)


def _check_rate(name: str, value: object) -> float:
    rate = _check_number(name, value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Chaos {name} must be between 0 and 1, got {value!r}")
    return rate


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Chaos {name} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"Chaos {name} must be finite, got {value!r}")
    return number


def _check_errors(errors: object) -> tuple[type[Exception], ...]:
    types = (errors,) if isinstance(errors, type) else errors
    if not isinstance(types, tuple) or not types:
        raise TypeError(
            f"Chaos errors must be an exception type or a non-empty tuple of them, not {errors!r}"
        )
    for error in types:
        if not (isinstance(error, type) and issubclass(error, Exception)):
            raise TypeError(f"Chaos errors must be Exception subclasses, got {error!r}")
        try:
            _Fault(operation="check", error=error, offset=None).exception("check")
        except TypeError as exc:
            raise TypeError(
                f"Chaos cannot raise {error.__name__}: it must accept a single message "
                f"argument ({type(exc).__name__}: {exc})"
            ) from None
    return types

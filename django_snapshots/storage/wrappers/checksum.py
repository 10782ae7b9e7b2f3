"""The integrity wrapper: a digest beside every object, checked on every read.

    >>> import io
    >>> from django_snapshots.storage import Checksum, MemoryBackend
    >>> inner = MemoryBackend()
    >>> storage = Checksum(inner)
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> inner.list("")
    ['db/latest.dump', 'db/latest.dump.sha256']
    >>> inner.read("db/latest.dump.sha256").read()
    b'...  latest.dump\\n'
    >>> storage.list("")
    ['db/latest.dump']
    >>> storage.read("db/latest.dump").read()
    b'dump'

Each object ``k`` gets a *sidecar* ``k.<algorithm>`` in the format of the
coreutils checksum tools, ``<hexdigest>  <basename>\\n``, so running
``sha256sum -c latest.dump.sha256`` in the directory of a local backup
checks it without Python.  What the wrapper guarantees:

- **One pass.**  Writes hash the data as it streams to the storage (in a
  worker thread, overlapping the I/O); nothing is read twice.
- **No silent corruption.**  ``read`` and ``stream_read`` verify as the
  data flows and raise :class:`~django_snapshots.SnapshotIntegrityError`
  (naming the key and both digests) **before handing out the last chunk**
  of an object that does not match, so a consumer that reads to the end
  never gets corrupt data without an exception.  A malformed sidecar, or one
  naming another file, is an integrity error too.
- **A missing sidecar** raises :class:`~django_snapshots.SnapshotIntegrityError`
  with ``strict=True`` (the default); with ``strict=False`` the data is
  returned unverified and a warning is logged
  (``snapshots.checksum.unverified`` on the ``django_snapshots.storage``
  structlog logger).
- **Invisible sidecars.**  ``list`` and ``recursive_list`` leave them out,
  ``exists`` is ``False`` for them and reading one raises
  :class:`FileNotFoundError`; writing a key that ends in the sidecar suffix
  of *any* fixed-length :mod:`hashlib` algorithm (``.sha256``, ``.md5``,
  ``.SHA512``..., without regard to case, so that layers with different
  algorithms can share a storage) raises
  :class:`~django_snapshots.SnapshotStoragePathError`, and so does a key too
  long to get a sidecar (the suffix counts in the 1024-byte limit and in the
  length of one name where the storage below limits it).  One stack holds
  one ``Checksum`` layer.
- **Write order.**  A write stores the data, then the sidecar.  Until the
  new sidecar is stored, the object is checked against the old one (a
  mismatch) or against none (a missing sidecar), so a write that fails or
  is interrupted at any point leaves an object that fails verification or
  the old object intact, never one that passes with the wrong data.  A write
  that fails while the data is sent leaves the old object and its sidecar
  untouched (the built-in backends replace objects atomically).
- **Moves carry the sidecar.**  ``delete`` removes the data, then the
  sidecar (an orphan sidecar, left by an interrupted delete, is never
  carried anywhere; ``snapshots verify`` reports it, and
  ``snapshots rm --force KEY`` removes it).  ``atomic_move`` first stores the sidecar of
  *dst*, naming its basename, then moves the data, then removes the old
  sidecar.  Interrupted before the data moved, it leaves *src* intact and
  *dst* failing verification, and running the move again (as ``Retry``
  does) completes it; interrupted after, *dst* is already complete.
  ``sync`` mirrors sidecars with their objects (basenames do not change).
- **Consistent across threads and processes of one host.**  An object and
  its sidecar change together: a write, delete or move holds the key's lock
  from the data to the sidecar, and a read takes the sidecar and opens the
  data under the same lock (shared with other readers), so that a reader
  never pairs a new object with an old sidecar, and once concurrent writers
  of a key have finished, the key holds the last one's object and sidecar.
  The lock is a per-key lock in the process, and an advisory ``flock`` on a
  lock file in *lock_dir* (the system's temporary directory by default),
  named after the storage at the bottom of the stack (its ``repr``) and the
  key it receives: every process of the host whose stack reaches the same
  storage takes the same lock, and a process that dies releases it.
  Processes on *different hosts* share no lock: writing one key from two
  hosts at once may leave the data of one writer and the sidecar of the
  other, which every read reports as a
  :class:`~django_snapshots.SnapshotIntegrityError` (never wrong data) until
  the key is written again.  Where ``fcntl`` is missing (Windows), only the
  threads of one process are coordinated.

Any fixed-length :mod:`hashlib` algorithm works (``sha256``, ``sha512``,
``blake2b``, ``sha3_256``, ``md5``...); ``md5sum``, ``sha1sum``,
``sha224sum`` to ``sha512sum`` and ``b2sum`` (for ``blake2b``) read the
sidecars.  Variable-length digests (``shake_128``, ``shake_256``) are refused.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import itertools
import os
import queue
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, cast, overload

import structlog

from django_snapshots.exceptions import SnapshotIntegrityError, SnapshotStoragePathError
from django_snapshots.storage.keys import MAX_KEY_BYTES, _show, validate_key
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import (
    ChunkReader,
    ReadableStream,
    StickyChunks,
    _start_of,
    buffered,
    check_binary_content,
    iter_chunks,
)
from django_snapshots.storage.wrappers.base import (
    StorageWrapper,
    _Verification,
    _verification_for,
    validate_key_through,
)

__all__ = ["AdvancedChecksum", "Checksum"]

_logger = structlog.get_logger("django_snapshots.storage")

# A sidecar holds one short line; anything longer is not one of ours.
_MAX_SIDECAR_BYTES = 4096
_SIDECAR_LINE = re.compile(r"([0-9a-fA-F]+) [ *]([^\n]+)\n?")

# Data is hashed in a worker thread, so that hashing (which releases the GIL)
# overlaps the storage's I/O, in batches of this many bytes.  Each hand-over
# costs a thread switch, but larger batches are slower still: the worker
# should hash the data while it is in the CPU cache, right behind the I/O.
_BATCH = 1024 * 1024
# Batches handed over and not yet hashed; bounds the memory in flight.
_QUEUE_DEPTH = 2
# Checksum layers with different algorithms may share one storage: a key of
# one must never be a sidecar name of another.  Every fixed-length algorithm
# that hashlib may offer on any build, plus those this build offers.
_KNOWN_ALGORITHMS = (
    "blake2b", "blake2s", "md4", "md5", "md5_sha1", "mdc2", "ripemd160", "sha1", "sha224",
    "sha256", "sha384", "sha3_224", "sha3_256", "sha3_384", "sha3_512", "sha512",
    "sha512_224", "sha512_256", "sm3", "whirlpool",
)  # fmt: skip

# Keys are guarded by a fixed set of locks (a key's lock is picked by its
# hash): bounded memory whatever the number of keys, and rare contention.
_LOCK_STRIPES = 64
# The same, across processes: lock files per storage, picked by a stable
# hash of the key (Python's hash() differs from one process to the next).
_FILE_LOCK_STRIPES = 64

if sys.platform != "win32":
    import fcntl


class Checksum(StorageWrapper):
    """Store a digest of every object in a sidecar and verify it on every read.

    *algorithm* is any fixed-length :mod:`hashlib` algorithm; *strict*
    decides what a missing sidecar means (an error, or a warning and
    unverified data).  Options are checked when the wrapper is built.

    ``Checksum(storage)`` keeps the tier of *storage*.

    .. versionadded:: 0.1
    """

    _self_algorithm: str
    _self_suffix: str
    _self_hex_length: int
    _self_strict: bool
    _self_locks: tuple[threading.Lock, ...]
    _self_lock_dir: str | None
    _self_lock_files: str | None

    _checks_digests = True

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
            algorithm: str = ...,
            strict: bool = ...,
            lock_dir: str | os.PathLike[str] | None = ...,
        ) -> AdvancedChecksum: ...
        @overload
        def __new__(
            cls,
            storage: SnapshotStorage,
            /,
            *,
            algorithm: str = ...,
            strict: bool = ...,
            lock_dir: str | os.PathLike[str] | None = ...,
        ) -> Checksum: ...
        def __new__(cls, storage: SnapshotStorage, /, **options: Any) -> Any: ...

    else:

        def __init__(self, storage, /, *, algorithm="sha256", strict=True, lock_dir=None):
            name, size = _check_algorithm(algorithm)
            if not isinstance(strict, bool):
                raise TypeError(f"Checksum strict must be a bool, not {type(strict).__name__}")
            directory = _check_lock_dir(lock_dir)
            below = storage
            while isinstance(below, StorageWrapper):
                if isinstance(below, Checksum):
                    raise TypeError(
                        f"Checksum() over {storage!r}: the stack already has a Checksum layer, "
                        "and each refuses the other's sidecar names; keep one"
                    )
                below = below.__wrapped__
            super().__init__(storage)
            self._self_algorithm = name
            self._self_suffix = "." + name
            self._self_hex_length = 2 * size
            self._self_strict = strict
            self._self_locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
            self._self_lock_dir = None if lock_dir is None else directory
            self._self_lock_files = _lock_files(directory, below)

    # The five operations of the basic tier.

    def read(self, path: str) -> IO[bytes]:
        """Open *path*; the stream raises on a digest mismatch before its last chunk."""
        verification = _verification_for(self, path)
        with self._self_locked(path, shared=True):
            expected = self._self_expected(
                path, strict=verification is not None or self._self_strict
            )
            stream = self.__wrapped__.read(path)
            if expected is None:
                return stream
            chunks = _started(iter_chunks(stream), stream.close)
        chunks = self._self_verified(path, expected, chunks, stream.close, verification)
        return buffered(ChunkReader(chunks))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store *content* at *path*, then its digest in the sidecar."""
        sidecar = self._self_sidecar(path)
        check_binary_content(content)
        with self._self_locked(path), _Digest(self._self_algorithm) as digest:
            self.__wrapped__.write(path, cast(IO[bytes], _HashingReader(content, digest)))
            hexdigest = digest.hexdigest()
            self.__wrapped__.write(sidecar, io.BytesIO(_line(path, hexdigest)))

    def list(self, prefix: str) -> builtins.list[str]:
        """Return the keys under *prefix*, without the sidecars."""
        return self._self_visible(self.__wrapped__.list(prefix))

    def delete(self, path: str) -> None:
        """Delete *path* and then its sidecar; a sidecar's own name is ignored."""
        validate_key(path)
        if _is_sidecar_name(path):
            return  # no object of that name exists through this wrapper
        sidecar = path + self._self_suffix
        with self._self_locked(path):
            self.__wrapped__.delete(path)
            if _fits(sidecar):
                self.__wrapped__.delete(sidecar)

    def exists(self, path: str) -> bool:
        """Tell whether *path* is stored; ``False`` for a sidecar's name."""
        validate_key(path)
        if _is_sidecar_name(path):
            return False
        return self.__wrapped__.exists(path)

    @property
    def sidecar_suffix(self) -> str:
        """The suffix of this layer's sidecars, such as ``".sha256"``.

        .. versionadded:: 0.1
        """
        return self._self_suffix

    def verify(self, path: str) -> str:
        """Read *path* whole and return its hex digest, or raise
        :class:`~django_snapshots.SnapshotIntegrityError` if it does not
        match its sidecar or has none (whatever *strict* says).

        Every wrapper above offers ``verify`` too, and reads the object
        through itself down to this layer, keys mapped as for ``read``: so
        ``Logging(Prefix(Checksum(storage), "acme")).verify("k")`` verifies
        ``acme/k`` and logs the read (see
        :meth:`~django_snapshots.storage.wrappers.base.StorageWrapper.verify`).

        .. versionadded:: 0.1
        """
        with self._self_locked(path, shared=True):
            expected = self._self_expected(path, strict=True)
            assert expected is not None
            if isinstance(self.__wrapped__, AdvancedSnapshotStorage):
                chunks: Iterator[bytes] = iter(self.__wrapped__.stream_read(path))
                close = getattr(chunks, "close", _nothing)
            else:
                stream = self.__wrapped__.read(path)
                chunks, close = iter_chunks(stream), stream.close
            chunks = _started(chunks, close)
        for _ in self._self_verified(path, expected, chunks, close):
            pass
        return expected

    def _repr_options(self) -> builtins.list[str]:
        options = [f"algorithm={self._self_algorithm!r}"]
        if not self._self_strict:
            options.append("strict=False")
        if self._self_lock_dir is not None:
            options.append(f"lock_dir={self._self_lock_dir!r}")
        return options

    @contextlib.contextmanager
    def _self_locked(self, *paths: str, shared: bool = False) -> Iterator[None]:
        """Hold the locks of *paths* (all locks when none is given), so that
        an object and its sidecar change, and are read, together: first the
        locks of this process, then those of the host (lock files, *shared*
        with other readers when reading).  Both sets are taken in one order,
        so that no two callers wait for each other."""
        locks = self._self_locks
        if paths:
            indices = sorted({hash(path) % len(locks) for path in paths})
            locks = tuple(locks[i] for i in indices)
        with contextlib.ExitStack() as held:
            for lock in locks:
                held.enter_context(lock)
            if self._self_lock_files is not None:
                if paths:
                    stripes = sorted({self._self_file_stripe(path) for path in paths})
                else:
                    stripes = list(range(_FILE_LOCK_STRIPES))
                for stripe in stripes:
                    held.enter_context(
                        _file_locked(f"{self._self_lock_files}-{stripe:02x}.lock", shared=shared)
                    )
            yield

    def _self_file_stripe(self, path: str) -> int:
        """The lock file of *path*, by the key the bottom storage receives, so
        that stacks reaching one storage through different prefixes agree."""
        try:
            key = validate_key_through(self.__wrapped__, path)
        except (SnapshotStoragePathError, TypeError):
            key = repr(path)  # the operation refuses it before any I/O
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % _FILE_LOCK_STRIPES

    # Sidecars.

    def _self_storage_key(self, key: str) -> str:
        validate_key(key)
        if _is_sidecar_name(key):
            raise SnapshotStoragePathError(
                f"invalid key {_show(key)}: keys ending in '.<algorithm>' for a hashlib "
                f"algorithm ({key.rpartition('.')[2]!r}) are reserved for checksum sidecars"
            )
        return key

    def _self_sidecar(self, path: str) -> str:
        """Return the sidecar key of the object key *path*, or raise before any I/O."""
        self._self_storage_key(path)
        sidecar = path + self._self_suffix
        try:
            # Layers below may lengthen keys (Prefix) or limit the length of
            # a name (a file system): the sidecar must fit there too, or the
            # data would be stored and its sidecar refused.
            if not _fits(sidecar):
                raise SnapshotStoragePathError(
                    f"is {len(sidecar.encode())} UTF-8 bytes long, more than {MAX_KEY_BYTES}"
                )
            validate_key_through(self.__wrapped__, sidecar)
        except SnapshotStoragePathError as exc:
            raise SnapshotStoragePathError(
                f"invalid key {_show(path)}: too long for its checksum sidecar "
                f"{self._self_suffix!r}, whose key as stored below this wrapper would be "
                f"refused ({_reason(exc)})"
            ) from None
        return sidecar

    def _self_visible(self, keys: builtins.list[str]) -> builtins.list[str]:
        return [key for key in keys if not _is_sidecar_name(key)]

    def _self_expected(self, path: str, *, strict: bool) -> str | None:
        """Return the digest recorded for *path*, or None for a missing sidecar
        when not *strict*.  Raises :class:`FileNotFoundError` when the object
        is missing, whatever its sidecar."""
        if isinstance(path, str) and _is_sidecar_name(path):
            validate_key(path)
            raise FileNotFoundError(f"no object at {path!r}")
        sidecar = self._self_sidecar(path)
        try:
            stream = self.__wrapped__.read(sidecar)
        except FileNotFoundError:
            if not self.__wrapped__.exists(path):
                raise FileNotFoundError(f"no object at {path!r}") from None
            if strict:
                raise SnapshotIntegrityError(
                    f"{path!r} cannot be verified: its checksum sidecar {sidecar!r} is missing"
                ) from None
            _logger.warning(
                "snapshots.checksum.unverified",
                path=path,
                sidecar=sidecar,
                algorithm=self._self_algorithm,
                reason="missing sidecar",
            )
            return None
        try:
            data = _read_at_most(stream, _MAX_SIDECAR_BYTES)
        finally:
            stream.close()
        return self._self_parse(path, sidecar, data)

    def _self_parse(self, path: str, sidecar: str, data: bytes) -> str:
        def malformed(problem: str) -> SnapshotIntegrityError:
            return SnapshotIntegrityError(
                f"{path!r} cannot be verified: its checksum sidecar {sidecar!r} {problem}"
            )

        if len(data) > _MAX_SIDECAR_BYTES:
            raise malformed(f"is longer than {_MAX_SIDECAR_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed("is not UTF-8 text") from None
        match = _SIDECAR_LINE.fullmatch(text)
        if match is None:
            raise malformed(f"is not one line '<hexdigest>  <name>': {text[:100]!r}")
        digest, name = match.groups()
        if len(digest) != self._self_hex_length:
            raise malformed(
                f"holds a digest of {len(digest)} hex digits; "
                f"{self._self_algorithm} has {self._self_hex_length}"
            )
        basename = path.rsplit("/", 1)[-1]
        if name != basename:
            raise malformed(f"names {name!r}, not {basename!r}")
        return digest.lower()

    def _self_verified(
        self,
        path: str,
        expected: str,
        chunks: Iterator[bytes],
        close: Callable[[], object],
        verification: _Verification | None = None,
    ) -> Iterator[bytes]:
        """Pass *chunks* on, holding each back until the next one arrived, so
        that a mismatch is raised before the last chunk is handed out.
        *close* releases the source, also when the result is closed
        unstarted.  The digest is recorded in *verification* once it matched."""
        return _Closing(self._self_verifying(path, expected, chunks, close, verification), close)

    def _self_verifying(
        self,
        path: str,
        expected: str,
        chunks: Iterator[bytes],
        close: Callable[[], object],
        verification: _Verification | None,
    ) -> Generator[bytes, None, None]:
        with _Digest(self._self_algorithm) as digest:
            try:
                pending = _next_chunk(chunks)
                if pending is None:
                    self._self_check(path, expected, digest.hexdigest(), verification)
                    return
                digest.update(pending)
                while True:
                    following = _next_chunk(chunks)
                    if following is None:
                        self._self_check(path, expected, digest.hexdigest(), verification)
                        yield pending
                        return
                    # Hashed in the worker while the consumer takes *pending*.
                    digest.update(following)
                    yield pending
                    pending = following
            finally:
                close()

    def _self_check(
        self, path: str, expected: str, actual: str, verification: _Verification | None = None
    ) -> None:
        if actual != expected:
            raise SnapshotIntegrityError(
                f"{path!r} does not match its checksum: expected {self._self_algorithm} "
                f"{expected}, got {actual} (the data is corrupt, or was replaced without "
                "its sidecar)"
            )
        if verification is not None:
            verification.digest = expected


class AdvancedChecksum(Checksum, tier="advanced"):
    """The advanced tier of :class:`Checksum`, returned by ``Checksum(advanced_storage)``.

    .. versionadded:: 0.1
    """

    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the chunks of *path*, raising on a digest mismatch before the last one."""
        verification = _verification_for(self, path)
        with self._self_locked(path, shared=True):
            expected = self._self_expected(
                path, strict=verification is not None or self._self_strict
            )
            chunks = iter(self.__wrapped__.stream_read(path))
            if expected is None:
                return chunks
            close = getattr(chunks, "close", _nothing)
            chunks = _started(chunks, close)
        return self._self_verified(path, expected, chunks, close, verification)

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store *chunks* at *path*, then their digest in the sidecar."""
        sidecar = self._self_sidecar(path)
        with self._self_locked(path), _Digest(self._self_algorithm) as digest:
            self.__wrapped__.stream_write(path, _hashed(chunks, digest))
            hexdigest = digest.hexdigest()
            self.__wrapped__.write(sidecar, io.BytesIO(_line(path, hexdigest)))

    def atomic_move(self, src: str, dst: str) -> None:
        """Move *src* to *dst* with its sidecar, which then names *dst*'s basename."""
        dst_sidecar = self._self_sidecar(dst)
        with self._self_locked(src, dst):
            self._self_move(src, dst, dst_sidecar)

    def _self_move(self, src: str, dst: str, dst_sidecar: str) -> None:
        expected = self._self_expected(src, strict=self._self_strict)
        if src == dst:
            self.__wrapped__.atomic_move(src, dst)
            return
        # A sidecar whose object is gone (left by an interrupted delete or
        # move) must not be carried onto *dst*.
        if expected is not None and not self.__wrapped__.exists(src):
            raise FileNotFoundError(f"no object at {src!r}")
        # The new sidecar goes first: until the data arrives, *dst* fails
        # verification rather than pass with the wrong sidecar, and once the
        # data has moved, *dst* is complete even if the rest is interrupted.
        if expected is None:
            self.__wrapped__.delete(dst_sidecar)  # it described the replaced object
        else:
            self.__wrapped__.write(dst_sidecar, io.BytesIO(_line(dst, expected)))
        self.__wrapped__.atomic_move(src, dst)
        self.__wrapped__.delete(src + self._self_suffix)

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Return the keys under *prefix*, without the sidecars."""
        return self._self_visible(self.__wrapped__.recursive_list(prefix))

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Mirror *src_prefix* to *dst_prefix*, sidecars included."""
        with self._self_locked():
            self.__wrapped__.sync(src_prefix, dst_prefix)


# Hashing.


class _Digest:
    """A hash that overlaps with the caller's I/O: data is hashed in a worker
    thread (hashlib releases the GIL), handed over in batches of at least
    :data:`_BATCH` bytes through a bounded queue, so that memory stays
    constant and the threads meet rarely.  Objects smaller than a batch are
    hashed in the caller's thread and never start one.  Used as a context
    manager, which stops the worker whatever happens."""

    def __init__(self, algorithm: str) -> None:
        self._algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self._queue: queue.Queue[list[bytes] | None] | None = None
        self._thread: threading.Thread | None = None
        self._batch: list[bytes] = []
        self._batched = 0
        self._error: BaseException | None = None
        self._cancelled = False

    def __enter__(self) -> _Digest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._cancelled = True
        self._stop()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add *data*, which the caller may reuse as soon as this returns."""
        # Only an immutable bytes object can wait to be hashed after this returns.
        self._batch.append(data if type(data) is bytes else bytes(data))
        self._batched += len(data)
        if self._batched >= _BATCH:
            self._hand_over()

    def hexdigest(self) -> str:
        """Wait for every chunk to be hashed and return the hex digest."""
        if self._queue is None:
            for data in self._batch:  # small enough not to need the worker
                self._hash.update(data)
        else:
            self._hand_over()
        self._batch, self._batched = [], 0
        self._stop()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def reset(self) -> None:
        """Forget everything hashed so far."""
        self._cancelled = True
        self._stop()
        self._cancelled = False
        self._error = None
        self._batch, self._batched = [], 0
        self._hash = hashlib.new(self._algorithm)

    def _hand_over(self) -> None:
        if self._queue is None:
            self._queue = queue.Queue(maxsize=_QUEUE_DEPTH)
            self._thread = threading.Thread(
                target=self._work, args=(self._queue,), name="django-snapshots-checksum",
                daemon=True,
            )  # fmt: skip
            self._thread.start()
        if self._batch:
            self._queue.put(self._batch)
        self._batch, self._batched = [], 0

    def _stop(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._queue = None
        self._thread = None

    def _work(self, batches: queue.Queue[list[bytes] | None]) -> None:
        update = self._hash.update
        while (batch := batches.get()) is not None:
            if self._cancelled or self._error is not None:
                continue
            try:
                for data in batch:
                    update(data)
            except BaseException as exc:  # handed to the caller by hexdigest()
                self._error = exc


class _HashingReader(ReadableStream):
    """The caller's content as the storage reads it, hashed on the way.

    Seekable when the content is, but only back to where it started (which
    starts the digest again): a storage below that retries a write rewinds
    it rather than spooling it.
    """

    def __init__(self, content: IO[bytes], digest: _Digest) -> None:
        super().__init__()
        self._content = content
        self._digest = digest
        self._origin = _start_of(content)

    def read(self, size: int | None = -1) -> bytes:
        data = self._content.read(-1 if size is None else size)
        if data:
            self._digest.update(data)
        return data

    def seekable(self) -> bool:
        return self._origin is not None

    def tell(self) -> int:
        if self._origin is None:
            raise io.UnsupportedOperation("the content cannot seek")
        return self._content.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._origin is None or whence != io.SEEK_SET or offset != self._origin:
            raise io.UnsupportedOperation(
                "content being hashed can only be rewound to where it started"
            )
        self._content.seek(offset)
        self._digest.reset()
        return offset


class _Closing(StickyChunks):
    """*chunks*, staying failed once they raised (a generator that raised
    would end the iteration next time, as if the object were complete and
    verified), with a ``close`` that also runs *close* (a generator closed
    before it started never runs its ``finally``)."""

    def __init__(self, chunks: Generator[bytes, None, None], close: Callable[[], object]) -> None:
        super().__init__(chunks)
        self._close = close

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._close()


def _hashed(chunks: Iterable[bytes], digest: _Digest) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _started(chunks: Iterator[bytes], close: Callable[[], object]) -> Iterator[bytes]:
    """Take the first chunk of *chunks* now, so that a storage opening its
    object lazily opens it while the caller holds the key's lock; *close* the
    source if that fails."""
    try:
        first = _next_chunk(chunks)
    except BaseException:
        close()
        raise
    return chunks if first is None else itertools.chain((first,), chunks)


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    for chunk in chunks:
        if chunk:
            return chunk
    return None


# Locks across processes.


def _check_lock_dir(lock_dir: object) -> str:
    """Return the directory of the lock files for *lock_dir*, or raise."""
    if lock_dir is None:
        return tempfile.gettempdir()
    if not isinstance(lock_dir, (str, os.PathLike)):
        raise TypeError(f"Checksum lock_dir must be a str or a path, not {type(lock_dir).__name__}")
    directory = os.path.abspath(os.fspath(lock_dir))
    if not os.path.isdir(directory):
        raise ValueError(
            f"Checksum lock_dir {directory!r} is not a directory; create it, or leave "
            "lock_dir out to use the system's temporary directory"
        )
    return str(directory)


def _lock_files(directory: str, bottom: object) -> str | None:
    """The common start of the lock files' paths for the storage *bottom*
    (None where ``flock`` is missing): its ``repr``, hashed, names what it
    stores the same way in every process, and never holds a secret."""
    if sys.platform == "win32":  # pragma: no cover - no flock there
        return None
    name = hashlib.blake2b(repr(bottom).encode(), digest_size=12).hexdigest()
    return os.path.join(directory, f"django-snapshots-{name}")


@contextlib.contextmanager
def _file_locked(path: str, *, shared: bool) -> Iterator[None]:
    """Hold an advisory ``flock`` on the lock file *path*, which the kernel
    releases when the descriptor is closed or the process dies.  Each call
    opens its own descriptor: locks then exclude each other between threads
    too, and a child made by ``fork`` shares none of its parent's."""
    # Read-only, so that processes of other users can open the same file;
    # no O_CREAT for an existing file, which a sticky temporary directory may
    # refuse for a file of another user.
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            fd = os.open(path, flags | os.O_CREAT, 0o666)
    except OSError as exc:
        raise type(exc)(
            exc.errno,
            f"Checksum cannot open its lock file {path!r} ({exc.strerror}); pass lock_dir, "
            "a directory every process writing this storage can write",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# Small helpers.


def _check_algorithm(algorithm: object) -> tuple[str, int]:
    """Return the canonical name and digest size of *algorithm*, or raise."""
    if not isinstance(algorithm, str):
        raise TypeError(f"Checksum algorithm must be a str, not {type(algorithm).__name__}")
    try:
        hasher = hashlib.new(algorithm)
    except (ValueError, TypeError):
        raise ValueError(
            f"Checksum algorithm {algorithm!r} is not available in hashlib; choose one of "
            f"{', '.join(sorted(hashlib.algorithms_guaranteed))}"
        ) from None
    if not hasher.digest_size:
        raise ValueError(
            f"Checksum algorithm {algorithm!r} has a variable-length digest, which no "
            "checksum tool can check; choose a fixed-length one such as 'sha256' or 'blake2b'"
        )
    name = hasher.name.lower().replace("-", "_")
    try:
        validate_key("x." + name)
    except SnapshotStoragePathError:  # pragma: no cover - hashlib names are plain words
        raise ValueError(f"Checksum algorithm {algorithm!r} cannot name a sidecar") from None
    return name, hasher.digest_size


def _sidecar_names() -> frozenset[str]:
    names = set(_KNOWN_ALGORITHMS)
    for algorithm in hashlib.algorithms_available:
        try:
            size = hashlib.new(algorithm).digest_size
        except (ValueError, TypeError):  # pragma: no cover - listed but unusable
            continue
        if size:
            names.add(algorithm.lower().replace("-", "_"))
    return frozenset(names)


# Extensions (lower case) that name a sidecar of some Checksum layer.
_SIDECAR_NAMES = _sidecar_names()


def _is_sidecar_name(key: str) -> bool:
    """Tell whether *key* ends like the sidecar of any Checksum layer, whatever
    its algorithm (compared without case: some remotes ignore it)."""
    _, dot, extension = key.rpartition(".")
    return bool(dot) and "/" not in extension and extension.lower() in _SIDECAR_NAMES


def _reason(exc: SnapshotStoragePathError) -> str:
    """The rule a key broke, from a key-rules message ('invalid key ...: rule')."""
    return str(exc).rpartition(": ")[2]


def _line(path: str, hexdigest: str) -> bytes:
    """The sidecar content for *path*: what ``sha256sum`` prints for its file."""
    return f"{hexdigest}  {path.rsplit('/', 1)[-1]}\n".encode()


def _fits(sidecar: str) -> bool:
    """Tell whether *sidecar*, a valid key plus a plain suffix, is short enough to be a key."""
    # A UTF-8 character takes at most 4 bytes: only long keys need encoding.
    return len(sidecar) <= MAX_KEY_BYTES // 4 or len(sidecar.encode()) <= MAX_KEY_BYTES


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Read *stream* to its end, or to just past *limit* bytes."""
    data = bytearray()
    for chunk in iter_chunks(stream, limit + 1):
        data += chunk
        if len(data) > limit:
            break
    return bytes(data)


def _nothing() -> None:
    pass

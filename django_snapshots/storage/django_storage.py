"""Store objects through any Django file storage (basic tier).

    >>> import io
    >>> from django.core.files.storage import InMemoryStorage
    >>> from django_snapshots.storage import DjangoStorageBackend
    >>> storage = DjangoStorageBackend(InMemoryStorage())
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> storage.list("db/")
    ['db/latest.dump']
    >>> with storage.read("db/latest.dump") as file:
    ...     file.read()
    b'dump'

*storage* is a :class:`django.core.files.storage.Storage` instance or the
alias of one in ``settings.STORAGES`` (``"default"``, ``"backups"``).  An
alias is looked up through :data:`django.core.files.storage.storages` at each
operation, so it follows ``override_settings`` in tests, and nothing is read
from the settings at construction (a backend can be built in a settings
module).

What a write guarantees depends on the storage:

- ``FileSystemStorage`` (and subclasses that keep its ``save``): the content
  goes to a temporary file in the key's directory, created as the storage
  creates files (``file_permissions_mode``, ``directory_permissions_mode``),
  fsynced, then renamed over the key.  Readers and concurrent writers, in
  threads or processes, see the old object or one whole new one; a failed
  write leaves the old object.  Temporary names hold a character no key
  may contain, so they are never listed.
- ``S3Storage`` with ``file_overwrite=True`` (its default) replaces objects
  in one step; a failed write leaves the old object.
- ``InMemoryStorage``: the content is gathered first, then the old object is
  replaced under a lock per storage; a failed write leaves the old object.
- Any other storage has no atomic replace: a write deletes the old object,
  then saves the new one.  A failed write removes what it left, so the key
  is then absent; a process killed in between leaves the key absent or
  holding a partial object.

A storage that still saves under another name (it renames on conflict)
makes the write fail with
:class:`~django_snapshots.exceptions.SnapshotStorageError`; the stray object
is removed.

On a ``FileSystemStorage`` and an ``InMemoryStorage``, ``delete`` removes
the directories it leaves empty, and a write removes an empty directory that
stands at its key (a directory that still holds files makes it fail), so a
deleted prefix never blocks a key of the same name.  On a
``FileSystemStorage`` each key segment must fit in one file name
(:attr:`~DjangoStorageBackend.max_segment_bytes`).

A file object from ``read`` is independent of any other: readers of a
storage that hands out one shared file object per name (``InMemoryStorage``)
never move each other's position, and once a read failed every later read
raises too.
"""

from __future__ import annotations

import builtins
import errno
import functools
import io
import os
import re
import stat
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import datetime, timedelta, timezone
from secrets import token_hex
from typing import IO, Any, TypeGuard, cast

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.core.files.storage import (
    FileSystemStorage,
    InMemoryStorage,
    InvalidStorageError,
    Storage,
    storages,
)
from django.core.files.storage.memory import InMemoryFileNode  # type: ignore[attr-defined]
from django.utils._os import safe_makedirs

from django_snapshots.exceptions import (
    SnapshotError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
)
from django_snapshots.storage.cleanup import DEFAULT_OLDER_THAN, Leftover, check_cleanup_arguments
from django_snapshots.storage.keys import _parents, validate_key, validate_prefix
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.streams import (
    CHUNK_SIZE,
    ReadableStream,
    _read_into,
    buffered,
    check_binary_content,
    iter_chunks,
)
from django_snapshots.storage.wrappers.base import validate_key_through
from django_snapshots.storage.wrappers.retry import is_transient

__all__ = ["DjangoStorageBackend"]

# How storages report that a name holds no object: missing, a directory, or
# below a file (InMemoryStorage turns the last into FileExistsError).
_NO_OBJECT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)

_S3_MODULE = "storages.backends.s3"

# POSIX's minimum for NAME_MAX is 14, but every file system in use allows 255.
_DEFAULT_NAME_MAX = 255

# A save that fails with FileNotFoundError before reading any content lost a
# race with a delete pruning the directory it created; it is tried again, at
# most this many times in all.
_ATTEMPTS = 5

# Keys may not contain U+007F, which every local file system accepts in a
# name, so no key can name a temporary file and listings never show one (the
# same mark as LocalFileSystemBackend's).
_TEMP_MARK = "\x7f"
_TEMP_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)

# One lock per InMemoryStorage, held by this backend's writes and deletes:
# they add and remove directory nodes, and InMemoryStorage deletes a
# directory node with everything below it.
_TREE_LOCKS: weakref.WeakKeyDictionary[Storage, threading.RLock] = weakref.WeakKeyDictionary()
_TREE_LOCKS_GUARD = threading.Lock()

# How many multipart uploads, or parts of one, a cleanup asks S3 for at once
# (the most S3 returns).
_S3_PAGE_SIZE = 1000

# Error codes S3-compatible services use for "slow down and try again".
_THROTTLING_CODES = frozenset(
    {
        "RequestTimeout",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
    }
)


# The user and password of a URL ("https://user:pass@host/"): botocore names
# the endpoint it could not reach with them, and messages must not.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/?#@\s\"']*@")


class InvalidDjangoStorageError(SnapshotError, InvalidStorageError):
    """The Django storage of a :class:`DjangoStorageBackend` cannot be used:
    its alias is not in ``settings.STORAGES``, the entry cannot be built, or
    the storage does not return the bytes it stores.

    Both a :class:`~django_snapshots.exceptions.SnapshotError` and Django's
    :class:`~django.core.files.storage.InvalidStorageError` (an
    ``ImproperlyConfigured``); the message is one line naming the alias.

    .. versionadded:: 0.1
    """


class DjangoStorageBackend:
    """Store objects through a Django :class:`~django.core.files.storage.Storage`
    (basic tier).

    *storage* is a ``Storage`` instance or an alias of ``settings.STORAGES``.
    Reads and writes stream in chunks; listings go through the storage
    (``listdir``, or one flat bucket listing for ``S3Storage``), never the
    local disk; ``exists`` and ``list`` report objects, never directories.

    **Crash leftovers.**  What a killed write leaves depends on the storage,
    and :meth:`cleanup` removes it: on a ``FileSystemStorage``, the
    temporary file it was writing in the key's directory (named, as by
    :class:`~django_snapshots.storage.LocalFileSystemBackend`, with a
    character no key may contain);
    on an ``S3Storage``, the incomplete multipart upload of an object too
    big for one request, which S3 keeps, and bills, until it is aborted.
    An ``InMemoryStorage`` keeps nothing after a crash.  On any other
    storage a killed write may leave the key absent or holding a partial
    object (see the module documentation), which no cleanup can tell from
    a whole one.

    .. versionadded:: 0.1
    """

    def __init__(self, storage: Storage | str) -> None:
        if isinstance(storage, str):
            self._alias: str | None = storage
            self._storage: Storage | None = None
        elif isinstance(storage, Storage):
            _check_supported(storage, where=type(storage).__name__)
            self._alias = None
            self._storage = storage
        else:
            raise TypeError(
                "DjangoStorageBackend needs a django Storage or the alias of one in "
                f"settings.STORAGES, not {type(storage).__name__}"
            )

    @property
    def storage(self) -> Storage:
        """The Django storage objects go to (an alias is resolved now).

        Raises ``InvalidDjangoStorageError``, both a
        :class:`~django.core.files.storage.InvalidStorageError` (an
        :class:`~django.core.exceptions.ImproperlyConfigured`) and a
        :class:`~django_snapshots.exceptions.SnapshotError`, naming the alias
        when ``settings.STORAGES`` does not define it or cannot build it.

        .. versionadded:: 0.1
        """
        if self._storage is not None:
            return self._storage
        assert self._alias is not None
        return _resolve(self._alias)

    @property
    def max_segment_bytes(self) -> int | None:
        """The longest ``/``-separated segment of a key, in bytes, that the
        storage can hold: the file system's name limit for a
        ``FileSystemStorage``, ``None`` (no limit) for other storages.

        .. versionadded:: 0.1
        """
        storage = self.storage
        if isinstance(storage, FileSystemStorage):
            return _name_max(os.fspath(storage.location))
        return None

    def _alias_problem(self) -> str | None:
        """Say why the alias is not defined in ``settings.STORAGES``, or
        ``None`` (also for a backend given a storage).  Reads the setting
        only, builds no storage: the system checks call it."""
        return None if self._alias is None else _undefined(self._alias)

    def __repr__(self) -> str:
        if self._alias is not None:
            try:
                kind = f"<{self.storage.__class__.__name__}> "
            except Exception:  # a repr must not fail on a broken configuration
                kind = ""
            return f"DjangoStorageBackend({kind}{self._alias!r})"
        assert self._storage is not None
        where = _describe(self._storage)
        # __class__, not type(): default_storage is a lazy proxy.
        return f"DjangoStorageBackend(<{self._storage.__class__.__name__}>{where})"

    def read(self, path: str) -> IO[bytes]:
        """Open the object at *path* for reading, at offset 0.

        The file object streams from the storage (S3Storage objects are read
        from the response body, not downloaded whole first); close it when
        done.  A missing key raises :class:`FileNotFoundError`.
        """
        key = validate_key_through(self, path)
        storage = self.storage
        where = f"read {key!r} on {self!r}"
        with _storage_failures(where):
            try:
                file = storage.open(key, "rb")
            except _NO_OBJECT as exc:
                raise _missing(key) from exc
            try:
                source = _streaming_source(storage, file, key)
            except BaseException:
                file.close()
                raise
        return buffered(_ObjectReader(source, where=where))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store every byte of *content* from its current position to EOF at
        *path*, replacing the object there.

        *content* is read in chunks of at most ``CHUNK_SIZE`` bytes, never
        rewound and never closed; it need not be seekable.  See the module
        documentation for what a failed write leaves.
        """
        key = validate_key_through(self, path)
        check_binary_content(content)
        source = _ForwardReader(content, name=key)
        storage = self.storage
        with _storage_failures(f"write {key!r} on {self!r}", source=source):
            if _replaces_by_rename(storage):
                self._clear_directory(storage, key)
                self._write_by_rename(storage, key, source)
            elif isinstance(storage, InMemoryStorage):
                self._write_in_memory(storage, key, source)
            else:
                self._write_through_save(storage, key, source)

    def list(self, prefix: str) -> list[str]:
        """Return every stored key starting with *prefix*, sorted.

        Walks ``listdir`` recursively from the directory part of *prefix*
        (``"db/2026"`` lists ``db/`` and keeps names starting with ``2026``);
        an S3Storage is listed flat instead, one request per thousand keys.
        Names that are not valid keys are left out.
        """
        prefix = validate_prefix(prefix)
        storage = self.storage
        with _storage_failures(f"list {prefix!r} on {self!r}"):
            keys = _s3_keys(storage, prefix) if _is_s3(storage) else _walk(storage, prefix)
            return sorted(keys)

    def delete(self, path: str) -> None:
        """Remove the object at *path*; a missing key (or a directory) is left alone."""
        key = validate_key_through(self, path)
        storage = self.storage
        with _storage_failures(f"delete {key!r} on {self!r}"), _tree_lock(storage):
            self._delete_object(storage, key)
            _prune(storage, key)

    def exists(self, path: str) -> bool:
        """Tell whether an object (not a directory) is stored at *path*."""
        key = validate_key_through(self, path)
        storage = self.storage
        with _storage_failures(f"exists {key!r} on {self!r}"):
            return _is_object(storage, key)

    def cleanup(
        self,
        prefix: str = "",
        *,
        older_than: timedelta | float = DEFAULT_OLDER_THAN,
        dry_run: bool = False,
    ) -> builtins.list[Leftover]:
        """Remove what killed writes left under *prefix* that nobody has
        written to for at least *older_than*; return it, sorted by name.
        With *dry_run*, remove nothing and return what would be removed.

        - ``FileSystemStorage`` (and subclasses): the temporary files of
          interrupted writes, exactly as
          :meth:`LocalFileSystemBackend.cleanup
          <django_snapshots.storage.LocalFileSystemBackend.cleanup>` finds
          and removes them below the storage's location (age by modification
          time, looked at again right before the unlink; a file that a
          process of this host holds open, a write in progress however long
          idle, is kept where Linux can tell, and not reported; links never
          followed; emptied directories removed).  A write holds its
          temporary file open until it is renamed over the key.
        - ``S3Storage``: the incomplete multipart uploads of keys under the
          storage's ``location`` and *prefix*, aborted through the storage's
          own client.  An upload's age runs from its newest part, or from its
          start when it has none; its name is the key it was uploading, and
          its size the sum of its parts.  An upload finished or aborted
          meanwhile is left out.  Uploads to names that are not keys are
          left alone.
        - ``InMemoryStorage``: nothing survives a crash; returns ``[]``.
        - Any other storage raises
          :class:`~django_snapshots.exceptions.SnapshotStorageCapabilityError`
          before any I/O: what it leaves after a crash is unknown.

        Objects are never touched.  *prefix* is a list prefix and
        *older_than* a :class:`~datetime.timedelta` or a number of seconds
        (default: a day), both checked before any I/O; storage failures
        raise :class:`~django_snapshots.exceptions.SnapshotStorageError`.

        .. versionadded:: 0.1
        """
        prefix, limit, dry_run = check_cleanup_arguments(prefix, older_than, dry_run)
        storage = self.storage
        if isinstance(storage, FileSystemStorage):
            # The temporary files are named and placed as that backend's.
            local = LocalFileSystemBackend(os.fspath(storage.location))
            return local.cleanup(prefix, older_than=limit, dry_run=dry_run)
        if isinstance(storage, InMemoryStorage):
            return []
        if _is_s3(storage):
            with _storage_failures(f"clean up {prefix!r} on {self!r}"):
                return _s3_cleanup(storage, prefix, limit, dry_run=dry_run)
        raise SnapshotStorageCapabilityError(
            f"cannot clean up {self!r}: django-snapshots does not know what a "
            f"{storage.__class__.__name__} leaves after a crash (it knows FileSystemStorage, "
            "InMemoryStorage and S3Storage)"
        )

    def _delete_object(self, storage: Storage, key: str) -> None:
        # Storage.delete of a directory removes it (recursively, for
        # InMemoryStorage), and a key never names a directory.
        if _is_object(storage, key):
            storage.delete(key)

    def _save(self, storage: Storage, key: str, source: _ForwardReader) -> str:
        for _ in range(_ATTEMPTS):
            try:
                return str(storage.save(key, cast("IO[bytes]", source)))
            except FileNotFoundError as exc:
                if exc is source.error:
                    raise
                if source.tell() or source.at_eof:
                    raise SnapshotStorageError(
                        f"write {key!r} on {self!r}: the object's file vanished while it was "
                        "being written",
                        transient=True,
                    ) from exc
                # The directory the storage created for the key was pruned by
                # a concurrent delete before the object was created in it.
        raise SnapshotStorageError(
            f"write {key!r} on {self!r}: its directory kept being removed by concurrent deletes",
            transient=True,
        )

    def _write_through_save(self, storage: Storage, key: str, source: _ForwardReader) -> None:
        in_one_step = _replaces_in_one_step(storage)
        if not in_one_step:
            # Storage.save never overwrites by default: it picks another
            # name when the key is taken, so the old object goes first.
            self._delete_object(storage, key)
        try:
            saved = self._save(storage, key, source)
        except BaseException:
            if not in_one_step:
                # Whatever is at the key now is a partial object of ours.
                with suppress(Exception):
                    self._delete_object(storage, key)
                    _prune(storage, key)
            raise
        if saved != key:
            raise self._renamed(storage, key, saved)
        if not source.at_eof:
            with suppress(Exception):
                self._delete_object(storage, key)
            raise SnapshotStorageError(
                f"write {key!r} on {self!r}: the storage stopped reading the content "
                f"after {source.tell()} bytes, before its end; the object was removed"
            )

    def _write_in_memory(self, storage: InMemoryStorage, key: str, source: _ForwardReader) -> None:
        """Gather *source*, then replace the object at *key* holding the
        storage's tree lock: the whole object ends up in memory anyway, a
        slow source never holds the lock, and a failing one leaves the old
        object."""
        with _tree_lock(storage):
            self._clear_directory(storage, key)  # fail before reading the content
        gathered = io.BytesIO()
        for chunk in source.chunks():
            gathered.write(chunk)
        gathered.seek(0)
        with _tree_lock(storage):
            self._clear_directory(storage, key)
            self._write_through_save(storage, key, _ForwardReader(gathered, name=key))

    def _write_by_rename(
        self, storage: FileSystemStorage, key: str, source: _ForwardReader
    ) -> None:
        """Write *source* to a temporary file next to *key* and rename it
        over the key: readers and other writers see the old object or a
        whole new one, and a failed write leaves the old object."""
        final = storage.path(key)
        directory = os.path.dirname(final)
        temp, fd = self._create_temp(storage, key, directory)
        try:
            with os.fdopen(fd, "wb") as file:
                for chunk in source.chunks():
                    file.write(chunk)
                file.flush()
                os.fsync(file.fileno())
                # Renamed while still open: a cleanup keeps a temporary file
                # that a process holds open, however long its source was idle.
                os.replace(temp, final)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp)
            with suppress(OSError):
                _prune(storage, key)
            raise
        _fsync_directory(directory)

    def _create_temp(self, storage: FileSystemStorage, key: str, directory: str) -> tuple[str, int]:
        """Create the directories of *key* and a temporary file among them,
        as Django would create the object (modes, group)."""
        for _ in range(_ATTEMPTS):
            try:
                _make_directories(storage, directory)
                while True:
                    temp = os.path.join(directory, f".snapshots-write-{token_hex(8)}{_TEMP_MARK}")
                    try:
                        fd = os.open(temp, _TEMP_FLAGS, 0o666)
                    except FileExistsError:
                        continue
                    break
            except FileNotFoundError:
                # A concurrent delete pruned a directory just created; once
                # the temporary file is in it, no prune can remove it.
                continue
            try:
                if storage.file_permissions_mode is not None:
                    os.fchmod(fd, storage.file_permissions_mode)
                ensure_group = getattr(storage, "_ensure_location_group_id", None)
                if callable(ensure_group):
                    ensure_group(temp)
            except BaseException:
                os.close(fd)
                with suppress(OSError):
                    os.unlink(temp)
                raise
            return temp, fd
        raise SnapshotStorageError(
            f"write {key!r} on {self!r}: its directory kept being removed by concurrent deletes",
            transient=True,
        )

    def _clear_directory(self, storage: Storage, key: str) -> None:
        """Remove the empty directories standing at *key* on a
        FileSystemStorage or an InMemoryStorage; raise if files are stored
        below it."""
        if isinstance(storage, InMemoryStorage):
            holds_files = _memory_holds_files(storage, key)
            if holds_files:
                raise self._files_below(key)
            if holds_files is not None:
                # Its delete of a directory is recursive: only done once
                # nothing but directories was found, under the tree lock.
                storage.delete(key)
            return
        if not isinstance(storage, FileSystemStorage):
            return
        path = storage.path(key)
        if not _is_directory(path):
            return
        # Deepest first, and os.rmdir only removes an empty directory, so
        # nothing stored below (even concurrently) can be lost.
        for below, _, _ in os.walk(path, topdown=False):
            with suppress(OSError):
                os.rmdir(below)
        if _is_directory(path):
            raise self._files_below(key)

    def _files_below(self, key: str) -> SnapshotStorageError:
        return SnapshotStorageError(
            f"write {key!r} on {self!r}: files are stored below {key + '/'!r}, and the "
            "storage cannot hold an object there too"
        )

    def _renamed(self, storage: Storage, key: str, saved: str) -> SnapshotStorageError:
        try:
            storage.delete(saved)
            removed = not _is_object(storage, saved)
        except Exception:
            removed = False
        outcome = "removed it" if removed else "could not remove it"
        return SnapshotStorageError(
            f"write {key!r} on {self!r}: the storage saved the object as {saved!r} instead "
            f"(it renames on conflict rather than overwrite); {outcome}. Is a directory "
            "at this key, or is the storage configured never to overwrite?"
        )


class _ForwardReader(ReadableStream):
    """The caller's content from its current position, as a stream that can
    only be read forward.

    Django's ``File.chunks()`` and ``S3Storage`` rewind a seekable content to
    offset 0, which would store bytes before the caller's position; this
    stream is not seekable, offers ``chunks()`` itself, and asks the content
    for at most ``CHUNK_SIZE`` bytes per call whatever the storage requests.
    Closing it leaves the content open: the content is the caller's.
    """

    mode = "rb"

    def __init__(self, content: IO[bytes], *, name: str) -> None:
        super().__init__()
        if not callable(getattr(content, "read", None)) or isinstance(content, io.TextIOBase):
            raise TypeError(f"content must be a binary file object, not {type(content).__name__}")
        self._content = content
        self._position = 0
        self.name = name
        self.at_eof = False
        #: The exception the content raised, which is the caller's, not a
        #: storage failure.
        self.error: BaseException | None = None

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # A rewind before the first read is harmless (some storages rewind
        # unconditionally); any other move would lose or repeat bytes.
        if (whence == io.SEEK_SET and offset == self._position) or (
            whence == io.SEEK_CUR and offset == 0
        ):
            return self._position
        raise io.UnsupportedOperation("the content can only be read forward")

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter_chunks(cast("IO[bytes]", self)))
        parts = []
        wanted = size
        while wanted > 0:
            chunk = self._pull(min(wanted, CHUNK_SIZE))
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._position += len(data)
        return data

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Yield the content in chunks, without rewinding (Django's File API)."""
        return iter_chunks(cast("IO[bytes]", self), chunk_size or CHUNK_SIZE)

    def _pull(self, size: int) -> bytes:
        if self.at_eof:
            return b""
        try:
            chunk = self._content.read(size)
            while chunk is None:  # a non-blocking stream with nothing ready yet
                chunk = self._content.read(size)
            if isinstance(chunk, str):
                raise TypeError("content must be a binary file object: read() returned str")
        except BaseException as exc:
            self.error = exc
            raise
        if not chunk:
            self.at_eof = True
            return b""
        return chunk if isinstance(chunk, bytes) else bytes(chunk)


class _ObjectReader(io.RawIOBase):
    """A readable binary file object over a storage's file.

    It keeps its own offset and moves the file there before each read,
    holding the file's lock, because a storage may hand every reader of a
    name the same file object.  Storage failures while reading become
    :class:`SnapshotStorageError`, and the first one sticks: every later read
    or seek raises again, never reporting the end of the object nor
    returning bytes after a gap.
    """

    def __init__(self, file: Any, *, where: str) -> None:
        super().__init__()
        self._file = file
        self._where = where
        self._position = 0
        self._seekable = bool(getattr(file, "seekable", lambda: False)())
        self._lock = _SharedFiles.acquire(file)
        self._error: SnapshotStorageError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("this storage's objects are read as a stream")
        self._check_usable()
        if whence == io.SEEK_CUR:
            offset, whence = self._position + offset, io.SEEK_SET
        with self._lock, self._failures():
            self._position = self._file.seek(offset, whence)
        return self._position

    def readinto(self, buffer: Any) -> int:
        self._check_usable()
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        with self._lock, self._failures():
            if self._seekable:
                self._file.seek(self._position)
            n = _read_into(self._file, view)
        self._position += n
        return n

    def readall(self) -> bytes:
        return b"".join(iter_chunks(cast("IO[bytes]", self)))

    def close(self) -> None:
        if not self.closed:
            try:
                if _SharedFiles.release(self._file):
                    self._file.close()
            finally:
                super().close()

    def _check_usable(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._error is not None:
            raise SnapshotStorageError(
                f"{self._where} failed: an earlier read of this file object failed",
                transient=self._error.transient,
            ) from self._error

    @contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            with _storage_failures(self._where):
                yield
        except SnapshotStorageError as exc:
            self._error = exc
            raise
        except Exception as exc:
            # Not a storage failure by its type, yet the position is unknown.
            self._error = SnapshotStorageError(f"{self._where} failed: {type(exc).__name__}")
            raise


class _SharedFiles:
    """One lock per file object in use by readers, and how many use it."""

    _guard = threading.Lock()
    _users: dict[int, tuple[threading.Lock, int]] = {}  # noqa: RUF012 (guarded state)

    @classmethod
    def acquire(cls, file: object) -> threading.Lock:
        with cls._guard:
            lock, users = cls._users.get(id(file), (threading.Lock(), 0))
            cls._users[id(file)] = (lock, users + 1)
            return lock

    @classmethod
    def release(cls, file: object) -> bool:
        """Forget one reader of *file*; true when it was the last."""
        with cls._guard:
            lock, users = cls._users[id(file)]
            if users > 1:
                cls._users[id(file)] = (lock, users - 1)
                return False
            del cls._users[id(file)]
            return True


def _resolve(alias: str) -> Storage:
    problem = _undefined(alias)
    if problem is not None:
        raise InvalidDjangoStorageError(problem)
    try:
        storage = storages[alias]
    except ImproperlyConfigured as exc:
        raise InvalidDjangoStorageError(f"settings.STORAGES[{alias!r}]: {_one_line(exc)}") from exc
    if not isinstance(storage, Storage):
        raise InvalidDjangoStorageError(
            f"settings.STORAGES[{alias!r}] built a {type(storage).__name__}, not a django Storage"
        )
    _check_supported(storage, where=f"settings.STORAGES[{alias!r}]")
    return storage


def _undefined(alias: str) -> str | None:
    """Say why settings.STORAGES has no entry *alias*, reading the setting
    only (no storage is built), or ``None`` when it has."""
    try:
        defined = storages.backends
    except ImproperlyConfigured as exc:
        return f"cannot look up storage alias {alias!r}: {_one_line(exc)}"
    if alias in defined:
        return None
    known = ", ".join(repr(name) for name in defined) or "none"
    return f"no storage alias {alias!r} in settings.STORAGES (defined: {known})"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_supported(storage: Storage, *, where: str) -> None:
    if _is_s3(storage) and storage.gzip:
        # It compresses some objects on the way in (chosen by content type)
        # and decompresses on the way out by Content-Encoding, which a
        # ".gz" key also gets: bytes would not come back as they went in.
        raise InvalidDjangoStorageError(
            f"{where}: an S3Storage with gzip enabled (AWS_IS_GZIPPED) does not "
            "return the bytes it stored; compress artifacts before storing them instead"
        )


def _describe(storage: Storage) -> str:
    # Only attributes known to hold no secret: a generic ``location`` can be
    # a URL with a password in it (FTPStorage).
    if _is_s3(storage):
        place = "/".join(part for part in (storage.bucket_name, storage.location) if part)
        return f" {place!r}"
    if isinstance(storage, FileSystemStorage):
        return f" {storage.location!r}"
    return ""


def _replaces_in_one_step(storage: Storage) -> bool:
    # S3 makes an uploaded object visible only once complete (a PUT, or a
    # completed multipart upload), replacing the old one; S3Storage with
    # file_overwrite saves straight over the key.
    return _is_s3(storage) and bool(storage.file_overwrite)


def _replaces_by_rename(storage: Storage) -> TypeGuard[FileSystemStorage]:
    # A subclass that changes how content is saved (say, encrypts it) keeps
    # its own save; every other FileSystemStorage gets a rename over the key.
    cls = type(storage)
    return (
        isinstance(storage, FileSystemStorage)
        and getattr(cls, "_save", None) is getattr(FileSystemStorage, "_save", None)
        and cls.save is Storage.save
    )


def _tree_lock(storage: Storage) -> AbstractContextManager[object]:
    if not isinstance(storage, InMemoryStorage):
        return nullcontext()
    with _TREE_LOCKS_GUARD:
        lock = _TREE_LOCKS.get(storage)
        if lock is None:
            lock = _TREE_LOCKS[storage] = threading.RLock()
        return lock


def _make_directories(storage: FileSystemStorage, directory: str) -> None:
    """Create *directory* and its parents as FileSystemStorage.save does."""
    mode = storage.directory_permissions_mode
    for attempt in range(_MKDIR_ATTEMPTS):
        try:
            if mode is not None:
                # os.makedirs does not apply its mode to intermediate directories.
                safe_makedirs(directory, mode, exist_ok=True)
            else:
                os.makedirs(directory, exist_ok=True)
            return
        except FileExistsError:
            # makedirs found a directory in place, then a concurrent delete
            # pruned it before makedirs could see it was one: create it
            # again.  A file standing there is a real conflict.
            if attempt == _MKDIR_ATTEMPTS - 1 or (
                os.path.lexists(directory) and not os.path.isdir(directory)
            ):
                raise


# Tries at creating a directory that concurrent deletes keep pruning.
_MKDIR_ATTEMPTS = 8


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not openable as a file (Windows): the data itself is synced
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot sync a directory; the data itself is synced.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _streaming_source(storage: Any, file: Any, key: str) -> Any:
    if isinstance(file, InMemoryFileNode):
        # InMemoryStorage hands out the node itself, whose position every
        # open() of the name rewinds: read its bytes through a stream of our
        # own.  getvalue() and BytesIO(bytes) share the buffer, no copy.
        value = file.file.getvalue()
        return io.BytesIO(value if isinstance(value, bytes) else value.encode())
    s3 = sys.modules.get(_S3_MODULE)
    if s3 is None or not isinstance(file, s3.S3File):
        return file
    # S3File downloads the whole object into a buffer on first read, in
    # memory unless AWS_S3_MAX_MEMORY_SIZE is set; read the body instead.
    from s3transfer.constants import ALLOWED_DOWNLOAD_ARGS

    params = {
        name: value
        for name, value in storage.get_object_parameters(file.name).items()
        if name in ALLOWED_DOWNLOAD_ARGS
    }
    try:
        body = file.obj.get(**params)["Body"]
    except Exception as exc:
        if _http_status(exc) == 404:  # deleted since open() looked
            raise _missing(key) from exc
        raise
    file.close()
    return body


def _is_s3(storage: Storage) -> TypeGuard[Any]:
    # Checked by class, without importing django-storages: a storage of its
    # S3 backend exists only once the module has been imported.
    s3 = sys.modules.get(_S3_MODULE)
    return s3 is not None and isinstance(storage, s3.S3Storage)


def _name_max(location: str) -> int:
    # The location may not exist yet: ask the nearest directory that does,
    # on the same file system in all likelihood.
    return _name_max_of(os.path.abspath(location))


@functools.lru_cache(maxsize=64)
def _name_max_of(path: str) -> int:
    while True:
        try:
            limit = os.pathconf(path, "PC_NAME_MAX")
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return _DEFAULT_NAME_MAX
            path = parent
            continue
        except (OSError, ValueError):
            return _DEFAULT_NAME_MAX
        return limit if limit > 0 else _DEFAULT_NAME_MAX


def _prune(storage: Storage, key: str) -> None:
    """Remove the directories of *key* that are now empty on a
    FileSystemStorage or an InMemoryStorage, deepest first (never its
    location)."""
    if isinstance(storage, InMemoryStorage):
        for parent in reversed(list(_parents(key))):
            try:
                directories, files = storage.listdir(parent)
            except _NO_OBJECT:
                return
            if directories or files:
                return  # the ones above are not empty either
            storage.delete(parent)
        return
    if not isinstance(storage, FileSystemStorage):
        return
    for parent in reversed(list(_parents(key))):
        try:
            os.rmdir(storage.path(parent))
        except OSError:
            return  # not empty (or gone, or a link): the ones above are not empty either


def _memory_holds_files(storage: InMemoryStorage, directory: str) -> bool | None:
    """Tell whether any file is stored below *directory* of an
    InMemoryStorage, or ``None`` when no directory stands there."""
    pending = [directory]
    while pending:
        current = pending.pop()
        try:
            directories, files = storage.listdir(current)
        except _NO_OBJECT:
            if current == directory:
                return None
            continue
        if files:
            return True
        pending.extend(f"{current}/{name}" for name in directories)
    return False


def _is_directory(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_object(storage: Storage, key: str) -> bool:
    # Storage.exists is True for directories on FileSystemStorage and
    # InMemoryStorage; opening tells objects apart.  Opening is lazy for
    # remote storages (S3File sends one HEAD request).
    try:
        file = storage.open(key, "rb")
    except _NO_OBJECT:
        return False
    file.close()
    return True


def _s3_keys(storage: Any, prefix: str) -> Iterator[str]:
    # One flat listing, a request per thousand keys, instead of a listdir
    # request per directory level.
    root = (storage.location.rstrip("/") + "/").lstrip("/")
    paginator = storage.connection.meta.client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=storage.bucket_name, Prefix=root + prefix):
        for entry in page.get("Contents", ()):
            key = entry["Key"][len(root) :]
            if _is_valid(validate_key, key):
                yield key


def _s3_cleanup(storage: Any, prefix: str, limit: timedelta, *, dry_run: bool) -> list[Leftover]:
    """Abort the incomplete multipart uploads below *prefix* of an
    S3Storage that are older than *limit* (or only list them)."""
    from botocore.exceptions import ClientError

    root = (storage.location.rstrip("/") + "/").lstrip("/")
    client = storage.connection.meta.client
    bucket = storage.bucket_name
    found: list[Leftover] = []
    pages = client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=root + prefix, PaginationConfig={"PageSize": _S3_PAGE_SIZE}
    )
    for page in pages:
        for upload in page.get("Uploads", ()):
            key = upload["Key"][len(root) :]
            if not upload["Key"].startswith(root + prefix) or not _is_valid(validate_key, key):
                continue  # not an upload of ours
            leftover = _s3_leftover(client, bucket, upload, key)
            if leftover is None or leftover.age() < limit:
                continue
            if not dry_run:
                try:
                    client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except ClientError as exc:
                    if _error_code(exc) == "NoSuchUpload":
                        continue  # completed or aborted meanwhile
                    raise
            found.append(leftover)
    return sorted(found, key=lambda leftover: leftover.name)


def _s3_leftover(client: Any, bucket: str, upload: Any, key: str) -> Leftover | None:
    """Describe the multipart *upload* of *key*, dated by its newest part
    (or its start), or ``None`` when it ended meanwhile."""
    from botocore.exceptions import ClientError

    modified: datetime = upload["Initiated"]
    size = 0
    pages = client.get_paginator("list_parts").paginate(
        Bucket=bucket,
        Key=upload["Key"],
        UploadId=upload["UploadId"],
        PaginationConfig={"PageSize": _S3_PAGE_SIZE},
    )
    try:
        for page in pages:
            for part in page.get("Parts", ()):
                modified = max(modified, part["LastModified"])
                size += part["Size"]
    except ClientError as exc:
        if _error_code(exc) == "NoSuchUpload":
            return None
        raise
    return Leftover(key, "multipart upload", modified.astimezone(timezone.utc), size)


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _walk(storage: Storage, prefix: str) -> Iterator[str]:
    pending = [prefix.rpartition("/")[0]]
    while pending:
        directory = pending.pop()
        try:
            with _tree_lock(storage):
                directories, files = storage.listdir(directory)
        except _NO_OBJECT:
            continue  # gone meanwhile, or a file: nothing below it
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            continue  # a symbolic link loop the system refuses to follow further
        base = f"{directory}/" if directory else ""
        for name in files:
            key = base + name
            if key.startswith(prefix) and _is_valid(validate_key, key):
                yield key
        for name in directories:
            below = f"{base}{name}/"
            # A directory whose name is too long to hold a valid key is not
            # entered, which also ends a walk through a symlink loop.
            if (below.startswith(prefix) or prefix.startswith(below)) and _is_valid(
                validate_prefix, below
            ):
                pending.append(base + name)


def _is_valid(check: Any, name: str) -> bool:
    try:
        check(name)
    except SnapshotError:
        return False
    return True


def _missing(key: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no object at this key", key)


@contextmanager
def _storage_failures(where: str, *, source: _ForwardReader | None = None) -> Iterator[None]:
    """Turn a storage's failures into SnapshotStorageError, leaving missing
    keys, the library's own errors and the caller's content errors alone."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, (FileNotFoundError, SnapshotError)):
            raise
        if source is not None and exc is source.error:
            raise
        transient = _transient(exc)
        if transient is None:
            raise
        text = _URL_CREDENTIALS.sub("***@", str(exc))
        failure = SnapshotStorageError(
            f"{where} failed: {type(exc).__name__}: {text}", transient=transient
        )
        if text != str(exc):
            # The original names the credentials: it must not ride along in
            # a traceback, nor in an error tracker that reports the chain.
            raise failure from None
        raise failure from exc


def _transient(exc: BaseException) -> bool | None:
    """Whether retrying *exc* may help; ``None`` when it is not a storage failure."""
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        if isinstance(exc, botocore.ClientError):
            status = _http_status(exc) or 0
            code = exc.response.get("Error", {}).get("Code", "")
            return status == 429 or status >= 500 or code in _THROTTLING_CODES
        if isinstance(exc, botocore.SSLError):
            return False  # a certificate does not fix itself
        if isinstance(
            exc,
            (
                botocore.HTTPClientError,
                botocore.ConnectionError,
                botocore.IncompleteReadError,
                botocore.ChecksumError,
            ),
        ):
            return True
        if isinstance(exc, botocore.BotoCoreError):
            return False
    if isinstance(exc, OSError):
        return is_transient(exc)
    if isinstance(exc, SuspiciousOperation):
        return False
    return None


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None

"""Store objects as files under one local directory (advanced tier).

    >>> import io
    >>> from django_snapshots.storage import LocalFileSystemBackend
    >>> storage = LocalFileSystemBackend("snapshots")  # created by the first write
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> storage.list("db/")
    ['db/latest.dump']
    >>> with storage.read("db/latest.dump") as file:
    ...     file.read()
    b'dump'

The key ``db/latest.dump`` is the file ``<location>/db/latest.dump``.  A
relative location is resolved against the current directory once, when the
backend is built.  Building it touches nothing: the location (and any
missing parent) is created by the first write or move, and until then it
reads as an empty store (``list`` returns nothing, ``exists`` is false,
``read`` raises :class:`FileNotFoundError`, ``delete`` does nothing).  A
location that exists but is not a directory, or cannot be opened, makes
every operation raise :class:`~django_snapshots.exceptions.SnapshotStorageError`.
What the backend guarantees:

- **Atomic replacement.**  A write streams into a temporary file in the
  target directory, flushes and fsyncs it, then renames it over the key with
  :func:`os.replace` and fsyncs the directory.  Readers see the old object
  or the new one, never a mix; a write that fails or is interrupted (even by
  ``KeyboardInterrupt``) removes its temporary file and leaves the old object
  as it was.
- **Temporary files are never keys.**  Their names contain U+007F (DEL), a
  character no key may contain and every common file system accepts, so a
  temporary file can never collide with a key and is never listed.
- **Nothing outside the location.**  Keys cannot climb out (the key rules
  forbid ``..``, absolute paths and backslashes), and the backend never
  follows a symbolic link below the location: each directory is opened
  relative to its parent with ``O_NOFOLLOW``, so a link swapped in
  concurrently is refused too, never followed.  A key whose path meets a link
  raises :class:`~django_snapshots.exceptions.SnapshotStoragePathError`;
  listings leave links out.  The location itself may be a link.
- **Private files.**  Objects are created with mode ``0600`` and directories
  with ``0700`` (the umask can only narrow them): backups hold secrets.

A file system cannot hold both an object ``a`` and an object ``a/b``; writing
one while the other exists raises
:class:`~django_snapshots.exceptions.SnapshotStorageError`.  A directory is
never an object: ``exists("a")`` is ``False`` while only ``a/b`` is stored.
A directory that holds no key (only empty directories and temporary files
left by interrupted writes) is not in the way: a write or move to its name
removes it.  Each segment of a key is a file name, so it may be at most
:attr:`~LocalFileSystemBackend.max_segment_bytes` bytes long (255 on most
file systems); a longer one raises
:class:`~django_snapshots.exceptions.SnapshotStoragePathError` before any I/O.

A listing that cannot read every directory below its prefix raises
:class:`~django_snapshots.exceptions.SnapshotStorageError` rather than
return part of the keys, so ``sync`` never deletes a copy because its source
was unreadable.  A file object from ``read`` (and the iterator of
``stream_read``) that failed once keeps failing: it never reports the end of
the object, nor skips bytes, after an error.

The backend needs a POSIX system (``openat``-style calls with ``O_NOFOLLOW``).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import IO, Any, cast

from django_snapshots.exceptions import (
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage.cleanup import (
    DEFAULT_OLDER_THAN,
    Leftover,
    _unless_open,
    check_cleanup_arguments,
)
from django_snapshots.storage.keys import (
    _is_key,
    _parents,
    validate_prefix,
    validate_sync_prefixes,
)
from django_snapshots.storage.streams import CHUNK_SIZE, check_binary_content, iter_chunks
from django_snapshots.storage.wrappers.base import validate_key_through
from django_snapshots.storage.wrappers.retry import is_transient

__all__ = ["LocalFileSystemBackend"]

# How long an object must have been left unchanged before ``sync`` trusts its
# modification time to tell whether a copy is up to date.  File systems
# record modification times with a granularity of up to 2 seconds (FAT), so
# an object rewritten at the same size within one tick keeps its time.
_TRUSTED_AGE_NS = 2_000_000_000

# Keys may not contain U+007F, while POSIX file systems, FAT/exFAT, NTFS and
# SMB shares all accept it in names (a backslash would not survive the last
# three), so no key can ever name a temporary file.
_TEMP_MARK = "\x7f"
_TEMP_NAME = re.compile(r"\.snapshots-write-[0-9a-f]{16}\x7f")
# POSIX's minimum for NAME_MAX is 14, but every file system in use allows 255.
_DEFAULT_NAME_MAX = 255

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_ROOT_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
_DIR_FLAGS = _ROOT_FLAGS | _O_NOFOLLOW
# O_NONBLOCK: opening a FIFO planted under the location must not hang; it has
# no effect on regular files.
_READ_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
_FILE_MODE = 0o600
_DIR_MODE = 0o700
# A concurrent delete prunes empty directories; a write or move that loses
# that race opens its directories again, at most this many times.
_ATTEMPTS = 5


class LocalFileSystemBackend:
    """Store objects as files under *location* (advanced tier, thread-safe).

    *location* (a ``str`` or path-like) is created by the first write when
    missing; ``.location`` is its absolute path, resolved at construction.
    Construction does no I/O.  See the module documentation for what is
    atomic, durable and guaranteed about symbolic links.

    **Crash leftovers.**  A write killed before it could clean up (``SIGKILL``,
    a power cut) leaves its temporary file in the key's directory:
    ``.snapshots-write-`` and 16 hex digits, then U+007F (DEL).  It is never
    listed and never in a key's way, but it takes space until
    :meth:`cleanup` removes it.

    .. versionadded:: 0.1
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        if os.open not in os.supports_dir_fd or not (_O_NOFOLLOW and _O_DIRECTORY):
            raise SnapshotStorageCapabilityError(
                "LocalFileSystemBackend needs a POSIX system (open relative to a "
                "directory, O_NOFOLLOW, O_DIRECTORY)"
            )
        path = os.fspath(location)
        if not isinstance(path, str):
            raise TypeError(
                f"location must be a str or os.PathLike[str], not {type(path).__name__}"
            )
        if not path:
            raise ValueError("location must not be empty")
        # Resolved once, now: a later chdir must not move the objects.
        self._location = os.path.abspath(path)
        # Known once the location exists; nothing is touched before the first
        # operation, so building a stack (for a system check) does no I/O.
        self._name_max: int | None = None

    @property
    def location(self) -> str:
        """The absolute path of the directory that holds the objects."""
        return self._location

    @property
    def max_segment_bytes(self) -> int:
        """The longest file name, in bytes, the location's file system
        accepts: the limit of each ``/``-separated segment of a key.

        .. versionadded:: 0.1
        """
        if self._name_max is not None:
            return self._name_max
        limit, final = _name_max(self._location)
        if final:
            self._name_max = limit
        return limit

    def __repr__(self) -> str:
        return f"LocalFileSystemBackend({self._location!r})"

    def _unreachable(self) -> str | None:
        """Say why the location cannot hold objects now, or ``None`` when it
        can (or can be created by the first write).

        Only looks (``stat`` and ``access``), never creates: the system
        checks call it.
        """
        try:
            mode = os.stat(self._location).st_mode
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            return f"cannot look at it: {exc.strerror or exc}"
        else:
            if not stat.S_ISDIR(mode):
                return "it exists but is not a directory"
            if not os.access(self._location, os.W_OK | os.X_OK):
                return "it is not writable by this process"
            return None
        parent = os.path.dirname(self._location)
        try:
            mode = os.stat(parent).st_mode
        except FileNotFoundError:
            return f"it does not exist, and neither does its parent {parent!r}"
        except OSError as exc:
            return f"it does not exist, and its parent {parent!r} cannot be looked at: " + (
                exc.strerror or str(exc)
            )
        if not stat.S_ISDIR(mode):
            return f"it does not exist, and its parent {parent!r} is not a directory"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"it does not exist, and its parent {parent!r} is not writable"
        return None

    def read(self, path: str) -> IO[bytes]:
        """Open the object at *path* for reading, at offset 0."""
        validate_key_through(self, path)
        *parents, name = path.split("/")
        with self._directories(path, parents, create=False) as fds:
            if fds is None:
                raise _missing(path)
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=fds[-1])
            except FileNotFoundError:
                # Missing when opened, whatever a concurrent writer did since.
                raise _missing(path) from None
            except OSError as exc:
                if self._object_kind(path, fds[-1], name) != "file":
                    raise _missing(path) from None
                raise self._failure("read", path, exc) from exc
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise _missing(path)
                raw = _ObjectFile(fd, key=path, location=self._location)
            except BaseException:
                os.close(fd)
                raise
            return cast("IO[bytes]", io.BufferedReader(raw))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store every byte of *content* at *path*, atomically replacing it."""
        check_binary_content(content)
        self.stream_write(path, iter_chunks(content))

    def list(self, prefix: str) -> list[str]:
        """Return every stored key starting with *prefix*, sorted.

        Only the directory that *prefix* names is walked.
        """
        return self._listing(prefix)

    def _listing(
        self, prefix: str, stats: dict[str, os.stat_result] | None = None
    ) -> builtins.list[str]:
        """Return the keys :meth:`list` returns, and with *stats* put the
        status of each object found in the same walk there."""
        validate_prefix(prefix)
        base, _, start = prefix.rpartition("/")
        segments = base.split("/") if base else []
        if any(len(segment.encode()) > self.max_segment_bytes for segment in segments):
            return []  # no directory can have such a name
        keys: list[str] = []
        with self._directories(prefix, segments, create=False) as fds:
            if fds is not None:
                self._collect(prefix, fds[-1], base, start, keys, stats)
        keys.sort()
        return keys

    def delete(self, path: str) -> None:
        """Remove *path* and the directories it leaves empty; a missing key is fine."""
        validate_key_through(self, path)
        segments = path.split("/")
        with self._directories(path, segments[:-1], create=False) as fds:
            if fds is None or self._object_kind(path, fds[-1], segments[-1]) != "file":
                return
            try:
                os.unlink(segments[-1], dir_fd=fds[-1])
            except FileNotFoundError:
                return
            except OSError as exc:
                raise self._failure("delete", path, exc) from exc
            _fsync_directory(fds[-1])
            _prune(fds, segments)

    def exists(self, path: str) -> bool:
        """Tell whether an object (a regular file) is stored at *path*."""
        validate_key_through(self, path)
        *parents, name = path.split("/")
        with self._directories(path, parents, create=False) as fds:
            return fds is not None and self._object_kind(path, fds[-1], name) == "file"

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the object at *path* in chunks; a missing key raises at once."""
        return _Chunks(self.read(path))

    def stream_write(self, path: str, chunks: Iterable[bytes]) -> None:
        """Store the concatenation of *chunks* at *path*, atomically replacing it."""
        validate_key_through(self, path)
        self._retry_vanished("write", path, lambda: self._write_once(path, chunks))

    def atomic_move(self, src: str, dst: str) -> None:
        """Rename *src* to *dst* in one step, replacing *dst*."""
        validate_key_through(self, src)
        validate_key_through(self, dst)
        src_segments = src.split("/")
        with self._directories(src, src_segments[:-1], create=False) as src_fds:
            if src_fds is None or self._object_kind(src, src_fds[-1], src_segments[-1]) != "file":
                raise _missing(src)
            directory = src_fds[-1]
            self._retry_vanished("move", src, lambda: self._move_once(src, directory, dst))
            _prune(src_fds, src_segments)

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Return the same keys as :meth:`list`."""
        return self.list(prefix)

    def cleanup(
        self,
        prefix: str = "",
        *,
        older_than: timedelta | float = DEFAULT_OLDER_THAN,
        dry_run: bool = False,
    ) -> builtins.list[Leftover]:
        """Remove the temporary files that killed writes left under *prefix*
        and that nobody has written to for at least *older_than*; return
        them, sorted by name.  With *dry_run*, remove nothing and return what
        would be removed.

        A leftover is a regular file named as this backend names its
        temporary files (``.snapshots-write-``, 16 hex digits and U+007F, a
        name no key can spell), in a directory a key could be in; its name is its
        path relative to the location.  Its age is its modification time,
        looked at again right before it is unlinked: a write that resumed
        meanwhile keeps its file.  A temporary file that a process of this
        host holds open is a write in progress, however long its source has
        been quiet: it is kept, and not reported (in a dry run either).  On
        Linux a write lease tells, granted only on a file nobody else has
        open; where none can be had (another system, a network file system,
        a file of another user) the age alone decides, and a write idle for
        longer than *older_than* that resumes after the unlink fails,
        leaving the old object as it was.  Keys, files of any other name,
        links and anything outside the location are never touched, and links
        are never followed.  A directory left empty by the removal is removed
        too, as ``delete`` removes the directories it empties.

        A missing location holds nothing to clean; a directory that cannot
        be read raises :class:`~django_snapshots.exceptions.SnapshotStorageError`,
        so nothing is missed silently.  *prefix* is a list prefix and
        *older_than* a :class:`~datetime.timedelta` or a number of seconds
        (default: a day), both checked before any I/O.

        .. versionadded:: 0.1
        """
        prefix, limit, dry_run = check_cleanup_arguments(prefix, older_than, dry_run)
        base, _, start = prefix.rpartition("/")
        segments = base.split("/") if base else []
        if any(len(segment.encode()) > self.max_segment_bytes for segment in segments):
            return []  # no directory can have such a name
        sweep = _Sweep(self, prefix, limit_ns=limit // timedelta(microseconds=1) * 1000)
        with self._directories(prefix, segments, create=False) as fds:
            if fds is not None and sweep.run(fds[-1], base, start, dry_run=dry_run):
                _prune(fds, segments)
        return sorted(sweep.found, key=lambda leftover: leftover.name)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Make the keys under *dst_prefix* mirror those under *src_prefix*.

        Each object is copied atomically, and its copy carries the source's
        modification time; a copy whose size and modification time (to the
        nanosecond) already match its source is left alone, unless the
        source changed less than 2 seconds before the sync began (see
        :doc:`/backends/local`).  Stale keys under *dst_prefix* are deleted
        after the copies, except those a copy needs out of the way (an
        object ``d/a`` where a directory ``d/a/`` must go, or the reverse).  Nothing is deleted
        unless both listings were complete, and every destination key is
        checked before the first change.

        .. versionchanged:: 0.2
           Unchanged objects are no longer copied again.
        """
        src_prefix, dst_prefix = validate_sync_prefixes(src_prefix, dst_prefix)
        # A source modified after this moment may change again without its
        # modification time changing (the file system's clock ticks coarsely),
        # so its copy is never trusted to be up to date.
        trusted_before = time.time_ns() - _TRUSTED_AGE_NS
        sources: dict[str, os.stat_result] = {}
        copies: dict[str, os.stat_result] = {}
        plan = {
            validate_key_through(self, dst_prefix + key[len(src_prefix) :]): key
            for key in self._listing(src_prefix, sources)
        }
        stale = [key for key in self._listing(dst_prefix, copies) if key not in plan]
        needed_directories = {parent for target in plan for parent in _parents(target)}
        in_the_way = [
            key
            for key in stale
            if key in needed_directories or any(parent in plan for parent in _parents(key))
        ]
        for key in in_the_way:
            self.delete(key)
        for target, source in plan.items():
            if not _up_to_date(sources.get(source), copies.get(target), trusted_before):
                self._sync_object(source, target, trusted_before)
        for key in set(stale).difference(in_the_way):
            self.delete(key)

    def _sync_object(self, source: str, target: str, trusted_before: int) -> None:
        """Copy *source* to *target* with the source's times, or, for a source
        changed since *trusted_before*, a modification time that no later
        version of the source can have."""
        with self.read(source) as content:
            try:
                # The times of the file being read, whatever replaces it meanwhile.
                origin = os.fstat(content.fileno())
            except OSError as exc:
                raise self._failure("read", source, exc) from exc
            mtime = origin.st_mtime_ns
            if mtime >= trusted_before:
                # A nanosecond earlier: a rewrite of the source within the same
                # tick keeps the source's time, and must not look like this
                # copy at the next sync.
                mtime -= 1
            times = (origin.st_atime_ns, mtime)
            chunks = iter_chunks(content)
            self._retry_vanished(
                "write", target, lambda: self._write_once(target, chunks, times=times)
            )

    def _write_once(
        self, path: str, chunks: Iterable[bytes], *, times: tuple[int, int] | None = None
    ) -> None:
        *parents, name = segments = path.split("/")
        with self._directories(path, parents, create=True) as fds:
            assert fds is not None
            directory = fds[-1]
            self._check_target(path, directory, name)
            try:
                temp, fd = _create_temp(directory)
            except OSError as exc:
                _raise_if_vanished(exc, directory)
                raise self._failure("write", path, exc) from exc
            try:
                with os.fdopen(fd, "wb") as file:
                    self._fill(path, file, chunks)
                    try:
                        os.replace(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
                    except FileNotFoundError as exc:
                        # Only a write or move that cleared a directory of no
                        # keys out of its way removes temporary files (or
                        # their directory), or a cleanup that found this one
                        # idle for longer than its limit and could not tell it
                        # was open (no lease to be had): the data is gone, so
                        # say so rather than retry.
                        raise SnapshotStorageError(
                            f"cannot write {path!r} in {self._location!r}: a concurrent write "
                            "or move removed the directory it was being written to, or a "
                            "cleanup removed its temporary file",
                            transient=True,
                        ) from exc
                    except OSError as exc:
                        raise self._failure("write", path, exc) from exc
                    if times is not None:
                        # Only once in place, and through the file itself: a
                        # temporary file bearing its source's time (days old
                        # for an old backup) looks like a leftover to a
                        # cleanup running meanwhile, which would remove it.
                        # Lost in a crash, the times only cost a copy at the
                        # next sync.
                        try:
                            os.utime(file.fileno(), ns=times)
                        except OSError as exc:
                            raise self._failure("write", path, exc) from exc
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=directory)
                _prune(fds, segments)
                raise
            _fsync_directory(directory)

    def _move_once(self, src: str, src_directory: int, dst: str) -> None:
        *parents, name = dst.split("/")
        with self._directories(dst, parents, create=True) as fds:
            assert fds is not None
            self._check_target(dst, fds[-1], name)
            try:
                os.replace(
                    src.rpartition("/")[2], name, src_dir_fd=src_directory, dst_dir_fd=fds[-1]
                )
            except OSError as exc:
                _raise_if_vanished(exc, fds[-1])
                if isinstance(exc, FileNotFoundError):
                    raise _missing(src) from None  # moved or deleted concurrently
                raise self._failure("move", src, exc) from exc
            _fsync_directory(fds[-1])
            _fsync_directory(src_directory)

    def _retry_vanished(self, action: str, key: str, operation: Callable[[], None]) -> None:
        # A concurrent delete may prune a directory between our opening it and
        # creating an entry in it; start again from the location.
        for _ in range(_ATTEMPTS):
            try:
                return operation()
            except _Vanished:
                continue
        raise self._raced(action, key)

    @contextlib.contextmanager
    def _directories(
        self, key: str, segments: builtins.list[str], *, create: bool
    ) -> Iterator[builtins.list[int] | None]:
        """Open the location and each directory of *segments* below it.

        Yields the open descriptors, root first, or ``None`` when a directory
        is missing (or is an object) and *create* is false.  A symbolic link
        on the way raises :class:`SnapshotStoragePathError`.
        """
        fds: builtins.list[int] = []
        try:
            result: builtins.list[int] | None = None
            root = self._open_root(key, create=create)
            if root is not None:
                fds.append(root)
                for depth in range(1, len(segments) + 1):
                    fd = self._open_directory(key, fds[-1], segments[:depth], create=create)
                    if fd is None:
                        break
                    fds.append(fd)
                else:
                    result = fds
            yield result
        finally:
            for fd in fds:
                os.close(fd)

    def _open_root(self, key: str, *, create: bool) -> int | None:
        try:
            return os.open(self._location, _ROOT_FLAGS)
        except FileNotFoundError:
            if not create:
                return None  # not created yet, or removed: it holds nothing
        except OSError as exc:
            raise self._failure("open the location for", key, exc) from exc
        try:
            os.makedirs(self._location, mode=_DIR_MODE, exist_ok=True)
            return os.open(self._location, _ROOT_FLAGS)
        except OSError as exc:
            raise self._failure("create the location for", key, exc) from exc

    def _open_directory(
        self, key: str, parent: int, segments: builtins.list[str], *, create: bool
    ) -> int | None:
        name = segments[-1]
        for _ in range(_ATTEMPTS):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return None
            except OSError as exc:
                kind = self._object_kind(key, parent, name, directory_name="/".join(segments))
                if kind is None:
                    continue  # removed since the open failed: look again
                if kind == "dir":
                    raise self._failure("open a directory for", key, exc) from exc
                if not create:
                    return None
                raise SnapshotStorageError(
                    f"cannot store {key!r} in {self._location!r}: {'/'.join(segments)!r} is "
                    "an object, and a local file system cannot also hold keys below it"
                ) from None
            try:
                os.mkdir(name, _DIR_MODE, dir_fd=parent)
            except FileExistsError:
                continue  # created concurrently: open it
            except OSError as exc:
                _raise_if_vanished(exc, parent)
                raise self._failure("create a directory for", key, exc) from exc
            _fsync_directory(parent)
        raise self._raced("open a directory for", key)

    def _object_kind(
        self, key: str, directory: int, name: str, *, directory_name: str | None = None
    ) -> str | None:
        """Return ``"file"``, ``"dir"``, ``"other"`` or ``None`` (missing) for
        *name* in *directory*; a symbolic link raises."""
        try:
            mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return None  # no such name can exist here
            raise self._failure("look up", key, exc) from exc
        if stat.S_ISLNK(mode):
            shown = directory_name or key
            raise SnapshotStoragePathError(
                f"invalid key {key!r}: {shown!r} is a symbolic link in {self._location!r}, "
                "and LocalFileSystemBackend never follows links"
            )
        if stat.S_ISREG(mode):
            return "file"
        return "dir" if stat.S_ISDIR(mode) else "other"

    def _check_target(self, key: str, directory: int, name: str) -> None:
        kind = self._object_kind(key, directory, name)
        if kind == "dir":
            self._clear_directory(key, directory, name)
        elif kind == "other":
            raise SnapshotStorageError(
                f"cannot store {key!r} in {self._location!r}: a special file is in the way"
            )

    def _clear_directory(self, key: str, parent: int, name: str) -> None:
        """Remove the directory *name* that stands where the object *key*
        must go, if no key is stored below it, else raise."""
        try:
            directory = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return  # removed meanwhile: out of the way
        except OSError as exc:
            raise self._failure("open a directory for", key, exc) from exc
        try:
            # Look first, remove second: temporary files of writes in progress
            # are not removed when a key elsewhere below forbids it anyway.
            clear = _holds_no_keys(directory, remove=False) and _holds_no_keys(
                directory, remove=True
            )
        except OSError as exc:
            raise self._failure("clear the way for", key, exc) from exc
        finally:
            os.close(directory)
        if clear:
            try:
                os.rmdir(name, dir_fd=parent)
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise self._failure("clear the way for", key, exc) from exc
                clear = False  # something was stored below it meanwhile
        if not clear:
            raise SnapshotStorageError(
                f"cannot store {key!r} in {self._location!r}: other keys are stored below "
                f"{key + '/'!r} (or files that are not keys), and a local file system cannot "
                "hold both"
            )
        _fsync_directory(parent)

    def _collect(
        self,
        prefix: str,
        directory: int,
        base: str,
        start: str,
        keys: builtins.list[str],
        stats: dict[str, os.stat_result] | None,
    ) -> None:
        """Append to *keys* every object below *directory* (whose key prefix is
        *base*) in an entry whose name starts with *start*, and put its status
        in *stats* if given; a directory that cannot be read raises, so a
        listing is never silently partial."""
        try:
            found = _scan(directory, start)
        except OSError as exc:
            raise self._unlisted(prefix, base, exc) from exc
        for name, is_dir, is_file in found:
            key = f"{base}/{name}" if base else name
            if not _is_key(key):
                continue  # a temporary file, or a name no key can spell
            if is_file:
                keys.append(key)
                if stats is not None:
                    try:
                        stats[key] = os.stat(name, dir_fd=directory, follow_symlinks=False)
                    except FileNotFoundError:
                        pass  # removed since the scan: listed, with no status
                    except OSError as exc:
                        raise self._unlisted(prefix, base, exc) from exc
            elif is_dir:
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=directory)
                except OSError as exc:
                    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ELOOP:
                        continue  # removed, or swapped for a link, since the scan
                    if exc.errno == errno.ENOTDIR:
                        if self._object_kind(prefix, directory, name) == "file":
                            keys.append(key)  # swapped for an object since the scan
                        continue
                    raise self._unlisted(prefix, key, exc) from exc
                try:
                    self._collect(prefix, child, key, "", keys, stats)
                finally:
                    os.close(child)

    def _unlisted(
        self, prefix: str, directory: str, exc: OSError, *, action: str = "list"
    ) -> SnapshotStorageError:
        where = f"the directory {directory + '/'!r}" if directory else "the location"
        return SnapshotStorageError(
            f"cannot {action} {prefix!r} in {self._location!r}: cannot read {where}: "
            f"{exc.strerror or exc}",
            transient=is_transient(exc),
        )

    def _fill(self, key: str, file: IO[bytes], chunks: Iterable[bytes]) -> None:
        """Write *chunks* to the temporary *file* and sync it."""
        # Errors raised by *chunks* are the caller's and pass through
        # untouched; only the file's own errors become storage errors.
        for chunk in chunks:
            try:
                file.write(chunk)
            except OSError as exc:
                raise self._failure("write", key, exc) from exc
        try:
            file.flush()
            os.fsync(file.fileno())
        except OSError as exc:
            raise self._failure("write", key, exc) from exc

    def _failure(self, action: str, key: str, exc: OSError) -> SnapshotStorageError:
        return SnapshotStorageError(
            f"cannot {action} {key!r} in {self._location!r}: {exc.strerror or exc}",
            transient=is_transient(exc),
        )

    def _raced(self, action: str, key: str) -> SnapshotStorageError:
        return SnapshotStorageError(
            f"cannot {action} {key!r} in {self._location!r}: its directory kept being "
            "removed by concurrent deletes",
            transient=True,
        )


class _Sweep:
    """One cleanup's walk: the temporary files below a directory that are
    old enough to go, removed unless it is a dry run."""

    def __init__(self, backend: LocalFileSystemBackend, prefix: str, *, limit_ns: int) -> None:
        self._backend = backend
        self._prefix = prefix
        self._limit_ns = limit_ns
        #: The leftovers removed (or, in a dry run, that would be).
        self.found: builtins.list[Leftover] = []

    def run(self, directory: int, base: str, start: str, *, dry_run: bool) -> bool:
        """Sweep the entries of *directory* (whose path is *base*) whose
        names start with *start*, and everything below them; tell whether
        anything was removed, so that emptied directories can go too."""
        try:
            entries = _scan(directory, start)
        except OSError as exc:
            raise self._unreadable(base, exc) from exc
        removed = False
        for name, is_dir, is_file in entries:
            path = f"{base}/{name}" if base else name
            if is_file and _TEMP_NAME.fullmatch(name):
                removed |= self._take(directory, name, path, dry_run=dry_run)
            elif is_dir and _is_key(path):
                # A directory no key can be in holds no temporary file of ours.
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=directory)
                except OSError as exc:
                    if isinstance(exc, FileNotFoundError) or exc.errno in (
                        errno.ELOOP,
                        errno.ENOTDIR,
                    ):
                        continue  # removed, or swapped for a link or a file, since the scan
                    raise self._unreadable(path, exc) from exc
                try:
                    emptied = self.run(child, path, "", dry_run=dry_run)
                finally:
                    os.close(child)
                if emptied:
                    removed = True
                    # Only an empty directory goes, as after a delete; a write
                    # that opened it meanwhile opens its directories again.
                    with contextlib.suppress(OSError):
                        os.rmdir(name, dir_fd=directory)
        return removed

    def _take(self, directory: int, name: str, path: str, *, dry_run: bool) -> bool:
        """Record the temporary file *name* if it is old enough, and remove
        it unless *dry_run*; tell whether it was removed."""
        try:
            # Looked at right before the unlink: a write that resumed since
            # the scan has made it young again.
            status = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return False  # its write ended, or another cleanup took it
        except OSError as exc:
            raise self._backend._failure("look at the leftover", path, exc) from exc
        if not stat.S_ISREG(status.st_mode) or time.time_ns() - status.st_mtime_ns < self._limit_ns:
            return False
        leftover = Leftover(path, "temporary file", _utc(status.st_mtime_ns), status.st_size)
        # A write whose source went quiet for longer than the limit still
        # holds its file open: removed, the write would fail at its rename.
        # The lease keeps anyone from opening the file until it is unlinked.
        with _unless_open(name, directory, status) as unused:
            if not unused:
                return False
            if not dry_run:
                try:
                    os.unlink(name, dir_fd=directory)
                except FileNotFoundError:
                    return False
                except OSError as exc:
                    raise self._backend._failure("remove the leftover", path, exc) from exc
        self.found.append(leftover)
        return not dry_run

    def _unreadable(self, directory: str, exc: OSError) -> SnapshotStorageError:
        return self._backend._unlisted(self._prefix, directory, exc, action="clean up")


class _ObjectFile(io.RawIOBase):
    """The raw file of an object opened by ``read``.

    Read failures become :class:`SnapshotStorageError`, and the first one
    sticks: every later read or seek raises again, so a caller that goes on
    after an error never sees the end of the object, nor bytes after a gap.
    """

    mode = "rb"

    def __init__(self, fd: int, *, key: str, location: str) -> None:
        super().__init__()
        self._fd = fd
        self._key = key
        self._location = location
        self._error: SnapshotStorageError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        self._check_usable()
        return self._fd

    def readinto(self, buffer: Any) -> int:
        self._check_usable()
        try:
            return os.readv(self._fd, [buffer])
        except OSError as exc:
            raise self._fail(exc) from exc

    def readall(self) -> bytes:
        return b"".join(iter_chunks(cast("IO[bytes]", self)))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_usable()
        try:
            return os.lseek(self._fd, offset, whence)
        except OSError as exc:
            raise self._fail(exc) from exc

    def tell(self) -> int:
        return self.seek(0, io.SEEK_CUR)

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()

    def _check_usable(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._error is not None:
            raise SnapshotStorageError(
                f"cannot read {self._key!r} in {self._location!r}: an earlier read of this "
                "file object failed",
                transient=self._error.transient,
            ) from self._error

    def _fail(self, exc: OSError) -> SnapshotStorageError:
        self._error = SnapshotStorageError(
            f"cannot read {self._key!r} in {self._location!r}: {exc.strerror or exc}",
            transient=is_transient(exc),
        )
        return self._error


class _Chunks:
    """The chunks of a file object from ``read``, closed at the end.

    Unlike a generator, it does not end after an error: the next call asks
    the file object again, which raises again.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._stream.closed:
            raise StopIteration
        chunk = self._stream.read(CHUNK_SIZE)
        if not chunk:
            self._stream.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._stream.close()


class _Vanished(Exception):
    """A directory in use was removed by a concurrent delete."""


def _raise_if_vanished(exc: OSError, directory: int) -> None:
    if isinstance(exc, FileNotFoundError) and _vanished(directory):
        raise _Vanished from exc


def _missing(key: str) -> FileNotFoundError:
    return FileNotFoundError(f"no object at {key!r}")


def _name_max(location: str) -> tuple[int, bool]:
    """Return the name limit of *location*'s file system, and whether it is
    final: a location that does not exist yet is answered for the nearest
    directory that does (the same file system in all likelihood, but a
    mount may change that before the first write)."""
    path = location
    while True:
        try:
            limit = os.pathconf(path, "PC_NAME_MAX")
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(path)
            if parent == path:
                return _DEFAULT_NAME_MAX, False
            path = parent
            continue
        except (OSError, ValueError):
            return _DEFAULT_NAME_MAX, False
        return (limit if limit > 0 else _DEFAULT_NAME_MAX), path == location


def _up_to_date(
    source: os.stat_result | None, copy: os.stat_result | None, trusted_before: int
) -> bool:
    """Tell whether *copy* was made from *source* as it is now: both regular
    files of the same size and modification time, and the source unchanged
    since *trusted_before*."""
    return (
        source is not None
        and copy is not None
        and stat.S_ISREG(source.st_mode)
        and stat.S_ISREG(copy.st_mode)
        and source.st_size == copy.st_size
        and source.st_mtime_ns == copy.st_mtime_ns
        and source.st_mtime_ns < trusted_before
    )


def _utc(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)


def _create_temp(directory: int) -> tuple[str, int]:
    while True:
        name = f".snapshots-write-{secrets.token_hex(8)}{_TEMP_MARK}"
        try:
            return name, os.open(name, _TEMP_FLAGS, _FILE_MODE, dir_fd=directory)
        except FileExistsError:
            continue


def _scan(directory: int, start: str = "") -> list[tuple[str, bool, bool]]:
    """Return the name, is-a-directory and is-a-file of each entry of
    *directory* whose name starts with *start*; a link is neither."""
    with os.scandir(directory) as entries:
        return [
            (entry.name, entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False))
            for entry in entries
            if entry.name.startswith(start)
        ]


def _holds_no_keys(directory: int, *, remove: bool) -> bool:
    """Tell whether *directory* holds nothing but directories and temporary
    files, recursively; with *remove*, also delete them on the way (a
    directory only once empty).  Links and files of any other name are
    never touched, nor followed."""
    for name, is_dir, is_file in _scan(directory):
        if is_file and _TEMP_NAME.fullmatch(name):
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=directory)
            continue
        if not is_dir:
            return False  # a key, a link, or a file that is not ours
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=directory)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return False  # swapped for a link or a file since the scan
            raise
        try:
            if not _holds_no_keys(child, remove=remove):
                return False
        finally:
            os.close(child)
        if remove:
            try:
                os.rmdir(name, dir_fd=directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
    return True


def _prune(fds: builtins.list[int], segments: builtins.list[str]) -> None:
    """Remove the directories of *fds* (below the root) that are now empty,
    deepest first."""
    for depth in range(len(fds) - 1, 0, -1):
        try:
            os.rmdir(segments[depth - 1], dir_fd=fds[depth - 1])
        except OSError:
            return  # not empty (or already gone): the ones above are not empty either


def _vanished(directory: int) -> bool:
    try:
        return os.fstat(directory).st_nlink == 0
    except OSError:
        return False


def _fsync_directory(directory: int) -> None:
    try:
        os.fsync(directory)
    except OSError as exc:
        # Some file systems cannot sync a directory; the data itself is synced.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise

"""A storage stack seen as a Django file storage.

:class:`SnapshotFileStorage` is a :class:`django.core.files.storage.Storage`
that keeps every file in a snapshot stack, so that code written for Django
storages (a ``FileField``, django-dbbackup, ``collectstatic``) gets the
stack's audit log, retries, checksums, tenant prefixes, encryption and
compression::

    >>> from django.core.files.base import ContentFile
    >>> from django_snapshots.files import SnapshotFileStorage
    >>> from django_snapshots.storage import Checksum, MemoryBackend
    >>> files = SnapshotFileStorage(storage=Checksum(MemoryBackend()))
    >>> files.save("avatars/ada.png", ContentFile(b"png"))
    'avatars/ada.png'
    >>> files.save("avatars/ada.png", ContentFile(b"other"))  # never overwrites
    'avatars/ada_....png'
    >>> with files.open("avatars/ada.png") as file:
    ...     file.read()
    b'png'
    >>> files.listdir("avatars")
    ([], ['ada.png', 'ada_....png'])

In ``settings.STORAGES`` the stack is given as the same data that
``SNAPSHOTS["STORAGE"]`` takes:

.. code-block:: python

    STORAGES = {
        "dbbackup": {
            "BACKEND": "django_snapshots.files.SnapshotFileStorage",
            "OPTIONS": {
                "storage": {
                    "BACKEND": "django_snapshots.storage.LocalFileSystemBackend",
                    "OPTIONS": {"location": "backups"},
                    "WRAPPERS": ["django_snapshots.storage.Checksum"],
                },
                "prefix": "db",
            },
        },
    }

What differs from ``FileSystemStorage``:

- Names follow the key rules (see :mod:`django_snapshots.storage.keys`); a
  name that breaks them raises
  :class:`~django.core.exceptions.SuspiciousFileOperation` from every method,
  before any I/O, as ``FileSystemStorage`` does for a name that climbs out
  of its location.  So does a name that a layer of the stack refuses (a key
  that a ``Prefix`` or a checksum sidecar would make too long).
- Files are objects, not directories: ``exists`` is ``False`` for a
  directory, and ``listdir`` of a directory that holds nothing returns two
  empty lists where ``FileSystemStorage`` raises :class:`FileNotFoundError`.
- ``open`` reads only (``"rb"``); the file streams from the stack, seeks
  forward by reading ahead and backward by reading the object again from
  its start, and has no ``fileno()``.
- ``size`` reads the whole object through the stack (verifying it, if the
  stack has a ``Checksum``): the storage protocol has no size query.
- ``url``, ``path`` and the ``get_*_time`` methods raise
  :class:`NotImplementedError`.
- Without ``allow_overwrite``, ``save`` picks a free name as every Django
  storage does: it asks ``exists`` and then writes.  The protocol has no
  "create if absent", so two processes saving the same name at the same
  moment can both see it free, and the later write replaces the earlier.

Errors of the stack reach the caller unchanged: a
:class:`~django_snapshots.SnapshotIntegrityError` (a corrupt or undecryptable
object) is raised by the read that reaches the damage, never turned into data.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import IO, TYPE_CHECKING, Any, cast

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import File
from django.core.files.storage import Storage
from django.utils.deconstruct import deconstructible

from django_snapshots.conf import build_storage, get_storage
from django_snapshots.exceptions import SnapshotStoragePathError
from django_snapshots.storage.keys import _show, validate_key
from django_snapshots.storage.memory import MemoryBackend
from django_snapshots.storage.protocols import SnapshotStorage
from django_snapshots.storage.streams import CHUNK_SIZE, ReadableStream, _read_into
from django_snapshots.storage.wrappers.prefix import Prefix

__all__ = ["SnapshotFile", "SnapshotFileStorage"]

# The keys of stack data, as SNAPSHOTS["STORAGE"] spells them.  django-dbbackup
# lower-cases the names of the options it passes, so both spellings are taken.
_DATA_KEYS = ("BACKEND", "OPTIONS", "WRAPPERS")

if TYPE_CHECKING:
    _BinaryFile = File[bytes]
else:  # File is generic for type checkers only
    _BinaryFile = File


@deconstructible(path="django_snapshots.files.SnapshotFileStorage")
class SnapshotFileStorage(Storage):
    """A Django file storage that stores through a snapshot stack.

    *storage* is the stack: a storage object, the data that
    ``SNAPSHOTS["STORAGE"]`` takes (a dict of ``BACKEND``, ``OPTIONS`` and
    ``WRAPPERS``), or ``None`` for the stack of
    :func:`~django_snapshots.get_storage`, looked up at every call so that it
    follows ``override_settings``.  The data may also be given as the
    keyword arguments ``BACKEND``, ``OPTIONS`` and ``WRAPPERS`` themselves
    (or ``backend``, ``options`` and ``wrappers``, as django-dbbackup passes
    them).  Data is built into a stack on first use; a mistake raises
    :class:`~django_snapshots.conf.InvalidStorageSettingError` naming the
    entry at fault.

    *prefix* scopes the storage to the keys under ``prefix/`` (a
    :class:`~django_snapshots.storage.Prefix` over the stack), and
    *allow_overwrite* makes ``save`` replace an existing file of the same
    name instead of picking another name, as for ``FileSystemStorage``.

    ``deconstruct()`` returns the arguments as given, so a ``FileField``
    whose storage is built from data, or from nothing, can be written into
    a migration; one built from a stack object cannot.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        storage: SnapshotStorage | Mapping[str, Any] | None = None,
        prefix: str = "",
        allow_overwrite: bool = False,
        **data: Any,
    ) -> None:
        self._data = _stack_data(storage, data)
        self._storage: SnapshotStorage | None = (
            storage if self._data is None and not isinstance(storage, Mapping) else None
        )
        if not isinstance(prefix, str):
            raise TypeError(
                f"SnapshotFileStorage needs prefix as a str, not {type(prefix).__name__}"
            )
        if prefix:
            Prefix(MemoryBackend(), prefix)  # the prefix follows the key rules
        self._prefix = prefix
        self._allow_overwrite = bool(allow_overwrite)
        self._lock = threading.Lock()
        self._built: SnapshotStorage | None = None
        self._scoped: tuple[SnapshotStorage, SnapshotStorage] | None = None

    @property
    def stack(self) -> SnapshotStorage:
        """The snapshot stack files go to, with the ``Prefix`` of *prefix*
        on top (the stack of ``get_storage()`` as it is now, when no stack
        was given).

        .. versionadded:: 0.1
        """
        base = self._base()
        if not self._prefix:
            return base
        scoped = self._scoped
        if scoped is not None and scoped[0] is base:
            return scoped[1]
        stack = Prefix(base, self._prefix)
        self._scoped = (base, stack)
        return stack

    def __repr__(self) -> str:
        if self._storage is not None:
            shown = repr(self._storage)
        elif self._data is not None:
            # Never the OPTIONS: they may hold credentials.
            shown = f"<data: BACKEND {self._data.get('BACKEND')!r}>"
        else:
            shown = "<get_storage()>"
        prefix = f", prefix={self._prefix!r}" if self._prefix else ""
        return f"SnapshotFileStorage({shown}{prefix})"

    # Reading

    def _open(self, name: str, mode: str = "rb") -> SnapshotFile:
        if not isinstance(mode, str) or sorted(mode) != ["b", "r"]:
            raise ValueError(
                f"SnapshotFileStorage opens files only to read them in binary mode ('rb'), "
                f"not {mode!r}: save new content with save(name, content)"
            )
        return SnapshotFile(self, name)

    def exists(self, name: str) -> bool:
        """Tell whether a file is stored at *name* (``False`` for a directory)."""
        with _names(name):
            return self.stack.exists(validate_key(name))

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """Return the directories and the files directly in *path*, each
        sorted, from one listing of the stack (``""`` is the top).  A
        directory that holds nothing gives two empty lists."""
        with _names(path):
            directory = path.removesuffix("/") if isinstance(path, str) else path
            prefix = validate_key(directory) + "/" if directory != "" else ""
            keys = self.stack.list(prefix)
        directories: set[str] = set()
        files: list[str] = []
        for key in keys:
            head, slash, _ = key[len(prefix) :].partition("/")
            if slash:
                directories.add(head)
            else:
                files.append(head)
        return sorted(directories), sorted(files)

    def size(self, name: str) -> int:
        """Return the size of the file at *name* in bytes, by reading it
        whole through the stack: it costs a full download, and verifies the
        file if the stack has a ``Checksum``."""
        with _names(name):
            source = self.stack.read(validate_key(name))
        with source:
            return _count(source)

    # Writing

    def _save(self, name: str, content: File[Any]) -> str:
        with suppress(AttributeError, io.UnsupportedOperation):
            content.seek(0)  # Django storages save the content from its start
        with _names(name):
            self.stack.write(validate_key(name), cast("IO[bytes]", _Content(content)))
        return name

    def delete(self, name: str) -> None:
        """Delete the file at *name*; a missing file is not an error."""
        with _names(name):
            self.stack.delete(validate_key(name))

    def is_name_available(self, name: str, max_length: int | None = None) -> bool:
        if self._allow_overwrite:
            return not (max_length and len(name) > max_length)
        return super().is_name_available(name, max_length=max_length)

    def get_alternative_name(self, file_root: str, file_ext: str) -> str:
        if self._allow_overwrite:
            return f"{file_root}{file_ext}"
        return super().get_alternative_name(file_root, file_ext)

    # What a snapshot stack does not have

    def url(self, name: str | None) -> str:
        raise NotImplementedError(
            "SnapshotFileStorage has no URLs: a snapshot stack stores backups, it does not "
            "serve them; read a file with open(name)"
        )

    def path(self, name: str) -> str:
        raise NotImplementedError(
            "SnapshotFileStorage has no local paths: files may be remote, encrypted or "
            "compressed in the stack; read a file with open(name)"
        )

    def get_accessed_time(self, name: str) -> Any:
        raise NotImplementedError(_NO_TIMES)

    def get_created_time(self, name: str) -> Any:
        raise NotImplementedError(_NO_TIMES)

    def get_modified_time(self, name: str) -> Any:
        raise NotImplementedError(_NO_TIMES)

    def _base(self) -> SnapshotStorage:
        if self._storage is not None:
            return self._storage
        if self._data is None:
            return get_storage()
        built = self._built
        if built is None:
            with self._lock:
                if self._built is None:
                    self._built = build_storage(
                        self._data, setting="SnapshotFileStorage(storage=...)"
                    )
                built = self._built
        return built


_NO_TIMES = (
    "SnapshotFileStorage keeps no file times: the storage protocol has none; "
    "put the time in the name, as backup tools do"
)


def _deconstruct_without_secrets(
    deconstruct: Callable[[Any], tuple[str, tuple[Any, ...], dict[str, Any]]],
) -> Callable[[Any], tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Wrap the ``deconstruct`` that ``@deconstructible`` gives, so that stack
    data holding credentials is refused rather than written into a migration
    file, and from there into version control."""

    def checked(self: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        path, args, kwargs = deconstruct(self)
        secret = _secret_option([args, kwargs])
        if secret is not None:
            raise ValueError(
                f"SnapshotFileStorage cannot be written into a migration: its stack data has "
                f"an option {secret!r} that may hold a credential, which the migration file "
                "would keep in version control; configure the stack in SNAPSHOTS and pass "
                "no storage (prefix= may stay), or give the FileField a callable that "
                "returns the storage"
            )
        return path, args, kwargs

    return checked


# Option names whose values are credentials or secret keys.
_SECRET_NAME = re.compile(
    r"secret|password|passwd|token|credential|identit|private|session|sas|service_account",
    re.IGNORECASE,
)


def _secret_option(value: object) -> str | None:
    """The first mapping key under *value* that names a secret, if any."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _SECRET_NAME.search(key):
                return key
            found = _secret_option(item)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for item in value:
            found = _secret_option(item)
            if found is not None:
                return found
    return None


class SnapshotFile(_BinaryFile):
    """A file of a :class:`SnapshotFileStorage`, open for reading.

    Reads stream from the stack, one chunk at a time.  The file is
    seekable: a forward seek reads ahead, a backward seek reads the object
    again from its start, and ``size`` (or a seek from the end) reads the
    whole object once more.  It has no ``fileno()``, so that tools which
    hand an OS file to another program first copy it whole, and an object
    that fails verification at its end stops them before they use any of
    it.  ``open()`` after ``close()`` reads the object again.

    .. versionadded:: 0.1
    """

    def __init__(self, storage: SnapshotFileStorage, name: str) -> None:
        self._storage = storage
        super().__init__(self._reader(name), name)
        self.mode = "rb"

    def open(self, mode: str | None = None, *args: Any, **kwargs: Any) -> SnapshotFile:
        if mode is not None and mode != "rb":
            self._storage._open(str(self.name), mode)  # raises, saying why
        if not self.closed:
            self.seek(0)
        else:
            self.file = self._reader(str(self.name))
            with suppress(AttributeError):
                del self._size  # type: ignore[attr-defined]
        return self

    def _reader(self, name: str) -> IO[bytes]:
        storage = self._storage

        def read() -> IO[bytes]:
            with _names(name):
                return storage.stack.read(validate_key(name))

        def size() -> int:
            return storage.size(name)

        return cast("IO[bytes]", _Buffered(_ObjectReader(read, size)))


class _ObjectReader(io.RawIOBase):
    """An object of the stack as a seekable raw stream.  *read* opens the
    object at offset 0 (now, so that a missing one raises at ``open``);
    *size* reads its size."""

    def __init__(self, read: Callable[[], IO[bytes]], size: Callable[[], int]) -> None:
        super().__init__()
        self._read = read
        self._size_of = size
        self._source = read()
        self._position = 0  # where the caller is
        self._offset = 0  # where the source is (short of _position past the end)
        self._size: int | None = None
        # Once reading, skipping or reopening failed, every later call raises
        # it again: a position that is no longer known must never read as
        # the end of the object.
        self._failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._position

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        if not view or self._position != self._offset:
            return 0  # past the end
        try:
            n = _read_into(self._source, view)
        except BaseException as exc:
            self._failure = exc
            raise
        if not n:
            self._size = self._offset
        self._offset += n
        self._position = self._offset
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        try:
            if target < self._offset:
                self._source.close()
                self._offset = self._position = 0
                self._source = self._read()
            self._skip(target - self._offset)
        except BaseException as exc:
            self._failure = exc
            raise
        self._position = target
        return target

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = self._size_of()
        return self._size

    def close(self) -> None:
        if not self.closed:
            try:
                self._source.close()
            finally:
                super().close()

    def _skip(self, count: int) -> None:
        buffer = bytearray(min(count, CHUNK_SIZE))
        view = memoryview(buffer)
        while count > 0:
            n = _read_into(self._source, view[: min(count, len(view))])
            if not n:
                self._size = self._offset
                return
            self._offset += n
            count -= n

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed file")
        if self._failure is not None:
            raise self._failure


class _Buffered(io.BufferedReader):
    """A buffered file over an :class:`_ObjectReader` that tells Django's
    ``File.size`` the object's size (without it, Django would seek to the
    end, or measure a local file that happens to have the same name)."""

    @property
    def size(self) -> int:
        return cast(_ObjectReader, self.raw).size

    def __init__(self, raw: _ObjectReader) -> None:
        super().__init__(raw, buffer_size=CHUNK_SIZE)
        self._seek_failure: BaseException | None = None

    # A seek that failed leaves the buffer of the old position in place: it
    # must not be handed out as if it were at the new one.

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_seek()
        try:
            return super().seek(offset, whence)
        except BaseException as exc:
            self._seek_failure = exc
            raise

    def read(self, size: int | None = -1) -> bytes:
        self._check_seek()
        return super().read(size)

    def read1(self, size: int = -1) -> bytes:
        self._check_seek()
        return super().read1(size)

    def readinto(self, buffer: Any) -> int:
        self._check_seek()
        return super().readinto(buffer)

    def readinto1(self, buffer: Any) -> int:
        self._check_seek()
        return super().readinto1(buffer)

    def readline(self, size: int | None = -1) -> bytes:
        self._check_seek()
        return super().readline(size)

    def peek(self, size: int = 0) -> bytes:
        self._check_seek()
        return super().peek(size)

    def __next__(self) -> bytes:
        self._check_seek()
        return super().__next__()

    def _check_seek(self) -> None:
        if self._seek_failure is not None:
            raise self._seek_failure


class _Content(ReadableStream):
    """The content given to ``save`` as a binary stream for the stack's
    ``write``: text (a ``ContentFile`` of a ``str``) is encoded as UTF-8, as
    ``FileSystemStorage`` writes it, and a seekable content stays seekable,
    so that a ``Retry`` below rewinds it rather than spooling a copy."""

    def __init__(self, content: File[Any]) -> None:
        super().__init__()
        self._content = content

    def read(self, size: int | None = -1) -> bytes:
        data = self._content.read(-1 if size is None else size)
        return data.encode() if isinstance(data, str) else bytes(data)

    def seekable(self) -> bool:
        try:
            return bool(self._content.seekable())
        except (AttributeError, ValueError):
            return False

    def tell(self) -> int:
        return int(self._content.tell())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._content.seek(offset, whence))


@contextmanager
def _names(name: object) -> Iterator[None]:
    """Turn a name that the stack refuses into SuspiciousFileOperation, as
    Django storages report names they cannot accept."""
    try:
        yield
    except SnapshotStoragePathError as exc:
        raise SuspiciousFileOperation(
            f"The name {_show(name)} cannot be stored through a snapshot stack: {exc}"
        ) from exc


def _stack_data(
    storage: SnapshotStorage | Mapping[str, Any] | None, data: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """Return the stack data given as *storage* or as keyword arguments, or
    ``None`` when the stack is a storage object or ``get_storage()``."""
    given: dict[str, Any] = {}
    for name, value in data.items():
        key = name.upper()
        if key not in _DATA_KEYS:
            raise TypeError(
                f"SnapshotFileStorage got an unexpected keyword argument {name!r}; it takes "
                "storage, prefix, allow_overwrite, or the stack data BACKEND, OPTIONS and "
                "WRAPPERS"
            )
        if key in given:
            raise TypeError(f"SnapshotFileStorage got {key} twice, in two spellings")
        given[key] = value
    if given:
        if storage is not None:
            raise TypeError(
                "SnapshotFileStorage takes the stack either as storage or as BACKEND, OPTIONS "
                "and WRAPPERS, not both"
            )
        return given
    if storage is None:
        return None
    if isinstance(storage, Mapping):
        return storage
    if isinstance(storage, type) or not isinstance(storage, SnapshotStorage):
        raise TypeError(
            "SnapshotFileStorage needs as storage a snapshot stack (read, write, list, delete, "
            "exists) or its data as a dict of BACKEND, OPTIONS and WRAPPERS, not "
            f"{_describe(storage)}"
        )
    return None


def _describe(value: object) -> str:
    return f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__


def _count(source: IO[bytes]) -> int:
    buffer = memoryview(bytearray(CHUNK_SIZE))
    total = 0
    while n := _read_into(source, buffer):
        total += n
    return total


# @deconstructible sets ``deconstruct`` on the class, over any of the class body.
SnapshotFileStorage.deconstruct = _deconstruct_without_secrets(  # type: ignore[attr-defined]
    SnapshotFileStorage.deconstruct  # type: ignore[attr-defined]
)

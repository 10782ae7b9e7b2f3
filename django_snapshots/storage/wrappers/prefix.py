"""The tenant wrapper: scope a storage to the keys under one prefix.

    >>> import io
    >>> from django_snapshots.storage import MemoryBackend, Prefix
    >>> shared = MemoryBackend()
    >>> acme = Prefix(shared, "tenant-a")
    >>> acme.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> shared.list("")
    ['tenant-a/db/latest.dump']
    >>> acme.list("")
    ['db/latest.dump']

Every key and prefix the tenant passes is checked by the key rules before
any I/O, so no string the tenant sends can name an object outside
``tenant-a/``, and a sibling such as ``tenant-a2/`` is never visible.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from operator import itemgetter
from typing import IO, TYPE_CHECKING, Any, cast, overload

from django_snapshots.exceptions import SnapshotStorageError, SnapshotStoragePathError
from django_snapshots.storage.keys import (
    MAX_KEY_BYTES,
    _show,
    validate_dir_prefix,
    validate_key,
    validate_prefix,
    validate_sync_prefixes,
)
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import check_binary_content
from django_snapshots.storage.wrappers.base import StorageWrapper

__all__ = ["AdvancedPrefix", "Prefix"]

# A UTF-8 character takes at most 4 bytes: a full key of this many characters
# or fewer cannot break the byte limit, so only longer ones are measured.
_SURELY_SHORT = MAX_KEY_BYTES // 4


class Prefix(StorageWrapper):
    """Scope *storage* to the keys under ``prefix/``.

    Key ``k`` is stored at ``prefix/k``; lists return keys without the
    prefix.  *prefix* follows the key rules (a trailing ``/`` is tolerated);
    prefixes nest, so ``Prefix(Prefix(s, "a"), "b")`` stores under ``a/b/``.
    A key that breaks the key rules, or whose full key would be longer than
    1024 UTF-8 bytes, raises :class:`~django_snapshots.SnapshotStoragePathError`
    before any I/O.  A listing from *storage* that names a key outside the
    prefix raises :class:`~django_snapshots.SnapshotStorageError` rather than
    reach the tenant.

    ``Prefix(storage, prefix)`` keeps the tier of *storage*.

    .. versionadded:: 0.1
    """

    _self_prefix: str
    _self_dir: str

    if TYPE_CHECKING:
        # A type checker sees the tier through these overloads; at run time
        # StorageWrapper.__new__ picks the tier from the storage itself.  The
        # initializer is hidden from it, because mypy reads a constructor's
        # signature from __init__ rather than __new__ when a class defines both.
        @overload
        def __new__(cls, storage: AdvancedSnapshotStorage, /, prefix: str) -> AdvancedPrefix: ...
        @overload
        def __new__(cls, storage: SnapshotStorage, /, prefix: str) -> Prefix: ...
        def __new__(cls, storage: SnapshotStorage, /, prefix: str) -> Any: ...

    else:

        def __init__(self, storage, /, prefix):
            directory = _tenant_directory(prefix)
            super().__init__(storage)
            self._self_prefix = directory[:-1]
            self._self_dir = directory

    def read(self, path: str) -> IO[bytes]:
        """Open the tenant's *path*."""
        return self.__wrapped__.read(self._self_storage_key(path))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store *content* at the tenant's *path*."""
        key = self._self_storage_key(path)
        check_binary_content(content)
        self.__wrapped__.write(key, content)

    def list(self, prefix: str) -> list[str]:
        """Return the tenant's keys starting with *prefix*, without the tenant prefix."""
        return self._self_list(self.__wrapped__.list, prefix)

    def delete(self, path: str) -> None:
        """Delete the tenant's *path*."""
        self.__wrapped__.delete(self._self_storage_key(path))

    def exists(self, path: str) -> bool:
        """Tell whether the tenant's *path* exists."""
        return self.__wrapped__.exists(self._self_storage_key(path))

    def _repr_options(self) -> builtins.list[str]:
        return [repr(self._self_prefix)]

    def _self_storage_key(self, key: str) -> str:
        full = self._self_dir + validate_key(key)
        if len(full) > _SURELY_SHORT:
            validate_key(full)
        return full

    def _self_storage_prefix(self, prefix: str) -> str:
        full = self._self_dir + validate_prefix(prefix)
        if len(full) > _SURELY_SHORT:
            validate_prefix(full)
        return full

    def _self_list(
        self, list_keys: Callable[[str], builtins.list[str]], prefix: str
    ) -> builtins.list[str]:
        full = self._self_storage_prefix(prefix)
        keys = list_keys(full)
        if type(keys) is not builtins.list:
            # A generator, say: checked and then cut by two passes below, it
            # would be exhausted by the first and come out empty.
            keys = _as_list(keys, self.__wrapped__, full)
        # The inner storage is trusted with nothing: a key outside what was
        # asked for (a buggy backend, a lax server-side filter) would leak
        # another tenant's name, or map to a key the tenant cannot use.  The
        # checks run in C over the whole listing (a loop in Python cost
        # 0.1 us per key); a key that is not a str makes str.startswith raise
        # TypeError, and only a key equal to the tenant's directory maps to "".
        try:
            inside = all(map(str.startswith, keys, repeat(full)))
        except TypeError:
            inside = False
        if inside:
            tenant_keys = list(map(itemgetter(slice(len(self._self_dir), None)), keys))
            if "" not in tenant_keys:
                return tenant_keys
        raise self._self_listing_error(keys, full)

    def _self_listing_error(self, keys: builtins.list[str], full: str) -> SnapshotStorageError:
        """The error that names the first key of *keys* outside *full*."""
        # str's own methods, as the checks above call them: a str subclass
        # whose startswith or != lies is named too, and StopIteration, which
        # would end a caller's iteration early, never gets out.
        stray = next(
            (
                key
                for key in keys
                if not (
                    isinstance(key, str)
                    and str.startswith(key, full)
                    and str.__ne__(key, self._self_dir)
                )
            ),
            None,
        )
        if stray is None:  # a str subclass whose slicing lies
            stray = next(key for key in keys if type(key) is not str)
        return SnapshotStorageError(
            f"{self.__wrapped__!r} listed {_show(stray)} for prefix {full!r}: "
            f"a key outside {self._self_dir!r} is never passed on"
        )


class AdvancedPrefix(Prefix, tier="advanced"):
    """The advanced tier of :class:`Prefix`, returned by ``Prefix(advanced_storage, prefix)``.

    .. versionadded:: 0.1
    """

    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the chunks of the tenant's *path*."""
        return self.__wrapped__.stream_read(self._self_storage_key(path))

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store *chunks* at the tenant's *path*."""
        self.__wrapped__.stream_write(self._self_storage_key(path), chunks)

    def atomic_move(self, src: str, dst: str) -> None:
        """Move the tenant's *src* to the tenant's *dst*."""
        self.__wrapped__.atomic_move(self._self_storage_key(src), self._self_storage_key(dst))

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Same as :meth:`list`."""
        return self._self_list(self.__wrapped__.recursive_list, prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Mirror the tenant's *src_prefix* to the tenant's *dst_prefix*."""
        src, dst = validate_sync_prefixes(src_prefix, dst_prefix)
        full_src = validate_dir_prefix(self._self_dir + src)
        full_dst = validate_dir_prefix(self._self_dir + dst)
        self.__wrapped__.sync(full_src, full_dst)


def _as_list(keys: object, storage: SnapshotStorage, full: str) -> builtins.list[str]:
    """The keys a storage listed as some other iterable, in a list."""
    if not isinstance(keys, Iterable):
        raise SnapshotStorageError(
            f"{storage!r} listed {type(keys).__name__} for prefix {full!r}, not a list of keys"
        )
    return builtins.list(cast("Iterable[str]", keys))


def _tenant_directory(prefix: object) -> str:
    """Return *prefix* as a directory prefix ending in one ``/``, or raise."""
    if not isinstance(prefix, str):
        raise TypeError(f"Prefix() needs the prefix as a str, not {type(prefix).__name__}")
    name = prefix.removesuffix("/")
    try:
        validate_key(name)
    except SnapshotStoragePathError as exc:
        raise SnapshotStoragePathError(f"Prefix() needs a valid key as its prefix: {exc}") from None
    return name + "/"

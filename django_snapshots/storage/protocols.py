"""The storage contract: two runtime-checkable protocol tiers and their guard.

- :class:`SnapshotStorage`: the minimum interface (read, write, list, delete,
  exists), satisfied by every built-in backend.
- :class:`AdvancedSnapshotStorage`: adds streaming, atomic and bulk
  operations, satisfied by :class:`~django_snapshots.storage.LocalFileSystemBackend`,
  :class:`~django_snapshots.storage.MemoryBackend` and
  :class:`~django_snapshots.storage.RcloneBackend`.

Third-party backends fit by structure alone; nothing needs to be inherited::

    >>> from django_snapshots import SnapshotStorage, AdvancedSnapshotStorage
    >>> from django_snapshots.storage import MemoryBackend
    >>> isinstance(MemoryBackend(), AdvancedSnapshotStorage)
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Protocol, runtime_checkable

from django_snapshots.exceptions import SnapshotStorageCapabilityError

__all__ = ["AdvancedSnapshotStorage", "SnapshotStorage", "requires_advanced_storage"]


@runtime_checkable
class SnapshotStorage(Protocol):
    """Minimum storage interface.

    ``read`` and ``write`` use ``IO[bytes]`` file-like objects to avoid
    loading entire artifacts into memory.

    ``list(prefix)`` returns all stored paths whose full path string starts
    with *prefix*, sorted.  Pass ``""`` to list everything.

    .. versionadded:: 0.1
    """

    def read(self, path: str) -> IO[bytes]:
        """Open the object at *path* for reading, at offset 0."""
        ...

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store every byte of *content* (until EOF) at *path*, replacing it."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Return every stored key starting with *prefix*, sorted."""
        ...

    def delete(self, path: str) -> None:
        """Remove *path*; a missing key is not an error."""
        ...

    def exists(self, path: str) -> bool:
        """Tell whether an object is stored at *path*."""
        ...


@runtime_checkable
class AdvancedSnapshotStorage(SnapshotStorage, Protocol):
    """Extended storage interface with streaming and atomic operations.

    Required for ``snapshot_format="archive"`` and for incremental backups.

    .. versionadded:: 0.1
    """

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the object at *path* as non-empty chunks of bytes."""
        ...

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store the concatenation of *chunks* at *path*, replacing it."""
        ...

    def atomic_move(self, src: str, dst: str) -> None:
        """Replace *dst* with the object at *src* and remove *src*."""
        ...

    def recursive_list(self, prefix: str) -> list[str]:
        """Return the same keys as ``list(prefix)``."""
        ...

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Make the keys under *dst_prefix* mirror those under *src_prefix*."""
        ...


def requires_advanced_storage(backend: SnapshotStorage, operation: str) -> None:
    """Raise :class:`~django_snapshots.exceptions.SnapshotStorageCapabilityError`
    unless *backend* is an :class:`AdvancedSnapshotStorage`.

    Call it at the start of any function that needs the extended interface.
    The message names *operation* and the whole storage stack (its ``repr``),
    so the user sees which layer is basic-tier::

        >>> from django_snapshots.storage import MemoryBackend
        >>> requires_advanced_storage(MemoryBackend(), "archive")  # passes

    .. versionadded:: 0.1
    """
    if not isinstance(backend, AdvancedSnapshotStorage):
        raise SnapshotStorageCapabilityError(
            f"Operation {operation!r} requires AdvancedSnapshotStorage, but "
            f"{backend!r} only satisfies SnapshotStorage. Use a backend of the "
            "advanced tier (LocalFileSystemBackend, RcloneBackend, MemoryBackend); "
            "wrappers keep the tier of the storage they wrap."
        )

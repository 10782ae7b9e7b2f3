"""Storage protocols, backends and wrappers."""

from django_snapshots.storage.django_storage import DjangoStorageBackend
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.memory import MemoryBackend
from django_snapshots.storage.objectstore import ObjectStoreBackend
from django_snapshots.storage.protocols import (
    AdvancedSnapshotStorage,
    SnapshotStorage,
    requires_advanced_storage,
)
from django_snapshots.storage.rclone import RcloneBackend
from django_snapshots.storage.wrappers import (
    Checksum,
    Compress,
    Encrypt,
    Logging,
    Prefix,
    Retry,
    StorageWrapper,
    Telemetry,
    passes_through,
)

__all__ = [
    "AdvancedSnapshotStorage",
    "Checksum",
    "Compress",
    "DjangoStorageBackend",
    "Encrypt",
    "LocalFileSystemBackend",
    "Logging",
    "MemoryBackend",
    "ObjectStoreBackend",
    "Prefix",
    "RcloneBackend",
    "Retry",
    "SnapshotStorage",
    "StorageWrapper",
    "Telemetry",
    "passes_through",
    "requires_advanced_storage",
]

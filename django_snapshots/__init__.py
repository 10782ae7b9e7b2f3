"""Store backup artifacts on any storage, through wrappers that never lie
about what the storage underneath can do."""

from django_snapshots.conf import get_storage
from django_snapshots.exceptions import (
    SnapshotEncryptionError,
    SnapshotError,
    SnapshotIntegrityError,
    SnapshotObjectChangedError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    SnapshotStorage,
    requires_advanced_storage,
)

__all__ = [
    "AdvancedSnapshotStorage",
    "SnapshotEncryptionError",
    "SnapshotError",
    "SnapshotIntegrityError",
    "SnapshotObjectChangedError",
    "SnapshotStorage",
    "SnapshotStorageCapabilityError",
    "SnapshotStorageError",
    "SnapshotStoragePathError",
    "get_storage",
    "requires_advanced_storage",
]

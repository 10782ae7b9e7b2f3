"""Composable, tier-preserving storage wrappers."""

from django_snapshots.storage.wrappers.base import StorageWrapper, passes_through
from django_snapshots.storage.wrappers.checksum import Checksum
from django_snapshots.storage.wrappers.compress import Compress
from django_snapshots.storage.wrappers.encrypt import Encrypt
from django_snapshots.storage.wrappers.logging import Logging
from django_snapshots.storage.wrappers.prefix import Prefix
from django_snapshots.storage.wrappers.retry import Retry
from django_snapshots.storage.wrappers.telemetry import Telemetry

__all__ = [
    "Checksum",
    "Compress",
    "Encrypt",
    "Logging",
    "Prefix",
    "Retry",
    "StorageWrapper",
    "Telemetry",
    "passes_through",
]

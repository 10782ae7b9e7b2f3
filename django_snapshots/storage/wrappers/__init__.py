"""Composable, tier-preserving storage wrappers."""

from django_snapshots.storage.wrappers.base import StorageWrapper
from django_snapshots.storage.wrappers.logging import Logging
from django_snapshots.storage.wrappers.prefix import Prefix

__all__ = ["Logging", "Prefix", "StorageWrapper"]

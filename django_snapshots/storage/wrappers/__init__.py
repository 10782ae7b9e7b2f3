"""Composable, tier-preserving storage wrappers."""

from django_snapshots.storage.wrappers.base import StorageWrapper

__all__ = ["StorageWrapper"]

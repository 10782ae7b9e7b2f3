"""MemoryBackend: the storage contract, thread safety and isolation."""

from __future__ import annotations

import io
import threading

import pytest

from django_snapshots import AdvancedSnapshotStorage
from django_snapshots.storage import MemoryBackend
from django_snapshots.testing import StorageConformance


class TestMemoryBackendConformance(StorageConformance):
    @pytest.fixture
    def storage(self) -> MemoryBackend:
        return MemoryBackend()

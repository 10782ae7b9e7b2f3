"""The two protocol tiers: structural, exact, and guarded."""

from __future__ import annotations

import inspect
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import django_snapshots
import django_snapshots.storage
from django_snapshots import (
    AdvancedSnapshotStorage,
    SnapshotStorage,
    SnapshotStorageCapabilityError,
    requires_advanced_storage,
)
from django_snapshots.storage import LocalFileSystemBackend, MemoryBackend

_BASIC = {
    "read": ["path"],
    "write": ["path", "content"],
    "list": ["prefix"],
    "delete": ["path"],
    "exists": ["path"],
}
_ADVANCED = {
    "stream_read": ["path"],
    "stream_write": ["path", "chunks"],
    "atomic_move": ["src", "dst"],
    "recursive_list": ["prefix"],
    "sync": ["src_prefix", "dst_prefix"],
}


class ThirdPartyBasic:
    """Inherits nothing: fits the basic tier by structure alone."""

    def read(self, path: str) -> IO[bytes]:
        return io.BytesIO()

    def write(self, path: str, content: IO[bytes]) -> None:
        pass

    def list(self, prefix: str) -> list[str]:
        return []

    def delete(self, path: str) -> None:
        pass

    def exists(self, path: str) -> bool:
        return False

    def __repr__(self) -> str:
        return "ThirdPartyBasic('bucket')"


class ThirdPartyAdvanced(ThirdPartyBasic):
    def stream_read(self, path: str) -> Iterator[bytes]:
        return iter([])

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        pass

    def atomic_move(self, src: str, dst: str) -> None:
        pass

    def recursive_list(self, prefix: str) -> list[str]:
        return []

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        pass


def _protocol_methods(protocol: type) -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(member).parameters)[1:]
        for name, member in vars(protocol).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


def test_protocols_declare_exactly_the_reference_methods_and_parameters() -> None:
    assert _protocol_methods(SnapshotStorage) == _BASIC
    assert _protocol_methods(AdvancedSnapshotStorage) == _ADVANCED
    assert issubclass(AdvancedSnapshotStorage, SnapshotStorage)


def test_a_class_with_the_five_basic_methods_is_a_basic_storage() -> None:
    storage = ThirdPartyBasic()
    assert isinstance(storage, SnapshotStorage)
    assert not isinstance(storage, AdvancedSnapshotStorage)


def test_a_class_with_all_ten_methods_is_an_advanced_storage() -> None:
    assert isinstance(ThirdPartyAdvanced(), AdvancedSnapshotStorage)


@pytest.mark.parametrize("missing", sorted(_BASIC))
def test_a_class_missing_a_basic_method_is_no_storage(missing: str) -> None:
    incomplete = type(
        "Incomplete", (), {name: lambda self: None for name in _BASIC if name != missing}
    )
    assert not isinstance(incomplete(), SnapshotStorage)


@pytest.mark.parametrize("missing", sorted(_ADVANCED))
def test_a_class_missing_an_advanced_method_stays_basic(missing: str) -> None:
    methods = {name: lambda self: None for name in {**_BASIC, **_ADVANCED} if name != missing}
    partial = type("Partial", (), methods)()
    assert isinstance(partial, SnapshotStorage)
    assert not isinstance(partial, AdvancedSnapshotStorage)


def test_built_in_backends_are_advanced(tmp_path: Path) -> None:
    assert isinstance(MemoryBackend(), AdvancedSnapshotStorage)
    assert isinstance(LocalFileSystemBackend(tmp_path), AdvancedSnapshotStorage)


def test_requires_advanced_storage_passes_an_advanced_storage() -> None:
    assert requires_advanced_storage(ThirdPartyAdvanced(), "archive") is None


def test_requires_advanced_storage_names_the_operation_and_the_storage() -> None:
    with pytest.raises(SnapshotStorageCapabilityError) as raised:
        requires_advanced_storage(ThirdPartyBasic(), "archive")
    message = str(raised.value)
    assert "'archive' requires AdvancedSnapshotStorage" in message
    assert "ThirdPartyBasic('bucket')" in message


def test_protocols_are_exported_from_the_package_and_the_storage_module() -> None:
    for name in ("SnapshotStorage", "AdvancedSnapshotStorage", "requires_advanced_storage"):
        assert getattr(django_snapshots, name) is getattr(django_snapshots.storage, name)
        assert name in django_snapshots.__all__
        assert name in django_snapshots.storage.__all__

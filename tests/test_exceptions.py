"""The error vocabulary: one base class, path errors that are value errors,
and storage errors that remember whether retrying may help."""

from __future__ import annotations

import pickle

import pytest

import django_snapshots
from django_snapshots import (
    SnapshotEncryptionError,
    SnapshotError,
    SnapshotIntegrityError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)

_ALL = [
    SnapshotEncryptionError,
    SnapshotIntegrityError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
]


@pytest.mark.parametrize("error", _ALL, ids=lambda e: e.__name__)
def test_every_error_is_a_snapshot_error(error: type[Exception]) -> None:
    assert issubclass(error, SnapshotError)
    assert error.__name__ in django_snapshots.__all__


def test_only_path_errors_are_value_errors() -> None:
    assert issubclass(SnapshotStoragePathError, ValueError)
    assert [e for e in _ALL if issubclass(e, ValueError)] == [SnapshotStoragePathError]


def test_storage_errors_are_permanent_unless_marked_transient() -> None:
    assert SnapshotStorageError("disk full").transient is False
    error = SnapshotStorageError("connection reset", transient=True)
    assert error.transient is True
    assert str(error) == "connection reset"


def test_transient_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        SnapshotStorageError("message", True)  # type: ignore[misc]


class Throttled(SnapshotStorageError):
    """A backend's own storage error."""


@pytest.mark.parametrize("transient", [True, False])
@pytest.mark.parametrize("error_class", [SnapshotStorageError, Throttled])
def test_storage_errors_keep_transient_and_class_through_pickling(
    error_class: type[SnapshotStorageError], transient: bool
) -> None:
    error = error_class("disk full", transient=transient)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_class
    assert str(copy) == "disk full"
    assert copy.transient is transient

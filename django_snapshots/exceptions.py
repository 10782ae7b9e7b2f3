"""The whole error vocabulary of django-snapshots.

Every error the library raises on purpose derives from :class:`SnapshotError`,
so ``except SnapshotError`` catches them all.  Two built-in exceptions keep
their usual meaning and are not wrapped: :class:`FileNotFoundError` for a
missing key, and :class:`TypeError` for calling an API with the wrong kind of
object.
"""

from __future__ import annotations

__all__ = [
    "SnapshotEncryptionError",
    "SnapshotError",
    "SnapshotIntegrityError",
    "SnapshotObjectChangedError",
    "SnapshotStorageCapabilityError",
    "SnapshotStorageError",
    "SnapshotStoragePathError",
]


class SnapshotError(Exception):
    """Base class of every error raised by django-snapshots.

    .. versionadded:: 0.1
    """


class SnapshotStorageCapabilityError(SnapshotError):
    """The storage lacks a capability the operation needs.

    Raised by :func:`~django_snapshots.requires_advanced_storage` when a
    basic-tier storage is asked for an advanced-tier operation.

    .. versionadded:: 0.1
    """


class SnapshotIntegrityError(SnapshotError):
    """Stored data does not match its recorded digest, or has none.

    .. versionadded:: 0.1
    """


class SnapshotEncryptionError(SnapshotIntegrityError):
    """Encryption or decryption failed: the stack holds no key for the
    operation, no identity matches the recipients an object was encrypted
    for, or the stored object is not an age file it can decrypt.

    Raised by :class:`~django_snapshots.storage.Encrypt`,
    naming the key.  An :class:`SnapshotIntegrityError`, so it is never
    retried: trying again cannot bring the right key.

    .. versionadded:: 0.1
    """


class SnapshotObjectChangedError(SnapshotError):
    """An object changed while it was being read, and the read cannot go on
    without mixing bytes of two versions.

    Raised by :class:`~django_snapshots.storage.Retry` when a read that was
    interrupted would have to resume in an object that no longer starts with
    the bytes already delivered.  Never retried: the caller decides whether
    to read the new version from the start.

    .. versionadded:: 0.1
    """


class SnapshotStoragePathError(SnapshotError, ValueError):
    """A key or a prefix breaks the key rules.

    Raised before any I/O happens.  It is also a :class:`ValueError`, so code
    that validates user input generically still catches it.

    .. versionadded:: 0.1
    """


class SnapshotStorageError(SnapshotError):
    """A storage operation failed.

    *transient* says whether trying the same operation again may succeed
    (a dropped connection, a throttled request).  The
    :class:`~django_snapshots.storage.Retry` wrapper retries only transient
    errors.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __reduce__(self) -> tuple[object, ...]:
        # Keep ``transient`` across pickling (multiprocessing, caches).
        return (_rebuild_storage_error, (type(self), str(self), self.transient))


def _rebuild_storage_error(
    cls: type[SnapshotStorageError], message: str, transient: bool
) -> SnapshotStorageError:
    return cls(message, transient=transient)

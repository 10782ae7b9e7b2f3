"""What users need to test their own backends, wrappers and stacks.

- :func:`assert_intercepts_every_method` fails when a wrapper leaves a
  protocol method of its tier un-intercepted.
- :class:`Chaos` injects faults into any storage: operations fail before
  they start, or in the middle of a read or a write.
"""

from __future__ import annotations

from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.wrappers.base import StorageWrapper, missing_intercepts
from django_snapshots.storage.wrappers.chaos import Chaos

__all__ = ["Chaos", "assert_intercepts_every_method"]


def assert_intercepts_every_method(proxy: object) -> None:
    """Fail unless *proxy* is a wrapper proxy that intercepts every protocol
    method of its tier and keeps the tier of the storage it wraps.

    Build *proxy* around a basic and around an advanced storage, and call
    this for both::

        >>> from django_snapshots.storage import MemoryBackend, Logging
        >>> assert_intercepts_every_method(Logging(MemoryBackend()))

    .. versionadded:: 0.1
    """
    if not isinstance(proxy, StorageWrapper):
        raise AssertionError(f"{proxy!r} is not a StorageWrapper proxy")
    missing = missing_intercepts(proxy)
    if missing:
        raise AssertionError(f"{proxy!r} does not intercept: {', '.join(missing)}")
    inner_advanced = isinstance(proxy.__wrapped__, AdvancedSnapshotStorage)
    if not isinstance(proxy, SnapshotStorage):
        raise AssertionError(f"{proxy!r} is not a SnapshotStorage")
    if isinstance(proxy, AdvancedSnapshotStorage) != inner_advanced:
        raise AssertionError(
            f"{proxy!r} is {'' if inner_advanced else 'not '}wrapping an advanced storage "
            f"but is {'not ' if inner_advanced else ''}advanced itself"
        )
    for name in ("stream_read", "stream_write", "atomic_move", "recursive_list", "sync"):
        if hasattr(proxy, name) != inner_advanced:
            raise AssertionError(f"{proxy!r}: advanced attribute {name!r} leaks across tiers")

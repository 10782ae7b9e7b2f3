"""Checked by mypy, never run: the type checker must see the tier a wrapper keeps.

``mypy --strict --warn-unused-ignores tests/typing/check_tiers.py`` passes
only if every ``assert_type`` holds, every assignment to the advanced
protocol is accepted, and every ``type: ignore`` below still silences a real
error (a wrapper of a basic storage typed as advanced would leave an unused
ignore, which is an error).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from typing_extensions import assert_type

from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    Checksum,
    Logging,
    MemoryBackend,
    Prefix,
    Retry,
    SnapshotStorage,
)
from django_snapshots.storage.wrappers.checksum import AdvancedChecksum
from django_snapshots.storage.wrappers.logging import AdvancedLogging
from django_snapshots.storage.wrappers.prefix import AdvancedPrefix
from django_snapshots.storage.wrappers.retry import AdvancedRetry


class BasicOnly:
    """A storage of the basic tier only."""

    def read(self, path: str) -> io.BytesIO:
        return io.BytesIO()

    def write(self, path: str, content: object) -> None:
        pass

    def list(self, prefix: str) -> list[str]:
        return []

    def delete(self, path: str) -> None:
        pass

    def exists(self, path: str) -> bool:
        return False


def advanced() -> AdvancedSnapshotStorage:
    return MemoryBackend()


def basic() -> SnapshotStorage:
    return BasicOnly()


# Logging keeps the tier, alone and nested.
assert_type(Logging(advanced()), AdvancedLogging)
assert_type(Logging(MemoryBackend()), AdvancedLogging)
assert_type(Logging(basic()), Logging)
assert_type(Logging(advanced(), logger=None), AdvancedLogging)
assert_type(Logging(Logging(advanced())), AdvancedLogging)
assert_type(Logging(Logging(basic())), Logging)

# Prefix keeps the tier, alone and nested, and takes the prefix by position or keyword.
assert_type(Prefix(advanced(), "tenant-a"), AdvancedPrefix)
assert_type(Prefix(advanced(), prefix="tenant-a"), AdvancedPrefix)
assert_type(Prefix(basic(), "tenant-a"), Prefix)
assert_type(Prefix(Prefix(advanced(), "a"), "b"), AdvancedPrefix)

# Mixed stacks keep the tier of the storage at the bottom.
assert_type(Logging(Prefix(advanced(), "tenant-a")), AdvancedLogging)
assert_type(Logging(Prefix(basic(), "tenant-a")), Logging)
assert_type(Prefix(Logging(advanced()), "tenant-a"), AdvancedPrefix)

# Advanced stacks satisfy the advanced protocol; every stack satisfies the basic one.
advanced_stack: AdvancedSnapshotStorage = Logging(Prefix(advanced(), "tenant-a"))
advanced_logging: AdvancedSnapshotStorage = Logging(advanced())
advanced_prefix: AdvancedSnapshotStorage = Prefix(advanced(), "tenant-a")
basic_stack: SnapshotStorage = Logging(Prefix(basic(), "tenant-a"))
basic_of_advanced: SnapshotStorage = Logging(advanced())

# Basic stacks do not satisfy the advanced protocol, and have no advanced methods.
not_advanced_logging: AdvancedSnapshotStorage = Logging(basic())  # type: ignore[assignment]
not_advanced_prefix: AdvancedSnapshotStorage = Prefix(basic(), "a")  # type: ignore[assignment]
not_advanced_stack: AdvancedSnapshotStorage = Logging(Prefix(basic(), "a"))  # type: ignore[assignment]
Logging(basic()).sync("a/", "b/")  # type: ignore[attr-defined]
Prefix(basic(), "a").stream_read("x")  # type: ignore[attr-defined]

# Advanced methods are typed through an advanced stack.
assert_type(Logging(Prefix(advanced(), "a")).stream_read("x"), Iterator[bytes])
assert_type(Logging(Prefix(advanced(), "a")).list(""), list[str])

# Arguments are checked: a storage is required, options are keyword-only or typed.
Logging(object())  # type: ignore[call-overload]
Prefix(advanced())  # type: ignore[call-overload]
Prefix(advanced(), 3)  # type: ignore[call-overload]
Logging(advanced(), None)  # type: ignore[call-overload]

# The full stack of the library's wrappers keeps the tier of its bottom, too.
assert_type(Logging(Retry(Checksum(Prefix(advanced(), "tenant-a")))), AdvancedLogging)
assert_type(Logging(Retry(Checksum(Prefix(basic(), "tenant-a")))), Logging)
full_stack: AdvancedSnapshotStorage = Logging(Retry(Checksum(Prefix(advanced(), "a"))))
not_advanced_full: AdvancedSnapshotStorage = Logging(Retry(Checksum(Prefix(basic(), "a"))))  # type: ignore[assignment]

# Retry and Checksum keep the tier, alone and around each other, and check their options.
assert_type(Retry(advanced()), AdvancedRetry)
assert_type(Retry(basic(), attempts=3, timeout=None, on=(ConnectionError,)), Retry)
assert_type(Checksum(advanced(), algorithm="sha512", strict=False), AdvancedChecksum)
assert_type(Checksum(basic()), Checksum)
assert_type(Retry(Checksum(advanced())), AdvancedRetry)
assert_type(Checksum(Retry(basic())), Checksum)
assert_type(Checksum(advanced()).verify("x"), str)
Retry(basic()).stream_write("x", iter([b""]))  # type: ignore[attr-defined]
Checksum(basic()).atomic_move("a", "b")  # type: ignore[attr-defined]
Retry(advanced(), 3)  # type: ignore[call-overload]
Retry(advanced(), attempts="3")  # type: ignore[call-overload]
Checksum(advanced(), strict="yes")  # type: ignore[call-overload]

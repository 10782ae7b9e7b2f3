"""What users need to test their own backends, wrappers and stacks.

- :func:`assert_intercepts_every_method` fails when a wrapper leaves a
  protocol method of its tier un-intercepted.
- :class:`Chaos` injects faults into any storage: operations fail before
  they start, or in the middle of a read or a write.
- :class:`StorageConformance` runs the whole storage contract against a
  backend under pytest, one test per contract point.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn, cast

import pytest

from django_snapshots.exceptions import SnapshotStorageCapabilityError, SnapshotStoragePathError
from django_snapshots.storage.cleanup import Leftover
from django_snapshots.storage.keys import MAX_KEY_BYTES
from django_snapshots.storage.memory import MemoryBackend as _Memory
from django_snapshots.storage.protocols import (
    AdvancedSnapshotStorage,
    SnapshotStorage,
    requires_advanced_storage,
)
from django_snapshots.storage.streams import CHUNK_SIZE, ObservedReader, StickyChunks
from django_snapshots.storage.wrappers.base import StorageWrapper, missing_intercepts
from django_snapshots.storage.wrappers.chaos import Chaos

__all__ = ["Chaos", "StorageConformance", "assert_intercepts_every_method"]


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


# Objects this large span several chunks of every built-in backend.
_LARGE = 3 * CHUNK_SIZE + 17
# A content stream read in pieces larger than this is as good as read whole.
_MAX_READ = 64 * 1024 * 1024

_BAD_KEYS: list[Any] = [
    "", "/", "/abs", "/etc/passwd", "//a", "a/", "a//b", ".", "..", "./a", "a/.", "a/./b",
    "a/..", "../x", "a/../../x", "a\\b", "..\\x", "C:\\x", "a\x00b", "a\nb", "a\rb", "a\tb",
    "a\x1bb", "a\x7fb", "a\x85b", "a\x9bb", "a\u2028b", "a\u202eb", "a\u2066b", "x" * 1025,
    "\u00e9" * 513, "a\ud800b", b"db/x", None,
]  # fmt: skip
_BAD_PREFIXES: list[Any] = [
    "/", "/a", "//", "../", "a/../", "./", "a/./", "a//", "\\", "a\\", "a\x00", "a\n",
    "a\x7f", "x" * 1024, b"a", None,
]  # fmt: skip
_BAD_SYNC_PREFIXES: list[tuple[Any, Any]] = [
    ("a/", "a/b/"), ("a/b/", "a/"), ("a/", "a/"), ("a", "b/"), ("a/", "b"), ("", "b/"),
    ("a/", ""), ("../", "b/"), ("a/", "/b/"), ("a//", "b/"), ("a/", "b\\/"),
]  # fmt: skip
_UNUSUAL_KEYS = [
    ".hidden", "a/.b", "...", "a..b/c", "with space/x y",
    "\u00fcn\u00efc\u00f6d\u00e9/\u043a\u043b\u044e\u0447",
    "%2e%2e/x", "~user", "#hash", "q?x=1&y=2", "colon:key", "star*", "quote'\"", "-dash",
    "emoji \U0001f389", ".snapshots-tmp/k", "x" * 200,
]  # fmt: skip


def _key_of_length(size: int) -> str:
    """A valid ASCII key of exactly *size* bytes, in segments of at most 100."""
    segments = []
    while size > 101:
        segments.append("k" * 100)
        size -= 101
    segments.append("k" * size)
    return "/".join(segments)


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:16]}...({len(text)})"


class StorageConformance:
    """A pytest test-class mixin that checks a storage against the whole
    storage contract, one test per contract point.

    Subclass it in a test module (the class name must start with ``Test``)
    and provide a ``storage`` fixture returning a fresh, empty storage:

    .. code-block:: python

        import pytest

        from django_snapshots.storage import MemoryBackend
        from django_snapshots.testing import StorageConformance


        class TestMemoryBackend(StorageConformance):
            @pytest.fixture
            def storage(self):
                return MemoryBackend()

    pytest then runs every check: round trips, replacement, sorted
    plain-string listings, streams that must be read in bounded chunks and
    never closed, hostile keys and prefixes refused with
    :class:`~django_snapshots.exceptions.SnapshotStoragePathError` before any
    I/O, and, for an :class:`~django_snapshots.storage.AdvancedSnapshotStorage`,
    streaming, atomic moves and ``sync``.  For a basic-tier storage the
    advanced checks still run and pass only if the storage does not claim the
    advanced tier, so nothing is ever skipped.  The checks write objects of a
    few MiB and keys of up to eleven segments and 1024 bytes (no segment
    longer than 200 bytes), and never store both ``a`` and ``a/b``, which a
    file system cannot hold at once.

    A storage that lengthens keys on their way down (``Prefix`` adds its
    directory, ``Checksum`` a sidecar suffix) accepts shorter keys: set
    :attr:`max_key_bytes` in the subclass, and the kit checks that a key of
    exactly that length round trips and a longer one is refused before any
    I/O.  Set :attr:`max_segment_bytes` for a storage that limits the length
    of one name, and the same is checked for a segment.

    Two checks reach beyond single operations: distinct keys drawn from the
    whole key alphabet (with the characters remotes like to rewrite, and
    pairs that differ only in Unicode normalization) never share an object,
    and ``list`` returns exactly the keys written; and a stream that raised
    stays failed, so a consumer that reads on never sees a clean end.  For a
    wrapper or a stack, override :meth:`stack_over` so that the kit can make
    the storage below it fail mid-stream.

    .. versionadded:: 0.1
    """

    #: The longest key, in UTF-8 bytes, that the storage under test accepts.
    max_key_bytes: int = MAX_KEY_BYTES

    #: The longest last segment (the object's own name), in UTF-8 bytes, that
    #: the storage under test accepts (a file system's 255-byte names, less a
    #: sidecar's suffix), or None when only the key rules limit it.
    max_segment_bytes: int | None = None

    #: How many sets of keys the key-bijection property tries (each set
    #: costs a few dozen operations).
    key_examples: int = 30

    def stack_over(self, storage: SnapshotStorage) -> SnapshotStorage | None:
        """For a wrapper or a stack under test, return it built around
        *storage*, so that the kit can make the storage below fail (a read
        that breaks mid-stream); return None, the default, for a backend.

        .. versionadded:: 0.1
        """
        return None

    def test_storage_satisfies_the_basic_protocol(self, storage: SnapshotStorage) -> None:
        _ensure(isinstance(storage, SnapshotStorage), f"{storage!r} is not a SnapshotStorage")

    def test_fresh_storage_is_empty(self, storage: SnapshotStorage) -> None:
        listed = storage.list("")
        _ensure(listed == [], f"the storage fixture must be empty, list('') gave {listed!r}")

    def test_write_then_read_round_trips(self, storage: SnapshotStorage) -> None:
        storage.write("db/latest.dump", io.BytesIO(b"dump bytes"))
        _ensure_stored(storage, "db/latest.dump", b"dump bytes")

    def test_write_replaces_existing_object(self, storage: SnapshotStorage) -> None:
        storage.write("db/latest.dump", io.BytesIO(b"a much longer first version"))
        storage.write("db/latest.dump", io.BytesIO(b"second"))
        _ensure_stored(storage, "db/latest.dump", b"second")
        _ensure_listed(storage, "", ["db/latest.dump"])

    def test_write_stores_every_byte_value(self, storage: SnapshotStorage) -> None:
        data = bytes(range(256)) + bytes(reversed(range(256))) + b"\r\n\n\r\x00"
        storage.write("binary.bin", io.BytesIO(data))
        _ensure_stored(storage, "binary.bin", data)

    def test_write_stores_empty_object(self, storage: SnapshotStorage) -> None:
        storage.write("empty", io.BytesIO(b""))
        _ensure(storage.exists("empty"), "an empty object must exist once written")
        _ensure_listed(storage, "", ["empty"])
        _ensure_stored(storage, "empty", b"")

    def test_write_stores_multi_chunk_objects(self, storage: SnapshotStorage) -> None:
        data = _noise(_LARGE)
        storage.write("large.bin", io.BytesIO(data))
        _ensure_stored(storage, "large.bin", data)

    def test_write_does_not_close_content(self, storage: SnapshotStorage) -> None:
        content = _StrictStream(b"payload")
        storage.write("object", content.as_io())
        _ensure(not content.closed, "write() closed the content stream; closing it is the caller's")

    def test_write_accepts_non_seekable_stream(self, storage: SnapshotStorage) -> None:
        data = _noise(CHUNK_SIZE + 4321)
        storage.write("object", _StrictStream(data).as_io())
        _ensure_stored(storage, "object", data)

    def test_write_reads_in_chunks_not_all_at_once(self, storage: SnapshotStorage) -> None:
        data = _noise(_LARGE)
        content = _StrictStream(data)
        try:
            storage.write("object", content.as_io())
        finally:
            _ensure(not content.violations, f"write() {'; '.join(content.violations)}")
        _ensure_stored(storage, "object", data)

    def test_write_stores_bytes_from_current_position(self, storage: SnapshotStorage) -> None:
        content = io.BytesIO(b"HEADER|payload")
        content.read(7)
        storage.write("object", content)
        _ensure_stored(storage, "object", b"payload")

    def test_read_starts_at_offset_zero(self, storage: SnapshotStorage) -> None:
        data = _noise(4096)
        storage.write("object", io.BytesIO(data))
        for attempt in ("first", "second"):
            with storage.read("object") as file:
                head = file.read(16)
            _ensure(
                head == data[:16],
                f"the {attempt} read() did not start at offset 0: {head!r} != {data[:16]!r}",
            )

    def test_read_behaves_like_a_buffered_binary_file(self, storage: SnapshotStorage) -> None:
        # Code that reads fixed-size headers, lines or records relies on
        # full reads: read(n) returns n bytes until the end of the object.
        lines = [b"line %d %s\n" % (n, b"x" * (n % 97)) for n in range(60_000)]
        data = b"".join(lines)  # several chunks, line ends across chunk ends
        storage.write("lines.txt", io.BytesIO(data))
        with storage.read("lines.txt") as file:
            got = bytearray()
            while len(got) < len(data):
                piece = file.read(100)
                expected = min(100, len(data) - len(got))
                _ensure(
                    len(piece) == expected,
                    f"read(100) at offset {len(got)} returned {len(piece)} bytes, not {expected}: "
                    "every read must be full until the end of the object",
                )
                got += piece
            _ensure(file.read(100) == b"", "read() after the end returned bytes")
        _ensure(bytes(got) == data, "read(100) in a loop did not return the object")
        with storage.read("lines.txt") as file:
            _ensure(file.readline() == lines[0], "readline() did not return the first line")
            rest = list(file)
        _ensure(rest == lines[1:], "iterating the file did not yield its lines")
        with storage.read("lines.txt") as file:
            buffer = bytearray(1000)
            readinto: Callable[[bytearray], int] = getattr(file, "readinto")  # noqa: B009
            n = readinto(buffer)
            _ensure(
                bytes(buffer[:n]) == data[:1000] and n == 1000,
                f"readinto() of a 1000-byte buffer filled {n} bytes",
            )

    def test_missing_read_raises_file_not_found(self, storage: SnapshotStorage) -> None:
        storage.write("present", io.BytesIO(b"x"))
        _ensure_raises(FileNotFoundError, "read('absent')", lambda: storage.read("absent").close())

    def test_exists_reports_truthfully(self, storage: SnapshotStorage) -> None:
        _ensure(not storage.exists("reports/2026.txt"), "exists() is True before any write")
        storage.write("reports/2026.txt", io.BytesIO(b"x"))
        _ensure(storage.exists("reports/2026.txt") is True, "exists() is not True after write")
        for other in ("reports/2026", "reports/2026.txt.bak", "reports/2025.txt", "2026.txt"):
            _ensure(not storage.exists(other), f"exists({other!r}) is True but nothing is there")
        storage.delete("reports/2026.txt")
        _ensure(storage.exists("reports/2026.txt") is False, "exists() is not False after delete")

    def test_key_prefix_is_not_an_object(self, storage: SnapshotStorage) -> None:
        storage.write("folder/object", io.BytesIO(b"x"))
        _ensure(not storage.exists("folder"), "exists('folder') is True; only 'folder/object' is")
        _ensure_raises(FileNotFoundError, "read('folder')", lambda: storage.read("folder").close())
        storage.delete("folder")
        _ensure_listed(storage, "", ["folder/object"])

    def test_delete_removes_only_that_object(self, storage: SnapshotStorage) -> None:
        for key in ("a/b", "a/bc", "a/b.bak", "a/x/b"):
            storage.write(key, io.BytesIO(key.encode()))
        storage.delete("a/b")
        _ensure(not storage.exists("a/b"), "the deleted object still exists")
        _ensure_listed(storage, "", ["a/b.bak", "a/bc", "a/x/b"])
        _ensure_raises(FileNotFoundError, "read() after delete", lambda: storage.read("a/b"))

    def test_a_deleted_keys_prefix_can_become_a_key(self, storage: SnapshotStorage) -> None:
        # A file system keeps a deleted key's directories unless the
        # backend prunes them; left there, they refuse the key of that name.
        storage.write("n/o/p", io.BytesIO(b"deep"))
        storage.delete("n/o/p")
        storage.write("n/o", io.BytesIO(b"middle"))
        _ensure_stored(storage, "n/o", b"middle")
        storage.delete("n/o")
        storage.write("n", io.BytesIO(b"top"))
        _ensure_stored(storage, "n", b"top")
        _ensure_listed(storage, "", ["n"])

    def test_delete_missing_is_not_an_error(self, storage: SnapshotStorage) -> None:
        storage.write("present", io.BytesIO(b"x"))
        storage.delete("absent")
        storage.delete("never/written/at/all")
        _ensure_listed(storage, "", ["present"])

    def test_list_is_sorted_and_plain_string_prefix(self, storage: SnapshotStorage) -> None:
        keys = [
            "snapshots/b", "snap.txt", "snapshots/a/x", "snapshot", "other/snap", "snaq",
            "a0", "a/b", "a-b", "a.b", "a/b0", "a/c/d", "\u00e9", "z",
        ]  # fmt: skip
        for key in keys:
            storage.write(key, io.BytesIO(key.encode()))
        _ensure_listed(storage, "", sorted(keys))
        _ensure_listed(storage, "snap", sorted(k for k in keys if k.startswith("snap")))
        _ensure_listed(storage, "snapshots/", ["snapshots/a/x", "snapshots/b"])
        _ensure_listed(storage, "a", ["a-b", "a.b", "a/b", "a/b0", "a/c/d", "a0"])
        _ensure_listed(storage, "a/b", ["a/b", "a/b0"])
        _ensure_listed(storage, "nothing", [])
        _ensure_listed(storage, "snapshots/a/x/", [])

    def test_list_returns_objects_at_every_depth(self, storage: SnapshotStorage) -> None:
        keys = ["deep/1/2/3/4/leaf", "deep/1/2/mid", "deep/top"]
        for key in keys:
            storage.write(key, io.BytesIO(b"x"))
        _ensure_listed(storage, "deep/", keys)
        _ensure_listed(storage, "deep/1/", keys[:2])
        _ensure_listed(storage, "deep/1/2/3", ["deep/1/2/3/4/leaf"])

    def test_unusual_but_valid_keys_round_trip(self, storage: SnapshotStorage) -> None:
        room = self.max_key_bytes
        fitting = [key for key in _UNUSUAL_KEYS if len(key.encode()) <= room]
        keys = sorted([*fitting, _key_of_length(room)])
        for key in keys:
            storage.write(key, io.BytesIO(key.encode()))
        _ensure_listed(storage, "", keys)
        for key in keys:
            _ensure(storage.exists(key), f"exists({key!r}) is False after write")
            _ensure_stored(storage, key, key.encode())

    def test_keys_longer_than_the_storage_accepts_are_refused_before_any_io(
        self, storage: SnapshotStorage
    ) -> None:
        too_long = [_key_of_length(self.max_key_bytes + 1)]
        too_long += [key for key in _UNUSUAL_KEYS if len(key.encode()) > self.max_key_bytes]
        for key in too_long:
            content = _StrictStream(b"payload")
            _ensure_raises(
                SnapshotStoragePathError,
                f"write of a {len(key.encode())}-byte key",
                lambda: storage.write(key, content.as_io()),  # noqa: B023 - called at once
            )
            _ensure(content.reads == 0, f"write read its content before refusing {key!r}")
        _ensure_listed(storage, "", [])

    @pytest.mark.parametrize("key", _BAD_KEYS, ids=_describe)
    def test_invalid_keys_are_rejected_before_any_io(
        self, storage: SnapshotStorage, key: Any
    ) -> None:
        storage.write("seed/object", io.BytesIO(b"seed"))
        content = _StrictStream(b"payload")
        chunks = _RecordingChunks([b"payload"])
        calls: dict[str, Callable[[], object]] = {
            "read": lambda: storage.read(key),
            "write": lambda: storage.write(key, content.as_io()),
            "delete": lambda: storage.delete(key),
            "exists": lambda: storage.exists(key),
        }
        if isinstance(storage, AdvancedSnapshotStorage):
            advanced = storage
            calls.update({
                "stream_read": lambda: next(iter(advanced.stream_read(key))),
                "stream_write": lambda: advanced.stream_write(key, chunks),
                "atomic_move (as source)": lambda: advanced.atomic_move(key, "seed/moved"),
                "atomic_move (as destination)": lambda: advanced.atomic_move("seed/object", key),
            })  # fmt: skip
        for name, call in calls.items():
            _ensure_raises(SnapshotStoragePathError, f"{name}({key!r})", call)
        _ensure(content.reads == 0, "write() read the content before rejecting the key")
        _ensure(chunks.taken == 0, "stream_write() consumed chunks before rejecting the key")
        _ensure_listed(storage, "", ["seed/object"])
        _ensure_stored(storage, "seed/object", b"seed")

    @pytest.mark.parametrize("prefix", _BAD_PREFIXES, ids=_describe)
    def test_invalid_list_prefixes_are_rejected(
        self, storage: SnapshotStorage, prefix: Any
    ) -> None:
        storage.write("a/b", io.BytesIO(b"x"))
        _ensure_raises(SnapshotStoragePathError, f"list({prefix!r})", lambda: storage.list(prefix))
        if isinstance(storage, AdvancedSnapshotStorage):
            advanced = storage
            _ensure_raises(
                SnapshotStoragePathError,
                f"recursive_list({prefix!r})",
                lambda: advanced.recursive_list(prefix),
            )

    def test_stream_read_yields_non_empty_bytes_chunks(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "stream_read")
        if advanced is None:
            return
        data = _noise(_LARGE)
        advanced.write("large.bin", io.BytesIO(data))
        digest, size = hashlib.sha256(), 0
        for chunk in advanced.stream_read("large.bin"):
            _ensure(isinstance(chunk, bytes), f"stream_read() yielded a {type(chunk).__name__}")
            _ensure(len(chunk) > 0, "stream_read() yielded an empty chunk")
            digest.update(chunk)
            size += len(chunk)
        _ensure(
            (size, digest.digest()) == (len(data), hashlib.sha256(data).digest()),
            f"stream_read() yielded {size} bytes that differ from the {len(data)} written",
        )
        advanced.write("empty", io.BytesIO(b""))
        empty = list(advanced.stream_read("empty"))
        _ensure(empty == [], f"stream_read() of an empty object yielded {empty!r}")

    def test_stream_read_missing_raises_file_not_found(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "stream_read")
        if advanced is None:
            return
        _ensure_raises(
            FileNotFoundError,
            "stream_read('absent') (by the first next() at the latest)",
            lambda: next(iter(advanced.stream_read("absent"))),
        )

    def test_stream_write_stores_the_concatenated_chunks(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "stream_write")
        if advanced is None:
            return
        parts = [b"", _noise(CHUNK_SIZE + 1), b"", b"x", bytes(range(256)), b""]
        advanced.stream_write("object", iter(parts))
        _ensure_stored(advanced, "object", b"".join(parts))
        advanced.stream_write("object", iter([b"short"]))
        _ensure_stored(advanced, "object", b"short")
        advanced.stream_write("empty", iter([]))
        _ensure_stored(advanced, "empty", b"")
        _ensure_listed(advanced, "", ["empty", "object"])

    def test_atomic_move_replaces_destination_and_removes_source(
        self, storage: SnapshotStorage
    ) -> None:
        advanced = _advanced_or_none(storage, "atomic_move")
        if advanced is None:
            return
        advanced.write("incoming/part", io.BytesIO(b"new"))
        advanced.write("final/object", io.BytesIO(b"old and longer"))
        advanced.atomic_move("incoming/part", "final/object")
        _ensure_stored(advanced, "final/object", b"new")
        _ensure(not advanced.exists("incoming/part"), "atomic_move() left the source behind")
        _ensure_listed(advanced, "", ["final/object"])

    def test_atomic_move_creates_a_new_destination(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "atomic_move")
        if advanced is None:
            return
        data = _noise(CHUNK_SIZE + 7)
        advanced.write("tmp/upload", io.BytesIO(data))
        advanced.atomic_move("tmp/upload", "archive/2026/upload")
        _ensure_stored(advanced, "archive/2026/upload", data)
        _ensure_listed(advanced, "", ["archive/2026/upload"])

    def test_atomic_move_missing_source_raises_file_not_found(
        self, storage: SnapshotStorage
    ) -> None:
        advanced = _advanced_or_none(storage, "atomic_move")
        if advanced is None:
            return
        advanced.write("final/object", io.BytesIO(b"keep"))
        _ensure_raises(
            FileNotFoundError,
            "atomic_move('absent', 'final/object')",
            lambda: advanced.atomic_move("absent", "final/object"),
        )
        _ensure_stored(advanced, "final/object", b"keep")
        _ensure_listed(advanced, "", ["final/object"])

    def test_recursive_list_equals_list(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "recursive_list")
        if advanced is None:
            return
        for key in ("b/1", "a/x/y/z", "a-1", "a/2", "ab", "c"):
            advanced.write(key, io.BytesIO(b"x"))
        for prefix in ("", "a", "a/", "a/x", "b/1", "nothing"):
            expected = advanced.list(prefix)
            got = advanced.recursive_list(prefix)
            _ensure(got == expected, f"recursive_list({prefix!r}) = {got!r}, list() = {expected!r}")

    def test_sync_mirrors_source_under_destination(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "sync")
        if advanced is None:
            return
        source = {
            "src/a": b"a",
            "src/deep/er/b": _noise(CHUNK_SIZE + 3),
            "src/empty": b"",
            "src/.hidden": b"h",
        }
        for key, data in source.items():
            advanced.write(key, io.BytesIO(data))
        advanced.write("dst/a", io.BytesIO(b"an outdated and longer copy"))
        advanced.sync("src/", "dst/")
        _ensure_listed(advanced, "dst/", sorted("dst/" + k[4:] for k in source))
        for key, data in source.items():
            _ensure_stored(advanced, "dst/" + key[4:], data)
            _ensure_stored(advanced, key, data)

    def test_sync_deletes_stale_destination_keys(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "sync")
        if advanced is None:
            return
        advanced.write("src/kept", io.BytesIO(b"new"))
        for key in ("dst/kept", "dst/stale", "dst/old/deeper/stale"):
            advanced.write(key, io.BytesIO(b"old"))
        advanced.sync("src/", "dst/")
        _ensure_listed(advanced, "dst/", ["dst/kept"])
        _ensure_stored(advanced, "dst/kept", b"new")

    def test_sync_of_empty_source_empties_destination(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "sync")
        if advanced is None:
            return
        advanced.write("dst/a", io.BytesIO(b"old"))
        advanced.write("srcx", io.BytesIO(b"not under 'src/'"))
        advanced.sync("src/", "dst/")
        _ensure_listed(advanced, "", ["srcx"])

    def test_sync_changes_nothing_outside_destination(self, storage: SnapshotStorage) -> None:
        advanced = _advanced_or_none(storage, "sync")
        if advanced is None:
            return
        outside = {
            "dstx": b"1", "dst-other/k": b"2", "other/dst/k": b"3", "srcdst/a": b"4",
            "src.txt": b"5", "d/st": b"6",
        }  # fmt: skip
        for key, data in {**outside, "src/a": b"a", "dst/stale": b"s"}.items():
            advanced.write(key, io.BytesIO(data))
        advanced.sync("src/", "dst/")
        _ensure_listed(advanced, "", sorted([*outside, "src/a", "dst/a"]))
        for key, data in outside.items():
            _ensure_stored(advanced, key, data)
        _ensure_stored(advanced, "src/a", b"a")

    @pytest.mark.parametrize(("src_prefix", "dst_prefix"), _BAD_SYNC_PREFIXES, ids=_describe)
    def test_sync_rejects_invalid_or_overlapping_prefixes(
        self, storage: SnapshotStorage, src_prefix: Any, dst_prefix: Any
    ) -> None:
        advanced = _advanced_or_none(storage, "sync")
        if advanced is None:
            return
        keys = ["a/b/k", "a/k", "b/k", "src/k"]
        for key in keys:
            advanced.write(key, io.BytesIO(key.encode()))
        _ensure_raises(
            SnapshotStoragePathError,
            f"sync({src_prefix!r}, {dst_prefix!r})",
            lambda: advanced.sync(src_prefix, dst_prefix),
        )
        _ensure_listed(advanced, "", keys)
        for key in keys:
            _ensure_stored(advanced, key, key.encode())

    # Checks where promises meet.

    def test_segments_longer_than_the_storage_accepts_are_refused_before_any_io(
        self, storage: SnapshotStorage
    ) -> None:
        room = self.max_segment_bytes
        if room is None:
            # Without a declared limit, a long segment inside the key room works.
            room = min(200, self.max_key_bytes - 2)
            key = "d/" + "s" * room
            storage.write(key, io.BytesIO(b"long name"))
            _ensure_stored(storage, key, b"long name")
            return
        fitting, too_long = "d/" + "s" * room, "d/" + "s" * (room + 1)
        storage.write(fitting, io.BytesIO(b"fits"))
        _ensure_stored(storage, fitting, b"fits")
        for key in (too_long, "d/" + "\u00e9" * (room // 2 + 1)):
            content = _StrictStream(b"payload")
            _ensure_raises(
                SnapshotStoragePathError,
                f"write of a key with a {room + 1}-byte segment",
                lambda: storage.write(key, content.as_io()),  # noqa: B023 - called at once
            )
            _ensure(content.reads == 0, f"write read its content before refusing {key!r}")
        _ensure_listed(storage, "", [fitting])

    def test_distinct_keys_never_share_an_object(self, storage: SnapshotStorage) -> None:
        from hypothesis import HealthCheck, example, given, settings

        @settings(
            max_examples=self.key_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(keys=_key_sets(self.max_key_bytes, self.max_segment_bytes))
        @example(keys=["s/caf\u00e9.dump", "s/cafe\u0301.dump", "caf\u00e9"])
        @example(keys=["s/db\u201b", "s/db\u201b\u201b", "t/\u201b"])
        @example(keys=["s/\uff0a", "s/*", "s/\u2400", "t/a ", "t/a", "t/a."])
        @example(keys=["s/A", "s/a", "s/\u212b", "s/\u00c5", "s/A\u030a"])
        def distinct_keys_round_trip(keys: list[str]) -> None:
            accepted = []
            for index, key in enumerate(keys):
                try:
                    storage.write(key, io.BytesIO(_payload(index, key)))
                except SnapshotStoragePathError:
                    continue  # refused up front is honest; a merge is not
                accepted.append(key)
            try:
                _ensure_listed(storage, "", sorted(accepted))
                for index, key in enumerate(keys):
                    if key in accepted:
                        _ensure(storage.exists(key), f"exists({key!r}) is False after write")
                        _ensure_stored(storage, key, _payload(index, key))
                advanced = storage if isinstance(storage, AdvancedSnapshotStorage) else None
                if advanced is not None and accepted:
                    listed = advanced.recursive_list("")
                    _ensure(
                        listed == sorted(accepted),
                        f"recursive_list('') returned {listed!r}, expected {sorted(accepted)!r}",
                    )
                    _ensure_synced(advanced, accepted, keys)
            finally:
                for key in accepted:
                    storage.delete(key)
            _ensure_listed(storage, "", [])

        distinct_keys_round_trip()

    def test_cleanup_never_touches_a_key(self, storage: SnapshotStorage) -> None:
        clean = getattr(storage, "cleanup", None)
        if clean is None:
            return  # it offers no cleanup, so it promises nothing about one
        # Keys shaped like the leftovers of the built-in backends, as far as
        # the key rules let them: a temporary file's name without its DEL,
        # rclone's partial copies without the backslash, obstore's staging
        # files (refused by a storage that keeps such names for itself).
        candidates = [
            "a",
            "db/latest.dump",
            "db/2026/11/30.dump",
            "db.partial",
            "tmp/x.tmp",
            ".snapshots-write-0123456789abcdef",
            "db/k.0123abcd.partial",
            "d#1/e",
            "x#1",
        ]
        keys = []
        for index, key in enumerate(candidates):
            try:
                storage.write(key, io.BytesIO(_payload(index, key)))
            except SnapshotStoragePathError:
                continue
            keys.append(key)
        for bad in ("/abs", "a/../b", "a\x00"):
            _ensure_raises(
                SnapshotStoragePathError,
                f"cleanup({bad!r})",
                lambda: clean(bad),  # noqa: B023
            )
        _ensure_raises(ValueError, "cleanup(older_than=-1)", lambda: clean(older_than=-1))
        _ensure_raises(TypeError, "cleanup(dry_run='no')", lambda: clean(dry_run="no"))
        try:
            planned = clean(older_than=0, dry_run=True)
        except SnapshotStorageCapabilityError:
            _ensure_listed(storage, "", sorted(keys))
            return  # the storage at the bottom offers none: said before any I/O
        removed = clean("db/", older_than=0) + clean(older_than=0)
        for leftover in planned + removed:
            _ensure(
                isinstance(leftover, Leftover) and leftover.name not in keys,
                f"cleanup() reported {leftover!r}, which is a key or not a Leftover",
            )
        _ensure_listed(storage, "", sorted(keys))
        for key in keys:
            _ensure_stored(storage, key, _payload(candidates.index(key), key))

    def test_a_closed_stream_never_reads_as_complete(self, storage: SnapshotStorage) -> None:
        storage.write("k", io.BytesIO(_noise(10_000)))
        stream = storage.read("k")
        stream.read(10)
        stream.close()
        try:
            data = stream.read(10)
        except (ValueError, OSError):
            return
        raise AssertionError(f"read() after close() returned {data!r} instead of raising")

    def test_a_stream_that_raised_stays_failed(self, storage: SnapshotStorage) -> None:
        below = _Memory() if isinstance(storage, AdvancedSnapshotStorage) else _BasicMemory()
        writer = self.stack_over(below)
        if writer is None:
            # A backend: its own failures cannot be provoked from here, so
            # the wrappers' checks carry this promise; a read must still work.
            storage.write("k", io.BytesIO(b"data"))
            _ensure_stored(storage, "k", b"data")
            return
        data = _noise(2 * _BROKEN_AFTER)
        writer.write("k", io.BytesIO(data))
        reader = self.stack_over(_BrokenReads(below))
        assert reader is not None
        _ensure_fails_for_good(reader.read("k"), len(data))
        if isinstance(reader, AdvancedSnapshotStorage):
            _ensure_chunks_fail_for_good(reader.stream_read("k"), len(data))


def _ensure_fails_for_good(stream: IO[bytes], size: int) -> None:
    """Read *stream* until it raises, then check that it raises again."""
    delivered = 0
    with stream:
        try:
            while chunk := stream.read(64 * 1024):
                delivered += len(chunk)
        except Exception as exc:
            first = exc
        else:
            raise AssertionError(
                f"read() delivered {delivered} of {size} bytes and then reported the end of "
                "the object, though the storage below failed mid-stream"
            )
        for _ in range(2):
            try:
                again = stream.read(64 * 1024)
            except Exception:
                continue
            raise AssertionError(
                f"read() after it raised {type(first).__name__} returned {len(again)} bytes "
                "instead of raising again (an object cut short would look complete)"
            )


def _ensure_chunks_fail_for_good(chunks: Iterator[bytes], size: int) -> None:
    iterator = iter(chunks)
    delivered = 0
    try:
        for chunk in iterator:
            delivered += len(chunk)
    except Exception as exc:
        first = exc
    else:
        raise AssertionError(
            f"stream_read() yielded {delivered} of {size} bytes and then ended, though the "
            "storage below failed mid-stream"
        )
    try:
        for _ in range(2):
            next(iterator)
    except StopIteration:
        raise AssertionError(
            f"stream_read() ended cleanly on next() after it raised {type(first).__name__} "
            "(an object cut short would look complete)"
        ) from None
    except Exception:
        return
    raise AssertionError(f"stream_read() yielded more after it raised {type(first).__name__}")


def _ensure_synced(storage: AdvancedSnapshotStorage, accepted: list[str], keys: list[str]) -> None:
    """sync the accepted keys into a mirror and check it holds each one's own bytes."""
    src = "s/"
    mirrored = [key for key in accepted if key.startswith(src)]
    if not mirrored:
        return
    dst = "m/"
    try:
        storage.sync(src, dst)
    except SnapshotStoragePathError:
        return  # a mirror key too long for the storage: refused, nothing merged
    try:
        expected = sorted(dst + key[len(src) :] for key in mirrored)
        listed = storage.list(dst)
        _ensure(listed == expected, f"sync gave the mirror {listed!r}, expected {expected!r}")
        for key in mirrored:
            _ensure_stored(storage, dst + key[len(src) :], _payload(keys.index(key), key))
    finally:
        for key in storage.list(dst):
            storage.delete(key)


# Characters that storages and remotes are known to rewrite, quote or fold:
# rclone's quote character and the full-width and control-picture stand-ins
# of its name encoding, trailing spaces and dots, a leading tilde, percent
# escapes, and letters with several Unicode normal forms.
_AWKWARD = [
    "\u201b", "\u201b\u201b", "\uff0a", "\uff1a", "\uff1f", "\uff02", "\uff1c", "\uff1e",
    "\uff5c", "\uff0f", "\uff3c", "\u2400", "\u240a", "\u2424", " ", ".", "..", "~", "%",
    "%2F", "%25", "\u00e9", "e\u0301", "\u00c5", "\u212b", "A\u030a", "\ufb01", "\u00a0",
    "\ufeff", "\u200b", "#", "?", "*", ":", "\"", "<", ">", "|", "'", "&", "+", "=",
    "\U0001f389", "\u3042", "\u0915\u094d", "a", "B", "0",
]  # fmt: skip


def _key_sets(max_key_bytes: int, max_segment_bytes: int | None) -> Any:
    """A hypothesis strategy: lists of distinct valid keys under "s/" and
    elsewhere, none of which is a directory of another."""
    from hypothesis import strategies as st

    from django_snapshots.storage.keys import FORBIDDEN_CHARACTERS, validate_key

    segment_room = min(max_segment_bytes or 60, 60)
    piece = st.one_of(
        st.sampled_from(_AWKWARD),
        st.characters(
            blacklist_categories=["Cs"],
            blacklist_characters="/" + "".join(FORBIDDEN_CHARACTERS),
        ),
    )
    segment = (
        st.lists(piece, min_size=1, max_size=6)
        .map("".join)
        .filter(lambda s: s not in (".", "..") and len(s.encode()) <= segment_room)
    )
    key = st.tuples(
        st.sampled_from(["s/", "s/d/", "", "t/"]), st.lists(segment, min_size=1, max_size=2)
    ).map(lambda parts: parts[0] + "/".join(parts[1]))

    def usable(candidate: str) -> bool:
        try:
            validate_key(candidate)
        except SnapshotStoragePathError:
            return False
        return len(candidate.encode()) <= max_key_bytes

    def no_directory_clash(keys: list[str]) -> bool:
        return not any(other.startswith(key + "/") for key in keys for other in keys)

    return (
        st.lists(key.filter(usable), min_size=2, max_size=6, unique=True)
        .filter(no_directory_clash)
        .map(lambda keys: keys + _normal_forms_of(keys[0]))
        .filter(no_directory_clash)
    )


def _normal_forms_of(key: str) -> list[str]:
    """The other Unicode normal forms of *key* that are distinct valid keys."""
    import unicodedata

    forms = []
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, key)
        if other != key and other not in forms and len(other.encode()) <= MAX_KEY_BYTES:
            forms.append(other)
    return forms


def _payload(index: int, key: str) -> bytes:
    # Each key's own bytes, naming it: a merged object shows whose it is.
    return f"{index}:{key}".encode("utf-8", "surrogatepass") * (1 + index)


class _BasicMemory:
    """A basic-tier storage in memory, below a wrapper under test."""

    def __init__(self) -> None:
        self._below = _Memory()

    def read(self, path: str) -> IO[bytes]:
        return self._below.read(path)

    def write(self, path: str, content: IO[bytes]) -> None:
        self._below.write(path, content)

    def list(self, prefix: str) -> list[str]:
        return self._below.list(prefix)

    def delete(self, path: str) -> None:
        self._below.delete(path)

    def exists(self, path: str) -> bool:
        return self._below.exists(path)


class _BrokenReads(StorageWrapper):
    """Every read of the storage below delivers :data:`_BROKEN_AFTER` bytes,
    then fails with :class:`ConnectionResetError` on every further read."""

    def read(self, path: str) -> IO[bytes]:
        return cast(IO[bytes], _BrokenReader(self.__wrapped__.read(path)))

    def write(self, path: str, content: IO[bytes]) -> None:
        self.__wrapped__.write(path, content)

    def list(self, prefix: str) -> list[str]:
        return self.__wrapped__.list(prefix)

    def delete(self, path: str) -> None:
        self.__wrapped__.delete(path)

    def exists(self, path: str) -> bool:
        return self.__wrapped__.exists(path)


class _AdvancedBrokenReads(_BrokenReads, tier="advanced"):
    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        return StickyChunks(_chunks_of(self.read(path)))

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        self.__wrapped__.stream_write(path, chunks)

    def atomic_move(self, src: str, dst: str) -> None:
        self.__wrapped__.atomic_move(src, dst)

    def recursive_list(self, prefix: str) -> list[str]:
        return self.__wrapped__.recursive_list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        self.__wrapped__.sync(src_prefix, dst_prefix)


# Past the first chunk, which some wrappers take when the object is opened.
_BROKEN_AFTER = 2 * CHUNK_SIZE + 12_345


class _BrokenReader(ObservedReader):
    def __init__(self, source: IO[bytes]) -> None:
        super().__init__(source)
        self._delivered = 0

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        room = _BROKEN_AFTER - self._delivered
        if room <= 0:
            raise ConnectionResetError("the connection was reset mid-stream")
        n = super().readinto(view[:room])
        self._delivered += n
        return n


def _chunks_of(stream: IO[bytes]) -> Iterator[bytes]:
    """The chunks of *stream*, closed at the end."""
    with stream:
        yield from iter(lambda: stream.read(CHUNK_SIZE), b"")


def _ensure(condition: bool, message: str) -> None:
    # Not ``assert``: the kit must keep failing under ``python -O``.
    if not condition:
        raise AssertionError(message)


def _ensure_raises(expected: type[BaseException], what: str, call: Callable[[], object]) -> None:
    try:
        call()
    except expected:
        return
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc}, not {expected.__name__}"
        ) from exc
    raise AssertionError(f"{what} did not raise {expected.__name__}")


def _ensure_listed(storage: SnapshotStorage, prefix: str, expected: list[str]) -> None:
    listed = storage.list(prefix)
    _ensure(listed == expected, f"list({prefix!r}) returned {listed!r}, expected {expected!r}")


def _ensure_stored(storage: SnapshotStorage, key: str, expected: bytes) -> None:
    with storage.read(key) as file:
        parts = []
        while chunk := file.read(CHUNK_SIZE):
            parts.append(chunk)
    data = b"".join(parts)
    if data != expected:
        where = next(
            (i for i, (a, b) in enumerate(zip(data, expected, strict=False)) if a != b), None
        )
        raise AssertionError(
            f"read({key!r}) returned {len(data)} bytes, expected {len(expected)}"
            + (f"; first difference at offset {where}" if where is not None else "")
        )


def _advanced_or_none(storage: SnapshotStorage, operation: str) -> AdvancedSnapshotStorage | None:
    """Return *storage* if it is of the advanced tier; otherwise check that it
    does not claim to be, so the library refuses *operation* before any I/O."""
    if isinstance(storage, AdvancedSnapshotStorage):
        return storage
    _ensure_raises(
        SnapshotStorageCapabilityError,
        f"requires_advanced_storage() for a basic-tier storage ({operation})",
        lambda: requires_advanced_storage(storage, operation),
    )
    return None


def _noise(size: int) -> bytes:
    # Not periodic, so a chunk written twice or out of order cannot go unseen.
    return random.Random(size).randbytes(size)


class _StrictStream(io.RawIOBase):
    """A non-seekable binary stream that refuses every unbounded read."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._position = 0
        self.reads = 0
        self.violations: list[str] = []

    def as_io(self) -> IO[bytes]:
        """Return this stream, typed as the ``content`` argument of ``write``."""
        return cast("IO[bytes]", self)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if len(view) > _MAX_READ:
            self._violate(f"called readinto() with a buffer of {len(view)} bytes")
        self.reads += 1
        n = min(len(view), len(self._data) - self._position)
        view[:n] = self._data[self._position : self._position + n]
        self._position += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self._violate(f"called read({size!r}) on the content stream: it must read in chunks")
        if size > _MAX_READ:
            self._violate(f"called read({size}) on the content stream: chunks must be bounded")
        return super().read(size) or b""

    def readall(self) -> bytes:
        self._violate("called readall() on the content stream: it must read in chunks")

    def readline(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self._violate("read the content stream by lines, which is unbounded")
        return super().readline(size)

    def _violate(self, what: str) -> NoReturn:
        self.violations.append(what)
        raise AssertionError(what)


class _RecordingChunks:
    """An iterator of chunks that counts how many were taken."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)
        self.taken = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self.taken += 1
        return chunk

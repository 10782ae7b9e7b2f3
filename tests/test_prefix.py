"""Tests for the Prefix tenant wrapper."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from django_snapshots.exceptions import SnapshotStorageError, SnapshotStoragePathError
from django_snapshots.storage import Checksum, Logging, MemoryBackend, Prefix
from django_snapshots.storage.keys import MAX_KEY_BYTES, validate_key, validate_prefix
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.testing import StorageConformance

SIBLINGS = {
    "tenant-a2/db/secret.dump": b"sibling",
    "tenant-a": b"an object named like the prefix",
    "tenant-b/db/a.dump": b"other tenant",
    "tenant-a.dump": b"neighbour",
}


class Recording:
    """An advanced storage over :class:`MemoryBackend` that records every key
    and prefix it is asked about, before any check of its own."""

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.touched: list[str] = []
        #: The list and sync prefixes among ``touched``; the rest are keys.
        self.prefixes: set[str] = set()

    def __repr__(self) -> str:
        return "Recording()"

    def read(self, path: str) -> IO[bytes]:
        self.touched.append(path)
        return self.inner.read(path)

    def write(self, path: str, content: IO[bytes]) -> None:
        self.touched.append(path)
        self.inner.write(path, content)

    def list(self, prefix: str) -> list[str]:
        self.touched.append(prefix)
        self.prefixes.add(prefix)
        return self.inner.list(prefix)

    def delete(self, path: str) -> None:
        self.touched.append(path)
        self.inner.delete(path)

    def exists(self, path: str) -> bool:
        self.touched.append(path)
        return self.inner.exists(path)

    def stream_read(self, path: str) -> Iterator[bytes]:
        self.touched.append(path)
        return self.inner.stream_read(path)

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        self.touched.append(path)
        self.inner.stream_write(path, chunks)

    def atomic_move(self, src: str, dst: str) -> None:
        self.touched += [src, dst]
        self.inner.atomic_move(src, dst)

    def recursive_list(self, prefix: str) -> list[str]:
        self.touched.append(prefix)
        self.prefixes.add(prefix)
        return self.inner.recursive_list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        self.touched += [src_prefix, dst_prefix]
        self.prefixes |= {src_prefix, dst_prefix}
        self.inner.sync(src_prefix, dst_prefix)


def shared_storage() -> MemoryBackend:
    storage = MemoryBackend()
    for key, data in SIBLINGS.items():
        storage.write(key, io.BytesIO(data))
    return storage


@pytest.fixture
def shared() -> MemoryBackend:
    return shared_storage()


@pytest.fixture
def recording(shared: MemoryBackend) -> Recording:
    return Recording(shared)


# The prefix itself.


@pytest.mark.parametrize(
    "prefix", ["", "/", "../x", "/a", "a//b", "a//", "a/./b", "a\\b", "a\nb", "..", "x" * 1025]
)
def test_an_invalid_prefix_is_refused(prefix: str, shared: MemoryBackend) -> None:
    with pytest.raises(SnapshotStoragePathError, match="Prefix\\(\\) needs a valid key"):
        Prefix(shared, prefix)


def test_a_prefix_that_is_not_a_string_is_refused(shared: MemoryBackend) -> None:
    with pytest.raises(TypeError, match="str"):
        Prefix(shared, b"tenant-a")  # type: ignore[call-overload]


def test_a_trailing_slash_on_the_prefix_is_tolerated(shared: MemoryBackend) -> None:
    with_slash = Prefix(shared, "tenant-a/")
    without = Prefix(shared, "tenant-a")
    with_slash.write("k", io.BytesIO(b"1"))
    assert shared.exists("tenant-a/k")
    assert without.list("") == with_slash.list("") == ["k"]
    assert repr(with_slash) == repr(without) == "Prefix(MemoryBackend(), 'tenant-a')"


def test_a_prefix_may_have_several_segments(shared: MemoryBackend) -> None:
    Prefix(shared, "customers/acme").write("db/k", io.BytesIO(b"1"))
    assert shared.exists("customers/acme/db/k")


# Keys map under the prefix.


def test_every_operation_maps_keys_under_the_prefix(recording: Recording) -> None:
    tenant = Prefix(recording, "tenant-a")
    tenant.write("db/a.dump", io.BytesIO(b"aaaa"))
    assert recording.inner.read("tenant-a/db/a.dump").read() == b"aaaa"
    assert tenant.read("db/a.dump").read() == b"aaaa"
    assert b"".join(tenant.stream_read("db/a.dump")) == b"aaaa"
    assert tenant.exists("db/a.dump")
    tenant.stream_write("db/b.dump", iter([b"b", b"b"]))
    assert recording.inner.read("tenant-a/db/b.dump").read() == b"bb"
    tenant.atomic_move("db/b.dump", "db/c.dump")
    assert recording.inner.exists("tenant-a/db/c.dump")
    assert not recording.inner.exists("tenant-a/db/b.dump")
    tenant.sync("db/", "copy/")
    assert recording.inner.list("tenant-a/copy/") == [
        "tenant-a/copy/a.dump",
        "tenant-a/copy/c.dump",
    ]
    tenant.delete("db/a.dump")
    assert not recording.inner.exists("tenant-a/db/a.dump")
    assert recording.touched == [
        "tenant-a/db/a.dump",
        "tenant-a/db/a.dump",
        "tenant-a/db/a.dump",
        "tenant-a/db/a.dump",
        "tenant-a/db/b.dump",
        "tenant-a/db/b.dump",
        "tenant-a/db/c.dump",
        "tenant-a/db/",
        "tenant-a/copy/",
        "tenant-a/db/a.dump",
    ]


def test_list_strips_the_prefix_and_keeps_the_order(shared: MemoryBackend) -> None:
    tenant = Prefix(shared, "tenant-a")
    for key in ("db/b.dump", "db/a.dump", "media/x.jpg", "dbx"):
        tenant.write(key, io.BytesIO(b"1"))
    assert tenant.list("") == ["db/a.dump", "db/b.dump", "dbx", "media/x.jpg"]
    assert tenant.list("db") == ["db/a.dump", "db/b.dump", "dbx"]
    assert tenant.list("db/") == ["db/a.dump", "db/b.dump"]
    assert tenant.recursive_list("db/") == ["db/a.dump", "db/b.dump"]
    assert tenant.list("nothing/") == []


def test_siblings_are_never_visible(shared: MemoryBackend) -> None:
    tenant = Prefix(shared, "tenant-a")
    assert tenant.list("") == []
    assert tenant.recursive_list("") == []
    assert not tenant.exists("db/secret.dump")
    with pytest.raises(FileNotFoundError):
        tenant.read("db/secret.dump")
    tenant.write("db/own.dump", io.BytesIO(b"own"))
    assert tenant.list("") == ["db/own.dump"]


def test_prefixes_nest(shared: MemoryBackend) -> None:
    outer = Prefix(shared, "a")
    nested = Prefix(outer, "b")
    nested.write("k", io.BytesIO(b"1"))
    assert shared.exists("a/b/k")
    assert outer.list("") == ["b/k"]
    assert nested.list("") == ["k"]
    assert repr(nested) == "Prefix(Prefix(MemoryBackend(), 'a'), 'b')"


def test_a_tenant_on_a_local_backend_writes_below_its_directory(tmp_path: Path) -> None:
    local = LocalFileSystemBackend(tmp_path)
    tenant = Prefix(local, "tenant-a")
    tenant.write("db/latest.dump", io.BytesIO(b"dump"))
    assert (tmp_path / "tenant-a" / "db" / "latest.dump").read_bytes() == b"dump"
    assert tenant.list("") == ["db/latest.dump"]


# Bad keys are refused before any I/O.


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../tenant-a2/db/secret.dump",
    "a/../../b",
    "a//b",
    "a/",
    ".",
    "a\\b",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_bad_key_is_refused_before_any_io(key: str, recording: Recording) -> None:
    tenant = Prefix(recording, "tenant-a")
    calls: list[Callable[[], object]] = [
        lambda: tenant.read(key),
        lambda: tenant.write(key, io.BytesIO(b"x")),
        lambda: tenant.delete(key),
        lambda: tenant.exists(key),
        lambda: tenant.stream_read(key),
        lambda: tenant.stream_write(key, iter([b"x"])),
        lambda: tenant.atomic_move(key, "ok"),
        lambda: tenant.atomic_move("ok", key),
    ]
    for call in calls:
        with pytest.raises(SnapshotStoragePathError):
            call()
    assert recording.touched == []


@pytest.mark.parametrize("prefix", ["/", "../", "a//", "/tenant-a2"])
def test_a_bad_list_prefix_is_refused_before_any_io(prefix: str, recording: Recording) -> None:
    tenant = Prefix(recording, "tenant-a")
    with pytest.raises(SnapshotStoragePathError):
        tenant.list(prefix)
    with pytest.raises(SnapshotStoragePathError):
        tenant.recursive_list(prefix)
    assert recording.touched == []


@pytest.mark.parametrize(
    ("src", "dst"),
    [("a/", "a/b/"), ("a/b/", "a/"), ("a", "b/"), ("a/", "b"), ("", "b/"), ("../", "b/")],
)
def test_bad_sync_prefixes_are_refused_before_any_io(
    src: str, dst: str, recording: Recording
) -> None:
    with pytest.raises(SnapshotStoragePathError):
        Prefix(recording, "tenant-a").sync(src, dst)
    assert recording.touched == []


def test_a_key_too_long_once_prefixed_is_refused_before_any_io(recording: Recording) -> None:
    tenant = Prefix(recording, "tenant-a")
    room = MAX_KEY_BYTES - len("tenant-a/")
    tenant.write("k" * room, io.BytesIO(b"fits"))
    assert recording.touched == ["tenant-a/" + "k" * room]
    recording.touched.clear()
    for key in ("k" * (room + 1), "\U0001f600" * 254, "é" * 508):
        assert validate_key(key) == key  # valid on its own
        with pytest.raises(SnapshotStoragePathError, match="more than 1024"):
            tenant.write(key, io.BytesIO(b"x"))
        with pytest.raises(SnapshotStoragePathError, match="more than 1024"):
            tenant.exists(key)
    with pytest.raises(SnapshotStoragePathError, match="more than 1024"):
        tenant.list("k" * room)
    with pytest.raises(SnapshotStoragePathError, match="more than 1024"):
        tenant.sync("k" * (room - 1) + "/", "b/")
    assert recording.touched == []


# The inner storage is not trusted with what it lists.


class Lax(MemoryBackend):
    """A storage whose listings ignore the prefix (a buggy filter)."""

    def list(self, prefix: str) -> list[str]:
        return super().list("")

    def recursive_list(self, prefix: str) -> list[str]:
        return super().list("")


def test_a_listed_key_outside_the_prefix_is_an_error_not_passed_on() -> None:
    lax = Lax()
    lax.write("tenant-a/own", io.BytesIO(b"1"))
    lax.write("tenant-a2/db/secret.dump", io.BytesIO(b"2"))
    tenant = Prefix(lax, "tenant-a")
    for list_keys in (tenant.list, tenant.recursive_list):
        with pytest.raises(SnapshotStorageError, match=r"tenant-a2/db/secret\.dump") as excinfo:
            list_keys("")
        assert not isinstance(excinfo.value, SnapshotStoragePathError)


def test_a_listed_key_outside_the_requested_sub_prefix_is_an_error() -> None:
    lax = Lax()
    lax.write("tenant-a/db/a", io.BytesIO(b"1"))
    lax.write("tenant-a/media/b", io.BytesIO(b"2"))
    with pytest.raises(SnapshotStorageError, match="tenant-a/media/b"):
        Prefix(lax, "tenant-a").list("db/")


def test_a_listed_key_equal_to_the_prefix_directory_is_an_error() -> None:
    class Empty(MemoryBackend):
        def list(self, prefix: str) -> list[str]:
            return ["tenant-a/"]

    with pytest.raises(SnapshotStorageError, match="outside"):
        Prefix(Empty(), "tenant-a").list("")


@pytest.mark.parametrize("odd", [b"tenant-a/own", None, 7], ids=["bytes", "None", "int"])
def test_a_listed_key_that_is_not_a_str_is_an_error_not_passed_on(odd: object) -> None:
    class Odd(MemoryBackend):
        def list(self, prefix: str) -> list[str]:
            return ["tenant-a/first", odd, "tenant-a/last"]  # type: ignore[list-item]

    with pytest.raises(SnapshotStorageError, match="outside") as excinfo:
        Prefix(Odd(), "tenant-a").list("")
    assert repr(odd) in str(excinfo.value)


class Listing(MemoryBackend):
    """An advanced storage whose listings are what *listing* makes of the keys."""

    def __init__(self, listing: Callable[[list[str]], Any], keys: list[str]) -> None:
        super().__init__()
        self.listing, self.keys = listing, keys

    def list(self, prefix: str) -> list[str]:
        return self.listing(self.keys)  # type: ignore[no-any-return]

    def recursive_list(self, prefix: str) -> list[str]:
        return self.listing(self.keys)  # type: ignore[no-any-return]


ITERABLES: dict[str, Callable[[list[str]], Any]] = {
    "generator": lambda keys: (key for key in keys),
    "iterator": iter,
    "tuple": tuple,
}


@pytest.mark.parametrize("listing", ITERABLES.values(), ids=ITERABLES.keys())
def test_a_listing_that_is_another_iterable_is_checked_and_passed_on_whole(
    listing: Callable[[list[str]], Any],
) -> None:
    tenant = Prefix(Listing(listing, ["tenant-a/db/a", "tenant-a/db/b"]), "tenant-a")
    for list_keys in (tenant.list, tenant.recursive_list):
        # A generator checked in one pass and cut in another came out empty.
        assert list_keys("") == ["db/a", "db/b"]


@pytest.mark.parametrize("listing", ITERABLES.values(), ids=ITERABLES.keys())
def test_a_stray_key_in_another_iterable_is_an_error_never_stop_iteration(
    listing: Callable[[list[str]], Any],
) -> None:
    tenant = Prefix(Listing(listing, ["tenant-a/own", "tenant-b/secret"]), "tenant-a")
    with pytest.raises(SnapshotStorageError, match="tenant-b/secret"):
        tenant.list("")
    # StopIteration raised from list() would end a caller's own iteration
    # early, as if the tenant's keys stopped there.
    prefixes = ["", ""]
    with pytest.raises(SnapshotStorageError):
        list(itertools.chain.from_iterable(map(tenant.list, prefixes)))


class StartsLying(str):
    def startswith(self, *args: Any) -> bool:
        return True


class DiffersLying(str):
    def __ne__(self, other: object) -> bool:
        return True


class SlicesLying(str):
    def __getitem__(self, index: Any) -> str:
        return ""


@pytest.mark.parametrize(
    "liar",
    [StartsLying("tenant-b/secret"), DiffersLying("tenant-a/"), SlicesLying("tenant-a/x")],
    ids=["startswith", "!=", "slicing"],
)
def test_a_listed_str_whose_own_methods_lie_is_an_error(liar: str) -> None:
    tenant = Prefix(Listing(list, ["tenant-a/own", liar]), "tenant-a")
    with pytest.raises(SnapshotStorageError, match=re.escape(str.__str__(liar))):
        tenant.list("")


def test_a_listing_that_is_no_iterable_is_an_error() -> None:
    tenant = Prefix(Listing(lambda keys: None, []), "tenant-a")
    with pytest.raises(SnapshotStorageError, match=r"listed NoneType .* not a list of keys"):
        tenant.list("")


# Isolation, whatever the tenant sends.

hostile_text = st.one_of(
    st.text(),
    st.text(st.characters(codec=None, exclude_categories=())),  # control chars, surrogates
    st.text(alphabet="./\\\x00\n ab-2", max_size=30),
    st.lists(st.sampled_from(["..", ".", "", "a", "tenant-a2", "tenant-a", "db", "\\", "é"])).map(
        "/".join
    ),
    st.sampled_from(
        [
            "..",
            "../tenant-a2/db/secret.dump",
            "/tenant-a2/db/secret.dump",
            "tenant-a2/db/secret.dump",
            "2/db/secret.dump",
            "./../x",
            "a/../../tenant-b/db/a.dump",
            "..\\tenant-b",
            "%2e%2e/tenant-b",
            "\u2025/x",
            "x\x00",
            "x/",
        ]
    ),
    st.text(alphabet="a/.", min_size=1000, max_size=1100),
    st.integers(min_value=1, max_value=400).map(lambda n: "\U0001f600" * n),
)

OPS = [
    "read",
    "write",
    "list",
    "delete",
    "exists",
    "stream_read",
    "stream_write",
    "atomic_move",
    "recursive_list",
    "sync",
]


def run(tenant: Any, op: str, first: str, second: str) -> object:
    if op == "read":
        return tenant.read(first).read()
    if op == "write":
        return tenant.write(first, io.BytesIO(b"tenant data"))
    if op == "stream_read":
        return b"".join(tenant.stream_read(first))
    if op == "stream_write":
        return tenant.stream_write(first, iter([b"tenant data"]))
    if op in ("atomic_move", "sync"):
        return getattr(tenant, op)(first, second)
    return getattr(tenant, op)(first)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(OPS), hostile_text, hostile_text), min_size=1, max_size=8
    )
)
def test_a_tenant_never_reaches_outside_its_prefix(steps: list[tuple[str, str, str]]) -> None:
    shared = shared_storage()
    recording = Recording(shared)
    tenant = Prefix(recording, "tenant-a")
    results = []
    for op, first, second in steps:
        with contextlib.suppress(SnapshotStoragePathError, FileNotFoundError):
            results.append(run(tenant, op, first, second))
    for touched in recording.touched:
        assert touched.startswith("tenant-a/")
        # A valid full key or prefix cannot climb back out of tenant-a/.
        if touched in recording.prefixes:
            validate_prefix(touched)
        else:
            validate_key(touched)
    for key, data in SIBLINGS.items():
        assert shared.read(key).read() == data
    assert all(k.startswith("tenant-a/") for k in shared.list("") if k not in SIBLINGS)
    for result in results:
        if isinstance(result, bytes):
            assert result == b"tenant data"
        if isinstance(result, list):
            for key in result:
                assert validate_key(key) == key
                assert shared.exists("tenant-a/" + key)


# The storage contract holds through the wrapper.


class TenantConformance(StorageConformance):
    """The conformance kit for a tenant whose prefix directory is ``directory``.

    The prefix takes room from every key: the kit checks that a key filling
    exactly the room left round trips, and that a longer one is refused
    before any I/O.
    """

    directory = "tenant-a/"

    @property
    def max_key_bytes(self) -> int:  # type: ignore[override]
        return MAX_KEY_BYTES - len(self.directory.encode())

    def stack_over(self, storage: Any) -> Prefix:
        return Prefix(storage, self.directory)


class TestPrefixOverMemoryBackend(TenantConformance):
    @pytest.fixture
    def storage(self) -> Prefix:
        return Prefix(shared_storage(), "tenant-a")


class TestPrefixOverLocalFileSystemBackend(TenantConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Prefix:
        local = LocalFileSystemBackend(tmp_path)
        for key, data in SIBLINGS.items():
            if key != "tenant-a":  # a file system cannot hold both tenant-a and tenant-a/...
                local.write(key, io.BytesIO(data))
        return Prefix(local, "tenant-a")


class TestNestedPrefixesUnderLoggingOverLocalFileSystemBackend(TenantConformance):
    directory = "a/b/"

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Logging]:
        with capture_logs():
            yield Logging(Prefix(Prefix(LocalFileSystemBackend(tmp_path), "a"), "b"))


def test_verify_through_prefix_is_scoped_to_the_tenant() -> None:
    shared = Checksum(MemoryBackend())
    shared.write("acme/db.dump", io.BytesIO(b"acme's"))
    shared.write("globex/db.dump", io.BytesIO(b"globex's"))
    acme = Prefix(shared, "acme")
    assert acme.verify("db.dump") == shared.verify("acme/db.dump")
    # Another tenant's key is neither verified nor confirmed to exist.
    with pytest.raises(FileNotFoundError):
        acme.verify("globex/db.dump")
    with pytest.raises(SnapshotStoragePathError):
        acme.verify("../globex/db.dump")

"""Tests of the tier-preserving wrapper machinery, run for every wrapper.

Add a wrapper to ``WRAPPERS`` and every property below is checked for it,
alone and in stacks with every other wrapper.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import itertools
import os
import pickle
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import pytest
from structlog.testing import capture_logs

from django_snapshots.exceptions import (
    SnapshotIntegrityError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    Checksum,
    Logging,
    MemoryBackend,
    Prefix,
    Retry,
    SnapshotStorage,
    StorageWrapper,
    requires_advanced_storage,
)
from django_snapshots.storage.cleanup import Leftover
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.wrappers.base import (
    ADVANCED_METHODS,
    BASIC_METHODS,
    missing_intercepts,
    passes_through,
    validate_key_through,
)
from django_snapshots.testing import Chaos, assert_intercepts_every_method
from tests.test_retry import BasicMemory

Options = dict[str, Any]

#: Every wrapper of the library, with the options to build it: ``cls(storage, **options)``.
WRAPPERS: list[tuple[type[StorageWrapper], Options]] = [
    (Logging, {}),
    (Prefix, {"prefix": "tenant-a"}),
    (Retry, {}),
    (Checksum, {}),
    (Chaos, {"failure_rate": 0.0}),
]

WRAPPER_IDS = [cls.__name__ for cls, _ in WRAPPERS]

#: Wrappers that appear at most once in a stack: a Checksum reserves the keys
#: of its sidecars, so a second Checksum above it cannot store its own.
ONCE_PER_STACK = {Checksum}


def _stacks() -> list[Any]:
    """Every stack of one or two wrappers, and each wrapper at the top and the
    bottom of a stack of all of them (outermost wrapper first)."""
    stacks: list[tuple[tuple[type[StorageWrapper], Options], ...]] = []
    stacks += [(w,) for w in WRAPPERS]
    stacks += list(itertools.product(WRAPPERS, repeat=2))
    for w in WRAPPERS:
        stacks.append((w, *WRAPPERS, w))
    stacks = [
        s for s in stacks if all([cls for cls, _ in s].count(once) <= 1 for once in ONCE_PER_STACK)
    ]
    return [pytest.param(s, id="(".join(cls.__name__ for cls, _ in s)) for s in stacks]


STACKS = _stacks()


def build(layers: tuple[tuple[type[StorageWrapper], Options], ...], storage: Any) -> Any:
    for cls, options in reversed(layers):
        storage = cls(storage, **options)
    return storage


class DictStorage:
    """A basic-tier storage over a dict, with a non-protocol attribute."""

    location = "dict://in-memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "DictStorage()"

    def read(self, path: str) -> IO[bytes]:
        try:
            return io.BytesIO(self.objects[path])
        except KeyError:
            raise FileNotFoundError(path) from None

    def write(self, path: str, content: IO[bytes]) -> None:
        self.objects[path] = content.read()

    def list(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def delete(self, path: str) -> None:
        self.objects.pop(path, None)

    def exists(self, path: str) -> bool:
        return path in self.objects

    @passes_through()
    def describe(self) -> str:
        return f"{len(self.objects)} objects"

    @passes_through(keys=("path",))
    def size(self, path: str) -> int:
        return len(self.objects[path])

    def raw_size(self, path: str) -> int:
        """Takes a key but is not declared: no wrapper may forward it."""
        return len(self.objects[path])


class StraySyncStorage(DictStorage):
    """Basic tier, though it happens to have one advanced-sounding method."""

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        raise AssertionError("a wrapper must never reach this")


class MemoryWithLocation(MemoryBackend):
    location = "memory://in-process"

    @passes_through()
    def describe(self) -> str:
        return "memory"

    @passes_through(keys=("path",))
    def size(self, path: str) -> int:
        with self.read(path) as stream:
            return len(stream.read())

    def raw_size(self, path: str) -> int:
        """Takes a key but is not declared: no wrapper may forward it."""
        with self.read(path) as stream:
            return len(stream.read())


STORAGES: dict[str, Callable[[], Any]] = {
    "basic": DictStorage,
    "stray-sync": StraySyncStorage,
    "advanced": MemoryWithLocation,
}


@pytest.fixture(params=sorted(STORAGES))
def storage(request: pytest.FixtureRequest) -> Any:
    return STORAGES[request.param]()


# Tiers.


@pytest.mark.parametrize("layers", STACKS)
def test_every_stack_is_a_storage_of_the_tier_of_the_storage_at_the_bottom(
    layers: Any, storage: Any
) -> None:
    stack = build(layers, storage)
    assert isinstance(stack, SnapshotStorage)
    assert isinstance(stack, AdvancedSnapshotStorage) == isinstance(
        storage, AdvancedSnapshotStorage
    )


@pytest.mark.parametrize("layers", STACKS)
def test_every_stack_is_an_instance_of_its_outermost_wrapper(layers: Any, storage: Any) -> None:
    stack = build(layers, storage)
    assert isinstance(stack, layers[0][0])
    assert type(stack) is stack.__class__


@pytest.mark.parametrize("layers", STACKS)
def test_a_stack_over_a_basic_storage_has_no_advanced_attribute_at_all(layers: Any) -> None:
    for storage in (DictStorage(), StraySyncStorage()):
        stack = build(layers, storage)
        for name in ADVANCED_METHODS:
            assert not hasattr(stack, name)
            assert name not in dir(stack)
        with pytest.raises(AttributeError, match="sync"):
            stack.sync("a/", "b/")


@pytest.mark.parametrize("layers", STACKS)
def test_a_stack_over_an_advanced_storage_offers_every_method_of_both_tiers(layers: Any) -> None:
    stack = build(layers, MemoryBackend())
    for name in BASIC_METHODS + ADVANCED_METHODS:
        assert callable(getattr(stack, name))
        assert name in dir(stack)


@pytest.mark.parametrize("layers", STACKS)
def test_every_layer_of_a_stack_intercepts_every_protocol_method_of_its_tier(
    layers: Any, storage: Any
) -> None:
    stack = build(layers, storage)
    while isinstance(stack, StorageWrapper):
        assert_intercepts_every_method(stack)
        assert missing_intercepts(stack) == []
        stack = stack.__wrapped__


@pytest.mark.parametrize("layers", STACKS)
def test_other_attributes_pass_through_the_whole_stack(layers: Any, storage: Any) -> None:
    stack = build(layers, storage)
    assert stack.location == storage.location
    assert stack.describe() == storage.describe()


@pytest.mark.parametrize("layers", STACKS)
def test_wrapped_is_the_storage_each_layer_was_built_around(layers: Any, storage: Any) -> None:
    stack = build(layers, storage)
    layer = stack
    for _ in layers[:-1]:
        layer = layer.__wrapped__
        assert isinstance(layer, StorageWrapper)
    assert layer.__wrapped__ is storage


@pytest.mark.parametrize("layers", STACKS)
def test_repr_shows_the_whole_stack(layers: Any, storage: Any) -> None:
    stack = build(layers, storage)
    text = repr(stack)
    assert text.startswith("(".join(cls.__name__ for cls, _ in layers) + "(" + repr(storage))
    assert text.count("(") == text.count(")")


@pytest.mark.parametrize("layers", STACKS)
def test_str_and_formatting_show_the_whole_stack_too(layers: Any, storage: Any) -> None:
    stack = build(layers, storage)
    assert str(stack) == repr(stack)
    assert f"{stack}" == repr(stack)
    assert f"{stack:>300}".strip() == repr(stack)
    assert "%s" % (stack,) == repr(stack)  # noqa: UP031


def test_repr_shows_each_wrapper_with_its_options(tmp_path: Path) -> None:
    local = LocalFileSystemBackend(tmp_path / "snaps")
    stack = Logging(Prefix(local, "tenant-a"))
    assert repr(stack) == f"Logging(Prefix({local!r}, 'tenant-a'))"
    assert repr(Prefix(Prefix(MemoryBackend(), "a/"), "b")) == (
        "Prefix(Prefix(MemoryBackend(), 'a'), 'b')"
    )


@pytest.mark.parametrize("layers", STACKS)
def test_requires_advanced_storage_names_the_operation_and_the_whole_basic_stack(
    layers: Any,
) -> None:
    stack = build(layers, DictStorage())
    with pytest.raises(SnapshotStorageCapabilityError) as excinfo:
        requires_advanced_storage(stack, "archive")
    message = str(excinfo.value)
    assert "'archive'" in message
    assert repr(stack) in message


@pytest.mark.parametrize("layers", STACKS)
def test_requires_advanced_storage_accepts_every_advanced_stack(layers: Any) -> None:
    requires_advanced_storage(build(layers, MemoryBackend()), "archive")


# Methods beyond the protocol: declared ones pass with their keys mapped,
# undeclared ones do not pass at all.


@pytest.mark.parametrize("layers", STACKS)
def test_a_declared_method_that_takes_a_key_gets_it_mapped_by_every_layer(
    layers: Any, storage: Any
) -> None:
    stack = build(layers, storage)
    key = "db/x.dump"
    with capture_logs():
        stack.write(key, io.BytesIO(b"12345"))
    # The bottom storage receives exactly the key the stack's own writes use.
    bottom = validate_key_through(stack, key)
    assert storage.exists(bottom)
    assert stack.size(key) == 5
    with pytest.raises(SnapshotStoragePathError):
        stack.size("../escape")


@pytest.mark.parametrize("layers", STACKS)
def test_a_method_that_is_not_declared_is_not_reachable_through_any_stack(
    layers: Any, storage: Any
) -> None:
    stack = build(layers, storage)
    with pytest.raises(
        AttributeError, match=r"does not pass the method 'raw_size'.*passes_through"
    ):
        stack.raw_size  # noqa: B018 - the lookup itself must fail
    assert not hasattr(stack, "raw_size")
    assert "raw_size" not in dir(stack)
    assert "size" in dir(stack)
    assert callable(storage.raw_size)  # reachable on the storage itself, on purpose


def test_prefix_scopes_a_declared_method_to_the_tenant() -> None:
    shared = MemoryWithLocation()
    shared.write("tenant-a/k", io.BytesIO(b"aa"))
    shared.write("tenant-b/k", io.BytesIO(b"bbbb"))
    acme = Logging(Prefix(Retry(shared), "tenant-a"))
    with capture_logs():
        assert acme.size("k") == 2
        with pytest.raises(FileNotFoundError):
            acme.size("tenant-b/k")  # maps to tenant-a/tenant-b/k


def test_checksum_refuses_its_sidecar_names_in_declared_methods() -> None:
    stack = Prefix(Checksum(MemoryWithLocation()), "t")
    stack.write("k", io.BytesIO(b"x"))
    assert stack.size("k") == 1
    with pytest.raises(SnapshotStoragePathError, match="reserved for checksum sidecars"):
        stack.size("k.sha256")


def test_passes_through_refuses_parameters_the_method_does_not_have() -> None:
    with pytest.raises(TypeError, match="has no parameter 'key'"):

        @passes_through(keys=("key",))
        def size(self: object, path: str) -> int:  # pragma: no cover - never defined
            return 0


def _extra_methods(cls: type) -> list[str]:
    # verify and cleanup are the machinery's own, on every wrapper: they go
    # through the wrapper itself (its key and prefix mapping) rather than
    # passing a method of the storage below on.
    served = set(BASIC_METHODS + ADVANCED_METHODS) | {"verify", "cleanup"}
    return sorted(
        name
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and callable(value) and name not in served
    )


def _backend_classes() -> list[type]:
    from django_snapshots.storage import DjangoStorageBackend, RcloneBackend

    return [MemoryBackend, LocalFileSystemBackend, DjangoStorageBackend, RcloneBackend]


def test_every_extra_method_of_the_library_is_declared_or_unreachable(tmp_path: Path) -> None:
    # Every public method a built-in backend or wrapper offers beyond the
    # protocol is either declared (and then mapped by every wrapper) or
    # refused by every wrapper: no key can skip a wrapper's mapping.
    classes = _backend_classes() + [cls for cls, _ in WRAPPERS]
    found = {cls.__name__: _extra_methods(cls) for cls in classes}
    assert not any(found.values()), found  # a new one must be considered here
    with capture_logs():
        for cls in classes:
            for name in found[cls.__name__]:
                method = getattr(cls, name)
                declared = getattr(method, "__snapshots_passes_through__", None)
                for wrapper, options in WRAPPERS:
                    if wrapper is cls:
                        continue
                    if declared is None:
                        stack = wrapper(MemoryWithLocation(), **options)
                        stack.__wrapped__.__dict__[name] = getattr(  # the method, on an instance
                            cls, name
                        ).__get__(stack.__wrapped__)
                        with pytest.raises(AttributeError):
                            getattr(stack, name)
    # verify, on every wrapper, maps its key through each of them.
    local = LocalFileSystemBackend(tmp_path)
    checked = Checksum(local)
    checked.write("t/k", io.BytesIO(b"data"))
    checked.write("other/k", io.BytesIO(b"theirs"))
    for wrapper, options in WRAPPERS:
        if wrapper is Checksum:
            continue
        stack = wrapper(checked, **options)
        if wrapper is Prefix:
            stack = wrapper(checked, prefix="t")
            assert stack.verify("k") == checked.verify("t/k")
            with pytest.raises(FileNotFoundError):
                stack.verify("other/k")
        else:
            assert stack.verify("t/k") == checked.verify("t/k")
        with pytest.raises(SnapshotStoragePathError):
            stack.verify("../other/k")


# verify through the whole stack.


class FailsOnceMidRead(MemoryBackend):
    """Drops the connection half-way through the first read of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    def read(self, path: str) -> IO[bytes]:
        self.opened.append(path)
        stream = super().read(path)
        if self.opened.count(path) > 1:
            return stream
        return io.BufferedReader(_DropsAfter(stream, 3000))

    def stream_read(self, path: str) -> Iterator[bytes]:
        with self.read(path) as stream:
            while chunk := stream.read(1000):
                yield chunk


class _DropsAfter(io.RawIOBase):
    def __init__(self, source: IO[bytes], limit: int) -> None:
        self._source = source
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            raise ConnectionResetError("connection reset by peer")
        data = self._source.read(min(len(buffer), self._left))
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)


class Xor(StorageWrapper):
    """Stores every byte flipped; reading needs the *key* it was built with."""

    changes_content = True

    def __init__(self, storage: SnapshotStorage, /, *, key: int | None = None) -> None:
        super().__init__(storage)
        self._self_key = key
        self._self_decoded = [0]

    def read(self, path: str) -> IO[bytes]:
        if self._self_key is None:
            raise PermissionError("this Xor layer holds no key")
        self._self_decoded[0] += 1
        return io.BytesIO(bytes(b ^ self._self_key for b in self.__wrapped__.read(path).read()))

    def write(self, path: str, content: IO[bytes]) -> None:
        assert self._self_key is not None
        flipped = bytes(b ^ self._self_key for b in content.read())
        self.__wrapped__.write(path, io.BytesIO(flipped))

    def list(self, prefix: str) -> list[str]:
        return self.__wrapped__.list(prefix)

    def delete(self, path: str) -> None:
        self.__wrapped__.delete(path)

    def exists(self, path: str) -> bool:
        return self.__wrapped__.exists(path)


class Invert(StorageWrapper):
    """An advanced wrapper that does not declare it changes content."""

    def read(self, path: str) -> IO[bytes]:
        return io.BytesIO(bytes(b ^ 0xFF for b in self.__wrapped__.read(path).read()))

    def write(self, path: str, content: IO[bytes]) -> None:
        self.__wrapped__.write(path, io.BytesIO(bytes(b ^ 0xFF for b in content.read())))

    def list(self, prefix: str) -> list[str]:
        return self.__wrapped__.list(prefix)

    def delete(self, path: str) -> None:
        self.__wrapped__.delete(path)

    def exists(self, path: str) -> bool:
        return self.__wrapped__.exists(path)


class AdvancedInvert(Invert, tier="advanced"):
    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        yield self.read(path).read()

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        self.write(path, io.BytesIO(b"".join(chunks)))

    def atomic_move(self, src: str, dst: str) -> None:
        self.__wrapped__.atomic_move(src, dst)

    def recursive_list(self, prefix: str) -> list[str]:
        return self.__wrapped__.recursive_list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        self.__wrapped__.sync(src_prefix, dst_prefix)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_verify_reads_through_every_layer_above_checksum_as_one_logged_read() -> None:
    checked = Checksum(MemoryBackend())
    data = os.urandom(10_000)
    checked.write("t/db.dump", io.BytesIO(data))
    stack = Logging(Retry(Prefix(checked, "t")))
    with capture_logs() as entries:
        assert stack.verify("db.dump") == _sha256(data)
    assert [(e["op"], e["outcome"], e["path"], e["bytes"], e["complete"]) for e in entries] == [
        ("read", "ok", "db.dump", len(data), True)
    ]


def test_verify_resumes_a_read_that_fails_midway_below_checksum() -> None:
    flaky = FailsOnceMidRead()
    data = os.urandom(10_000)
    Checksum(flaky).write("db.dump", io.BytesIO(data))
    stack = Logging(Retry(Checksum(flaky), wait_initial=0, wait_max=0, wait_jitter=0))
    with capture_logs() as entries:
        assert stack.verify("db.dump") == _sha256(data)
    assert flaky.opened.count("db.dump") == 2  # the interrupted read, then the resumed one
    reads = [e for e in entries if e.get("op") == "read"]
    assert [(e["outcome"], e["bytes"], e["complete"]) for e in reads] == [("ok", len(data), True)]
    assert [e["event"] for e in entries if e["event"].startswith("stamina")] == [
        "stamina.retry_scheduled"
    ]


def test_verify_logs_a_corrupt_object_as_a_failed_read() -> None:
    inner = MemoryBackend()
    Checksum(inner).write("k", io.BytesIO(b"good data"))
    inner.write("k", io.BytesIO(b"evil data"))
    stack = Logging(Retry(Checksum(inner)))
    with capture_logs() as entries, pytest.raises(SnapshotIntegrityError, match="'k' does not"):
        stack.verify("k")
    assert [(e["op"], e["outcome"], e["error"]) for e in entries] == [
        ("read", "error", "SnapshotIntegrityError")
    ]


def test_verify_is_strict_through_the_stack_whatever_checksum_strict_says() -> None:
    inner = MemoryBackend()
    inner.write("k", io.BytesIO(b"no sidecar"))
    stack = Logging(Checksum(inner, strict=False))
    with capture_logs():
        assert stack.read("k").read() == b"no sidecar"
        with pytest.raises(SnapshotIntegrityError, match=r"sidecar 'k\.sha256' is missing"):
            stack.verify("k")


@pytest.mark.parametrize(
    ("wrapper", "options"),
    [w for w in WRAPPERS if w[0] is not Checksum],
    ids=[cls.__name__ for cls, _ in WRAPPERS if cls is not Checksum],
)
@pytest.mark.parametrize("bottom", [MemoryBackend, DictStorage])
def test_verify_without_a_checksum_layer_is_a_capability_error(
    wrapper: type[StorageWrapper], options: Options, bottom: type
) -> None:
    stack = wrapper(bottom(), **options)
    with pytest.raises(SnapshotStorageCapabilityError) as raised:
        stack.verify("k")
    assert str(raised.value) == (
        f"cannot verify 'k': {stack!r} has no Checksum layer, so nothing records the digests "
        "to verify against; add django_snapshots.storage.Checksum to the stack"
    )


def test_verify_passes_the_stored_bytes_of_a_layer_that_changes_content_on_unread() -> None:
    inner = MemoryBackend()
    data = os.urandom(5000)
    Xor(Prefix(Checksum(inner), "t"), key=0x5A).write("k", io.BytesIO(data))
    stored = inner.read("t/k").read()
    keyless = Xor(Prefix(Checksum(inner), "t"))  # cannot read, and needs not to
    stack = Logging(keyless)
    with capture_logs() as entries:
        assert stack.verify("k") == _sha256(stored) != _sha256(data)
    assert keyless._self_decoded == [0]
    assert [(e["op"], e["bytes"], e["complete"]) for e in entries] == [("read", 5000, True)]
    with pytest.raises(PermissionError):
        stack.read("k")  # outside a verification it decodes, or refuses, as it always did
    assert Xor(Checksum(inner), key=0x5A).read("t/k").read() == data


def test_a_subclass_that_declares_it_changes_content_keeps_its_advanced_tier() -> None:
    class Declared(Invert):
        changes_content = True

    inner = MemoryBackend()
    stack = Declared(Checksum(inner))
    assert isinstance(stack, AdvancedSnapshotStorage)
    assert missing_intercepts(stack) == []
    stack.write("k", io.BytesIO(b"abc"))
    assert stack.read("k").read() == b"abc"
    assert b"".join(stack.stream_read("k")) == b"abc"
    assert stack.verify("k") == _sha256(bytes(b ^ 0xFF for b in b"abc"))
    # The undeclared parent still decodes what a verification reads through it.
    assert Invert(Checksum(inner)).verify("k") == _sha256(bytes(b ^ 0xFF for b in b"abc"))


# Segment room: a bottom storage that limits one name's length.


class ShortNames(MemoryBackend):
    max_segment_bytes = 12


def test_validate_key_through_refuses_a_segment_longer_than_the_bottom_allows() -> None:
    stack = Logging(Prefix(ShortNames(), "tenant"))
    assert validate_key_through(stack, "a/" + "x" * 12) == "tenant/a/" + "x" * 12
    with pytest.raises(SnapshotStoragePathError, match="13 UTF-8 bytes long, more than the 12"):
        validate_key_through(stack, "a/" + "x" * 13)
    with pytest.raises(SnapshotStoragePathError, match="more than the 12"):
        validate_key_through(stack, "\u00e9" * 7)  # 14 bytes in 7 characters


class ShortKeys(MemoryBackend):
    max_key_bytes = 20


def test_validate_key_through_refuses_a_key_longer_than_the_bottom_holds() -> None:
    stack = Logging(Prefix(ShortKeys(), "tenant"))
    assert validate_key_through(stack, "k" * 13) == "tenant/" + "k" * 13
    with pytest.raises(SnapshotStoragePathError, match="21 UTF-8 bytes long, more than the 20"):
        validate_key_through(stack, "k" * 14)
    # Checksum stores nothing it could not give a sidecar.
    inner = ShortKeys()
    with pytest.raises(SnapshotStoragePathError, match="too long for its checksum sidecar"):
        Checksum(inner).write("k" * 14, io.BytesIO(b"lost"))
    assert inner.list("") == []


def test_checksum_refuses_a_key_whose_sidecar_name_would_be_too_long_before_any_io() -> None:
    inner = ShortNames()
    storage = Checksum(inner)
    storage.write("x" * 5, io.BytesIO(b"ok"))  # x.sha256 is 12 bytes
    with pytest.raises(SnapshotStoragePathError, match="too long for its checksum sidecar"):
        storage.write("x" * 6, io.BytesIO(b"lost"))
    assert inner.list("") == ["xxxxx", "xxxxx.sha256"]


# Subclasses and twins never lie about the tier.


def test_a_subclass_of_an_advanced_twin_refuses_a_basic_storage() -> None:
    from django_snapshots.storage.wrappers.logging import AdvancedLogging

    class TaggedLogging(AdvancedLogging):
        pass

    with pytest.raises(TypeError, match=r"needs an AdvancedSnapshotStorage.*subclass Logging"):
        TaggedLogging(DictStorage())
    tagged = TaggedLogging(MemoryBackend())
    assert isinstance(tagged, AdvancedSnapshotStorage)
    assert_intercepts_every_method(tagged)
    assert Logging(DictStorage()).__class__ is Logging


def test_declaring_an_advanced_subclass_never_rewires_the_library_wrapper() -> None:
    from django_snapshots.storage.wrappers.logging import AdvancedLogging

    class MyAdvanced(AdvancedLogging, tier="advanced"):
        pass

    assert type(Logging(MemoryBackend())) is AdvancedLogging
    with pytest.raises(TypeError, match="already has its advanced twin AdvancedLogging"):

        class Other(Logging, tier="advanced"):
            pass

    assert type(Logging(MemoryBackend())) is AdvancedLogging
    with pytest.raises(TypeError, match="cannot be basic"):

        class Basic(AdvancedLogging, tier="basic"):
            pass


def test_a_user_may_declare_the_twin_of_their_own_subclass() -> None:
    from django_snapshots.storage.wrappers.logging import AdvancedLogging

    class Mine(Logging):
        pass

    class AdvancedMine(Mine, AdvancedLogging, tier="advanced"):
        pass

    assert type(Mine(MemoryBackend())) is AdvancedMine
    assert type(Mine(DictStorage())) is Mine
    assert type(Logging(MemoryBackend())) is AdvancedLogging


# Real backends through the stacks.


@pytest.mark.parametrize(("cls", "options"), WRAPPERS, ids=WRAPPER_IDS)
def test_attributes_of_a_local_backend_pass_through(
    cls: type[StorageWrapper], options: Options, tmp_path: Path
) -> None:
    local = LocalFileSystemBackend(tmp_path)
    assert cls(local, **options).location == local.location
    assert isinstance(cls(local, **options), AdvancedSnapshotStorage)


@pytest.mark.parametrize("layers", STACKS)
def test_data_written_through_a_stack_reads_back_through_it(layers: Any, tmp_path: Path) -> None:
    with capture_logs():
        for storage in (DictStorage(), MemoryBackend(), LocalFileSystemBackend(tmp_path)):
            stack = build(layers, storage)
            stack.write("db/latest.dump", io.BytesIO(b"dump"))
            with stack.read("db/latest.dump") as file:
                assert file.read() == b"dump"
            assert stack.list("db/") == ["db/latest.dump"]
            assert stack.exists("db/latest.dump")
            stack.delete("db/latest.dump")
            assert not stack.exists("db/latest.dump")


# Building wrappers.


@pytest.mark.parametrize(("cls", "options"), WRAPPERS, ids=WRAPPER_IDS)
def test_a_wrapper_refuses_an_object_that_is_not_a_storage(
    cls: type[StorageWrapper], options: Options
) -> None:
    with pytest.raises(TypeError, match="needs a SnapshotStorage"):
        cls(object(), **options)


@pytest.mark.parametrize(("cls", "options"), WRAPPERS, ids=WRAPPER_IDS)
def test_the_advanced_twin_refuses_a_basic_storage(
    cls: type[StorageWrapper], options: Options
) -> None:
    advanced_twin = type(cls(MemoryBackend(), **options))
    assert advanced_twin is not cls
    assert issubclass(advanced_twin, cls)
    assert type(cls(DictStorage(), **options)) is cls
    with pytest.raises(TypeError, match="needs an AdvancedSnapshotStorage"):
        advanced_twin(DictStorage(), **options)


@pytest.mark.parametrize(("cls", "options"), WRAPPERS, ids=WRAPPER_IDS)
def test_a_wrapper_cannot_be_pickled(cls: type[StorageWrapper], options: Options) -> None:
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(cls(MemoryBackend(), **options))


# The intercept check.


class Forgetful(StorageWrapper):
    """A deliberately incomplete wrapper: ``exists`` is not intercepted."""

    def read(self, path: str) -> IO[bytes]:
        return self.__wrapped__.read(path)

    def write(self, path: str, content: IO[bytes]) -> None:
        self.__wrapped__.write(path, content)

    def list(self, prefix: str) -> list[str]:
        return self.__wrapped__.list(prefix)

    def delete(self, path: str) -> None:
        self.__wrapped__.delete(path)


class ForwardingMixin:
    def exists(self, path: str) -> bool:
        return bool(self.__wrapped__.exists(path))  # type: ignore[attr-defined]


class Complete(Forgetful):
    def exists(self, path: str) -> bool:
        return self.__wrapped__.exists(path)


class ForgetfulAdvanced(Complete, tier="advanced"):
    """The advanced twin forgets ``sync``."""

    def stream_read(self, path: str) -> Iterator[bytes]:
        return self.__wrapped__.stream_read(path)  # type: ignore[attr-defined, no-any-return]

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        self.__wrapped__.stream_write(path, chunks)  # type: ignore[attr-defined]

    def atomic_move(self, src: str, dst: str) -> None:
        self.__wrapped__.atomic_move(src, dst)  # type: ignore[attr-defined]

    def recursive_list(self, prefix: str) -> list[str]:
        return self.__wrapped__.recursive_list(prefix)  # type: ignore[attr-defined, no-any-return]


class MixedIn(Forgetful, ForwardingMixin):
    """``exists`` comes from a class that is not a wrapper: not an intercept."""


def test_an_incomplete_wrapper_cannot_even_be_instantiated() -> None:
    assert missing_intercepts(Forgetful) == ["exists"]
    for storage in (DictStorage(), MemoryBackend()):
        with pytest.raises(TypeError, match="Forgetful does not intercept exists"):
            Forgetful(storage)


def test_an_advanced_twin_that_forgets_a_method_cannot_wrap_an_advanced_storage() -> None:
    assert missing_intercepts(ForgetfulAdvanced) == ["sync"]
    assert missing_intercepts(Complete) == []
    with pytest.raises(TypeError, match="ForgetfulAdvanced does not intercept sync"):
        Complete(MemoryBackend())
    assert_intercepts_every_method(Complete(DictStorage()))


def test_a_method_inherited_from_a_class_that_is_not_a_wrapper_is_not_an_intercept() -> None:
    assert missing_intercepts(MixedIn) == ["exists"]
    with pytest.raises(TypeError, match="does not intercept exists"):
        MixedIn(DictStorage())


def test_the_intercept_check_fails_for_a_wrapper_that_lost_a_method_after_construction() -> None:
    class Patched(Complete):
        def exists(self, path: str) -> bool:
            return self.__wrapped__.exists(path)

    class Unpatched(Forgetful):
        def exists(self, path: str) -> bool:
            return self.__wrapped__.exists(path)

    proxy = Unpatched(DictStorage())
    assert_intercepts_every_method(proxy)
    del Unpatched.exists
    with pytest.raises(AssertionError, match="does not intercept: exists"):
        assert_intercepts_every_method(proxy)
    # The lost method is absent, never silently forwarded past the wrapper.
    with pytest.raises(AttributeError, match="exists"):
        proxy.exists("x")


def test_the_intercept_check_refuses_an_object_that_is_not_a_wrapper() -> None:
    with pytest.raises(AssertionError, match="is not a StorageWrapper proxy"):
        assert_intercepts_every_method(MemoryBackend())


def test_a_protocol_method_a_wrapper_lacks_is_absent_rather_than_forwarded() -> None:
    class BasicOnly(StorageWrapper):
        """A wrapper without an advanced twin masks the advanced tier."""

        def read(self, path: str) -> IO[bytes]:
            return self.__wrapped__.read(path)

        def write(self, path: str, content: IO[bytes]) -> None:
            self.__wrapped__.write(path, content)

        def list(self, prefix: str) -> list[str]:
            return self.__wrapped__.list(prefix)

        def delete(self, path: str) -> None:
            self.__wrapped__.delete(path)

        def exists(self, path: str) -> bool:
            return self.__wrapped__.exists(path)

    stack = Logging(BasicOnly(MemoryBackend()))
    assert not isinstance(stack, AdvancedSnapshotStorage)
    assert not hasattr(stack, "stream_read")
    with pytest.raises(SnapshotStorageCapabilityError, match=r"Logging\(BasicOnly\(MemoryBackend"):
        requires_advanced_storage(stack, "archive")


@pytest.mark.parametrize(("cls", "options"), WRAPPERS, ids=WRAPPER_IDS)
def test_the_intercept_check_passes_for_every_wrapper_on_both_tiers(
    cls: type[StorageWrapper], options: Options
) -> None:
    assert_intercepts_every_method(cls(DictStorage(), **options))
    assert_intercepts_every_method(cls(MemoryBackend(), **options))


# User subclasses.


@pytest.mark.parametrize(("cls", "options"), WRAPPERS, ids=WRAPPER_IDS)
def test_a_user_subclass_of_a_wrapper_keeps_both_tiers(
    cls: type[StorageWrapper], options: Options
) -> None:
    calls: list[str] = []

    class Counted(cls):  # type: ignore[valid-type, misc]
        def exists(self, path: str) -> bool:
            calls.append(path)
            return bool(super().exists(path))

    with capture_logs():
        advanced = Counted(MemoryBackend(), **options)
        basic = Counted(DictStorage(), **options)
        assert isinstance(advanced, Counted)
        assert isinstance(advanced, cls)
        assert isinstance(advanced, AdvancedSnapshotStorage)
        assert isinstance(basic, Counted)
        assert not isinstance(basic, AdvancedSnapshotStorage)
        assert not hasattr(basic, "sync")
        assert repr(advanced).startswith("Counted(MemoryBackend()")
        assert_intercepts_every_method(advanced)
        assert_intercepts_every_method(basic)
        advanced.exists("x")
        basic.exists("y")
        advanced.stream_write("z", iter([b"z"]))
    assert calls == ["x", "y"]


# Threads.


@pytest.mark.parametrize("layers", STACKS)
def test_many_threads_share_one_stack_without_crosstalk(layers: Any, tmp_path: Path) -> None:
    threads_count = 16
    rounds = 20
    stack = build(layers, MemoryBackend())
    state_before = dict(stack.__self_dict__)
    barrier = threading.Barrier(threads_count)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(rounds):
                key = f"thread-{n}/object-{i}"
                payload = f"{n}:{i}".encode() * (n + 1)
                stack.write(key, io.BytesIO(payload))
                with stack.read(key) as file:
                    assert file.read() == payload
                assert b"".join(stack.stream_read(key)) == payload
                assert stack.list(f"thread-{n}/") == sorted(
                    f"thread-{n}/object-{j}" for j in range(i + 1)
                )
        except BaseException as exc:  # reported to the main thread
            failures.append(exc)

    with capture_logs() as entries:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    assert dict(stack.__self_dict__) == state_before
    if any(cls is Logging for cls, _ in layers):
        # Each entry describes its own thread's call, never another's.
        for entry in entries:
            match = re.search(r"thread-(\d+)/object-(\d+)$", entry.get("path", ""))
            if entry["op"] in ("write", "read", "stream_read") and match:
                n, i = int(match[1]), int(match[2])
                assert entry["bytes"] == len(f"{n}:{i}".encode() * (n + 1))


# Python's own protocols never reach the storage below.


class DictLike(MemoryBackend):
    """A third-party backend with Python conveniences that take keys."""

    def __contains__(self, key: str) -> bool:
        return self.exists(key)

    def __getitem__(self, key: str) -> bytes:
        with self.read(key) as stream:
            return stream.read()

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __len__(self) -> int:
        return len(self.list(""))

    def __enter__(self) -> DictLike:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


@pytest.mark.parametrize("layers", STACKS)
def test_operators_of_the_storage_below_are_refused_through_every_stack(
    layers: Any, storage: Any
) -> None:
    shared = DictLike()
    shared.write("globex/db.dump", io.BytesIO(b"globex's"))
    stack = build(layers, shared)
    for operation in (
        lambda: "globex/db.dump" in stack,
        lambda: stack["globex/db.dump"],
        lambda: stack.__delitem__("globex/db.dump"),
        lambda: len(stack),
        lambda: stack.__enter__(),
        lambda: stack + 1,
    ):
        with pytest.raises(TypeError, match="offers the storage protocol only"):
            operation()
    with pytest.raises(TypeError), stack:
        pass  # pragma: no cover - never entered
    assert shared.list("") == ["globex/db.dump"]
    assert bool(stack)


def test_stacks_over_one_storage_are_distinct_objects() -> None:
    shared = MemoryBackend()
    acme, globex = Prefix(shared, "acme"), Prefix(shared, "globex")
    assert acme != globex
    assert acme == acme
    assert hash(acme) != hash(globex) or acme is not globex
    assert {acme: "acme", globex: "globex"}[globex] == "globex"


@pytest.mark.parametrize("layers", STACKS)
def test_setting_an_attribute_never_reaches_the_shared_storage(layers: Any, storage: Any) -> None:
    stack = build(layers, storage)
    with pytest.raises(AttributeError, match="set it on the storage itself"):
        stack.location = "/elsewhere"
    assert storage.location != "/elsewhere"
    with pytest.raises(AttributeError):
        del stack.location


def test_only_plain_data_attributes_pass_through(tmp_path: Path) -> None:
    from django.core.files.storage import FileSystemStorage

    from django_snapshots.storage import DjangoStorageBackend

    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    stack = Prefix(backend, "acme")
    # The Django storage accepts any name: through a wrapper it would be an
    # unscoped door to every tenant.
    with pytest.raises(AttributeError, match="only plain values"):
        stack.storage  # noqa: B018 - the lookup itself must fail
    assert Prefix(LocalFileSystemBackend(tmp_path), "acme").location == str(tmp_path)


# A subclass that changes a basic method never has it bypassed.


class ReadOnlyPrefix(Prefix):
    def write(self, path: str, content: IO[bytes]) -> None:
        raise PermissionError(f"read-only: {path}")

    def delete(self, path: str) -> None:
        raise PermissionError(f"read-only: {path}")


def test_a_subclass_overriding_basic_methods_is_not_bypassed_by_inherited_advanced_ones() -> None:
    shared = MemoryBackend()
    shared.write("acme/db.dump", io.BytesIO(b"original"))
    read_only = ReadOnlyPrefix(shared, "acme")
    # stream_write, atomic_move and sync inherited from AdvancedPrefix would
    # write and delete behind the overrides: the subclass is basic-tier.
    assert not isinstance(read_only, AdvancedSnapshotStorage)
    assert not hasattr(read_only, "stream_write")
    with pytest.raises(PermissionError):
        read_only.write("db.dump", io.BytesIO(b"OVERWRITTEN"))
    assert shared.read("acme/db.dump").read() == b"original"
    # The check users run on their wrappers says the tier was lost.
    with pytest.raises(AssertionError, match="is not advanced itself"):
        assert_intercepts_every_method(read_only)


def test_an_explicit_twin_must_override_the_advanced_methods_its_basic_overrides_affect() -> None:
    from django_snapshots.storage.wrappers.prefix import AdvancedPrefix

    class Mine(ReadOnlyPrefix):
        pass

    class AdvancedMine(Mine, AdvancedPrefix, tier="advanced"):
        pass

    assert missing_intercepts(AdvancedMine) == ["stream_write", "atomic_move", "sync"]
    with pytest.raises(TypeError, match="stream_write for write"):
        Mine(MemoryBackend(), "acme")

    class Yours(ReadOnlyPrefix):
        pass

    class Complete(Yours, AdvancedPrefix, tier="advanced"):
        def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
            raise PermissionError(path)

        def atomic_move(self, src: str, dst: str) -> None:
            raise PermissionError(dst)

        def sync(self, src_prefix: str, dst_prefix: str) -> None:
            raise PermissionError(dst_prefix)

    assert missing_intercepts(Complete) == []
    assert isinstance(Yours(MemoryBackend(), "acme"), AdvancedSnapshotStorage)


@pytest.mark.parametrize("layers", STACKS)
@pytest.mark.parametrize("content", [b"raw bytes", "text", io.StringIO("text"), 42])
def test_content_that_is_not_a_binary_file_is_refused_by_every_stack_before_any_io(
    layers: Any, storage: Any, content: Any
) -> None:
    stack = build(layers, storage)
    with capture_logs(), pytest.raises(TypeError, match="binary file object"):
        stack.write("k", content)
    assert storage.list("") == []


# cleanup through the whole stack.


class Leaving(MemoryBackend):
    """A backend whose crashed writes left a piece under tenant-a/ and one
    under tenant-ab/; it records the prefixes it was asked for."""

    def __init__(self, names: tuple[str, ...] = ("tenant-a/db/x\\tmp", "tenant-ab/y\\tmp")):
        super().__init__()
        self.names = names
        self.asked: list[tuple[str, float, bool]] = []

    def cleanup(
        self, prefix: str = "", *, older_than: timedelta, dry_run: bool = False
    ) -> list[Leftover]:
        self.asked.append((prefix, older_than.total_seconds(), dry_run))
        when = datetime.now(timezone.utc)
        return [Leftover(n, "temporary file", when, 3) for n in self.names if n.startswith(prefix)]


@pytest.mark.parametrize(("wrapper", "options"), WRAPPERS, ids=WRAPPER_IDS)
def test_cleanup_reaches_the_bottom_through_every_wrapper_with_its_prefix_mapped(
    wrapper: type[StorageWrapper], options: Options
) -> None:
    below = Leaving()
    with capture_logs():
        stack = wrapper(below, **options)
        removed = stack.cleanup("", older_than="2h", dry_run=True)
    if wrapper is Prefix:
        assert below.asked == [("tenant-a/", 7200.0, True)]
        assert [leftover.name for leftover in removed] == ["db/x\\tmp"]
    else:
        assert below.asked == [("", 7200.0, True)]
        assert [leftover.name for leftover in removed] == list(below.names)


def test_cleanup_through_a_stack_of_every_wrapper_scopes_it_to_the_tenant() -> None:
    below = Leaving()
    with capture_logs():
        stack = Logging(Retry(Prefix(Checksum(Chaos(below, failure_rate=0.0)), "tenant-a")))
        removed = stack.cleanup("db/", older_than=60)
    assert below.asked == [("tenant-a/db/", 60.0, False)]
    assert [(leftover.name, leftover.size) for leftover in removed] == [("db/x\\tmp", 3)]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"prefix": "../tenant-b/"}, SnapshotStoragePathError),
        ({"prefix": "/etc/"}, SnapshotStoragePathError),
        ({"older_than": -1}, ValueError),
        ({"older_than": True}, TypeError),
        ({"older_than": "soon"}, ValueError),
        ({"older_than": float("nan")}, ValueError),
        ({"dry_run": "yes"}, TypeError),
    ],
)
def test_cleanup_refuses_bad_arguments_before_any_io(
    arguments: dict[str, Any], error: type[Exception]
) -> None:
    below = Leaving()
    with pytest.raises(error):
        Prefix(Retry(below), "tenant-a").cleanup(**arguments)
    assert below.asked == []


def test_cleanup_refuses_a_leftover_outside_the_prefix_it_asked_for() -> None:
    below = Leaving(names=("tenant-ab/y\\tmp",))
    below.cleanup = lambda prefix="", **options: [  # type: ignore[method-assign]
        Leftover("tenant-ab/y\\tmp", "temporary file", datetime.now(timezone.utc))
    ]
    with pytest.raises(SnapshotStorageError, match="outside prefix 'tenant-a/'"):
        Prefix(below, "tenant-a").cleanup()


def test_cleanup_of_a_stack_without_cleanup_below_is_a_capability_error() -> None:
    stack = Retry(Prefix(BasicMemory(), "tenant-a"))
    with pytest.raises(SnapshotStorageCapabilityError, match="BasicMemory has no cleanup"):
        stack.cleanup(older_than=0)

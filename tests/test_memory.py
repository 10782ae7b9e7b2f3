"""MemoryBackend: the storage contract, thread safety and isolation."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from django_snapshots import AdvancedSnapshotStorage, SnapshotStoragePathError
from django_snapshots.storage import MemoryBackend
from django_snapshots.testing import StorageConformance


class TestMemoryBackendConformance(StorageConformance):
    @pytest.fixture
    def storage(self) -> MemoryBackend:
        return MemoryBackend()


def test_memory_backend_is_advanced_and_shows_itself_in_repr() -> None:
    storage = MemoryBackend()
    assert isinstance(storage, AdvancedSnapshotStorage)
    assert repr(storage) == "MemoryBackend()"


def test_instances_do_not_share_objects() -> None:
    first, second = MemoryBackend(), MemoryBackend()
    first.write("k", io.BytesIO(b"x"))
    assert second.list("") == []


def test_failed_stream_write_keeps_the_previous_object() -> None:
    storage = MemoryBackend()
    storage.write("k", io.BytesIO(b"old"))

    def failing() -> Iterator[bytes]:
        yield b"new"
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        storage.stream_write("k", failing())
    assert storage.read("k").read() == b"old"


def test_concurrent_writers_never_tear_an_object() -> None:
    storage = MemoryBackend()
    versions = [bytes([n]) * 300_000 for n in range(8)]
    torn: list[bytes] = []

    def writer(data: bytes) -> None:
        for _ in range(20):
            storage.write("shared", io.BytesIO(data))

    def reader() -> None:
        for _ in range(100):
            if storage.exists("shared"):
                data = storage.read("shared").read()
                if data not in versions:
                    torn.append(data[:16])

    threads = [threading.Thread(target=writer, args=(v,)) for v in versions]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert torn == []
    assert storage.read("shared").read() in versions


def test_concurrent_writers_to_distinct_keys_all_land() -> None:
    storage = MemoryBackend()

    def writer(n: int) -> None:
        for i in range(50):
            storage.write(f"t{n}/{i:03d}", io.BytesIO(b"x"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(storage.list("")) == 300


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"data", r"not bytes: wrap the data as io\.BytesIO\(data\)"),
        (bytearray(b"data"), r"not bytearray: wrap the data as io\.BytesIO"),
        ("data", r"not str: encode the text and wrap it"),
        (io.StringIO("data"), r"not a text stream \(StringIO\): open the file in binary mode"),
        (None, r"with a read\(\) method, not NoneType"),
    ],
)
def test_write_refuses_content_that_is_not_a_binary_file_object(
    content: object, expected: str
) -> None:
    storage = MemoryBackend()
    storage.write("k", io.BytesIO(b"old"))
    with pytest.raises(TypeError, match=expected):
        storage.write("k", content)  # type: ignore[arg-type]
    assert storage.read("k").read() == b"old"


# Crash leftovers


def test_cleanup_finds_nothing_and_leaves_every_object() -> None:
    storage = MemoryBackend()
    keys = ["a", "db/.snapshots-write-0123456789abcdef", "db/latest.dump"]
    for key in keys:
        storage.write(key, io.BytesIO(key.encode()))
    assert storage.cleanup() == []
    assert storage.cleanup("db/", older_than=0) == []
    assert storage.cleanup(older_than=timedelta(0), dry_run=True) == []
    assert storage.list("") == keys
    assert [storage.read(key).read() for key in keys] == [key.encode() for key in keys]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"prefix": "../"}, SnapshotStoragePathError, "segment '..'"),
        ({"prefix": None}, SnapshotStoragePathError, "must be a str"),
        ({"older_than": -1}, ValueError, "must not be negative"),
        ({"older_than": "soon"}, ValueError, "not a duration"),
        ({"older_than": False}, TypeError, "not a bool"),
        ({"dry_run": "yes"}, TypeError, "dry_run must be a bool, not str"),
        ({"dry_run": 0}, TypeError, "dry_run must be a bool, not int"),
    ],
)
def test_cleanup_refuses_bad_arguments_as_every_backend_does(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        MemoryBackend().cleanup(**arguments)

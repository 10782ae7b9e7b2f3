"""DjangoStorageBackend over FileSystemStorage, InMemoryStorage and
django-storages' S3Storage (against the real S3 server on loopback)."""

from __future__ import annotations

import contextlib
import errno
import io
import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile, File
from django.core.files.storage import (
    FileSystemStorage,
    InMemoryStorage,
    InvalidStorageError,
    Storage,
    default_storage,
    storages,
)
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_snapshots.exceptions import (
    SnapshotError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    DjangoStorageBackend,
    SnapshotStorage,
)
from django_snapshots.storage.cleanup import Leftover
from django_snapshots.storage.django_storage import InvalidDjangoStorageError
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.testing import StorageConformance
from tests.conftest import S3Bucket
from tests.test_local import opened_during_cleanup

KINDS = ["filesystem", "memory", "s3"]


def s3_storage(bucket: S3Bucket, **options: Any) -> Any:
    from storages.backends.s3 import S3Storage

    server = bucket.server
    settings = {
        "bucket_name": bucket.name,
        "endpoint_url": server.endpoint_url,
        "access_key": server.access_key_id,
        "secret_key": server.secret_access_key,
        "region_name": server.region,
    }
    settings.update(options)
    return S3Storage(**settings)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def django_storage(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Storage:
    if kind == "filesystem":
        return FileSystemStorage(location=tmp_path / "media")
    if kind == "memory":
        return InMemoryStorage()
    return s3_storage(request.getfixturevalue("s3_bucket"))


@pytest.fixture
def backend(django_storage: Storage) -> DjangoStorageBackend:
    return DjangoStorageBackend(django_storage)


def payload(size: int) -> bytes:
    return os.urandom(size)


def read_all(backend: DjangoStorageBackend, key: str) -> bytes:
    with backend.read(key) as file:
        return file.read()


class StrictStream(io.RawIOBase):
    """A non-seekable source that refuses a read of the whole stream or of
    more than *limit* bytes at once, and records every request."""

    def __init__(self, data: bytes, *, limit: int = CHUNK_SIZE) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._offset = 0
        self._limit = limit
        self.requests: list[int | None] = []

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self.requests.append(size)
        if size is None or size < 0 or size > self._limit:
            raise AssertionError(f"read({size}) asks for more than {self._limit} bytes")
        chunk = bytes(self._data[self._offset : self._offset + size])
        self._offset += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class ShortReads(io.RawIOBase):
    """A non-seekable source that returns at most *step* bytes per read, as
    pipes and sockets do."""

    def __init__(self, data: bytes, *, step: int) -> None:
        super().__init__()
        self._source = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._step]
        return self._source.readinto(view)


class FailingStream(io.RawIOBase):
    """A source that breaks with *error* once *fail_at* bytes have been read."""

    def __init__(self, data: bytes, *, fail_at: int, error: BaseException) -> None:
        super().__init__()
        self._source = io.BytesIO(data)
        self._fail_at = fail_at
        self.error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._source.tell() >= self._fail_at:
            raise self.error
        view = memoryview(buffer)[: self._fail_at - self._source.tell()]
        return self._source.readinto(view)


# --------------------------------------------------------------------------
# The whole storage contract, on each storage


class TestFileSystemStorageConformance(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> DjangoStorageBackend:
        return DjangoStorageBackend(FileSystemStorage(location=tmp_path / "media"))


class TestInMemoryStorageConformance(StorageConformance):
    @pytest.fixture
    def storage(self) -> DjangoStorageBackend:
        return DjangoStorageBackend(InMemoryStorage())


class TestS3StorageConformance(StorageConformance):
    @pytest.fixture
    def storage(self, s3_bucket: S3Bucket) -> DjangoStorageBackend:
        return DjangoStorageBackend(s3_storage(s3_bucket))


class TestStoragesAliasConformance(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[DjangoStorageBackend]:
        config = {
            "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
            "backups": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(tmp_path / "backups")},
            },
        }
        with override_settings(STORAGES=config):
            yield DjangoStorageBackend("backups")


# --------------------------------------------------------------------------
# Tier


def test_the_backend_is_basic_tier_only(backend: DjangoStorageBackend) -> None:
    assert isinstance(backend, SnapshotStorage)
    assert not isinstance(backend, AdvancedSnapshotStorage)
    for name in ("stream_read", "stream_write", "atomic_move", "recursive_list", "sync"):
        assert not hasattr(backend, name)


# --------------------------------------------------------------------------
# Round trips on every storage


def test_written_bytes_read_back_identical(backend: DjangoStorageBackend) -> None:
    data = payload(3 * CHUNK_SIZE + 17)
    backend.write("db/2026/dump.bin", io.BytesIO(data))
    assert read_all(backend, "db/2026/dump.bin") == data


def test_an_empty_object_is_stored_and_read_back(backend: DjangoStorageBackend) -> None:
    backend.write("empty", io.BytesIO(b""))
    assert backend.exists("empty")
    assert read_all(backend, "empty") == b""
    assert backend.list("") == ["empty"]


def test_write_replaces_exactly_the_key(backend: DjangoStorageBackend) -> None:
    backend.write("db/latest", io.BytesIO(b"old and longer content"))
    backend.write("db/latest", io.BytesIO(b"new"))
    assert read_all(backend, "db/latest") == b"new"
    assert backend.list("") == ["db/latest"]


def test_write_stores_the_content_from_its_current_position(
    backend: DjangoStorageBackend,
) -> None:
    content = io.BytesIO(b"HEADERpayload")
    content.seek(6)
    backend.write("k", content)
    assert read_all(backend, "k") == b"payload"


def test_write_accepts_a_pipe(backend: DjangoStorageBackend) -> None:
    data = payload(2 * CHUNK_SIZE + 3)
    read_end, write_end = os.pipe()

    def feed() -> None:
        with open(write_end, "wb") as sink:
            sink.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with open(read_end, "rb", buffering=0) as source:
        assert not source.seekable()
        backend.write("piped", source)
    feeder.join()
    assert read_all(backend, "piped") == data


def test_write_never_asks_the_content_for_more_than_a_chunk(
    backend: DjangoStorageBackend,
) -> None:
    data = payload(3 * CHUNK_SIZE + 5)
    source = StrictStream(data)
    backend.write("big", source)
    assert read_all(backend, "big") == data
    assert max(size for size in source.requests if size is not None) <= CHUNK_SIZE


def test_write_leaves_the_content_open(backend: DjangoStorageBackend) -> None:
    content = io.BytesIO(b"data")
    backend.write("k", content)
    assert not content.closed


def test_text_content_is_refused_before_anything_changes(
    backend: DjangoStorageBackend,
) -> None:
    backend.write("k", io.BytesIO(b"kept"))
    with pytest.raises(TypeError, match="binary file object"):
        backend.write("k", io.StringIO("text"))  # type: ignore[arg-type]
    assert read_all(backend, "k") == b"kept"


def test_bad_keys_are_refused_before_the_storage_is_touched() -> None:
    # The alias does not exist: reaching the storage would raise InvalidStorageError.
    backend = DjangoStorageBackend("no-such-alias")
    for call in (
        lambda: backend.read("../etc/passwd"),
        lambda: backend.write("/abs", io.BytesIO(b"")),
        lambda: backend.exists("a//b"),
        lambda: backend.delete("a/"),
        lambda: backend.list("../"),
    ):
        with pytest.raises(SnapshotStoragePathError):
            call()


def test_reading_a_missing_key_raises_file_not_found(backend: DjangoStorageBackend) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        backend.read("no/such/key")
    assert caught.value.filename == "no/such/key"


def test_a_directory_is_not_an_object(backend: DjangoStorageBackend) -> None:
    backend.write("a/b", io.BytesIO(b"x"))
    assert backend.exists("a/b")
    assert not backend.exists("a")
    with pytest.raises(FileNotFoundError):
        backend.read("a")
    assert backend.list("a") == ["a/b"]


def test_a_name_below_an_object_is_missing(backend: DjangoStorageBackend) -> None:
    backend.write("a", io.BytesIO(b"x"))
    assert not backend.exists("a/b")
    with pytest.raises(FileNotFoundError):
        backend.read("a/b")
    assert backend.list("a/b") == []
    backend.delete("a/b")
    assert backend.exists("a")


def test_list_uses_plain_string_prefixes_and_sorts(backend: DjangoStorageBackend) -> None:
    for key in ("snapshots/x", "snap.txt", "snapshots/deep/y", "snack", "other/snap", "s"):
        backend.write(key, io.BytesIO(key.encode()))
    assert backend.list("snap") == ["snap.txt", "snapshots/deep/y", "snapshots/x"]
    assert backend.list("snapshots/") == ["snapshots/deep/y", "snapshots/x"]
    assert backend.list("snapshots/d") == ["snapshots/deep/y"]
    assert backend.list("") == sorted(
        ["other/snap", "s", "snack", "snap.txt", "snapshots/deep/y", "snapshots/x"]
    )
    assert backend.list("nothing/") == []


def test_delete_removes_the_object_and_ignores_a_missing_key(
    backend: DjangoStorageBackend,
) -> None:
    backend.write("a/b", io.BytesIO(b"x"))
    backend.delete("a/b")
    assert not backend.exists("a/b")
    assert backend.list("") == []
    backend.delete("a/b")
    backend.delete("never/written")


def test_deleting_a_directory_name_keeps_the_objects_below_it(
    backend: DjangoStorageBackend,
) -> None:
    backend.write("a/b", io.BytesIO(b"x"))
    backend.write("a/c/d", io.BytesIO(b"y"))
    backend.delete("a")
    backend.delete("a/c")
    assert backend.list("") == ["a/b", "a/c/d"]


# --------------------------------------------------------------------------
# Failed writes: what each storage is documented to leave


def test_a_failed_write_to_memory_keeps_the_previous_object() -> None:
    storage = InMemoryStorage()
    backend = DjangoStorageBackend(storage)
    backend.write("k", io.BytesIO(b"previous"))
    error = OSError("the source disk failed")
    with pytest.raises(OSError, match="source disk failed") as caught:
        backend.write(
            "k", FailingStream(payload(3 * CHUNK_SIZE), fail_at=CHUNK_SIZE + 1, error=error)
        )
    # The content's own error comes through unchanged, not as a storage error.
    assert caught.value is error
    assert read_all(backend, "k") == b"previous"
    with pytest.raises(RuntimeError, match="boom"):
        backend.write("new/deep/k", FailingStream(b"data", fail_at=2, error=RuntimeError("boom")))
    assert backend.list("") == ["k"]
    assert storage.listdir("") == ([], ["k"])


@pytest.mark.parametrize("allow_overwrite", [False, True])
def test_a_failed_write_to_a_filesystem_storage_keeps_the_previous_object(
    tmp_path: Path, allow_overwrite: bool
) -> None:
    backend = DjangoStorageBackend(
        FileSystemStorage(location=tmp_path, allow_overwrite=allow_overwrite)
    )
    backend.write("db/k", io.BytesIO(b"previous"))
    for fail_at in (0, CHUNK_SIZE + 1):
        error = OSError("the source disk failed")
        source = FailingStream(payload(3 * CHUNK_SIZE), fail_at=fail_at, error=error)
        with pytest.raises(OSError, match="source disk failed") as caught:
            backend.write("db/k", source)
        assert caught.value is error
        assert read_all(backend, "db/k") == b"previous"
        # The temporary file is gone with the failed write.
        assert [p.name for p in (tmp_path / "db").iterdir()] == ["k"]
    # A failed first write of a key leaves nothing, not even its directories.
    with pytest.raises(RuntimeError, match="boom"):
        backend.write("new/deep/k", FailingStream(b"data", fail_at=2, error=RuntimeError("boom")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    assert backend.list("") == ["db/k"]


def test_a_failed_write_to_s3_keeps_the_previous_object(s3_bucket: S3Bucket) -> None:
    backend = DjangoStorageBackend(s3_storage(s3_bucket))
    backend.write("k", io.BytesIO(b"previous"))
    for fail_at in (100, 9 * 1024 * 1024):  # a single PUT, then a multipart upload
        error = RuntimeError("the source failed")
        source = FailingStream(payload(12 * 1024 * 1024), fail_at=fail_at, error=error)
        with pytest.raises(RuntimeError) as caught:
            backend.write("k", source)
        assert caught.value is error
        assert read_all(backend, "k") == b"previous"
    client = s3_bucket.server.client()
    assert client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []


def test_a_failed_write_to_s3_without_overwrite_leaves_the_key_absent(s3_bucket: S3Bucket) -> None:
    backend = DjangoStorageBackend(s3_storage(s3_bucket, file_overwrite=False))
    backend.write("k", io.BytesIO(b"previous"))
    backend.write("k", io.BytesIO(b"replaced"))
    assert backend.list("") == ["k"]
    assert read_all(backend, "k") == b"replaced"
    with pytest.raises(RuntimeError):
        backend.write("k", FailingStream(b"new", fail_at=1, error=RuntimeError("boom")))
    assert not backend.exists("k")


class FirstChunkOnly(InMemoryStorage):
    """A storage that saves only the first chunk of what it is given."""

    def _save(self, name: str, content: Any) -> str:
        first = next(iter(content.chunks()), b"")
        return super()._save(name, ContentFile(first))


def test_a_storage_that_stops_reading_early_fails_the_write() -> None:
    backend = DjangoStorageBackend(FirstChunkOnly())
    with pytest.raises(SnapshotStorageError, match="stopped reading the content after"):
        backend.write("k", io.BytesIO(payload(2 * CHUNK_SIZE + 1)))
    assert not backend.exists("k")


# --------------------------------------------------------------------------
# Rename on conflict is an error, never a silent rename


class VersionedNames(InMemoryStorage):
    """A storage that never reuses a name: every save gets a fresh suffix."""

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return f"{name}.v1"


class WriteOnce(InMemoryStorage):
    """A retention storage: objects cannot be deleted."""

    def delete(self, name: str) -> None:
        pass


def test_a_storage_that_renames_fails_the_write_and_the_stray_is_removed() -> None:
    storage = VersionedNames()
    backend = DjangoStorageBackend(storage)
    with pytest.raises(SnapshotStorageError, match=r"saved the object as 'k\.v1'.*removed it"):
        backend.write("k", io.BytesIO(b"data"))
    assert storage.listdir("") == ([], [])


def test_a_storage_that_cannot_delete_fails_the_overwrite_and_says_so() -> None:
    backend = DjangoStorageBackend(WriteOnce())
    backend.write("k", io.BytesIO(b"first"))
    with pytest.raises(SnapshotStorageError, match=r"renames on conflict.*could not remove it"):
        backend.write("k", io.BytesIO(b"second"))
    assert read_all(backend, "k") == b"first"


def test_writing_over_a_directory_fails_and_keeps_what_is_below(kind: str, tmp_path: Path) -> None:
    storage = FileSystemStorage(location=tmp_path) if kind == "filesystem" else InMemoryStorage()
    backend = DjangoStorageBackend(storage)
    backend.write("a/b", io.BytesIO(b"below"))
    source = StrictStream(b"over the directory", limit=0)
    with pytest.raises(SnapshotStorageError, match="files are stored below 'a/'"):
        backend.write("a", source)
    assert source.requests == []
    assert backend.list("") == ["a/b"]
    assert read_all(backend, "a/b") == b"below"


def test_a_filesystem_conflict_is_a_permanent_storage_error(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    backend.write("a", io.BytesIO(b"file"))
    with pytest.raises(SnapshotStorageError) as caught:
        backend.write("a/b", io.BytesIO(b"below a file"))
    assert caught.value.transient is False
    assert "'a/b'" in str(caught.value)


# --------------------------------------------------------------------------
# Reading


def test_readers_of_in_memory_storage_do_not_disturb_each_other() -> None:
    backend = DjangoStorageBackend(InMemoryStorage())
    backend.write("k", io.BytesIO(b"0123456789"))
    with backend.read("k") as first, backend.read("k") as second:
        assert first.read(3) == b"012"
        assert second.read(5) == b"01234"
        assert first.read(3) == b"345"
        assert second.read() == b"56789"
        assert first.read() == b"6789"


def test_a_reader_keeps_the_object_it_opened_when_it_is_replaced() -> None:
    backend = DjangoStorageBackend(InMemoryStorage())
    backend.write("k", io.BytesIO(b"old"))
    with backend.read("k") as reader:
        backend.write("k", io.BytesIO(b"new!"))
        assert reader.read() == b"old"
    assert read_all(backend, "k") == b"new!"


@pytest.mark.parametrize("kind", ["filesystem", "memory"])
def test_readers_of_local_storages_seek(backend: DjangoStorageBackend) -> None:
    backend.write("k", io.BytesIO(b"0123456789"))
    with backend.read("k") as reader:
        assert reader.seekable()
        assert reader.seek(4) == 4
        assert reader.read(2) == b"45"
        assert reader.tell() == 6
        assert reader.seek(-3, io.SEEK_END) == 7
        assert reader.read() == b"789"
        assert reader.seek(-2, io.SEEK_CUR) == 8
        assert reader.read() == b"89"


def test_s3_objects_are_read_as_a_stream(s3_bucket: S3Bucket) -> None:
    backend = DjangoStorageBackend(s3_storage(s3_bucket))
    size = 24 * CHUNK_SIZE
    s3_bucket.server.client().upload_fileobj(io.BytesIO(b"\x5a" * size), s3_bucket.name, "big")
    backend.exists("big")  # load boto3's service model before measuring
    tracemalloc.start()
    try:
        total = 0
        with backend.read("big") as reader:
            assert not reader.seekable()
            while chunk := reader.read(CHUNK_SIZE):
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    # S3File would buffer the whole object (24 MiB) before the first byte.
    assert peak < 8 * CHUNK_SIZE, f"peak {peak / CHUNK_SIZE:.1f} MiB while streaming"


def test_s3_uploads_full_parts_from_a_stream_of_short_reads(s3_bucket: S3Bucket) -> None:
    backend = DjangoStorageBackend(s3_storage(s3_bucket))
    data = payload(9 * 1024 * 1024)
    backend.write("big", ShortReads(data, step=64 * 1024))
    head = s3_bucket.server.client().head_object(Bucket=s3_bucket.name, Key="big")
    # A multipart upload (ETag "<md5>-<parts>") of 8 MiB parts, not one PUT
    # of a body gathered in memory.
    assert head["ETag"].strip('"').endswith("-2")
    assert read_all(backend, "big") == data


def test_s3_gz_keys_come_back_byte_for_byte(s3_bucket: S3Bucket) -> None:
    import gzip

    backend = DjangoStorageBackend(s3_storage(s3_bucket))
    data = gzip.compress(b"archive" * 1000)
    backend.write("db/dump.sql.gz", io.BytesIO(data))
    assert read_all(backend, "db/dump.sql.gz") == data


def test_an_s3_storage_that_gzips_is_refused(s3_bucket: S3Bucket) -> None:
    with pytest.raises(InvalidStorageError, match="gzip"):
        DjangoStorageBackend(s3_storage(s3_bucket, gzip=True))


def test_s3_listing_never_looks_at_the_local_directory(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "local-file").write_bytes(b"x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inner").write_bytes(b"y")
    monkeypatch.chdir(tmp_path)
    backend = DjangoStorageBackend(s3_storage(s3_bucket))
    assert backend.list("") == []
    backend.write("remote/key", io.BytesIO(b"z"))
    assert backend.list("") == ["remote/key"]


def test_s3_objects_under_a_location_are_listed_relative_to_it(s3_bucket: S3Bucket) -> None:
    backend = DjangoStorageBackend(s3_storage(s3_bucket, location="tenant-a"))
    backend.write("db/x", io.BytesIO(b"x"))
    client = s3_bucket.server.client()
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]]
    assert keys == ["tenant-a/db/x"]
    assert backend.list("") == ["db/x"]
    assert backend.list("d") == ["db/x"]


# --------------------------------------------------------------------------
# Listing through the Storage API


def test_names_that_are_not_keys_are_not_listed(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    backend.write("ok/key", io.BytesIO(b"x"))
    (tmp_path / "ok" / "back\\slash").write_bytes(b"x")
    (tmp_path / "ok" / "line\nbreak").write_bytes(b"x")
    # Five directory levels of 250 characters: nothing below can be a key.
    deep = tmp_path.joinpath(*["d" * 250] * 5)
    deep.mkdir(parents=True)
    (deep / "x").write_bytes(b"x")
    assert backend.list("") == ["ok/key"]


def test_a_symlink_loop_ends_the_walk(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    backend.write("a/key", io.BytesIO(b"x"))
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    keys = backend.list("a/")
    assert keys[0] == "a/key"
    assert all(len(key.encode()) <= 1024 for key in keys)


def test_listing_a_missing_location_is_empty(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path / "not-yet"))
    assert backend.list("") == []
    assert not backend.exists("k")
    backend.delete("k")


# --------------------------------------------------------------------------
# STORAGES aliases


def test_an_alias_writes_to_the_configured_storage() -> None:
    backend = DjangoStorageBackend("default")
    backend.write("via/alias", io.BytesIO(b"aliased"))
    try:
        assert backend.storage is storages["default"]
        with storages["default"].open("via/alias") as file:
            assert file.read() == b"aliased"
    finally:
        backend.delete("via/alias")


def test_an_alias_follows_overridden_settings(tmp_path: Path) -> None:
    backend = DjangoStorageBackend("backups")
    config = {
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
        "backups": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    with override_settings(STORAGES=config):
        backend.write("db/x", io.BytesIO(b"on disk"))
        assert repr(backend) == "DjangoStorageBackend(<FileSystemStorage> 'backups')"
    assert (tmp_path / "db" / "x").read_bytes() == b"on disk"


def test_an_unknown_alias_fails_at_first_use_naming_it() -> None:
    backend = DjangoStorageBackend("backups")  # building it reads no settings
    with pytest.raises(InvalidStorageError, match=r"no storage alias 'backups'.*'default'"):
        backend.list("")
    assert isinstance(InvalidStorageError(), ImproperlyConfigured)
    assert repr(backend) == "DjangoStorageBackend('backups')"


def test_an_unknown_alias_is_a_snapshot_error_of_one_line() -> None:
    backend = DjangoStorageBackend("bakups")
    with pytest.raises(SnapshotError) as raised:
        backend.read("k")
    assert isinstance(raised.value, InvalidDjangoStorageError)
    assert isinstance(raised.value, InvalidStorageError)
    assert str(raised.value) == (
        "no storage alias 'bakups' in settings.STORAGES (defined: 'default', 'staticfiles')"
    )


def test_snapshots_commands_report_an_unknown_alias_in_one_line() -> None:
    setting = {
        "BACKEND": "django_snapshots.storage.DjangoStorageBackend",
        "OPTIONS": {"storage": "bakups"},
    }
    with override_settings(SNAPSHOTS={"STORAGE": setting}), pytest.raises(CommandError) as raised:
        call_command("snapshots", "ls", stdout=io.StringIO(), stderr=io.StringIO())
    message = str(raised.value)
    assert "\n" not in message
    assert "no storage alias 'bakups' in settings.STORAGES" in message


def test_write_refuses_data_and_text_files_before_any_io() -> None:
    storage = InMemoryStorage()
    backend = DjangoStorageBackend(storage)
    backend.write("k", io.BytesIO(b"old"))
    for content, expected in [
        (b"new", r"not bytes: wrap the data as io\.BytesIO\(data\)"),
        (io.StringIO("new"), r"not a text stream \(StringIO\): open the file in binary mode"),
        (File(io.StringIO("new")), r"not a text stream \(File\)"),
    ]:
        with pytest.raises(TypeError, match=expected):
            backend.write("k", content)  # type: ignore[arg-type]
    with backend.read("k") as file:
        assert file.read() == b"old"


def test_an_alias_whose_backend_cannot_be_imported_is_named() -> None:
    config = {"backups": {"BACKEND": "no.such.module.Storage"}}
    expected = r"STORAGES\['backups'\].*no\.such\.module"
    with override_settings(STORAGES=config), pytest.raises(InvalidStorageError, match=expected):
        DjangoStorageBackend("backups").exists("k")


def test_the_default_storage_proxy_is_accepted() -> None:
    backend = DjangoStorageBackend(default_storage)
    assert repr(backend) == "DjangoStorageBackend(<InMemoryStorage>)"
    backend.write("proxied", io.BytesIO(b"x"))
    try:
        assert storages["default"].exists("proxied")
    finally:
        backend.delete("proxied")


def test_anything_but_a_storage_or_an_alias_is_a_type_error(tmp_path: Path) -> None:
    for wrong in (None, 3, tmp_path, FileSystemStorage):
        with pytest.raises(TypeError, match="django Storage"):
            DjangoStorageBackend(wrong)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# repr and errors


def test_repr_names_the_storage_class_and_where_it_stores(tmp_path: Path) -> None:
    assert repr(DjangoStorageBackend(FileSystemStorage(location=tmp_path))) == (
        f"DjangoStorageBackend(<FileSystemStorage> {str(tmp_path)!r})"
    )
    assert (
        repr(DjangoStorageBackend(InMemoryStorage())) == "DjangoStorageBackend(<InMemoryStorage>)"
    )
    assert (
        repr(DjangoStorageBackend("default")) == "DjangoStorageBackend(<InMemoryStorage> 'default')"
    )


def test_s3_repr_shows_the_bucket_and_never_the_credentials(s3_bucket: S3Bucket) -> None:
    backend = DjangoStorageBackend(s3_storage(s3_bucket, location="backups"))
    text = repr(backend)
    assert text == f"DjangoStorageBackend(<S3Storage> '{s3_bucket.name}/backups')"
    assert s3_bucket.server.secret_access_key not in text
    assert s3_bucket.server.access_key_id not in text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_s3_endpoint_is_a_transient_storage_error(s3_bucket: S3Bucket) -> None:
    from botocore.config import Config

    storage = s3_storage(
        s3_bucket,
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        client_config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )
    backend = DjangoStorageBackend(storage)
    for call in (
        lambda: backend.list(""),
        lambda: backend.exists("k"),
        lambda: backend.read("k"),
        lambda: backend.write("k", io.BytesIO(b"data")),
        lambda: backend.delete("k"),
    ):
        with pytest.raises(SnapshotStorageError) as caught:
            call()
        assert caught.value.transient is True
        message = str(caught.value)
        assert "'k'" in message or "list" in message
        assert s3_bucket.server.secret_access_key not in message


def test_errors_never_show_the_credentials_of_an_endpoint_url(s3_bucket: S3Bucket) -> None:
    """botocore names the URL it could not reach, user and password
    included (a proxy in front of the server may want them)."""
    from botocore.config import Config

    storage = s3_storage(
        s3_bucket,
        endpoint_url=f"http://operator:hunter2-secret@127.0.0.1:{_closed_port()}",
        client_config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )
    backend = DjangoStorageBackend(storage)
    for call in (
        lambda: backend.list(""),
        lambda: backend.exists("k"),
        lambda: backend.write("k", io.BytesIO(b"data")),
        lambda: backend.cleanup(dry_run=True),
    ):
        with pytest.raises(SnapshotStorageError) as caught:
            call()
        message = str(caught.value)
        assert "http://***@127.0.0.1:" in message
        shown = "".join(traceback.format_exception(caught.value))
        assert "hunter2-secret" not in shown
        assert "operator" not in shown


def test_a_missing_bucket_is_a_permanent_storage_error_not_an_empty_listing(
    s3_bucket: S3Bucket,
) -> None:
    backend = DjangoStorageBackend(s3_storage(s3_bucket, bucket_name="no-such-bucket-here"))
    with pytest.raises(SnapshotStorageError) as caught:
        backend.list("")
    assert caught.value.transient is False
    with pytest.raises(SnapshotStorageError) as caught:
        backend.write("k", io.BytesIO(b"data"))
    assert caught.value.transient is False


def test_s3_listing_takes_one_request_whatever_the_depth(s3_bucket: S3Bucket) -> None:
    storage = s3_storage(s3_bucket)
    backend = DjangoStorageBackend(storage)
    keys = [f"db/{year}/{month:02}/dump" for year in (2025, 2026) for month in range(1, 13)]
    for key in keys:
        backend.write(key, io.BytesIO(b"x"))
    requests: list[str] = []
    events = storage.connection.meta.client.meta.events
    events.register("before-call.s3", lambda model, **_: requests.append(model.name))
    assert backend.list("db/") == sorted(keys)
    assert requests == ["ListObjectsV2"]


# --------------------------------------------------------------------------
# Directories left by deletes on a FileSystemStorage


def test_delete_removes_the_directories_it_empties_and_frees_their_names(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    backend.write("nightly/2026/db.dump", io.BytesIO(b"old"))
    backend.write("kept/x", io.BytesIO(b"x"))
    backend.delete("nightly/2026/db.dump")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    backend.write("nightly", io.BytesIO(b"new"))
    assert backend.list("") == ["kept/x", "nightly"]
    assert read_all(backend, "nightly") == b"new"


def test_delete_keeps_directories_that_still_hold_files(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    backend.write("a/b/one", io.BytesIO(b"1"))
    backend.write("a/two", io.BytesIO(b"2"))
    backend.delete("a/b/one")
    assert backend.list("") == ["a/two"]
    assert not (tmp_path / "a" / "b").exists()
    backend.delete("a/two")
    assert list(tmp_path.iterdir()) == []
    assert tmp_path.is_dir()  # the location itself stays


def test_a_write_removes_empty_directories_standing_at_its_key(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    (tmp_path / "k" / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "k" / "also-empty").mkdir()
    backend.write("k", io.BytesIO(b"data"))
    assert read_all(backend, "k") == b"data"
    assert backend.list("") == ["k"]


def test_a_write_over_a_directory_holding_a_file_removes_nothing(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    (tmp_path / "k" / "empty").mkdir(parents=True)
    (tmp_path / "k" / "sub").mkdir()
    (tmp_path / "k" / "sub" / "foreign\\name").write_bytes(b"not a key, still kept")
    source = StrictStream(b"data", limit=0)
    with pytest.raises(SnapshotStorageError, match="files are stored below 'k/'") as caught:
        backend.write("k", source)
    assert caught.value.transient is False
    assert source.requests == []
    assert (tmp_path / "k" / "sub" / "foreign\\name").read_bytes() == b"not a key, still kept"


class LosesARaceWithAPrune(FileSystemStorage):
    """A storage whose first save finds its new directory removed, as when a
    concurrent delete prunes it between its creation and the object's."""

    lost = 0

    def _save(self, name: str, content: Any) -> str:
        if self.lost < 2:
            self.lost += 1
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self.path(name))
        return str(super()._save(name, content))


def test_a_write_that_loses_a_race_with_a_prune_is_tried_again(tmp_path: Path) -> None:
    storage = LosesARaceWithAPrune(location=tmp_path)
    backend = DjangoStorageBackend(storage)
    backend.write("a/b", io.BytesIO(b"data"))
    assert storage.lost == 2
    assert read_all(backend, "a/b") == b"data"


def test_concurrent_deletes_and_writes_in_one_directory_all_land(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        try:
            for i in range(40):
                backend.write(f"shared/dir/{n}-{i}", io.BytesIO(b"x"))
                backend.delete(f"shared/dir/{n}-{i}")
            backend.write(f"shared/dir/{n}-last", io.BytesIO(b"last"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert backend.list("") == [f"shared/dir/{n}-last" for n in range(4)]


# --------------------------------------------------------------------------
# Segment length


@pytest.mark.parametrize("kind", ["filesystem"])
def test_a_filesystem_storage_declares_its_name_limit(
    backend: DjangoStorageBackend, tmp_path: Path
) -> None:
    assert backend.max_segment_bytes == os.pathconf(tmp_path, "PC_NAME_MAX")


@pytest.mark.parametrize("kind", ["memory", "s3"])
def test_other_storages_declare_no_segment_limit(backend: DjangoStorageBackend) -> None:
    assert backend.max_segment_bytes is None
    key = "x" * 300
    backend.write(key, io.BytesIO(b"long"))
    assert read_all(backend, key) == b"long"


def test_a_segment_longer_than_a_file_name_is_refused_before_any_io(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path / "media"))
    limit = backend.max_segment_bytes
    assert limit is not None
    backend.write("d/" + "x" * limit, io.BytesIO(b"fits"))
    for key in ("d/" + "x" * (limit + 1), "\u00e9" * (limit // 2 + 1) + "/k"):
        source = StrictStream(b"data", limit=0)
        with pytest.raises(SnapshotStoragePathError, match=f"more than the {limit}"):
            backend.write(key, source)
        assert source.requests == []
        for call in (backend.read, backend.exists, backend.delete):
            with pytest.raises(SnapshotStoragePathError, match=f"more than the {limit}"):
                call(key)
    assert backend.list("") == ["d/" + "x" * limit]


def test_an_alias_declares_the_limit_of_the_storage_it_names_now(tmp_path: Path) -> None:
    backend = DjangoStorageBackend("backups")
    config = {
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
        "backups": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "backups")},
        },
    }
    with override_settings(STORAGES=config):
        assert backend.max_segment_bytes == os.pathconf(tmp_path, "PC_NAME_MAX")
    config["backups"] = config["default"]
    with override_settings(STORAGES=config):
        assert backend.max_segment_bytes is None


# --------------------------------------------------------------------------
# Readers that share nothing, and stay failed


def test_concurrent_readers_of_in_memory_storage_all_get_every_byte() -> None:
    backend = DjangoStorageBackend(InMemoryStorage())
    data = payload(CHUNK_SIZE // 2 + 17)
    backend.write("k", io.BytesIO(data))
    wrong: list[int] = []
    errors: list[BaseException] = []

    def reader(n: int) -> None:
        try:
            for _ in range(10):
                parts = []
                with backend.read("k") as file:
                    while chunk := file.read(4096 + n):
                        parts.append(chunk)
                if b"".join(parts) != data:
                    wrong.append(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(16)]
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switching)
    assert errors == []
    assert wrong == []


def test_reading_from_in_memory_storage_copies_chunks_not_the_object() -> None:
    storage = InMemoryStorage()
    backend = DjangoStorageBackend(storage)
    size = 32 * CHUNK_SIZE
    backend.write("big", io.BytesIO(b"\x5a" * size))
    storage.size("big")  # InMemoryStorage's own look at its bytes, before measuring
    tracemalloc.start()
    try:
        total = 0
        with backend.read("big") as file:
            while chunk := file.read(CHUNK_SIZE):
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert peak < 4 * CHUNK_SIZE


class SharedFiles(FileSystemStorage):
    """A storage that hands every reader of a name the same file object."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.files: dict[str, File] = {}

    def _open(self, name: str, mode: str = "rb") -> File:
        if name not in self.files:
            self.files[name] = super()._open(name, mode)
        return self.files[name]


def test_readers_sharing_one_file_object_read_every_byte(tmp_path: Path) -> None:
    storage = SharedFiles(location=tmp_path)
    backend = DjangoStorageBackend(storage)
    data = payload(CHUNK_SIZE + 17)
    backend.write("k", io.BytesIO(data))
    opened = [backend.read("k") for _ in range(12)]
    assert len({id(file) for file in storage.files.values()}) == 1
    wrong: list[int] = []

    def reader(n: int, file: IO[bytes]) -> None:
        parts = []
        while chunk := file.read(4096 + n):
            parts.append(chunk)
        if b"".join(parts) != data:
            wrong.append(n)

    threads = [threading.Thread(target=reader, args=(n, f)) for n, f in enumerate(opened)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    shared = storage.files["k"]
    for file in opened[:-1]:
        file.close()
    assert not shared.closed  # still in use by the last reader
    opened[-1].close()
    assert shared.closed


class Flaky(io.RawIOBase):
    """A file whose second read fails; a seekable one keeps its position,
    a stream loses the bytes it was about to return."""

    def __init__(self, data: bytes, *, seekable: bool) -> None:
        super().__init__()
        self._source = io.BytesIO(data)
        self._seekable = seekable
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._source.seek(offset, whence)

    def readinto(self, buffer: Any) -> int:
        self.reads += 1
        if self.reads == 2:
            if not self._seekable:
                self._source.read(len(buffer))
            raise OSError(errno.EIO, "Input/output error")
        return self._source.readinto(buffer)


class FlakyFiles(InMemoryStorage):
    seekable = True

    def _open(self, name: str, mode: str = "rb") -> File:
        data = super()._open(name, mode).read()
        return File(Flaky(data, seekable=self.seekable), name=name)


@pytest.mark.parametrize("seekable", [True, False])
def test_a_reader_that_failed_keeps_failing(seekable: bool) -> None:
    storage = FlakyFiles()
    storage.seekable = seekable
    backend = DjangoStorageBackend(storage)
    # More than the reader's buffer, so that its second read of the
    # storage's file (which fails) comes within the object.
    data = b"0123456789" * 10_000
    backend.write("k", io.BytesIO(data))
    with backend.read("k") as file:
        assert file.read(10) == b"0123456789"
        with pytest.raises(SnapshotStorageError, match="Input/output error"):
            file.read(len(data))
        for again in (
            lambda: file.read(10),
            lambda: file.read(),
            lambda: file.readinto(bytearray(4)),
        ):
            with pytest.raises(SnapshotStorageError, match="an earlier read"):
                again()


# --------------------------------------------------------------------------
# FileSystemStorage: a write renames a complete file over the key


class Paced(io.RawIOBase):
    """A dump of *size* bytes of *byte*, produced a piece at a time."""

    def __init__(self, byte: int, size: int, *, piece: int = 128 * 1024, pause: float = 0.002):
        super().__init__()
        self._byte = byte
        self._left = size
        self._piece = piece
        self._pause = pause

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._left:
            return 0
        time.sleep(self._pause)
        n = min(len(buffer), self._left, self._piece)
        buffer[:n] = bytes([self._byte]) * n
        self._left -= n
        return n


def version(byte: int) -> bytes:
    """The complete object a writer of *byte* stores (lengths differ too)."""
    return bytes([byte]) * (CHUNK_SIZE + 4096 * byte)


def describe(data: bytes) -> str:
    pieces = "".join(chr(data[i]) for i in range(0, len(data), 128 * 1024))
    return f"{len(data)} bytes: {pieces}"


class PausedBeforeSaving(FileSystemStorage):
    """Both writers reach the naming step of Storage.save before either opens
    the file, and the second opens it while the first is writing it: the
    interleaving two cron processes writing one key hit by chance."""

    def __init__(self, barrier: threading.Barrier, **options: Any) -> None:
        super().__init__(**options)
        self.barrier = barrier

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        self.barrier.wait(5)
        if threading.current_thread().name == "second":
            time.sleep(0.3)
        return str(super().get_available_name(name, max_length))


@pytest.mark.parametrize("allow_overwrite", [False, True])
def test_two_writers_interleaved_before_saving_both_store_whole_objects(
    tmp_path: Path, allow_overwrite: bool
) -> None:
    storage = PausedBeforeSaving(
        threading.Barrier(2), location=tmp_path, allow_overwrite=allow_overwrite
    )
    backend = DjangoStorageBackend(storage)
    errors: list[BaseException] = []

    def write(byte: int, size: int, pause: float) -> None:
        try:
            backend.write("db.dump", Paced(byte, size, pause=pause))
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=write, args=(ord("A"), 4 * CHUNK_SIZE, 0.05), name="first")
    second = threading.Thread(target=write, args=(ord("B"), CHUNK_SIZE, 0), name="second")
    first.start()
    second.start()
    first.join()
    second.join()
    assert errors == []
    stored = read_all(backend, "db.dump")
    assert stored in (b"A" * 4 * CHUNK_SIZE, b"B" * CHUNK_SIZE), describe(stored)
    assert [p.name for p in tmp_path.iterdir()] == ["db.dump"]


def check_versions_while(backend: DjangoStorageBackend, writing: Any) -> tuple[int, list[str]]:
    """Read the key until *writing()* is false; return how many reads were
    made and what each bad one saw (missing, or not one whole version)."""
    known = {version(byte) for byte in range(ord("0"), ord("z"))}
    reads, bad = 0, []
    while writing():
        try:
            data = read_all(backend, "db.dump")
        except FileNotFoundError:
            bad.append("missing")
            continue
        reads += 1
        if data not in known:
            bad.append(describe(data))
    return reads, bad


@pytest.mark.parametrize("allow_overwrite", [False, True])
def test_concurrent_writer_threads_only_ever_show_whole_objects(
    tmp_path: Path, allow_overwrite: bool
) -> None:
    backend = DjangoStorageBackend(
        FileSystemStorage(location=tmp_path, allow_overwrite=allow_overwrite)
    )
    backend.write("db.dump", io.BytesIO(version(ord("0"))))
    errors: list[BaseException] = []

    def writer(byte: int) -> None:
        try:
            for _ in range(4):
                backend.write("db.dump", Paced(byte, len(version(byte))))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(byte,)) for byte in b"ABCD"]
    for thread in threads:
        thread.start()
    reads, bad = check_versions_while(backend, lambda: any(thread.is_alive() for thread in threads))
    for thread in threads:
        thread.join()
    assert errors == []
    assert reads > 0
    assert bad == []
    assert read_all(backend, "db.dump") in {version(byte) for byte in b"ABCD"}
    assert [p.name for p in tmp_path.iterdir()] == ["db.dump"]


def write_in_a_process(location: str, allow_overwrite: bool, byte: int, start: Any) -> None:
    """Write one version of db.dump a few times, from a process of its own."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    backend = DjangoStorageBackend(
        FileSystemStorage(location=location, allow_overwrite=allow_overwrite)
    )
    start.wait(60)
    for _ in range(4):
        backend.write("db.dump", Paced(byte, len(version(byte))))


@pytest.mark.parametrize("allow_overwrite", [False, True])
def test_concurrent_writer_processes_only_ever_show_whole_objects(
    tmp_path: Path, allow_overwrite: bool
) -> None:
    backend = DjangoStorageBackend(
        FileSystemStorage(location=tmp_path, allow_overwrite=allow_overwrite)
    )
    backend.write("db.dump", io.BytesIO(version(ord("0"))))
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    processes = [
        context.Process(
            target=write_in_a_process, args=(str(tmp_path), allow_overwrite, byte, start)
        )
        for byte in b"ABC"
    ]
    for process in processes:
        process.start()
    try:
        start.wait(60)
        reads, bad = check_versions_while(
            backend, lambda: any(process.is_alive() for process in processes)
        )
    finally:
        for process in processes:
            process.join(60)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert reads > 0
    assert bad == []
    assert read_all(backend, "db.dump") in {version(byte) for byte in b"ABC"}
    assert [p.name for p in tmp_path.iterdir()] == ["db.dump"]


class Pausing(io.RawIOBase):
    """A source that stops after *data* until *resume* is set."""

    def __init__(self, data: bytes, resume: threading.Event) -> None:
        super().__init__()
        self._data = data
        self._resume = resume
        self.paused = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._data:
            n = min(len(buffer), len(self._data))
            buffer[:n], self._data = self._data[:n], self._data[n:]
            return n
        self.paused.set()
        self._resume.wait(10)
        return 0


def test_a_write_in_progress_is_neither_listed_nor_readable(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    backend.write("db/old", io.BytesIO(b"old"))
    resume = threading.Event()
    source = Pausing(b"half of it", resume)
    writer = threading.Thread(target=backend.write, args=("db/new", source))
    writer.start()
    try:
        assert source.paused.wait(10)
        on_disk = sorted(p.name for p in (tmp_path / "db").iterdir())
        assert len(on_disk) == 2  # the old object and the file being written
        assert backend.list("") == ["db/old"]
        assert backend.list("db/n") == []
        assert not backend.exists("db/new")
        with pytest.raises(FileNotFoundError):
            backend.read("db/new")
        # The directory holds a file in progress: it is not a deleted prefix.
        with pytest.raises(SnapshotStorageError, match="files are stored below 'db/'"):
            backend.write("db", io.BytesIO(b"x"))
    finally:
        resume.set()
        writer.join()
    assert read_all(backend, "db/new") == b"half of it"
    assert sorted(p.name for p in (tmp_path / "db").iterdir()) == ["new", "old"]


def test_a_write_creates_files_and_directories_as_the_storage_would(tmp_path: Path) -> None:
    strict = FileSystemStorage(
        location=tmp_path / "strict", file_permissions_mode=0o640, directory_permissions_mode=0o750
    )
    DjangoStorageBackend(strict).write("a/b/k", io.BytesIO(b"x"))
    assert stat.S_IMODE((tmp_path / "strict" / "a" / "b" / "k").stat().st_mode) == 0o640
    for directory in ("a", "a/b"):
        assert stat.S_IMODE((tmp_path / "strict" / directory).stat().st_mode) == 0o750
    umask = os.umask(0o022)
    try:
        DjangoStorageBackend(FileSystemStorage(location=tmp_path / "plain")).write(
            "k", io.BytesIO(b"x")
        )
    finally:
        os.umask(umask)
    # As Django creates a file it saves: 0o666 less the umask.
    assert stat.S_IMODE((tmp_path / "plain" / "k").stat().st_mode) == 0o644


class CountsSaves(FileSystemStorage):
    """A storage with a save of its own (it could transform the content)."""

    saves = 0

    def _save(self, name: str, content: Any) -> str:
        self.saves += 1
        return str(super()._save(name, content))


def test_a_filesystem_storage_with_its_own_save_keeps_it(tmp_path: Path) -> None:
    storage = CountsSaves(location=tmp_path)
    backend = DjangoStorageBackend(storage)
    backend.write("k", io.BytesIO(b"one"))
    backend.write("k", io.BytesIO(b"two"))
    assert storage.saves == 2
    assert read_all(backend, "k") == b"two"


# --------------------------------------------------------------------------
# InMemoryStorage: a deleted prefix never blocks the key of its name


def test_a_deleted_prefix_never_blocks_the_key_of_its_name_in_memory() -> None:
    storage = InMemoryStorage()
    backend = DjangoStorageBackend(storage)
    backend.write("s/a/b", io.BytesIO(b"below"))
    backend.write("t/x", io.BytesIO(b"kept"))
    backend.delete("s/a/b")
    assert storage.listdir("") == (["t"], [])  # no directory node left behind
    backend.write("s/a", io.BytesIO(b"at the prefix"))
    assert backend.list("") == ["s/a", "t/x"]
    assert read_all(backend, "s/a") == b"at the prefix"


def test_a_write_in_memory_removes_empty_directory_nodes_at_its_key() -> None:
    storage = InMemoryStorage()
    storage.save("k/empty/x", ContentFile(b"x"))
    storage.delete("k/empty/x")  # Django's own delete keeps the directory nodes
    backend = DjangoStorageBackend(storage)
    backend.write("k", io.BytesIO(b"data"))
    assert backend.list("") == ["k"]
    assert read_all(backend, "k") == b"data"


def test_the_key_sequence_found_by_the_conformance_kit_round_trips_in_memory() -> None:
    backend = DjangoStorageBackend(InMemoryStorage())
    backend.write("s/\u201b/\u201b", io.BytesIO(b"first"))
    backend.delete("s/\u201b/\u201b")
    backend.write("s/\u201b", io.BytesIO(b"second"))
    backend.write("s/\u201b\u201b", io.BytesIO(b"third"))
    assert backend.list("") == ["s/\u201b", "s/\u201b\u201b"]
    assert read_all(backend, "s/\u201b") == b"second"
    assert read_all(backend, "s/\u201b\u201b") == b"third"


def test_distinct_keys_never_share_an_object_in_memory_over_many_examples() -> None:
    kit = StorageConformance()
    kit.key_examples = 300
    kit.test_distinct_keys_never_share_an_object(DjangoStorageBackend(InMemoryStorage()))


@pytest.mark.parametrize("kind", ["filesystem", "memory"])
def test_concurrent_writes_of_prefixes_and_keys_below_them_never_lose_an_object(
    backend: DjangoStorageBackend,
) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def churn(n: int) -> None:
        try:
            for i in range(30):
                # A key below a prefix, deleted, then the prefix as a key,
                # while the other threads do the same in the same directory.
                backend.write(f"d/{n}-{i}/x", io.BytesIO(b"below"))
                backend.delete(f"d/{n}-{i}/x")
                backend.write(f"d/{n}-{i}", io.BytesIO(b"prefix"))
                backend.delete(f"d/{n}-{i}")
            backend.write(f"d/{n}-last/x", io.BytesIO(b"last"))
        except BaseException as exc:
            errors.append(exc)

    def lister() -> None:
        try:
            while not done.is_set():
                backend.list("d/")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(6)]
    listing = threading.Thread(target=lister)
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        listing.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        done.set()
        listing.join()
        sys.setswitchinterval(switching)
    assert errors == []
    assert backend.list("") == [f"d/{n}-last/x" for n in range(6)]


def test_a_directory_pruned_while_it_is_created_is_created_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.makedirs raises FileExistsError when a concurrent delete prunes the
    # directory between its mkdir and its check that the directory is there.
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    real = os.makedirs
    raced: list[str] = []

    def makedirs(name: Any, *args: Any, **kwargs: Any) -> None:
        if not raced:
            raced.append(str(name))
            raise FileExistsError(17, "File exists", str(name))
        real(name, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
    backend.write("shared/dir/k", io.BytesIO(b"landed"))
    assert raced
    assert read_all(backend, "shared/dir/k") == b"landed"


def test_a_file_where_a_directory_is_needed_is_still_refused(tmp_path: Path) -> None:
    backend = DjangoStorageBackend(FileSystemStorage(location=tmp_path))
    (tmp_path / "shared").write_bytes(b"not a directory")
    with pytest.raises(SnapshotStorageError):
        backend.write("shared/dir/k", io.BytesIO(b"x"))


# --------------------------------------------------------------------------
# Crash leftovers

DAY = 24 * 3600
LEFTOVER = ".snapshots-write-0123456789abcdef\x7f"

# Writes a key through DjangoStorageBackend from a source that gives *size*
# bytes, says so, then blocks until a line comes on its standard input (or
# the process is killed), ends and says it stored.  Credentials come from
# the environment, never from the command line.
KILLED_WRITE = """
import io, sys
from django_snapshots.storage import DjangoStorageBackend

class Blocking(io.RawIOBase):
    def __init__(self, size):
        super().__init__()
        self.left = size
    def readable(self):
        return True
    def readinto(self, buffer):
        if self.left == 0:
            print("blocked", flush=True)
            sys.stdin.readline()
            self.left = -1
        if self.left < 0:
            return 0
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n

kind, where, key, size = sys.argv[1:]
if kind == "filesystem":
    from django.core.files.storage import FileSystemStorage
    storage = FileSystemStorage(location=where)
else:
    from boto3.s3.transfer import TransferConfig
    from storages.backends.s3 import S3Storage
    endpoint, bucket = where.split()
    storage = S3Storage(
        bucket_name=bucket,
        endpoint_url=endpoint,
        region_name="us-east-1",
        location="backups",
        transfer_config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20),
    )
DjangoStorageBackend(storage).write(key, Blocking(int(size)))
print("stored", flush=True)
"""


@contextlib.contextmanager
def killed_write(
    kind: str, where: str, key: str, size: int, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a child writing *key* until its source blocks, let the caller
    look at it (or :func:`resume` it), then kill it with SIGKILL if it is
    still running."""
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITE, kind, where, key, str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **(env or {})},
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert child.stdout is not None
        assert child.stderr is not None
        assert child.stdout.readline() == b"blocked\n", child.stderr.read()
        yield child
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()  # type: ignore[union-attr]


def resume(child: subprocess.Popen[bytes]) -> None:
    """Let the source of a :func:`killed_write` child end, and wait until
    its write is done."""
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None
    child.stdin.write(b"go\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"stored\n", child.stderr.read()
    assert child.wait() == 0


def leave(path: Path, *, age: float = 2 * DAY, data: bytes = b"left by a crash") -> Path:
    """Create the file *path* (and its directories), last written *age* seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def names(leftovers: list[Leftover]) -> list[str]:
    return [leftover.name for leftover in leftovers]


def test_cleanup_on_a_filesystem_storage_removes_the_file_of_a_killed_write(
    tmp_path: Path,
) -> None:
    """The leftover is real: a child process writes through the backend from
    a source that blocks, and is killed with SIGKILL."""
    media = tmp_path / "media"
    backend = DjangoStorageBackend(FileSystemStorage(location=media))
    backend.write("acme/db/kept.dump", io.BytesIO(b"kept"))
    with killed_write("filesystem", str(media), "acme/db/big.dump", 3 << 20) as child:
        pass
    assert child.returncode == -signal.SIGKILL
    [name] = [path.name for path in (media / "acme" / "db").iterdir() if "\x7f" in path.name]
    leftover = media / "acme" / "db" / name
    assert backend.cleanup() == []  # younger than a day: maybe a slow write
    when = time.time_ns() - (DAY + 60) * 10**9
    os.utime(leftover, ns=(when, when))
    size = leftover.stat().st_size
    assert size > 0
    modified = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=when // 1000)
    assert backend.cleanup("acme/") == [
        Leftover(f"acme/db/{name}", "temporary file", modified, size)
    ]
    assert not leftover.exists()
    assert backend.list("") == ["acme/db/kept.dump"]
    assert read_all(backend, "acme/db/kept.dump") == b"kept"


def test_cleanup_on_a_filesystem_storage_keeps_the_file_a_writer_holds_open_however_old(
    tmp_path: Path,
) -> None:
    """A child process writes through the backend from a source that
    blocks, so that its temporary file is open and idle; aged by two days,
    the file is kept and not reported, and the write then stores its own
    bytes.  A second writer, killed with SIGKILL, leaves a file that cleanup
    removes."""
    media = tmp_path / "media"
    backend = DjangoStorageBackend(FileSystemStorage(location=media))
    when = time.time() - 2 * DAY  # as if its source had stalled for two days
    with killed_write("filesystem", str(media), "acme/db/big.dump", 3 << 20) as child:
        [name] = [path.name for path in (media / "acme" / "db").iterdir() if "\x7f" in path.name]
        os.utime(media / "acme" / "db" / name, (when, when))
        assert backend.cleanup(dry_run=True) == []
        assert backend.cleanup() == []
        assert backend.cleanup(older_than=0) == []
        assert (media / "acme" / "db" / name).exists()
        resume(child)
    assert backend.list("") == ["acme/db/big.dump"]
    assert read_all(backend, "acme/db/big.dump") == b"x" * (3 << 20)
    assert [path.name for path in (media / "acme" / "db").iterdir()] == ["big.dump"]

    with killed_write("filesystem", str(media), "acme/db/big.dump", 1 << 20) as child:
        pass
    assert child.returncode == -signal.SIGKILL
    [name] = [path.name for path in (media / "acme" / "db").iterdir() if "\x7f" in path.name]
    os.utime(media / "acme" / "db" / name, (when, when))
    assert names(backend.cleanup()) == [f"acme/db/{name}"]
    assert [path.name for path in (media / "acme" / "db").iterdir()] == ["big.dump"]
    assert read_all(backend, "acme/db/big.dump") == b"x" * (3 << 20)


def test_a_filesystem_write_holds_its_file_open_until_it_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source that went quiet for longer than the limit and then ended
    adds nothing to the file, which looks as old as its last byte; a cleanup
    running right before the rename keeps it only if it is still open.  The
    cleanup runs at the last moment: in the rename itself."""
    media = tmp_path / "media"
    backend = DjangoStorageBackend(FileSystemStorage(location=media))
    replace = os.replace
    removed: list[object] = []

    def cleanup_then_replace(src: str, dst: str) -> None:
        when = time.time() - 2 * DAY
        os.utime(src, (when, when))
        removed.extend(backend.cleanup(older_than=DAY))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", cleanup_then_replace)
    backend.write("db/latest.dump", io.BytesIO(b"dump"))
    monkeypatch.undo()
    assert removed == []
    assert read_all(backend, "db/latest.dump") == b"dump"


def test_a_temporary_file_opened_while_cleanup_removes_it_never_kills_the_cleanup(
    tmp_path: Path,
) -> None:
    """As for LocalFileSystemBackend, whose cleanup this storage's runs."""
    leave(tmp_path / "db" / LEFTOVER)
    child = opened_during_cleanup(tmp_path, f"db/{LEFTOVER}", "django")
    assert child.returncode == 0, child.stderr.decode(errors="replace")
    assert child.stdout == f"[{f'db/{LEFTOVER}'!r}] 0\n".encode()
    assert list(tmp_path.iterdir()) == []


class KeepsItsOwnSave(FileSystemStorage):
    def _save(self, name: str, content: Any) -> str:
        return str(super()._save(name, content))


@pytest.mark.parametrize("storage_class", [FileSystemStorage, KeepsItsOwnSave])
def test_cleanup_on_a_filesystem_storage_follows_the_local_rules(
    tmp_path: Path, storage_class: type[FileSystemStorage]
) -> None:
    media = tmp_path / "media"
    backend = DjangoStorageBackend(storage_class(location=media))
    backend.write("acme/db.dump", io.BytesIO(b"dump"))
    backend.write("acme/.snapshots-write-0123456789abcdef", io.BytesIO(b"a key"))
    leave(media / "acme" / LEFTOVER)
    leave(media / "acme" / "new" / LEFTOVER)
    leave(media / "acmecorp" / LEFTOVER)
    young = leave(media / "acme" / "young" / LEFTOVER, age=60)
    (media / "link").symlink_to(tmp_path / "outside")
    outside = leave(tmp_path / "outside" / LEFTOVER)
    expected = [f"acme/{LEFTOVER}", f"acme/new/{LEFTOVER}"]
    assert names(backend.cleanup("acme/", dry_run=True)) == expected
    assert names(backend.cleanup("acme/", older_than=timedelta(hours=1))) == expected
    assert not (media / "acme" / "new").exists()  # emptied, so removed
    assert young.exists()
    assert (media / "acmecorp" / LEFTOVER).exists()
    assert outside.exists()
    assert backend.list("") == ["acme/.snapshots-write-0123456789abcdef", "acme/db.dump"]
    assert names(backend.cleanup(older_than=0)) == [
        f"acme/young/{LEFTOVER}",
        f"acmecorp/{LEFTOVER}",
    ]
    assert outside.exists()


def test_cleanup_through_a_storages_alias_cleans_the_storage_it_names(tmp_path: Path) -> None:
    config = {
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
        "backups": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "backups")},
        },
    }
    leave(tmp_path / "backups" / "db" / LEFTOVER)
    with override_settings(STORAGES=config):
        assert names(DjangoStorageBackend("backups").cleanup()) == [f"db/{LEFTOVER}"]
        assert DjangoStorageBackend("default").cleanup(older_than=0) == []


def test_cleanup_on_an_in_memory_storage_finds_nothing_and_keeps_every_object() -> None:
    backend = DjangoStorageBackend(InMemoryStorage())
    backend.write("a/b", io.BytesIO(b"b"))
    backend.write("a/.snapshots-write-0123456789abcdef", io.BytesIO(b"a key"))
    assert backend.cleanup(older_than=0) == []
    assert backend.cleanup("a/", older_than=0, dry_run=True) == []
    assert backend.list("") == ["a/.snapshots-write-0123456789abcdef", "a/b"]


class Untouchable(Storage):
    """A storage that fails any call that would reach it."""

    def _open(self, name: str, mode: str = "rb") -> Any:
        raise AssertionError("the storage was used")

    def _save(self, name: str, content: Any) -> str:
        raise AssertionError("the storage was used")

    def delete(self, name: str) -> None:
        raise AssertionError("the storage was used")

    def exists(self, name: str) -> bool:
        raise AssertionError("the storage was used")

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        raise AssertionError("the storage was used")


def test_cleanup_on_any_other_storage_is_refused_before_any_io() -> None:
    with pytest.raises(
        SnapshotStorageCapabilityError,
        match="django-snapshots does not know what a Untouchable leaves after a crash",
    ):
        DjangoStorageBackend(Untouchable()).cleanup(older_than=0, dry_run=True)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"prefix": "../"}, SnapshotStoragePathError, "segment '..'"),
        ({"prefix": b"db/"}, SnapshotStoragePathError, "must be a str"),
        ({"older_than": -1}, ValueError, "must not be negative"),
        ({"older_than": "1 day"}, ValueError, "not a duration"),
        ({"older_than": True}, TypeError, "not a bool"),
        ({"dry_run": "no"}, TypeError, "dry_run must be a bool, not str"),
        ({"dry_run": None}, TypeError, "dry_run must be a bool, not NoneType"),
    ],
)
def test_cleanup_refuses_bad_arguments_before_looking_up_the_storage(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    # The alias is not defined: looking it up would raise InvalidDjangoStorageError.
    backend = DjangoStorageBackend("not-defined")
    with pytest.raises(error, match=message):
        backend.cleanup(**arguments)
    with pytest.raises(InvalidDjangoStorageError):
        backend.cleanup()


def start_upload(bucket: S3Bucket, key: str, *parts: bytes) -> str:
    """Start a multipart upload of *key* with *parts*, never completed; return its id."""
    client = bucket.server.client()
    upload = client.create_multipart_upload(Bucket=bucket.name, Key=key)["UploadId"]
    for number, part in enumerate(parts, start=1):
        client.upload_part(
            Bucket=bucket.name, Key=key, UploadId=upload, PartNumber=number, Body=part
        )
    return str(upload)


def uploads(bucket: S3Bucket) -> list[str]:
    listing = bucket.server.client().list_multipart_uploads(Bucket=bucket.name)
    return sorted(upload["Key"] for upload in listing.get("Uploads", ()))


def test_cleanup_on_s3_aborts_the_upload_of_a_killed_write(s3_bucket: S3Bucket) -> None:
    """The leftover is real: a child process writes a big object through the
    backend over S3Storage from a source that blocks once S3Storage has
    started a multipart upload, and is killed with SIGKILL."""
    server = s3_bucket.server
    client = server.client()
    backend = DjangoStorageBackend(s3_storage(s3_bucket, location="backups"))
    backend.write("acme/kept.dump", io.BytesIO(b"kept"))
    credentials = {
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
    }
    where = f"{server.endpoint_url} {s3_bucket.name}"
    with killed_write("s3", where, "acme/big.dump", 6 << 20, env=credentials) as child:
        # The upload and its first 5 MiB part are on their way; wait until S3 has them.
        parts: list[dict[str, Any]] = []
        while not parts:
            assert child.poll() is None, child.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.05)
            for upload in client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", ()):
                parts = client.list_parts(
                    Bucket=s3_bucket.name, Key=upload["Key"], UploadId=upload["UploadId"]
                ).get("Parts", [])
    assert child.returncode == -signal.SIGKILL
    assert uploads(s3_bucket) == ["backups/acme/big.dump"]
    assert backend.cleanup() == []  # younger than a day: maybe a slow upload
    [removed] = backend.cleanup("acme/", older_than=0)
    assert removed.name == "acme/big.dump"
    assert removed.kind == "multipart upload"
    assert removed.size == 5 << 20
    assert removed.modified == parts[0]["LastModified"]
    assert uploads(s3_bucket) == []
    assert backend.list("") == ["acme/kept.dump"]
    assert read_all(backend, "acme/kept.dump") == b"kept"


def test_cleanup_on_s3_is_confined_to_the_location_and_the_prefix(s3_bucket: S3Bucket) -> None:
    for key in [
        "backups/acme/db.dump",
        "backups/acme/deep/x.dump",
        "backups/acmecorp/db.dump",
        "elsewhere/acme/db.dump",
        "backups-old/acme/db.dump",
        "backups/acme/not\\a key",
    ]:
        start_upload(s3_bucket, key, b"part")
    backend = DjangoStorageBackend(s3_storage(s3_bucket, location="backups"))
    expected = ["acme/db.dump", "acme/deep/x.dump"]
    assert names(backend.cleanup("acme/", older_than=0, dry_run=True)) == expected
    assert len(uploads(s3_bucket)) == 6
    assert names(backend.cleanup("acme/", older_than=0)) == expected
    assert uploads(s3_bucket) == [
        "backups-old/acme/db.dump",
        "backups/acme/not\\a key",
        "backups/acmecorp/db.dump",
        "elsewhere/acme/db.dump",
    ]
    assert names(backend.cleanup("acme", older_than=0)) == ["acmecorp/db.dump"]


def test_cleanup_on_s3_keeps_uploads_written_to_recently_and_every_object(
    s3_bucket: S3Bucket,
) -> None:
    backend = DjangoStorageBackend(s3_storage(s3_bucket, location="backups"))
    backend.write("acme/db.dump", io.BytesIO(b"whole"))
    start_upload(s3_bucket, "backups/acme/db.dump", b"a new version, never finished")
    assert backend.cleanup() == []
    assert backend.cleanup(older_than=timedelta(minutes=10)) == []
    assert uploads(s3_bucket) == ["backups/acme/db.dump"]
    [removed] = backend.cleanup(older_than=0)
    assert removed.name == "acme/db.dump"
    assert uploads(s3_bucket) == []
    assert read_all(backend, "acme/db.dump") == b"whole"


def test_cleanup_on_s3_dates_an_upload_by_its_newest_part_and_adds_all_their_sizes(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_snapshots.storage import django_storage

    monkeypatch.setattr(django_storage, "_S3_PAGE_SIZE", 1)  # one part per listing page
    client = s3_bucket.server.client()
    upload = start_upload(s3_bucket, "db.dump", b"1")
    # S3 dates parts to the second: the next parts must come a second later.
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.05)
    for number, part in [(2, b"22"), (3, b"333")]:
        client.upload_part(
            Bucket=s3_bucket.name, Key="db.dump", UploadId=upload, PartNumber=number, Body=part
        )
    listed = client.list_parts(Bucket=s3_bucket.name, Key="db.dump", UploadId=upload)["Parts"]
    assert listed[0]["LastModified"] < listed[-1]["LastModified"]
    backend = DjangoStorageBackend(s3_storage(s3_bucket))
    assert backend.cleanup(older_than=0, dry_run=True) == [
        Leftover("db.dump", "multipart upload", listed[-1]["LastModified"], 6)
    ]


def test_cleanup_on_s3_reports_failures_without_credentials(s3_bucket: S3Bucket) -> None:
    server = s3_bucket.server
    backend = DjangoStorageBackend(s3_storage(s3_bucket, bucket_name="no-such-bucket"))
    with pytest.raises(SnapshotStorageError, match="NoSuchBucket") as raised:
        backend.cleanup()
    assert raised.value.transient is False
    assert server.secret_access_key not in str(raised.value)
    assert server.access_key_id not in str(raised.value)


def test_a_read_gives_a_long_line_in_few_reads_of_the_storage_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django_snapshots.storage.django_storage import _ObjectReader

    backend = DjangoStorageBackend(InMemoryStorage())
    line = b"x" * 5000 + b"\n"
    backend.write("k", io.BytesIO(line + b"rest"))
    calls = []
    real_readinto = _ObjectReader.readinto

    def counting_readinto(self: _ObjectReader, buffer: Any) -> int:
        calls.append(len(buffer))
        return real_readinto(self, buffer)

    monkeypatch.setattr(_ObjectReader, "readinto", counting_readinto)
    with backend.read("k") as stream:
        assert stream.readline() == line
        assert stream.read() == b"rest"
    # One read a byte at a time would be 5001 reads of the storage's file.
    assert len(calls) < 10, len(calls)

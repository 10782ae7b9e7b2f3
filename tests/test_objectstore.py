"""ObjectStoreBackend on obstore: the storage contract on S3 (a real S3
server on loopback), a local directory and memory, bare and wrapped; keys
that stay below the prefix; uploads that are never half visible; errors and
timeouts; credentials that never leak."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import ERROR
from django.test import override_settings
from structlog.testing import capture_logs

from django_snapshots import AdvancedSnapshotStorage, SnapshotStorageError, SnapshotStoragePathError
from django_snapshots.checks import check_storage_round_trip, check_storage_setting
from django_snapshots.storage import Checksum, Logging, Prefix, Retry
from django_snapshots.storage.keys import MAX_KEY_BYTES
from django_snapshots.storage.objectstore import ObjectStoreBackend
from django_snapshots.testing import StorageConformance
from tests.conftest import S3Bucket, S3Server
from tests.test_conf import fresh_storage_cache

MiB = 1024 * 1024
SECRET = "s3cr3t-value-that-must-never-leak"


def s3_config(server: S3Server) -> dict[str, str]:
    return {
        "endpoint": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
    }


def s3_backend(bucket: S3Bucket, base: str = "backups", **options: object) -> ObjectStoreBackend:
    url = f"s3://{bucket.name}/{base}" if base else f"s3://{bucket.name}"
    return ObjectStoreBackend(
        url, config=s3_config(bucket.server), client_options={"allow_http": True}, **options
    )


def local_backend(root: Path) -> ObjectStoreBackend:
    root.mkdir(parents=True, exist_ok=True)
    return ObjectStoreBackend(root.as_uri())


def wrapped(storage: ObjectStoreBackend) -> AdvancedSnapshotStorage:
    retry = Retry(Checksum(Prefix(storage, "tenant")), wait_initial=0, wait_max=0, wait_jitter=0)
    return Logging(retry)  # type: ignore[return-value]


class TestS3Conformance(StorageConformance):
    max_key_bytes = MAX_KEY_BYTES - len(b"backups/")

    @pytest.fixture
    def storage(self, s3_bucket: S3Bucket) -> ObjectStoreBackend:
        return s3_backend(s3_bucket)


class TestLocalConformance(StorageConformance):
    max_segment_bytes = 247

    @pytest.fixture
    def storage(self, tmp_path: Path) -> ObjectStoreBackend:
        return local_backend(tmp_path / "store")


class TestMemoryConformance(StorageConformance):
    @pytest.fixture
    def storage(self) -> ObjectStoreBackend:
        return ObjectStoreBackend("memory://")


class StackConformance(StorageConformance):
    """The kit through ``Logging(Retry(Checksum(Prefix(...))))``: the tenant
    directory and the digest sidecar's suffix take room from every key."""

    max_key_bytes = MAX_KEY_BYTES - len(b"tenant/") - len(b".sha256")

    def stack_over(self, storage: Any) -> Any:
        retry = Retry(
            Checksum(Prefix(storage, "tenant")), wait_initial=0, wait_max=0, wait_jitter=0
        )
        return Logging(retry)


class TestWrappedS3Conformance(StackConformance):
    @pytest.fixture
    def storage(self, s3_bucket: S3Bucket) -> AdvancedSnapshotStorage:
        return wrapped(s3_backend(s3_bucket, base=""))


class TestWrappedLocalConformance(StackConformance):
    max_segment_bytes = 247 - len(b".sha256")

    @pytest.fixture
    def storage(self, tmp_path: Path) -> AdvancedSnapshotStorage:
        return wrapped(local_backend(tmp_path / "store"))


class TestWrappedMemoryConformance(StackConformance):
    @pytest.fixture
    def storage(self) -> AdvancedSnapshotStorage:
        return wrapped(ObjectStoreBackend("memory://"))


@pytest.fixture
def s3(s3_bucket: S3Bucket) -> ObjectStoreBackend:
    return s3_backend(s3_bucket)


def stored_on_s3(bucket: S3Bucket) -> list[str]:
    listing = bucket.server.client().list_objects_v2(Bucket=bucket.name)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def incomplete_uploads(bucket: S3Bucket) -> list[str]:
    uploads = bucket.server.client().list_multipart_uploads(Bucket=bucket.name)
    return [upload["Key"] for upload in uploads.get("Uploads", [])]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------
# URLs, prefixes and keys


def test_keys_are_objects_below_the_prefix_of_the_url(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket, base="backups/site")
    storage.write("db/x.dump", io.BytesIO(b"dump"))
    assert stored_on_s3(s3_bucket) == ["backups/site/db/x.dump"]
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="backups/sitex", Body=b"x")
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="other", Body=b"x")
    assert storage.list("") == ["db/x.dump"]


def test_keys_are_files_below_the_directory_of_a_file_url(tmp_path: Path) -> None:
    storage = local_backend(tmp_path / "store")
    storage.write("db/x.dump", io.BytesIO(b"dump"))
    assert (tmp_path / "store" / "db" / "x.dump").read_bytes() == b"dump"
    assert not any(p.name.startswith("x.dump#") for p in (tmp_path / "store" / "db").iterdir())


def test_the_key_room_is_what_the_prefix_leaves_and_is_checked_before_any_io(
    s3_bucket: S3Bucket,
) -> None:
    storage = s3_backend(s3_bucket, base="p" * 100)
    assert storage.max_key_bytes == 1024 - 101
    fits = "k/" + "x" * (storage.max_key_bytes - 2)
    storage.write(fits, io.BytesIO(b"fits"))
    chunks_taken = []

    def chunks() -> Iterator[bytes]:
        chunks_taken.append(1)
        yield b"never"

    with pytest.raises(SnapshotStoragePathError, match="leaves below its prefix"):
        storage.stream_write(fits + "y", chunks())
    assert chunks_taken == []
    assert storage.list("") == [fits]


@pytest.mark.parametrize("name", ["x#1", "x#0042", "colon:", "pipe|", "d/e#7"])
def test_names_the_local_store_would_rewrite_are_refused_before_any_io(
    tmp_path: Path, name: str
) -> None:
    storage = local_backend(tmp_path / "store")
    with pytest.raises(SnapshotStoragePathError, match="local store cannot hold"):
        storage.write(name, io.BytesIO(b"x"))
    assert list((tmp_path / "store").iterdir()) == []
    storage.write("x#y/z#1a", io.BytesIO(b"fine"))  # only a trailing '#<digits>' name is
    assert storage.list("") == ["x#y/z#1a"]


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../b", "/abs", "a\\b", "%2e%2e/x", "a%2Fb", "~root", "a?x=1", "a#frag"],
)
def test_hostile_keys_are_refused_or_stay_below_the_prefix(s3_bucket: S3Bucket, key: str) -> None:
    storage = s3_backend(s3_bucket, base="tenant")
    try:
        storage.write(key, io.BytesIO(b"data"))
    except SnapshotStoragePathError:
        assert stored_on_s3(s3_bucket) == []
        return
    assert stored_on_s3(s3_bucket) == ["tenant/" + key]
    assert storage.list("") == [key]
    with storage.read(key) as file:
        assert file.read() == b"data"


@pytest.mark.parametrize(
    "url",
    ["ftp://host/x", "http://host/x", "s3://", "s3://user:pw@bucket/x", "s3://bucket/x?sig=1",
     "memory://somewhere", "file://host/x", "s3://bucket/a/../b", "relative/path"],
)  # fmt: skip
def test_urls_are_checked_without_any_io(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL|url|scheme|file|invalid key") as caught:
        ObjectStoreBackend(url)
    assert "pw" not in str(caught.value)
    assert "sig=1" not in str(caught.value)


def test_unknown_option_names_are_refused_without_showing_values() -> None:
    with pytest.raises(ValueError, match="secret_acces_key") as caught:
        ObjectStoreBackend("s3://bucket/x", config={"secret_acces_key": SECRET})
    assert SECRET not in str(caught.value)


def test_a_missing_bucket_is_a_configuration_error_not_an_empty_store(
    s3_server: S3Server,
) -> None:
    storage = ObjectStoreBackend(
        "s3://no-such-bucket-here/x",
        config=s3_config(s3_server),
        client_options={"allow_http": True},
    )
    for operation in (
        lambda: storage.exists("k"),
        lambda: storage.list(""),
        lambda: storage.read("k"),
        lambda: storage.write("k", io.BytesIO(b"x")),
        lambda: storage.delete("k"),
    ):
        with pytest.raises(
            SnapshotStorageError, match=r"bucket 'no-such-bucket-here'.*does not exist"
        ) as caught:
            operation()
        assert not caught.value.transient


def test_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    storage = ObjectStoreBackend((tmp_path / "missing").as_uri())  # no I/O yet
    with pytest.raises(SnapshotStorageError, match="does not exist"):
        storage.list("")


def test_a_store_object_can_be_given(s3_bucket: S3Bucket) -> None:
    from obstore.store import S3Store

    store = S3Store(
        s3_bucket.name,
        prefix="given",
        client_options={"allow_http": True},
        config=s3_config(s3_bucket.server),
    )
    storage = ObjectStoreBackend(store)
    storage.write("k", io.BytesIO(b"v"))
    assert stored_on_s3(s3_bucket) == ["given/k"]
    assert storage.max_key_bytes == 1024 - len("given/")
    assert s3_bucket.server.secret_access_key not in repr(storage)


# --------------------------------------------------------------------------
# Uploads are whole or absent


def failing_after(data: bytes, error: BaseException) -> Iterator[bytes]:
    for start in range(0, len(data), MiB):
        yield data[start : start + MiB]
    raise error


@pytest.mark.parametrize("size", [3 * MiB, 13 * MiB])
def test_a_failing_source_leaves_the_old_object_and_no_incomplete_upload(
    s3_bucket: S3Bucket, size: int
) -> None:
    storage = s3_backend(s3_bucket, chunk_size=5 * MiB)
    storage.write("k", io.BytesIO(b"old"))
    with pytest.raises(RuntimeError, match="source broke"):
        storage.stream_write("k", failing_after(os.urandom(size), RuntimeError("source broke")))
    with storage.read("k") as file:
        assert file.read() == b"old"
    assert stored_on_s3(s3_bucket) == ["backups/k"]
    assert incomplete_uploads(s3_bucket) == []


def test_large_objects_are_multipart_uploads_and_small_ones_a_single_put(
    s3_bucket: S3Bucket,
) -> None:
    storage = s3_backend(s3_bucket, chunk_size=5 * MiB)
    big, small = os.urandom(12 * MiB + 5), b"small"
    storage.write("big", io.BytesIO(big))
    storage.write("small", io.BytesIO(small))
    client = s3_bucket.server.client()
    assert client.head_object(Bucket=s3_bucket.name, Key="backups/big")["ETag"].endswith('-3"')
    assert "-" not in client.head_object(Bucket=s3_bucket.name, Key="backups/small")["ETag"]
    assert b"".join(storage.stream_read("big")) == big


WRITER = """
import os, sys, time
from django_snapshots.storage.objectstore import ObjectStoreBackend
storage = ObjectStoreBackend(sys.argv[1], config={
    "endpoint": sys.argv[2], "access_key_id": "k", "secret_access_key": "s", "region": "us-east-1"},
    client_options={"allow_http": True}, chunk_size=5 * 1024 * 1024)
def chunks():
    for _ in range(12):
        yield os.urandom(1024 * 1024)
    print("sent", flush=True)
    time.sleep(600)
    yield b"never"
storage.stream_write("killed", chunks())
"""


def test_a_writer_killed_mid_upload_leaves_no_visible_object(s3_bucket: S3Bucket) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            f"s3://{s3_bucket.name}/backups",
            s3_bucket.server.endpoint_url,
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"sent\n"
        time.sleep(0.5)  # the first parts are on the server
        assert incomplete_uploads(s3_bucket) == ["backups/killed"]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert stored_on_s3(s3_bucket) == []
    assert s3_backend(s3_bucket).list("") == []


# --------------------------------------------------------------------------
# Listings past what other tools store


def put_raw(bucket: S3Bucket, key: str, body: bytes = b"") -> None:
    bucket.server.client().put_object(Bucket=bucket.name, Key=key, Body=body)


@pytest.fixture
def folder_markers(s3_bucket: S3Bucket) -> S3Bucket:
    """Objects of a bucket that the S3 console's "Create folder" and other
    tools also wrote to: zero-byte "dir/" markers, one with objects below
    it, one above an object of the same name, next to a real empty object."""
    put_raw(s3_bucket, "backups/src/archive/")
    put_raw(s3_bucket, "backups/src/db/")
    put_raw(s3_bucket, "backups/src/db/good.dump", b"dump")
    put_raw(s3_bucket, "backups/src/both", b"data")
    put_raw(s3_bucket, "backups/src/both/")
    put_raw(s3_bucket, "backups/src/empty")
    return s3_bucket


def test_folder_markers_are_never_listed_as_keys(folder_markers: S3Bucket) -> None:
    storage = s3_backend(folder_markers)
    keys = ["src/both", "src/db/good.dump", "src/empty"]
    assert storage.list("src/") == keys
    assert storage.recursive_list("src/") == keys
    assert storage.list("") == keys
    assert storage.list("src/a") == []
    assert not storage.exists("src/archive")
    with pytest.raises(FileNotFoundError):
        storage.read("src/archive")
    assert storage.exists("src/empty")
    with storage.read("src/empty") as file:
        assert file.read() == b""


def test_sync_mirrors_past_folder_markers_and_then_copies_nothing(
    folder_markers: S3Bucket,
) -> None:
    storage = s3_backend(folder_markers)
    storage.sync("src/", "dst/")
    assert storage.list("dst/") == ["dst/both", "dst/db/good.dump", "dst/empty"]
    with storage.read("dst/both") as file:
        assert file.read() == b"data"
    client = folder_markers.server.client()

    def modified() -> list[object]:
        return [
            client.head_object(Bucket=folder_markers.name, Key="backups/" + key)["LastModified"]
            for key in storage.list("dst/")
        ]

    first = modified()
    time.sleep(1.1)  # S3 times have one-second resolution
    storage.sync("src/", "dst/")
    assert modified() == first


def test_sync_reports_a_listed_object_it_cannot_read_as_permanent(s3_bucket: S3Bucket) -> None:
    # A "folder marker" holding bytes is listed under the name without its
    # slash, where no object can be read: no later run could copy it.
    put_raw(s3_bucket, "backups/src/good", b"good")
    put_raw(s3_bucket, "backups/src/odd/", b"bytes")
    storage = s3_backend(s3_bucket)
    with pytest.raises(SnapshotStorageError, match=r"'src/odd' is listed but") as caught:
        storage.sync("src/", "dst/")
    assert not caught.value.transient


def test_sync_reports_an_object_deleted_while_being_copied_as_transient(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = s3_backend(s3_bucket)
    storage.write("src/a", io.BytesIO(b"a"))
    storage.write("src/b", io.BytesIO(b"b"))
    copy = storage._copy

    def copy_after_a_deletion(src: str, dst: str, size: int) -> None:
        storage.delete(src)  # another process prunes the source meanwhile
        copy(src, dst, size)

    monkeypatch.setattr(storage, "_copy", copy_after_a_deletion)
    with pytest.raises(SnapshotStorageError, match=r"'src/a' was deleted while") as caught:
        storage.sync("src/", "dst/")
    assert caught.value.transient
    monkeypatch.undo()
    storage.sync("src/", "dst/")
    assert storage.list("dst/") == ["dst/b"]


ODD_NAMES = ["src//double", "src/a/./b", "src/a/../b", "src/tab\tkey", "src/dir\x01/x"]


@pytest.mark.parametrize("odd", ODD_NAMES)
def test_an_object_obstore_cannot_list_is_named_in_a_permanent_error(
    s3_bucket: S3Bucket, odd: str
) -> None:
    storage = s3_backend(s3_bucket)
    storage.write("src/good", io.BytesIO(b"good"))
    storage.write("other/good", io.BytesIO(b"good"))
    put_raw(s3_bucket, "backups/" + odd, b"odd")
    for operation in (
        lambda: storage.list("src/"),
        lambda: storage.recursive_list(""),
        lambda: storage.sync("src/", "dst/"),
    ):
        with pytest.raises(SnapshotStorageError) as caught:
            operation()
        message = str(caught.value)
        assert repr("backups/" + odd) in message  # the full object name, escaped
        assert f"bucket {s3_bucket.name!r}" in message
        assert "remove it" in message
        assert not caught.value.transient
    assert storage.list("other/") == ["other/good"]  # other directories still list
    assert stored_on_s3(s3_bucket) == sorted(["backups/other/good", "backups/src/good",
                                              "backups/" + odd])  # fmt: skip


LOCAL_ODD_NAMES = ["bad\tname", "db/bad\nname", "ctl\x01dir/x.dump", "back\\slash"]


def test_files_whose_names_are_no_keys_are_skipped_in_a_local_directory(tmp_path: Path) -> None:
    storage = local_backend(tmp_path / "store")
    storage.write("db/good.dump", io.BytesIO(b"good"))
    storage.write("top", io.BytesIO(b"top"))
    for name in LOCAL_ODD_NAMES:
        path = tmp_path / "store" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"odd")
    storage.write("other/x", io.BytesIO(b"x"))
    os.symlink(tmp_path / "store" / "other", tmp_path / "store" / "db" / "linked")
    os.symlink(tmp_path / "nowhere", tmp_path / "store" / "dangling")
    expected = ["db/good.dump", "db/linked/x", "other/x", "top"]
    assert storage.list("") == expected
    assert storage.recursive_list("db/") == ["db/good.dump", "db/linked/x"]
    assert storage.list("t") == ["top"]
    storage.sync("db/", "mirror/")
    assert storage.list("mirror/") == ["mirror/good.dump", "mirror/linked/x"]


def test_a_local_sync_copies_nothing_again_once_an_odd_name_appears(tmp_path: Path) -> None:
    storage = local_backend(tmp_path / "store")
    storage.write("src/a", io.BytesIO(b"a"))
    storage.write("src/b", io.BytesIO(b"b"))
    storage.sync("src/", "dst/")
    mirror = tmp_path / "store" / "dst"

    def stamps() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in mirror.iterdir()}

    first = stamps()
    (tmp_path / "store" / "src" / "bad\tname").write_bytes(b"odd")
    time.sleep(0.01)
    storage.sync("src/", "dst/")
    assert stamps() == first
    assert storage.list("") == ["dst/a", "dst/b", "src/a", "src/b"]


# --------------------------------------------------------------------------
# sync


def test_sync_does_not_copy_a_mirrored_multipart_object_again(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket, chunk_size=5 * MiB)
    storage.write("src/big", io.BytesIO(os.urandom(11 * MiB)))
    storage.write("src/small", io.BytesIO(b"small"))
    storage.sync("src/", "dst/")
    client = s3_bucket.server.client()

    def modified(key: str) -> object:
        return client.head_object(Bucket=s3_bucket.name, Key="backups/" + key)["LastModified"]

    first = {key: modified(key) for key in ("dst/big", "dst/small")}
    # A copy of a multipart object gets an ETag of its own on S3.
    assert (
        client.head_object(Bucket=s3_bucket.name, Key="backups/dst/big")["ETag"]
        != (client.head_object(Bucket=s3_bucket.name, Key="backups/src/big")["ETag"])
    )
    time.sleep(1.1)  # S3 times have one-second resolution
    storage.sync("src/", "dst/")
    assert {key: modified(key) for key in first} == first
    assert storage.list("dst/") == ["dst/big", "dst/small"]


def test_sync_copies_a_changed_object_of_the_same_size_and_a_tampered_copy(
    s3_bucket: S3Bucket,
) -> None:
    storage = s3_backend(s3_bucket, chunk_size=5 * MiB)
    storage.write("src/big", io.BytesIO(b"a" * (6 * MiB)))
    storage.sync("src/", "dst/")
    storage.write("src/big", io.BytesIO(b"b" * (6 * MiB)))
    storage.sync("src/", "dst/")
    assert b"".join(storage.stream_read("dst/big")) == b"b" * (6 * MiB)
    storage.write("dst/big", io.BytesIO(b"c" * (6 * MiB)))  # someone changed the mirror
    storage.sync("src/", "dst/")
    assert b"".join(storage.stream_read("dst/big")) == b"b" * (6 * MiB)


def test_sync_copies_objects_too_large_for_one_server_side_copy_through_the_process(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_snapshots.storage import objectstore

    monkeypatch.setattr(objectstore, "_MAX_COPY_BYTES", MiB)
    storage = s3_backend(s3_bucket, chunk_size=5 * MiB)
    data = os.urandom(7 * MiB)
    storage.write("src/huge", io.BytesIO(data))
    storage.sync("src/", "dst/")
    storage.atomic_move("src/huge", "moved/huge")
    assert b"".join(storage.stream_read("dst/huge")) == data
    assert b"".join(storage.stream_read("moved/huge")) == data
    assert storage.list("") == ["dst/huge", "moved/huge"]


def test_sync_refuses_a_mirror_key_too_long_before_copying_anything(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket, base="")
    long_name = "x" * (MAX_KEY_BYTES - len("s/"))
    storage.write("s/" + long_name, io.BytesIO(b"x"))
    with pytest.raises(SnapshotStoragePathError):
        storage.sync("s/", "mirror/")
    assert storage.list("") == ["s/" + long_name]


# --------------------------------------------------------------------------
# Errors, retries and timeouts


def unreachable(port: int, **client_options: str) -> ObjectStoreBackend:
    config = {"endpoint": f"http://127.0.0.1:{port}", "access_key_id": "k",
              "secret_access_key": SECRET, "region": "us-east-1"}  # fmt: skip
    return ObjectStoreBackend(
        "s3://bucket/x", config=config, client_options={"allow_http": True, **client_options}
    )


def test_a_refused_connection_is_a_transient_error_within_seconds() -> None:
    storage = unreachable(closed_port())
    started = time.monotonic()
    with pytest.raises(SnapshotStorageError) as caught:
        storage.exists("k")
    assert time.monotonic() - started < 5
    assert caught.value.transient
    assert SECRET not in str(caught.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        server.close()


def test_a_server_that_never_answers_fails_after_the_read_timeout(silent_server: int) -> None:
    storage = unreachable(silent_server, read_timeout="1s")
    for operation in (lambda: storage.exists("k"), lambda: storage.write("k", io.BytesIO(b"x"))):
        started = time.monotonic()
        with pytest.raises(SnapshotStorageError) as caught:
            operation()
        assert time.monotonic() - started < 10
        assert caught.value.transient


def test_refused_credentials_are_a_permanent_error(s3_bucket: S3Bucket) -> None:
    # moto accepts any key, so the refusal is the server's 403 seen through a
    # store object that signs nothing and a bucket policy moto does not have:
    # use the mapping on obstore's own error type instead.
    from obstore.exceptions import PermissionDeniedError
    from obstore.store import MemoryStore

    storage = ObjectStoreBackend(MemoryStore())
    error = storage._mapped(PermissionDeniedError("403 Forbidden"), "read", "k")
    assert isinstance(error, SnapshotStorageError)
    assert not error.transient


@pytest.mark.parametrize(
    ("text", "transient"),
    [
        ("Server returned non-2xx status code: 503 Service Unavailable", True),
        ("Server returned non-2xx status code: 429 Too Many Requests", True),
        ("Server returned non-2xx status code: 500 Internal Server Error", True),
        ("<Code>SlowDown</Code>", True),
        ("HTTP error: error sending request", True),
        ("Server returned non-2xx status code: 403 Forbidden", False),
        ("Server returned non-2xx status code: 400 Bad Request", False),
    ],
)
def test_throttling_and_server_errors_are_transient_and_refusals_permanent(
    text: str, transient: bool
) -> None:
    from obstore.exceptions import GenericError

    storage = ObjectStoreBackend("memory://")
    error = storage._mapped(GenericError(text), "read", "k")
    assert isinstance(error, SnapshotStorageError)
    assert error.transient is transient


class CuttingProxy:
    """A loopback TCP proxy to *target* that cuts the first *cuts*
    connections once *after* bytes went through them (either way)."""

    def __init__(self, target: str, *, after: int, cuts: int) -> None:
        parsed = urllib.parse.urlsplit(target)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.after, self.cuts = after, cuts
        self.cut = 0
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            cut = self.cut < self.cuts
            self.cut += cut
            upstream = socket.create_connection(self.target)
            budget = [self.after if cut else -1]
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(
                    target=self._pump, args=(a, b, budget, client, upstream), daemon=True
                )
                thread.start()
                self.threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket, budget: list[int],
              *ends: socket.socket) -> None:  # fmt: skip
        try:
            while data := source.recv(65536):
                if budget[0] >= 0:
                    budget[0] -= len(data)
                    if budget[0] < 0:
                        break
                sink.sendall(data)
        except OSError:
            pass
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        for thread in self.threads:
            thread.join(5)


def test_connections_cut_mid_transfer_are_retried_and_deliver_every_byte_once(
    s3_bucket: S3Bucket,
) -> None:
    data = os.urandom(13 * MiB)
    proxy = CuttingProxy(s3_bucket.server.endpoint_url, after=3 * MiB, cuts=2)
    try:
        config = {**s3_config(s3_bucket.server), "endpoint": proxy.url}
        inner = ObjectStoreBackend(
            f"s3://{s3_bucket.name}/backups", config=config, client_options={"allow_http": True},
            retry_config={"max_retries": 0}, chunk_size=5 * MiB,
        )  # fmt: skip
        # Without retries a cut upload fails, and leaves nothing visible.
        with pytest.raises(SnapshotStorageError) as caught:
            inner.write("k", io.BytesIO(data))
        assert caught.value.transient
        assert stored_on_s3(s3_bucket) == []
        proxy.cut, proxy.cuts = 0, 2
        storage = Retry(inner, attempts=5, wait_initial=0, wait_max=0, wait_jitter=0)
        storage.write("k", io.BytesIO(data))
        assert stored_on_s3(s3_bucket) == ["backups/k"]
        # Each failed try aborted its upload, unless the proxy cut the abort
        # request too (pooled connections): then it is left for a lifecycle
        # rule, as the backend page says, and never for another key.
        assert set(incomplete_uploads(s3_bucket)) <= {"backups/k"}
        proxy.cut, proxy.cuts = 0, 1
        with storage.read("k") as file:
            assert file.read() == data
        proxy.cut, proxy.cuts = 0, 1
        assert b"".join(storage.stream_read("k")) == data
    finally:
        proxy.close()


# --------------------------------------------------------------------------
# Credentials never leak


KEY_B64 = base64.b64encode(SECRET.encode()).decode()
PEM = "-----BEGIN PRIVATE KEY-----\n" + KEY_B64 + "\n-----END PRIVATE KEY-----\n"
PROVIDERS = {
    "s3": ("s3://bucket/x", {"access_key_id": "AKIA" + SECRET, "secret_access_key": SECRET,
                             "session_token": "token-" + SECRET}, "endpoint"),
    "gcs-bad-key": ("gs://bucket/x", {"service_account_key": json.dumps({
        "type": "service_account", "private_key": PEM.replace(KEY_B64, SECRET).replace("\n", "\\n"),
        "client_email": "x@y.iam.gserviceaccount.com", "private_key_id": SECRET})}, "base_url"),
    "gcs": ("gs://bucket/x", {"service_account_key": json.dumps({
        "type": "service_account", "private_key": PEM,
        "client_email": "x@y.iam.gserviceaccount.com", "private_key_id": SECRET})}, "base_url"),
    "azure-key": ("az://container/x", {"account_name": "acct", "account_key": KEY_B64},
                  "endpoint"),
    "azure-bad-key": ("az://container/x", {"account_name": "acct", "account_key": SECRET},
                      "endpoint"),
    "azure-sas": ("az://container/x", {"account_name": "acct",
                                       "sas_key": "sv=2024&sig=" + SECRET}, "endpoint"),
    "azure-client": ("az://container/x", {"account_name": "acct", "client_id": "id",
                                          "tenant_id": "t", "client_secret": SECRET}, "endpoint"),
}  # fmt: skip


def leaks(text: str) -> bool:
    forms = [SECRET, KEY_B64, urllib.parse.quote(SECRET), str(list(SECRET.encode()))[1:-1],
             str(list(KEY_B64.encode()))[1:-1]]  # fmt: skip
    return any(form in text for form in forms)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_credentials_never_appear_in_repr_errors_or_logs(provider: str) -> None:
    url, secrets, endpoint = PROVIDERS[provider]
    config = {**secrets, endpoint: f"http://127.0.0.1:{closed_port()}"}
    seen: list[str] = []
    try:
        storage = ObjectStoreBackend(url, config=config, client_options={"allow_http": True})
    except ValueError as exc:  # a malformed secret is refused when built, quietly too
        seen.append(str(exc))
    else:
        seen += [repr(storage), str(storage)]
        assert "***" in repr(storage)
        stack = Logging(storage)
        with capture_logs() as logs:
            for operation in (
                lambda: stack.exists("k"),
                lambda: stack.write("k", io.BytesIO(b"x")),
                lambda: stack.list(""),
            ):
                with pytest.raises(SnapshotStorageError) as caught:
                    operation()
                seen += [str(caught.value), repr(caught.value), str(caught.value.__context__)]
        seen += [repr(entry) for entry in logs]
    assert seen
    assert not [text for text in seen if leaks(text)]


@pytest.mark.parametrize(
    ("url", "option"),
    [("s3://bucket/x", "endpoint"), ("s3://bucket/x", "AWS_ENDPOINT_URL"),
     ("gs://bucket/x", "base_url"), ("az://container/x", "endpoint")],
)  # fmt: skip
def test_credentials_in_a_url_option_are_refused_without_showing_them(
    url: str, option: str
) -> None:
    with pytest.raises(ValueError, match=f"config option '{option}' must not hold") as caught:
        ObjectStoreBackend(url, config={option: f"https://minio:{SECRET}@minio.example.com"})
    assert SECRET not in str(caught.value)
    assert "minio.example.com" not in str(caught.value)


def test_credentials_in_the_endpoint_of_a_given_store_never_appear_in_errors() -> None:
    from obstore.store import S3Store

    store = S3Store(
        "bucket",
        config={"endpoint": f"http://minio:{SECRET}@127.0.0.1:{closed_port()}",
                "access_key_id": "k", "secret_access_key": "s", "region": "us-east-1"},
        client_options={"allow_http": True},
        retry_config={"max_retries": 0},
    )  # fmt: skip
    storage = ObjectStoreBackend(store)
    with pytest.raises(SnapshotStorageError, match=r"127\.0\.0\.1") as caught:
        storage.exists("k")
    assert caught.value.transient
    assert not leaks(str(caught.value))
    assert not leaks(repr(storage))


# --------------------------------------------------------------------------
# Settings and system checks

BACKEND = "django_snapshots.storage.objectstore.ObjectStoreBackend"


@pytest.mark.usefixtures(fresh_storage_cache.__name__)
@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"url": "ftp://bucket/x"}, "unsupported URL scheme"),
        ({"url": "s3://bucket/x", "config": {"secret_acces_key": SECRET}}, "secret_acces_key"),
        ({"url": "s3://bucket/x", "chunk_size": 1024}, "chunk_size"),
        (
            {"url": "s3://bucket/x", "config": {"endpoint": f"https://u:{SECRET}@host"}},
            "'endpoint'",
        ),
        ({"uri": "s3://bucket/x"}, "OPTIONS"),
    ],
)
def test_the_system_check_reports_bad_urls_and_option_names_without_io(
    options: dict[str, Any], fragment: str
) -> None:
    with override_settings(SNAPSHOTS={"STORAGE": {"BACKEND": BACKEND, "OPTIONS": options}}):
        messages = check_storage_setting()
    errors = [m for m in messages if m.level == ERROR]
    assert len(errors) == 1
    assert fragment in errors[0].msg
    assert SECRET not in errors[0].msg


@pytest.mark.usefixtures(fresh_storage_cache.__name__)
def test_the_deploy_check_probes_an_object_store(s3_bucket: S3Bucket) -> None:
    options = {"url": f"s3://{s3_bucket.name}/backups", "config": s3_config(s3_bucket.server),
               "client_options": {"allow_http": True}}  # fmt: skip
    storage = {
        "BACKEND": BACKEND,
        "OPTIONS": options,
        "WRAPPERS": ["django_snapshots.storage.Checksum"],
    }
    with override_settings(SNAPSHOTS={"STORAGE": storage}):
        assert check_storage_setting() == []
        assert check_storage_round_trip() == []
    with override_settings(
        SNAPSHOTS={"STORAGE": {**storage, "OPTIONS": {**options, "url": "s3://missing-bucket/x"}}}
    ):
        messages = check_storage_round_trip()
    assert [m.id for m in messages] == ["snapshots.E101"]
    assert "does not exist" in messages[0].msg
    assert s3_bucket.server.secret_access_key not in messages[0].msg


# A local directory keeps no directory a key's delete emptied.


def test_a_local_delete_removes_the_directories_it_empties(tmp_path: Path) -> None:
    storage = local_backend(tmp_path / "store")
    storage.write("a/b/c", io.BytesIO(b"x"))
    storage.write("a/d", io.BytesIO(b"y"))
    storage.delete("a/b/c")
    assert sorted(os.listdir(tmp_path / "store" / "a")) == ["d"]
    storage.delete("a/d")
    assert os.listdir(tmp_path / "store") == []


@pytest.mark.parametrize("how", ["write", "atomic_move", "sync"])
def test_a_local_key_replaces_empty_directories_left_at_its_name(tmp_path: Path, how: str) -> None:
    storage = local_backend(tmp_path / "store")
    (tmp_path / "store" / "dst" / "k" / "x" / "y").mkdir(parents=True)
    storage.write("src/k", io.BytesIO(b"data"))
    if how == "write":
        storage.write("dst/k", io.BytesIO(b"data"))
    elif how == "atomic_move":
        storage.atomic_move("src/k", "dst/k")
    else:
        storage.sync("src/", "dst/")
    assert storage.read("dst/k").read() == b"data"


def test_a_local_directory_holding_a_file_is_never_removed_for_a_key(tmp_path: Path) -> None:
    storage = local_backend(tmp_path / "store")
    kept = tmp_path / "store" / "k" / "inner" / "file"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"not ours")
    with pytest.raises(SnapshotStorageError, match="Is a directory"):
        storage.write("k", io.BytesIO(b"data"))
    assert kept.read_bytes() == b"not ours"

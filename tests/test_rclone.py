"""RcloneBackend on the real rclone binary: the storage contract on a local
remote and on an S3 remote (a real S3 server on loopback), the wrapped stack,
keys that stay paths, atomic writes, credentials that never leak, and errors
that say what happened."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from django_snapshots import (
    AdvancedSnapshotStorage,
    SnapshotStorage,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import Checksum, Logging, Prefix, RcloneBackend, Retry
from django_snapshots.storage.keys import MAX_KEY_BYTES
from django_snapshots.testing import _UNUSUAL_KEYS, StorageConformance
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
# The contract, on both remotes, bare and wrapped


class TestRcloneLocalRemoteConformance(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> RcloneBackend:
        return local_backend(tmp_path / "store")


class TestRcloneS3RemoteConformance(StorageConformance):
    @pytest.fixture
    def storage(self, s3_bucket: S3Bucket) -> RcloneBackend:
        return s3_backend(s3_bucket)


class StackConformance(StorageConformance):
    """The kit through ``Logging(Retry(Checksum(Prefix(...))))``: the tenant
    directory and the digest sidecar's suffix take room from every key, so
    the kit's longest key must be refused before any I/O and a key that
    fills exactly the room left must round trip."""

    room = MAX_KEY_BYTES - len(b"tenant/") - len(b".sha256")

    def test_unusual_but_valid_keys_round_trip(self, storage: SnapshotStorage) -> None:
        fitting = [key for key in _UNUSUAL_KEYS if len(key.encode()) <= self.room]
        too_long = [key for key in _UNUSUAL_KEYS if len(key.encode()) > self.room]
        assert too_long, "the kit no longer has a key longer than the stack's room"
        longest = "/".join(["k" * 100] * 9) + "/" + "k" * (self.room - 909)
        keys = sorted([*fitting, longest])
        for key in keys:
            storage.write(key, io.BytesIO(key.encode()))
        assert storage.list("") == keys
        for key in keys:
            assert storage.exists(key)
            with storage.read(key) as file:
                assert file.read() == key.encode()
        for key in too_long:
            with pytest.raises(SnapshotStoragePathError):
                storage.write(key, io.BytesIO(b"x"))
        assert storage.list("") == keys


class TestWrappedRcloneLocalRemoteConformance(StackConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> AdvancedSnapshotStorage:
        return wrapped(local_backend(tmp_path / "store"))


class TestWrappedRcloneS3RemoteConformance(StackConformance):
    @pytest.fixture
    def storage(self, s3_bucket: S3Bucket) -> AdvancedSnapshotStorage:
        return wrapped(s3_backend(s3_bucket))

"""ObjectStoreBackend on obstore: the storage contract on S3 (a real S3
server on loopback), a local directory and memory, bare and wrapped; keys
that stay below the prefix; uploads that are never half visible; errors and
timeouts; credentials that never leak."""

from __future__ import annotations

from pathlib import Path

import pytest

from django_snapshots import AdvancedSnapshotStorage
from django_snapshots.storage import Checksum, Logging, Prefix, Retry
from django_snapshots.storage.keys import MAX_KEY_BYTES
from django_snapshots.storage.objectstore import ObjectStoreBackend
from django_snapshots.testing import StorageConformance
from tests.conftest import S3Bucket, S3Server


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

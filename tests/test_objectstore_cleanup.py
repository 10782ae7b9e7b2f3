"""ObjectStoreBackend.cleanup: the incomplete multipart uploads a killed
writer leaves on S3 (a real S3 server on loopback) and the staging files it
leaves in a local directory are found and removed once old enough; keys,
young writes, other prefixes and anything not obstore's are never touched."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from django_snapshots import SnapshotStorageCapabilityError, SnapshotStorageError
from django_snapshots.exceptions import SnapshotStoragePathError
from django_snapshots.storage.cleanup import Leftover
from django_snapshots.storage.objectstore import ObjectStoreBackend
from tests.conftest import S3Bucket, S3Server
from tests.test_objectstore import (
    PROVIDERS,
    SECRET,
    closed_port,
    incomplete_uploads,
    leaks,
    local_backend,
    s3_backend,
    s3_config,
    stored_on_s3,
)

MiB = 1024 * 1024
DAYS_AGO = time.time() - 2 * 86400

# Writes 17 MiB in 5 MiB parts to argv[1] (endpoint argv[2] for S3), then
# blocks with three parts stored and 2 MiB buffered, until killed.
WRITER = """
import os, sys, time
from django_snapshots.storage.objectstore import ObjectStoreBackend
options = {}
if len(sys.argv) > 3:
    options = {"config": {"endpoint": sys.argv[3], "access_key_id": "k",
                          "secret_access_key": "s", "region": "us-east-1"},
               "client_options": {"allow_http": True}}
storage = ObjectStoreBackend(sys.argv[1], chunk_size=5 * 1024 * 1024, **options)
def chunks():
    for _ in range(17):
        yield os.urandom(1024 * 1024)
    print("sent", flush=True)
    time.sleep(600)
    yield b"never"
storage.stream_write(sys.argv[2], chunks())
"""


def killed_writer(*args: str, until: Callable[[], bool]) -> None:
    """Run WRITER with *args*, wait until it has sent every chunk and
    *until* holds, then kill it with SIGKILL."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"sent\n"
        deadline = time.monotonic() + 60
        while not until():
            assert time.monotonic() < deadline, "the writer stored no parts within 60 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def age(path: Path, when: float = DAYS_AGO) -> Path:
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def touch(path: Path, data: bytes = b"partial") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(leftovers: list[Leftover]) -> list[str]:
    return [leftover.name for leftover in leftovers]


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir())


# --------------------------------------------------------------------------
# A local directory: obstore's staging files


def test_a_local_writer_killed_mid_write_leaves_a_staging_file_that_cleanup_removes_once_old(
    tmp_path: Path,
) -> None:
    """The leftover is real: a subprocess killed with SIGKILL in the middle
    of a multipart ``stream_write`` to a file:// store."""
    root = tmp_path / "store"
    storage = local_backend(root)
    storage.write("db/kept.dump", io.BytesIO(b"key"))
    staging = root / "db" / "killed.dump#1"
    killed_writer(
        root.as_uri(),
        "db/killed.dump",
        until=lambda: staging.exists() and staging.stat().st_size == 15 * MiB,
    )
    assert storage.list("") == ["db/kept.dump"]

    assert storage.cleanup() == []  # written to seconds ago: a write in progress
    assert staging.exists()

    age(staging)
    planned = storage.cleanup(dry_run=True)
    assert staging.exists()
    assert planned == [
        Leftover(
            "db/killed.dump#1",
            "temporary file",
            datetime.fromtimestamp(staging.stat().st_mtime_ns / 1e9, timezone.utc),
            15 * MiB,
        )
    ]
    assert storage.cleanup() == planned
    assert not staging.exists()
    assert files_under(root) == ["db/kept.dump"]
    storage.write("db/killed.dump", io.BytesIO(b"again"))
    assert storage.list("db/") == ["db/kept.dump", "db/killed.dump"]


class PausedWriter(threading.Thread):
    """A ``stream_write`` of *fill* bytes to *key* that sends 6 MiB (a
    multipart upload's first part, staged to disk), then waits for
    :meth:`resume` before it sends the rest."""

    def __init__(self, storage: ObjectStoreBackend, key: str, fill: bytes) -> None:
        super().__init__(daemon=True)
        self.storage, self.key, self.fill = storage, key, fill
        self.sent, self.go = threading.Event(), threading.Event()
        self.outcome = ""

    def data(self) -> bytes:
        return self.fill * (6 * MiB + 10)

    def chunks(self) -> Iterator[bytes]:
        yield self.fill * (6 * MiB)
        self.sent.set()
        self.go.wait(60)
        yield self.fill * 10

    def run(self) -> None:
        try:
            self.storage.stream_write(self.key, self.chunks())
            self.outcome = "stored"
        except SnapshotStorageError as exc:
            self.outcome = str(exc)

    def resume(self) -> str:
        self.go.set()
        self.join(60)
        return self.outcome


def test_a_writer_idle_past_the_limit_keeps_its_staging_file_and_stores_its_own_data(
    tmp_path: Path,
) -> None:
    """obstore stages a key at ``<key>#<n>``, the first free name, and
    renames by name.  Had cleanup removed the file of a writer idle for
    longer than the limit, a second writer of the key would stage at the
    same name, and the first would rename that writer's partial object over
    the key and report success.  A staging file that a process holds open
    is a write in progress, however old it looks."""
    root = tmp_path / "store"
    root.mkdir()
    storage = ObjectStoreBackend(root.as_uri(), chunk_size=5 * MiB)
    storage.write("db/x.dump", io.BytesIO(b"old"))
    first = PausedWriter(storage, "db/x.dump", b"1")
    second = PausedWriter(storage, "db/x.dump", b"2")
    staging = root / "db" / "x.dump#1"
    try:
        first.start()
        assert first.sent.wait(60)
        deadline = time.monotonic() + 60
        while not staging.exists() or staging.stat().st_size < 5 * MiB:
            assert time.monotonic() < deadline, "the writer staged no part within 60 s"
            time.sleep(0.05)
        age(staging)  # as if its source had stalled for two days

        assert storage.cleanup(older_than=3600, dry_run=True) == []
        assert storage.cleanup(older_than=3600) == []
        assert staging.exists()

        second.start()
        assert second.sent.wait(60)
        assert first.resume() == "stored"
        assert (root / "db" / "x.dump").read_bytes() == first.data()
        assert second.resume() == "stored"
        assert (root / "db" / "x.dump").read_bytes() == second.data()
    finally:
        first.go.set()
        second.go.set()
    assert files_under(root) == ["db/x.dump"]


# Cleans up a store holding one old staging file; at the moment cleanup is
# about to remove it, another process opens it.  The opener blocks until
# cleanup lets go of the file, and the kernel tells cleanup with a signal
# (SIGURG, blocked here so that the moment it arrives is known).
OPENED_DURING_CLEANUP = """
import os, signal, subprocess, sys
from django_snapshots.storage.objectstore import ObjectStoreBackend
root, name = sys.argv[1], sys.argv[2]
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGURG})
unlink, openers = os.unlink, []
def unlink_once_opened(path, *, dir_fd=None):
    reader = "import sys; open(sys.argv[1], 'rb').close()"
    openers.append(subprocess.Popen([sys.executable, "-c", reader, os.path.join(root, name)]))
    assert signal.sigtimedwait({signal.SIGURG}, 60) is not None, "the opener never tried"
    unlink(path, dir_fd=dir_fd)
os.unlink = unlink_once_opened
removed = ObjectStoreBackend("file://" + root).cleanup(older_than=3600)
print([leftover.name for leftover in removed], openers[0].wait(60), flush=True)
"""


def test_a_staging_file_opened_while_cleanup_removes_it_never_kills_the_cleanup(
    tmp_path: Path,
) -> None:
    """Cleanup holds a lease on the file it removes; whoever opens the file
    meanwhile makes the kernel signal the holder, with SIGIO unless told
    otherwise, whose default action ends the process (a web or task worker
    running cleanup)."""
    root = tmp_path / "store"
    age(touch(root / "db" / "x#1"))
    child = subprocess.run(
        [sys.executable, "-c", OPENED_DURING_CLEANUP, str(root), "db/x#1"],
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr.decode(errors="replace")
    assert child.stdout == b"['db/x#1'] 0\n"
    assert not (root / "db" / "x#1").exists()


def test_a_staging_file_younger_than_the_limit_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = local_backend(root)
    fresh = age(touch(root / "db" / "x#1"), time.time() - 3600)
    old = age(touch(root / "db" / "x#2"), time.time() - 3 * 3600)
    assert names(storage.cleanup(older_than=timedelta(hours=2))) == ["db/x#2"]
    assert fresh.exists()
    assert not old.exists()
    assert names(storage.cleanup(older_than="30m")) == ["db/x#1"]


@pytest.mark.parametrize(
    "key",
    ["plain", "a#b", "x#1y", "n#", "#1/x", "d#1/e", "deep/a/b/c#2z", "x#y/z#1a", "v1#2b"],
)
def test_keys_are_never_touched_even_when_their_names_look_like_staging_files(
    tmp_path: Path, key: str
) -> None:
    root = tmp_path / "store"
    storage = local_backend(root)
    storage.write(key, io.BytesIO(b"kept"))
    age(root / key)
    assert storage.cleanup(older_than=0) == []
    assert storage.cleanup(older_than=0, dry_run=True) == []
    with storage.read(key) as file:
        assert file.read() == b"kept"


def test_files_obstore_did_not_stage_and_links_are_never_touched(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = local_backend(root)
    outside = touch(tmp_path / "outside" / "secret#1", b"outside")
    age(outside)
    foreign = [
        touch(root / "x#1#2"),  # "x#1" is no key of this backend
        touch(root / "back\\slash#1"),  # nor is a name with a backslash
        touch(root / ("l" * 248 + "#1")),  # nor a segment longer than 247 bytes
        touch(root / "notes#"),  # no digits
        touch(root / "notes#1x"),
        touch(root / os.fsdecode(b"\xff#1")),  # a file name no key can spell
    ]
    (root / "dir#1").mkdir()
    (root / "link#1").symlink_to(outside)
    (root / "linked").symlink_to(outside.parent, target_is_directory=True)
    for path in [*foreign, root / "dir#1", root / "link#1"]:
        age(path)
    assert storage.cleanup(older_than=0) == []
    assert all(path.exists() for path in foreign)
    assert (root / "dir#1").is_dir()
    assert (root / "link#1").is_symlink()
    assert outside.read_bytes() == b"outside"


def test_a_root_reached_through_a_link_is_cleaned_where_obstore_writes(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (tmp_path / "store").symlink_to(real, target_is_directory=True)
    real.mkdir()
    storage = ObjectStoreBackend((tmp_path / "store").as_uri())
    age(touch(real / "db" / "x#1"))
    assert names(storage.cleanup(older_than=0)) == ["db/x#1"]
    assert files_under(real) == []


def test_the_staging_file_of_a_sync_record_is_a_leftover(tmp_path: Path) -> None:
    """The exact name obstore stages sync's record through (its own name
    is no key: a backslash), as a killed sync would leave it."""
    root = tmp_path / "store"
    storage = local_backend(root)
    record = age(touch(root / "mirror" / "\\snapshots-sync-state.json#1"))
    assert names(storage.cleanup(older_than=0)) == ["mirror/\\snapshots-sync-state.json#1"]
    assert not record.exists()


def test_local_cleanup_is_confined_to_the_prefix(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = local_backend(root)
    for name in ("acme/db/x#1", "acmecorp/db/x#1", "acme#1", "other/y#3"):
        age(touch(root / name))
    assert names(storage.cleanup("acme/", older_than=0, dry_run=True)) == ["acme/db/x#1"]
    assert names(storage.cleanup("acme/", older_than=0)) == ["acme/db/x#1"]
    assert files_under(root) == ["acme#1", "acmecorp/db/x#1", "other/y#3"]
    # A plain string prefix, as list() takes it.
    assert names(storage.cleanup("acme", older_than=0)) == ["acme#1", "acmecorp/db/x#1"]
    assert names(storage.cleanup("other/y", older_than=0)) == ["other/y#3"]
    assert files_under(root) == []


def test_every_staging_file_of_a_key_is_found_sorted_by_name(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = local_backend(root)
    for name in ("b/x#2", "a#1", "b/x#1", "b/x#10"):
        age(touch(root / name, b"12345"))
    leftovers = storage.cleanup(older_than=0)
    assert names(leftovers) == ["a#1", "b/x#1", "b/x#10", "b/x#2"]
    assert {leftover.size for leftover in leftovers} == {5}
    assert {leftover.kind for leftover in leftovers} == {"temporary file"}


def test_a_staging_file_that_vanished_meanwhile_is_neither_an_error_nor_reported(
    tmp_path: Path,
) -> None:
    from django_snapshots.storage.objectstore import _remove_staging_file

    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        leftover = _remove_staging_file("gone#1", directory, "gone#1", timedelta(0), dry_run=False)
        assert leftover is None
    finally:
        os.close(directory)


def test_a_missing_directory_is_a_configuration_error_for_cleanup_too(tmp_path: Path) -> None:
    storage = ObjectStoreBackend((tmp_path / "missing").as_uri())
    with pytest.raises(SnapshotStorageError, match="does not exist"):
        storage.cleanup()


def test_memory_holds_no_leftovers() -> None:
    storage = ObjectStoreBackend("memory://")
    storage.write("k", io.BytesIO(b"kept"))
    assert storage.cleanup(older_than=0) == []
    assert storage.list("") == ["k"]


# --------------------------------------------------------------------------
# Bad input and stores without cleanup: refused before any I/O

BAD_CALLS: dict[str, tuple[dict[str, Any], type[Exception]]] = {
    "climbing prefix": ({"prefix": "../"}, SnapshotStoragePathError),
    "prefix not a str": ({"prefix": b"x"}, SnapshotStoragePathError),
    "negative age": ({"older_than": -1}, ValueError),
    "age not a duration": ({"older_than": "soon"}, ValueError),
    "age a bool": ({"older_than": True}, TypeError),
    "age infinite": ({"older_than": float("inf")}, ValueError),
    "dry_run not a bool": ({"dry_run": "yes"}, TypeError),
}


def stores_without_io(tmp_path: Path) -> dict[str, ObjectStoreBackend]:
    """Backends any I/O of which would fail: a missing directory, a closed
    port."""
    unreachable = {"endpoint": f"http://127.0.0.1:{closed_port()}", "access_key_id": "k",
                   "secret_access_key": SECRET, "region": "us-east-1"}  # fmt: skip
    return {
        "local": ObjectStoreBackend((tmp_path / "missing").as_uri()),
        "s3": ObjectStoreBackend(
            "s3://bucket/x", config=unreachable, client_options={"allow_http": True}
        ),
        "memory": ObjectStoreBackend("memory://"),
    }


@pytest.mark.parametrize("store", ["local", "s3", "memory"])
@pytest.mark.parametrize("call", sorted(BAD_CALLS))
def test_bad_arguments_are_refused_before_any_io(tmp_path: Path, store: str, call: str) -> None:
    arguments, error = dict(BAD_CALLS[call][0]), BAD_CALLS[call][1]
    storage = stores_without_io(tmp_path)[store]
    prefix = arguments.pop("prefix", "")
    with pytest.raises(error) as caught:
        storage.cleanup(prefix, **arguments)
    assert not isinstance(caught.value, SnapshotStorageError)


@pytest.mark.parametrize(
    ("url", "config", "advice"),
    [
        ("gs://bucket/x", {"skip_signature": "true", "base_url": "http://127.0.0.1:{port}"},
         "AbortIncompleteMultipartUpload"),
        ("az://container/x", {**PROVIDERS["azure-key"][1], "endpoint": "http://127.0.0.1:{port}"},
         "after 7 days"),
    ],
)  # fmt: skip
def test_gcs_and_azure_say_what_to_use_instead_before_any_io(
    url: str, config: dict[str, str], advice: str
) -> None:
    port = closed_port()
    storage = ObjectStoreBackend(
        url,
        config={name: value.format(port=port) for name, value in config.items()},
        client_options={"allow_http": True},
    )
    with pytest.raises(SnapshotStorageCapabilityError, match=advice) as caught:
        storage.cleanup(older_than=0)
    assert not leaks(str(caught.value))


# --------------------------------------------------------------------------
# S3: incomplete multipart uploads


def parts_of(bucket: S3Bucket, key: str) -> list[dict[str, Any]]:
    client = bucket.server.client()
    uploads = client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
    for upload in uploads:
        if upload["Key"] == key:
            listing = client.list_parts(Bucket=bucket.name, Key=key, UploadId=upload["UploadId"])
            return list(listing.get("Parts", []))
    return []


def start_upload(bucket: S3Bucket, key: str, *parts: bytes) -> str:
    """An incomplete multipart upload of *key* made with boto3, with
    *parts*."""
    client = bucket.server.client()
    upload_id = str(client.create_multipart_upload(Bucket=bucket.name, Key=key)["UploadId"])
    for number, body in enumerate(parts, start=1):
        client.upload_part(
            Bucket=bucket.name, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
    return upload_id


def test_an_upload_left_by_a_killed_writer_is_aborted_and_nothing_else(
    s3_bucket: S3Bucket,
) -> None:
    """The leftover is real: a subprocess killed with SIGKILL in the middle
    of a multipart ``stream_write``, with three parts stored."""
    storage = s3_backend(s3_bucket)
    storage.write("db/kept.dump", io.BytesIO(b"key"))
    killed_writer(
        f"s3://{s3_bucket.name}/backups",
        "db/killed.dump",
        s3_bucket.server.endpoint_url,
        until=lambda: len(parts_of(s3_bucket, "backups/db/killed.dump")) == 3,
    )
    start_upload(s3_bucket, "backups-old/db/x", b"sibling of the root")
    start_upload(s3_bucket, "other/y")
    parts = parts_of(s3_bucket, "backups/db/killed.dump")
    newest_part = max(part["LastModified"] for part in parts)

    assert storage.cleanup() == []  # its parts are seconds old: a write in progress
    planned = storage.cleanup(older_than=0, dry_run=True)
    assert planned == [Leftover("db/killed.dump", "multipart upload", newest_part, 15 * MiB)]
    assert sorted(incomplete_uploads(s3_bucket)) == [
        "backups-old/db/x", "backups/db/killed.dump", "other/y"
    ]  # fmt: skip
    assert storage.cleanup(older_than=0) == planned
    assert sorted(incomplete_uploads(s3_bucket)) == ["backups-old/db/x", "other/y"]
    assert stored_on_s3(s3_bucket) == ["backups/db/kept.dump"]
    assert storage.cleanup(older_than=0) == []


def test_an_upload_is_as_old_as_its_newest_part(s3_bucket: S3Bucket) -> None:
    # moto dates the start of every upload in 2010: only the fresh part
    # shows that the first upload is still being written.
    storage = s3_backend(s3_bucket)
    start_upload(s3_bucket, "backups/busy", os.urandom(5 * MiB), b"last")
    start_upload(s3_bucket, "backups/stale")
    moto_start = datetime(2010, 11, 10, 20, 48, 33, tzinfo=timezone.utc)
    leftovers = storage.cleanup(older_than=timedelta(hours=1))
    assert leftovers == [Leftover("stale", "multipart upload", moto_start, 0)]
    assert incomplete_uploads(s3_bucket) == ["backups/busy"]
    (busy,) = storage.cleanup(older_than=0)
    assert busy.size == 5 * MiB + 4
    assert busy.age() < timedelta(hours=1)


def test_s3_cleanup_is_confined_to_the_prefix(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket)
    for key in ("backups/acme/db/x", "backups/acmecorp/db/x", "backups/acme", "backups/other"):
        start_upload(s3_bucket, key)
    assert names(storage.cleanup("acme/", older_than=0, dry_run=True)) == ["acme/db/x"]
    assert names(storage.cleanup("acme/", older_than=0)) == ["acme/db/x"]
    assert sorted(incomplete_uploads(s3_bucket)) == [
        "backups/acme", "backups/acmecorp/db/x", "backups/other"
    ]  # fmt: skip
    assert names(storage.cleanup("acme", older_than=0)) == ["acme", "acmecorp/db/x"]
    assert incomplete_uploads(s3_bucket) == ["backups/other"]


def test_uploads_of_names_no_key_has_are_left_alone_as_on_every_backend(
    s3_bucket: S3Bucket,
) -> None:
    """Like the other backends' cleanups, this one aborts only uploads of
    names this backend writes: keys, and its sync records."""
    storage = s3_backend(s3_bucket)
    foreign = ["backups//x", "backups/a\\b", "backups/dir/", "backups/tab\there", "backups/./y"]
    for key in [*foreign, "backups/db/x", "backups/dst/\\snapshots-sync-state.json"]:
        start_upload(s3_bucket, key)
    expected = ["db/x", "dst/\\snapshots-sync-state.json"]
    assert names(storage.cleanup(older_than=0, dry_run=True)) == expected
    assert names(storage.cleanup(older_than=0)) == expected
    assert sorted(incomplete_uploads(s3_bucket)) == sorted(foreign)


def test_two_uploads_of_one_key_are_both_leftovers(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket, base="")
    start_upload(s3_bucket, "k")
    start_upload(s3_bucket, "k")
    assert names(storage.cleanup(older_than=0)) == ["k", "k"]
    assert incomplete_uploads(s3_bucket) == []


def test_s3_keys_are_never_touched(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket, chunk_size=5 * MiB)
    big = os.urandom(11 * MiB)
    storage.write("db/big", io.BytesIO(big))
    storage.write("db/small", io.BytesIO(b"small"))
    assert storage.cleanup(older_than=0) == []
    assert storage.cleanup(older_than=0, dry_run=True) == []
    assert b"".join(storage.stream_read("db/big")) == big
    assert storage.list("") == ["db/big", "db/small"]


def test_an_upload_that_vanished_meanwhile_is_neither_an_error_nor_reported(
    s3_bucket: S3Bucket,
) -> None:
    from django_snapshots.storage.objectstore import _abort_upload, _stale_upload

    upload_id = start_upload(s3_bucket, "backups/gone")
    (upload,) = s3_bucket.server.client().list_multipart_uploads(Bucket=s3_bucket.name)["Uploads"]
    client = s3_bucket.server.client()
    client.abort_multipart_upload(Bucket=s3_bucket.name, Key="backups/gone", UploadId=upload_id)
    assert _stale_upload(client, s3_bucket.name, upload, "gone", timedelta(0), {}) is None
    assert _abort_upload(client, s3_bucket.name, "backups/gone", upload_id, {}) is False


def test_a_given_store_object_is_cleaned_with_its_own_options(s3_bucket: S3Bucket) -> None:
    from obstore.store import S3Store

    store = S3Store(
        s3_bucket.name,
        prefix="given",
        config=s3_config(s3_bucket.server),
        client_options={"allow_http": True},
    )
    start_upload(s3_bucket, "given/x")
    start_upload(s3_bucket, "givenx/y")
    assert names(ObjectStoreBackend(store).cleanup(older_than=0)) == ["x"]
    assert incomplete_uploads(s3_bucket) == ["givenx/y"]


def test_an_endpoint_that_is_the_buckets_own_address_is_reached_as_obstore_does(
    s3_bucket: S3Bucket,
) -> None:
    """With ``virtual_hosted_style_request`` obstore takes the endpoint as
    the bucket's address; moto, as an HTTP proxy, serves the bucket named by
    the host."""
    config = {**s3_config(s3_bucket.server), "virtual_hosted_style_request": "true",
              "endpoint": f"http://{s3_bucket.name}.s3.localhost"}  # fmt: skip
    storage = ObjectStoreBackend(
        f"s3://{s3_bucket.name}/backups",
        config=config,
        client_options={"allow_http": True, "proxy_url": s3_bucket.server.endpoint_url},
    )
    storage.write("k", io.BytesIO(b"through the bucket's address"))
    assert stored_on_s3(s3_bucket) == ["backups/k"]
    start_upload(s3_bucket, "backups/x")
    assert names(storage.cleanup(older_than=0)) == ["x"]
    assert incomplete_uploads(s3_bucket) == []


@pytest.fixture
def no_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("botocore", "botocore.config", "botocore.session", "botocore.exceptions"):
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.usefixtures(no_botocore.__name__)
def test_without_botocore_s3_cleanup_names_the_extra_to_install_before_any_io(
    tmp_path: Path,
) -> None:
    storage = stores_without_io(tmp_path)["s3"]
    with pytest.raises(SnapshotStorageCapabilityError, match=r"objectstore-s3-cleanup"):
        storage.cleanup()
    local = local_backend(tmp_path / "store")
    age(touch(tmp_path / "store" / "x#1"))
    assert names(local.cleanup()) == ["x#1"]  # the local store needs no botocore


def test_credentials_come_from_the_environment_obstore_reads(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = s3_bucket.server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_access_key)
    monkeypatch.setenv("AWS_ENDPOINT", server.endpoint_url)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = ObjectStoreBackend(f"s3://{s3_bucket.name}/backups")
    start_upload(s3_bucket, "backups/x")
    assert names(storage.cleanup(older_than=0)) == ["x"]


def test_credentials_are_never_taken_from_files_obstore_does_not_read(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "credentials"
    shared.write_text(f"[default]\naws_access_key_id = k\naws_secret_access_key = {SECRET}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(shared))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    storage = ObjectStoreBackend(
        "s3://bucket/x",
        config={"endpoint": s3_server.endpoint_url},
        client_options={"allow_http": True},
    )
    with pytest.raises(SnapshotStorageError, match="no credentials") as caught:
        storage.cleanup()
    assert not caught.value.transient
    assert SECRET not in str(caught.value)


def test_a_plain_http_endpoint_needs_allow_http_as_for_obstore(s3_server: S3Server) -> None:
    storage = ObjectStoreBackend("s3://bucket/x", config=s3_config(s3_server))
    with pytest.raises(SnapshotStorageError, match="allow_http"):
        storage.cleanup()


def test_a_missing_bucket_is_a_configuration_error_for_cleanup(s3_server: S3Server) -> None:
    storage = ObjectStoreBackend(
        "s3://no-such-bucket-here/x",
        config=s3_config(s3_server),
        client_options={"allow_http": True},
    )
    with pytest.raises(
        SnapshotStorageError, match=r"bucket 'no-such-bucket-here'.*does not exist"
    ) as caught:
        storage.cleanup()
    assert not caught.value.transient


def test_an_unreachable_server_is_a_transient_error_that_shows_no_secret() -> None:
    from obstore.store import S3Store

    store = S3Store(
        "bucket",
        config={"endpoint": f"http://minio:{SECRET}@127.0.0.1:{closed_port()}",
                "access_key_id": "k", "secret_access_key": SECRET, "region": "us-east-1"},
        client_options={"allow_http": True},
    )  # fmt: skip
    with pytest.raises(SnapshotStorageError) as caught:
        ObjectStoreBackend(store).cleanup()
    assert caught.value.transient
    assert SECRET not in str(caught.value)


def test_a_local_store_without_a_directory_is_refused_before_any_io() -> None:
    from obstore.store import LocalStore

    with pytest.raises(SnapshotStorageCapabilityError, match="whole file system"):
        ObjectStoreBackend(LocalStore()).cleanup(older_than=0)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_credentials_come_from_a_given_stores_credential_provider(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    from obstore.store import S3Store

    server = s3_bucket.server
    credential = {"access_key_id": server.access_key_id,
                  "secret_access_key": server.secret_access_key, "token": None,
                  "expires_at": None}  # fmt: skip
    calls: list[str] = []

    def provide() -> dict[str, Any]:
        calls.append(flavour)
        return credential

    async def provide_later() -> dict[str, Any]:
        return provide()

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3Store(
        s3_bucket.name,
        prefix="backups",
        config={"endpoint": server.endpoint_url, "region": server.region},
        client_options={"allow_http": True},
        credential_provider=provide if flavour == "sync" else provide_later,  # type: ignore[arg-type]
    )
    start_upload(s3_bucket, "backups/x")
    assert names(ObjectStoreBackend(store).cleanup(older_than=0)) == ["x"]
    assert calls


def test_a_failing_credential_provider_is_a_storage_error_that_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from obstore.store import S3Store

    def provide() -> dict[str, Any]:
        raise RuntimeError(f"token {SECRET} expired")

    store = S3Store(
        "bucket",
        config={"endpoint": f"http://127.0.0.1:{closed_port()}", "region": "us-east-1",
                "session_token": SECRET},
        client_options={"allow_http": True},
        credential_provider=provide,  # type: ignore[arg-type]
    )  # fmt: skip
    with pytest.raises(SnapshotStorageError, match="credential provider raised RuntimeError"):
        ObjectStoreBackend(store).cleanup()


class RecordingProxy:
    """A loopback HTTP proxy to *target* that keeps every byte clients send."""

    def __init__(self, target: str) -> None:
        parsed = urllib.parse.urlsplit(target)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.sent = bytearray()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
                for source, sink, keep in ((client, upstream, True), (upstream, client, False)):
                    threading.Thread(
                        target=self._pump, args=(source, sink, keep), daemon=True
                    ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, keep: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if keep:
                    self.sent += data
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


def test_cleanup_goes_through_the_stores_proxy_and_pays_as_requester_when_told(
    s3_bucket: S3Bucket,
) -> None:
    proxy = RecordingProxy(s3_bucket.server.endpoint_url)
    try:
        storage = ObjectStoreBackend(
            f"s3://{s3_bucket.name}/backups",
            config={**s3_config(s3_bucket.server), "request_payer": "true"},
            client_options={"allow_http": True, "proxy_url": proxy.url},
        )
        start_upload(s3_bucket, "backups/x")
        assert names(storage.cleanup(older_than=0)) == ["x"]
    finally:
        proxy.close()
    sent = bytes(proxy.sent).lower()
    assert b"?uploads" in sent
    assert b"delete " in sent  # the abort
    assert sent.count(b"x-amz-request-payer: requester") >= 3  # list, parts, abort


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("30 secs", 30.0), ("1m 30s", 90.0), ("250ms", 0.25), ("2h", 7200.0),
     ("0.5s", 0.5), (None, 7.0), ("", 7.0), ("soon", 7.0), ("5s later", 7.0)],
)  # fmt: skip
def test_obstore_durations_set_botocore_timeouts(text: str | None, seconds: float) -> None:
    from django_snapshots.storage.objectstore import _seconds

    assert _seconds(text, default=7.0) == seconds

"""RcloneBackend.cleanup on the real rclone binary: the temporary and partial
files that interrupted writes leave on a local remote, and the incomplete
multipart uploads they leave on S3 (a real S3 server on loopback).

moto reports every multipart upload as started on 2010-11-10, so on S3 an
upload is "young" only next to a limit longer than that; the tests use
``older_than=0`` to remove and a century to keep."""

from __future__ import annotations

import http.client
import http.server
import io
import json
import os
import signal
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

from django_snapshots import (
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import Prefix, RcloneBackend
from django_snapshots.storage.cleanup import Leftover
from tests.conftest import S3Bucket, S3Server
from tests.test_rclone import (
    Gate,
    closed_port,
    files_below,
    local_backend,
    rclone_children,
    s3_config,
)

TWO_DAYS_AGO = int(time.time()) - 2 * 86400
CENTURY = timedelta(days=36500)
TEMPORARY = "\\" + "0123456789abcdef" * 2  # a name stream_write gives its upload
PARTIAL = "k.0123abcd\\partial"  # a name rclone gives a copy in progress


@pytest.fixture
def local(tmp_path: Path) -> RcloneBackend:
    return local_backend(tmp_path / "store")


def s3_backend(bucket: S3Bucket, base: str = "backups", **config: str) -> RcloneBackend:
    return RcloneBackend(f"s3:{bucket.name}/{base}", config=s3_config(bucket.server, **config))


def age(root: Path, *names: str) -> None:
    """Make the files *names* below *root* look untouched for two days."""
    for name in names:
        os.utime(root / name, (TWO_DAYS_AGO, TWO_DAYS_AGO))


def leftover_files(root: Path) -> list[str]:
    return [name for name in files_below(root) if "\\" in name]


def start_upload(bucket: S3Bucket, key: str) -> str:
    """Start a multipart upload of *key* and send it a part, never completing
    it: what a writer killed midway leaves on S3."""
    client = bucket.server.client()
    upload = client.create_multipart_upload(Bucket=bucket.name, Key=key)
    client.upload_part(
        Bucket=bucket.name, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1000
    )
    return str(upload["UploadId"])


def uploads_on_s3(bucket: S3Bucket) -> list[str]:
    listing = bucket.server.client().list_multipart_uploads(Bucket=bucket.name)
    return sorted(upload["Key"] for upload in listing.get("Uploads", []))


def names(leftovers: list[Leftover]) -> list[str]:
    return [leftover.name for leftover in leftovers]


# A writer in a process of its own, so that it can be killed with SIGKILL
# together with its rclone: what a crash of the machine does.  The remote and
# its credentials come on stdin, never on a command line.
WRITER = """
import json, sys, time
from django_snapshots.storage import Prefix, RcloneBackend
spec = json.loads(sys.stdin.readline())
storage = RcloneBackend(spec["remote"], config=spec["config"])
def chunks():
    yield bytes(spec["size"])
    print("sent", flush=True)
    time.sleep(3600)
storage.stream_write(spec["key"], chunks())
"""


def kill_writer_midway(
    remote: str, config: dict[str, str], key: str, *, size: int, started: Callable[[], bool]
) -> None:
    """Run stream_write of *key* in another process, send *size* bytes, wait
    until *started* tells that the upload has begun, then SIGKILL the process
    and its rclone."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert writer.stdin is not None
        assert writer.stdout is not None
        spec = {"remote": remote, "config": config, "key": key, "size": size}
        writer.stdin.write(json.dumps(spec).encode() + b"\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == b"sent\n"
        deadline = time.monotonic() + 60
        while not started():
            assert time.monotonic() < deadline, "the upload never began"
            time.sleep(0.05)
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait()
        for stream in (writer.stdin, writer.stdout):
            if stream is not None:
                stream.close()


# --------------------------------------------------------------------------
# Local remote: temporary and partial files


def test_a_writer_killed_midway_leaves_a_temporary_file_that_cleanup_removes_once_old(
    tmp_path: Path,
) -> None:
    """The leftover is real: stream_write runs in a process killed with
    SIGKILL, with its rclone, while rclone writes the temporary file."""
    root = tmp_path / "store"
    storage = local_backend(root)
    storage.write("db/kept.dump", io.BytesIO(b"a key"))

    def started() -> bool:
        return any((root / name).stat().st_size > 0 for name in leftover_files(root))

    kill_writer_midway(
        f"store:{root}", {"type": "local"}, "db/new.dump", size=1024 * 1024, started=started
    )
    (left,) = leftover_files(root)
    assert left.startswith("db/\\")
    size = (root / left).stat().st_size

    assert storage.cleanup() == []  # just written to: it may be a write in progress
    assert leftover_files(root) == [left]

    age(root, left)
    would = storage.cleanup(dry_run=True)
    assert leftover_files(root) == [left]
    removed = storage.cleanup()
    assert removed == would
    assert removed == [
        Leftover(left, "temporary file", datetime.fromtimestamp(TWO_DAYS_AGO, timezone.utc), size)
    ]
    assert files_below(root) == ["db/kept.dump"]
    assert storage.read("db/kept.dump").read() == b"a key"
    assert storage.cleanup(older_than=0) == []


def test_a_copy_killed_midway_leaves_a_partial_file_that_cleanup_removes(
    tmp_path: Path,
) -> None:
    """The leftover is real: sync's rclone copy is slowed down with
    --bwlimit and killed with SIGKILL while it writes the partial file."""
    root = tmp_path / "store"
    storage = RcloneBackend(f"store:{root}", config={"type": "local"}, flags=("--bwlimit=256k",))
    (root / "src").mkdir(parents=True)
    (root / "src" / "big").write_bytes(bytes(8 * 1024 * 1024))
    failures: list[BaseException] = []

    def sync() -> None:
        try:
            storage.sync("src/", "dst/")
        except BaseException as exc:
            failures.append(exc)

    syncing = threading.Thread(target=sync)
    syncing.start()
    try:
        deadline = time.monotonic() + 60
        while not leftover_files(root):
            assert time.monotonic() < deadline, "rclone never began the copy"
            time.sleep(0.05)
        (pid,) = rclone_children()
        os.kill(pid, signal.SIGKILL)
    finally:
        syncing.join(60)
    assert failures
    assert isinstance(failures[0], SnapshotStorageError)
    (left,) = leftover_files(root)
    assert left.startswith("dst/big.")
    assert left.endswith("\\partial")

    assert storage.cleanup(older_than=timedelta(hours=1)) == []
    age(root, left)
    (removed,) = storage.cleanup(older_than=timedelta(hours=1))
    assert (removed.name, removed.kind) == (left, "partial upload")
    assert files_below(root) == ["src/big"]


def test_a_write_in_progress_keeps_its_temporary_file(local: RcloneBackend, tmp_path: Path) -> None:
    # More than rclone buffers before it creates the file (100 KiB).
    gate = Gate(bytes(256 * 1024), b"and the rest")
    writer = threading.Thread(target=local.stream_write, args=("db/k", iter(gate)))
    writer.start()
    try:
        assert gate.waiting.wait(60)
        deadline = time.monotonic() + 60
        while not leftover_files(tmp_path / "store"):
            assert time.monotonic() < deadline, "rclone never created the temporary file"
            time.sleep(0.05)
        assert local.cleanup(older_than="1h") == []
        assert local.cleanup(older_than=timedelta(hours=1), dry_run=True) == []
    finally:
        gate.opened.set()
        writer.join(60)
    assert local.read("db/k").read() == bytes(256 * 1024) + b"and the rest"


def test_a_leftover_written_to_again_after_the_listing_is_kept(
    local: RcloneBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer resumes between the listing and the removal: the age is
    checked again just before, and the file is kept."""
    root = tmp_path / "store"
    (root / "db").mkdir(parents=True)
    (root / "db" / TEMPORARY).write_bytes(b"partial")
    age(root, f"db/{TEMPORARY}")
    run = local._run

    def resume_after_listing(command: str, *paths: str, **options: Any) -> Any:
        result = run(command, *paths, **options)
        if command == "lsjson" and "-R" in options.get("options", ()):
            os.utime(root / "db" / TEMPORARY)
        return result

    monkeypatch.setattr(local, "_run", resume_after_listing)
    assert local.cleanup(older_than=timedelta(hours=1)) == []
    assert leftover_files(root) == [f"db/{TEMPORARY}"]


def test_a_leftover_that_vanishes_after_the_listing_is_neither_an_error_nor_reported(
    local: RcloneBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another cleanup removes one file between the listing and the removal."""
    root = tmp_path / "store"
    (root / "db").mkdir(parents=True)
    for name in (f"db/{TEMPORARY}", f"db/{PARTIAL}"):
        (root / name).write_bytes(b"partial")
    age(root, *files_below(root))
    run = local._run

    def remove_after_listing(command: str, *paths: str, **options: Any) -> Any:
        result = run(command, *paths, **options)
        if command == "lsjson" and "-R" in options.get("options", ()):
            (root / "db" / TEMPORARY).unlink()
        return result

    monkeypatch.setattr(local, "_run", remove_after_listing)
    assert names(local.cleanup(older_than=timedelta(hours=1))) == [f"db/{PARTIAL}"]
    assert leftover_files(root) == []


def test_leftovers_are_found_at_every_depth_and_named_from_the_root(
    local: RcloneBackend, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    left = [TEMPORARY, f"a/{PARTIAL}", f"a/b/c/{TEMPORARY}", f"\u00e9t\u00e9/{TEMPORARY}"]
    for name in left:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"partial")
    removed = local.cleanup(older_than=0)
    assert names(removed) == sorted(left)
    assert [leftover.kind for leftover in removed] == [
        "temporary file" if "\\partial" not in name else "partial upload" for name in sorted(left)
    ]
    assert leftover_files(root) == []


def test_keys_are_never_touched_even_named_like_leftovers(
    local: RcloneBackend, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    keys = [
        TEMPORARY[1:],  # the hex digits alone
        "db/k.0123abcd.partial",  # rclone's default partial suffix
        "db/k.0123abcd\u2216partial",  # a set minus, not a backslash
        "db/partial",
        "\uff3c0123456789abcdef0123456789abcdef",  # a full-width backslash
    ]
    for key in keys:
        local.write(key, io.BytesIO(b"a key"))
    age(root, *files_below(root))
    assert local.cleanup(older_than=0) == []
    assert local.list("") == sorted(keys)
    assert all(local.read(key).read() == b"a key" for key in keys)


@pytest.mark.parametrize("name", [f"db/{TEMPORARY}", f"db/{PARTIAL}"])
def test_no_key_can_take_a_leftovers_name(local: RcloneBackend, name: str) -> None:
    with pytest.raises(SnapshotStoragePathError, match=r"U\+005C"):
        local.write(name, io.BytesIO(b"never"))


def test_files_with_a_backslash_that_no_write_of_ours_leaves_are_kept(
    local: RcloneBackend, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    (root / "db").mkdir(parents=True)
    others = [
        "db/notes\\keep",
        "db/\\0123456789ABCDEF0123456789ABCDEF",  # upper case: not uuid4().hex
        "db/\\0123456789abcdef",  # too short
        "db/k.0123abc\\partial",  # seven hex digits
        "db/k\\partial",
    ]
    for name in others:
        (root / name).write_bytes(b"not ours")
    (root / "db\\dir").mkdir()
    (root / "db\\dir" / TEMPORARY).write_bytes(b"below a directory no key can have")
    age(root, *files_below(root))
    assert local.cleanup(older_than=0) == []
    assert leftover_files(root) == sorted([*others, f"db\\dir/{TEMPORARY}"])


def test_symbolic_links_are_never_followed_nor_removed(
    local: RcloneBackend, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    (outside / "db").mkdir(parents=True)
    (outside / "db" / TEMPORARY).write_bytes(b"not below the root")
    (outside / "file").write_bytes(b"not below the root")
    root.mkdir()
    (root / "linked").symlink_to(outside / "db", target_is_directory=True)
    (root / TEMPORARY).symlink_to(outside / "file")
    age(outside, f"db/{TEMPORARY}", "file")
    assert local.cleanup(older_than=0) == []
    assert (root / TEMPORARY).is_symlink()
    assert files_below(outside) == [f"db/{TEMPORARY}", "file"]


def test_dry_run_removes_nothing_and_reports_what_cleanup_removes(
    local: RcloneBackend, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    (root / "db").mkdir(parents=True)
    for name in (f"db/{TEMPORARY}", f"db/{PARTIAL}", TEMPORARY):
        (root / name).write_bytes(b"partial")
    age(root, *files_below(root))
    would = local.cleanup(dry_run=True)
    assert len(leftover_files(root)) == 3
    assert local.cleanup(dry_run=True) == would
    assert local.cleanup() == would
    assert names(would) == sorted([f"db/{TEMPORARY}", f"db/{PARTIAL}", TEMPORARY])
    assert leftover_files(root) == []


def test_cleanup_of_a_prefix_never_reaches_a_sibling_tenant(
    local: RcloneBackend, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    for tenant in ("acme", "acmecorp"):
        (root / tenant).mkdir(parents=True)
        (root / tenant / TEMPORARY).write_bytes(b"partial")
    age(root, *files_below(root))
    assert names(local.cleanup("acme/", dry_run=True)) == [f"acme/{TEMPORARY}"]
    assert names(local.cleanup("acme/")) == [f"acme/{TEMPORARY}"]
    assert leftover_files(root) == [f"acmecorp/{TEMPORARY}"]
    # A plain string prefix, as list() has it: "acme" reaches "acmecorp/".
    assert names(local.cleanup("acme", dry_run=True)) == [f"acmecorp/{TEMPORARY}"]


def test_a_missing_root_holds_no_leftovers(tmp_path: Path) -> None:
    assert local_backend(tmp_path / "never-written").cleanup(older_than=0) == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"prefix": "../x"}, SnapshotStoragePathError),
        ({"prefix": "a\\b"}, SnapshotStoragePathError),
        ({"prefix": 3}, SnapshotStoragePathError),
        ({"older_than": -1}, ValueError),
        ({"older_than": "soon"}, ValueError),
        ({"older_than": float("nan")}, ValueError),
        ({"older_than": None}, TypeError),
        ({"older_than": True}, TypeError),
        ({"dry_run": "yes"}, TypeError),
        ({"dry_run": 1}, TypeError),
        ({"dry_run": None}, TypeError),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    tmp_path: Path, arguments: dict[str, Any], error: type[Exception]
) -> None:
    # Any rclone command on this remote fails: an error of another kind
    # would mean rclone ran first.
    storage = RcloneBackend(f"store:{tmp_path}", config={"type": "no-such-backend"})
    with pytest.raises(SnapshotStorageError):
        storage.cleanup()
    with pytest.raises(error):
        storage.cleanup(**arguments)


# --------------------------------------------------------------------------
# S3: incomplete multipart uploads


def test_an_incomplete_multipart_upload_is_aborted_and_the_object_kept(
    s3_bucket: S3Bucket,
) -> None:
    """The leftover is what a killed writer leaves: an upload started and
    sent a part with boto3, never completed; an object of that key exists."""
    storage = s3_backend(s3_bucket)
    storage.write("db/x.dump", io.BytesIO(b"the previous dump"))
    start_upload(s3_bucket, "backups/db/x.dump")

    assert storage.cleanup(older_than=CENTURY) == []
    would = storage.cleanup(older_than=0, dry_run=True)
    assert uploads_on_s3(s3_bucket) == ["backups/db/x.dump"]
    assert [(leftover.name, leftover.kind, leftover.size) for leftover in would] == [
        ("db/x.dump", "multipart upload", None)
    ]
    assert would[0].modified.tzinfo is not None
    assert storage.cleanup(older_than=0) == would
    assert uploads_on_s3(s3_bucket) == []
    assert storage.read("db/x.dump").read() == b"the previous dump"
    assert storage.cleanup(older_than=0) == []


def test_a_writer_killed_midway_leaves_an_upload_that_cleanup_aborts(
    s3_bucket: S3Bucket,
) -> None:
    """The leftover is real: stream_write runs in a process killed with
    SIGKILL, with its rclone, once rclone has started the multipart upload."""
    config = s3_config(s3_bucket.server)
    kill_writer_midway(
        f"s3:{s3_bucket.name}/backups",
        config,
        "db/new.dump",
        size=6 * 1024 * 1024,
        started=lambda: bool(uploads_on_s3(s3_bucket)),
    )
    assert uploads_on_s3(s3_bucket) == ["backups/db/new.dump"]
    storage = s3_backend(s3_bucket)
    assert storage.list("") == []
    assert names(storage.cleanup(older_than=0)) == ["db/new.dump"]
    assert uploads_on_s3(s3_bucket) == []


def test_every_incomplete_upload_of_a_key_is_aborted(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket)
    for key in ("db/x", "db/x", "db/x2", "db/x/y"):
        start_upload(s3_bucket, f"backups/{key}")
    assert names(storage.cleanup("db/", older_than=0)) == ["db/x", "db/x", "db/x/y", "db/x2"]
    assert uploads_on_s3(s3_bucket) == []


def test_cleanup_of_a_prefix_never_aborts_a_sibling_tenants_upload(s3_bucket: S3Bucket) -> None:
    storage = s3_backend(s3_bucket)
    for key in ("backups/acme/x", "backups/acmecorp/x", "backups2/acme/x", "elsewhere/x"):
        start_upload(s3_bucket, key)
    assert names(storage.cleanup("acme/", older_than=0, dry_run=True)) == ["acme/x"]
    assert names(storage.cleanup("acme/", older_than=0)) == ["acme/x"]
    assert uploads_on_s3(s3_bucket) == ["backups/acmecorp/x", "backups2/acme/x", "elsewhere/x"]
    # The whole root: never the uploads of a neighbouring base path, which
    # rclone's own prefix ("backups") would reach.
    assert names(storage.cleanup(older_than=0)) == ["acmecorp/x"]
    assert uploads_on_s3(s3_bucket) == ["backups2/acme/x", "elsewhere/x"]


def test_a_tenant_cleans_its_own_uploads_through_prefix_and_sees_its_own_names(
    s3_bucket: S3Bucket,
) -> None:
    tenant = Prefix(s3_backend(s3_bucket), "acme")
    for key in ("backups/acme/db/x", "backups/acmecorp/db/x"):
        start_upload(s3_bucket, key)
    assert names(tenant.cleanup(older_than=0)) == ["db/x"]
    assert uploads_on_s3(s3_bucket) == ["backups/acmecorp/db/x"]


def test_an_old_upload_of_a_name_no_key_has_stops_the_abort_of_the_keys_it_shares_a_start_with(
    s3_bucket: S3Bucket,
) -> None:
    """rclone's cleanup aborts every old upload whose name starts with the
    one it is given; one of a name that is no key is nobody's leftover we
    know of, so nothing is aborted."""
    storage = s3_backend(s3_bucket)
    start_upload(s3_bucket, "backups/db/x")
    start_upload(s3_bucket, "backups/db/x\\tool-upload")
    assert names(storage.cleanup(older_than=0, dry_run=True)) == ["db/x"]
    with pytest.raises(SnapshotStorageCapabilityError, match=r"db/x\\\\tool-upload"):
        storage.cleanup(older_than=0)
    assert uploads_on_s3(s3_bucket) == ["backups/db/x", "backups/db/x\\tool-upload"]


def test_uploads_on_a_remote_whose_encoding_is_not_raw_are_listed_but_not_aborted(
    s3_bucket: S3Bucket,
) -> None:
    storage = s3_backend(s3_bucket, encoding="Slash,InvalidUtf8,Dot")
    start_upload(s3_bucket, "backups/db/x")
    assert names(storage.cleanup(older_than=0, dry_run=True)) == ["db/x"]
    with pytest.raises(SnapshotStorageCapabilityError, match="encoding is not Raw"):
        storage.cleanup(older_than=0)
    assert uploads_on_s3(s3_bucket) == ["backups/db/x"]


def test_keys_and_uploads_of_names_no_key_has_are_never_touched_on_s3(
    s3_bucket: S3Bucket,
) -> None:
    storage = s3_backend(s3_bucket)
    for key in ("db/x", TEMPORARY[1:], "db/k.0123abcd.partial"):
        storage.write(key, io.BytesIO(b"a key"))
    client = s3_bucket.server.client()
    client.put_object(Bucket=s3_bucket.name, Key=f"backups/db/{TEMPORARY}", Body=b"not ours")
    start_upload(s3_bucket, "backups/db//y")
    assert storage.cleanup(older_than=0) == []
    assert uploads_on_s3(s3_bucket) == ["backups/db//y"]
    listing = client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert sorted(item["Key"] for item in listing) == sorted(
        [
            "backups/0123456789abcdef0123456789abcdef",
            "backups/db/k.0123abcd.partial",
            "backups/db/x",
            f"backups/db/{TEMPORARY}",
        ]
    )


def test_a_missing_bucket_holds_no_leftovers(s3_server: S3Server) -> None:
    storage = RcloneBackend("s3:no-such-bucket/backups", config=s3_config(s3_server))
    assert storage.cleanup(older_than=0) == []


class RefusingAborts(http.server.BaseHTTPRequestHandler):
    """Pass requests on to the S3 server, but refuse every abort of a
    multipart upload as S3 does when a policy denies it."""

    upstream: str

    def _relay(self) -> None:
        query = urllib.parse.urlsplit(self.path).query
        if self.command == "DELETE" and "uploadId" in urllib.parse.parse_qs(query):
            body = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                b"<Message>Access Denied</Message></Error>"
            )
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        connection = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            connection.request(self.command, self.path, body, dict(self.headers))
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_aborts(s3_server: S3Server) -> Iterator[str]:
    """The endpoint of an S3 server that refuses to abort multipart uploads."""
    handler = type(
        "Handler",
        (RefusingAborts,),
        {"upstream": urllib.parse.urlsplit(s3_server.endpoint_url).netloc},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        serving.join(60)
        server.server_close()


def test_an_abort_that_fails_is_a_storage_error_though_rclone_exits_with_0(
    s3_bucket: S3Bucket, refusing_aborts: str
) -> None:
    storage = s3_backend(s3_bucket, endpoint=refusing_aborts)
    start_upload(s3_bucket, "backups/db/x")
    assert names(storage.cleanup(older_than=0, dry_run=True)) == ["db/x"]
    with pytest.raises(SnapshotStorageError, match=r"(?s)db/x.*AccessDenied") as caught:
        storage.cleanup(older_than=0)
    assert s3_bucket.server.secret_access_key not in str(caught.value)
    assert uploads_on_s3(s3_bucket) == ["backups/db/x"]


# --------------------------------------------------------------------------
# Credentials and errors


def test_cleanup_passes_credentials_through_the_environment_only(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = s3_backend(s3_bucket)
    start_upload(s3_bucket, "backups/db/x")
    commands: list[tuple[list[str], dict[str, str]]] = []
    run = subprocess.run

    def recording(argv: list[str], **options: Any) -> Any:
        commands.append((argv, options["env"]))
        return run(argv, **options)

    monkeypatch.setattr(subprocess, "run", recording)
    assert names(storage.cleanup(older_than=0)) == ["db/x"]
    assert [argv[argv.index("--") + 1] for argv, _ in commands if argv[1] == "backend"] == [
        "features", "list-multipart-uploads", "cleanup", "list-multipart-uploads",
    ]  # fmt: skip
    secrets = [s3_bucket.server.secret_access_key, s3_bucket.server.access_key_id]
    for argv, environment in commands:
        assert not any(secret in " ".join(argv) for secret in secrets)
        assert all(secret in environment.values() for secret in secrets)


def test_an_unreachable_s3_server_is_a_transient_error_without_credentials(
    s3_server: S3Server,
) -> None:
    storage = RcloneBackend(
        "s3:bucket/backups",
        config=s3_config(s3_server, endpoint=f"http://127.0.0.1:{closed_port()}"),
        flags=("--low-level-retries=1",),
    )
    with pytest.raises(SnapshotStorageError, match=r"(?i)connection refused") as caught:
        storage.cleanup(older_than=0)
    assert caught.value.transient
    assert s3_server.secret_access_key not in str(caught.value)
    assert "list-multipart-uploads" in str(caught.value)


def test_cleanup_errors_never_show_the_credentials_of_an_endpoint_url(
    s3_server: S3Server,
) -> None:
    endpoint = f"http://operator:hunter2-secret@127.0.0.1:{closed_port()}"
    storage = RcloneBackend(
        "s3:bucket/backups",
        config=s3_config(s3_server, endpoint=endpoint),
        flags=("--low-level-retries=1",),
    )
    assert "endpoint': 'http://***@127.0.0.1:" in repr(storage)
    with pytest.raises(SnapshotStorageError) as caught:
        storage.cleanup(older_than=0)
    for shown in (repr(storage), str(caught.value)):
        assert "hunter2-secret" not in shown
        assert "operator" not in shown
    named = RcloneBackend("s3:bucket", config=s3_config(s3_server, endpoint="https://a@s3.test"))
    assert "endpoint': 'https://a@s3.test'" in repr(named)  # a user alone is no secret


def test_a_connection_string_with_a_password_in_a_url_is_refused_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="process list") as caught:
        RcloneBackend(":s3,endpoint='http://operator:hunter2-secret@127.0.0.1:9':bucket/backups")
    assert "hunter2-secret" not in str(caught.value)

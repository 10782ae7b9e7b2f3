"""``manage.py snapshots <command>`` in a project: each command on the
configured stack, run through ``call_command``, and its errors."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest
from django.core import checks
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from structlog.testing import capture_logs

from django_snapshots.storage import (
    Checksum,
    Compress,
    DjangoStorageBackend,
    Encrypt,
    LocalFileSystemBackend,
    Logging,
    MemoryBackend,
    Prefix,
    RcloneBackend,
    Retry,
)
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.testing import Chaos
from tests.conftest import S3Bucket
from tests.test_conf import fresh_storage_cache
from tests.test_retry import BasicMemory

pytestmark = pytest.mark.usefixtures(fresh_storage_cache.__name__)

SUBCOMMANDS = ["check", "ls", "put", "get", "rm", "sync", "verify", "cleanup", "keygen", "demo"]


def snapshots(*args: str, stdin: Any = None) -> str:
    """Run ``snapshots *args`` and return what it printed."""
    out = io.StringIO()
    options: dict[str, Any] = {"stdout": out, "stderr": io.StringIO()}
    if stdin is not None:
        options["stdin"] = stdin
    call_command("snapshots", *args, **options)
    return out.getvalue()


def fails(*args: str) -> str:
    """Run ``snapshots *args``, expect a one-line CommandError, return it."""
    with pytest.raises(CommandError) as raised:
        snapshots(*args)
    message = str(raised.value)
    assert "\n" not in message
    assert raised.value.returncode == 1
    return message


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def storage(root: Path) -> Iterator[Any]:
    stack = Checksum(LocalFileSystemBackend(root))
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        yield stack


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "artifact.dump"
    path.write_bytes(os.urandom(3 * CHUNK_SIZE + 17))
    return path


def flip_byte(path: Path, offset: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_put_stores_a_file_that_get_copies_back(
    storage: Any, artifact: Path, tmp_path: Path
) -> None:
    out = snapshots("put", str(artifact), "db/first.dump")
    assert f"stored {artifact.stat().st_size} bytes at db/first.dump" in out
    snapshots("get", "db/first.dump", str(tmp_path / "copy.dump"))
    assert (tmp_path / "copy.dump").read_bytes() == artifact.read_bytes()


def test_put_goes_through_the_whole_stack(storage: Any, root: Path, artifact: Path) -> None:
    snapshots("put", str(artifact), "db/first.dump")
    sidecar = (root / "db" / "first.dump.sha256").read_text()
    assert sidecar == f"{hashlib.sha256(artifact.read_bytes()).hexdigest()}  first.dump\n"


def test_put_reads_standard_input_for_a_dash(storage: Any) -> None:
    snapshots("put", "-", "from-stdin.bin", stdin=io.BytesIO(b"piped bytes"))
    with storage.read("from-stdin.bin") as stream:
        assert stream.read() == b"piped bytes"


def test_get_writes_standard_output_for_a_dash(storage: Any) -> None:
    storage.write("a.bin", io.BytesIO(b"\x00binary\xff"))
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    call_command("snapshots", "get", "a.bin", "-", stdout=out, stderr=io.StringIO())
    out.flush()
    assert raw.getvalue() == b"\x00binary\xff"


def test_get_into_a_directory_uses_the_key_basename(storage: Any, tmp_path: Path) -> None:
    storage.write("db/nightly.dump", io.BytesIO(b"dump"))
    snapshots("get", "db/nightly.dump", str(tmp_path))
    assert (tmp_path / "nightly.dump").read_bytes() == b"dump"


def test_get_replaces_an_existing_file_only_with_force(storage: Any, tmp_path: Path) -> None:
    storage.write("a.bin", io.BytesIO(b"new"))
    (tmp_path / "a.bin").write_bytes(b"old contents")
    message = fails("get", "a.bin", str(tmp_path / "a.bin"))
    assert message.endswith("it already exists (--force replaces it)")
    assert (tmp_path / "a.bin").read_bytes() == b"old contents"
    snapshots("get", "--force", "a.bin", str(tmp_path / "a.bin"))
    assert (tmp_path / "a.bin").read_bytes() == b"new"


def test_get_of_corrupt_data_leaves_the_destination_untouched(
    storage: Any, root: Path, tmp_path: Path
) -> None:
    storage.write("a.bin", io.BytesIO(b"original bytes"))
    flip_byte(root / "a.bin")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "a.bin").write_bytes(b"previous good copy")
    message = fails("get", "--force", "a.bin", str(dest / "a.bin"))
    assert message.startswith("SnapshotIntegrityError:")
    assert (dest / "a.bin").read_bytes() == b"previous good copy"
    assert os.listdir(dest) == ["a.bin"]  # no temporary file left behind


def test_get_of_a_missing_key_says_so(storage: Any, tmp_path: Path) -> None:
    assert fails("get", "no/such.dump", str(tmp_path / "x")) == "no object at 'no/such.dump'"
    assert not (tmp_path / "x").exists()


def test_get_into_a_missing_directory_fails_before_reading(storage: Any, tmp_path: Path) -> None:
    storage.write("a.bin", io.BytesIO(b"x"))
    message = fails("get", "a.bin", str(tmp_path / "missing" / "a.bin"))
    assert "does not exist" in message


def test_a_bad_key_is_refused_with_the_rule_it_breaks(storage: Any, artifact: Path) -> None:
    message = fails("put", str(artifact), "../escape")
    assert message == (
        "SnapshotStoragePathError: invalid key '../escape': segment '..' is not allowed"
    )
    assert storage.list("") == []


def test_put_of_a_missing_file_says_so(storage: Any, tmp_path: Path) -> None:
    message = fails("put", str(tmp_path / "nope.dump"), "k")
    assert message == f"cannot read {str(tmp_path / 'nope.dump')!r}: No such file or directory"


def test_ls_lists_keys_under_a_prefix_without_sidecars(storage: Any) -> None:
    for key in ("db/a.dump", "db/b.dump", "media/c.tar"):
        storage.write(key, io.BytesIO(b"x"))
    assert snapshots("ls") == "db/a.dump\ndb/b.dump\nmedia/c.tar\n"
    assert snapshots("ls", "db/") == "db/a.dump\ndb/b.dump\n"
    assert snapshots("ls", "nothing/") == ""


def test_rm_deletes_an_object(storage: Any) -> None:
    storage.write("a.bin", io.BytesIO(b"x"))
    snapshots("rm", "a.bin")
    assert not storage.exists("a.bin")


def test_rm_of_a_missing_key_fails_unless_forced(storage: Any) -> None:
    assert fails("rm", "a.bin") == "no object at 'a.bin'"
    snapshots("rm", "--force", "a.bin")


def test_sync_mirrors_one_prefix_onto_another(storage: Any) -> None:
    storage.write("daily/a", io.BytesIO(b"a"))
    storage.write("mirror/stale", io.BytesIO(b"s"))
    out = snapshots("sync", "daily/", "mirror/")
    assert "mirror/ now mirrors daily/" in out
    assert storage.list("mirror/") == ["mirror/a"]


def test_sync_refuses_overlapping_prefixes(storage: Any) -> None:
    assert "overlap" in fails("sync", "daily/", "daily/copy/")


def test_sync_on_a_basic_tier_stack_is_a_capability_error(tmp_path: Path) -> None:
    basic = Checksum(DjangoStorageBackend(FileSystemStorage(location=tmp_path)))
    with override_settings(SNAPSHOTS={"STORAGE": basic}):
        message = fails("sync", "a/", "b/")
    assert message.startswith("SnapshotStorageCapabilityError:")
    assert "'sync'" in message


def test_verify_reports_every_object_intact(storage: Any) -> None:
    for key in ("db/a.dump", "db/b.dump"):
        storage.write(key, io.BytesIO(os.urandom(1000)))
    assert "verified 2 objects: all intact" in snapshots("verify")


def test_verify_prints_each_failure_and_fails(storage: Any, root: Path) -> None:
    for key in ("db/a.dump", "db/b.dump", "db/c.dump"):
        storage.write(key, io.BytesIO(os.urandom(1000)))
    flip_byte(root / "db" / "b.dump")
    (root / "db" / "c.dump.sha256").unlink()
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("snapshots", "verify", stdout=out, stderr=io.StringIO())
    assert str(raised.value) == "2 of 3 objects failed verification"
    failures = [line for line in out.getvalue().splitlines() if line.startswith("FAILED")]
    assert [line.split(":")[0] for line in failures] == ["FAILED db/b.dump", "FAILED db/c.dump"]
    assert all("SnapshotIntegrityError" in line for line in failures)


def lose_object(root: Path, key: str, how: str) -> None:
    """Take the object at *key* away behind the Checksum layer's back, leaving
    its sidecar: delete it, or replace it by a directory holding other keys
    (stored through the stack, so they pass), or by a symbolic link."""
    path = root / key
    path.unlink()
    if how == "directory":
        stack = Checksum(LocalFileSystemBackend(root))
        stack.write(f"{key}/part-1", io.BytesIO(b"part one"))
        stack.write(f"{key}/part-2", io.BytesIO(b"part two"))
    elif how == "symlink":
        path.symlink_to(root / "db" / "other.dump")


LOST = ["deleted", "directory", "symlink"]


@pytest.mark.parametrize("how", LOST)
def test_verify_reports_a_sidecar_whose_object_is_missing(
    storage: Any, root: Path, how: str
) -> None:
    storage.write("db/lost.dump", io.BytesIO(b"lost"))
    storage.write("db/other.dump", io.BytesIO(b"other"))
    lose_object(root, "db/lost.dump", how)
    assert (root / "db" / "lost.dump.sha256").is_file()
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("snapshots", "verify", stdout=out, stderr=io.StringIO())
    total = 4 if how == "directory" else 2
    assert str(raised.value) == f"1 of {total} objects failed verification"
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().startswith(
        "FAILED db/lost.dump: the object is missing; only its checksum sidecar "
        "'db/lost.dump.sha256' remains ("
    )
    if how == "symlink":
        assert "SnapshotStoragePathError: " in out.getvalue()
        assert "is a symbolic link" in out.getvalue()
    else:
        assert "`snapshots rm --force db/lost.dump` removes the sidecar" in out.getvalue()


@pytest.mark.parametrize("how", ["deleted", "directory"])
def test_rm_force_removes_a_sidecar_whose_object_is_missing(
    storage: Any, root: Path, how: str
) -> None:
    storage.write("db/lost.dump", io.BytesIO(b"lost"))
    storage.write("db/other.dump", io.BytesIO(b"other"))
    lose_object(root, "db/lost.dump", how)
    snapshots("rm", "--force", "db/lost.dump")
    assert not (root / "db" / "lost.dump.sha256").exists()
    total = 3 if how == "directory" else 1
    assert snapshots("verify") == f"verified {total} object{'s' * (total > 1)}: all intact\n"


def test_verify_reports_only_the_orphan_sidecars_under_the_prefix(storage: Any, root: Path) -> None:
    storage.write("db/a.dump", io.BytesIO(b"a"))
    storage.write("media/b.tar", io.BytesIO(b"b"))
    (root / "db" / "a.dump").unlink()
    (root / "media" / "b.tar").unlink()
    assert fails("verify", "db/") == "1 of 1 object failed verification"
    # The sidecar db/a.dump.sha256 starts with this prefix; its object does not.
    assert snapshots("verify", "--allow-empty", "db/a.dump.s") == (
        "verified 0 objects: all intact\n"
    )


def test_verify_does_not_take_a_stray_sidecar_of_a_sidecar_for_an_object(
    storage: Any, root: Path
) -> None:
    storage.write("db/a.dump", io.BytesIO(b"a"))
    (root / "db" / "a.dump.sha256.sha256").write_bytes(b"stray")
    assert snapshots("verify") == "verified 1 object: all intact\n"


def test_verify_only_looks_under_the_prefix(storage: Any, root: Path) -> None:
    storage.write("db/a.dump", io.BytesIO(b"a"))
    storage.write("media/b.tar", io.BytesIO(b"b"))
    flip_byte(root / "media" / "b.tar", offset=0)
    assert "verified 1 object: all intact" in snapshots("verify", "db/")


def test_verify_goes_through_a_checksum_layer_inside_the_stack(tmp_path: Path) -> None:
    inner = LocalFileSystemBackend(tmp_path)
    stack = Logging(Checksum(Prefix(inner, "tenant-a")))
    stack.write("db/a.dump", io.BytesIO(b"data"))
    flip_byte(tmp_path / "tenant-a" / "db" / "a.dump", offset=0)
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        assert fails("verify") == "1 of 1 object failed verification"


class DropsFirstRead(LocalFileSystemBackend):
    """Drops the connection after 100 bytes of the first read of each
    object (its checksum sidecar is read whole)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: list[str] = []

    def read(self, path: str) -> Any:
        stream = super().read(path)
        if path.endswith(".sha256"):
            return stream
        self.opened.append(path)
        if self.opened.count(path) > 1:
            return stream
        head = stream.read(100)
        stream.close()

        def chunks() -> Iterator[bytes]:
            yield head
            raise ConnectionResetError("connection reset by peer")

        return io.BufferedReader(_ChunksReader(chunks()))

    def stream_read(self, path: str) -> Iterator[bytes]:
        with self.read(path) as stream:
            while chunk := stream.read(100):
                yield chunk


class _ChunksReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = next(self._chunks, b"")
        buffer[: len(data)] = data
        return len(data)


def test_verify_reads_each_object_through_the_stack_logged_and_retried(tmp_path: Path) -> None:
    flaky = DropsFirstRead(tmp_path)
    data = {"db/a.dump": os.urandom(1000), "db/b.dump": os.urandom(2000)}
    for key, content in data.items():
        Checksum(flaky).write(key, io.BytesIO(content))
    stack = Logging(Retry(Checksum(flaky), wait_initial=0, wait_max=0, wait_jitter=0))
    with override_settings(SNAPSHOTS={"STORAGE": stack}), capture_logs() as entries:
        assert snapshots("verify") == "verified 2 objects: all intact\n"
    assert sorted(flaky.opened) == ["db/a.dump"] * 2 + ["db/b.dump"] * 2  # each one resumed
    reads = [e for e in entries if e["event"] == "snapshots.storage.read"]
    assert [(e["path"], e["outcome"], e["bytes"], e["complete"]) for e in reads] == [
        ("db/a.dump", "ok", 1000, True),
        ("db/b.dump", "ok", 2000, True),
    ]


def test_verify_without_a_checksum_layer_is_a_clear_error() -> None:
    with override_settings(SNAPSHOTS={"STORAGE": Logging(MemoryBackend())}):
        message = fails("verify")
    assert "has no Checksum layer" in message
    assert "django_snapshots.storage.Checksum" in message


def test_check_shows_each_layer_with_its_tier_and_a_round_trip(tmp_path: Path) -> None:
    stack = Logging(Checksum(LocalFileSystemBackend(tmp_path)))
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        out = snapshots("check")
    lines = out.splitlines()
    assert lines[1:4] == [
        "  1. [advanced] Logging",
        "  2. [advanced] Checksum(algorithm='sha256')",
        f"  3. [advanced] LocalFileSystemBackend({str(tmp_path)!r})",
    ]
    steps = [line.split()[:2] for line in lines[5:10]]
    assert steps == [
        ["write", "ok"], ["read", "ok"], ["verify", "ok"], ["list", "ok"], ["delete", "ok"]
    ]  # fmt: skip
    assert all(" ms" in line for line in lines[5:10])
    assert lines[-1] == "OK"
    assert stack.list("") == []


def test_check_shows_a_basic_layer_and_skips_verify_without_checksum(tmp_path: Path) -> None:
    stack = Logging(DjangoStorageBackend(FileSystemStorage(location=tmp_path)))
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        out = snapshots("check")
    assert "  1. [basic   ] Logging" in out
    verify = next(line for line in out.splitlines() if line.startswith("  verify "))
    assert verify.split()[1] == "skipped"
    assert verify.endswith(" ms  no Checksum layer")


def _steps(out: str) -> dict[str, tuple[str, str]]:
    """The probe steps printed by ``check``: name -> (status, note)."""
    steps = {}
    for line in out.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name in ("write", "read", "verify", "list", "delete") and " ms" in rest:
            status, _, note = rest.strip().partition(" ")
            steps[name] = (status, note.partition(" ms")[2].strip())
    return steps


KEY = pyrage.x25519.Identity.generate()
WRITE_ONLY_NOTE = "the Encrypt layer holds no identity to decrypt with (a write-only stack)"


def test_check_on_a_write_only_stack_skips_the_read_and_verifies_ciphertext(
    tmp_path: Path,
) -> None:
    stack = Encrypt(Checksum(LocalFileSystemBackend(tmp_path)), recipients=[str(KEY.to_public())])
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        out = snapshots("check")
    steps = _steps(out)
    assert steps["read"] == ("skipped", WRITE_ONLY_NOTE)
    assert [steps[name][0] for name in ("write", "verify", "list", "delete")] == ["ok"] * 4
    assert steps["verify"][1].startswith("digest ")
    assert out.endswith("OK\n")
    assert list(tmp_path.rglob("*.*")) == []


def test_check_on_a_write_only_stack_skips_verify_when_checksum_sits_above_encrypt(
    tmp_path: Path,
) -> None:
    stack = Checksum(Encrypt(LocalFileSystemBackend(tmp_path), recipients=[str(KEY.to_public())]))
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        out = snapshots("check")
    steps = _steps(out)
    assert steps["read"] == ("skipped", WRITE_ONLY_NOTE)
    assert steps["verify"] == (
        "skipped",
        f"the Checksum layer sits above it, and {WRITE_ONLY_NOTE}",
    )
    assert out.endswith("OK\n")


def test_the_deploy_check_passes_on_a_write_only_stack(tmp_path: Path) -> None:
    stack = Encrypt(Checksum(LocalFileSystemBackend(tmp_path)), recipients=[str(KEY.to_public())])
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        assert checks.run_checks(tags=["snapshots"], include_deployment_checks=True) == []


def test_check_on_a_restore_only_stack_fails_at_write(tmp_path: Path) -> None:
    stack = Encrypt(Checksum(LocalFileSystemBackend(tmp_path)), identities=[str(KEY)])
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        assert fails("check") == "the storage failed the round trip at write"


def test_verify_checks_ciphertext_without_any_key(tmp_path: Path) -> None:
    full = Encrypt(
        Checksum(LocalFileSystemBackend(tmp_path)),
        recipients=[str(KEY.to_public())],
        identities=[str(KEY)],
    )
    full.write("db/a.dump", io.BytesIO(b"a" * 1000))
    full.write("db/b.dump", io.BytesIO(b"b" * 1000))
    server = Encrypt(Checksum(LocalFileSystemBackend(tmp_path)), recipients=[str(KEY.to_public())])
    with override_settings(SNAPSHOTS={"STORAGE": server}):
        assert snapshots("verify") == "verified 2 objects: all intact\n"
        flip_byte(tmp_path / "db" / "b.dump", offset=300)
        out = io.StringIO()
        with pytest.raises(CommandError) as raised:
            call_command("snapshots", "verify", stdout=out, stderr=io.StringIO())
    assert str(raised.value) == "1 of 2 objects failed verification"
    assert out.getvalue().startswith("FAILED db/b.dump: SnapshotIntegrityError: ")


def test_verify_reaches_the_checksum_layer_through_encrypt_and_prefix(tmp_path: Path) -> None:
    recipients = [str(KEY.to_public())]
    inner = Checksum(LocalFileSystemBackend(tmp_path))
    Encrypt(Prefix(inner, "tenant-a"), recipients=recipients).write("k", io.BytesIO(b"x"))
    inner.write("tenant-b/k", io.BytesIO(b"other tenant"))
    stack = Compress(Encrypt(Prefix(inner, "tenant-a"), recipients=recipients))
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        assert snapshots("verify") == "verified 1 object: all intact\n"


def test_verify_refuses_a_checksum_above_an_encrypt_without_identity(tmp_path: Path) -> None:
    stack = Checksum(Encrypt(LocalFileSystemBackend(tmp_path), recipients=[str(KEY.to_public())]))
    stack.write("db/a.dump", io.BytesIO(b"a"))
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        message = fails("verify")
    assert message == (
        "cannot verify: the Checksum layer sits above an Encrypt layer that holds no identity, "
        "so its digests are of plaintext this stack cannot decrypt; give Encrypt its "
        "identities, or put Checksum below Encrypt to verify ciphertext without keys"
    )


# keygen


def test_keygen_writes_a_private_identity_file_and_prints_only_its_recipient(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "backup-key.txt"
    out = snapshots("keygen", "-o", str(key_file))
    recipient = out.removesuffix("\n")
    assert out == f"{recipient}\n"
    assert recipient.startswith("age1")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    created, public, secret, end = key_file.read_text().split("\n")
    assert created.startswith("# created: ")
    assert public == f"# public key: {recipient}"
    assert secret.startswith("AGE-SECRET-KEY-1")
    assert end == ""
    writer = Encrypt(MemoryBackend(), recipients=[recipient])
    writer.write("k", io.BytesIO(b"for the new key"))
    reader = Encrypt(writer.__wrapped__, identities=[key_file])
    assert reader.read("k").read() == b"for the new key"


def test_keygen_makes_a_file_of_its_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        snapshots("keygen", "-o", str(tmp_path / "key.txt"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "key.txt").stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["file", "link", "dangling-link"])
def test_keygen_never_replaces_anything(tmp_path: Path, kind: str) -> None:
    existing = tmp_path / "old-key.txt"
    key_file = tmp_path / "key.txt"
    if kind == "file":
        key_file.write_text("the old key\n")
    else:
        existing.write_text("the old key\n")
        key_file.symlink_to(existing if kind == "link" else tmp_path / "nowhere")
    before = {path.name: path.read_text() for path in tmp_path.iterdir() if path.exists()}
    message = fails("keygen", "-o", str(key_file))
    assert message == (
        f"cannot write {str(key_file)!r}: it already exists, and keygen never replaces a key "
        "(backups encrypted for it would be lost); choose another name"
    )
    after = {path.name: path.read_text() for path in tmp_path.iterdir() if path.exists()}
    assert after == before
    assert not (tmp_path / "nowhere").exists()


def test_keygen_never_writes_the_secret_to_standard_output() -> None:
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("snapshots", "keygen", "-o", "-", stdout=out, stderr=out)
    assert str(raised.value) == (
        "keygen never writes the secret key to standard output: give -o FILE, a file that "
        "does not exist yet"
    )
    assert out.getvalue() == ""


def test_keygen_needs_an_output_file() -> None:
    with pytest.raises(CommandError, match="required: -o/--output"):
        call_command("snapshots", "keygen")


def test_keygen_in_a_missing_directory_is_a_one_line_error(tmp_path: Path) -> None:
    key_file = tmp_path / "missing" / "key.txt"
    assert fails("keygen", "-o", str(key_file)) == (
        f"cannot write {str(key_file)!r}: No such file or directory"
    )


def test_keygen_without_pyrage_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyrage", None)
    message = fails("keygen", "-o", str(tmp_path / "key.txt"))
    assert message == "keygen needs pyrage: pip install 'django-snapshots[encrypt]'"
    assert list(tmp_path.iterdir()) == []


def test_manage_py_keygen_makes_a_key_for_an_encrypted_project(tmp_path: Path) -> None:
    store = tmp_path / "store"
    setting = (
        '{"STORAGE": {"BACKEND": "django_snapshots.storage.LocalFileSystemBackend", '
        f'"OPTIONS": {{"location": {str(store)!r}}}, '
        '"WRAPPERS": [{"WRAPPER": "django_snapshots.storage.Encrypt", '
        '"OPTIONS": {"recipients_file": "backup.pub", "identities_file": "backup-key.txt"}}, '
        '"django_snapshots.storage.Checksum"]}}'
    )
    project = _project(tmp_path / "project", setting)
    (project / "site_settings.py").write_text(
        (project / "site_settings.py").read_text() + "BASE_DIR = __import__('os').getcwd()\n"
    )
    made = _manage(project, "snapshots", "keygen", "-o", "backup-key.txt")
    assert made.returncode == 0, made.stderr
    assert made.stderr == ""
    recipient = made.stdout.removesuffix("\n")
    assert made.stdout == f"{recipient}\n"
    assert recipient.startswith("age1")
    assert stat.S_IMODE((project / "backup-key.txt").stat().st_mode) == 0o600
    again = _manage(project, "snapshots", "keygen", "-o", "backup-key.txt")
    assert again.returncode == 1
    assert again.stderr.startswith("CommandError: cannot write 'backup-key.txt': it already exists")
    (project / "backup.pub").write_text(f"{recipient}\n")
    (tmp_path / "a.bin").write_bytes(b"secret data")
    assert _manage(project, "snapshots", "put", str(tmp_path / "a.bin"), "a.bin").returncode == 0
    assert (store / "a.bin").read_bytes().startswith(b"age-encryption.org/v1\n")
    assert _manage(project, "snapshots", "get", "a.bin", "-").stdout == "secret data"
    assert _manage(project, "check").returncode == 0


def test_check_fails_when_the_storage_does(tmp_path: Path) -> None:
    broken = Chaos(MemoryBackend(), failure_rate=1.0, seed=3)
    out = io.StringIO()
    with override_settings(SNAPSHOTS={"STORAGE": broken}), pytest.raises(CommandError) as raised:
        call_command("snapshots", "check", stdout=out, stderr=io.StringIO())
    assert str(raised.value) == "the storage failed the round trip at write"
    assert "FAILED" in out.getvalue()


def test_a_misconfiguration_is_a_one_line_error_naming_the_entry() -> None:
    bad = {"STORAGE": {"BACKEND": "django_snapshots.storage.NoSuchBackend"}}
    with override_settings(SNAPSHOTS=bad):
        message = fails("ls")
    assert message.startswith('misconfigured: SNAPSHOTS["STORAGE"]["BACKEND"]: cannot import')


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_has_help(subcommand: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        call_command("snapshots", subcommand, "--help")
    assert exited.value.code == 0
    assert f"snapshots {subcommand}" in capsys.readouterr().out


def test_a_missing_subcommand_is_a_usage_error() -> None:
    with pytest.raises(CommandError, match="required"):
        call_command("snapshots")


def test_the_commands_work_on_rclone_over_a_real_s3_server(
    s3_bucket: S3Bucket, artifact: Path, tmp_path: Path
) -> None:
    server = s3_bucket.server
    config = {
        "type": "s3",
        "provider": "Other",
        "endpoint": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
    }
    stack = Checksum(RcloneBackend(f"s3:{s3_bucket.name}/backups", config=config))
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        checked = snapshots("check")
        snapshots("put", str(artifact), "db/a.dump")
        listed = snapshots("ls")
        verified = snapshots("verify")
        snapshots("get", "db/a.dump", str(tmp_path / "copy.dump"))
    assert "  2. [advanced] RcloneBackend(" in checked
    assert checked.endswith("OK\n")
    assert server.secret_access_key not in checked
    assert listed == "db/a.dump\n"
    assert verified == "verified 1 object: all intact\n"
    assert (tmp_path / "copy.dump").read_bytes() == artifact.read_bytes()


def test_verify_and_check_follow_a_prefix_above_the_checksum_layer(tmp_path: Path) -> None:
    checksummed = Checksum(LocalFileSystemBackend(tmp_path))
    checksummed.write("tenant-b/db/other.dump", io.BytesIO(b"another tenant"))
    flip_byte(tmp_path / "tenant-b" / "db" / "other.dump", offset=0)
    stack = Prefix(checksummed, "tenant-a")
    stack.write("db/a.dump", io.BytesIO(b"a"))
    stack.write("db/b.dump", io.BytesIO(b"b"))
    flip_byte(tmp_path / "tenant-a" / "db" / "b.dump", offset=0)
    out = io.StringIO()
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        with pytest.raises(CommandError) as raised:
            call_command("snapshots", "verify", stdout=out, stderr=io.StringIO())
        checked = snapshots("check")
    # Only the tenant's objects, named as the stack names them.
    assert str(raised.value) == "1 of 2 objects failed verification"
    assert out.getvalue().startswith("FAILED db/b.dump: SnapshotIntegrityError: ")
    assert "verify  ok" in checked


def test_verify_names_a_missing_object_of_a_tenant_as_the_stack_does(tmp_path: Path) -> None:
    checksummed = Checksum(LocalFileSystemBackend(tmp_path))
    checksummed.write("tenant-b/db/other.dump", io.BytesIO(b"another tenant"))
    (tmp_path / "tenant-b" / "db" / "other.dump").unlink()
    stack = Logging(Prefix(checksummed, "tenant-a"))
    stack.write("db/a.dump", io.BytesIO(b"a"))
    stack.write("db/b.dump", io.BytesIO(b"b"))
    (tmp_path / "tenant-a" / "db" / "b.dump").unlink()
    out = io.StringIO()
    with override_settings(SNAPSHOTS={"STORAGE": stack}), pytest.raises(CommandError) as raised:
        call_command("snapshots", "verify", stdout=out, stderr=io.StringIO())
    # Only the tenant's sidecar, named as the stack names it.
    assert str(raised.value) == "1 of 2 objects failed verification"
    assert out.getvalue().startswith(
        "FAILED db/b.dump: the object is missing; only its checksum sidecar "
        "'db/b.dump.sha256' remains"
    )
    assert "tenant" not in out.getvalue()


def test_verify_reports_an_object_lost_on_a_real_s3_server(s3_bucket: S3Bucket) -> None:
    server = s3_bucket.server
    config = {
        "type": "s3",
        "provider": "Other",
        "endpoint": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
    }
    backend = RcloneBackend(f"s3:{s3_bucket.name}/backups", config=config)
    stack = Checksum(backend)
    stack.write("db/a.dump", io.BytesIO(b"a"))
    stack.write("db/b.dump", io.BytesIO(b"b"))
    backend.delete("db/b.dump")
    out = io.StringIO()
    with override_settings(SNAPSHOTS={"STORAGE": stack}), pytest.raises(CommandError) as raised:
        call_command("snapshots", "verify", stdout=out, stderr=io.StringIO())
    assert str(raised.value) == "1 of 2 objects failed verification"
    assert out.getvalue().startswith("FAILED db/b.dump: the object is missing; ")


def _project(directory: Path, snapshots: str) -> Path:
    directory.mkdir()
    (directory / "manage.py").write_text(
        "import sys\n"
        "from django.core.management import execute_from_command_line\n"
        "execute_from_command_line(sys.argv)\n"
    )
    (directory / "site_settings.py").write_text(
        "SECRET_KEY = 'not-secret'\n"
        "INSTALLED_APPS = ['django_snapshots']\n"
        f"SNAPSHOTS = {snapshots}\n"
    )
    return directory


def _manage(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["DJANGO_SETTINGS_MODULE"] = "site_settings"
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_manage_py_runs_the_commands_of_a_real_project(tmp_path: Path, artifact: Path) -> None:
    store = tmp_path / "store"
    setting = (
        '{"STORAGE": {"BACKEND": "django_snapshots.storage.LocalFileSystemBackend", '
        f'"OPTIONS": {{"location": {str(store)!r}}}, '
        '"WRAPPERS": ["django_snapshots.storage.Checksum"]}}'
    )
    project = _project(tmp_path / "project", setting)
    put = _manage(project, "snapshots", "put", str(artifact), "db/a.dump")
    assert put.returncode == 0, put.stderr
    assert _manage(project, "snapshots", "ls").stdout == "db/a.dump\n"
    assert (store / "db" / "a.dump.sha256").exists()
    missing = _manage(project, "snapshots", "get", "db/missing.dump", "out.dump")
    assert missing.returncode == 1
    assert missing.stderr == "CommandError: no object at 'db/missing.dump'\n"
    usage = _manage(project, "snapshots", "verify", "--help")
    assert usage.returncode == 0
    assert usage.stdout.startswith("usage: manage.py snapshots verify")


def test_manage_py_reports_a_misconfiguration_in_one_line(tmp_path: Path) -> None:
    project = _project(tmp_path / "project", '{"STORAGE": {"BACKEND": "nowhere.Backend"}}')
    result = _manage(project, "snapshots", "ls")
    assert result.returncode == 1
    assert result.stderr.startswith(
        'CommandError: misconfigured: SNAPSHOTS["STORAGE"]["BACKEND"]: cannot import'
    )
    assert result.stderr.count("\n") == 1
    checked = _manage(project, "check")
    assert checked.returncode == 1
    assert "(snapshots.E004)" in checked.stderr


def test_verify_of_an_empty_prefix_fails_unless_allowed(storage: Any) -> None:
    storage.write("db/a.dump", io.BytesIO(b"a"))
    assert fails("verify", "bd/") == (
        "nothing to verify: no object under 'bd/' (--allow-empty makes this a success)"
    )
    assert snapshots("verify", "bd/", "--allow-empty") == "verified 0 objects: all intact\n"


class _UndeletableMemory(MemoryBackend):
    """A store where nothing can be deleted, like a bucket with a retention lock."""

    def delete(self, path: str) -> None:
        raise PermissionError(f"deleting {path!r} is not allowed")


def test_a_probe_object_left_behind_is_named_and_kept_out_of_ls_and_verify() -> None:
    stack = Checksum(_UndeletableMemory())
    stack.write("db/a.dump", io.BytesIO(b"a"))
    out = io.StringIO()
    with override_settings(SNAPSHOTS={"STORAGE": stack}):
        with pytest.raises(CommandError) as raised:
            call_command("snapshots", "check", stdout=out, stderr=io.StringIO())
        [left] = [key for key in stack.list("") if key.startswith(".snapshots-probe/")]
        listed = snapshots("ls")
        verified = snapshots("verify")
        probes = snapshots("ls", ".snapshots-probe/")
        errors = checks.run_checks(include_deployment_checks=True, tags=["snapshots"])
    assert str(raised.value) == "the storage failed the round trip at delete"
    failed = [line for line in out.getvalue().splitlines() if "FAILED" in line]
    assert failed[0].endswith(
        f"PermissionError: deleting {left!r} is not allowed; "
        f"the probe object {left!r} was left behind and must be removed"
    )
    assert listed == "db/a.dump\n"
    assert verified == "verified 1 object: all intact\n"
    assert probes == f"{left}\n"
    [e101] = [error for error in errors if error.id == "snapshots.E101"]
    assert "was left behind and must be removed" in e101.msg
    assert ".snapshots-probe/" in e101.msg


def _local_project(tmp_path: Path) -> tuple[Path, Path]:
    store = tmp_path / "store"
    setting = (
        '{"STORAGE": {"BACKEND": "django_snapshots.storage.LocalFileSystemBackend", '
        f'"OPTIONS": {{"location": {str(store)!r}}}}}}}'
    )
    return _project(tmp_path / "project", setting), store


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--settings", "site_settings"],
        ["ls", "-v", "2"],
        ["ls", "db/", "--verbosity", "0", "--traceback", "--no-color"],
        ["ls", "--force-color", "--pythonpath", "."],
    ],
)
def test_manage_py_takes_django_options_after_the_subcommand(
    tmp_path: Path, args: list[str]
) -> None:
    project, store = _local_project(tmp_path)
    (store / "db").mkdir(parents=True)
    (store / "db" / "a.dump").write_bytes(b"a")
    result = _manage(project, "snapshots", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "db/a.dump\n"


def test_manage_py_ends_quietly_when_the_reader_stops_early(tmp_path: Path, artifact: Path) -> None:
    project, store = _local_project(tmp_path)
    store.mkdir()
    (store / "big.dump").write_bytes(artifact.read_bytes() * 20)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["DJANGO_SETTINGS_MODULE"] = "site_settings"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "snapshots", "get", "big.dump", "-"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    assert len(process.stdout.read(10)) == 10
    process.stdout.close()  # like `| head -c 10`
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == b""
    process.stderr.close()


def test_manage_py_keeps_log_lines_off_standard_output(tmp_path: Path) -> None:
    store = tmp_path / "store"
    setting = (
        '{"STORAGE": {"BACKEND": "django_snapshots.storage.LocalFileSystemBackend", '
        f'"OPTIONS": {{"location": {str(store)!r}}}, '
        '"WRAPPERS": ["django_snapshots.storage.Logging", "django_snapshots.storage.Retry", '
        '"django_snapshots.storage.Checksum"]}}'
    )
    project = _project(tmp_path / "project", setting)
    (tmp_path / "a.bin").write_bytes(b"fourteen bytes")
    assert _manage(project, "snapshots", "put", str(tmp_path / "a.bin"), "a.bin").returncode == 0
    got = _manage(project, "snapshots", "get", "a.bin", "-")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "fourteen bytes"
    assert "snapshots.storage.read" in got.stderr
    listed = _manage(project, "snapshots", "ls")
    assert listed.stdout == "a.bin\n"
    assert "snapshots.storage.list" in listed.stderr


# The import graph


def _imports_of_the_package() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Map each module of django_snapshots to the modules of the package it
    imports at module level (a ``TYPE_CHECKING`` block included), and to
    those it imports inside functions."""
    import django_snapshots

    root = Path(django_snapshots.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    top: dict[str, set[str]] = {name: set() for name in modules}
    inner: dict[str, set[str]] = {name: set() for name in modules}

    def targets(node: ast.Import | ast.ImportFrom, name: str) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
            return
        base = node.module or ""
        if node.level:
            package = (
                name.split(".") if modules[name].name == "__init__.py" else name.split(".")[:-1]
            )
            anchor = package[: len(package) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            yield full if full in modules else base

    def visit(node: ast.AST, name: str, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found = {t for t in targets(child, name) if t in modules and t != name}
                (inner if in_function else top)[name] |= found
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, name, in_function or nested)

    for name, path in modules.items():
        visit(ast.parse(path.read_text(encoding="utf-8")), name, False)
    return top, inner


def test_the_package_imports_form_no_cycle() -> None:
    top, inner = _imports_of_the_package()
    assert top["django_snapshots._cli"] >= {"django_snapshots._inspect"}  # the walk sees imports
    assert "django_snapshots._demo" in inner["django_snapshots._cli"]  # the demo subcommand's
    # No two modules import each other, wherever the imports are.
    pairs = {
        tuple(sorted((a, b))) for a in top for b in top[a] | inner[a] if a in top[b] | inner[b]
    }
    assert not pairs
    # And the module-level imports, which run when a module is loaded, form
    # no cycle of any length.
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        for imported in sorted(top[name]):
            walk(imported, [*path, name])
        done.add(name)

    for name in sorted(top):
        walk(name, [])


@pytest.mark.parametrize("target", ["db/a.dump", "db/a.dump.sha256", "db/new.copy", "."])
def test_get_never_writes_into_the_storage_s_own_directory(
    storage: Any, root: Path, target: str
) -> None:
    storage.write("db/a.dump", io.BytesIO(b"backup a"))
    storage.write("db/b.dump", io.BytesIO(b"backup b"))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    destination = root / target
    message = fails("get", "--force", "db/b.dump", str(destination))
    assert "inside the storage's own directory" in message
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert storage.read("db/a.dump").read() == b"backup a"


def test_get_into_the_store_through_a_symbolic_link_is_refused_too(
    storage: Any, root: Path, tmp_path: Path
) -> None:
    storage.write("db/a.dump", io.BytesIO(b"backup a"))
    storage.write("db/b.dump", io.BytesIO(b"backup b"))
    (tmp_path / "alias").symlink_to(root / "db")
    message = fails("get", "--force", "db/b.dump", str(tmp_path / "alias" / "a.dump"))
    assert "inside the storage's own directory" in message
    assert storage.read("db/a.dump").read() == b"backup a"


def test_a_project_made_by_django_admin_startproject_runs_every_command(
    tmp_path: Path, artifact: Path
) -> None:
    # The project Django itself generates, with the README's stack added to
    # its settings: the commands an operator runs, end to end.
    made = subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    settings = tmp_path / "mysite" / "settings.py"
    store = tmp_path / "backups"
    settings.write_text(
        settings.read_text().replace(
            "INSTALLED_APPS = [", "INSTALLED_APPS = [\n    'django_snapshots',", 1
        )
        + "\nfrom django_snapshots.storage import "
        "Checksum, LocalFileSystemBackend, Logging, Retry\n"
        f"BACKUPS = LocalFileSystemBackend({str(store)!r})\n"
        "SNAPSHOTS = {'STORAGE': Logging(Retry(Checksum(BACKUPS)))}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}

    def manage(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=tmp_path, env=env, input=input, capture_output=True, timeout=120,
        )  # fmt: skip

    assert manage("check").returncode == 0
    assert manage("snapshots", "put", str(artifact), "db/a.dump").returncode == 0
    assert manage("snapshots", "put", "-", "db/b.dump", input=b"from stdin").returncode == 0
    listed = manage("snapshots", "ls")
    assert listed.stdout == b"db/a.dump\ndb/b.dump\n"  # keys only: the audit log is on stderr
    assert b"snapshots.storage.list" in listed.stderr
    restored = manage("snapshots", "get", "db/a.dump", "-")
    assert restored.stdout == artifact.read_bytes()
    assert manage("snapshots", "verify").returncode == 0
    assert manage("snapshots", "rm", "db/b.dump").returncode == 0
    assert manage("snapshots", "ls", "--settings", "mysite.settings").stdout == b"db/a.dump\n"


def leave_temporary_file(root: Path, directory: str, *, hours_old: float, size: int = 10) -> Path:
    """Put the very file LocalFileSystemBackend writes into before it
    renames it, as a write killed midway leaves it, last written
    *hours_old* hours ago."""
    path = root / directory / f".snapshots-write-{os.urandom(8).hex()}\x7f"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = path.stat().st_mtime - hours_old * 3600
    os.utime(path, (when, when))
    return path


def test_cleanup_removes_old_leftovers_and_keeps_keys_and_young_writes(
    storage: Any, root: Path
) -> None:
    storage.write("db/latest.dump", io.BytesIO(b"dump"))
    old = leave_temporary_file(root, "db", hours_old=49, size=123)
    young = leave_temporary_file(root, "db", hours_old=1)
    out = snapshots("cleanup", "--older-than", "24h")
    name = f"db/{old.name}"
    assert out.splitlines() == [
        f"removed {name!r} (temporary file, last written 2d ago, 123 bytes)",
        "removed 1 leftover older than 24h",
    ]
    assert not old.exists()
    assert young.exists()
    assert snapshots("verify") == "verified 1 object: all intact\n"


def test_cleanup_dry_run_changes_nothing(storage: Any, root: Path) -> None:
    old = leave_temporary_file(root, "db", hours_old=25)
    out = snapshots("cleanup", "--dry-run")
    assert out.splitlines()[-1] == (
        "would remove 1 leftover older than 24h (dry run: nothing changed)"
    )
    assert out.startswith(f"would remove {'db/' + old.name!r} (temporary file")
    assert old.exists()


def test_cleanup_under_a_prefix_leaves_a_sibling_prefix_alone(storage: Any, root: Path) -> None:
    ours = leave_temporary_file(root, "acme/db", hours_old=30)
    theirs = leave_temporary_file(root, "acmecorp/db", hours_old=30)
    out = snapshots("cleanup", "acme/", "--older-than", "1d")
    assert out.splitlines()[-1] == "removed 1 leftover under 'acme/' older than 1d"
    assert not ours.exists()
    assert theirs.exists()


def test_cleanup_through_a_tenant_prefix_names_leftovers_as_the_tenant_sees_them(
    root: Path,
) -> None:
    ours = leave_temporary_file(root, "acme/db", hours_old=30)
    theirs = leave_temporary_file(root, "other/db", hours_old=30)
    with override_settings(SNAPSHOTS={"STORAGE": Prefix(LocalFileSystemBackend(root), "acme")}):
        out = snapshots("cleanup")
    assert out.splitlines()[0].startswith(f"removed {'db/' + ours.name!r} (temporary file")
    assert not ours.exists()
    assert theirs.exists()


@pytest.mark.parametrize("duration", ["24", "-1h", "1.5h", "24 h", "day", ""])
def test_cleanup_refuses_a_duration_it_cannot_read(storage: Any, duration: str) -> None:
    assert "--older-than: not a duration" in fails("cleanup", f"--older-than={duration}")


def test_cleanup_refuses_a_duration_too_long_to_count_in_one_line(storage: Any) -> None:
    message = fails("cleanup", "--older-than", "99999999999w")
    assert message.startswith("--older-than: duration '99999999999w' is too long")


def test_cleanup_prints_the_duration_it_read_not_the_whitespace_around_it(
    storage: Any, root: Path
) -> None:
    leave_temporary_file(root, "db", hours_old=30)
    out = snapshots("cleanup", "--older-than", "\n\x0b24H\x1c\n")
    assert out.splitlines()[-1] == "removed 1 leftover older than 24h"
    assert len(out.splitlines()) == 2


@pytest.mark.parametrize("duration", ["0s", "59s"])
def test_cleanup_refuses_an_age_that_would_catch_running_writes(
    storage: Any, root: Path, duration: str
) -> None:
    young = leave_temporary_file(root, "db", hours_old=0)
    message = fails("cleanup", "--older-than", duration)
    assert "still running; give at least 1m" in message
    assert young.exists()


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "logged"])
def test_cleanup_of_a_storage_without_cleanup_says_so(wrapped: bool) -> None:
    # A third-party backend with the five methods and nothing more.
    storage = Logging(BasicMemory()) if wrapped else BasicMemory()
    with override_settings(SNAPSHOTS={"STORAGE": storage}):
        message = fails("cleanup")
    assert "BasicMemory has no cleanup()" in message

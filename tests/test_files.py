"""SnapshotFileStorage: a snapshot stack seen as a Django file storage."""

from __future__ import annotations

import io
import itertools
import os
import re
from pathlib import Path
from typing import IO, Any

import pyrage
import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.files.uploadedfile import (
    InMemoryUploadedFile,
    SimpleUploadedFile,
    TemporaryUploadedFile,
)
from django.db import connection, models
from django.db.migrations.writer import MigrationWriter
from django.test import override_settings
from django.test.utils import isolate_apps

from django_snapshots import (
    SnapshotEncryptionError,
    SnapshotIntegrityError,
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
)
from django_snapshots.conf import InvalidStorageSettingError
from django_snapshots.files import SnapshotFile, SnapshotFileStorage
from django_snapshots.storage import (
    Checksum,
    Encrypt,
    LocalFileSystemBackend,
    MemoryBackend,
    Retry,
)
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.testing import Chaos

LOCAL = "django_snapshots.storage.LocalFileSystemBackend"
CHECKSUM = "django_snapshots.storage.Checksum"


class Counting:
    """A storage that counts the objects it opens and the bytes it delivers."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner if inner is not None else MemoryBackend()
        self.opened = 0
        self.delivered = 0
        self.calls: list[tuple[str, str]] = []

    def read(self, path: str) -> IO[bytes]:
        self.calls.append(("read", path))
        source = self.inner.read(path)
        self.opened += 1
        return _CountingReader(self, source)  # type: ignore[return-value]

    def write(self, path: str, content: IO[bytes]) -> None:
        self.calls.append(("write", path))
        self.inner.write(path, content)

    def list(self, prefix: str) -> list[str]:
        self.calls.append(("list", prefix))
        return self.inner.list(prefix)  # type: ignore[no-any-return]

    def delete(self, path: str) -> None:
        self.calls.append(("delete", path))
        self.inner.delete(path)

    def exists(self, path: str) -> bool:
        self.calls.append(("exists", path))
        return self.inner.exists(path)  # type: ignore[no-any-return]


class _CountingReader(io.RawIOBase):
    def __init__(self, owner: Counting, source: IO[bytes]) -> None:
        self._owner = owner
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        self._owner.delivered += len(data)
        return len(data)

    def close(self) -> None:
        self._source.close()
        super().close()


def _files(**kwargs: Any) -> SnapshotFileStorage:
    return SnapshotFileStorage(storage=Checksum(MemoryBackend()), **kwargs)


def _big(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


# The stack


def test_a_stack_object_is_used_as_given() -> None:
    stack = Checksum(MemoryBackend())
    files = SnapshotFileStorage(storage=stack)
    files.save("a.txt", ContentFile(b"data"))
    assert files.stack is stack
    assert stack.read("a.txt").read() == b"data"


def test_stack_data_builds_the_stack_of_the_setting_shape(tmp_path: Path) -> None:
    files = SnapshotFileStorage(
        storage={"BACKEND": LOCAL, "OPTIONS": {"location": tmp_path}, "WRAPPERS": [CHECKSUM]}
    )
    files.save("db/a.dump", ContentFile(b"dump"))
    assert (
        repr(files.stack)
        == f"Checksum(LocalFileSystemBackend({str(tmp_path)!r}), algorithm='sha256')"
    )
    assert (tmp_path / "db" / "a.dump").read_bytes() == b"dump"
    assert (tmp_path / "db" / "a.dump.sha256").exists()


@pytest.mark.parametrize("spelling", [str.upper, str.lower])
def test_stack_data_may_be_given_as_keyword_arguments_in_either_case(
    tmp_path: Path, spelling: Any
) -> None:
    files = SnapshotFileStorage(
        **{
            spelling("BACKEND"): LOCAL,
            spelling("OPTIONS"): {"location": tmp_path},
            spelling("WRAPPERS"): [CHECKSUM],
        }
    )
    files.save("a.txt", ContentFile(b"x"))
    assert (tmp_path / "a.txt.sha256").exists()


def test_django_dbbackup_builds_it_from_lower_cased_options(tmp_path: Path) -> None:
    from dbbackup.storage import Storage as DbbackupStorage

    # django-dbbackup lower-cases the names of the options it passes on.
    wrapper = DbbackupStorage(
        "django_snapshots.files.SnapshotFileStorage",
        BACKEND=LOCAL,
        OPTIONS={"location": tmp_path},
        WRAPPERS=[CHECKSUM],
        PREFIX="tenant-a",
    )
    wrapper.write_file(ContentFile(b"dump"), "default-2026-11-26-120000.dump")
    assert (tmp_path / "tenant-a" / "default-2026-11-26-120000.dump").read_bytes() == b"dump"
    assert wrapper.list_backups() == ["default-2026-11-26-120000.dump"]


def test_no_stack_means_get_storage_at_every_call() -> None:
    files = SnapshotFileStorage()
    first, second = MemoryBackend(), MemoryBackend()
    with override_settings(SNAPSHOTS={"STORAGE": first}):
        files.save("a.txt", ContentFile(b"1"))
    with override_settings(SNAPSHOTS={"STORAGE": second}):
        assert not files.exists("a.txt")
        files.save("b.txt", ContentFile(b"2"))
    assert first.list("") == ["a.txt"]
    assert second.list("") == ["b.txt"]


def test_no_stack_with_a_prefix_follows_get_storage_too() -> None:
    files = SnapshotFileStorage(prefix="site")
    first, second = MemoryBackend(), MemoryBackend()
    with override_settings(SNAPSHOTS={"STORAGE": first}):
        files.save("a.txt", ContentFile(b"1"))
    with override_settings(SNAPSHOTS={"STORAGE": second}):
        files.save("b.txt", ContentFile(b"2"))
    assert first.list("") == ["site/a.txt"]
    assert second.list("") == ["site/b.txt"]


def test_it_is_usable_from_the_storages_setting(tmp_path: Path) -> None:
    entry = {
        "BACKEND": "django_snapshots.files.SnapshotFileStorage",
        "OPTIONS": {
            "storage": {
                "BACKEND": LOCAL,
                "OPTIONS": {"location": tmp_path},
                "WRAPPERS": [CHECKSUM],
            },
            "prefix": "backups",
        },
    }
    with override_settings(STORAGES={**_default_storages(), "backups": entry}):
        files = storages["backups"]
        assert isinstance(files, SnapshotFileStorage)
        assert files.save("a.txt", ContentFile(b"x")) == "a.txt"
    assert (tmp_path / "backups" / "a.txt").read_bytes() == b"x"


def test_wrong_stack_data_names_the_entry_and_this_storage() -> None:
    files = SnapshotFileStorage(
        storage={"BACKEND": LOCAL, "OPTIONS": {"location": "x"}, "WRAPPERS": [CHECKSUM + "m"]}
    )
    with pytest.raises(InvalidStorageSettingError) as caught:
        files.exists("a.txt")
    assert str(caught.value).startswith('SnapshotFileStorage(storage=...)["WRAPPERS"][0]: ')
    assert "SNAPSHOTS" not in str(caught.value)


def test_stack_data_options_never_appear_in_errors_or_the_repr() -> None:
    secret = "s3cr3t-do-not-show"
    files = SnapshotFileStorage(
        storage={"BACKEND": LOCAL, "OPTIONS": {"location": "x", "password": secret}}
    )
    assert secret not in repr(files)
    with pytest.raises(InvalidStorageSettingError) as caught:
        files.exists("a.txt")
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"storage": "django_snapshots.storage.MemoryBackend"}, "not str"),
        ({"storage": MemoryBackend}, "not the class MemoryBackend"),
        ({"storage": MemoryBackend(), "BACKEND": LOCAL}, "not both"),
        ({"BACKEND": LOCAL, "backend": LOCAL}, "twice"),
        ({"location": "/srv"}, "unexpected keyword argument 'location'"),
        ({"prefix": 3}, "prefix as a str"),
    ],
)
def test_wrong_arguments_are_refused_when_it_is_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        SnapshotFileStorage(**kwargs)


def test_an_invalid_prefix_is_refused_when_it_is_built() -> None:
    with pytest.raises(ValueError, match=r"Prefix\(\) needs a valid key"):
        SnapshotFileStorage(storage=MemoryBackend(), prefix="../up")


def test_prefix_scopes_the_files() -> None:
    shared = Checksum(MemoryBackend())
    acme = SnapshotFileStorage(storage=shared, prefix="acme")
    globex = SnapshotFileStorage(storage=shared, prefix="globex")
    acme.save("db.dump", ContentFile(b"a"))
    globex.save("db.dump", ContentFile(b"g"))
    assert shared.list("") == ["acme/db.dump", "globex/db.dump"]
    assert acme.listdir("") == ([], ["db.dump"])
    assert acme.open("db.dump").read() == b"a"


# Migrations


def test_deconstruct_returns_the_arguments_as_given() -> None:
    data = {"BACKEND": LOCAL, "OPTIONS": {"location": "backups"}}
    path, args, kwargs = SnapshotFileStorage(storage=data, prefix="media").deconstruct()
    assert path == "django_snapshots.files.SnapshotFileStorage"
    assert (args, kwargs) == ((), {"storage": data, "prefix": "media"})
    assert SnapshotFileStorage().deconstruct() == (path, (), {})


def test_a_file_field_with_stack_data_serializes_into_a_migration() -> None:
    data = {"BACKEND": LOCAL, "OPTIONS": {"location": "backups"}, "WRAPPERS": [CHECKSUM]}
    field = models.FileField(storage=SnapshotFileStorage(storage=data, prefix="media"))
    source, imports = MigrationWriter.serialize(field)
    assert "django_snapshots.files.SnapshotFileStorage(" in source
    assert "'prefix': 'media'" in source or "prefix='media'" in source
    assert "import django_snapshots.files" in imports
    rebuilt = eval(source, {"models": models, "django_snapshots": __import__("django_snapshots")})
    assert rebuilt.storage.deconstruct() == field.storage.deconstruct()


def test_a_file_field_with_a_stack_object_does_not_serialize() -> None:
    field = models.FileField(storage=SnapshotFileStorage(storage=MemoryBackend()))
    with pytest.raises(ValueError, match="Cannot serialize"):
        MigrationWriter.serialize(field)


# Reading


def test_open_streams_one_chunk_at_a_time() -> None:
    counting = Counting()
    data = _big(20 * CHUNK_SIZE)
    counting.inner.write("big.bin", io.BytesIO(data))
    files = SnapshotFileStorage(storage=counting)
    with files.open("big.bin") as file:
        assert file.read(10) == data[:10]
        assert counting.delivered <= 2 * CHUNK_SIZE
        total = 10
        while chunk := file.read(CHUNK_SIZE):
            total += len(chunk)
    assert total == 20 * CHUNK_SIZE
    assert counting.opened == 1


def test_open_returns_a_django_file_with_the_name() -> None:
    files = _files()
    files.save("dir/a.txt", ContentFile(b"abc"))
    file = files.open("dir/a.txt")
    assert isinstance(file, File)
    assert isinstance(file, SnapshotFile)
    assert file.name == "dir/a.txt"
    assert file.mode == "rb"
    assert list(file.chunks()) == [b"abc"]
    file.close()


@pytest.mark.parametrize("mode", ["r", "wb", "w", "ab", "rb+", "r+b", "x"])
def test_open_refuses_every_mode_but_rb(mode: str) -> None:
    files = _files()
    files.save("a.txt", ContentFile(b"abc"))
    with pytest.raises(ValueError, match=r"only to read them in binary mode \('rb'\)"):
        files.open("a.txt", mode)


def test_open_of_a_missing_file_raises_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        _files().open("missing.txt")


def test_an_open_file_has_no_fileno() -> None:
    # django-dbbackup restores straight from a file with a fileno(), without
    # the temporary copy that lets a failed verification stop it first.
    files = SnapshotFileStorage(storage=Checksum(LocalFileSystemBackend(_tmp())))
    files.save("a.dump", ContentFile(b"abc"))
    with files.open("a.dump") as file, pytest.raises(io.UnsupportedOperation):
        file.fileno()


def test_forward_seeks_read_ahead_without_reopening() -> None:
    counting = Counting()
    data = _big(8 * CHUNK_SIZE)
    counting.inner.write("big.bin", io.BytesIO(data))
    with SnapshotFileStorage(storage=counting).open("big.bin") as file:
        file.seek(3 * CHUNK_SIZE + 5)
        assert file.tell() == 3 * CHUNK_SIZE + 5
        assert file.read(4) == data[3 * CHUNK_SIZE + 5 : 3 * CHUNK_SIZE + 9]
        file.seek(CHUNK_SIZE, os.SEEK_CUR)
        assert file.read(3) == data[4 * CHUNK_SIZE + 9 : 4 * CHUNK_SIZE + 12]
    assert counting.opened == 1


def test_backward_seeks_read_the_object_again() -> None:
    counting = Counting()
    data = _big(6 * CHUNK_SIZE)
    counting.inner.write("big.bin", io.BytesIO(data))
    with SnapshotFileStorage(storage=counting).open("big.bin") as file:
        file.seek(5 * CHUNK_SIZE)
        assert file.read(10) == data[5 * CHUNK_SIZE : 5 * CHUNK_SIZE + 10]
        file.seek(7)
        assert file.read(5) == data[7:12]
        file.seek(0)
        assert file.read() == data
    assert counting.opened == 3  # once, then once per backward seek


def test_seeking_to_where_the_file_is_reads_nothing_again() -> None:
    counting = Counting()
    counting.inner.write("a.bin", io.BytesIO(b"abcdef"))
    with SnapshotFileStorage(storage=counting).open("a.bin") as file:
        file.seek(0)
        assert file.read() == b"abcdef"
    assert counting.opened == 1


def test_seeks_from_the_end_and_past_the_end() -> None:
    files = _files()
    data = _big(3 * CHUNK_SIZE + 7)
    files.save("a.bin", ContentFile(data))
    with files.open("a.bin") as file:
        assert file.seek(-4, os.SEEK_END) == len(data) - 4
        assert file.read() == data[-4:]
        assert file.seek(len(data) + 10) == len(data) + 10
        assert file.read(5) == b""
        assert file.tell() == len(data) + 10
        file.seek(2)
        assert file.read(3) == data[2:5]
        with pytest.raises(ValueError, match="negative seek"):
            file.seek(-1)


def test_tarfile_reads_an_archive_from_an_open_file() -> None:
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for index in range(3):
            member = tarfile.TarInfo(f"media/file{index}.bin")
            payload = _big(CHUNK_SIZE + index)
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    files = _files()
    files.save("media.tar", ContentFile(archive.getvalue()))
    with files.open("media.tar") as file:
        file.seek(0)
        with tarfile.open(fileobj=file, mode="r:") as tar:
            contents = {info.name: tar.extractfile(info).read() for info in tar}  # type: ignore[union-attr]
    assert contents == {f"media/file{i}.bin": _big(CHUNK_SIZE + i) for i in range(3)}


def test_size_of_an_open_file_does_not_move_it_and_is_not_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Django's File.size would measure a local file of the same name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"a local file of another size")
    files = _files()
    files.save("a.bin", ContentFile(b"0123456789"))
    with files.open("a.bin") as file:
        assert file.read(3) == b"012"
        assert file.size == 10
        assert file.read() == b"3456789"


def test_a_closed_file_opens_again_from_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_bytes(b"a local file")
    files = _files()
    files.save("a.txt", ContentFile(b"stored"))
    file = files.open("a.txt")
    assert file.read(2) == b"st"
    file.close()
    with file.open() as again:
        assert again.read() == b"stored"
    with pytest.raises(ValueError, match="binary mode"):
        file.open("w")


def test_reads_after_close_fail() -> None:
    files = _files()
    files.save("a.txt", ContentFile(b"stored"))
    file = files.open("a.txt")
    file.close()
    with pytest.raises(ValueError, match="closed"):
        file.read()


def test_size_reads_the_whole_object() -> None:
    counting = Counting()
    counting.inner.write("a.bin", io.BytesIO(_big(3 * CHUNK_SIZE + 1)))
    files = SnapshotFileStorage(storage=counting)
    assert files.size("a.bin") == 3 * CHUNK_SIZE + 1
    assert counting.delivered == 3 * CHUNK_SIZE + 1
    with pytest.raises(FileNotFoundError):
        files.size("missing.bin")


# Writing


def test_save_streams_the_content_through_write() -> None:
    counting = Counting()
    files = SnapshotFileStorage(storage=counting)
    data = _big(5 * CHUNK_SIZE + 3)
    assert files.save("a.bin", File(io.BytesIO(data))) == "a.bin"
    assert counting.calls == [("exists", "a.bin"), ("write", "a.bin")]
    assert counting.inner.read("a.bin").read() == data


def test_save_reads_the_content_from_its_start() -> None:
    content = io.BytesIO(b"0123456789")
    content.seek(4)
    files = _files()
    files.save("a.bin", content)
    assert files.open("a.bin").read() == b"0123456789"


def test_save_encodes_text_as_utf8_as_file_system_storage_does(tmp_path: Path) -> None:
    files = _files()
    files.save("a.txt", ContentFile("héllo"))
    FileSystemStorage(location=tmp_path).save("a.txt", ContentFile("héllo"))
    assert files.open("a.txt").read() == (tmp_path / "a.txt").read_bytes() == "héllo".encode()


def test_save_never_overwrites_by_default() -> None:
    files = _files()
    assert files.save("a.txt", ContentFile(b"1")) == "a.txt"
    second = files.save("a.txt", ContentFile(b"2"))
    assert re.fullmatch(r"a_[A-Za-z0-9]{7}\.txt", second)
    assert files.open("a.txt").read() == b"1"
    assert files.open(second).read() == b"2"


def test_allow_overwrite_replaces_the_file() -> None:
    files = _files(allow_overwrite=True)
    files.save("a.txt", ContentFile(b"1"))
    assert files.save("a.txt", ContentFile(b"2")) == "a.txt"
    assert files.listdir("") == ([], ["a.txt"])
    assert files.open("a.txt").read() == b"2"


def test_max_length_shortens_the_alternative_name() -> None:
    files = _files()
    files.save("abcdefghij.txt", ContentFile(b"1"))
    name = files.save("abcdefghij.txt", ContentFile(b"2"), max_length=16)
    assert len(name) <= 16
    assert name != "abcdefghij.txt"


def test_a_failed_save_leaves_the_previous_file(tmp_path: Path) -> None:
    files = SnapshotFileStorage(
        storage=Checksum(LocalFileSystemBackend(tmp_path)), allow_overwrite=True
    )
    files.save("a.bin", ContentFile(b"good"))

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError("the upload broke")

    with pytest.raises(OSError, match="the upload broke"):
        files.save("a.bin", File(Broken(), name="a.bin"))
    assert files.open("a.bin").read() == b"good"


def test_a_retry_below_rewinds_seekable_content_and_never_spools_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import django_snapshots.storage.wrappers.retry as retry

    spooled: list[object] = []
    real = retry.tempfile.SpooledTemporaryFile

    def spy(*args: Any, **kwargs: Any) -> Any:
        spooled.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(retry.tempfile, "SpooledTemporaryFile", spy)
    inner = MemoryBackend()
    chaos = Chaos(inner, failure_rate=0.5, seed=3)
    stack = Retry(chaos, attempts=20, wait_initial=0, wait_jitter=0)
    files = SnapshotFileStorage(storage=stack, allow_overwrite=True)
    data = _big(4 * CHUNK_SIZE)
    for index in range(5):
        files.save(f"a{index}.bin", File(io.BytesIO(data)))
        assert inner.read(f"a{index}.bin").read() == data
    assert spooled == []


def test_delete_removes_the_file_and_ignores_a_missing_one() -> None:
    files = _files()
    files.save("a.txt", ContentFile(b"1"))
    files.delete("a.txt")
    assert not files.exists("a.txt")
    files.delete("a.txt")


# Listing


def test_listdir_splits_directories_and_files() -> None:
    files = _files()
    for name in ["top.txt", "db/a.dump", "db/b.dump", "db/old/c.dump", "media/x/y.png"]:
        files.save(name, ContentFile(b"x"))
    assert files.listdir("") == (["db", "media"], ["top.txt"])
    assert files.listdir("db") == (["old"], ["a.dump", "b.dump"])
    assert files.listdir("db/") == (["old"], ["a.dump", "b.dump"])
    assert files.listdir("media/x") == ([], ["y.png"])


def test_listdir_of_a_missing_directory_is_empty() -> None:
    files = _files()
    files.save("db/a.dump", ContentFile(b"x"))
    assert files.listdir("nothing") == ([], [])
    assert files.listdir("db/a.dump") == ([], [])
    # FileSystemStorage raises instead.
    with pytest.raises(FileNotFoundError):
        FileSystemStorage(location=_tmp()).listdir("nothing")


def test_listdir_does_not_mix_siblings_sharing_a_prefix() -> None:
    files = _files()
    files.save("db/a.dump", ContentFile(b"x"))
    files.save("db2/b.dump", ContentFile(b"x"))
    assert files.listdir("db") == ([], ["a.dump"])


def test_exists_is_false_for_a_directory() -> None:
    files = _files()
    files.save("db/a.dump", ContentFile(b"x"))
    assert files.exists("db/a.dump")
    assert not files.exists("db")


# What it does not have


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("url", "has no URLs"),
        ("path", "has no local paths"),
        ("get_accessed_time", "keeps no file times"),
        ("get_created_time", "keeps no file times"),
        ("get_modified_time", "keeps no file times"),
    ],
)
def test_what_a_stack_lacks_raises_not_implemented_saying_why(method: str, reason: str) -> None:
    files = _files()
    files.save("a.txt", ContentFile(b"x"))
    with pytest.raises(NotImplementedError, match=reason):
        getattr(files, method)("a.txt")


# Names


BAD_NAMES = ["a//b", "./a", "a/./b", "a\x00b", "a\nb", "a\u202eb", "x" * 1025, "a\\b"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("method", ["open", "exists", "delete", "size", "listdir"])
def test_a_name_breaking_the_key_rules_is_suspicious_everywhere(name: str, method: str) -> None:
    counting = Counting()
    files = SnapshotFileStorage(storage=Checksum(counting))
    with pytest.raises(SuspiciousFileOperation):
        getattr(files, method)(name)
    assert counting.calls == []


# Django turns a backslash into a slash before it saves.
@pytest.mark.parametrize(
    "name", [*(n for n in BAD_NAMES if "\\" not in n), "../up", "/etc/passwd", "a/../../b"]
)
def test_save_of_a_name_breaking_the_key_rules_is_suspicious(name: str) -> None:
    counting = Counting()
    files = SnapshotFileStorage(storage=Checksum(counting), allow_overwrite=True)
    with pytest.raises(SuspiciousFileOperation):
        files.save(name, ContentFile(b"x"))
    assert counting.calls == []


def test_a_name_too_long_once_prefixed_is_suspicious_everywhere() -> None:
    counting = Counting()
    files = SnapshotFileStorage(storage=counting, prefix="p" * 1000)
    name = "n" * 30  # a valid key alone, too long under the prefix
    for call in (
        lambda: files.save(name, ContentFile(b"x")),
        lambda: files.open(name),
        lambda: files.exists(name),
        lambda: files.delete(name),
        lambda: files.size(name),
        lambda: files.listdir(name),
    ):
        with pytest.raises(SuspiciousFileOperation, match="1024"):
            call()
    assert counting.calls == []


def test_a_name_without_room_for_its_sidecar_is_suspicious() -> None:
    counting = Counting()
    files = SnapshotFileStorage(storage=Checksum(counting), allow_overwrite=True)
    with pytest.raises(SuspiciousFileOperation, match=r"sidecar|1024"):
        files.save("x" * 1020, ContentFile(b"x"))
    assert ("write", "x" * 1020) not in counting.calls


def test_the_message_of_a_suspicious_name_escapes_it() -> None:
    with pytest.raises(SuspiciousFileOperation) as caught:
        _files().exists("a\x1b[31mb")
    assert "\x1b" not in str(caught.value)


# Errors of the stack


def test_a_corrupt_file_raises_integrity_error_on_every_read() -> None:
    inner = MemoryBackend()
    files = SnapshotFileStorage(storage=Checksum(inner))
    data = _big(3 * CHUNK_SIZE)
    files.save("a.dump", ContentFile(data))
    flipped = bytearray(data)
    flipped[CHUNK_SIZE] ^= 1
    inner.write("a.dump", io.BytesIO(bytes(flipped)))
    with files.open("a.dump") as file, pytest.raises(SnapshotIntegrityError):
        file.read()
    with pytest.raises(SnapshotIntegrityError):
        files.size("a.dump")
    with files.open("a.dump") as file, pytest.raises(SnapshotIntegrityError):
        _ = file.size


def test_decryption_errors_pass_through() -> None:
    writer = pyrage.x25519.Identity.generate()
    other = pyrage.x25519.Identity.generate()
    inner = MemoryBackend()
    SnapshotFileStorage(storage=Encrypt(inner, recipients=[str(writer.to_public())])).save(
        "a.dump", ContentFile(b"secret")
    )
    files = SnapshotFileStorage(storage=Encrypt(inner, identities=[other]))
    with pytest.raises(SnapshotEncryptionError), files.open("a.dump") as file:
        file.read()


def test_storage_and_capability_errors_pass_through_unchanged() -> None:
    raised: list[BaseException] = []

    class Failing(MemoryBackend):
        def __init__(self, error: BaseException) -> None:
            super().__init__()
            self.error = error

        def exists(self, path: str) -> bool:
            raised.append(self.error)
            raise self.error

    for error in (
        SnapshotStorageError("the network is down", transient=False),
        SnapshotStorageCapabilityError("not here"),
    ):
        files = SnapshotFileStorage(storage=Failing(error))
        with pytest.raises(type(error)) as caught:
            files.save("a.txt", ContentFile(b"x"))
        assert caught.value is error


# Django's storage contract, side by side with FileSystemStorage


def _sequence(storage: Storage) -> list[object]:
    results: list[object] = []
    results.append(storage.save("a.txt", ContentFile(b"first")))
    results.append(storage.save("a.txt", ContentFile(b"second")))  # a collision
    results.append(storage.save("docs/b.bin", File(io.BytesIO(_big(CHUNK_SIZE + 3)))))
    results.append(storage.save("docs/b.bin", ContentFile(b"again")))  # a collision
    results.append(storage.save("docs/deep/c.txt", ContentFile("text é")))
    results.append(storage.exists("a.txt"))
    results.append(storage.exists("nothing.txt"))
    with storage.open("a.txt") as file:
        results.append(file.read())
    with storage.open("docs/b.bin") as file:
        results.append(file.read(4))
        file.seek(CHUNK_SIZE)
        results.append(file.read())
        file.seek(0)
        results.append(len(file.read()))
        results.append(file.size)
    results.append(storage.size("docs/deep/c.txt"))
    directories, files = storage.listdir("")
    results.append((sorted(directories), sorted(files)))
    directories, files = storage.listdir("docs")
    results.append((sorted(directories), sorted(files)))
    storage.delete("a.txt")
    results.append(storage.exists("a.txt"))
    storage.delete("a.txt")  # missing is fine
    results.append(sorted(storage.listdir("")[1]))
    with pytest.raises(FileNotFoundError):
        storage.open("a.txt")
    with pytest.raises(SuspiciousFileOperation):
        storage.save("../escape.txt", ContentFile(b"x"))
    with pytest.raises(SuspiciousFileOperation):
        storage.open("../escape.txt")
    return results


def test_the_storage_contract_matches_file_system_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def same_names() -> None:
        # The alternative names are random: make them the same sequence.
        counter = itertools.count()
        monkeypatch.setattr(
            "django.core.files.storage.base.get_random_string",
            lambda length: f"{next(counter):0{length}d}",
        )

    same_names()
    expected = _sequence(FileSystemStorage(location=tmp_path / "fs"))
    same_names()
    got = _sequence(SnapshotFileStorage(storage=Checksum(LocalFileSystemBackend(tmp_path / "s"))))
    assert got == expected
    assert expected[:4] == ["a.txt", "a_0000000.txt", "docs/b.bin", "docs/b_0000001.bin"]


# FileField


@pytest.mark.django_db(transaction=True)
@isolate_apps("django_snapshots")
@pytest.mark.parametrize("upload", ["memory", "temporary"])
def test_a_file_field_saves_an_upload_and_reads_it_back(tmp_path: Path, upload: str) -> None:
    files = SnapshotFileStorage(storage=Checksum(LocalFileSystemBackend(tmp_path)), prefix="media")

    class Document(models.Model):
        attachment = models.FileField(storage=files, upload_to="docs/")

        class Meta:
            app_label = "django_snapshots"

    data = _big(2 * CHUNK_SIZE + 11)
    if upload == "memory":
        uploaded: Any = InMemoryUploadedFile(
            io.BytesIO(data), "attachment", "report.pdf", "application/pdf", len(data), None
        )
    else:
        uploaded = TemporaryUploadedFile("report.pdf", "application/pdf", len(data), None)
        uploaded.write(data)
    with connection.schema_editor() as editor:
        editor.create_model(Document)
    try:
        document = Document.objects.create(attachment=uploaded)
        again = Document.objects.create(attachment=SimpleUploadedFile("report.pdf", b"v2"))
        assert document.attachment.name == "docs/report.pdf"
        assert again.attachment.name != document.attachment.name
        loaded = Document.objects.get(pk=document.pk)
        with loaded.attachment.open() as file:
            assert file.read() == data
        assert loaded.attachment.size == len(data)
        assert (tmp_path / "media" / "docs" / "report.pdf").read_bytes() == data
        assert (tmp_path / "media" / "docs" / "report.pdf.sha256").exists()
        loaded.attachment.delete(save=False)
        assert not files.exists("docs/report.pdf")
    finally:
        uploaded.close()
        with connection.schema_editor() as editor:
            editor.delete_model(Document)


def _default_storages() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.STORAGES)


def _tmp() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="test-files-"))


# A failed seek never turns into a clean end, and secrets never reach migrations.


def _corrupt_stack() -> tuple[SnapshotFileStorage, MemoryBackend]:
    inner = MemoryBackend()
    files = SnapshotFileStorage(storage=Checksum(inner))
    files.save("d.dump", ContentFile(b"A" * 3 * CHUNK_SIZE))
    inner.write("d.dump", io.BytesIO(b"B" * 3 * CHUNK_SIZE))  # the sidecar stays
    return files, inner


def test_reading_after_a_failed_forward_seek_raises_again() -> None:
    files, _ = _corrupt_stack()
    with files.open("d.dump") as file:
        with pytest.raises(SnapshotIntegrityError):
            file.seek(4 * CHUNK_SIZE)
        for read in (file.read, lambda: file.read(10), file.readline):
            with pytest.raises(SnapshotIntegrityError):
                read()


def test_a_failed_seek_never_hands_out_the_old_buffer() -> None:
    files, _ = _corrupt_stack()
    with files.open("d.dump") as file:
        assert file.read(10) == b"B" * 10  # handed out as it streams, checked at the end
        with pytest.raises(SnapshotIntegrityError):
            file.seek(4 * CHUNK_SIZE)
        with pytest.raises(SnapshotIntegrityError):
            file.read()
        with pytest.raises(SnapshotIntegrityError):
            file.seek(0)


@pytest.mark.parametrize(
    "options",
    [
        {"config": {"secret_access_key": "s3cr3t"}},
        {"identities": ["AGE-SECRET-KEY-1..."]},
        {"config": {"sas_key": "sig"}},
        {"password": "hunter2"},
    ],
)
def test_stack_data_with_credentials_is_never_written_into_a_migration(
    options: dict[str, Any],
) -> None:
    data = {"BACKEND": LOCAL, "OPTIONS": options}
    field = models.FileField(storage=SnapshotFileStorage(storage=data))
    with pytest.raises(ValueError, match="may hold a credential") as raised:
        MigrationWriter.serialize(field)
    assert all(str(value) not in str(raised.value) for value in options.values())

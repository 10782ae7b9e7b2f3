"""LocalFileSystemBackend: the storage contract, atomic replacement, and
nothing read, written, listed or deleted outside its location."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from django_snapshots import (
    AdvancedSnapshotStorage,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import LocalFileSystemBackend
from django_snapshots.storage.streams import CHUNK_SIZE
from django_snapshots.testing import StorageConformance


class TestLocalFileSystemBackendConformance(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> LocalFileSystemBackend:
        return LocalFileSystemBackend(tmp_path / "root")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The location, already there (the backend creates it on its first write)."""
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def storage(root: Path) -> LocalFileSystemBackend:
    return LocalFileSystemBackend(root)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the location, holding a file the storage must never touch."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_bytes(b"secret")
    return directory


def _tree(directory: Path) -> dict[str, bytes | None]:
    """Every entry below *directory*: files with their bytes, the rest as None."""
    entries: dict[str, bytes | None] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        is_file = path.is_file() and not path.is_symlink()
        entries[relative] = path.read_bytes() if is_file else None
    return entries


def _temporary_files(directory: Path) -> list[str]:
    return [name for _, _, files in os.walk(directory) for name in files if "\x7f" in name]


# Construction


def test_location_is_shown_as_an_absolute_path(tmp_path: Path) -> None:
    storage = LocalFileSystemBackend(tmp_path / "a" / "b")
    assert storage.location == str(tmp_path / "a" / "b")
    assert repr(storage) == f"LocalFileSystemBackend({str(tmp_path / 'a' / 'b')!r})"
    assert isinstance(storage, AdvancedSnapshotStorage)


def test_construction_creates_nothing(tmp_path: Path) -> None:
    storage = LocalFileSystemBackend(tmp_path / "a" / "b")
    assert storage.max_segment_bytes > 0
    assert list(tmp_path.iterdir()) == []


def test_a_missing_location_reads_as_an_empty_store_and_stays_missing(tmp_path: Path) -> None:
    storage = LocalFileSystemBackend(tmp_path / "a" / "b")
    assert storage.list("") == []
    assert storage.recursive_list("d/") == []
    assert storage.exists("k") is False
    with pytest.raises(FileNotFoundError):
        storage.read("k")
    with pytest.raises(FileNotFoundError):
        storage.stream_read("k")
    with pytest.raises(FileNotFoundError):
        storage.atomic_move("k", "m")
    storage.delete("k")
    storage.sync("src/", "dst/")
    assert list(tmp_path.iterdir()) == []


def test_the_first_write_creates_the_location_and_its_parents_privately(tmp_path: Path) -> None:
    storage = LocalFileSystemBackend(tmp_path / "a" / "b")
    storage.write("d/k", io.BytesIO(b"x"))
    assert (tmp_path / "a" / "b" / "d" / "k").read_bytes() == b"x"
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_the_segment_limit_is_known_before_the_location_exists(tmp_path: Path) -> None:
    storage = LocalFileSystemBackend(tmp_path / "a" / "b")
    assert storage.max_segment_bytes == os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(SnapshotStoragePathError, match="UTF-8 bytes long"):
        storage.write("x" * (storage.max_segment_bytes + 1), io.BytesIO(b"x"))
    assert list(tmp_path.iterdir()) == []


def test_relative_location_is_resolved_once_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = LocalFileSystemBackend("backups")
    assert storage.location == str(tmp_path / "backups")
    assert not (tmp_path / "backups").exists()
    monkeypatch.chdir("/")
    storage.write("k", io.BytesIO(b"x"))
    assert (tmp_path / "backups" / "k").read_bytes() == b"x"
    assert not Path("/backups").exists()


def test_location_must_be_a_non_empty_text_path(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="location must be a str"):
        LocalFileSystemBackend(os.fsencode(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        LocalFileSystemBackend("")


def test_location_that_is_a_file_fails_every_operation_and_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"data")
    storage = LocalFileSystemBackend(tmp_path / "file")
    with pytest.raises(SnapshotStorageError, match=r"cannot open the location .*: Not a directory"):
        storage.write("k", io.BytesIO(b"x"))
    for operation in (storage.list, storage.exists, storage.read, storage.delete):
        argument = "" if operation == storage.list else "k"
        with pytest.raises(SnapshotStorageError, match="cannot open the location"):
            operation(argument)
    assert (tmp_path / "file").read_bytes() == b"data"


def test_a_location_below_a_file_fails_on_write(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"data")
    storage = LocalFileSystemBackend(tmp_path / "file" / "snapshots")
    with pytest.raises(SnapshotStorageError, match="cannot open the location"):
        storage.write("k", io.BytesIO(b"x"))
    assert (tmp_path / "file").read_bytes() == b"data"


def test_location_may_itself_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    storage = LocalFileSystemBackend(tmp_path / "link")
    storage.write("k", io.BytesIO(b"x"))
    assert (tmp_path / "real" / "k").read_bytes() == b"x"


def test_a_removed_location_lists_nothing_and_is_recreated_by_a_write(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    root.rmdir()
    assert storage.list("") == []
    assert storage.exists("k") is False
    with pytest.raises(FileNotFoundError):
        storage.read("k")
    storage.write("d/k", io.BytesIO(b"x"))
    assert (root / "d" / "k").read_bytes() == b"x"


def test_write_refuses_data_and_text_files_before_any_io(
    tmp_path: Path, root: Path, storage: LocalFileSystemBackend
) -> None:
    storage.write("d/k", io.BytesIO(b"old"))
    (tmp_path / "text").write_text("text")
    with open(tmp_path / "text") as text_file:
        for content, expected in [
            (b"new", r"not bytes: wrap the data as io\.BytesIO\(data\)"),
            (text_file, r"not a text stream \(TextIOWrapper\): open the file in binary mode"),
            (io.StringIO("new"), r"not a text stream \(StringIO\)"),
        ]:
            with pytest.raises(TypeError, match=expected):
                storage.write("d/k", content)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=expected):
                storage.write("new/k", content)  # type: ignore[arg-type]
    assert _tree(root) == {"d": None, "d/k": b"old"}


# Layout and permissions


def test_keys_map_to_files_below_the_location(storage: LocalFileSystemBackend, root: Path) -> None:
    storage.write("db/2026/latest.dump", io.BytesIO(b"dump"))
    assert _tree(root) == {"db": None, "db/2026": None, "db/2026/latest.dump": b"dump"}


def test_objects_and_directories_are_private(storage: LocalFileSystemBackend, root: Path) -> None:
    storage.write("db/latest.dump", io.BytesIO(b"dump"))
    assert stat.S_IMODE((root / "db" / "latest.dump").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "db").stat().st_mode) == 0o700


def test_delete_removes_empty_parents_up_to_the_location(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("a/b/c/one", io.BytesIO(b"1"))
    storage.write("a/two", io.BytesIO(b"2"))
    storage.delete("a/b/c/one")
    assert _tree(root) == {"a": None, "a/two": b"2"}
    storage.delete("a/two")
    assert _tree(root) == {}
    assert root.is_dir()


def test_atomic_move_removes_the_emptied_source_directories(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("incoming/x/part", io.BytesIO(b"data"))
    storage.atomic_move("incoming/x/part", "final/object")
    assert _tree(root) == {"final": None, "final/object": b"data"}


def test_atomic_move_onto_itself_keeps_the_object(storage: LocalFileSystemBackend) -> None:
    storage.write("k", io.BytesIO(b"data"))
    storage.atomic_move("k", "k")
    assert storage.read("k").read() == b"data"


# Atomic, durable replacement


def _failing_after(chunks: int, error: BaseException) -> Iterator[bytes]:
    for _ in range(chunks):
        yield b"n" * CHUNK_SIZE
    raise error


@pytest.mark.parametrize(
    "error", [OSError("source lost"), KeyboardInterrupt()], ids=["exception", "interrupt"]
)
def test_failed_write_keeps_the_old_object_and_leaves_no_temporary_file(
    storage: LocalFileSystemBackend, root: Path, error: BaseException
) -> None:
    storage.write("db/latest.dump", io.BytesIO(b"old"))
    with pytest.raises(type(error)) as raised:
        storage.stream_write("db/latest.dump", _failing_after(2, error))
    assert raised.value is error
    assert _tree(root) == {"db": None, "db/latest.dump": b"old"}


def test_failed_write_to_a_new_directory_leaves_nothing_behind(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("kept", io.BytesIO(b"k"))

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError("disk of the source failed")

    with pytest.raises(OSError, match="disk of the source failed"):
        storage.write("new/deep/key", Broken())  # type: ignore[arg-type]
    assert _tree(root) == {"kept": b"k"}


def test_write_streams_into_a_temporary_file_in_the_target_directory(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    seen: list[dict[str, bytes | None]] = []

    def chunks() -> Iterator[bytes]:
        yield b"first"
        seen.append(_tree(root))
        yield b"second"

    storage.write("db/latest.dump", io.BytesIO(b"old"))
    storage.stream_write("db/latest.dump", chunks())
    [during] = seen
    temporary = [name for name in during if "\x7f" in name]
    assert len(temporary) == 1
    assert temporary[0].startswith("db/")
    assert during["db/latest.dump"] == b"old"
    assert storage.read("db/latest.dump").read() == b"firstsecond"
    assert _temporary_files(root) == []


def test_write_syncs_the_file_and_its_directory_before_returning(
    storage: LocalFileSystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    storage.write("db/latest.dump", io.BytesIO(b"dump"))
    assert synced[-2:] == ["file", "dir"]


def test_temporary_and_foreign_files_are_never_listed(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("db/latest.dump", io.BytesIO(b"dump"))
    (root / "db" / ".snapshots-write-0123\x7f").write_bytes(b"left by a crash")
    (root / "db" / "back\\slash").write_bytes(b"not a key")
    (root / "ctl\x01dir").mkdir()
    (root / "ctl\x01dir" / "x").write_bytes(b"not a key")
    assert storage.list("") == ["db/latest.dump"]
    assert storage.list("db/") == ["db/latest.dump"]


def test_concurrent_writers_never_tear_an_object(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    versions = [bytes([n]) * (CHUNK_SIZE + 1000) for n in range(4)]
    problems: list[str] = []

    def writer(data: bytes) -> None:
        for _ in range(5):
            storage.write("shared", io.BytesIO(data))

    def reader() -> None:
        for _ in range(30):
            try:
                with storage.read("shared") as file:
                    data = file.read()
            except FileNotFoundError:
                continue
            if data not in versions:
                problems.append(f"torn read of {len(data)} bytes")

    threads = [threading.Thread(target=writer, args=(v,)) for v in versions]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    assert storage.read("shared").read() in versions
    assert _temporary_files(root) == []


def test_concurrent_deletes_and_writes_in_one_directory_all_land(
    storage: LocalFileSystemBackend,
) -> None:
    # Deletes prune empty directories while writes and moves create files in them.
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        try:
            for i in range(100):
                storage.write(f"shared/dir/{n}-{i}", io.BytesIO(b"x"))
                storage.delete(f"shared/dir/{n}-{i}")
                storage.write(f"incoming/{n}-{i}", io.BytesIO(b"x"))
                storage.atomic_move(f"incoming/{n}-{i}", f"shared/dir/{n}-{i}")
                storage.delete(f"shared/dir/{n}-{i}")
            storage.write(f"shared/dir/{n}-last", io.BytesIO(b"x"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert storage.list("") == [f"shared/dir/{n}-last" for n in range(4)]


# Objects and directories


def test_writing_below_an_object_is_a_clear_error(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("a", io.BytesIO(b"object"))
    with pytest.raises(SnapshotStorageError, match="'a' is an object") as raised:
        storage.write("a/b", io.BytesIO(b"x"))
    assert raised.value.transient is False
    with pytest.raises(SnapshotStorageError, match="'a' is an object"):
        storage.atomic_move("a", "a/b")
    assert _tree(root) == {"a": b"object"}


def test_writing_over_a_directory_of_keys_is_a_clear_error(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("a/b", io.BytesIO(b"object"))
    with pytest.raises(SnapshotStorageError, match="other keys are stored below 'a/'"):
        storage.write("a", io.BytesIO(b"x"))
    storage.write("c", io.BytesIO(b"c"))
    with pytest.raises(SnapshotStorageError, match="other keys are stored below 'a/'"):
        storage.atomic_move("c", "a")
    assert _tree(root) == {"a": None, "a/b": b"object", "c": b"c"}


STALE = ".snapshots-write-0123456789abcdef\x7f"


def test_a_directory_holding_no_keys_never_blocks_its_name(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    # Left by a crash mid-write (a temporary file), or made by someone else.
    (root / "d" / "a" / "empty" / "deeper").mkdir(parents=True)
    (root / "d" / "a" / STALE).write_bytes(b"left by a crash")
    (root / "d" / "a" / "empty" / STALE).write_bytes(b"and another")
    (root / "d" / "b").mkdir()
    (root / "m" / "c").mkdir(parents=True)
    (root / "m" / "c" / STALE).write_bytes(b"")
    storage.write("d/a", io.BytesIO(b"written"))
    storage.write("src/b", io.BytesIO(b"moved"))
    storage.atomic_move("src/b", "d/b")
    storage.write("src/c", io.BytesIO(b"synced"))
    storage.sync("src/", "m/")
    assert _tree(root) == {
        "d": None,
        "d/a": b"written",
        "d/b": b"moved",
        "m": None,
        "m/c": b"synced",
        "src": None,
        "src/c": b"synced",
    }


@pytest.mark.parametrize(
    "blocker",
    [
        pytest.param(lambda d: (d / "key").write_bytes(b"a key"), id="key"),
        pytest.param(lambda d: (d / "back\\slash").write_bytes(b"not a key"), id="foreign"),
        pytest.param(lambda d: (d / "link").symlink_to(d.parent), id="symlink"),
        pytest.param(lambda d: os.mkfifo(d / "fifo"), id="fifo"),
    ],
)
def test_a_directory_holding_anything_else_blocks_and_is_left_untouched(
    storage: LocalFileSystemBackend, root: Path, blocker: Callable[[Path], object]
) -> None:
    (root / "d" / "a" / "empty").mkdir(parents=True)
    (root / "d" / "a" / STALE).write_bytes(b"may be a write in progress")
    (root / "d" / "a" / "z").mkdir()
    blocker(root / "d" / "a" / "z")
    before = _tree(root)
    with pytest.raises(SnapshotStorageError, match="other keys are stored below 'd/a/'") as raised:
        storage.write("d/a", io.BytesIO(b"x"))
    assert raised.value.transient is False
    assert _tree(root) == before


def test_a_write_whose_directory_is_cleared_meanwhile_fails_and_stores_nothing(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("d/a/old", io.BytesIO(b"old"))
    storage.delete("d/a/old")  # "d/" stays: "d/other" holds it
    cleared: list[bool] = []

    def chunks() -> Iterator[bytes]:
        yield b"first part"
        # Another writer needs "d/a", which holds nothing but our temporary file.
        storage.write("d/a", io.BytesIO(b"the other writer's object"))
        cleared.append(True)
        yield b"second part"

    with pytest.raises(SnapshotStorageError, match="removed the directory") as raised:
        storage.stream_write("d/a/b", chunks())
    assert cleared == [True]
    assert raised.value.transient is True
    assert storage.exists("d/a/b") is False
    assert storage.read("d/a").read() == b"the other writer's object"
    assert _temporary_files(root) == []


def test_concurrent_writers_of_a_key_and_a_key_below_it_never_both_succeed(
    storage: LocalFileSystemBackend,
) -> None:
    outcomes: dict[str, list[bool]] = {"d/a": [], "d/a/b": []}

    def writer(key: str) -> None:
        for _ in range(50):
            try:
                storage.write(key, io.BytesIO(key.encode()))
                outcomes[key].append(True)
            except SnapshotStorageError:
                outcomes[key].append(False)
            with contextlib.suppress(SnapshotStorageError):
                storage.delete(key)

    threads = [threading.Thread(target=writer, args=(key,)) for key in outcomes for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.list("") in ([], ["d/a"], ["d/a/b"])
    for key in storage.list(""):
        assert storage.read(key).read() == key.encode()


def test_a_path_below_an_object_does_not_exist(storage: LocalFileSystemBackend) -> None:
    storage.write("a", io.BytesIO(b"object"))
    assert storage.exists("a/b") is False
    assert storage.list("a/") == []
    with pytest.raises(FileNotFoundError):
        storage.read("a/b")
    storage.delete("a/b")
    assert storage.list("") == ["a"]


def test_a_special_file_is_not_an_object_and_never_blocks(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    root.joinpath("d").mkdir()
    os.mkfifo(root / "d" / "fifo")
    assert storage.exists("d/fifo") is False
    assert storage.list("") == []
    with pytest.raises(FileNotFoundError):
        storage.read("d/fifo")
    with pytest.raises(SnapshotStorageError, match="special file"):
        storage.write("d/fifo", io.BytesIO(b"x"))


def test_the_segment_limit_is_the_file_systems_name_limit(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    assert storage.max_segment_bytes == os.pathconf(root, "PC_NAME_MAX")


def test_a_segment_longer_than_a_file_name_is_refused_before_any_io(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    limit = storage.max_segment_bytes
    storage.write("d/" + "x" * limit, io.BytesIO(b"fits"))
    storage.write("src", io.BytesIO(b"src"))
    before = _tree(root)
    # Bytes of the on-disk name count, not characters.
    for key in ("d/" + "x" * (limit + 1), "\u00e9" * (limit // 2 + 1) + "/k"):
        content = Untouchable()
        with pytest.raises(SnapshotStoragePathError, match=f"more than the {limit}"):
            storage.write(key, content)  # type: ignore[arg-type]
        with pytest.raises(SnapshotStoragePathError, match=f"more than the {limit}"):
            storage.stream_write(key, Untouchable.chunks())
        with pytest.raises(SnapshotStoragePathError, match=f"more than the {limit}"):
            storage.atomic_move("src", key)
        for call in (storage.read, storage.exists, storage.delete, storage.stream_read):
            with pytest.raises(SnapshotStoragePathError, match=f"more than the {limit}"):
                call(key)
    assert storage.list("x" * (limit + 1) + "/") == []
    assert _tree(root) == before


def test_sync_to_a_prefix_with_too_long_a_segment_changes_nothing(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    limit = storage.max_segment_bytes
    storage.write("src/a", io.BytesIO(b"a"))
    before = _tree(root)
    with pytest.raises(SnapshotStoragePathError, match=f"more than the {limit}"):
        storage.sync("src/", "y" * (limit + 1) + "/")
    assert _tree(root) == before


class Untouchable(io.RawIOBase):
    """Content that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        raise AssertionError("the content was read")

    @staticmethod
    def chunks() -> Iterator[bytes]:
        raise AssertionError("the chunks were read")
        yield b""


NOBODY = 65534


def _unreadable_directory_scenario(location: Path) -> None:
    storage = LocalFileSystemBackend(location)
    storage.write("src/a", io.BytesIO(b"a"))
    storage.write("src/sub/b", io.BytesIO(b"b"))
    storage.sync("src/", "mirror/")
    (location / "src" / "sub").chmod(0o300)  # may be entered, not listed
    for call in (lambda: storage.list("src/"), lambda: storage.sync("src/", "mirror/")):
        with pytest.raises(SnapshotStorageError, match=r"cannot list 'src/'.*'src/sub/'") as raised:
            call()
        assert raised.value.transient is False
    assert storage.list("mirror/") == ["mirror/a", "mirror/sub/b"]


def _run_as_nobody(scenario: Callable[[Path], None]) -> None:
    """Run *scenario* with a fresh location, in a child process that is
    nobody when the tests run as root: root reads and writes any directory
    whatever its mode."""
    base = Path(tempfile.mkdtemp(prefix="snapshots-unreadable-"))
    try:
        as_root = os.geteuid() == 0
        if as_root:
            os.chown(base, NOBODY, NOBODY)
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child reports through its exit code)
            code = 1
            try:
                if as_root:
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                scenario(base / "root")
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        for directory, _, _ in os.walk(base):
            os.chmod(directory, 0o700)
        shutil.rmtree(base)


def test_an_unreadable_directory_fails_the_listing_and_sync_deletes_nothing() -> None:
    _run_as_nobody(_unreadable_directory_scenario)


@pytest.mark.parametrize(
    ("call", "code", "transient"),
    [("scandir", errno.EIO, False), ("open", errno.EMFILE, False), ("open", errno.EAGAIN, True)],
)
def test_any_error_below_the_prefix_fails_the_listing(
    storage: LocalFileSystemBackend,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    call: str,
    code: int,
    transient: bool,
) -> None:
    storage.write("src/a", io.BytesIO(b"a"))
    storage.write("src/sub/b", io.BytesIO(b"b"))
    storage.sync("src/", "mirror/")
    sub = (root / "src" / "sub").stat()
    real_scandir, real_open = os.scandir, os.open

    def scandir(target: Any) -> Any:
        if isinstance(target, int) and os.fstat(target).st_ino == sub.st_ino:
            raise OSError(code, os.strerror(code))
        return real_scandir(target)

    def open_(name: Any, flags: int, *args: Any, dir_fd: int | None = None, **kw: Any) -> int:
        if name == "sub" and dir_fd is not None and flags & os.O_DIRECTORY:
            raise OSError(code, os.strerror(code))
        return real_open(name, flags, *args, dir_fd=dir_fd, **kw)

    monkeypatch.setattr(os, call, scandir if call == "scandir" else open_)
    for attempt in (lambda: storage.list("src/"), lambda: storage.sync("src/", "mirror/")):
        with pytest.raises(SnapshotStorageError, match=r"cannot list 'src/'.*'src/sub/'") as raised:
            attempt()
        assert raised.value.transient is transient
    monkeypatch.undo()
    assert storage.list("mirror/") == ["mirror/a", "mirror/sub/b"]


def test_a_reader_that_failed_keeps_failing(
    storage: LocalFileSystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * CHUNK_SIZE)
    storage.write("k", io.BytesIO(data))
    real_readv = os.readv
    calls = []

    def readv(fd: int, buffers: Any) -> int:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", readv)
    with storage.read("k") as file:
        assert file.read(CHUNK_SIZE) == data[:CHUNK_SIZE]
        with pytest.raises(SnapshotStorageError, match="Input/output error"):
            file.read(CHUNK_SIZE)
        for size in (CHUNK_SIZE, -1, 1):
            with pytest.raises(SnapshotStorageError, match="an earlier read"):
                file.read(size)
    calls.clear()
    chunks = storage.stream_read("k")
    assert next(chunks) == data[:CHUNK_SIZE]
    with pytest.raises(SnapshotStorageError, match="Input/output error"):
        next(chunks)
    for _ in range(2):
        with pytest.raises(SnapshotStorageError, match="an earlier read"):
            next(chunks)


def test_stream_read_closes_the_file_at_the_end(storage: LocalFileSystemBackend) -> None:
    storage.write("k", io.BytesIO(b"data"))
    chunks = storage.stream_read("k")
    assert list(chunks) == [b"data"]
    assert list(chunks) == []


def test_stream_read_of_a_missing_key_raises_at_the_call(storage: LocalFileSystemBackend) -> None:
    with pytest.raises(FileNotFoundError):
        storage.stream_read("absent")


def test_sync_replaces_objects_that_stand_where_directories_must_go(
    storage: LocalFileSystemBackend,
) -> None:
    storage.write("src/a/b", io.BytesIO(b"new file below a/"))
    storage.write("src/c", io.BytesIO(b"new file c"))
    storage.write("dst/a", io.BytesIO(b"stale object a"))
    storage.write("dst/c/d", io.BytesIO(b"stale object below c/"))
    storage.sync("src/", "dst/")
    assert storage.list("dst/") == ["dst/a/b", "dst/c"]
    assert storage.read("dst/a/b").read() == b"new file below a/"
    assert storage.read("dst/c").read() == b"new file c"


def test_list_walks_only_the_directory_the_prefix_names(
    storage: LocalFileSystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("big/1/x", "big/2/x", "big/3/x", "want/a/x", "want/b", "wanted"):
        storage.write(key, io.BytesIO(b"x"))
    scanned: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(fd: int) -> object:
        scanned.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_scandir(fd)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    assert storage.list("want/") == ["want/a/x", "want/b"]
    assert [Path(p).relative_to(storage.location).as_posix() for p in scanned] == [
        "want",
        "want/a",
    ]


# Nothing outside the location

_OPERATIONS: dict[str, Callable[[LocalFileSystemBackend, str], object]] = {
    "read": lambda s, k: s.read(k),
    "write": lambda s, k: s.write(k, io.BytesIO(b"pwned")),
    "delete": lambda s, k: s.delete(k),
    "exists": lambda s, k: s.exists(k),
    "stream_read": lambda s, k: next(iter(s.stream_read(k))),
    "stream_write": lambda s, k: s.stream_write(k, iter([b"pwned"])),
    "atomic_move from": lambda s, k: s.atomic_move(k, "moved"),
    "atomic_move to": lambda s, k: s.atomic_move("victim", k),
}


@pytest.mark.parametrize("operation", sorted(_OPERATIONS))
@pytest.mark.parametrize("key", ["../outside/secret", "/tmp/x", "a/../../outside/secret"])
def test_traversal_keys_touch_nothing(
    storage: LocalFileSystemBackend,
    root: Path,
    outside: Path,
    tmp_path: Path,
    operation: str,
    key: str,
) -> None:
    storage.write("victim", io.BytesIO(b"v"))
    before = _tree(tmp_path)
    with pytest.raises(SnapshotStoragePathError):
        _OPERATIONS[operation](storage, key)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("operation", sorted(_OPERATIONS))
@pytest.mark.parametrize(
    "layout",
    ["file link out", "directory link out", "directory link in", "file link in", "dangling"],
)
def test_symlinks_below_the_location_are_never_followed(
    storage: LocalFileSystemBackend,
    root: Path,
    outside: Path,
    tmp_path: Path,
    operation: str,
    layout: str,
) -> None:
    storage.write("victim", io.BytesIO(b"v"))
    storage.write("real/secret", io.BytesIO(b"inside"))
    key = {
        "file link out": "link",
        "directory link out": "link/secret",
        "directory link in": "link/secret",
        "file link in": "link",
        "dangling": "link",
    }[layout]
    target = {
        "file link out": outside / "secret",
        "directory link out": outside,
        "directory link in": root / "real",
        "file link in": root / "real" / "secret",
        "dangling": outside / "created-through-link",
    }[layout]
    (root / "link").symlink_to(target)
    before = _tree(tmp_path)
    with pytest.raises(SnapshotStoragePathError, match="symbolic link"):
        _OPERATIONS[operation](storage, key)
    assert _tree(tmp_path) == before
    assert storage.list("") == ["real/secret", "victim"]


def test_list_through_a_symlinked_directory_is_refused(
    storage: LocalFileSystemBackend, root: Path, outside: Path
) -> None:
    (root / "link").symlink_to(outside)
    with pytest.raises(SnapshotStoragePathError, match="symbolic link"):
        storage.list("link/")
    with pytest.raises(SnapshotStoragePathError, match="symbolic link"):
        storage.recursive_list("link/sec")
    assert storage.list("li") == []


def test_sync_never_writes_through_a_symlinked_destination(
    storage: LocalFileSystemBackend, root: Path, outside: Path, tmp_path: Path
) -> None:
    storage.write("src/secret", io.BytesIO(b"overwrite"))
    (root / "dst").symlink_to(outside)
    before = _tree(tmp_path)
    with pytest.raises(SnapshotStoragePathError, match="symbolic link"):
        storage.sync("src/", "dst/")
    assert _tree(tmp_path) == before


def test_reads_racing_deletes_and_rewrites_see_the_object_or_file_not_found(
    storage: LocalFileSystemBackend,
) -> None:
    payload = b"x" * 4096
    storage.write("racy", io.BytesIO(payload))
    stop = threading.Event()
    unexpected: list[BaseException] = []

    def churn() -> None:
        while not stop.is_set():
            storage.delete("racy")
            storage.write("racy", io.BytesIO(payload))

    def read() -> None:
        for _ in range(3000):
            try:
                with storage.read("racy") as file:
                    if file.read() != payload:
                        unexpected.append(AssertionError("torn read"))
            except FileNotFoundError:
                pass
            except BaseException as exc:  # collected for the assertion below
                unexpected.append(exc)

    churners = [threading.Thread(target=churn) for _ in range(2)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in churners + readers:
        thread.start()
    for thread in readers:
        thread.join()
    stop.set()
    for thread in churners:
        thread.join()
    assert unexpected == []


# Incremental sync

HOUR_NS = 3600 * 10**9


def _age(root: Path, key: str, *, by_ns: int = HOUR_NS) -> int:
    """Set the modification time of *key* *by_ns* into the past; return it."""
    mtime = time.time_ns() - by_ns
    os.utime(root / key, ns=(mtime, mtime))
    return mtime


def _identity(root: Path, key: str) -> tuple[int, int]:
    info = os.stat(root / key)
    return info.st_ino, info.st_mtime_ns


def _mirror(storage: LocalFileSystemBackend, root: Path, count: int = 5) -> list[str]:
    """Store *count* settled objects under src/ and sync them to dst/."""
    keys = [f"src/{n}/object" for n in range(count)]
    for n, key in enumerate(keys):
        storage.write(key, io.BytesIO(b"object %d" % n))
        _age(root, key)
    storage.sync("src/", "dst/")
    return keys


def test_sync_copies_carry_the_modification_time_of_their_source(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    keys = _mirror(storage, root)
    for key in keys:
        copy = "dst/" + key[len("src/") :]
        assert os.stat(root / copy).st_mtime_ns == os.stat(root / key).st_mtime_ns
        assert storage.read(copy).read() == storage.read(key).read()


def test_sync_leaves_an_unchanged_mirror_untouched(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    _mirror(storage, root)
    before = {key: _identity(root, key) for key in storage.list("dst/")}
    storage.sync("src/", "dst/")
    assert {key: _identity(root, key) for key in storage.list("dst/")} == before
    assert _temporary_files(root) == []


def test_sync_copies_a_change_that_kept_the_size(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    _mirror(storage, root)
    untouched = _identity(root, "dst/1/object")
    storage.write("src/0/object", io.BytesIO(b"OBJECT 0"))  # same size, other bytes
    _age(root, "src/0/object", by_ns=HOUR_NS // 2)
    storage.sync("src/", "dst/")
    assert storage.read("dst/0/object").read() == b"OBJECT 0"
    assert _identity(root, "dst/1/object") == untouched


def test_sync_copies_a_change_made_within_one_tick_of_the_file_system_clock(
    storage: LocalFileSystemBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a file system with coarse times, a source rewritten at the same size
    # right after a sync copied it keeps its modification time: the copy
    # made while the source was that recent must not count as up to date.
    from django_snapshots.storage import local

    tick = time.time_ns() - HOUR_NS
    storage.write("src/a", io.BytesIO(b"first"))
    os.utime(root / "src/a", ns=(tick, tick))
    monkeypatch.setattr(local.time, "time_ns", lambda: tick + 10**9 // 2)
    storage.sync("src/", "dst/")
    storage.write("src/a", io.BytesIO(b"again"))
    os.utime(root / "src/a", ns=(tick, tick))  # the same tick
    monkeypatch.setattr(local.time, "time_ns", lambda: tick + 60 * 10**9)
    storage.sync("src/", "dst/")
    assert storage.read("dst/a").read() == b"again"
    assert os.stat(root / "dst/a").st_mtime_ns == tick
    # Now settled, the copy is trusted and left alone.
    settled = _identity(root, "dst/a")
    storage.sync("src/", "dst/")
    assert _identity(root, "dst/a") == settled


def test_sync_copies_a_recent_source_even_when_size_and_time_match(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("src/a", io.BytesIO(b"recent"))
    storage.write("dst/a", io.BytesIO(b"stale!"))
    mtime = os.stat(root / "src/a").st_mtime_ns
    os.utime(root / "dst/a", ns=(mtime, mtime))
    storage.sync("src/", "dst/")
    assert storage.read("dst/a").read() == b"recent"


def test_sync_compares_only_size_and_time_of_settled_objects(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    # The documented limit, as with rsync's quick check: a copy changed
    # behind the backend's back, with its size and time restored, is kept.
    storage.write("src/a", io.BytesIO(b"source"))
    mtime = _age(root, "src/a")
    storage.write("dst/a", io.BytesIO(b"edited"))
    os.utime(root / "dst/a", ns=(mtime, mtime))
    storage.sync("src/", "dst/")
    assert storage.read("dst/a").read() == b"edited"
    os.utime(root / "dst/a", ns=(mtime + 1, mtime + 1))
    storage.sync("src/", "dst/")
    assert storage.read("dst/a").read() == b"source"


def test_incremental_sync_removes_deleted_keys_and_keeps_the_rest(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    keys = _mirror(storage, root)
    kept = {key: _identity(root, key) for key in storage.list("dst/") if key != "dst/2/object"}
    storage.delete(keys[2])
    storage.sync("src/", "dst/")
    assert storage.list("dst/") == sorted(kept)
    assert {key: _identity(root, key) for key in kept} == kept
    assert not (root / "dst/2").exists()


def test_a_sync_copy_that_fails_keeps_the_old_copy_and_leaves_no_temporary_file(
    storage: LocalFileSystemBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_snapshots.storage import local

    _mirror(storage, root)
    storage.write("src/0/object", io.BytesIO(b"changed!"))
    before = _tree(root / "dst")

    def broken_fsync(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local.os, "fsync", broken_fsync)
    with pytest.raises(SnapshotStorageError, match="Input/output error"):
        storage.sync("src/", "dst/")
    assert _tree(root / "dst") == before
    assert _temporary_files(root) == []


def test_a_sync_copy_whose_times_cannot_be_set_is_in_place_and_copied_again_next_time(
    storage: LocalFileSystemBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The times are set once the copy is in place (see the cleanup tests):
    a copy without them holds the right bytes and is never taken for up to
    date, so the next sync copies it again."""
    from django_snapshots.storage import local

    _mirror(storage, root)
    storage.write("src/0/object", io.BytesIO(b"changed!"))

    def broken_utime(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local.os, "utime", broken_utime)
    with pytest.raises(SnapshotStorageError, match="Input/output error"):
        storage.sync("src/", "dst/")
    monkeypatch.undo()
    assert _tree(root / "dst")["0/object"] == b"changed!"
    assert _temporary_files(root) == []
    storage.sync("src/", "dst/")
    copy, source = (root / "dst/0/object").stat(), (root / "src/0/object").stat()
    # A nanosecond earlier when the source changed within the last 2 s (see sync).
    assert copy.st_mtime_ns in (source.st_mtime_ns, source.st_mtime_ns - 1)


# Crash leftovers

DAY = 24 * 3600
LEFTOVER = ".snapshots-write-0123456789abcdef\x7f"

# Streams two MiB into a key, says so, then blocks until a line comes on its
# standard input (or it is killed), writes one more MiB and says it stored.
WRITER = """
import sys
from django_snapshots.storage.local import LocalFileSystemBackend

def chunks():
    yield b"x" * (1 << 20)
    yield b"y" * (1 << 20)
    print("writing", flush=True)  # both chunks are in the temporary file now
    sys.stdin.readline()
    yield b"z" * (1 << 20)

LocalFileSystemBackend(sys.argv[1]).stream_write(sys.argv[2], chunks())
print("stored", flush=True)
"""


@contextlib.contextmanager
def _writer(root: Path, key: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run WRITER on *key* in a child process until its source blocks, let
    the caller look at it, then kill it with SIGKILL (if it is still
    running)."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stderr is not None
        assert child.stdout.readline() == b"writing\n", child.stderr.read()
        yield child
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()  # type: ignore[union-attr]


def _resume(child: subprocess.Popen[bytes]) -> None:
    """Let WRITER's source go on, and wait until the write is done."""
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None
    child.stdin.write(b"go\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"stored\n", child.stderr.read()
    assert child.wait() == 0


def _leave(path: Path, *, age: float = 2 * DAY, data: bytes = b"left by a crash") -> Path:
    """Create the file *path* (and its directories), last written *age* seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def _modified(path: Path) -> datetime:
    mtime_ns = path.stat(follow_symlinks=False).st_mtime_ns
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=mtime_ns // 1000)


@pytest.mark.parametrize(
    ("key", "after"),
    [
        ("db/big.dump", {"db": None, "db/kept.dump": b"kept"}),
        ("new/deep/big.dump", {"db": None, "db/kept.dump": b"kept"}),
    ],
    ids=["beside-a-key", "in-new-directories"],
)
def test_cleanup_removes_the_temporary_file_of_a_writer_killed_mid_write(
    storage: LocalFileSystemBackend, root: Path, key: str, after: dict[str, bytes | None]
) -> None:
    """The leftover is real: a child process streams an object through
    stream_write from a generator that blocks, and is killed with SIGKILL."""
    storage.write("db/kept.dump", io.BytesIO(b"kept"))
    with _writer(root, key) as child:
        pass
    assert child.returncode == -signal.SIGKILL
    directory = key.rpartition("/")[0]
    [name] = _temporary_files(root / directory)
    leftover = root / directory / name
    assert leftover.stat().st_size == 2 << 20

    assert storage.cleanup() == []  # younger than a day: maybe a slow write
    assert leftover.exists()
    when = time.time() - DAY - 60
    os.utime(leftover, (when, when))
    expected = [(f"{directory}/{name}", "temporary file", _modified(leftover), 2 << 20)]
    assert storage.cleanup() == expected
    assert _tree(root) == after
    assert storage.cleanup(older_than=0) == []


def test_cleanup_keeps_the_temporary_file_a_writer_holds_open_however_old_it_looks(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    """A child process streams an object from a generator that blocks, so
    that its temporary file is open and idle; aged by two days, the file is
    kept and not reported, and the write then stores its own bytes.  A
    second writer, killed with SIGKILL, leaves a file that cleanup
    removes."""
    with _writer(root, "db/big.dump") as child:
        [name] = _temporary_files(root / "db")
        when = time.time() - 2 * DAY  # as if its source had stalled for two days
        os.utime(root / "db" / name, (when, when))
        assert storage.cleanup(dry_run=True) == []
        assert storage.cleanup() == []
        assert storage.cleanup(older_than=0) == []
        assert (root / "db" / name).exists()
        _resume(child)
    assert _tree(root) == {
        "db": None,
        "db/big.dump": b"x" * (1 << 20) + b"y" * (1 << 20) + b"z" * (1 << 20),
    }

    with _writer(root, "db/big.dump") as child:
        pass
    assert child.returncode == -signal.SIGKILL
    [name] = _temporary_files(root / "db")
    os.utime(root / "db" / name, (when, when))
    assert [leftover.name for leftover in storage.cleanup()] == [f"db/{name}"]
    assert _temporary_files(root) == []
    assert list(_tree(root)) == ["db", "db/big.dump"]  # the first writer's object, kept


# Cleans up a location holding one old temporary file; at the moment cleanup
# is about to remove it, another process opens it.  The opener waits until
# cleanup lets go of the file, and the kernel tells cleanup with a signal
# (SIGURG, blocked here so that the moment it arrives is known).
OPENED_DURING_CLEANUP = """
import os, signal, subprocess, sys
root, name = sys.argv[1], sys.argv[2]
if sys.argv[3] == "local":
    from django_snapshots.storage import LocalFileSystemBackend
    storage = LocalFileSystemBackend(root)
else:
    from django.core.files.storage import FileSystemStorage
    from django_snapshots.storage import DjangoStorageBackend
    storage = DjangoStorageBackend(FileSystemStorage(location=root))
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGURG})
unlink, openers = os.unlink, []
def unlink_once_opened(path, *, dir_fd=None):
    reader = "import sys; open(sys.argv[1], 'rb').close()"
    openers.append(subprocess.Popen([sys.executable, "-c", reader, os.path.join(root, name)]))
    assert signal.sigtimedwait({signal.SIGURG}, 60) is not None, "the opener never tried"
    unlink(path, dir_fd=dir_fd)
os.unlink = unlink_once_opened
removed = storage.cleanup(older_than=3600)
print([leftover.name for leftover in removed], openers[0].wait(60), flush=True)
"""


def opened_during_cleanup(root: Path, name: str, kind: str) -> subprocess.CompletedProcess[bytes]:
    """Run OPENED_DURING_CLEANUP on the *kind* of backend (``local`` or
    ``django``, over a FileSystemStorage) at *root*."""
    return subprocess.run(
        [sys.executable, "-c", OPENED_DURING_CLEANUP, str(root), name, kind],
        capture_output=True,
        timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        cwd=Path(__file__).parent.parent,
    )


def test_a_temporary_file_opened_while_cleanup_removes_it_never_kills_the_cleanup(
    root: Path,
) -> None:
    """Cleanup holds a lease on the file it removes; whoever opens the file
    meanwhile makes the kernel signal the holder, with SIGIO unless told
    otherwise, whose default action ends the process (a web or task worker
    running cleanup).  The opener is not harmed: its open waits until the
    lease ends, then succeeds."""
    _leave(root / "db" / LEFTOVER)
    child = opened_during_cleanup(root, f"db/{LEFTOVER}", "local")
    assert child.returncode == 0, child.stderr.decode(errors="replace")
    assert child.stdout == f"[{f'db/{LEFTOVER}'!r}] 0\n".encode()
    assert _tree(root) == {}


def test_cleanup_keeps_the_temporary_file_of_a_write_in_progress(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    found: list[object] = []

    def chunks() -> Iterator[bytes]:
        yield b"first"
        found.append(storage.cleanup(older_than=60))
        found.append(storage.cleanup(older_than=60, dry_run=True))
        yield b"second"

    storage.stream_write("db/latest.dump", chunks())
    assert found == [[], []]
    assert _tree(root) == {"db": None, "db/latest.dump": b"firstsecond"}


def test_a_write_idle_for_longer_than_the_limit_keeps_its_file_and_stores_its_data(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    """A writer of this very process holds its temporary file open too."""
    storage.write("db/latest.dump", io.BytesIO(b"old"))
    found: list[object] = []

    def chunks() -> Iterator[bytes]:
        yield b"first"
        [name] = _temporary_files(root / "db")
        when = time.time() - 2 * 3600  # as if its source stalled for two hours
        os.utime(root / "db" / name, (when, when))
        found.append(storage.cleanup(older_than=3600, dry_run=True))
        found.append(storage.cleanup(older_than=3600))
        yield b"second"

    storage.stream_write("db/latest.dump", chunks())
    assert found == [[], []]
    assert _tree(root) == {"db": None, "db/latest.dump": b"firstsecond"}


def _unreadable_idle_write_scenario(location: Path) -> None:
    storage = LocalFileSystemBackend(location)
    storage.write("db/latest.dump", io.BytesIO(b"old"))
    removed: list[list[str]] = []

    def chunks() -> Iterator[bytes]:
        yield b"first"
        [name] = _temporary_files(location / "db")
        when = time.time() - 2 * 3600  # as if its source stalled for two hours
        os.utime(location / "db" / name, (when, when))
        # Cleanup can neither open it nor, so, take a lease on it.
        (location / "db" / name).chmod(0)
        removed.append([leftover.name for leftover in storage.cleanup(older_than=3600)])
        yield b"second"

    with pytest.raises(SnapshotStorageError, match="a cleanup removed its temporary file"):
        storage.stream_write("db/latest.dump", chunks())
    assert len(removed[0]) == 1
    assert _tree(location) == {"db": None, "db/latest.dump": b"old"}


def test_a_write_idle_for_longer_than_the_limit_whose_file_cannot_be_leased_fails_cleanly() -> None:
    """Where cleanup cannot tell whether the file is open (here it cannot
    open it; elsewhere: another system, a network file system), the age
    alone decides: the idle write loses its file, fails at its rename and
    leaves the old object as it was."""
    _run_as_nobody(_unreadable_idle_write_scenario)


def test_cleanup_never_takes_the_copy_a_sync_is_about_to_put_in_place(
    storage: LocalFileSystemBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy carries its source's modification time, days old for an old
    backup; its temporary file must not show that time before the rename,
    or a cleanup running meanwhile takes it for a leftover and the sync
    fails.  The cleanup runs at the last moment: right before the rename."""
    storage.write("src/old.dump", io.BytesIO(b"written long ago"))
    when = time.time() - 3 * DAY
    os.utime(root / "src" / "old.dump", (when, when))
    replace = os.replace
    removed: list[object] = []

    def cleanup_then_replace(*args: Any, **kwargs: Any) -> None:
        removed.extend(storage.cleanup(older_than=DAY))
        replace(*args, **kwargs)

    monkeypatch.setattr(os, "replace", cleanup_then_replace)
    storage.sync("src/", "dst/")
    monkeypatch.undo()
    assert removed == []
    assert _tree(root)["dst/old.dump"] == b"written long ago"
    copy, source = (root / "dst" / "old.dump").stat(), (root / "src" / "old.dump").stat()
    assert copy.st_mtime_ns == source.st_mtime_ns


@pytest.mark.parametrize("older_than", [timedelta(hours=3), 3 * 3600, 3 * 3600.0, "3h"])
def test_cleanup_measures_age_by_the_last_write_to_the_file(
    storage: LocalFileSystemBackend, root: Path, older_than: object
) -> None:
    young = _leave(root / "a" / LEFTOVER, age=2 * 3600)
    old = _leave(root / "b" / LEFTOVER, age=4 * 3600)
    assert [leftover.name for leftover in storage.cleanup(older_than=older_than)] == [  # type: ignore[arg-type]
        f"b/{LEFTOVER}"
    ]
    assert young.exists()
    assert not old.exists()
    with young.open("ab") as file:  # written to again: young again, whatever came before
        file.write(b"more")
    assert storage.cleanup(older_than=3600) == []
    assert young.exists()


def test_cleanup_never_touches_keys_even_named_like_temporary_files(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    keys = [
        ".snapshots-write-0123456789abcdef",
        "db/.snapshots-write-0123456789abcdef",
        "db/.snapshots-write-0123456789abcdef.sha256",
        "db/latest.dump",
    ]
    for key in keys:
        storage.write(key, io.BytesIO(key.encode()))
        _leave(root / key, age=30 * DAY, data=key.encode())
    before = _tree(root)
    assert storage.cleanup(older_than=0, dry_run=True) == []
    assert storage.cleanup(older_than=0) == []
    assert _tree(root) == before
    assert storage.list("") == sorted(keys)


def test_cleanup_leaves_foreign_files_links_and_anything_outside_alone(
    storage: LocalFileSystemBackend, root: Path, outside: Path, tmp_path: Path
) -> None:
    outside_leftover = _leave(outside / "d" / LEFTOVER)
    _leave(root / "d" / ".snapshots-write-0123\x7f")  # not the name this backend makes
    _leave(root / "d" / ".snapshots-write-0123456789ABCDEF\x7f")
    _leave(root / "d" / LEFTOVER.removesuffix("\x7f"))
    _leave(root / "ctl\x01dir" / LEFTOVER)  # in a directory no key can be in
    _leave(root / "named-like-one" / LEFTOVER / LEFTOVER)  # in a directory so named
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / LEFTOVER)
    (root / "links").mkdir()
    (root / "links" / LEFTOVER).symlink_to(outside_leftover)
    (root / "through").symlink_to(outside / "d")
    before = _tree(tmp_path)
    assert storage.cleanup(older_than=0) == []
    assert _tree(tmp_path) == before
    assert outside_leftover.exists()


def test_a_dry_run_removes_nothing_and_reports_what_cleanup_then_removes(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    storage.write("db/latest.dump", io.BytesIO(b"dump"))
    _leave(root / "db" / LEFTOVER)
    _leave(root / "new" / "deep" / LEFTOVER.replace("0123", "4567"), data=b"12345")
    before = _tree(root)
    planned = storage.cleanup(dry_run=True)
    assert [(leftover.name, leftover.size) for leftover in planned] == [
        (f"db/{LEFTOVER}", 15),
        (f"new/deep/{LEFTOVER.replace('0123', '4567')}", 5),
    ]
    assert _tree(root) == before
    assert storage.cleanup(dry_run=True) == planned
    assert storage.cleanup() == planned
    assert _tree(root) == {"db": None, "db/latest.dump": b"dump"}


@pytest.mark.parametrize(
    ("prefix", "found"),
    [
        ("acme/", ["acme/db/L", "acme/L"]),
        ("acme/db/", ["acme/db/L"]),
        ("acme", ["acme/db/L", "acme/L", "acmecorp/L"]),
        ("acme/.snap", ["acme/L"]),
        ("acme/.snapshots-write-9", []),
        ("acme/d", ["acme/db/L"]),
        ("", ["L", "acme/db/L", "acme/L", "acmecorp/L"]),
    ],
)
def test_cleanup_is_confined_to_its_prefix(
    storage: LocalFileSystemBackend, root: Path, prefix: str, found: list[str]
) -> None:
    for name in ["L", "acme/L", "acme/db/L", "acmecorp/L"]:
        _leave(root / name.replace("L", LEFTOVER))
    names = sorted(name.replace("L", LEFTOVER) for name in found)
    assert [leftover.name for leftover in storage.cleanup(prefix, dry_run=True)] == names
    assert [leftover.name for leftover in storage.cleanup(prefix)] == names
    remaining = sorted(path for path, data in _tree(root).items() if data is not None)
    assert remaining == sorted(
        name.replace("L", LEFTOVER)
        for name in {"L", "acme/L", "acme/db/L", "acmecorp/L"}.difference(found)
    )


def test_cleanup_removes_the_directories_it_empties_and_no_others(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    _leave(root / "a" / "b" / "c" / LEFTOVER)
    storage.write("a/key", io.BytesIO(b"k"))
    (root / "a" / "empty").mkdir()
    (root / "untouched" / "empty").mkdir(parents=True)
    _leave(root / "x" / "y" / LEFTOVER)
    assert len(storage.cleanup("a/b/")) == 1
    assert len(storage.cleanup()) == 1
    assert _tree(root) == {
        "a": None,
        "a/empty": None,
        "a/key": b"k",
        "untouched": None,
        "untouched/empty": None,
    }


def test_cleanup_of_a_missing_location_finds_nothing_and_creates_nothing(tmp_path: Path) -> None:
    storage = LocalFileSystemBackend(tmp_path / "never" / "written")
    assert storage.cleanup() == []
    assert storage.cleanup("db/", older_than=0, dry_run=True) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"prefix": "../"}, SnapshotStoragePathError, "segment '..'"),
        ({"prefix": "/abs"}, SnapshotStoragePathError, "must not start with '/'"),
        ({"prefix": 3}, SnapshotStoragePathError, "must be a str"),
        ({"older_than": -1}, ValueError, "must not be negative"),
        ({"older_than": timedelta(seconds=-1)}, ValueError, "must not be negative"),
        ({"older_than": float("nan")}, ValueError, "finite"),
        ({"older_than": "soon"}, ValueError, "not a duration"),
        ({"older_than": True}, TypeError, "not a bool"),
        ({"older_than": None}, TypeError, "NoneType"),
        ({"dry_run": "yes"}, TypeError, "dry_run must be a bool, not str"),
        ({"dry_run": 1}, TypeError, "dry_run must be a bool, not int"),
        ({"dry_run": None}, TypeError, "dry_run must be a bool, not NoneType"),
    ],
)
def test_cleanup_refuses_bad_arguments_before_any_io(
    tmp_path: Path, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    # Any I/O on this location would raise SnapshotStorageError instead.
    (tmp_path / "file").write_bytes(b"not a directory")
    storage = LocalFileSystemBackend(tmp_path / "file")
    with pytest.raises(error, match=message):
        storage.cleanup(**arguments)
    with pytest.raises(SnapshotStorageError, match="Not a directory"):
        storage.cleanup()


def test_cleanup_through_a_symlinked_directory_is_refused(
    storage: LocalFileSystemBackend, root: Path, outside: Path
) -> None:
    leftover = _leave(outside / LEFTOVER)
    (root / "link").symlink_to(outside)
    with pytest.raises(SnapshotStoragePathError, match="symbolic link"):
        storage.cleanup("link/", older_than=0)
    assert storage.cleanup("li", older_than=0) == []
    assert leftover.exists()


def test_cleanup_works_in_a_location_that_is_a_symlink(tmp_path: Path) -> None:
    _leave(tmp_path / "real" / "db" / LEFTOVER)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert [leftover.name for leftover in LocalFileSystemBackend(tmp_path / "link").cleanup()] == [
        f"db/{LEFTOVER}"
    ]
    assert list((tmp_path / "real").iterdir()) == []


def _cleanup_failure_scenario(location: Path) -> None:
    storage = LocalFileSystemBackend(location)
    storage.write("src/a", io.BytesIO(b"a"))
    _leave(location / "src" / "sub" / LEFTOVER)
    _leave(location / "locked" / LEFTOVER)
    (location / "src" / "sub").chmod(0o300)  # may be entered, not listed
    with pytest.raises(
        SnapshotStorageError, match=r"cannot clean up 'src/'.*cannot read the directory 'src/sub/'"
    ) as raised:
        storage.cleanup("src/")
    assert raised.value.transient is False
    (location / "src" / "sub").chmod(0o700)
    (location / "locked").chmod(0o500)  # may be listed, not changed
    with pytest.raises(
        SnapshotStorageError, match=r"cannot remove the leftover 'locked/.*Permission denied"
    ):
        storage.cleanup("locked/")
    assert storage.cleanup("locked/", dry_run=True)[0].name == f"locked/{LEFTOVER}"
    assert [leftover.name for leftover in storage.cleanup("src/")] == [f"src/sub/{LEFTOVER}"]


def test_cleanup_fails_on_a_directory_it_cannot_read_or_change() -> None:
    _run_as_nobody(_cleanup_failure_scenario)


def test_writes_never_fail_while_a_cleanup_removes_the_directories_it_empties(
    storage: LocalFileSystemBackend, root: Path
) -> None:
    # The cleanup removes an old leftover from each directory, then the
    # directory if it is empty, while writers create, fill and empty the
    # same directories; a write that loses the race opens them again.
    errors: list[BaseException] = []

    def clean() -> None:
        try:
            storage.cleanup()
        except BaseException as exc:
            errors.append(exc)

    def churn(n: int) -> None:
        try:
            for i in range(DIRECTORIES):
                storage.write(f"shared/{i}/dir/{n}", io.BytesIO(b"x"))
                storage.delete(f"shared/{i}/dir/{n}")
            storage.write(f"shared/last/{n}", io.BytesIO(b"x"))
        except BaseException as exc:
            errors.append(exc)

    for _ in range(5):
        for i in range(DIRECTORIES):
            _leave(root / "shared" / str(i) / "dir" / LEFTOVER)
        threads = [threading.Thread(target=clean)]
        threads += [threading.Thread(target=churn, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert storage.list("") == [f"shared/last/{n}" for n in range(3)]
    assert _temporary_files(root) == []


DIRECTORIES = 100

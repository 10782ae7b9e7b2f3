"""``python -m django_snapshots`` and the ``django-snapshots`` script, run as
child processes in a temporary directory without any Django settings."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SUBCOMMANDS = ["check", "ls", "put", "get", "rm", "sync", "verify", "keygen", "demo"]
PROGRAM = "python -m django_snapshots"


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def cli(
    *args: str, cwd: Path, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "django_snapshots", *args],
        cwd=cwd,
        env=env or environment(),
        input=input,
        capture_output=True,
        timeout=120,
    )


def ok(*args: str, cwd: Path, input: bytes | None = None) -> str:
    result = cli(*args, cwd=cwd, input=input)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    return result.stdout.decode()


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """Return the error message of a failed run, checking it is one line with
    no traceback."""
    assert result.returncode == 1, result.stdout
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    prefix = f"{PROGRAM}: error: "
    assert stderr.startswith(prefix), stderr
    return stderr[len(prefix) :].rstrip("\n")


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "artifact.dump"
    path.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    return path


def test_put_ls_get_verify_rm_round_trip_on_the_default_storage(
    tmp_path: Path, artifact: Path
) -> None:
    data = artifact.read_bytes()
    stored = ok("put", str(artifact), "db/a.dump", cwd=tmp_path)
    assert stored == "stored 2097155 bytes at db/a.dump\n"
    assert ok("ls", cwd=tmp_path) == "db/a.dump\n"
    # The default storage: ./snapshots, with a sha256sum-compatible sidecar.
    assert (tmp_path / "snapshots" / "db" / "a.dump").read_bytes() == data
    sidecar = (tmp_path / "snapshots" / "db" / "a.dump.sha256").read_text()
    assert sidecar == f"{hashlib.sha256(data).hexdigest()}  a.dump\n"
    ok("get", "db/a.dump", "copy.dump", cwd=tmp_path)
    assert (tmp_path / "copy.dump").read_bytes() == data
    assert ok("verify", cwd=tmp_path) == "verified 1 object: all intact\n"
    ok("rm", "db/a.dump", cwd=tmp_path)
    assert ok("ls", cwd=tmp_path) == ""


def test_standard_input_and_output_carry_binary_data(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    ok("put", "-", "piped.bin", cwd=tmp_path, input=data)
    result = cli("get", "piped.bin", "-", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == data


def test_verify_fails_after_a_byte_is_flipped_on_disk(tmp_path: Path, artifact: Path) -> None:
    ok("put", str(artifact), "good.dump", cwd=tmp_path)
    ok("put", str(artifact), "bad.dump", cwd=tmp_path)
    stored = tmp_path / "snapshots" / "bad.dump"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    result = cli("verify", cwd=tmp_path)
    assert one_line_error(result) == "1 of 2 objects failed verification"
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("FAILED bad.dump: SnapshotIntegrityError: ")


@pytest.mark.parametrize("how", ["deleted", "directory", "symlink"])
def test_verify_fails_when_an_object_is_gone_but_its_sidecar_remains(
    tmp_path: Path, artifact: Path, how: str
) -> None:
    ok("put", str(artifact), "db/kept.dump", cwd=tmp_path)
    ok("put", str(artifact), "db/lost.dump", cwd=tmp_path)
    lost = tmp_path / "snapshots" / "db" / "lost.dump"
    lost.unlink()
    if how == "directory":
        ok("put", str(artifact), "db/lost.dump/part-1", cwd=tmp_path)
    elif how == "symlink":
        lost.symlink_to(tmp_path / "snapshots" / "db" / "kept.dump")
    result = cli("verify", cwd=tmp_path)
    total = 3 if how == "directory" else 2
    assert one_line_error(result) == f"1 of {total} objects failed verification"
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "FAILED db/lost.dump: the object is missing; only its checksum sidecar "
        "'db/lost.dump.sha256' remains ("
    )
    if how == "symlink":
        assert "is a symbolic link" in lines[0]
    else:
        ok("rm", "--force", "db/lost.dump", cwd=tmp_path)
        kept = "verified 2 objects" if how == "directory" else "verified 1 object"
        assert ok("verify", cwd=tmp_path) == f"{kept}: all intact\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["get", "missing.dump", "out.dump"], "no object at 'missing.dump'"),
        (["rm", "missing.dump"], "no object at 'missing.dump'"),
        (["put", "no-such-file", "k"], "cannot read 'no-such-file': No such file or directory"),
        (["ls", "../"], "SnapshotStoragePathError: invalid prefix '../': "
         "segment '..' is not allowed"),
        (["get", "/etc/passwd", "x"], "SnapshotStoragePathError: invalid key '/etc/passwd': "
         "must not start with '/'"),
        (["sync", "a", "b/"], "SnapshotStoragePathError: invalid directory prefix 'a': "
         "must be non-empty and end with '/'"),
    ],
    ids=["get-missing", "rm-missing", "put-missing-file", "bad-prefix", "absolute-key", "sync"],
)  # fmt: skip
def test_user_mistakes_are_one_line_errors_without_traceback(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    assert one_line_error(cli(*args, cwd=tmp_path)) == expected
    assert not (tmp_path / "out.dump").exists()


def test_traceback_option_shows_the_traceback(tmp_path: Path) -> None:
    result = cli("--traceback", "get", "missing.dump", "out", cwd=tmp_path)
    assert result.returncode != 0
    assert b"Traceback" in result.stderr


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_has_help(tmp_path: Path, subcommand: str) -> None:
    out = ok(subcommand, "--help", cwd=tmp_path)
    assert out.startswith(f"usage: {PROGRAM} {subcommand}")


def test_the_top_level_help_lists_every_subcommand(tmp_path: Path) -> None:
    out = ok("--help", cwd=tmp_path)
    for subcommand in SUBCOMMANDS:
        assert f"    {subcommand} " in out


def test_no_subcommand_is_a_usage_error(tmp_path: Path) -> None:
    result = cli(cwd=tmp_path)
    assert result.returncode == 2
    assert b"usage:" in result.stderr
    assert b"Traceback" not in result.stderr


def test_check_describes_the_default_stack_and_round_trips(tmp_path: Path) -> None:
    out = ok("check", cwd=tmp_path)
    location = str(tmp_path / "snapshots")
    assert "  1. [advanced] Checksum(algorithm='sha256')" in out
    assert f"  2. [advanced] LocalFileSystemBackend({location!r})" in out
    assert out.endswith("OK\n")


def _write_settings(directory: Path, name: str, snapshots: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(
        f"SECRET_KEY = 'test'\nINSTALLED_APPS = ['django_snapshots']\nSNAPSHOTS = {snapshots}\n"
    )


def test_the_settings_option_selects_a_project_storage(tmp_path: Path, artifact: Path) -> None:
    store = tmp_path / "project-store"
    storage = (
        '{"STORAGE": {"BACKEND": "django_snapshots.storage.LocalFileSystemBackend", '
        f'"OPTIONS": {{"location": {str(store)!r}}}}}}}'
    )
    _write_settings(tmp_path, "mysettings", storage)
    result = cli("--settings", "mysettings", "put", str(artifact), "a.dump", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert (store / "a.dump").read_bytes() == artifact.read_bytes()
    assert not (tmp_path / "snapshots").exists()


def test_django_settings_module_is_honoured(tmp_path: Path, artifact: Path) -> None:
    store = tmp_path / "env-store"
    storage = (
        '{"STORAGE": {"BACKEND": "django_snapshots.storage.LocalFileSystemBackend", '
        f'"OPTIONS": {{"location": {str(store)!r}}}}}}}'
    )
    _write_settings(tmp_path / "site", "envsettings", storage)
    env = environment(DJANGO_SETTINGS_MODULE="envsettings")
    args = ["--pythonpath", str(tmp_path / "site"), "put", str(artifact), "a.dump"]
    result = cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert (store / "a.dump").exists()


def test_a_misconfigured_settings_module_is_a_one_line_error(tmp_path: Path) -> None:
    _write_settings(tmp_path, "badsettings", '{"STORAGE": {"BACKEND": "nowhere.Backend"}}')
    message = one_line_error(cli("--settings", "badsettings", "ls", cwd=tmp_path))
    assert message.startswith(
        'misconfigured: SNAPSHOTS["STORAGE"]["BACKEND"]: cannot import \'nowhere.Backend\''
    )


def test_an_unknown_settings_module_is_a_one_line_error(tmp_path: Path) -> None:
    message = one_line_error(cli("--settings", "no_such_settings", "ls", cwd=tmp_path))
    assert message.startswith("cannot load the settings module 'no_such_settings'")


def test_the_console_script_runs_the_same_commands(tmp_path: Path, artifact: Path) -> None:
    script = Path(sys.executable).parent / "django-snapshots"
    result = subprocess.run(
        [str(script), "put", str(artifact), "a.dump"],
        cwd=tmp_path, env=environment(), capture_output=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "snapshots" / "a.dump").exists()
    usage = subprocess.run(
        [str(script), "ls", "--help"], cwd=tmp_path, env=environment(), capture_output=True
    )
    assert usage.stdout.decode().startswith("usage: django-snapshots ls")


def _run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    # stderr is a pseudo-terminal, stdout a pipe: a bar may only be drawn on
    # the former.
    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide; give it a real terminal's size.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "django_snapshots", *args],
        cwd=cwd, env=environment(), stdout=subprocess.PIPE, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    process.wait(timeout=120)
    assert process.stdout is not None
    process.stdout.close()
    os.close(controller)
    return process.returncode, drawn.decode(errors="replace")


def test_verify_draws_a_progress_bar_only_on_a_terminal(tmp_path: Path, artifact: Path) -> None:
    for index in range(3):
        ok("put", str(artifact), f"db/{index}.dump", cwd=tmp_path)
    returncode, drawn = _run_on_a_terminal(["verify"], cwd=tmp_path)
    assert returncode == 0
    assert "verify:" in drawn
    assert "0/3" in drawn
    assert cli("verify", cwd=tmp_path).stderr == b""


def test_a_settings_module_whose_storage_fails_to_build_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "brokensettings.py").write_text(
        "from django_snapshots.storage import Prefix, MemoryBackend\n"
        "SNAPSHOTS = {'STORAGE': Prefix(MemoryBackend(), '../escape')}\n"
    )
    message = one_line_error(cli("--settings", "brokensettings", "ls", cwd=tmp_path))
    assert message.startswith(
        "cannot load the settings module 'brokensettings': SnapshotStoragePathError: "
    )


def test_get_to_a_reader_that_stops_early_ends_quietly(tmp_path: Path, artifact: Path) -> None:
    ok("put", str(artifact), "big.dump", cwd=tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "django_snapshots", "get", "big.dump", "-"],
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    assert len(process.stdout.read(10)) == 10
    process.stdout.close()  # like `| head -c 10`
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == b""
    process.stderr.close()


def script(*args: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run the ``django-snapshots`` console script."""
    program = Path(sys.executable).parent / "django-snapshots"
    return subprocess.run(
        [str(program), *args], cwd=cwd, env=environment(), capture_output=True, timeout=120,
        **kwargs,
    )  # fmt: skip


def _write_code_settings(directory: Path, name: str, code: str) -> None:
    (directory / f"{name}.py").write_text(
        "SECRET_KEY = 'test'\nINSTALLED_APPS = ['django_snapshots']\n" + code
    )


README_STACK = """
from django_snapshots.storage import Checksum, LocalFileSystemBackend, Logging, Retry
SNAPSHOTS = {"STORAGE": Logging(Retry(Checksum(LocalFileSystemBackend("store"))))}
"""


def test_standard_output_carries_only_data_with_the_readme_stack(tmp_path: Path) -> None:
    _write_code_settings(tmp_path, "readme", README_STACK)
    data = b"fourteen bytes"
    put = cli("--settings", "readme", "put", "-", "db/a.dump", cwd=tmp_path, input=data)
    assert put.stdout == b"stored 14 bytes at db/a.dump\n"
    got = cli("--settings", "readme", "get", "db/a.dump", "-", cwd=tmp_path)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == data
    assert b"snapshots.storage.read" in got.stderr  # the audit log went to stderr
    copied = cli("--settings", "readme", "put", "-", "db/b.dump", cwd=tmp_path, input=got.stdout)
    assert copied.returncode == 0, copied.stderr.decode()
    assert (tmp_path / "store" / "db" / "b.dump").read_bytes() == data
    listed = script("ls", "--settings", "readme", cwd=tmp_path)
    assert listed.stdout == b"db/a.dump\ndb/b.dump\n"
    assert b"snapshots.storage.list" in listed.stderr


def test_standard_output_carries_only_data_when_a_sidecar_is_missing(tmp_path: Path) -> None:
    _write_code_settings(tmp_path, "lenient", """
from django_snapshots.storage import Checksum, LocalFileSystemBackend
SNAPSHOTS = {"STORAGE": Checksum(LocalFileSystemBackend("store"), strict=False)}
""")  # fmt: skip
    cli("--settings", "lenient", "put", "-", "a.bin", cwd=tmp_path, input=b"payload")
    (tmp_path / "store" / "a.bin.sha256").unlink()
    got = cli("--settings", "lenient", "get", "a.bin", "-", cwd=tmp_path)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == b"payload"
    assert b"snapshots.checksum.unverified" in got.stderr


FLAKY_ONCE = """
from django_snapshots.storage import Checksum, LocalFileSystemBackend, Retry


class FlakyOnce(LocalFileSystemBackend):
    failed = False

    def read(self, path):
        if not FlakyOnce.failed:
            FlakyOnce.failed = True
            raise ConnectionError("dropped once")
        return super().read(path)


SNAPSHOTS = {"STORAGE": Retry(Checksum(FlakyOnce("store")), wait_initial=0, wait_max=0,
                              wait_jitter=0)}
"""


def test_standard_output_carries_only_data_when_a_read_is_retried(tmp_path: Path) -> None:
    _write_code_settings(tmp_path, "flaky", FLAKY_ONCE)
    cli("--settings", "flaky", "put", "-", "a.bin", cwd=tmp_path, input=b"payload")
    got = cli("--settings", "flaky", "get", "a.bin", "-", cwd=tmp_path)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == b"payload"
    assert b"stamina.retry_scheduled" in got.stderr


def test_standard_output_carries_only_data_when_structlog_prints_there(tmp_path: Path) -> None:
    # A project that configured structlog to print to the file object that
    # is standard output when the settings are read.
    _write_code_settings(tmp_path, "printing", README_STACK + """
import sys
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stdout),
                    cache_logger_on_first_use=True)
""")  # fmt: skip
    cli("--settings", "printing", "put", "-", "a.bin", cwd=tmp_path, input=b"payload")
    got = cli("--settings", "printing", "get", "a.bin", "-", cwd=tmp_path)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == b"payload"
    assert b"snapshots.storage.read" in got.stderr
    listed = cli("ls", "--settings", "printing", cwd=tmp_path)
    assert listed.stdout == b"a.bin\n"
    assert b"snapshots.storage.list" in listed.stderr


@pytest.fixture
def stored(tmp_path: Path) -> bytes:
    """Store an object at db/a.dump in the default storage; return its bytes."""
    data = os.urandom(300_000)
    ok("put", "-", "db/a.dump", cwd=tmp_path, input=data)
    return data


def test_get_writes_through_dev_null_without_replacing_it(tmp_path: Path, stored: bytes) -> None:
    before = os.stat("/dev/null")
    assert ok("get", "db/a.dump", "/dev/null", cwd=tmp_path) == ""
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


@pytest.mark.parametrize("dest", ["/dev/stdout", "/dev/fd/1", "link-to-stdout"])
def test_get_to_dev_stdout_writes_standard_output(tmp_path: Path, stored: bytes, dest: str) -> None:
    (tmp_path / "link-to-stdout").symlink_to("/dev/stdout")
    result = cli("get", "db/a.dump", dest, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == stored
    assert (tmp_path / "link-to-stdout").is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_get_writes_through_a_fifo_to_its_reader(tmp_path: Path, stored: bytes) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = cli("get", "db/a.dump", str(fifo), cwd=tmp_path)
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert result.returncode == 0, result.stderr.decode()
    assert received == [stored]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_get_refuses_a_read_only_file_even_with_force(tmp_path: Path, stored: bytes) -> None:
    dest = tmp_path / "kept.dump"
    dest.write_bytes(b"previous")
    dest.chmod(0o444)
    for extra in ([], ["--force"]):
        message = one_line_error(cli("get", "db/a.dump", "kept.dump", *extra, cwd=tmp_path))
        assert message == "cannot write 'kept.dump': it is read-only (mode 0444)"
        assert dest.read_bytes() == b"previous"
        assert stat.S_IMODE(dest.stat().st_mode) == 0o444


def test_get_replaces_an_existing_file_only_with_force(tmp_path: Path, stored: bytes) -> None:
    dest = tmp_path / "kept.dump"
    dest.write_bytes(b"previous")
    dest.chmod(0o640)
    message = one_line_error(cli("get", "db/a.dump", "kept.dump", cwd=tmp_path))
    assert message == "cannot write 'kept.dump': it already exists (--force replaces it)"
    assert dest.read_bytes() == b"previous"
    ok("get", "--force", "db/a.dump", "kept.dump", cwd=tmp_path)
    assert dest.read_bytes() == stored
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["kept.dump", "snapshots"]


def test_get_creates_a_new_file_readable_by_its_owner_only(tmp_path: Path, stored: bytes) -> None:
    ok("get", "db/a.dump", "new.dump", cwd=tmp_path)
    assert (tmp_path / "new.dump").read_bytes() == stored
    assert stat.S_IMODE((tmp_path / "new.dump").stat().st_mode) == 0o600


def test_get_follows_a_symbolic_link_and_keeps_it(tmp_path: Path, stored: bytes) -> None:
    (tmp_path / "real.dump").write_bytes(b"previous")
    (tmp_path / "link.dump").symlink_to("real.dump")
    message = one_line_error(cli("get", "db/a.dump", "link.dump", cwd=tmp_path))
    assert message == "cannot write 'link.dump': it already exists (--force replaces it)"
    ok("get", "-f", "db/a.dump", "link.dump", cwd=tmp_path)
    assert (tmp_path / "link.dump").is_symlink()
    assert (tmp_path / "real.dump").read_bytes() == stored


def test_get_refuses_a_symbolic_link_to_nothing(tmp_path: Path, stored: bytes) -> None:
    (tmp_path / "dangling").symlink_to("nowhere")
    message = one_line_error(cli("get", "db/a.dump", "dangling", cwd=tmp_path))
    assert message == "cannot write 'dangling': it is a symbolic link to nothing"
    assert not (tmp_path / "nowhere").exists()
    assert (tmp_path / "dangling").is_symlink()


def test_get_into_a_directory_writes_the_key_basename(tmp_path: Path, stored: bytes) -> None:
    (tmp_path / "out").mkdir()
    ok("get", "db/a.dump", "out", cwd=tmp_path)
    ok("get", "db/a.dump", "out/", "--force", cwd=tmp_path)
    assert os.listdir(tmp_path / "out") == ["a.dump"]
    assert (tmp_path / "out" / "a.dump").read_bytes() == stored
    message = one_line_error(cli("get", "db/a.dump", "out/", cwd=tmp_path))
    assert message == "cannot write 'out/a.dump': it already exists (--force replaces it)"


def test_get_into_a_missing_directory_never_creates_a_file_of_its_name(
    tmp_path: Path, stored: bytes
) -> None:
    message = one_line_error(cli("get", "db/a.dump", "missing/", cwd=tmp_path))
    assert message == "cannot write 'missing/': no such directory"
    assert not (tmp_path / "missing").exists()


def test_get_onto_a_directory_named_like_the_key_refuses(tmp_path: Path, stored: bytes) -> None:
    (tmp_path / "out" / "a.dump").mkdir(parents=True)
    message = one_line_error(cli("get", "db/a.dump", "out", cwd=tmp_path))
    assert message == "cannot write 'out/a.dump': it is a directory"


def test_get_names_the_destination_not_its_temporary_file(tmp_path: Path, stored: bytes) -> None:
    longest = "n" * 255  # NAME_MAX: the temporary file's name must still fit
    ok("get", "db/a.dump", longest, cwd=tmp_path)
    assert (tmp_path / longest).read_bytes() == stored
    result = cli("get", "db/a.dump", "/dev/full", cwd=tmp_path)
    assert one_line_error(result) == "cannot write '/dev/full': No space left on device"
    too_long = "n" * 256
    message = one_line_error(cli("get", "db/a.dump", too_long, cwd=tmp_path))
    assert message == f"cannot write {too_long!r}: File name too long"
    assert ".part" not in message


def test_verify_of_nothing_fails_unless_allowed(tmp_path: Path) -> None:
    message = one_line_error(cli("verify", cwd=tmp_path))
    assert message == (
        "nothing to verify: no object in the storage (--allow-empty makes this a success)"
    )
    ok("put", "-", "db/a.dump", cwd=tmp_path, input=b"a")
    message = one_line_error(cli("verify", "bd/", cwd=tmp_path))
    assert message == (
        "nothing to verify: no object under 'bd/' (--allow-empty makes this a success)"
    )
    allowed = ok("verify", "--allow-empty", "bd/", cwd=tmp_path)
    assert allowed == "verified 0 objects: all intact\n"
    assert ok("verify", "db/", cwd=tmp_path) == "verified 1 object: all intact\n"


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _hidden_files(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob(".*")] if directory.exists() else []


def test_sigterm_during_put_removes_the_temporary_file(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    process = subprocess.Popen(
        [sys.executable, "-m", "django_snapshots", "put", "-", "db/big.dump"],
        cwd=tmp_path, env=environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None
    # Half an object, then the pipe stays open: the command waits mid-stream.
    process.stdin.write(os.urandom(4 * 1024 * 1024))
    process.stdin.flush()
    _wait_for(lambda: bool(_hidden_files(store)), "the temporary file in the store")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert stderr.decode() == f"{PROGRAM}: error: terminated by SIGTERM\n"
    assert stdout == b""
    assert _hidden_files(store) == []
    assert ok("ls", cwd=tmp_path) == ""


SLOW_READS = """
import time
from django_snapshots.storage import LocalFileSystemBackend


class _Slow:
    def __init__(self, stream):
        self._stream = stream

    def read(self, size=-1):
        time.sleep(0.05)
        return self._stream.read(min(size, 4096) if size and size > 0 else 4096)

    def readable(self):
        return True

    def close(self):
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class SlowReads(LocalFileSystemBackend):
    def read(self, path):
        return _Slow(super().read(path))


SNAPSHOTS = {"STORAGE": SlowReads("store")}
"""


def test_sigterm_during_get_removes_the_partial_file(tmp_path: Path) -> None:
    _write_code_settings(tmp_path, "slow", SLOW_READS)
    put = cli("--settings", "slow", "put", "-", "big.dump", cwd=tmp_path, input=os.urandom(10**6))
    assert put.returncode == 0, put.stderr.decode()
    (tmp_path / "out").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "django_snapshots", "--settings", "slow", "get", "big.dump",
         "out/"],
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _wait_for(lambda: bool(os.listdir(tmp_path / "out")), "the partial file")
    assert os.listdir(tmp_path / "out")[0].endswith(".part")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert stderr.decode() == f"{PROGRAM}: error: terminated by SIGTERM\n"
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--settings", "opts"],
        ["ls", "-v", "2", "--settings", "opts"],
        ["--settings", "opts", "ls", "--verbosity", "0", "--no-color", "--traceback"],
        ["ls", "--pythonpath", ".", "--force-color", "--settings=opts"],
    ],
)
def test_program_options_may_follow_the_command(tmp_path: Path, args: list[str]) -> None:
    _write_code_settings(tmp_path, "opts", """
from django_snapshots.storage import LocalFileSystemBackend
SNAPSHOTS = {"STORAGE": LocalFileSystemBackend("optstore")}
""")  # fmt: skip
    (tmp_path / "optstore").mkdir()
    (tmp_path / "optstore" / "only.key").write_bytes(b"x")
    result = script(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"only.key\n"


def test_traceback_after_the_command_shows_the_traceback(tmp_path: Path) -> None:
    result = cli("get", "missing.dump", "out", "--traceback", cwd=tmp_path)
    assert result.returncode != 0
    assert b"Traceback" in result.stderr


# keygen, through the console script.


def _secret_of(key_file: Path) -> str:
    return next(line for line in key_file.read_text().splitlines() if line.startswith("AGE-"))


def test_keygen_writes_an_identity_file_that_age_and_encrypt_read(tmp_path: Path) -> None:
    import io

    from django_snapshots.storage import Encrypt, MemoryBackend

    result = script("keygen", "-o", "backup-key.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    recipient = result.stdout.decode().removesuffix("\n")
    assert result.stdout == f"{recipient}\n".encode()
    assert recipient.startswith("age1")
    key_file = tmp_path / "backup-key.txt"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    lines = key_file.read_text().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["# created", "# public key"]
    assert lines[1] == f"# public key: {recipient}"
    # Written for the printed recipient, read with the file: by Encrypt, and
    # by the age decoder the tests implement from the specification (pyage
    # refuses rage's random grease stanzas now and then).
    from tests.test_encrypt import SpecKey, spec_decrypt

    writer = Encrypt(MemoryBackend(), recipients=[recipient])
    writer.write("db/a.dump", io.BytesIO(b"dump bytes"))
    ciphertext = writer.__wrapped__.read("db/a.dump").read()
    reader = Encrypt(writer.__wrapped__, identities=[key_file])
    assert reader.read("db/a.dump").read() == b"dump bytes"
    identity = next(line for line in lines if line.startswith("AGE-SECRET-KEY-1"))
    key = SpecKey.from_identity(identity)
    assert key.recipient == recipient
    assert spec_decrypt(ciphertext, key) == b"dump bytes"


def test_keygen_refuses_to_replace_an_existing_key(tmp_path: Path) -> None:
    assert script("keygen", "-o", "key.txt", cwd=tmp_path).returncode == 0
    before = (tmp_path / "key.txt").read_bytes()
    again = script("keygen", "-o", "key.txt", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr == (
        b"django-snapshots: error: cannot write 'key.txt': it already exists, and keygen never "
        b"replaces a key (backups encrypted for it would be lost); choose another name\n"
    )
    assert again.stdout == b""
    assert (tmp_path / "key.txt").read_bytes() == before


@pytest.mark.parametrize("output", ["-", "/dev/stdout", "/dev/stderr", "/dev/null"])
def test_keygen_never_writes_the_secret_to_a_stream(tmp_path: Path, output: str) -> None:
    result = script("keygen", "-o", output, cwd=tmp_path)
    assert result.returncode == 1
    assert b"AGE-SECRET-KEY" not in result.stdout + result.stderr
    assert result.stdout == b""
    assert list(tmp_path.iterdir()) == []


def test_keygen_keeps_the_secret_off_a_terminal(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "django-snapshots"), "keygen", "-o", "key.txt"],
        cwd=tmp_path, env=environment(), stdout=terminal, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0
    recipient = (tmp_path / "key.txt").read_text().splitlines()[1].removeprefix("# public key: ")
    assert shown.decode() == f"{recipient}\r\n"
    assert _secret_of(tmp_path / "key.txt").encode() not in shown


def test_keygen_without_pyrage_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "without-pyrage"
    missing.mkdir()
    (missing / "pyrage.py").write_text("raise ImportError(\"No module named 'pyrage'\")\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "django-snapshots"), "keygen", "-o", "key.txt"],
        cwd=tmp_path, env=environment(PYTHONPATH=str(missing)), capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        b"django-snapshots: error: keygen needs pyrage: pip install 'django-snapshots[encrypt]'\n"
    )
    assert not (tmp_path / "key.txt").exists()

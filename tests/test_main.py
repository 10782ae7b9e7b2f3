"""``python -m django_snapshots`` and the ``django-snapshots`` script, run as
child processes in a temporary directory without any Django settings."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

SUBCOMMANDS = ["check", "ls", "put", "get", "rm", "sync", "verify", "demo"]
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

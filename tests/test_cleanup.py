"""The arguments every ``cleanup`` takes (``parse_duration``,
``check_older_than``, ``check_cleanup_arguments``): what is accepted, and
that anything else is refused with the documented exception before any
I/O.  And how a local cleanup tells a leftover from the file of a write in
progress that is only idle (``_unless_open``, a lease on Linux)."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from django_snapshots.storage.cleanup import _unless_open, check_older_than, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
    ],
)
def test_a_duration_is_whole_numbers_with_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["99999999999w", "9" * 30 + "s", "1000000000d"])
def test_a_duration_too_long_for_a_timedelta_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["\uff12\uff14h", "\u0662\u0664h", "2\u00b2h"])
def test_a_duration_is_spelled_with_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [1e20, 10**20, 10**9 * 86400, 1e300])
def test_an_age_too_long_for_a_timedelta_is_a_value_error(seconds: float) -> None:
    with pytest.raises(ValueError, match="too long"):
        check_older_than(seconds)


@pytest.mark.parametrize("seconds", [-1e-7, -1e-300, -(10**-9)])
def test_a_negative_age_is_refused_even_when_it_rounds_to_zero(seconds: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        check_older_than(seconds)


@pytest.mark.parametrize("seconds", [0, 0.0, -0.0])
def test_an_age_of_zero_is_accepted(seconds: float) -> None:
    assert check_older_than(seconds) == timedelta(0)


# --------------------------------------------------------------------------
# _unless_open: whether a leftover is open in a process of this host


@pytest.fixture
def leftover(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A directory, open, holding the file ``left`` nobody has open."""
    (tmp_path / "left").write_bytes(b"partial")
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield directory, "left"
    finally:
        os.close(directory)


def looked_at(leftover: tuple[int, str]) -> os.stat_result:
    directory, name = leftover
    return os.stat(name, dir_fd=directory, follow_symlinks=False)


def opens_now(leftover: tuple[int, str]) -> bool:
    """Tell whether opening the file right now succeeds without waiting."""
    directory, name = leftover
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK, dir_fd=directory)
    except BlockingIOError:
        return False
    os.close(fd)
    return True


def test_a_file_nobody_has_open_is_unused_and_nobody_can_open_it_until_the_block_ends(
    leftover: tuple[int, str],
) -> None:
    directory, name = leftover
    with _unless_open(name, directory, looked_at(leftover)) as unused:
        assert unused
        assert not opens_now(leftover)
    assert opens_now(leftover)


def test_a_file_may_be_unlinked_while_nobody_can_open_it(
    leftover: tuple[int, str], tmp_path: Path
) -> None:
    directory, name = leftover
    with _unless_open(name, directory, looked_at(leftover)) as unused:
        assert unused
        os.unlink(name, dir_fd=directory)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [os.O_RDONLY, os.O_WRONLY, os.O_RDWR])
def test_a_file_open_anywhere_else_is_in_use_even_in_this_process(
    leftover: tuple[int, str], tmp_path: Path, mode: int
) -> None:
    directory, name = leftover
    fd = os.open(tmp_path / name, mode)
    try:
        with _unless_open(name, directory, looked_at(leftover)) as unused:
            assert not unused
            assert opens_now(leftover)  # no lease was taken
    finally:
        os.close(fd)


def test_a_file_another_cleanup_is_removing_is_left_to_it(leftover: tuple[int, str]) -> None:
    directory, name = leftover
    info = looked_at(leftover)
    with (
        _unless_open(name, directory, info) as first,
        _unless_open(name, directory, info) as second,
    ):
        assert first
        assert not second


def test_a_file_written_to_since_it_was_looked_at_is_in_use(
    leftover: tuple[int, str], tmp_path: Path
) -> None:
    """Its age was judged on what it no longer is, even though its writer
    has closed it since."""
    directory, name = leftover
    info = looked_at(leftover)
    with (tmp_path / name).open("ab") as file:
        file.write(b" and more")
    with _unless_open(name, directory, info) as unused:
        assert not unused
    info = looked_at(leftover)
    os.utime(tmp_path / name, ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    with _unless_open(name, directory, info) as unused:
        assert not unused


def test_a_file_replaced_removed_or_swapped_for_a_link_meanwhile_is_not_a_leftover(
    leftover: tuple[int, str], tmp_path: Path
) -> None:
    directory, name = leftover
    info = looked_at(leftover)
    (tmp_path / "other").write_bytes(b"partial")
    os.utime(tmp_path / "other", ns=(info.st_atime_ns, info.st_mtime_ns))
    os.replace(tmp_path / "other", tmp_path / name)
    with _unless_open(name, directory, info) as unused:
        assert not unused
    info = looked_at(leftover)
    os.unlink(tmp_path / name)
    with _unless_open(name, directory, info) as unused:
        assert not unused
    (tmp_path / "target").write_bytes(b"partial")
    (tmp_path / name).symlink_to(tmp_path / "target")
    with _unless_open(name, directory, info) as unused:
        assert not unused


NOBODY = 65534


def test_where_no_lease_can_be_had_the_age_alone_decides(tmp_path: Path) -> None:
    """A file of another user (no lease without ``CAP_LEASE``), or one this
    process cannot open: whether it is open cannot be told.  Checked as
    nobody when the tests run as root (who may lease and open anything)."""
    (tmp_path / "theirs").write_bytes(b"partial")
    (tmp_path / "unreadable").write_bytes(b"partial")
    (tmp_path / "unreadable").chmod(0)
    tmp_path.chmod(0o755)
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child reports through its exit code)
            code = 1
            try:
                if os.geteuid() == 0:
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                for name in ("theirs", "unreadable"):
                    info = os.stat(name, dir_fd=directory, follow_symlinks=False)
                    with _unless_open(name, directory, info) as unused:
                        assert unused, name
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(directory)

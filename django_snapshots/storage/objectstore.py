"""Store objects on S3, GCS, Azure Blob Storage or a local directory in
process, through obstore (advanced tier).

    >>> import io
    >>> from django_snapshots.storage.objectstore import ObjectStoreBackend
    >>> storage = ObjectStoreBackend("memory://")
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> storage.list("db/")
    ['db/latest.dump']
    >>> with storage.read("db/latest.dump") as file:
    ...     file.read()
    b'dump'

*url* names the store and a prefix in it: ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``az://container/prefix`` (the account comes from
*config*), ``file:///srv/backups`` or ``memory://``.  The key ``db/x`` is
the object ``prefix/db/x``: keys are appended below the prefix, and nothing
above it can be reached.  An obstore store object may be given instead of a
URL.  Nothing is sent over the network until the first operation.

What each operation maps to:

============================  ==================================================
``read``, ``stream_read``     one ``GET``, streamed
``write``, ``stream_write``   one ``PUT`` up to *chunk_size* bytes; above it a
                              multipart upload of *chunk_size* parts, at most
                              *max_concurrency* in flight, completed only once
                              every part is stored (aborted on any failure)
``list``, ``recursive_list``  a paginated listing of the prefix's directory,
                              filtered by the prefix and sorted; a ``HEAD``
                              of each zero-byte object, so that folder
                              markers (``dir/``) are never listed as keys
``exists``                    ``HEAD``
``delete``                    ``DELETE`` (missing is fine)
``atomic_move``               a rename on a local directory and in memory; a
                              server-side copy then a ``DELETE`` elsewhere
``sync``                      two listings, a bulk ``DELETE`` of stale keys
                              and a server-side copy of each key whose size
                              and ETag do not show it already mirrored
============================  ==================================================

Errors: a missing key is :class:`FileNotFoundError`; throttling, server
errors (5xx), timeouts and connection failures are
:class:`~django_snapshots.exceptions.SnapshotStorageError` with
``transient=True``; refused credentials or permissions, and a bucket that
does not exist, are permanent, and so is an object whose name obstore cannot
list (an empty, ``.`` or ``..`` segment, a control character) on S3, GCS or
Azure: the error names it; in a local directory such names are skipped.
Credentials given in *config* or *client_options* never appear in ``repr``,
in error messages or in logs; a URL option holding some is refused.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import inspect
import json
import os
import re
import stat
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from django_snapshots.exceptions import (
    SnapshotStorageCapabilityError,
    SnapshotStorageError,
    SnapshotStoragePathError,
)
from django_snapshots.storage.cleanup import (
    DEFAULT_OLDER_THAN,
    Leftover,
    _unless_open,
    check_cleanup_arguments,
)
from django_snapshots.storage.keys import (
    MAX_KEY_BYTES,
    _is_key,
    _show,
    validate_key,
    validate_prefix,
    validate_sync_prefixes,
)
from django_snapshots.storage.streams import (
    CHUNK_SIZE,
    ChunkReader,
    StickyChunks,
    buffered,
    check_binary_content,
    iter_chunks,
)

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = ["ObjectStoreBackend"]

_INSTALL_HINT = 'install it with: pip install "django-snapshots[objectstore]"'
_S3_CLEANUP_HINT = 'install it with: pip install "django-snapshots[objectstore-s3-cleanup]"'

# URL scheme -> the kind of store it builds.
_SCHEMES = {
    "s3": "s3", "s3a": "s3", "gs": "gcs", "az": "azure", "azure": "azure", "abfs": "azure",
    "abfss": "azure", "adl": "azure", "file": "local", "memory": "memory",
}  # fmt: skip

#: The part size of multipart uploads, and the largest object sent in one PUT.
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
#: How many parts of one upload are sent at once.
DEFAULT_MAX_CONCURRENCY = 4
# S3 refuses parts smaller than 5 MiB (but the last).
_MIN_CHUNK_SIZE = 5 * 1024 * 1024

# What obstore's HTTP client does unless client_options say otherwise: a
# connection must be made within 5 s; a server that sends nothing for 30 s
# fails the request (a transient error); no request outlives 12 hours (the
# transfer of the largest backup over the slowest link).
_DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "connect_timeout": "5s",
    "read_timeout": "30s",
    "timeout": "12h",
}
# obstore retries each request on its own (a part of an upload, a page of a
# listing), which a Retry wrapper cannot do without starting the whole
# operation again; but only briefly, so that a refused connection fails in
# about a second and the Retry wrapper stays the policy for longer outages.
_DEFAULT_RETRY_CONFIG: dict[str, Any] = {
    "max_retries": 3,
    "retry_timeout": datetime.timedelta(seconds=15),
    "backoff": {
        "init_backoff": datetime.timedelta(milliseconds=100),
        "max_backoff": datetime.timedelta(seconds=2),
        "base": 2,
    },
}

# Options whose values are shown in repr and left in messages; every other
# option is treated as a credential.  Names are compared without their
# provider prefix (aws_, google_, azure_) and in lower case.
_PUBLIC_OPTIONS = frozenset(
    {
        "region", "default_region", "endpoint", "endpoint_url", "bucket", "bucket_name",
        "virtual_hosted_style_request", "skip_signature", "checksum_algorithm",
        "conditional_put", "copy_if_not_exists", "disable_tagging", "request_payer",
        "server_side_encryption", "unsigned_payload", "disable_bulk_delete",
        "sse_bucket_key_enabled", "account_name", "storage_account_name", "container_name",
        "use_emulator", "use_fabric_endpoint", "use_azure_cli", "base_url", "s3_express",
        "imdsv1_fallback", "allow_http", "allow_invalid_certificates", "connect_timeout",
        "read_timeout", "timeout", "pool_idle_timeout", "pool_max_idle_per_host", "http1_only",
        "http2_only", "user_agent", "default_content_type", "randomize_addresses",
        "http2_keep_alive_interval", "http2_keep_alive_timeout", "http2_keep_alive_while_idle",
        "proxy_excludes",
    }
)  # fmt: skip
_PROVIDER_PREFIX = re.compile(r"^(?:aws_|google_|azure_|azure_storage_)")
_OPTION_NAME = re.compile(r"[A-Za-z0-9_]+")

# S3, GCS and Azure name objects with at most 1024 bytes, prefix included.
_MAX_NAME_BYTES = 1024
# S3 copies objects of at most 5 GiB server-side in one request.
_MAX_COPY_BYTES = 5 * 1024**3
# POSIX file names hold 255 bytes; obstore writes a file through a staging
# file named "<name>#<n>", so a key's last segment leaves room for that.
_LOCAL_SEGMENT_BYTES = 255 - 8
_LOCAL_PATH_BYTES = 4095
# Names obstore's local store refuses ("#" and digits, its staging names) or
# writes elsewhere (a name ending in ":" or "|" becomes a directory).
_LOCAL_REFUSED_NAME = re.compile(r"#[0-9]+\Z|[:|]\Z")

# Where sync records the copies it made, under the destination prefix: a
# backslash, which no key may contain, keeps it out of every listing.
_SYNC_STATE = "\\snapshots-sync-state.json"

# The staging file obstore's local store writes an object through, next to
# it: "<name>#<n>", n counting up from 1 past the names already taken.
_STAGING_NAME = re.compile(r"(.+)#[0-9]+\Z", re.DOTALL)

# The S3 options obstore reads (from config, client_options or AWS_*
# environment variables, by any of their names) that a botocore client for
# cleanup needs, under one name each.
_S3_OPTIONS = {
    "aws_access_key_id": "access_key_id", "access_key_id": "access_key_id",
    "aws_secret_access_key": "secret_access_key", "secret_access_key": "secret_access_key",
    "aws_session_token": "token", "aws_token": "token", "session_token": "token",
    "token": "token",
    "aws_region": "region", "region": "region",
    "aws_default_region": "default_region", "default_region": "default_region",
    "aws_endpoint_url": "endpoint", "aws_endpoint": "endpoint", "endpoint_url": "endpoint",
    "endpoint": "endpoint", "aws_endpoint_url_s3": "s3_endpoint",
    "aws_virtual_hosted_style_request": "virtual_hosted_style_request",
    "virtual_hosted_style_request": "virtual_hosted_style_request",
    "aws_skip_signature": "skip_signature", "skip_signature": "skip_signature",
    "aws_request_payer": "request_payer", "request_payer": "request_payer",
    "aws_s3_express": "s3_express", "s3_express": "s3_express",
    "aws_allow_http": "allow_http", "allow_http": "allow_http",
    "aws_allow_invalid_certificates": "allow_invalid_certificates",
    "allow_invalid_certificates": "allow_invalid_certificates",
    "aws_proxy_url": "proxy_url", "proxy_url": "proxy_url",
    "aws_connect_timeout": "connect_timeout", "connect_timeout": "connect_timeout",
    "aws_read_timeout": "read_timeout", "read_timeout": "read_timeout",
}  # fmt: skip
# botocore's credential providers that read nothing obstore would not: its
# shared files, SSO and profile providers are left out.
_S3_CREDENTIAL_SOURCES = ("assume-role-with-web-identity", "container-role", "iam-role")
# A duration as obstore's options spell it ("5s", "30 secs", "1m 30s").
_DURATION_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|sec|secs|m|min|mins|h)\b")
_DURATION_UNITS = {
    "ms": 0.001, "s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600
}  # fmt: skip
# S3 error codes that mean a retry may succeed.
_S3_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
     "ServiceUnavailable", "TooManyRequests"}
)  # fmt: skip

_NO_BUCKET = re.compile(
    r"NoSuchBucket|ContainerNotFound|specified bucket does not exist|bucket does not exist",
    re.IGNORECASE,
)
_STATUS = re.compile(r"status code: (\d{3})")
_TRANSIENT_TEXT = re.compile(
    r"error sending request|connection|timed? ?out|timeout|broken pipe|reset by peer"
    r"|unexpected eof|error decoding response body|incomplete|SlowDown|Throttl"
    r"|TooManyRequests|ServiceUnavailable|InternalError|RequestTimeout|dns error",
    re.IGNORECASE,
)
# Rust's debug form of bytes (a key file, a token): a list of numbers.
_BYTE_LIST = re.compile(r"\[\d{1,3}(?:, ?\d{1,3}){3,}\]")
_QUERY = re.compile(r"(https?://[^\s?\"']*)\?[^\s\"']*")
_MESSAGE_LIMIT = 1000
# obstore's error for a listed name it cannot parse as a path, and the name.
_INVALID_PATH = re.compile(r"Encountered object with invalid path")
_INVALID_NAME = re.compile(
    r'Encountered object with invalid path: (?:Path "(.*)" contained empty path segment'
    r'|Error parsing Path "(.*?)": Encountered illegal)',
    re.DOTALL,
)


class _Entry(NamedTuple):
    size: int
    etag: str  # "" when the store gives none


class ObjectStoreBackend:
    """Store objects in an object store through obstore, in process
    (advanced tier, thread-safe).

    *url* is ``s3://bucket/prefix``, ``gs://bucket/prefix``,
    ``az://container/prefix``, ``file:///path`` (an existing directory) or
    ``memory://``; or an obstore store object (its own options, retries
    included, are then used as they are).  *config* holds the store's options
    (``region``, ``endpoint``, ``access_key_id``, ``secret_access_key``,
    ``service_account_key``, ``account_name``, ``sas_key``...: see obstore's
    ``S3Config``, ``GCSConfig`` and ``AzureConfig``); *client_options* the
    HTTP client's (``allow_http``, ``timeout``...); *retry_config* obstore's
    own retries of each request.  Unknown option names and unsupported
    schemes raise :class:`ValueError` without any I/O.

    Objects up to *chunk_size* bytes are sent in one request; larger ones as
    a multipart upload of *chunk_size* parts, *max_concurrency* at a time, so
    an upload holds about ``chunk_size * (max_concurrency + 1)`` bytes in
    memory (40 MiB by default).

    Crash leftovers: a process killed during a multipart upload to S3
    leaves an incomplete multipart upload, invisible to listings but billed
    until aborted; in a local directory, obstore writes each object through
    a staging file next to it, ``<key>#<n>``, that a killed process leaves
    behind (no key can end in ``#`` and digits).  :meth:`cleanup` aborts the
    first (through botocore: ``pip install
    "django-snapshots[objectstore-s3-cleanup]"``) and deletes the second;
    memory holds none.  On GCS and Azure it raises
    :class:`~django_snapshots.SnapshotStorageCapabilityError`: let the
    bucket's lifecycle rule abort incomplete multipart uploads on GCS, and
    Azure discards uncommitted blocks by itself after 7 days.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        url: str | ObjectStore,
        *,
        config: Mapping[str, Any] | None = None,
        client_options: Mapping[str, Any] | None = None,
        retry_config: Mapping[str, Any] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        try:
            import obstore.store
        except ImportError as exc:
            raise ImportError(f"ObjectStoreBackend needs obstore; {_INSTALL_HINT}") from exc
        self._chunk_size = _check_int("chunk_size", chunk_size, minimum=_MIN_CHUNK_SIZE)
        self._max_concurrency = _check_int("max_concurrency", max_concurrency, minimum=1)
        self._lock = threading.Lock()
        self._store: Any = None
        self._bucket_exists = False
        options = _check_options("config", config)
        client = _check_options("client_options", client_options)
        if retry_config is not None and not isinstance(retry_config, Mapping):
            raise TypeError(f"retry_config must be a mapping, not {type(retry_config).__name__}")
        if isinstance(url, str):
            self._url = url
            self._kind, bucket, prefix = _parse_url(url)
            self._shown = _shown_options(options, client)
            self._secrets = _secret_values(options) + _secret_values(client)
            if self._kind in ("local", "memory"):
                if options or client or retry_config:
                    raise ValueError(
                        f"a {self._kind} store takes no config, client_options or retry_config"
                    )
                self._root = _local_root(url) if self._kind == "local" else ""
            else:
                self._root = ""
                self._store = self._build_remote(
                    obstore.store, url, options, client, dict(retry_config or {})
                )
            self._prefix = prefix
            self._bucket = bucket
        else:
            if config is not None or client_options is not None or retry_config is not None:
                raise TypeError(
                    "config, client_options and retry_config go with a URL, not a store"
                )
            self._kind = _store_kind(url)
            self._store = url
            self._url = ""
            self._shown = ""
            store_config = getattr(url, "config", None)
            self._secrets = _secret_values(
                store_config if isinstance(store_config, Mapping) else {}
            )
            raw_prefix = getattr(url, "prefix", None)
            self._root = os.fspath(raw_prefix) if self._kind == "local" and raw_prefix else ""
            self._prefix = "" if self._kind == "local" else str(raw_prefix or "").strip("/")
            named = store_config if isinstance(store_config, Mapping) else {}
            # obstore's store objects keep the bucket in their config.
            self._bucket = str(named.get("bucket") or named.get("container_name") or "")
        self._max_key_bytes = self._key_room()

    def _build_remote(
        self,
        module: Any,
        url: str,
        options: dict[str, Any],
        client: dict[str, Any],
        retry: dict[str, Any],
    ) -> Any:
        from obstore.exceptions import BaseError

        classes = {"s3": module.S3Store, "gcs": module.GCSStore, "azure": module.AzureStore}
        try:
            return classes[self._kind].from_url(
                url,
                config=options or None,
                client_options={**_DEFAULT_CLIENT_OPTIONS, **client},
                retry_config={**_DEFAULT_RETRY_CONFIG, **retry},
            )
        except (BaseError, TypeError, ValueError) as exc:
            message = self._clean(str(exc))
        # Raised outside the handler: obstore's exception may quote values.
        raise ValueError(f"{self!r} cannot be built: {message}")

    # -- description --------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL the backend was built from (``""`` when given a store)."""
        return self._url

    @property
    def max_key_bytes(self) -> int:
        """The longest key, in UTF-8 bytes, that the store can hold below the
        prefix: 1024 less the prefix and its slash on S3, GCS and Azure.

        .. versionadded:: 0.1
        """
        return self._max_key_bytes

    @property
    def max_segment_bytes(self) -> int | None:
        """The longest segment of a key, in UTF-8 bytes: 247 in a local
        directory (a file name less room for obstore's staging suffix),
        ``None`` (no limit of its own) on the other stores.

        .. versionadded:: 0.1
        """
        return _LOCAL_SEGMENT_BYTES if self._kind == "local" else None

    def __repr__(self) -> str:
        if not self._url:
            return f"ObjectStoreBackend({self._store!r})"
        return f"ObjectStoreBackend({_redacted_url(self._url)!r}{self._shown})"

    # -- basic tier ---------------------------------------------------------

    def read(self, path: str) -> IO[bytes]:
        """Open the object at *path* for reading, streamed from one ``GET``.

        A transfer that fails raises on this read and on every later one.
        """
        key = self._check_key(path)
        return buffered(ChunkReader(self._open(key, path)))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store every byte of *content* at *path*; the object becomes visible
        only once the upload is complete."""
        self._check_key(path)
        check_binary_content(content)
        self.stream_write(path, iter_chunks(content))

    def list(self, prefix: str) -> builtins.list[str]:
        """Return every stored key starting with *prefix*, sorted."""
        validate_prefix(prefix)
        return sorted(key for key in self._entries(prefix) if key.startswith(prefix))

    def delete(self, path: str) -> None:
        """Remove *path*; a missing key is fine."""
        import obstore

        key = self._check_key(path)
        try:
            obstore.delete(self._client(), key)
            return
        except FileNotFoundError:
            failure: BaseException | None = self._missing(path, writing=True, quiet=True)
        except Exception as exc:
            failure = self._mapped(exc, "delete", path)
            if self._kind == "local" and os.path.isdir(os.path.join(self._root, key)):
                failure = None  # a directory below keys is not an object
        if failure is not None:
            raise failure

    def exists(self, path: str) -> bool:
        """Tell whether an object is stored at *path* (a ``HEAD``)."""
        import obstore

        key = self._check_key(path)
        try:
            obstore.head(self._client(), key)
        except FileNotFoundError:
            failure = self._missing(path, writing=False, quiet=True)
        except Exception as exc:
            failure = self._mapped(exc, "exists", path)
        else:
            self._bucket_exists = True
            return True
        if failure is not None:
            raise failure
        return False

    # -- advanced tier ------------------------------------------------------

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the object at *path* in chunks; a missing key raises at once.

        A transfer that fails raises on this ``next()`` and on every later one.
        """
        key = self._check_key(path)
        return StickyChunks(self._open(key, path))

    def stream_write(self, path: str, chunks: Iterable[bytes]) -> None:
        """Store the concatenation of *chunks* at *path*, visible only once
        complete: an upload that fails, or whose *chunks* raise, is aborted
        and leaves the old object as it was."""
        key = self._check_key(path)
        self._put(key, path, chunks)

    def atomic_move(self, src: str, dst: str) -> None:
        """Replace *dst* with the object at *src*, and remove *src*.

        A rename in a local directory and in memory.  On S3, GCS and Azure a
        server-side copy, then a delete of *src*: readers of *dst* see the old
        object or the new one whole, and a failure between the two steps
        leaves both.
        """
        import obstore

        src_key = self._check_key(src)
        dst_key = self._check_key(dst)
        if src == dst:
            if not self.exists(src):
                raise FileNotFoundError(f"no object at {src!r} in {self!r}")
            return
        failure: BaseException | None = None
        try:
            if self._kind == "s3":
                size = obstore.head(self._client(), src_key)["size"]
                self._copy(src_key, dst_key, size)
                obstore.delete(self._client(), src_key)
            else:
                self._clear_keyless_directory(dst_key)
                obstore.rename(self._client(), src_key, dst_key)
            return
        except FileNotFoundError:
            failure = self._missing(src, writing=False, quiet=False)
        except Exception as exc:
            failure = self._mapped(exc, "atomic_move", src)
        assert failure is not None
        raise failure

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Return the same keys as :meth:`list`."""
        return self.list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Make the keys under *dst_prefix* mirror those under *src_prefix*:
        the same keys, holding the same bytes, copied server-side.

        A key of the mirror is left alone when it has the size and the ETag
        of its source, or the size and the ETag that this method's own copy of
        that very source version was given (S3 gives the copy of a multipart
        object an ETag of its own; sync records the pair under the mirror's
        prefix, in an object no key can name).  Stale keys are deleted first.
        """
        import obstore

        src_prefix, dst_prefix = validate_sync_prefixes(src_prefix, dst_prefix)
        for prefix in (src_prefix, dst_prefix):
            self._check_key(prefix + "x")
        source = {key[len(src_prefix) :]: entry for key, entry in self._entries(src_prefix).items()}
        for name in source:
            self._check_key(dst_prefix + name)
        target = {key[len(dst_prefix) :]: entry for key, entry in self._entries(dst_prefix).items()}
        state = self._sync_state(dst_prefix)
        stale = sorted(dst_prefix + name for name in target if name not in source)
        changed = sorted(
            name
            for name, entry in source.items()
            if not _same(entry, target.get(name), state.get(name))
        )
        failure: BaseException | None = None
        copying = ""
        try:
            if stale:
                self._delete_many(stale)
            for copying in changed:
                self._copy(src_prefix + copying, dst_prefix + copying, source[copying].size)
        except FileNotFoundError:
            failure = self._copy_missing(src_prefix, dst_prefix, copying)
        except Exception as exc:
            failure = self._mapped(exc, "sync", dst_prefix)
        if failure is not None:
            raise failure
        if changed or stale or state:
            mirrored = {
                key[len(dst_prefix) :]: entry for key, entry in self._entries(dst_prefix).items()
            }
            record = {
                name: [entry.etag, mirrored[name].etag]
                for name, entry in source.items()
                if name in mirrored
                and entry.etag
                and mirrored[name].etag
                and entry.etag != mirrored[name].etag
                and mirrored[name].size == entry.size
            }
            if record != state:
                self._write_sync_state(obstore, dst_prefix, record)

    # -- crash leftovers ----------------------------------------------------

    def cleanup(
        self,
        prefix: str = "",
        *,
        older_than: datetime.timedelta | float = DEFAULT_OLDER_THAN,
        dry_run: bool = False,
    ) -> builtins.list[Leftover]:
        """Remove what killed writes left under *prefix* that nobody wrote to
        for *older_than* (24 hours unless told), and return it sorted by name;
        with *dry_run*, remove nothing and return what would be removed.

        On S3 a leftover is an incomplete multipart upload of a key (or of a
        record ``sync`` keeps) that starts with *prefix* below the URL's
        prefix (kind ``"multipart upload"``, size the sum of its parts); it
        is aborted.  Uploads of names no key has are nobody's leftovers this
        backend knows of, and are left alone.
        Its age runs from the newest of its start and its parts' last
        modification, as the server tells them, read again just before the
        abort: an upload still sending parts is kept.  Completed objects are
        never touched.  The uploads are listed and aborted with botocore, built
        from this backend's own options and the ``AWS_*`` environment
        variables obstore reads (credentials given in neither come from the
        environment, a container or the instance, as obstore finds them; never
        from ``~/.aws`` files); without botocore this raises
        :class:`~django_snapshots.SnapshotStorageCapabilityError` naming the
        ``objectstore-s3-cleanup`` extra.

        In a local directory a leftover is a staging file of obstore,
        ``<key>#<n>`` (kind ``"temporary file"``), next to where the key
        would be; its age runs from its modification time, checked again
        right before it is deleted.  On Linux, one that a process of this
        host holds open is a write in progress and is kept, however old:
        obstore reuses a staging name once it is free and renames by name,
        so a writer idle past *older_than* whose file was removed would put
        the next writer's partial object in place of its own.  Elsewhere (a
        network file system, a file of another user, another system) only
        the age tells.  Keys, links and anything else are never touched,
        and links are never followed.  In memory there are none.

        GCS and Azure raise
        :class:`~django_snapshots.SnapshotStorageCapabilityError` before any
        I/O: on GCS, a lifecycle rule with an ``AbortIncompleteMultipartUpload``
        action removes incomplete uploads; Azure discards uncommitted blocks
        by itself after 7 days.  A bad *prefix*, *older_than* or *dry_run*
        raises before any I/O.

        .. versionadded:: 0.1
        """
        prefix, limit, dry_run = check_cleanup_arguments(prefix, older_than, dry_run)
        if self._kind in ("gcs", "azure"):
            raise SnapshotStorageCapabilityError(_NO_CLEANUP[self._kind].format(self=self))
        if self._kind == "memory":
            return []
        if self._kind == "local" and not self._root:
            raise SnapshotStorageCapabilityError(
                f"cleanup of {self!r} is refused: a LocalStore without a prefix reaches the "
                "whole file system; give it the directory it writes into"
            )
        if self._kind == "local":
            found = self._cleanup_local(prefix, limit, dry_run=dry_run)
        else:
            found = self._cleanup_s3(prefix, limit, dry_run=dry_run)
        return sorted(found, key=lambda leftover: (leftover.name, leftover.modified))

    def _cleanup_local(
        self, prefix: str, older_than: datetime.timedelta, *, dry_run: bool
    ) -> builtins.list[Leftover]:
        self._client()  # a missing directory is a configuration error
        removed = []
        # The directory obstore writes into: it resolves links in the root.
        root = os.path.realpath(self._root)
        failure: BaseException | None = None
        try:
            for directory, names, files, fd in os.fwalk(
                root, onerror=_raise_unless_vanished, follow_symlinks=False
            ):
                base = os.path.relpath(directory, root).replace(os.sep, "/")
                base = "" if base == "." else base + "/"
                # Only directories that may hold a name under the prefix.
                names[:] = [
                    name
                    for name in names
                    if (base + name + "/").startswith(prefix)
                    or prefix.startswith(base + name + "/")
                ]
                for file in files:
                    name = base + file
                    if not name.startswith(prefix) or not self._is_staging_name(name):
                        continue
                    leftover = _remove_staging_file(file, fd, name, older_than, dry_run=dry_run)
                    if leftover is not None:
                        removed.append(leftover)
        except OSError as exc:
            failure = SnapshotStorageError(
                f"cleanup of {prefix!r} on {self!r} failed: {self._clean(str(exc))}",
                transient=not isinstance(exc, PermissionError),
            )
        if failure is not None:
            raise failure
        return removed

    def _is_staging_name(self, name: str) -> bool:
        """Tell whether *name* is one obstore gives the staging file of an
        object this backend writes: a key, or a sync record, then ``#`` and
        digits."""
        match = _STAGING_NAME.match(name)
        if match is None:
            return False
        target = match.group(1)
        try:
            target.encode("utf-8")
        except UnicodeEncodeError:
            return False  # a file name no key can spell
        return self._is_written_here(target)

    def _is_written_here(self, name: str) -> bool:
        """Tell whether this backend writes objects named *name* (relative
        to its root): keys, and the records of ``sync``."""
        directory, _, last = name.rpartition("/")
        if last == _SYNC_STATE:
            return bool(directory) and self._is_addressable(directory)
        return self._is_addressable(name)

    def _cleanup_s3(
        self, prefix: str, older_than: datetime.timedelta, *, dry_run: bool
    ) -> builtins.list[Leftover]:
        client, extra = self._s3_cleanup_client()
        root = f"{self._prefix}/" if self._prefix else ""
        removed = []
        failure: BaseException | None = None
        try:
            listing = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self._bucket, **({"Prefix": root + prefix} if root + prefix else {}), **extra
            )
            uploads = [upload for page in listing for upload in page.get("Uploads", ())]
            for upload in uploads:
                key, upload_id = str(upload["Key"]), str(upload["UploadId"])
                if not key.startswith(root + prefix) or not self._is_written_here(key[len(root) :]):
                    continue  # outside the prefix, or not an upload of ours
                leftover = _stale_upload(
                    client, self._bucket, upload, key[len(root) :], older_than, extra
                )
                if leftover is None:
                    continue
                if not dry_run and not _abort_upload(client, self._bucket, key, upload_id, extra):
                    continue
                removed.append(leftover)
        except Exception as exc:
            failure = self._s3_mapped(exc, prefix)
        if failure is not None:
            raise failure
        self._bucket_exists = True
        return removed

    def _s3_cleanup_client(self) -> tuple[Any, dict[str, str]]:
        """A botocore S3 client that reaches the bucket as obstore does, and
        the parameters every request needs (a requester-pays flag)."""
        try:
            import botocore.config
            import botocore.session
        except ImportError:
            raise SnapshotStorageCapabilityError(
                f"cleanup of incomplete multipart uploads on {self!r} needs botocore, which "
                f"obstore lacks a call for; {_S3_CLEANUP_HINT}"
            ) from None
        from botocore import UNSIGNED

        store = self._client()
        options = _s3_options(store)
        endpoint = options.get("s3_endpoint") or options.get("endpoint") or None
        if (
            endpoint
            and endpoint.lower().startswith("http://")
            and not _is_true(options.get("allow_http"))
        ):
            raise SnapshotStorageError(
                f"cleanup on {self!r} refused: the endpoint is plain HTTP and allow_http "
                "is not set in client_options"
            )
        virtual = _is_true(options.get("virtual_hosted_style_request"))
        addressing = "path"
        if _is_true(options.get("s3_express")):
            addressing = "auto"  # botocore finds directory buckets' endpoints itself
        elif virtual and endpoint is None:
            addressing = "virtual"
        proxy = options.get("proxy_url")
        settings = botocore.config.Config(
            region_name=options.get("region") or options.get("default_region") or "us-east-1",
            s3={"addressing_style": addressing},
            connect_timeout=_seconds(options.get("connect_timeout"), default=5.0),
            read_timeout=_seconds(options.get("read_timeout"), default=30.0),
            retries={"mode": "standard", "max_attempts": 4},
            proxies={"http": proxy, "https": proxy} if proxy else None,
            signature_version=UNSIGNED if _is_true(options.get("skip_signature")) else None,
        )
        session = botocore.session.Session()
        credentials = self._s3_credentials(store, options)
        if credentials is None:
            resolver = session.get_component("credential_provider")
            for provider in builtins.list(resolver.providers):
                if provider.METHOD not in _S3_CREDENTIAL_SOURCES:
                    resolver.remove(provider.METHOD)
        client = session.create_client(
            "s3",
            endpoint_url=endpoint,
            verify=not _is_true(options.get("allow_invalid_certificates")),
            config=settings,
            **(credentials or {}),
        )
        if endpoint is not None and virtual and addressing == "path":
            # obstore takes such an endpoint as the bucket's own address.
            client.meta.events.register("before-sign.s3", _BucketEndpoint(endpoint, self._bucket))
        extra = {"RequestPayer": "requester"} if _is_true(options.get("request_payer")) else {}
        return client, extra

    def _s3_credentials(self, store: Any, options: Mapping[str, str]) -> dict[str, str] | None:
        """The credentials obstore signs with, as botocore's client takes
        them; None to let botocore find them where obstore would."""
        if _is_true(options.get("skip_signature")):
            return {}
        key, secret = options.get("access_key_id"), options.get("secret_access_key")
        provider = getattr(store, "credential_provider", None)
        if not (key and secret) and provider is not None:
            failure = ""
            try:
                found = provider()
                if inspect.isawaitable(found):
                    import asyncio

                    found = asyncio.run(_awaited(found))
                key, secret = found.get("access_key_id"), found.get("secret_access_key")
                options = {**options, "token": found.get("token") or ""}
            except Exception as exc:
                failure = f"{type(exc).__name__}: {self._clean(str(exc))}"
            if failure:
                raise SnapshotStorageError(
                    f"cleanup on {self!r} failed: its credential provider raised {failure}"
                )
        if not (key and secret):
            return None
        credentials = {"aws_access_key_id": key, "aws_secret_access_key": secret}
        if options.get("token"):
            credentials["aws_session_token"] = options["token"]
        # They may come from the environment or a provider: keep them out of
        # messages as the configured ones are.
        found_secrets = {value for value in credentials.values() if len(value) >= 4}
        self._secrets = tuple(sorted({*self._secrets, *found_secrets}, key=len, reverse=True))
        return credentials

    def _s3_mapped(self, exc: BaseException, prefix: str) -> BaseException:
        """*exc*, raised by botocore, as the error this library raises."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, (SnapshotStorageError, SnapshotStorageCapabilityError)):
            return exc
        action = f"cleanup of {prefix!r} on {self!r}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code == "NoSuchBucket":
                where = "bucket"
                return SnapshotStorageError(
                    f"the {where} {self._bucket!r} of {self!r} does not exist: create it, or "
                    "fix the URL"
                )
            transient = (status >= 500 or status == 429 or code in _S3_TRANSIENT_CODES) and (
                status not in (401, 403)
            )
            return SnapshotStorageError(
                f"{action} failed: {self._clean(str(exc))}", transient=transient
            )
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return SnapshotStorageError(
                f"{action} failed: no credentials: give access_key_id and secret_access_key "
                "in config, or set them in the environment"
            )
        if isinstance(exc, BotoCoreError):
            return SnapshotStorageError(
                f"{action} failed: {self._clean(str(exc))}",
                transient=bool(_TRANSIENT_TEXT.search(type(exc).__name__ + " " + str(exc))),
            )
        return exc

    # -- keys ---------------------------------------------------------------

    def _key_room(self) -> int:
        if self._kind == "memory":
            return MAX_KEY_BYTES
        if self._kind == "local":
            return min(MAX_KEY_BYTES, _LOCAL_PATH_BYTES - len(os.fsencode(self._root)) - 1)
        used = len(self._prefix.encode()) + 1 if self._prefix else 0
        return min(MAX_KEY_BYTES, _MAX_NAME_BYTES - used)

    def _check_key(self, key: str) -> str:
        """Refuse, before any I/O, a key this store cannot hold as itself."""
        validate_key(key)
        size = len(key.encode("utf-8"))
        if size > self._max_key_bytes:
            raise SnapshotStoragePathError(
                f"invalid key {_show(key)}: is {size} UTF-8 bytes long, more than the "
                f"{self._max_key_bytes} that {self!r} leaves below its prefix"
            )
        if self._kind == "local":
            for segment in key.split("/"):
                length = len(segment.encode("utf-8"))
                if length > _LOCAL_SEGMENT_BYTES:
                    raise SnapshotStoragePathError(
                        f"invalid key {_show(key)}: segment {_show(segment)} is {length} UTF-8 "
                        f"bytes long, more than the {_LOCAL_SEGMENT_BYTES} a name may have "
                        f"on {self!r}"
                    )
            name = key.rpartition("/")[2]
            if _LOCAL_REFUSED_NAME.search(name):
                raise SnapshotStoragePathError(
                    f"invalid key {_show(key)}: obstore's local store cannot hold a name "
                    "ending in '#' and digits (its staging names), ':' or '|'"
                )
        return key

    # -- operations ---------------------------------------------------------

    def _client(self) -> Any:
        """The obstore store; a local one is built at first use (obstore
        resolves its directory then)."""
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._store is None:
                from obstore.store import LocalStore, MemoryStore

                if self._kind == "memory":
                    self._store = MemoryStore()
                elif not os.path.isdir(self._root):
                    raise SnapshotStorageError(
                        f"the directory of {self!r} does not exist or is not a directory: "
                        "create it, or fix the URL"
                    )
                else:
                    # automatic_cleanup: a delete removes the directories it
                    # empties, as a key prefix on an object store vanishes
                    # with its last key; an empty directory left at a key's
                    # name would refuse that key's writes.
                    self._store = LocalStore(self._root, automatic_cleanup=True)
            return self._store

    def _open(self, key: str, path: str) -> Iterator[bytes]:
        import obstore

        failure: BaseException | None = None
        try:
            result = obstore.get(self._client(), key)
        except FileNotFoundError:
            failure = self._missing(path, writing=False, quiet=False)
        except Exception as exc:
            failure = self._mapped(exc, "read", path)
        if failure is not None:
            raise failure
        self._bucket_exists = True
        return self._chunks(result, path)

    def _chunks(self, result: Any, path: str) -> Iterator[bytes]:
        stream = result.stream(min_chunk_size=CHUNK_SIZE)
        expected = int(result.meta["size"])
        received = 0
        while True:
            failure: BaseException | None = None
            try:
                chunk = next(stream)
            except StopIteration:
                break
            except Exception as exc:
                failure = self._mapped(exc, "read", path, transient=True)
            if failure is not None:
                raise failure
            if chunk:
                received += len(chunk)
                yield bytes(chunk)
        if received != expected:
            raise SnapshotStorageError(
                f"read of {path!r} on {self!r} ended after {received} of {expected} bytes",
                transient=True,
            )

    def _put(self, key: str, path: str, chunks: Iterable[bytes]) -> None:
        import obstore

        self._clear_keyless_directory(key)
        # Up to chunk_size bytes go in one PUT; only a larger object pays for
        # the three requests of a multipart upload.
        iterator = iter(chunks)
        source_failed = False
        head = bytearray()
        for chunk in iterator:
            head += chunk
            if len(head) > self._chunk_size:
                break
        else:
            iterator = None  # type: ignore[assignment]
        failure: BaseException | None = None
        try:
            if iterator is None:
                obstore.put(self._client(), key, bytes(head), use_multipart=False)
            else:
                # The caller's chunks are pulled here, outside obstore's
                # runtime (they may come from another obstore stream); leaving
                # the block by an exception aborts the multipart upload.
                with obstore.open_writer(
                    self._client(),
                    key,
                    buffer_size=self._chunk_size,
                    max_concurrency=self._max_concurrency,
                ) as writer:
                    writer.write(bytes(head))
                    del head[:]
                    while True:
                        try:
                            chunk = next(iterator)
                        except StopIteration:
                            break
                        except BaseException:
                            source_failed = True
                            raise
                        writer.write(chunk)
        except FileNotFoundError:
            if source_failed:
                raise
            failure = self._missing(path, writing=True, quiet=False)
        except Exception as exc:
            if source_failed:
                raise  # the caller's chunks raised: theirs to see
            failure = self._mapped(exc, "write", path)
        if failure is not None:
            raise failure
        self._bucket_exists = True

    def _entries(self, prefix: str) -> dict[str, _Entry]:
        """The keys starting with *prefix* (and a few more), with their size
        and ETag.  obstore lists whole path segments, so the directory part
        of *prefix* is listed."""
        directory = prefix[: prefix.rfind("/")] if "/" in prefix else ""
        walk = False
        failure: BaseException | None = None
        try:
            found = self._listed(directory, prefix)
        except FileNotFoundError:
            return {}
        except Exception as exc:
            # obstore stops at a file name it cannot parse: a local directory
            # is then walked here, where such names are merely not keys.
            walk = self._kind == "local" and _is_invalid_path(exc)
            if not walk:
                failure = self._unlistable(exc, prefix) or self._mapped(exc, "list", prefix)
        if failure is not None:
            raise failure
        if walk:
            try:
                found = self._walked(directory, prefix)
            except Exception as exc:
                failure = self._mapped(exc, "list", prefix)
            if failure is not None:
                raise failure
        self._bucket_exists = True
        return found

    def _listed(self, directory: str, prefix: str) -> dict[str, _Entry]:
        import obstore

        found: dict[str, _Entry] = {}
        # obstore names a folder marker ("dir/", as the S3 console's "Create
        # folder" makes) without its slash, like an object "dir": a zero-byte
        # entry, or a name listed twice, is looked up without the slash.
        doubtful: set[str] = set()
        store = self._client()
        for page in obstore.list(store, directory or None, chunk_size=1000):
            for meta in page:
                key = str(meta["path"])
                if key.startswith(prefix) and self._is_addressable(key):
                    size = int(meta["size"])
                    if self._kind not in ("local", "memory") and (size == 0 or key in found):
                        doubtful.add(key)
                    found[key] = _Entry(size, str(meta.get("e_tag") or ""))
        for key in sorted(doubtful):
            try:
                meta = obstore.head(store, key)
            except FileNotFoundError:
                del found[key]  # only a folder marker holds that name
            else:
                found[key] = _Entry(int(meta["size"]), str(meta.get("e_tag") or ""))
        return found

    def _walked(self, directory: str, prefix: str) -> dict[str, _Entry]:
        """What :meth:`_listed` finds in a local directory, read from the
        file system: the same keys, sizes and ETags, but names that are not
        keys are skipped instead of failing the listing."""
        found: dict[str, _Entry] = {}
        start = os.path.join(self._root, *directory.split("/")) if directory else self._root
        pending: builtins.list[tuple[str, str, frozenset[tuple[int, int]]]] = [
            (start, directory, frozenset())
        ]
        while pending:
            path, base, ancestors = pending.pop()
            try:
                info = os.stat(path)
                entries = builtins.list(os.scandir(path))
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed since, or the directory is a file
            here = (info.st_dev, info.st_ino)
            if here in ancestors:
                continue  # a link to a directory above it: endless
            for entry in entries:
                key = f"{base}/{entry.name}" if base else entry.name
                if not _is_key(key):
                    continue  # a name no key can spell, nor anything below it
                try:
                    info = entry.stat()  # through links, as obstore does
                except FileNotFoundError:
                    continue  # removed since, or a dangling link
                if stat.S_ISDIR(info.st_mode):
                    pending.append((entry.path, key, ancestors | {here}))
                elif (
                    stat.S_ISREG(info.st_mode)
                    and key.startswith(prefix)
                    and self._is_addressable(key)
                ):
                    found[key] = _Entry(info.st_size, _local_etag(info))
        return found

    def _is_addressable(self, key: str) -> bool:
        """Tell whether *key* is a key this store can read, so a listing may
        show it."""
        try:
            self._check_key(key)
        except SnapshotStoragePathError:
            return False
        return True

    def _clear_keyless_directory(self, key: str) -> None:
        """In a local directory, remove the empty directories at *key*'s
        name (left by a store that does not prune them, or by another
        program), which would refuse the object; a directory holding any
        file holds a key, and stays."""
        if self._kind != "local" or not self._root:
            return
        target = os.path.join(self._root, key)
        if os.path.islink(target) or not os.path.isdir(target):
            return
        for directory, _, _ in sorted(
            os.walk(target, followlinks=False), key=lambda entry: -len(entry[0])
        ):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError:
                return  # not empty: the write fails and says so

    def _copy(self, src: str, dst: str, size: int) -> None:
        import obstore

        if self._kind == "s3" and size > _MAX_COPY_BYTES:
            # Above 5 GiB S3 copies only part by part, which obstore does not
            # do: the bytes pass through this process instead.
            result = obstore.get(self._client(), src)
            self._put(dst, dst, self._chunks(result, src))
            return
        self._clear_keyless_directory(dst)
        obstore.copy(self._client(), src, dst)

    def _delete_many(self, keys: builtins.list[str]) -> None:
        import obstore

        if self._kind == "local":
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    obstore.delete(self._client(), key)
            return
        obstore.delete(self._client(), keys)

    def _copy_missing(self, src_prefix: str, dst_prefix: str, name: str) -> BaseException:
        """What a missing source means to sync: an object deleted while sync
        ran (transient: the next run lists without it) if a new listing no
        longer shows it, else an object that is listed but cannot be read,
        which no run can copy (permanent)."""
        key = src_prefix + name
        try:
            listed = key in self._entries(src_prefix)
        except Exception as exc:
            return exc
        if listed:
            return SnapshotStorageError(
                f"sync of {src_prefix!r} to {dst_prefix!r} on {self!r} failed: {key!r} is "
                "listed but the store finds no object to copy there; remove it with the "
                "provider's own tools"
            )
        return SnapshotStorageError(
            f"sync of {src_prefix!r} to {dst_prefix!r} on {self!r}: {key!r} was deleted "
            "while being copied; run it again",
            transient=True,
        )

    def _sync_state(self, dst_prefix: str) -> dict[str, builtins.list[str]]:
        """The copies a previous sync made into *dst_prefix*: key -> [source
        ETag, copy ETag].  Anything unreadable counts as no record."""
        import obstore

        try:
            data = bytes(obstore.get(self._client(), dst_prefix + _SYNC_STATE).bytes())
            state = json.loads(data)
        except Exception:
            return {}
        if not isinstance(state, dict):
            return {}
        return {
            str(k): [str(v[0]), str(v[1])]
            for k, v in state.items()
            if isinstance(v, builtins.list) and len(v) == 2
        }

    def _write_sync_state(
        self, obstore: Any, dst_prefix: str, record: dict[str, builtins.list[str]]
    ) -> None:
        # Best effort: without the record, the next sync copies again.
        name = dst_prefix + _SYNC_STATE
        try:
            if record:
                obstore.put(self._client(), name, json.dumps(record).encode(), use_multipart=False)
            else:
                obstore.delete(self._client(), name)
        except Exception:
            return

    # -- errors -------------------------------------------------------------

    def _missing(self, path: str, *, writing: bool, quiet: bool) -> BaseException | None:
        """What a "not found" from the store means: a missing bucket (a
        configuration error), else a missing key (None when *quiet*)."""
        problem = self._bucket_problem()
        if problem is not None:
            return problem
        if writing and not quiet:
            return SnapshotStorageError(
                f"write of {path!r} on {self!r} failed: the store reported a missing object"
            )
        return None if quiet else FileNotFoundError(f"no object at {path!r} in {self!r}")

    def _unlistable(self, exc: BaseException, prefix: str) -> SnapshotStorageError | None:
        """The error for a listing that obstore stopped at an object it cannot
        name (None if *exc* is another failure): permanent, since obstore
        fails on that object at every attempt."""
        text = str(exc).split("\n\nDebug source:", 1)[0]
        if not _INVALID_PATH.search(text):
            return None
        match = _INVALID_NAME.search(text)
        name = next((group for group in match.groups() if group is not None), "") if match else ""
        shown = f"the object {_show(name)}" if name else "an object"
        where = "container" if self._kind == "azure" else "bucket"
        return SnapshotStorageError(
            f"list of {prefix!r} on {self!r} failed: {shown} in the {where} "
            f"{self._bucket!r} has a name that is no path (an empty, '.' or '..' segment, "
            "or a control character), and obstore cannot list a directory past it: "
            "rename or remove it with the provider's own tools (the console, or e.g. "
            "aws s3api delete-object)"
        )

    def _bucket_problem(self) -> SnapshotStorageError | None:
        if self._bucket_exists or self._kind in ("local", "memory"):
            return None
        import obstore

        try:
            next(iter(obstore.list(self._client(), None, chunk_size=1)), None)
        except Exception as exc:
            if _NO_BUCKET.search(str(exc)):
                what = "container" if self._kind == "azure" else "bucket"
                return SnapshotStorageError(
                    f"the {what} {self._bucket!r} of {self!r} does not exist: create it, or "
                    "fix the URL"
                )
            return None
        self._bucket_exists = True
        return None

    def _mapped(
        self, exc: BaseException, action: str, path: str, *, transient: bool = False
    ) -> BaseException:
        """*exc*, raised by obstore, as the error this library raises."""
        from obstore.exceptions import (
            BaseError,
            PermissionDeniedError,
            UnauthenticatedError,
        )

        if isinstance(exc, (SnapshotStorageError, SnapshotStoragePathError)):
            return exc
        if not isinstance(exc, (BaseError, OSError)) and not _from_obstore(exc):
            return exc
        text = self._clean(str(exc))
        if _NO_BUCKET.search(text) and not transient:
            problem = self._bucket_problem()
            if problem is not None:
                return problem
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
            reason = (
                "permission denied"
                if isinstance(exc, PermissionDeniedError)
                else ("not authenticated")
            )
            return SnapshotStorageError(f"{action} of {path!r} on {self!r}: {reason}: {text}")
        status = _STATUS.search(text)
        code = int(status.group(1)) if status else 0
        if code in (401, 403):
            transient_error = False
        else:
            transient_error = (
                transient
                or code == 429
                or code >= 500
                or isinstance(exc, (ConnectionError, TimeoutError))
                or bool(_TRANSIENT_TEXT.search(text))
            )
        return SnapshotStorageError(
            f"{action} of {path!r} on {self!r} failed: {text}", transient=transient_error
        )

    def _clean(self, text: str) -> str:
        """*text* without obstore's debug dump, query strings (signatures,
        SAS tokens) or any configured secret."""
        text = text.split("\n\nDebug source:", 1)[0].strip()
        text = _QUERY.sub(r"\1?...", text)
        text = _BYTE_LIST.sub("[...]", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if len(text) > _MESSAGE_LIMIT:
            text = text[:_MESSAGE_LIMIT] + "..."
        return text


_NO_CLEANUP = {
    "gcs": (
        "cleanup of {self!r} is not available: obstore cannot list the incomplete "
        "multipart uploads a killed write leaves on GCS; give the bucket a lifecycle rule "
        "with the AbortIncompleteMultipartUpload action (e.g. an age of 1 day), and GCS "
        "removes them itself"
    ),
    "azure": (
        "cleanup of {self!r} is not available, nor needed: the blocks a killed write "
        "leaves on Azure Blob Storage are never committed into a blob, and Azure discards "
        "uncommitted blocks by itself after 7 days"
    ),
}


def _raise_unless_vanished(exc: OSError) -> None:
    """Let a walk pass a directory removed while it ran, and stop at any
    other failure."""
    if not isinstance(exc, FileNotFoundError):
        raise exc


def _remove_staging_file(
    file: str, directory: int, name: str, older_than: datetime.timedelta, *, dry_run: bool
) -> Leftover | None:
    """Delete the staging file *file* of the open *directory* if it is a
    regular file nobody wrote to for *older_than* and no process of this
    host holds open, and return it (None if kept, or gone meanwhile).  It is
    looked at right before it is deleted, so a write that resumed since the
    listing keeps it."""
    try:
        info = os.stat(file, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None  # a link, or a directory under that name: not obstore's
    modified = datetime.datetime.fromtimestamp(info.st_mtime_ns / 1e9, datetime.timezone.utc)
    if datetime.datetime.now(datetime.timezone.utc) - modified < older_than:
        return None
    # obstore stages at the first free "<key>#<n>" and renames by name: a
    # writer that is merely idle, its file removed, would rename the file of
    # the next writer of that key (staged under the same name) over the key
    # and report success.  So a file someone holds open is never removed.
    with _unless_open(file, directory, info) as unused:
        if not unused:
            return None
        if not dry_run:
            try:
                os.unlink(file, dir_fd=directory)
            except FileNotFoundError:
                return None
    return Leftover(name, "temporary file", modified, info.st_size)


def _stale_upload(
    client: Any,
    bucket: str,
    upload: Mapping[str, Any],
    name: str,
    older_than: datetime.timedelta,
    extra: Mapping[str, str],
) -> Leftover | None:
    """*upload* as a leftover named *name* if nobody added to it for
    *older_than*: its start and each part's last modification are read from
    the server (None if it is younger, or gone meanwhile)."""
    from botocore.exceptions import ClientError

    newest: datetime.datetime = upload["Initiated"]
    size = 0
    try:
        parts = client.get_paginator("list_parts").paginate(
            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"], **extra
        )
        for page in parts:
            for part in page.get("Parts", ()):
                size += int(part.get("Size") or 0)
                modified = part.get("LastModified")
                if modified is not None and modified > newest:
                    newest = modified
    except ClientError as exc:
        if _s3_code(exc) == "NoSuchUpload":
            return None  # completed or aborted since it was listed
        raise
    newest = newest.astimezone(datetime.timezone.utc)
    if datetime.datetime.now(datetime.timezone.utc) - newest < older_than:
        return None
    return Leftover(name, "multipart upload", newest, size)


def _abort_upload(
    client: Any, bucket: str, key: str, upload_id: str, extra: Mapping[str, str]
) -> bool:
    """Abort an incomplete multipart upload; False if it is gone already."""
    from botocore.exceptions import ClientError

    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, **extra)
    except ClientError as exc:
        if _s3_code(exc) == "NoSuchUpload":
            return False
        raise
    return True


def _s3_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_options(store: Any) -> dict[str, str]:
    """The S3 options *store* works with, under one name each: the ``AWS_*``
    environment variables obstore reads, overridden by the store's own."""
    options = {}
    for name, value in os.environ.items():
        canonical = _S3_OPTIONS.get(name.lower()) if name.startswith("AWS_") else None
        if canonical is not None:
            options[canonical] = value
    for source in (getattr(store, "client_options", None), getattr(store, "config", None)):
        if isinstance(source, Mapping):
            for name, value in source.items():
                canonical = _S3_OPTIONS.get(str(name).lower())
                if canonical is not None and value is not None:
                    options[canonical] = _option_text(value)
    return options


def _option_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds()}s"
    return str(value)


def _is_true(value: str | None) -> bool:
    """Tell whether an option's text is true, as obstore reads it."""
    return value is not None and value.strip().lower() in ("true", "1", "yes", "on")


def _seconds(value: str | None, *, default: float) -> float:
    """The seconds an obstore duration option spells (``"5s"``, ``"1m
    30s"``), or *default* when it is unset or spelled otherwise."""
    text = (value or "").strip().lower()
    parts = _DURATION_PART.findall(text)
    if not parts or _DURATION_PART.sub("", text).strip():
        return default
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class _BucketEndpoint:
    """Send botocore's path-style requests to an endpoint that is the
    bucket's own address, as obstore takes an endpoint given together with
    ``virtual_hosted_style_request``: the bucket leaves the path before the
    request is signed."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._with_bucket = f"{self._endpoint}/{urllib.parse.quote(bucket)}"

    def __call__(self, request: Any, **kwargs: Any) -> None:
        url = str(request.url)
        rest = url[len(self._with_bucket) :]
        if url.startswith(self._with_bucket) and rest[:1] in ("", "/", "?"):
            request.url = self._endpoint + (rest if rest.startswith("/") else "/" + rest)


def _same(source: _Entry, target: _Entry | None, copied: builtins.list[str] | None) -> bool:
    """Tell whether *target* provably holds the bytes of *source*: same size,
    and its own ETag or the ETag a recorded copy of that source was given."""
    if target is None or target.size != source.size or not source.etag or not target.etag:
        return False
    return target.etag == source.etag or copied == [source.etag, target.etag]


def _is_invalid_path(exc: BaseException) -> bool:
    from obstore.exceptions import InvalidPathError

    return isinstance(exc, InvalidPathError) or bool(_INVALID_PATH.search(str(exc)))


def _local_etag(info: os.stat_result) -> str:
    """The ETag obstore gives a local file: its inode, modification time in
    microseconds and size."""
    return f'"{info.st_ino:x}-{info.st_mtime_ns // 1000:x}-{info.st_size:x}"'


def _from_obstore(exc: BaseException) -> bool:
    from obstore.exceptions import BaseError

    return isinstance(exc, BaseError) or type(exc).__module__.startswith("obstore")


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def _check_options(what: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"{what} must be a mapping of option names to values, not {type(options).__name__}"
        )
    checked = {}
    for name, value in options.items():
        if not isinstance(name, str) or not _OPTION_NAME.fullmatch(name):
            raise ValueError(f"{what} option name {_show(name)} is not an option name")
        if _is_public(name) and _url_credentials(value):
            # Public options are shown in repr, on health pages and in
            # telemetry; no object store takes its credentials from there.
            raise ValueError(
                f"{what} option {name!r} must not hold credentials (user:password@) in its "
                "URL; pass them in their own options"
            )
        checked[name.lower()] = value
    return checked


def _is_public(name: str) -> bool:
    return (
        _PROVIDER_PREFIX.sub("", name.lower()) in _PUBLIC_OPTIONS or name.lower() in _PUBLIC_OPTIONS
    )


def _shown_options(config: dict[str, Any], client: dict[str, Any]) -> str:
    shown = ""
    for what, options in (("config", config), ("client_options", client)):
        if options:
            visible = {k: (v if _is_public(k) else "***") for k, v in options.items()}
            shown += f", {what}={visible!r}"
    return shown


def _url_credentials(value: object) -> str:
    """The ``user:password`` part of *value* if it is a URL holding one,
    else ``""``."""
    if not isinstance(value, str) or "://" not in value:
        return ""
    netloc = urllib.parse.urlsplit(value).netloc
    return netloc.rpartition("@")[0]


def _secret_values(options: Mapping[str, Any]) -> tuple[str, ...]:
    forms: set[str] = set()
    for name, value in options.items():
        if _is_public(str(name)):
            # A store built elsewhere may still carry them in a public URL.
            userinfo = _url_credentials(value)
            password = userinfo.partition(":")[2]
            forms.update(
                part
                for part in (userinfo, password, urllib.parse.unquote(password))
                if len(part) >= 4
            )
            continue
        texts = [value] if isinstance(value, (str, bytes)) else []
        if isinstance(value, Mapping):
            texts = [v for v in value.values() if isinstance(v, (str, bytes))]
        for text in texts:
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
            if len(text) >= 4:
                forms.update(
                    {text, urllib.parse.quote(text, safe=""), urllib.parse.quote_plus(text)}
                )
                forms.update(line for line in text.splitlines() if len(line) >= 8)
    return tuple(sorted(forms, key=len, reverse=True))


def _parse_url(url: str) -> tuple[str, str, str]:
    """Return (kind, bucket, prefix) of *url*, refusing what could leak or
    mislead, without showing anything that could be a credential."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("the URL must not contain control characters")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise ValueError(
            f"unsupported URL scheme {scheme!r} in {_redacted_url(url)!r}: use s3://, gs://, "
            "az://, file:// or memory:// (an S3-compatible service is s3:// with an "
            "endpoint in config)"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("the URL must not hold credentials (user:password@); pass them in config")
    if parts.query or parts.fragment:
        raise ValueError("the URL must not have a query string or a fragment; use config")
    path = urllib.parse.unquote(parts.path)
    if kind == "memory":
        if parts.netloc or path.strip("/"):
            raise ValueError("a memory URL is just 'memory://'")
        return kind, "", ""
    if kind == "local":
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(f"a file URL names an absolute path, file:///path, not {url!r}")
        return kind, "", ""
    if not parts.netloc:
        raise ValueError(f"the URL {_redacted_url(url)!r} names no bucket or container")
    prefix = path.strip("/")
    if prefix:
        validate_key(prefix)
    return kind, parts.netloc, prefix


def _local_root(url: str) -> str:
    return os.path.normpath(urllib.parse.unquote(urllib.parse.urlsplit(url).path))


def _redacted_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None or parts.query:
        netloc = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return url


def _store_kind(store: object) -> str:
    from obstore.store import AzureStore, GCSStore, LocalStore, MemoryStore, S3Store

    kinds = ((S3Store, "s3"), (GCSStore, "gcs"), (AzureStore, "azure"), (LocalStore, "local"),
             (MemoryStore, "memory"))  # fmt: skip
    for cls, kind in kinds:
        if isinstance(store, cls):
            return kind
    raise TypeError(
        f"url must be a URL or an obstore store (S3Store, GCSStore, AzureStore, LocalStore, "
        f"MemoryStore), not {type(store).__name__}"
    )

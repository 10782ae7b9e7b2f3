"""An in-memory storage of the advanced tier, for tests and examples.

    >>> import io
    >>> from django_snapshots.storage import MemoryBackend
    >>> storage = MemoryBackend()
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> storage.list("db/")
    ['db/latest.dump']
    >>> storage.read("db/latest.dump").read()
    b'dump'

Objects live in a dict guarded by a lock, so one instance may be shared by
threads; every operation is atomic.  Nothing is persisted.
"""

from __future__ import annotations

import builtins
import io
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import IO

from django_snapshots.storage.cleanup import DEFAULT_OLDER_THAN, Leftover, check_cleanup_arguments
from django_snapshots.storage.keys import validate_key, validate_prefix, validate_sync_prefixes
from django_snapshots.storage.streams import CHUNK_SIZE, check_binary_content, iter_chunks

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Store objects in process memory (advanced tier, thread-safe).

    **Crash leftovers.**  None: a write gathers its content before it
    stores the object in one step, and nothing outlives the process anyway.
    :meth:`cleanup` exists so that code written for any backend runs here.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "MemoryBackend()"

    def read(self, path: str) -> IO[bytes]:
        """Return a file object over the object at *path*."""
        return io.BytesIO(self._get(path))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Store *content* at *path*; the old object stays until the new one is complete."""
        check_binary_content(content)
        self.stream_write(path, iter_chunks(content))

    def list(self, prefix: str) -> list[str]:
        """Return the stored keys starting with *prefix*, sorted."""
        validate_prefix(prefix)
        with self._lock:
            return sorted(key for key in self._objects if key.startswith(prefix))

    def delete(self, path: str) -> None:
        """Remove *path* if it exists."""
        validate_key(path)
        with self._lock:
            self._objects.pop(path, None)

    def exists(self, path: str) -> bool:
        """Tell whether *path* is stored."""
        validate_key(path)
        with self._lock:
            return path in self._objects

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the object at *path* in chunks (raises at once if missing)."""
        data = self._get(path)
        return (data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE))

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Store the concatenation of *chunks* at *path*."""
        validate_key(path)
        buffer = bytearray()
        for chunk in chunks:
            buffer += chunk
        with self._lock:
            self._objects[path] = bytes(buffer)

    def atomic_move(self, src: str, dst: str) -> None:
        """Move *src* to *dst* in one step."""
        validate_key(src)
        validate_key(dst)
        with self._lock:
            if src not in self._objects:
                raise FileNotFoundError(f"no object at {src!r}")
            self._objects[dst] = self._objects.pop(src)

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Same as :meth:`list`."""
        return self.list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Make the keys under *dst_prefix* mirror those under *src_prefix*."""
        src_prefix, dst_prefix = validate_sync_prefixes(src_prefix, dst_prefix)
        with self._lock:
            mirrored = {
                validate_key(dst_prefix + key[len(src_prefix) :]): data
                for key, data in self._objects.items()
                if key.startswith(src_prefix)
            }
            for key in [k for k in self._objects if k.startswith(dst_prefix)]:
                del self._objects[key]
            self._objects.update(mirrored)

    def cleanup(
        self,
        prefix: str = "",
        *,
        older_than: timedelta | float = DEFAULT_OLDER_THAN,
        dry_run: bool = False,
    ) -> builtins.list[Leftover]:
        """Return ``[]``: no write leaves anything behind here, and no
        object is touched.  The arguments are checked as every backend's
        ``cleanup`` checks them.

        .. versionadded:: 0.1
        """
        check_cleanup_arguments(prefix, older_than, dry_run)
        return []

    def _get(self, path: str) -> bytes:
        validate_key(path)
        with self._lock:
            try:
                return self._objects[path]
            except KeyError:
                raise FileNotFoundError(f"no object at {path!r}") from None

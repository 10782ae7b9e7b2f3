"""The encryption wrapper: every object stored as an age file.

    >>> import io
    >>> import pyrage
    >>> from django_snapshots.storage import MemoryBackend
    >>> from django_snapshots.storage import Encrypt
    >>> key = pyrage.x25519.Identity.generate()
    >>> inner = MemoryBackend()
    >>> storage = Encrypt(inner, recipients=[str(key.to_public())], identities=[str(key)])
    >>> storage
    Encrypt(MemoryBackend(), recipients=1, identities=1)
    >>> storage.write("db/latest.dump", io.BytesIO(b"dump"))
    >>> inner.read("db/latest.dump").read(22)
    b'age-encryption.org/v1\\n'
    >>> storage.read("db/latest.dump").read()
    b'dump'

Objects are binary files of the `age format <https://age-encryption.org/v1>`_,
stored under their own key, so ``age -d -i key.txt`` (or ``rage``) decrypts a
downloaded object without Python.  What the wrapper guarantees:

- **Streaming both ways.**  Data is encrypted and decrypted by
  :mod:`pyrage` in a worker thread, handed over through a bounded queue:
  memory stays bounded whatever the size of the object, and a reader that is
  closed early stops the worker and releases the stored object at once.
- **Nothing unauthenticated is handed out.**  age splits the data into
  chunks of 64 KiB, each authenticated; plaintext is handed out chunk by
  chunk as it is authenticated.  A truncated, corrupted or reordered
  object raises :class:`~django_snapshots.SnapshotIntegrityError` naming the
  key before the stream reports its end, never a short read.  An object no
  identity of the stack can open, that is not an age file, or whose header
  runs on past 192 KiB (pyrage would take minutes to parse a planted one),
  raises :class:`~django_snapshots.exceptions.SnapshotEncryptionError` (an
  integrity error too, so :class:`~django_snapshots.storage.Retry` never
  retries it).
- **Confidential, not signed.**  age authenticates each object against its
  own file key, not against who wrote it or the key it is stored under.
  Anyone who can write to the store and knows a recipient (public by
  design: every write-only server holds one) can store an object that
  decrypts without error, and an object copied to another key decrypts
  there too; ``Checksum`` sidecars in the same store can be rewritten by the
  same hands.  Encryption keeps backups secret and detects damage; proving
  who wrote a backup needs write access to the store kept as narrow as the
  restore key, or a signature made outside this library.
- **Errors of the storage and of the caller stay theirs.**  A failure of
  the caller's content or of the storage below is raised as the original
  exception, not as pyrage's, so ``Retry`` above still recognises a
  dropped connection.
- **Keys stay secret.**  ``repr`` shows how many recipients and identities
  the stack holds, never an identity; no message or log entry quotes one.
- **Write-only and read-only stacks.**  A stack with recipients only
  writes, lists, deletes, moves and syncs, and refuses to read with a
  :class:`~django_snapshots.exceptions.SnapshotEncryptionError` before any I/O; a stack
  with identities only reads and refuses to write.  ``atomic_move`` and
  ``sync`` move the ciphertext as it is.

Keys and sizes are not secret: an object keeps its key, and its size is the
plaintext's plus about 200 bytes of header and 16 bytes per 64 KiB.  There is
no passphrase mode; a file written by ``age -p`` is refused with a
:class:`~django_snapshots.exceptions.SnapshotEncryptionError`.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast, overload

from django_snapshots.exceptions import SnapshotEncryptionError, SnapshotIntegrityError
from django_snapshots.storage.keys import validate_key
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import (
    ChunkReader,
    ReadableStream,
    buffered,
    check_binary_content,
)
from django_snapshots.storage.wrappers.base import StorageWrapper, validate_key_through

__all__ = ["AdvancedEncrypt", "Encrypt"]

# Output of pyrage is handed to the consumer in batches of at least this many
# bytes: pyrage writes plaintext 8 KiB at a time, and each hand-over costs a
# thread switch.
_BATCH = 256 * 1024
# Batches handed over and not yet consumed; bounds the memory in flight.
_QUEUE_DEPTH = 4
# Bytes kept from the start of a stored object, to tell why its header failed.
_HEAD = 4096
# Input a decryption may consume before it produces any plaintext: the header
# (about 100 bytes per recipient stanza; 64 KiB holds hundreds) and the first
# 64 KiB chunk, with room for pyrage's read-ahead and for ASCII armor.
# pyrage parses a header in time that grows with the square of its size (a
# planted 1 MiB header takes seconds, tens of MiB take hours), so an object
# whose header goes on past this is refused rather than parsed.
_MAX_SILENT_INPUT = 192 * 1024
_MAGIC = b"age-encryption.org/v1\n"
_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
_SSH_PRIVATE_KEY = "-----BEGIN "


class Encrypt(StorageWrapper):
    """Store every object of *storage* encrypted in the age format.

    *recipients* are the public keys objects are encrypted for: age X25519
    recipients (``age1...``), SSH public keys (``ssh-ed25519 ...``,
    ``ssh-rsa ...``), or :class:`pathlib.Path` objects of recipients files as
    ``age -R`` reads them (one per line, ``#`` comments and blank lines
    ignored).  *identities* are the secret keys objects are decrypted with:
    age secret keys (``AGE-SECRET-KEY-1...``), unencrypted SSH private keys,
    or paths of identity files as ``age -i`` reads them.  pyrage's own
    recipient and identity objects are accepted too.  Files are read when the
    wrapper is built; a malformed entry raises :class:`ValueError` naming its
    position (never quoting a secret).  At least one recipient or one
    identity is needed; without recipients the stack cannot write, without
    identities it cannot read.

    ``Encrypt(storage)`` keeps the tier of *storage*.  Needs ``pyrage``
    (``pip install 'django-snapshots[encrypt]'``).

    .. versionadded:: 0.1
    """

    # A verification reads the ciphertext that Checksum below digested: it
    # needs no identity and decrypts nothing.
    changes_content = True

    _self_recipients: tuple[Any, ...]
    _self_identities: tuple[Any, ...]

    if TYPE_CHECKING:
        # A type checker sees the tier through these overloads; at run time
        # StorageWrapper.__new__ picks the tier from the storage itself.
        @overload
        def __new__(
            cls,
            storage: AdvancedSnapshotStorage,
            /,
            *,
            recipients: Iterable[str | os.PathLike[str] | object] = ...,
            identities: Iterable[str | os.PathLike[str] | object] = ...,
        ) -> AdvancedEncrypt: ...
        @overload
        def __new__(
            cls,
            storage: SnapshotStorage,
            /,
            *,
            recipients: Iterable[str | os.PathLike[str] | object] = ...,
            identities: Iterable[str | os.PathLike[str] | object] = ...,
        ) -> Encrypt: ...
        def __new__(cls, storage: SnapshotStorage, /, **options: Any) -> Any: ...

    else:

        def __init__(self, storage, /, *, recipients=(), identities=()):
            age = _pyrage()
            parsed_recipients = _recipients(age, recipients)
            parsed_identities = _identities(age, identities)
            if not parsed_recipients and not parsed_identities:
                raise ValueError(
                    "Encrypt() needs recipients (to write) or identities (to read), or both"
                )
            super().__init__(storage)
            self._self_recipients = parsed_recipients
            self._self_identities = parsed_identities

    # The five operations of the basic tier.

    def read(self, path: str) -> IO[bytes]:
        """Open *path* and decrypt it as it is read."""
        self._self_can_read(path)
        stream = self.__wrapped__.read(path)
        chunks = self._self_decrypting(path, stream.read, stream.close)
        return buffered(ChunkReader(chunks))

    def write(self, path: str, content: IO[bytes]) -> None:
        """Encrypt *content* for the recipients and store it at *path*."""
        self._self_can_write(path)
        check_binary_content(content)
        pump = self._self_encrypting(path, _ContentSource(content).read)
        with pump:
            self.__wrapped__.write(path, cast(IO[bytes], _PumpReader(pump)))

    def list(self, prefix: str) -> builtins.list[str]:
        """Return the keys under *prefix*."""
        return self.__wrapped__.list(prefix)

    def delete(self, path: str) -> None:
        """Delete *path*."""
        self.__wrapped__.delete(path)

    def exists(self, path: str) -> bool:
        """Tell whether *path* is stored."""
        return self.__wrapped__.exists(path)

    def _repr_options(self) -> builtins.list[str]:
        # Counts only: an identity's str() is the secret key itself.
        return [
            f"recipients={len(self._self_recipients)}",
            f"identities={len(self._self_identities)}",
        ]

    def _self_can_read(self, path: str) -> None:
        validate_key(path)
        if not self._self_identities:
            raise SnapshotEncryptionError(
                f"cannot read {path!r}: this Encrypt stack holds no identity, only "
                "recipients, so it can write but not decrypt; give it identities= to read"
            )

    def _self_can_write(self, path: str) -> None:
        validate_key_through(self.__wrapped__, path)
        if not self._self_recipients:
            raise SnapshotEncryptionError(
                f"cannot write {path!r}: this Encrypt stack holds no recipient, only "
                "identities, so it can read but not encrypt; give it recipients= to write"
            )

    def _self_encrypting(self, path: str, read: Callable[[int], bytes]) -> _Pump:
        age = _pyrage()
        recipients = list(self._self_recipients)

        def encrypt(reader: object, writer: object) -> None:
            age.encrypt_io(reader, writer, recipients)

        def failure(exc: BaseException, head: bytes) -> BaseException:
            return SnapshotEncryptionError(f"could not encrypt {path!r}: {exc}")

        return _Pump(encrypt, read, _nothing, failure, "encrypt")

    def _self_decrypting(
        self, path: str, read: Callable[[int], bytes], close: Callable[[], object]
    ) -> Iterator[bytes]:
        """The plaintext of the age file that *read* returns, as chunks;
        header failures are raised now, and *close* releases the source."""
        age = _pyrage()
        identities = list(self._self_identities)

        def decrypt(reader: object, writer: object) -> None:
            age.decrypt_io(reader, writer, identities)

        def failure(exc: BaseException, head: bytes) -> BaseException:
            return _decryption_failure(age, path, exc, head, len(identities))

        pump = _Pump(decrypt, read, close, failure, "decrypt", max_silent_input=_MAX_SILENT_INPUT)
        chunks = _Chunks(pump)
        chunks.prime()
        return chunks


class AdvancedEncrypt(Encrypt, tier="advanced"):
    """The advanced tier of :class:`Encrypt`, returned by ``Encrypt(advanced_storage)``.

    .. versionadded:: 0.1
    """

    __wrapped__: AdvancedSnapshotStorage

    def stream_read(self, path: str) -> Iterator[bytes]:
        """Yield the decrypted chunks of *path*."""
        self._self_can_read(path)
        source = _ChunkSource(self.__wrapped__.stream_read(path), what="stream_read()")
        return self._self_decrypting(path, source.read, source.close)

    def stream_write(self, path: str, chunks: Iterator[bytes]) -> None:
        """Encrypt *chunks* for the recipients and store them at *path*."""
        self._self_can_write(path)
        pump = self._self_encrypting(path, _ChunkSource(chunks, what="stream_write()").read)
        with pump:
            self.__wrapped__.stream_write(path, _Chunks(pump))

    def atomic_move(self, src: str, dst: str) -> None:
        """Move *src* to *dst*, ciphertext as it is."""
        self.__wrapped__.atomic_move(src, dst)

    def recursive_list(self, prefix: str) -> builtins.list[str]:
        """Return the keys under *prefix*."""
        return self.__wrapped__.recursive_list(prefix)

    def sync(self, src_prefix: str, dst_prefix: str) -> None:
        """Mirror *src_prefix* to *dst_prefix*, ciphertext as it is."""
        self.__wrapped__.sync(src_prefix, dst_prefix)


# The worker: pyrage pushes, the storage and the caller pull.


class _Cancelled(Exception):
    """Raised in the worker, through pyrage, once the consumer has gone."""


class _HeaderTooLarge(Exception):
    """Raised in the worker, through pyrage, when an age header goes on past
    :data:`_MAX_SILENT_INPUT`."""


_END = object()


class _Pump:
    """One pyrage call (``encrypt_io`` or ``decrypt_io``, which run to
    completion) in a worker thread, its output pulled batch by batch through
    a bounded queue.

    *read* supplies pyrage's input in the worker; an exception it raises is
    recorded and raised to the consumer as it is, whatever pyrage made of
    it.  *failure* turns any other error of pyrage into the one the consumer
    sees.  The worker starts on the first pull; :meth:`close` stops it
    (after at most one more read of the input) and calls *close_source*.
    Once a pull raised, every later pull raises the same exception.
    """

    def __init__(
        self,
        call: Callable[[object, object], None],
        read: Callable[[int], bytes],
        close_source: Callable[[], object],
        failure: Callable[[BaseException, bytes], BaseException],
        name: str,
        *,
        max_silent_input: int | None = None,
    ) -> None:
        self._call = call
        self._max_silent_input = max_silent_input
        self._consumed = 0
        self._produced = False
        self._read_source = read
        self._close_source = close_source
        self._failure_of = failure
        self._name = f"django-snapshots-{name}"
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        self._cancelled = False
        self._finished = False
        self._closed = False
        self._source_error: BaseException | None = None
        self._failure: BaseException | None = None
        self._head = b""
        self._batch: list[bytes] = []
        self._batched = 0

    def __enter__(self) -> _Pump:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        error = exc_info[1]
        if error is not None and self._source_error not in (None, error):
            # The storage below may have reported the caller's failing
            # content as an error of its own.
            raise self._source_error

    def pull(self) -> bytes | None:
        """Return the next batch of output, or None at its end."""
        if self._failure is not None:
            raise self._failure
        if self._finished:
            return None
        if self._closed:
            raise ValueError("I/O operation on a closed stream")
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, bytes):
            return item
        self._finish()
        if item is _END:
            self._finished = True
            return None
        error = cast(BaseException, item)
        self._failure = self._source_error or self._failure_of(error, self._head)
        raise self._failure

    def close(self) -> None:
        """Stop the worker and release the source; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finish()

    def _finish(self) -> None:
        self._cancelled = True
        thread = self._thread
        if thread is not None:
            # The worker is either in pyrage, where its next read or write
            # raises _Cancelled, or waiting for room in the queue.
            while thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._queue.get(timeout=0.05)
            thread.join()
        close, self._close_source = self._close_source, _nothing
        close()

    # The worker's side.

    def _work(self) -> None:
        outcome: object
        try:
            self._call(self, self)
            self._flush()
            outcome = _END
        except BaseException as exc:  # handed to the consumer by pull()
            outcome = exc
        with contextlib.suppress(_Cancelled):
            self._put(outcome)

    def read(self, size: int = -1) -> bytes:
        """pyrage's input (in the worker)."""
        if self._cancelled:
            raise _Cancelled
        if (
            self._max_silent_input is not None
            and not self._produced
            and self._consumed > self._max_silent_input
        ):
            # Raised through pyrage, which wraps it: the consumer gets this.
            self._source_error = self._failure_of(_HeaderTooLarge(), self._head)
            raise _HeaderTooLarge
        try:
            data = self._read_source(size)
        except BaseException as exc:
            self._source_error = exc
            raise
        self._consumed += len(data)
        if len(self._head) < _HEAD:
            self._head += data[: _HEAD - len(self._head)]
        return data

    def write(self, data: bytes) -> int:
        """pyrage's output (in the worker)."""
        self._produced = True
        self._batch.append(data)
        self._batched += len(data)
        if self._batched >= _BATCH:
            self._flush()
        return len(data)

    def flush(self) -> None:
        """pyrage flushes its output at the end; batches go on when full."""

    def _flush(self) -> None:
        if self._batch:
            batch = self._batch[0] if len(self._batch) == 1 else b"".join(self._batch)
            self._batch, self._batched = [], 0
            self._put(bytes(batch))

    def _put(self, item: object) -> None:
        if self._cancelled:
            raise _Cancelled
        self._queue.put(item)


class _Chunks(Iterator[bytes]):
    """A pump's output as an iterator of chunks; ``close`` (or dropping it)
    stops the worker."""

    def __init__(self, pump: _Pump) -> None:
        self._pump = pump
        self._first: bytes | None = None

    def prime(self) -> None:
        """Take the first chunk now, so that an object that cannot be
        decrypted fails when it is opened."""
        try:
            self._first = self._pump.pull()
        except BaseException:
            self._pump.close()
            raise

    def __next__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        chunk = self._pump.pull()
        if chunk is None:
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._first = None
        self._pump.close()

    def __del__(self) -> None:
        self._pump.close()


class _PumpReader(ReadableStream):
    """A pump's output as the content a storage's ``write`` reads."""

    def __init__(self, pump: _Pump) -> None:
        super().__init__()
        self._pump = pump
        self._pending = b""
        self._offset = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._pending[self._offset :]]
            self._pending, self._offset = b"", 0
            while (batch := self._pump.pull()) is not None:
                parts.append(batch)
            return b"".join(parts)
        if self._offset >= len(self._pending):
            batch = self._pump.pull()
            if batch is None:
                return b""
            self._pending, self._offset = batch, 0
        if self._offset == 0 and len(self._pending) <= size:
            data = self._pending  # the common case: a whole batch, not copied
        else:
            data = self._pending[self._offset : self._offset + size]
        self._offset += len(data)
        return data


# pyrage's input.


class _ContentSource:
    """The caller's content, read by pyrage in the worker."""

    def __init__(self, content: IO[bytes]) -> None:
        self._content = content

    def read(self, size: int) -> bytes:
        data = self._content.read(size)
        while data is None:  # a non-blocking stream with nothing ready yet
            data = self._content.read(size)
        if not isinstance(data, bytes):
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(
                    f"content.read() returned {type(data).__name__}, not bytes: "
                    "pass a binary file object"
                )
            data = bytes(data)
        return data


class _ChunkSource:
    """An iterator of chunks, read by pyrage in the worker."""

    def __init__(self, chunks: Iterable[bytes], *, what: str) -> None:
        self._chunks = iter(chunks)
        self._what = what
        self._chunk = b""
        self._offset = 0

    def read(self, size: int) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        while self._offset >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            if not isinstance(chunk, bytes):
                if not isinstance(chunk, (bytearray, memoryview)):
                    raise TypeError(
                        f"{self._what} chunks must be bytes, not {type(chunk).__name__}"
                    )
                chunk = bytes(chunk)
            self._chunk, self._offset = chunk, 0
        if self._offset == 0 and len(self._chunk) <= size:
            data = self._chunk
        else:
            data = self._chunk[self._offset : self._offset + size]
        self._offset += len(data)
        return data

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def _decryption_failure(
    age: Any, path: str, exc: BaseException, head: bytes, identities: int
) -> BaseException:
    """The error to raise for *exc*, raised by pyrage while decrypting *path*,
    whose stored object starts with *head*."""
    if isinstance(exc, _HeaderTooLarge):
        return SnapshotEncryptionError(
            f"{path!r} has an age header longer than {_MAX_SILENT_INPUT // 1024} KiB, which "
            "no file written for a few hundred recipients has: it is corrupt or was planted, "
            "and is not parsed"
        )
    if isinstance(exc, age.DecryptError):
        if not head:
            return SnapshotEncryptionError(f"{path!r} is empty, not an age file")
        if not (head.startswith(_MAGIC) or head.lstrip().startswith(_ARMOR)):
            return SnapshotEncryptionError(
                f"{path!r} is not an age file (it does not start with "
                "'age-encryption.org/v1'): it was stored without Encrypt, or is corrupt"
            )
        if head[len(_MAGIC) :].startswith(b"-> scrypt "):
            return SnapshotEncryptionError(
                f"{path!r} is encrypted with a passphrase (age -p), which Encrypt does "
                "not decrypt: decrypt it with age -d, and store it again through Encrypt"
            )
        if "no matching keys" in str(exc).lower():
            return SnapshotEncryptionError(
                f"{path!r} was encrypted for other recipients: none of the {identities} "
                "identities of this stack can decrypt it"
            )
        return SnapshotEncryptionError(f"{path!r} has a corrupt age header ({exc})")
    if isinstance(exc, OSError):
        # pyrage reports a payload that fails authentication (a flipped
        # byte, a missing or reordered chunk) as a bare OSError.
        return SnapshotIntegrityError(
            f"{path!r} is corrupt or truncated: a chunk of its age payload failed "
            f"authentication ({exc}); nothing past the last authentic chunk was handed out"
        )
    return exc


# Keys.


def _pyrage() -> Any:
    """The pyrage module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("pyrage")
    except ImportError:
        raise ImportError("Encrypt needs pyrage: pip install 'django-snapshots[encrypt]'") from None


def _entries(entries: object, name: str) -> builtins.list[object]:
    if isinstance(entries, (str, bytes, os.PathLike)):
        raise TypeError(
            f"Encrypt {name} must be a list of keys or paths, not one "
            f"{type(entries).__name__}: write {name}=[...]"
        )
    try:
        return builtins.list(cast(Iterable[object], entries))
    except TypeError:
        raise TypeError(
            f"Encrypt {name} must be a list of keys or paths, not {type(entries).__name__}"
        ) from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of a recipients or identity file that hold a key, numbered."""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _read_text(path: os.PathLike[str], where: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"{where} ({os.fspath(path)}) is not a text file of keys (it is not UTF-8; an "
            "encrypted identity file must be decrypted first)"
        ) from None


def _recipients(age: Any, entries: object) -> tuple[Any, ...]:
    parsed: builtins.list[Any] = []
    for position, entry in enumerate(_entries(entries, "recipients")):
        where = f"recipients[{position}]"
        if isinstance(entry, (age.x25519.Recipient, age.ssh.Recipient)):
            parsed.append(entry)
        elif isinstance(entry, os.PathLike):
            text = _read_text(entry, where)
            found = [
                _recipient(age, line, f"{where} ({os.fspath(entry)}), line {number}")
                for number, line in _lines(text)
            ]
            if not found:
                raise ValueError(f"{where} ({os.fspath(entry)}) holds no recipient")
            parsed.extend(found)
        elif isinstance(entry, str):
            found = [
                _recipient(age, line, where if number == 1 else f"{where}, line {number}")
                for number, line in _lines(entry)
            ]
            if not found:
                raise ValueError(f"{where} is empty, not a recipient")
            parsed.extend(found)
        elif isinstance(entry, (age.x25519.Identity, age.ssh.Identity)):
            raise TypeError(
                f"{where} is an identity, a secret key: pass it in identities, and its "
                "public key (identity.to_public()) in recipients"
            )
        else:
            raise TypeError(
                f"{where} must be a str (age1..., ssh-ed25519 ..., ssh-rsa ...) or a "
                f"pathlib.Path of a recipients file, not {type(entry).__name__}"
            )
    return tuple(parsed)


def _recipient(age: Any, line: str, where: str) -> Any:
    if line.upper().startswith(("AGE-SECRET-KEY-", "AGE-PLUGIN-")) or line.startswith(
        _SSH_PRIVATE_KEY
    ):
        raise ValueError(
            f"{where} is a secret key, not a recipient: pass it in identities, and its "
            "public key (age1..., ssh-...) in recipients"
        )
    if line.startswith("age1"):
        parse, kind = age.x25519.Recipient.from_str, "an age X25519 recipient"
    elif line.startswith(("ssh-ed25519 ", "ssh-rsa ")):
        parse, kind = age.ssh.Recipient.from_str, "an SSH public key"
    else:
        raise ValueError(
            f"{where} is not an age recipient (age1...) or an SSH public key "
            "(ssh-ed25519 ..., ssh-rsa ...); pass a pathlib.Path to read a recipients file"
        )
    try:
        return parse(line)
    except age.RecipientError as exc:
        raise ValueError(
            f"{where} is not a valid {kind.partition(' ')[2]} ({exc}); plugin recipients "
            "are not supported"
        ) from None


def _identities(age: Any, entries: object) -> tuple[Any, ...]:
    parsed: builtins.list[Any] = []
    for position, entry in enumerate(_entries(entries, "identities")):
        where = f"identities[{position}]"
        if isinstance(entry, (age.x25519.Identity, age.ssh.Identity)):
            parsed.append(entry)
        elif isinstance(entry, os.PathLike):
            parsed.extend(
                _identity_text(age, _read_text(entry, where), f"{where} ({os.fspath(entry)})")
            )
        elif isinstance(entry, str):
            parsed.extend(_identity_text(age, entry, where))
        elif isinstance(entry, (age.x25519.Recipient, age.ssh.Recipient)):
            raise TypeError(f"{where} is a recipient, a public key: pass it in recipients")
        else:
            raise TypeError(
                f"{where} must be a str (AGE-SECRET-KEY-1..., an SSH private key) or a "
                f"pathlib.Path of an identity file, not {type(entry).__name__}"
            )
    return tuple(parsed)


def _identity_text(age: Any, text: str, where: str) -> builtins.list[Any]:
    """The identities in *text*, an identity file's content; never quotes it."""
    stripped = text.lstrip()
    if stripped.startswith(_SSH_PRIVATE_KEY):
        try:
            return [age.ssh.Identity.from_buffer(stripped.encode())]
        except age.IdentityError:
            raise ValueError(
                f"{where} is not an SSH private key that age can use: it must be unencrypted "
                "(passphrase-protected keys are not supported), ed25519 or RSA, in OpenSSH "
                "format ('BEGIN OPENSSH PRIVATE KEY') or PEM ('BEGIN RSA PRIVATE KEY')"
            ) from None
    if stripped.startswith((_MAGIC.decode(), _ARMOR.decode())):
        raise ValueError(
            f"{where} is an encrypted identity file, which Encrypt does not decrypt: "
            "decrypt it first (age -d)"
        )
    found = []
    for number, line in _lines(text):
        at = f"{where}, line {number}"
        if line.upper().startswith("AGE-PLUGIN-"):
            raise ValueError(f"{at} is a plugin identity; plugins are not supported")
        if not line.upper().startswith("AGE-SECRET-KEY-1"):
            hint = (
                "; pass a pathlib.Path to read an identity file"
                if isinstance(text, str) and "\n" not in text.strip()
                else ""
            )
            raise ValueError(
                f"{at} is not an age secret key (AGE-SECRET-KEY-1...) or an SSH private key{hint}"
            )
        try:
            found.append(age.x25519.Identity.from_str(line.upper()))
        except age.IdentityError:
            raise ValueError(f"{at} is not a valid age secret key (bad encoding)") from None
    if not found:
        raise ValueError(f"{where} holds no identity")
    return found


def _nothing() -> None:
    pass

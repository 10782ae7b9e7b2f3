"""Looking into a storage stack: its layers, its Checksum layer, and a round
trip that proves it works.  Shared by the system checks and the commands."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any, cast

from django_snapshots.exceptions import SnapshotError, SnapshotStoragePathError
from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import iter_chunks
from django_snapshots.storage.wrappers.base import StorageWrapper, validate_key_through

#: Directory-like prefix under which the round trip writes its probe object.
PROBE_PREFIX = ".snapshots-probe/"

_PROBE_SIZE = 64 * 1024
_WRITE_ONLY = "the Encrypt layer holds no identity to decrypt with (a write-only stack)"


@dataclass(frozen=True)
class ProbeStep:
    """One step of :func:`probe_storage`: its *name*, how long it took, and
    what went wrong (*error*, ``None`` on success) or a *detail* worth telling
    (why, when the step was *skipped*).  *error_type* is the class name of
    the exception that failed the step (``None`` on success): what a report
    shows where the message, which may quote a URL, must not appear."""

    name: str
    seconds: float
    error: str | None = None
    detail: str = ""
    skipped: bool = False
    error_type: str | None = None


class _Skipped(Exception):
    """Raised by a step of the probe that the stack cannot carry out by
    design (not a failure); the message says why."""


def probe_storage(storage: SnapshotStorage) -> Generator[ProbeStep, None, None]:
    """Write a small random object under :data:`PROBE_PREFIX`, read it back,
    verify it through the stack's Checksum layer (if any), find it in a
    listing and delete it; yield each step as it ends, and stop after the
    first failure.  A step the stack cannot carry out by design is skipped,
    not failed: verifying without a Checksum layer, and reading back (or
    verifying through) an ``Encrypt`` layer that holds no identity, on a
    server that only writes backups.

    The probe object is removed whatever happens, even when the caller stops
    iterating early.  When it cannot be, the failed step's *error* names the
    key left behind, so that the operator can remove it.
    """
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    payload = os.urandom(_PROBE_SIZE)
    checksum = find_checksum_layer(storage)
    write_only = find_write_only_layer(storage)

    def write() -> str:
        storage.write(key, io.BytesIO(payload))
        return f"{_PROBE_SIZE} bytes"

    def read_back() -> str:
        if write_only is not None:
            raise _Skipped(_WRITE_ONLY)
        digest = hashlib.sha256()
        with storage.read(key) as stream:
            for chunk in iter_chunks(stream):
                digest.update(chunk)
        if digest.digest() != hashlib.sha256(payload).digest():
            raise ValueError("the bytes read back differ from the bytes written")
        return "same bytes"

    def verify() -> str:
        if checksum is None:
            raise _Skipped("no Checksum layer")
        if write_only is not None and find_write_only_layer(checksum.layer) is not None:
            # The Checksum layer digests plaintext, which it reads through
            # the Encrypt layer below it.
            raise _Skipped(f"the Checksum layer sits above it, and {_WRITE_ONLY}")
        return f"digest {checksum.verify(key)[:16]}..."

    def find_in_listing() -> str:
        if key not in storage.list(PROBE_PREFIX):
            raise ValueError(f"{key!r} is missing from the listing")
        return ""

    def delete() -> str:
        storage.delete(key)
        if storage.exists(key):
            raise ValueError(f"{key!r} still exists after delete")
        return ""

    steps = [
        ("write", write),
        ("read", read_back),
        ("verify", verify),
        ("list", find_in_listing),
        ("delete", delete),
    ]
    deleted = False
    try:
        for name, step in steps:
            start = perf_counter()
            try:
                detail = step()
            except _Skipped as skipped:
                yield ProbeStep(name, perf_counter() - start, detail=str(skipped), skipped=True)
                continue
            except Exception as exc:
                seconds = perf_counter() - start
                error = f"{type(exc).__name__}: {exc}"
                deleted = True
                if not _remove_quietly(storage, key):
                    error += f"; the probe object {key!r} was left behind and must be removed"
                yield ProbeStep(name, seconds, error, error_type=type(exc).__name__)
                return
            deleted = name == "delete"
            yield ProbeStep(name, perf_counter() - start, detail=detail)
    finally:
        if not deleted:
            _remove_quietly(storage, key)


def describe_layers(storage: SnapshotStorage) -> list[tuple[str, str]]:
    """Return each layer of *storage*, outermost first, as ``(description,
    tier)``, where tier is ``"advanced"`` or ``"basic"``."""
    described = []
    for layer in layers(storage):
        if isinstance(layer, StorageWrapper):
            name = type(layer)._basic_tier.__name__
            options = ", ".join(layer._repr_options())
            text = f"{name}({options})" if options else name
        else:
            text = repr(layer)
        tier = "advanced" if isinstance(layer, AdvancedSnapshotStorage) else "basic"
        described.append((text, tier))
    return described


@dataclass(frozen=True)
class ChecksumLayer:
    """The outermost Checksum layer of a stack, *layer*, and the layers
    *above* it (outermost first), whose key mappings (``Prefix``) apply to
    every key on the way down to it."""

    layer: Any
    above: tuple[SnapshotStorage, ...] = ()

    def verify(self, key: str) -> str:
        """Verify the stack's *key* through every layer above the Checksum
        layer (audited, retried and traced like any read, never decoded)
        and return its hex digest."""
        # From the outermost layer that a verification can read through down
        # to the Checksum layer, its key mapped by the layers above it.
        for position, top in enumerate(self.above):
            if _verify_reads_down_from(self.above[position:]):
                return cast(StorageWrapper, top).verify(key)
            if isinstance(top, StorageWrapper):
                key = top._self_storage_key(key)
        digest: str = self.layer.verify(key)
        return digest

    def inner_key(self, key: str) -> str:
        """Return the key the Checksum layer sees for the stack's *key*."""
        for layer in self.above:
            if isinstance(layer, StorageWrapper):
                key = layer._self_storage_key(key)
        return key

    def inner_prefix(self, prefix: str) -> str:
        """Return the list prefix the Checksum layer sees for the stack's *prefix*."""
        for layer in self.above:
            if isinstance(layer, StorageWrapper):
                prefix = layer._self_storage_prefix(prefix)
        return prefix

    def outer_key(self, key: str) -> str:
        """Return the stack's key for a key the Checksum layer listed."""
        return key[len(self.inner_prefix("")) :]

    def sidecar(self, key: str) -> str:
        """Return the stack's name of the checksum sidecar of the stack's *key*."""
        suffix: str = self.layer.sidecar_suffix
        return key + suffix

    def keys_to_verify(self, prefix: str) -> tuple[list[str], frozenset[str]]:
        """Return the stack's keys under *prefix* that ``verify`` must check,
        sorted, and those of them whose object is missing though its checksum
        sidecar remains (*orphans*).

        The Checksum layer's listing hides sidecars, so it misses an object
        that was deleted, or replaced by a directory or a link, behind the
        layer's back: the sidecars are listed through the layer below.
        """
        inner = self.inner_prefix(prefix)
        objects = self.layer.list(inner)
        # Listed after the objects: an object stored in between looks like
        # an orphan here, and then passes its verification.
        stored = self.layer.__wrapped__.list(inner)
        suffix = self.layer.sidecar_suffix
        present = set(objects)
        orphans = {
            key[: -len(suffix)]
            for key in stored
            if key.endswith(suffix) and _holds_object(self.layer, key[: -len(suffix)], inner)
        } - present
        keys = sorted(self.outer_key(key) for key in present | orphans)
        return keys, frozenset(self.outer_key(key) for key in orphans)

    def failure(self, key: str, *, orphan: bool = False) -> str | None:
        """Verify the stack's *key* and return why it failed, or ``None``
        when it is intact.  An *orphan* (see :meth:`keys_to_verify`) that is
        still missing is reported as such."""
        try:
            self.verify(key)
        except (SnapshotError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if not orphan:
                return reason
            missing = (
                f"the object is missing; only its checksum sidecar {self.sidecar(key)!r} remains"
            )
            if isinstance(exc, FileNotFoundError):
                return (
                    f"{missing} (if the object was deleted on purpose, "
                    f"`snapshots rm --force {key}` removes the sidecar)"
                )
            return f"{missing} ({reason})"
        return None


def find_checksum_layer(storage: SnapshotStorage) -> ChecksumLayer | None:
    """Return the outermost Checksum layer of *storage*, found by following
    ``__wrapped__``, or ``None`` when the stack has none."""
    from django_snapshots.storage import Checksum

    above: list[SnapshotStorage] = []
    for layer in layers(storage):
        if isinstance(layer, Checksum):
            return ChecksumLayer(layer, tuple(above))
        above.append(layer)
    return None


def find_write_only_layer(storage: SnapshotStorage) -> Any:
    """Return the outermost ``Encrypt`` layer of *storage* that holds
    recipients but no identity (it writes but cannot decrypt), or ``None``."""
    from django_snapshots.storage.wrappers.encrypt import Encrypt

    for layer in layers(storage):
        if isinstance(layer, Encrypt) and not layer._self_identities:
            return layer
    return None


def layers(storage: SnapshotStorage) -> Iterator[SnapshotStorage]:
    """Yield *storage* and each storage it wraps, outermost first."""
    seen: set[int] = set()
    layer: object = storage
    while isinstance(layer, SnapshotStorage) and id(layer) not in seen:
        seen.add(id(layer))
        yield layer
        layer = getattr(layer, "__wrapped__", None)


def short_repr(storage: object) -> str:
    """Return ``repr(storage)``, cut to 200 characters for one-line messages."""
    text = repr(storage)
    return text if len(text) <= 200 else text[:197] + "..."


def _verify_reads_down_from(above: tuple[SnapshotStorage, ...]) -> bool:
    """Tell whether a verification can read through the layers *above* the
    Checksum layer: wrappers all, none of them an ``Encrypt`` layer that
    cannot read and whose reads a verification does not pass through raw."""
    from django_snapshots.storage.wrappers.encrypt import Encrypt

    return all(
        isinstance(layer, StorageWrapper)
        and not (
            isinstance(layer, Encrypt)
            and not layer._self_identities
            and not type(layer).changes_content
        )
        for layer in above
    )


def _holds_object(checksum: Any, key: str, prefix: str) -> bool:
    """Tell whether *checksum* can store an object at *key*, under *prefix*:
    a sidecar listed under *prefix* may belong to an object outside it
    (``a.dump.sha256`` for the prefix ``a.dump.s``), and a stray file named
    like a sidecar of a sidecar belongs to no object."""
    if not key.startswith(prefix):
        return False
    try:
        validate_key_through(checksum, key)
    except SnapshotStoragePathError:
        return False
    return True


def is_probe_key(key: str) -> bool:
    """Tell whether *key* is (under) :data:`PROBE_PREFIX`, where probe objects
    live: commands leave such keys out unless asked for that prefix."""
    return key.startswith(PROBE_PREFIX)


def _remove_quietly(storage: SnapshotStorage, key: str) -> bool:
    """Delete *key* and tell whether it is gone; the failure of the probe
    itself is what gets reported, not why the cleanup failed."""
    with contextlib.suppress(Exception):
        storage.delete(key)
        return not storage.exists(key)
    return False

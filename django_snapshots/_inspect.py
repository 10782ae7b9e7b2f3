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
from typing import Any

from django_snapshots.storage.protocols import AdvancedSnapshotStorage, SnapshotStorage
from django_snapshots.storage.streams import iter_chunks
from django_snapshots.storage.wrappers.base import StorageWrapper

#: Directory-like prefix under which the round trip writes its probe object.
PROBE_PREFIX = ".snapshots-probe/"

_PROBE_SIZE = 64 * 1024


@dataclass(frozen=True)
class ProbeStep:
    """One step of :func:`probe_storage`: its *name*, how long it took, and
    what went wrong (*error*, ``None`` on success) or a *detail* worth telling."""

    name: str
    seconds: float
    error: str | None = None
    detail: str = ""


def probe_storage(storage: SnapshotStorage) -> Generator[ProbeStep, None, None]:
    """Write a small random object under :data:`PROBE_PREFIX`, read it back,
    verify it through the stack's Checksum layer (if any), find it in a
    listing and delete it; yield each step as it ends, and stop after the
    first failure.

    The probe object is removed whatever happens, even when the caller stops
    iterating early.
    """
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    payload = os.urandom(_PROBE_SIZE)
    checksum = find_checksum_layer(storage)

    def write() -> str:
        storage.write(key, io.BytesIO(payload))
        return f"{_PROBE_SIZE} bytes"

    def read_back() -> str:
        digest = hashlib.sha256()
        with storage.read(key) as stream:
            for chunk in iter_chunks(stream):
                digest.update(chunk)
        if digest.digest() != hashlib.sha256(payload).digest():
            raise ValueError("the bytes read back differ from the bytes written")
        return "same bytes"

    def verify() -> str:
        if checksum is None:
            return "skipped: no Checksum layer"
        return f"digest {checksum.layer.verify(checksum.inner_key(key))[:16]}..."

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
            except Exception as exc:
                seconds = perf_counter() - start
                _remove_quietly(storage, key)
                deleted = True
                yield ProbeStep(name, seconds, f"{type(exc).__name__}: {exc}")
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
    """The outermost Checksum layer of a stack, and the prefix that the
    Prefix layers above it add to every key on the way down."""

    layer: Any
    prefix: str = ""

    def inner_key(self, key: str) -> str:
        """Return the key the Checksum layer sees for the stack's *key*."""
        return self.prefix + key

    def outer_key(self, key: str) -> str:
        """Return the stack's key for a key the Checksum layer listed."""
        return key[len(self.prefix) :]


def find_checksum_layer(storage: SnapshotStorage) -> ChecksumLayer | None:
    """Return the outermost Checksum layer of *storage*, found by following
    ``__wrapped__``, or ``None`` when the stack has none."""
    from django_snapshots.storage import Checksum, Prefix

    prefix = ""
    for layer in layers(storage):
        if isinstance(layer, Checksum):
            return ChecksumLayer(layer, prefix)
        if isinstance(layer, Prefix):
            # Each Prefix puts its directory in front of what the layers
            # above it produced.
            prefix = layer._self_dir + prefix
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


def _remove_quietly(storage: SnapshotStorage, key: str) -> None:
    # The failure of the probe itself is what gets reported.
    with contextlib.suppress(Exception):
        storage.delete(key)

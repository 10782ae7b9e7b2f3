"""A model-checked stack: random sequences of all ten operations through
``Retry(Checksum(Chaos(backend)))``, compared with a plain dict, for
``MemoryBackend``, ``LocalFileSystemBackend``, ``DjangoStorageBackend`` (basic
tier, over ``FileSystemStorage``) and ``RcloneBackend`` (local remote).

Chaos makes a share of the calls fail (before they start, in the middle of
a transfer, or, in half of the examples, after they took effect: a lost
acknowledgement), Retry retries them with no waits, and hypothesis drives the
stack and a model side by side.  The model knows, for every key, the set of
states it may be in: the bytes of a complete object, ``ABSENT``, or
``CORRUPT`` (data and sidecar disagree, so a read raises
:class:`SnapshotIntegrityError`).  A successful operation makes the state
certain; a failure that exhausted the retries adds the states a partly done
operation may have left, never a byte mix.  Every successful read must return
one of the model's complete objects: with no exhausted failure in between,
exactly the last successfully written bytes.

In CI (``CI=true``) the examples are derandomized, no example database is
used and failures are not shrunk, so every run is the same and a failure is
reported within the time limit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.storage import FileSystemStorage
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from django_snapshots.exceptions import SnapshotIntegrityError
from django_snapshots.storage import MemoryBackend, SnapshotStorage
from django_snapshots.storage.django_storage import DjangoStorageBackend
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.rclone import RcloneBackend
from django_snapshots.storage.wrappers.checksum import Checksum
from django_snapshots.storage.wrappers.retry import Retry
from django_snapshots.testing import Chaos

pytestmark = pytest.mark.slow

ABSENT = "ABSENT"
CORRUPT = "CORRUPT"
State = Any  # bytes | ABSENT | CORRUPT

INJECTED = (ConnectionError, TimeoutError)
KEYS = ["a", "b", "d/x", "d/y", "d/z", "e/x", "e/y", "e/z"]
PREFIXES = ["", "a", "d/", "e/", "d/x", "e", "z"]
SYNC_PAIRS = [("d/", "e/"), ("e/", "d/")]


class Blob(bytes):
    """Bytes that hypothesis reports by size and first bytes, not in full."""

    def __repr__(self) -> str:
        return f"Blob({len(self)} bytes: {bytes(self[:8])!r}...)"


# Small objects for most steps, and a few that span several chunks (the
# backends stream in 1 MiB chunks), so that faults land inside transfers.
_LARGE = [Blob(bytes([n]) * size) for n, size in ((1, 1_500_000), (2, 2_300_000))]
contents = st.one_of(
    st.binary(max_size=64).map(Blob),
    st.binary(min_size=1, max_size=64).map(lambda b: Blob(b * 4096)),
    st.sampled_from(_LARGE),
)
keys = st.sampled_from(KEYS)

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SETTINGS = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    derandomize=CI,
    database=None if CI else settings.default.database,
    # Shrinking a long failing sequence can take minutes; CI reports the
    # sequence as found, a local run (without CI=true) shrinks it.
    phases=[Phase.explicit, Phase.reuse, Phase.generate] if CI else list(Phase),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class StackMachine(RuleBasedStateMachine):
    """Drive ``Retry(Checksum(Chaos(backend)))`` and a dict model in step."""

    #: Whether the backend replaces an object in one step; a non-atomic one
    #: (delete, then save) may leave the key absent after a failed write.
    atomic_writes = True

    def make_backend(self, directory: str) -> SnapshotStorage:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="stateful-")
        self.model: dict[str, frozenset[State]] = {key: frozenset([ABSENT]) for key in KEYS}
        self.stack: Any = None
        self.advanced = False

    @initialize(seed=st.integers(0, 2**32 - 1), ack_loss_rate=st.sampled_from([0.0, 0.15]))
    def build_stack(self, seed: int, ack_loss_rate: float) -> None:
        backend = self.make_backend(self.directory)
        chaos = Chaos(
            backend, failure_rate=0.2, ack_loss_rate=ack_loss_rate, seed=seed, errors=INJECTED
        )
        self.stack = Retry(Checksum(chaos), attempts=3, wait_initial=0, wait_max=0, wait_jitter=0)
        self.advanced = hasattr(self.stack, "stream_read")

    def teardown(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    # Helpers.

    def possible(self, key: str) -> frozenset[State]:
        return self.model[key]

    def settle(self, key: str, state: State) -> None:
        if len(self.model[key]) > 1:
            event("an uncertain key was read back")
        assert state in self.model[key], (
            f"{key!r} is {_show(state)}, but the model allows only "
            f"{sorted(map(_show, self.model[key]))}"
        )
        self.model[key] = frozenset([state])

    def failed(self, exc: BaseException) -> None:
        """An operation failed: only an injected fault surviving the retries may surface."""
        assert isinstance(exc, INJECTED), f"unexpected {type(exc).__name__}: {exc}"
        assert "injected" in str(exc)
        event("a failure outlasted the retries")

    def check_read(self, key: str, read: Any) -> None:
        try:
            data = read()
        except FileNotFoundError:
            self.settle(key, ABSENT)
        except SnapshotIntegrityError:
            self.settle(key, CORRUPT)
        except INJECTED as exc:
            self.failed(exc)
        else:
            self.settle(key, data)

    def check_listing(self, prefix: str, listed: list[str]) -> None:
        assert listed == sorted(listed)
        under = [key for key in KEYS if key.startswith(prefix)]
        assert set(listed) <= set(under), f"stray keys {set(listed) - set(under)}"
        for key in under:
            present = self.possible(key) - {ABSENT}
            if key in listed:
                assert present, f"{key!r} listed but absent in the model"
                self.model[key] = present
            else:
                self.settle(key, ABSENT)

    # The basic tier.

    @rule(key=keys, data=contents)
    def write(self, key: str, data: bytes) -> None:
        try:
            self.stack.write(key, _OneShot(data))
        except INJECTED as exc:
            self.failed(exc)
            self.write_failed(key, data)
        else:
            self.model[key] = frozenset([data])

    def write_failed(self, key: str, data: bytes) -> None:
        extra = {data, CORRUPT} | (set() if self.atomic_writes else {ABSENT})
        self.model[key] |= extra

    @rule(key=keys)
    def read(self, key: str) -> None:
        def whole() -> bytes:
            with self.stack.read(key) as file:
                return b"".join(iter(lambda: file.read(700_000), b""))

        self.check_read(key, whole)

    @rule(prefix=st.sampled_from(PREFIXES))
    def list(self, prefix: str) -> None:
        try:
            listed = self.stack.list(prefix)
        except INJECTED as exc:
            self.failed(exc)
        else:
            self.check_listing(prefix, listed)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        try:
            self.stack.delete(key)
        except INJECTED as exc:
            self.failed(exc)
            self.model[key] |= {ABSENT, CORRUPT}
        else:
            self.model[key] = frozenset([ABSENT])

    @rule(key=keys)
    def exists(self, key: str) -> None:
        try:
            found = self.stack.exists(key)
        except INJECTED as exc:
            self.failed(exc)
            return
        if found:
            present = self.possible(key) - {ABSENT}
            assert present, f"{key!r} exists but is absent in the model"
            self.model[key] = present
        else:
            self.settle(key, ABSENT)

    # The advanced tier.

    @precondition(lambda self: self.advanced)
    @rule(key=keys, data=contents, size=st.integers(1, 1 << 20))
    def stream_write(self, key: str, data: bytes, size: int) -> None:
        chunks = (data[i : i + size] for i in range(0, len(data), size))
        try:
            self.stack.stream_write(key, chunks)
        except INJECTED as exc:
            self.failed(exc)
            self.write_failed(key, data)
        else:
            self.model[key] = frozenset([data])

    @precondition(lambda self: self.advanced)
    @rule(key=keys)
    def stream_read(self, key: str) -> None:
        self.check_read(key, lambda: b"".join(self.stack.stream_read(key)))

    @precondition(lambda self: self.advanced)
    @rule(src=keys, dst=keys)
    def atomic_move(self, src: str, dst: str) -> None:
        if src == dst:
            return
        moved, before = self.model[src], self.model[dst]
        try:
            self.stack.atomic_move(src, dst)
        except FileNotFoundError:
            self.settle(src, ABSENT)  # only possible if an earlier failure left it absent
            if moved != {ABSENT}:
                self.model[dst] = before | (moved - {ABSENT}) | {CORRUPT}
        except SnapshotIntegrityError:
            assert CORRUPT in moved, f"moving {src!r} raised an integrity error"
        except INJECTED as exc:
            self.failed(exc)
            self.model[dst] = before | moved | {CORRUPT}
            self.model[src] = moved | {ABSENT, CORRUPT}
        else:
            present = moved - {ABSENT}
            assert present, f"moved {src!r}, which the model says is absent"
            self.model[dst] = present
            self.model[src] = frozenset([ABSENT])

    @precondition(lambda self: self.advanced)
    @rule(prefix=st.sampled_from(PREFIXES))
    def recursive_list(self, prefix: str) -> None:
        try:
            listed = self.stack.recursive_list(prefix)
        except INJECTED as exc:
            self.failed(exc)
        else:
            self.check_listing(prefix, listed)

    @precondition(lambda self: self.advanced)
    @rule(pair=st.sampled_from(SYNC_PAIRS))
    def sync(self, pair: tuple[str, str]) -> None:
        src_prefix, dst_prefix = pair
        mapping = {
            dst_prefix + key[len(src_prefix) :]: key for key in KEYS if key.startswith(src_prefix)
        }
        try:
            self.stack.sync(src_prefix, dst_prefix)
        except (*INJECTED, SnapshotIntegrityError) as exc:
            if isinstance(exc, SnapshotIntegrityError):
                assert any(CORRUPT in self.model[src] for src in mapping.values())
            else:
                self.failed(exc)
            for dst, src in mapping.items():
                self.model[dst] |= self.model[src] | {CORRUPT}
        else:
            for dst, src in mapping.items():
                self.model[dst] = self.model[src]

    @invariant()
    def model_states_are_well_formed(self) -> None:
        for key, states in self.model.items():
            assert states, f"{key!r} has no possible state"


def _show(state: State) -> str:
    return repr(Blob(state)) if isinstance(state, bytes) else str(state)


class _OneShot:
    """A non-seekable input, like a pipe: Retry must spool it to replay it."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._offset + size
        chunk = self._data[self._offset : end]
        self._offset += len(chunk)
        return chunk

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(1 << 20), b"")


class MemoryStack(StackMachine):
    def make_backend(self, directory: str) -> SnapshotStorage:
        return MemoryBackend()


class LocalStack(StackMachine):
    def make_backend(self, directory: str) -> SnapshotStorage:
        return LocalFileSystemBackend(directory)


class DjangoStack(StackMachine):
    atomic_writes = False  # delete, then save: see DjangoStorageBackend

    def make_backend(self, directory: str) -> SnapshotStorage:
        return DjangoStorageBackend(FileSystemStorage(location=directory))


class RcloneStack(StackMachine):
    def make_backend(self, directory: str) -> SnapshotStorage:
        return RcloneBackend(f":local:{directory}")


TestMemoryStack = MemoryStack.TestCase
TestMemoryStack.settings = SETTINGS
TestLocalStack = LocalStack.TestCase
TestLocalStack.settings = SETTINGS
TestDjangoStack = DjangoStack.TestCase
TestDjangoStack.settings = SETTINGS
TestRcloneStack = RcloneStack.TestCase
# Each rclone operation starts a process: fewer, shorter sequences.
TestRcloneStack.settings = settings(SETTINGS, max_examples=8, stateful_step_count=30)

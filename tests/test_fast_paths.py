"""The fast paths of the read streams, read every way a caller can, through a
stack: Logging over Retry over a storage whose reads fail where the test
says, may find nothing ready yet (a non-blocking stream), and whose object
may be replaced meanwhile.

Whatever the reads, the caller gets every byte of one version of the object
exactly once, or a SnapshotObjectChangedError after a part of the version it
started (and then that error on every read), and Logging reports the read
once, with the bytes the caller got.
"""

from __future__ import annotations

import array
import io
import random
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from django_snapshots.exceptions import SnapshotObjectChangedError
from django_snapshots.storage import Logging, Retry

#: Where Retry's stream stops keeping the bytes it delivered as they are.
UNHASHED = 64 * 1024


class Dropping(io.RawIOBase):
    """*data*, read in pieces of at most *step* bytes, that raises
    ConnectionResetError once *drop_at* bytes went through (never, for None).
    A *hesitant* one is non-blocking: every other read finds nothing ready."""

    def __init__(self, data: bytes, drop_at: int | None, step: int, *, hesitant: bool) -> None:
        super().__init__()
        self._data, self._drop_at, self._step = data, drop_at, step
        self._position = 0
        self._hesitant = hesitant
        self._calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._calls += 1
        if self._hesitant and self._calls % 2:
            return None
        view = memoryview(buffer).cast("B")
        if self._drop_at is not None and self._position >= self._drop_at:
            raise ConnectionResetError("dropped")
        end = self._position + min(len(view), self._step)
        if self._drop_at is not None:
            end = min(end, self._drop_at)
        piece = self._data[self._position : end]
        view[: len(piece)] = piece
        self._position += len(piece)
        return len(piece)


class Flaky:
    """A basic-tier storage of one object, "k": the n-th read of it drops at
    ``drops[n]``, and from the read after ``replace_at`` on, it is *replacement*."""

    def __init__(
        self,
        data: bytes,
        drops: list[int],
        step: int,
        replacement: bytes | None,
        replace_at: int,
        *,
        hesitant: bool,
    ) -> None:
        self.versions = [data] if replacement is None else [data, replacement]
        self.drops, self.step, self.replace_at = drops, step, replace_at
        self.hesitant = hesitant
        self.opened = 0

    def __repr__(self) -> str:
        return "Flaky()"

    def read(self, path: str) -> IO[bytes]:
        version = self.versions[-1] if self.opened > self.replace_at else self.versions[0]
        drop = self.drops[self.opened] if self.opened < len(self.drops) else None
        self.opened += 1
        stream = Dropping(version, drop, self.step, hesitant=self.hesitant)
        return stream  # type: ignore[return-value]

    def write(self, path: str, content: IO[bytes]) -> None:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        return ["k"]

    def delete(self, path: str) -> None:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        return True


def _read(stream: Any, how: tuple[str, int]) -> bytes | None:
    """One read of *stream* as *how* says; None when it says the end."""
    kind, size = how
    if kind == "read":
        data = stream.read(size)
        return data if data or size == 0 else None
    if kind == "read all":
        return stream.read() or None
    if kind == "readline":
        line = stream.readline(size)
        return line if line or size == 0 else None
    if kind == "readinto":
        buffer = bytearray(size)
        n = stream.readinto(buffer)
        return bytes(buffer[:n]) if n or size == 0 else None
    if kind == "readinto words":  # a buffer whose items are 4 bytes each
        words = array.array("I", bytes(4 * size))
        n = stream.readinto(words)
        return words.tobytes()[:n] if n or size == 0 else None
    line = next(stream, None)  # iteration
    return line


sizes = st.sampled_from([0, 1, 7, 4096, UNHASHED - 1, UNHASHED, UNHASHED + 1, 3 * UNHASHED])
reads = st.lists(
    st.tuples(
        st.sampled_from(["read", "read all", "readline", "readinto", "readinto words", "next"]),
        sizes,
    ),
    min_size=1,
    max_size=12,
)
offsets = st.one_of(
    st.sampled_from([0, 1, UNHASHED - 1, UNHASHED, UNHASHED + 1, 2 * UNHASHED]),
    st.integers(min_value=0, max_value=3 * UNHASHED),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.sampled_from([0, 5, UNHASHED - 1, UNHASHED, UNHASHED + 1, 2 * UNHASHED + 3]),
    drops=st.lists(offsets, min_size=1, max_size=4).map(sorted),
    step=st.sampled_from([3, 1000, UNHASHED, 1 << 20]),
    change=st.sampled_from(["none", "same start", "flipped byte", "shorter", "longer"]),
    replace_at=st.integers(min_value=0, max_value=3),
    hesitant=st.booleans(),
    how=reads,
    seed=st.integers(min_value=0, max_value=1 << 16),
)
def test_every_way_of_reading_gets_one_version_whole_and_one_report(
    size: int,
    drops: list[int],
    step: int,
    change: str,
    replace_at: int,
    hesitant: bool,
    how: list[tuple[str, int]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    # Lines of every length, some longer than what Retry keeps unhashed.
    data = b"".join(
        rng.randbytes(rng.choice([0, 10, UNHASHED + 5])).replace(b"\n", b"") + b"\n"
        for _ in range(8)
    )[:size]
    replacement = {
        "none": None,
        "same start": data + b"appended",
        "flipped byte": data[:-1] + bytes([data[-1] ^ 1]) if data else b"x",
        "shorter": data[: size // 2],
        "longer": rng.randbytes(size + 10),
    }[change]
    storage = Flaky(data, drops, step, replacement, replace_at, hesitant=hesitant)
    stack = Logging(Retry(storage, attempts=10, wait_initial=0, wait_max=0, wait_jitter=0))
    got: list[bytes] = []
    with capture_logs() as entries:
        stream = stack.read("k")
        error: BaseException | None = None
        ended = False
        try:
            for each in how * 40:
                piece = _read(stream, each)
                if piece is None:
                    ended = True
                    break
                got.append(piece)
            else:  # the reads chosen never got to the end: read the rest
                rest = stream.read()
                got.append(rest)
                ended = True
        except SnapshotObjectChangedError as exc:
            error = exc
        if error is not None:
            # Stays failed: no read may look like the end now.
            for each in how:
                with pytest.raises(SnapshotObjectChangedError):
                    _read(stream, each)
        stream.close()
        del stream
    received = b"".join(got)
    versions = [data] if replacement is None else [data, replacement]
    if error is None:
        assert ended
        assert received in versions
    else:
        assert replacement is not None
        assert data.startswith(received) or replacement.startswith(received)
    [entry] = [entry for entry in entries if entry["event"] == "snapshots.storage.read"]
    assert entry["bytes"] == len(received)
    assert entry["complete"] is (error is None)
    assert entry["outcome"] == ("ok" if error is None else "error")

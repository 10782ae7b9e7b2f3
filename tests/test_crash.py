"""Crash tests: a writer killed with SIGKILL at random moments never leaves a
partial, mixed or silently wrong object behind.

A child process rewrites large objects in a loop, alternating between two
versions of each key whose digests are known; the test kills it at random
moments, round after round, in the same directory, and checks what is left.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_snapshots.exceptions import SnapshotIntegrityError
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.wrappers.checksum import Checksum

pytestmark = pytest.mark.slow

KEYS = 6
CHUNKS = 48  # 48 chunks of 64 KiB: 3 MiB per object
ROUNDS = 25

# The child builds contents with the same function as the test (below), so
# both sides agree on the digests without sharing any state.
CONTENT_FUNCTION = """
def chunks(key, version, count):
    for index in range(count):
        yield hashlib.sha256(f"{key}|{version}|{index}".encode()).digest() * 2048
"""

CHILD = (
    textwrap.dedent(
        """
    import hashlib, io, random, sys
    from django_snapshots.storage.local import LocalFileSystemBackend
    from django_snapshots.storage.streams import ChunkReader
    """
    )
    + CONTENT_FUNCTION
    + textwrap.dedent(
        """
    location, mode, seed, keys, count = sys.argv[1:]
    storage = LocalFileSystemBackend(location)
    if mode == "checksum":
        from django_snapshots.storage.wrappers.checksum import Checksum
        storage = Checksum(storage)
    rng = random.Random(int(seed))
    print("ready", flush=True)
    while True:
        key = f"obj/{rng.randrange(int(keys))}"
        data = chunks(key, rng.randrange(2), int(count))
        if rng.random() < 0.5:
            storage.write(key, ChunkReader(data))  # a non-seekable stream
        else:
            storage.stream_write(key, data)
    """
    )
)

namespace: dict[str, object] = {"hashlib": hashlib}
exec(CONTENT_FUNCTION, namespace)
chunks = namespace["chunks"]


def known_digests() -> dict[str, set[str]]:
    """Both complete versions' sha256 for every key."""
    return {
        f"obj/{k}": {
            hashlib.sha256(b"".join(chunks(f"obj/{k}", v, CHUNKS))).hexdigest()  # type: ignore[operator]
            for v in (0, 1)
        }
        for k in range(KEYS)
    }


def kill_writer_at_random_moments(location: Path, mode: str, rounds: int) -> Iterator[int]:
    """Run the writer *rounds* times, killing it with SIGKILL at a random
    moment each time; yield after each kill, with the number of the round."""
    script = location.parent / "writer.py"
    script.write_text(CHILD)
    rng = random.Random(f"{mode}-crash")
    for round_number in range(rounds):
        child = subprocess.Popen(
            [sys.executable, str(script), str(location), mode, str(round_number), str(KEYS),
             str(CHUNKS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n", child.stderr.read()  # type: ignore[union-attr]
            # Early rounds die on the first writes, later ones after many.
            child.wait(timeout=rng.uniform(0.0, 0.15 + 0.04 * round_number))
            pytest.fail(f"the writer exited by itself: {child.stderr.read()!r}")  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            pass
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()  # type: ignore[union-attr]
            child.stderr.close()  # type: ignore[union-attr]
        assert child.returncode == -signal.SIGKILL
        yield round_number


def sha256_of(stream: object) -> str:
    digest = hashlib.sha256()
    with stream:  # type: ignore[attr-defined]
        while block := stream.read(1 << 20):  # type: ignore[attr-defined]
            digest.update(block)
    return digest.hexdigest()


def interrupted_writes(location: Path) -> int:
    """Count the temporary files of writes that a kill interrupted."""
    return sum("\x7f" in path.name for path in location.rglob("*"))


def test_a_killed_writer_leaves_only_complete_old_or_new_objects(tmp_path: Path) -> None:
    location = tmp_path / "store"
    storage = LocalFileSystemBackend(location)
    known = known_digests()
    for _ in kill_writer_at_random_moments(location, "plain", ROUNDS):
        keys = storage.list("")
        assert set(keys) <= set(known)  # no temporary file is ever listed as a key
        for key in keys:
            assert sha256_of(storage.read(key)) in known[key], f"{key} is partial or mixed"
    assert storage.list(""), "the writer never completed a single write"
    # The kills really landed inside writes, whose temporary files a killed
    # process cannot remove (they are never keys, see above).
    assert interrupted_writes(location) > ROUNDS // 3


def test_a_killed_checksum_writer_never_lets_wrong_data_pass_verification(
    tmp_path: Path,
) -> None:
    location = tmp_path / "store"
    raw = LocalFileSystemBackend(location)
    checked = Checksum(raw)
    known = known_digests()
    sidecars = {f"{key}.sha256" for key in known}
    verified = refused = 0
    for _ in kill_writer_at_random_moments(location, "checksum", ROUNDS):
        keys = checked.list("")
        assert set(keys) <= set(known)
        # Underneath there are only objects and their sidecars, no leftovers.
        assert set(raw.list("")) <= set(known) | sidecars
        for key in keys:
            raw_digest = sha256_of(raw.read(key))
            assert raw_digest in known[key], f"{key} is partial or mixed"
            try:
                delivered = sha256_of(checked.read(key))
            except SnapshotIntegrityError:
                refused += 1  # killed between the object and its sidecar: detected
                continue
            assert delivered == raw_digest
            verified += 1
    assert verified, "no object verified: the test did not exercise completed writes"
    assert interrupted_writes(location) > ROUNDS // 3
    print(f"{verified} reads verified, {refused} refused as unverifiable")

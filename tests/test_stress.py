"""Stress: eight processes share one stack's storage over overlapping keys.

Eight processes, started together by a barrier, run random mixes of write,
read, exists, list, delete and move through
``Retry(Checksum(Prefix(backend, "stress")))`` until a shared deadline, on a
local directory and on S3 (moto's server).  Every payload describes itself:
the key it was written for, its writer, and the digest of its body, so any
object read back is checked on its own.  The run counts:

- wrong data returned without an exception (must be 0);
- integrity errors while writers run (reported, allowed: none are expected
  on one host, where Checksum's lock files order the processes);
- keys that fail verification once every writer stopped (must be 0).

Short with ``CI=true``; ``DJANGO_SNAPSHOTS_STRESS=full`` runs it longer::

    DJANGO_SNAPSHOTS_STRESS=full .venv/bin/python -m pytest tests/test_stress.py -s
"""

from __future__ import annotations

import functools
import hashlib
import io
import multiprocessing
import os
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from django_snapshots.exceptions import SnapshotIntegrityError
from django_snapshots.storage import Checksum, LocalFileSystemBackend, Prefix, Retry
from django_snapshots.storage.objectstore import ObjectStoreBackend
from tests.conftest import S3Bucket

pytestmark = pytest.mark.slow

PROCESSES = 8
FULL = os.environ.get("DJANGO_SNAPSHOTS_STRESS") == "full"
SHORT = os.environ.get("CI") == "true" and not FULL
# Seconds of the run, by backend: S3 operations are HTTP requests, slower, so
# its run is longer, for a few hundred operations in each process.
SECONDS = (
    {"local": 60.0, "s3": 180.0} if FULL else {"local": 5.0, "s3": 15.0} if SHORT
    else {"local": 10.0, "s3": 25.0}
)  # fmt: skip
KEYS = ["k0", "k1", "k2", "k3", "d/a", "d/b"]
HEADER = re.compile(rb"^key=(\S+) writer=(\d+) seq=(\d+) sha256=([0-9a-f]{64})\n")
SIZES = [0, 1, 1000, 70_000, 300_000]
OPERATIONS = ["write", "write", "read", "read", "exists", "list", "delete", "move"]


def payload(key: str, writer: int, seq: int, size: int) -> bytes:
    """A self-describing object: a header naming its key, writer and the
    digest of the body that follows."""
    seed = hashlib.sha256(f"{key}|{writer}|{seq}".encode()).digest()
    body = (seed * (size // len(seed) + 1))[:size]
    header = f"key={key} writer={writer} seq={seq} sha256={hashlib.sha256(body).hexdigest()}\n"
    return header.encode() + body


def is_wrong(key: str, data: bytes) -> bool:
    """Whether *data*, read at *key*, is not a complete payload written for it."""
    match = HEADER.match(data)
    if match is None:
        return True
    body = data[match.end() :]
    return match[1].decode() != key or hashlib.sha256(body).hexdigest() != match[4].decode()


def build(spec: dict[str, Any]) -> Any:
    """The stack under test, built in each process (stacks do not pickle)."""
    if spec["kind"] == "local":
        backend: Any = LocalFileSystemBackend(spec["location"])
    else:
        backend = ObjectStoreBackend(
            spec["url"], config=spec["config"], client_options={"allow_http": True}
        )
    checksum = Checksum(Prefix(backend, "stress"), lock_dir=spec["lock_dir"])
    return Retry(checksum, attempts=5, wait_initial=0, wait_max=0, wait_jitter=0)


def worker(spec: dict[str, Any], number: int, barrier: Any, deadline: Any, results: Any) -> None:
    storage = build(spec)
    rng = random.Random(number)
    counts: Counter[str] = Counter()
    wrong: list[str] = []
    barrier.wait()
    seq = 0
    while time.time() < deadline.value:
        seq += 1
        key = rng.choice(KEYS)
        operation = rng.choice(
            ["write", "write", "read", "read", "exists", "list", "delete", "move"]
        )
        try:
            if operation == "write":
                data = payload(key, number, seq, rng.choice(SIZES))
                if rng.random() < 0.5:
                    storage.write(key, io.BytesIO(data))
                else:
                    storage.stream_write(key, iter([data[:500], data[500:]]))
            elif operation == "read":
                if rng.random() < 0.5:
                    data = storage.read(key).read()
                else:
                    data = b"".join(storage.stream_read(key))
                if is_wrong(key, data):
                    wrong.append(f"{key}: {data[:80]!r}")
            elif operation == "exists":
                storage.exists(key)
            elif operation == "list":
                listed = storage.recursive_list("")
                strays = [k for k in listed if k not in KEYS and not k.startswith("staging/")]
                if strays:
                    wrong.append(f"list showed {strays}")
            elif operation == "delete":
                storage.delete(key)
            else:
                staging = f"staging/{number}-{seq}"
                storage.write(staging, io.BytesIO(payload(key, number, seq, rng.choice(SIZES))))
                storage.atomic_move(staging, key)
            counts[operation] += 1
        except FileNotFoundError:
            counts["not found"] += 1  # deleted by another process meanwhile
        except SnapshotIntegrityError:
            counts["integrity error"] += 1
    results.put((number, dict(counts), wrong))


def start_the_clock(deadline: Any, seconds: float) -> None:
    """Set the deadline shared by every worker, once all of them are ready."""
    deadline.value = time.time() + seconds


def run(spec: dict[str, Any]) -> tuple[Counter[str], list[str], list[str]]:
    """Run the workers over *spec*; return the operations' counts, the wrong
    data returned, and the keys that fail verification afterwards."""
    context = multiprocessing.get_context("spawn")  # no threads of the test cross a fork
    seconds = SECONDS[spec["kind"]]
    deadline = context.Value("d", 0.0)
    barrier = context.Barrier(
        PROCESSES, action=functools.partial(start_the_clock, deadline, seconds)
    )
    results = context.Queue()
    processes = [
        context.Process(target=worker, args=(spec, number, barrier, deadline, results))
        for number in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=seconds + 240) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    counts: Counter[str] = Counter()
    wrong: list[str] = []
    for _, performed, bad in reports:
        counts.update(performed)
        wrong += bad
    storage = build(spec)
    unverified = []
    for key in storage.recursive_list(""):
        try:
            storage.verify(key)
            data = storage.read(key).read()
        except SnapshotIntegrityError as exc:
            unverified.append(f"{key}: {exc}")
            continue
        if is_wrong(key, data):
            wrong.append(f"after the run, {key}: {data[:80]!r}")
    print(f"\n{spec['kind']}: {sum(counts.values())} operations in {seconds:.0f} s: {dict(counts)}")
    print(f"{spec['kind']}: wrong data {len(wrong)}, failing verification {len(unverified)}")
    return counts, wrong, unverified


def test_processes_sharing_a_local_directory_never_get_wrong_data(tmp_path: Path) -> None:
    (tmp_path / "locks").mkdir()
    spec = {
        "kind": "local",
        "location": str(tmp_path / "data"),
        "lock_dir": str(tmp_path / "locks"),
    }
    counts, wrong, unverified = run(spec)
    assert wrong == []
    assert unverified == []
    assert counts["write"] >= PROCESSES  # the run did write, in every process on average
    assert counts["read"] > 0


def test_processes_sharing_an_s3_bucket_never_get_wrong_data(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    (tmp_path / "locks").mkdir()
    server = s3_bucket.server
    spec = {
        "kind": "s3",
        "url": f"s3://{s3_bucket.name}/backups",
        "config": {
            "endpoint": server.endpoint_url,
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
            "region": server.region,
        },
        "lock_dir": str(tmp_path / "locks"),
    }
    counts, wrong, unverified = run(spec)
    assert wrong == []
    assert unverified == []
    assert counts["write"] >= PROCESSES
    assert counts["read"] > 0

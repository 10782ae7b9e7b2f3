"""Concurrency: many threads share one full stack over overlapping keys.

Sixteen threads run random mixes of all ten operations through
``Logging(Retry(Checksum(Prefix(LocalFileSystemBackend(tmp), "t"))))`` on a
handful of shared keys.  Every payload describes itself (writer, sequence
number, length and a body derived from them), so any object read back can be
checked for being exactly one of the versions written, never a torn mix.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from django_snapshots.storage import Logging, Prefix
from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.streams import ChunkReader
from django_snapshots.storage.wrappers.checksum import Checksum
from django_snapshots.storage.wrappers.retry import Retry

pytestmark = pytest.mark.slow

THREADS = 16
STEPS = 60
KEYS = ["k0", "k1", "k2", "k3", "s/a", "s/b", "s/c"]
HEADER = re.compile(rb"^writer=(\d+) seq=(\d+) size=(\d+)\n")

# Why an operation may legitimately fail while others run: the key it needs
# was deleted or moved away by another thread in the meantime.
EXPECTED = (FileNotFoundError,)


def payload(writer: int, seq: int, size: int) -> bytes:
    """A self-describing object: a header, then a body derived from it."""
    header = b"writer=%d seq=%d size=%d\n" % (writer, seq, size)
    block = hashlib.sha256(header).digest()
    return header + (block * (size // len(block) + 1))[:size]


def is_stored_key(key: str) -> bool:
    """Whether *key* is one the threads write: a shared key or a sync mirror."""
    return key in KEYS or re.fullmatch(r"m\d+/[abc]", key) is not None


def check_payload(data: bytes, written: set[tuple[int, int, int]]) -> None:
    """Fail unless *data* is exactly one of the versions that were written."""
    match = HEADER.match(data)
    assert match, f"object without a header: {data[:40]!r}"
    version = tuple(int(n) for n in match.groups())
    assert version in written, f"never written: {version}"
    assert data == payload(*version), f"torn object: {version} with a foreign body"


class Worker:
    def __init__(self, number: int, stack: Any, written: set[tuple[int, int, int]]) -> None:
        self.number = number
        self.stack = stack
        self.written = written
        self.rng = random.Random(number)
        self.performed: Counter[tuple[str, str]] = Counter()
        self.expected_failures: Counter[str] = Counter()
        self.unexpected: list[BaseException] = []
        self.subject = ""  # what the current operation is about, as audited

    def run(self) -> None:
        for seq in range(STEPS):
            op = self.rng.choice(OPERATIONS)
            try:
                op(self, seq)
            except EXPECTED as exc:
                self.expected_failures[type(exc).__name__] += 1
            except BaseException as exc:  # anything else fails the test
                self.unexpected.append(exc)
            self.performed[(op.__name__, self.subject)] += 1

    def key(self) -> str:
        self.subject = key = self.rng.choice(KEYS)
        return key

    def new_payload(self, seq: int) -> bytes:
        size = self.rng.choice([0, 100, 5000, 300_000, 1_200_000])
        self.written.add((self.number, seq, size))  # before the write: readers may see it
        return payload(self.number, seq, size)


def do_write(w: Worker, seq: int) -> None:
    key = w.key()
    data = w.new_payload(seq)
    w.stack.write(key, ChunkReader(iter([data[:70_000], data[70_000:]])))


def do_stream_write(w: Worker, seq: int) -> None:
    key = w.key()
    data = w.new_payload(seq)
    w.stack.stream_write(key, iter([data[i : i + 65536] for i in range(0, len(data), 65536)]))


def do_read(w: Worker, seq: int) -> None:
    key = w.key()
    with w.stack.read(key) as file:
        check_payload(file.read(), w.written)


def do_stream_read(w: Worker, seq: int) -> None:
    key = w.key()
    check_payload(b"".join(w.stack.stream_read(key)), w.written)


def do_exists(w: Worker, seq: int) -> None:
    key = w.key()
    w.stack.exists(key)


def do_list(w: Worker, seq: int) -> None:
    w.subject = prefix = w.rng.choice(["", "k", "s/", "m"])
    assert all(is_stored_key(key) for key in w.stack.list(prefix))


def do_recursive_list(w: Worker, seq: int) -> None:
    w.subject = prefix = w.rng.choice(["", "s/", "m"])
    assert all(is_stored_key(key) for key in w.stack.recursive_list(prefix))


def do_delete(w: Worker, seq: int) -> None:
    key = w.key()
    w.stack.delete(key)


def do_atomic_move(w: Worker, seq: int) -> None:
    src = w.key()
    dst = w.rng.choice([k for k in KEYS if k != src])
    w.subject = f"{src}->{dst}"
    w.stack.atomic_move(src, dst)


def do_sync(w: Worker, seq: int) -> None:
    # Each thread mirrors into its own prefix, the source changes meanwhile.
    w.subject = f"s/->m{w.number}/"
    w.stack.sync("s/", f"m{w.number}/")


OPERATIONS = [
    do_write, do_write, do_stream_write, do_read, do_read, do_stream_read, do_exists,
    do_list, do_recursive_list, do_delete, do_atomic_move, do_sync,
]  # fmt: skip


def audit_subject(entry: dict[str, Any]) -> tuple[str, str]:
    op = entry["op"]
    if op == "atomic_move":
        return f"do_{op}", f"{entry['src']}->{entry['dst']}"
    if op == "sync":
        return f"do_{op}", f"{entry['src_prefix']}->{entry['dst_prefix']}"
    return f"do_{op}", entry.get("path", entry.get("prefix"))


def test_sixteen_threads_share_the_full_stack_without_torn_objects_or_lost_entries(
    tmp_path: Path,
) -> None:
    capture = LogCapture()
    logger = structlog.wrap_logger(None, processors=[capture])
    stack = Logging(
        Retry(Checksum(Prefix(LocalFileSystemBackend(tmp_path), "t")), wait_initial=0.01),
        logger=logger,
    )
    written: set[tuple[int, int, int]] = set()
    workers = [Worker(n, stack, written) for n in range(THREADS)]
    threads = [threading.Thread(target=worker.run) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    unexpected = [exc for worker in workers for exc in worker.unexpected]
    assert not unexpected, f"{len(unexpected)} unexpected errors, first: {unexpected[0]!r}"

    # Exactly one audit entry per operation performed, with its subject.
    performed = sum((worker.performed for worker in workers), Counter())
    audited = Counter(audit_subject(entry) for entry in capture.entries)
    assert sum(performed.values()) == THREADS * STEPS
    assert audited == performed

    # What is left is made of complete versions only, each verified.
    for key in stack.list(""):
        with stack.read(key) as file:
            check_payload(file.read(), written)
    outcomes = Counter(entry["outcome"] for entry in capture.entries)
    assert outcomes["ok"] > THREADS * STEPS // 2, outcomes

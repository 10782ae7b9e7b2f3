"""Per-operation overhead of each wrapper over a bare LocalFileSystemBackend.

Every variant stores the same 4 KiB objects in the same directory (the
Checksum variants in another one, since their sidecars would show in the
listings of the others).  Each round times one batch of each variant and of
the bare backend, in a shuffled order (``paired_ratios``); a figure is the
median over the rounds of the variant's time divided by the bare backend's
in the same round, so a drift of the machine's load cancels out.  The
quartiles of the per-round ratios show how much a figure moved from round to
round, and a row of the bare backend against itself (A/A) shows the noise
floor.

Logging is measured with structlog emitting for real through a cheap but
complete pipeline (``null_json_logger``): processors that add the level and
a timestamp and render JSON, written by a ``WriteLogger`` to ``/dev/null``.
The library itself never configures structlog; this is what a project that
ships its audit log as JSON lines would run.  An extra row, without a
target, gives the wrapper's own cost: the same logger set to drop ``info``
entries before any processor runs.

Run alone with ``python -m tests.benchmarks.bench_wrappers [--quick]``.
"""

from __future__ import annotations

import io
import logging
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.protocols import SnapshotStorage
from django_snapshots.storage.wrappers.checksum import Checksum
from django_snapshots.storage.wrappers.logging import Logging
from django_snapshots.storage.wrappers.prefix import Prefix
from django_snapshots.storage.wrappers.retry import Retry
from tests.benchmarks.common import Row, null_json_logger, paired_ratios

OBJECT = b"\x5a" * 4096
BATCH = 100  # objects per batch; the list benchmark lists a prefix holding them all
LIST_CALLS = 10  # list calls per batch
TENANT = "tenant"

# variant name -> (how to build it around a bare backend, whether it scopes
# keys itself, target over the bare backend)
VARIANTS: dict[str, tuple[Callable[[SnapshotStorage, Any], SnapshotStorage], bool, str]] = {
    "Logging": (lambda s, log: Logging(s, logger=log), False, "<= 1.05x"),
    "Logging, entries dropped by level": (
        lambda s, log: Logging(s, logger=null_json_logger(logging.WARNING)),
        False,
        "",
    ),
    "Retry": (lambda s, log: Retry(s), False, "<= 1.05x"),
    "Prefix": (lambda s, log: Prefix(s, TENANT), True, "<= 1.05x"),
    "Checksum": (lambda s, log: Checksum(s), False, ""),
    "Logging(Retry(Prefix))": (
        lambda s, log: Logging(Retry(Prefix(s, TENANT)), logger=log),
        True,
        "<= 1.15x",
    ),
    "Logging(Retry(Checksum(Prefix)))": (
        lambda s, log: Logging(Retry(Checksum(Prefix(s, TENANT))), logger=log),
        True,
        "",
    ),
}

# Row name -> target; the A/A row (the bare backend against itself) shows how
# far from 1.0 the noise alone moves a ratio.
TARGETS = {"bare Local again (A/A)": "", **{name: v[2] for name, v in VARIANTS.items()}}


def operations(storage: SnapshotStorage, scoped: bool) -> dict[str, Callable[[], None]]:
    """One batch of each measured operation on *storage*."""
    keys = [f"obj-{i:03d}" if scoped else f"{TENANT}/obj-{i:03d}" for i in range(BATCH)]
    prefix = "" if scoped else f"{TENANT}/"

    def write() -> None:
        for key in keys:
            storage.write(key, io.BytesIO(OBJECT))

    def read() -> None:
        for key in keys:
            with storage.read(key) as file:
                file.read()

    def exists() -> None:
        for key in keys:
            storage.exists(key)

    def list_() -> None:
        for _ in range(LIST_CALLS):
            storage.list(prefix)

    return {"write": write, "read": read, "exists": exists, "list": list_}


def measure(*, scale: float = 1.0) -> list[Row]:
    """Measure each wrapper's overhead per operation on 4 KiB objects."""
    logger = null_json_logger()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-wrappers-") as root:
        # Every variant works on the same files (directories placed elsewhere
        # on the disk made fsync up to 30% slower or faster); the Checksum
        # variants get their own, since their sidecars would show in listings.
        plain, checked = Path(root) / "plain", Path(root) / "checksum"
        bare = operations(LocalFileSystemBackend(plain), scoped=False)
        batches = {
            "bare Local again (A/A)": operations(LocalFileSystemBackend(plain), scoped=False)
        }
        for name, (build, scoped, _) in VARIANTS.items():
            local = LocalFileSystemBackend(checked if "Checksum" in name else plain)
            batches[name] = operations(build(local, logger), scoped)
        for batch in [bare, *batches.values()]:
            batch["write"]()  # every later read, exists and list finds the objects
        for op in ("write", "read", "exists", "list"):
            # Writes wait for fsync, whose time varies much more: more rounds.
            rounds = (61 if op == "write" else 31) if scale >= 0.5 else 7
            base, ratios = paired_ratios(
                bare[op], {name: batch[op] for name, batch in batches.items()}, rounds=rounds
            )
            bare_us = base / (LIST_CALLS if op == "list" else BATCH) * 1e6
            for name, target in TARGETS.items():
                ratio = statistics.median(ratios[name])
                low, _, high = statistics.quantiles(ratios[name], n=4)
                rows.append(
                    Row(
                        f"{name} {op} (4 KiB objects)",
                        f"bare Local {op}",
                        ratio,
                        target,
                        detail=f"{(ratio - 1) * bare_us:+.1f} us/op over {bare_us:.0f} us; "
                        f"middle half {low:.2f}-{high:.2f}x",
                    )
                )
    return rows


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))

"""Per-operation overhead of each wrapper over a bare LocalFileSystemBackend.

Every variant stores the same 4 KiB objects in the same directory (the
Checksum variants in another one, since their sidecars would show in the
listings of the others).  Each round times one batch of each variant and of
the bare backend, in a shuffled order (``paired_times``).  A row gives two
figures: the median over the rounds of the variant's time divided by the
bare backend's in the same round, and the variant's own cost in
microseconds per operation, the median over the rounds of its batch's time
minus the bare backend's, divided by the operations in a batch.  The
quartiles of the per-round ratios show how much a figure moved from round
to round, and a row of the bare backend against itself (A/A) shows the
noise floor.

Targets.  A ``write`` waits for ``fsync``: there a wrapper is held to a
ratio.  A ``read``, ``exists`` or ``list`` of a local file is served from the
page cache in 10-20 us (a listing of 100 keys in about 100 us), where 1.05x
would leave half a microsecond: there each layer is held to its own cost,
``Prefix`` and ``Retry`` at most 1 us per operation plus 0.1 us per key a
listing returns, and ``Logging`` at most 3 us before the project's
processors run (the "entries dropped by level" row).

Logging is measured with structlog emitting for real through a cheap but
complete pipeline (``null_json_logger``): processors that add the level and
a timestamp and render JSON, written by a ``WriteLogger`` to ``/dev/null``.
The library itself never configures structlog; this is what a project that
ships its audit log as JSON lines would run.  The "entries dropped by level"
row uses the same lazy logger set to drop ``info`` entries: the filtering
bound logger's ``info`` returns at once, before any processor, so the row
measures the wrapper's own work (timing the call, building the entry,
metering a read's stream) and structlog's assembly of the bound logger from
the lazy one, which the wrapper does once per configuration, not per entry.

Run alone with ``python -m tests.benchmarks.bench_wrappers [--quick]``.
"""

from __future__ import annotations

import io
import logging
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.protocols import SnapshotStorage
from django_snapshots.storage.wrappers.checksum import Checksum
from django_snapshots.storage.wrappers.logging import Logging
from django_snapshots.storage.wrappers.prefix import Prefix
from django_snapshots.storage.wrappers.retry import Retry
from tests.benchmarks.common import Row, null_json_logger, own_cost_us, paired_times

OBJECT = b"\x5a" * 4096
BATCH = 100  # objects per batch; the list benchmark lists a prefix holding them all
LIST_CALLS = 10  # list calls per batch
TENANT = "tenant"
PAGE_CACHE_OPS = ("read", "exists", "list")


@dataclass(frozen=True)
class Variant:
    """One measured stack: how to build it around a bare backend (and the
    JSON logger), whether it scopes keys itself, its target for ``write``
    (a ratio), and its own cost's target on page-cache operations: *us*
    per operation plus *us_per_key* per key a listing returns."""

    build: Callable[[SnapshotStorage, Any], SnapshotStorage]
    scoped: bool = False
    write_target: str = ""
    us: float | None = None
    us_per_key: float = 0.0

    def target(self, op: str) -> str:
        if op not in PAGE_CACHE_OPS:
            return self.write_target
        if self.us is None:
            return ""
        listed = BATCH if op == "list" else 0
        return f"<= {self.us + self.us_per_key * listed:g} us/op"


VARIANTS: dict[str, Variant] = {
    # The bare backend against itself: how far the noise alone moves a figure.
    "bare Local again (A/A)": Variant(lambda s, log: s),
    "Logging": Variant(lambda s, log: Logging(s, logger=log), write_target="<= 1.05x"),
    "Logging, entries dropped by level": Variant(
        lambda s, log: Logging(s, logger=null_json_logger(logging.WARNING)), us=3.0
    ),
    "Retry": Variant(lambda s, log: Retry(s), write_target="<= 1.05x", us=1.0, us_per_key=0.1),
    "Prefix": Variant(
        lambda s, log: Prefix(s, TENANT), True, write_target="<= 1.05x", us=1.0, us_per_key=0.1
    ),
    "Checksum": Variant(lambda s, log: Checksum(s)),
    "Logging(Retry(Prefix))": Variant(
        lambda s, log: Logging(Retry(Prefix(s, TENANT)), logger=log), True, write_target="<= 1.15x"
    ),
    "Logging(Retry(Checksum(Prefix)))": Variant(
        lambda s, log: Logging(Retry(Checksum(Prefix(s, TENANT))), logger=log), True
    ),
}


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
        batches = {}
        for name, variant in VARIANTS.items():
            local = LocalFileSystemBackend(checked if "Checksum" in name else plain)
            batches[name] = operations(variant.build(local, logger), variant.scoped)
        for batch in [bare, *batches.values()]:
            batch["write"]()  # every later read, exists and list finds the objects
        for op in ("write", *PAGE_CACHE_OPS):
            # Writes wait for fsync, whose time varies much more; the page-cache
            # operations are quick, and their figures are held to fractions of
            # a microsecond: more rounds for both.
            rounds = (61 if op == "write" else 101) if scale >= 0.5 else 7
            base_times, times = paired_times(
                bare[op], {name: batch[op] for name, batch in batches.items()}, rounds=rounds
            )
            calls = LIST_CALLS if op == "list" else BATCH
            bare_us = statistics.median(base_times) / calls * 1e6
            for name, variant in VARIANTS.items():
                ratios = sorted(t / b for t, b in zip(times[name], base_times, strict=True))
                ratio = statistics.median(ratios)
                low, _, high = statistics.quantiles(ratios, n=4)
                cost = own_cost_us(base_times, times[name], operations=calls)
                rows.append(
                    Row(
                        f"{name} {op} (4 KiB objects)",
                        f"bare Local {op}",
                        ratio,
                        variant.target(op),
                        detail=f"{cost:+.1f} us/op over {bare_us:.0f} us; "
                        f"middle half {low:.2f}-{high:.2f}x",
                        cost_us=cost,
                        group=f"{op} (4 KiB objects)",
                        label=name,
                    )
                )
    return rows


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))

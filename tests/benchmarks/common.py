"""Shared measuring tools for the benchmark suite (run: ``python -m tests.benchmarks``).

Every figure compares two measurements taken side by side in the same run,
as their ratio or, for a layer's own cost, their difference, so the
machine's speed and its drifts cancel out.  Nothing here asserts on timings.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import pickle
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from django_snapshots.storage.streams import CHUNK_SIZE

# A target that bounds a row's ratio ("<= 1.05x", ">= 0.9x") or its own cost ("<= 3 us/op").
_BOUND = re.compile(r"^\s*(<=|>=)\s*([0-9.]+)\s*(x|us/op)\s*$")


@dataclass(frozen=True)
class Row:
    """One line of the results table: *measured* against *baseline*."""

    name: str
    baseline: str
    ratio: float | None = None
    target: str = ""
    detail: str = ""
    #: Whether the target was met, for targets that are not a bound on
    #: *ratio* or *cost_us* (e.g. megabytes of memory); ``None`` lets the
    #: suite runner compare *ratio* with a target such as ``"<= 1.05x"`` or
    #: ``">= 0.9x"``, or *cost_us* with one such as ``"<= 3 us/op"``.
    met: bool | None = None
    #: The measured variant's own cost in microseconds per operation: its
    #: time minus the baseline's, the median over rounds measured side by side.
    cost_us: float | None = None
    #: How the charts group and name the row (the operation, and the layer
    #: or stack); *name* when empty.
    group: str = ""
    label: str = ""


def target_met(row: Row) -> bool | None:
    """Whether *row* met its target: its own verdict, or its ratio against a
    ``"<= 1.05x"``/``">= 0.9x"`` bound, or its own cost against a
    ``"<= 3 us/op"`` bound; ``None`` when it has no target."""
    if row.met is not None:
        return row.met
    bound = _BOUND.match(row.target)
    if bound is None:
        return None
    value = row.ratio if bound.group(3) == "x" else row.cost_us
    if value is None:
        return None
    limit = float(bound.group(2))
    return value <= limit if bound.group(1) == "<=" else value >= limit


def target_unit(row: Row) -> str | None:
    """The unit of *row*'s target: ``"x"`` (a ratio), ``"us/op"`` (its own
    cost), or ``None`` for any other target, or none."""
    bound = _BOUND.match(row.target)
    return bound.group(3) if bound is not None else None


def artifact(size: int) -> Iterator[bytes]:
    """Yield *size* bytes of generated content in chunks of ``CHUNK_SIZE``,
    never holding more than one chunk: an artifact of any size at constant memory."""
    block = bytes(range(256)) * (CHUNK_SIZE // 256)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK_SIZE, size - sent)]
        sent += len(piece)
        yield piece


def best_of(fn: Callable[[], object], *, repeat: int = 5, number: int = 1) -> float:
    """Return the best (lowest) time in seconds of *number* calls of *fn*, over *repeat* rounds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    rounds: int = 7,
    number: int = 1,
    before: Callable[[str], object] | None = None,
) -> dict[str, float]:
    """Time several variants in alternation (ABCABC...) and return each one's median,
    so that drift of the machine affects all variants alike.

    *before*, when given, is called untimed with a variant's name before
    each of its batches of *number* calls (see :func:`remove_and_sync`)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if before is not None:
                before(name)
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


def paired_ratios(
    baseline: Callable[[], object],
    variants: dict[str, Callable[[], object]],
    *,
    rounds: int = 21,
    seed: int = 0,
) -> tuple[float, dict[str, list[float]]]:
    """Time *baseline* and every variant once per round, in a shuffled order.

    Return the baseline's median time and, per variant, its time divided by
    the baseline's time in the same round, one ratio per round, sorted (take
    the median, and the quartiles for the spread).  Pairing each variant
    with a baseline measured moments apart cancels slow drifts of the
    machine; shuffling the order cancels position effects.
    """
    base_times, times = paired_times(baseline, variants, rounds=rounds, seed=seed)
    ratios = {
        name: sorted(t / b for t, b in zip(own, base_times, strict=True))
        for name, own in times.items()
    }
    return statistics.median(base_times), ratios


def balanced_ratios(
    baseline: Callable[[], object],
    variant: Callable[[], object],
    *,
    pairs: int,
    before: Callable[[str], object] | None = None,
) -> list[float]:
    """Time *baseline* and *variant* in pairs of rounds, the baseline first
    in one round of a pair and second in the other, and return per pair the
    geometric mean of the two rounds' ratios (the variant's time over the
    baseline's), sorted.

    A cost that falls on whichever call runs second (a virtual disk still
    writing back the first call's gigabyte) multiplies one round's ratio by
    as much as it divides the other's, so it cancels in the pair; in a
    shuffled order it would decide the median.  *before*, when given, is
    called untimed before each timed call, with ``"baseline"`` or
    ``"variant"``.
    """
    fns = {"baseline": baseline, "variant": variant}
    ratios = []
    for _ in range(pairs):
        product = 1.0
        for order in (("baseline", "variant"), ("variant", "baseline")):
            took = {}
            for name in order:
                if before is not None:
                    before(name)
                start = time.perf_counter()
                fns[name]()
                took[name] = time.perf_counter() - start
            product *= took["variant"] / took["baseline"]
        ratios.append(product**0.5)
    return sorted(ratios)


def paired_times(
    baseline: Callable[[], object],
    variants: dict[str, Callable[[], object]],
    *,
    rounds: int = 21,
    seed: int = 0,
) -> tuple[list[float], dict[str, list[float]]]:
    """Time *baseline* and every variant once per round, in a shuffled order,
    and return the times of each round: the baseline's, and each variant's
    (as :func:`paired_ratios` measures them)."""
    rng = random.Random(seed)
    everything = {"": baseline, **variants}
    base_times: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        order = list(everything)
        rng.shuffle(order)
        took = {}
        for name in order:
            start = time.perf_counter()
            everything[name]()
            took[name] = time.perf_counter() - start
        base_times.append(took[""])
        for name in variants:
            times[name].append(took[name])
    return base_times, times


def remove_and_sync(*paths: Path) -> None:
    """Remove the files at *paths* (those that exist), then flush every file
    system's pending writes with :func:`os.sync`.

    Call it untimed before a timed write of a large artifact (the *before*
    of :func:`interleaved` and :func:`paired_ratios`).  Replacing a 1 GiB
    file frees its blocks, and on a file system mounted with ``discard``
    (this machine's ext4) the next journal commit trims them: a 1 GiB round
    trip through ``Checksum(LocalFileSystemBackend)`` that replaced the last
    round's copy took 1.8 to 4.6 s at random, one that found no copy 1.7 to
    1.9 s.  Writing where no copy is, with no other write
    pending, leaves only the variant's own work in its time.
    """
    for path in paths:
        path.unlink(missing_ok=True)
    os.sync()


def own_cost_us(base_times: list[float], times: list[float], *, operations: int) -> float:
    """Return a variant's own cost in microseconds per operation: the median
    over rounds of its batch's time minus the baseline's in the same round,
    divided by the *operations* in a batch."""
    return (
        statistics.median(t - b for t, b in zip(times, base_times, strict=True)) / operations * 1e6
    )


def peak_rss_delta(fn: Callable[[], object]) -> int:
    """Run *fn* in a forked child and return its peak resident memory above
    the child's baseline, in bytes (Linux: ``/proc/self/status`` ``VmHWM``).

    The child first hands the memory its allocator holds free back to the
    system (glibc's ``malloc_trim``): memory the process touched and freed
    earlier stays resident, and *fn* would reuse it without its resident
    set growing, so the figure would depend on what ran before.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            _release_free_memory()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak (VmHWM) to the current RSS
            baseline = _status_kib("VmRSS")
            fn()
            result: object = (_status_kib("VmHWM") - baseline) * 1024
        except BaseException as exc:  # reported to the parent
            result = exc
        with os.fdopen(write_end, "wb") as out:
            pickle.dump(result, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        result = pickle.load(inp)
    os.waitpid(pid, 0)
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, int)
    return result


def null_json_logger(level: int = logging.INFO) -> Any:
    """Return a structlog logger that really renders each entry as one JSON
    line (with its level and a timestamp) and writes it to ``/dev/null``:
    the cheapest complete pipeline, without configuring structlog globally.
    Entries below *level* are dropped before any processor runs."""
    sink = open(os.devnull, "w")  # noqa: SIM115  (kept open for the logger's lifetime)
    return structlog.wrap_logger(
        structlog.WriteLogger(sink),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )


def _release_free_memory() -> None:
    gc.collect()
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")

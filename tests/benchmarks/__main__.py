"""Run the benchmark suite and print one table of ratios.

Run from the repository root::

    python -m tests.benchmarks            # full run: 1 GiB artifacts, several minutes
    python -m tests.benchmarks --quick    # smoke run with small sizes
    python -m tests.benchmarks --rst      # the same table as reStructuredText, and its
                                          # charts drawn into docs/_static/
    python -m tests.benchmarks --charts DIR   # draw the charts (SVG) into DIR
    python -m tests.benchmarks wrappers   # only tests/benchmarks/bench_wrappers.py

Every ``tests/benchmarks/bench_<name>.py`` module defines
``measure(*, scale: float = 1.0) -> list[Row]``; ``scale`` 1.0 is the full
size (1 GiB artifacts), ``--quick`` passes 1/64.  Each figure is a ratio of
two measurements taken side by side in this run, so the speed of the machine
cancels out; the header says which machine it was and how busy it was.
The charts (``tests/benchmarks/charts.py``, which needs matplotlib: the
``bench`` extra) show each layer's own cost against its target, and every
ratio against its target.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from tests.benchmarks.common import Row, target_met

QUICK_SCALE = 1 / 64
DOCS_CHARTS = Path(__file__).resolve().parents[2] / "docs" / "_static"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("modules", nargs="*", help="bench_<name> modules to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--scale", type=float, help="size factor (1.0 = 1 GiB artifacts)")
    parser.add_argument(
        "--rst",
        action="store_true",
        help=f"print a reStructuredText table, and draw its charts (default {DOCS_CHARTS})",
    )
    parser.add_argument("--charts", type=Path, metavar="DIR", help="draw the charts into DIR")
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else QUICK_SCALE if args.quick else 1.0
    if not scale > 0:
        parser.error("--scale must be positive")
    charts_dir = args.charts if args.charts is not None else DOCS_CHARTS if args.rst else None
    if charts_dir is not None:
        try:  # before the run, not after minutes of it
            from tests.benchmarks import charts
        except ImportError as exc:
            parser.error(f"drawing the charts needs matplotlib ({exc}): pip install -e '.[bench]'")

    available = sorted(p.stem[len("bench_") :] for p in Path(__file__).parent.glob("bench_*.py"))
    names = args.modules or available
    unknown = sorted(set(names) - set(available))
    if unknown:
        parser.error(f"no such benchmark module: {', '.join(unknown)} (have {available})")

    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[Row] = []
    failed = []
    for name in names:
        print(f"running bench_{name} (scale {scale:g}) ...", file=sys.stderr, flush=True)
        module_start = time.monotonic()
        try:
            module = importlib.import_module(f"tests.benchmarks.bench_{name}")
            rows.extend(module.measure(scale=scale))
        except Exception:
            traceback.print_exc()
            failed.append(name)
            rows.append(Row(f"bench_{name}", "-", detail="FAILED, see the traceback above"))
        print(f"  done in {time.monotonic() - module_start:.0f} s", file=sys.stderr, flush=True)

    print(machine_description(scale, load_before, os.getloadavg(), time.monotonic() - started))
    print()
    print(render(rows, rst=args.rst))
    if charts_dir is not None:
        for path in charts.draw(rows, charts_dir):
            print(f"drew {path}", file=sys.stderr)
    return 1 if failed else 0


def render(rows: list[Row], *, rst: bool) -> str:
    header = ("Benchmark", "Baseline", "Result", "Target", "Met")
    table = [header]
    for row in rows:
        met = target_met(row)
        result = f"{row.ratio:.3f}x" if row.ratio is not None else ""
        if row.detail:
            result = f"{result} ({row.detail})" if result else row.detail
        table.append(
            (row.name, row.baseline, result, row.target or "-",
             {True: "yes", False: "NO", None: "-"}[met])
        )  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    if rst:
        rule = "  ".join("=" * w for w in widths)
        lines = [rule, _line(header, widths), rule]
        lines += [_line(line, widths) for line in table[1:]]
        return "\n".join([*lines, rule])
    lines = [_line(header, widths), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + [_line(line, widths) for line in table[1:]])


def machine_description(
    scale: float, load_before: tuple[float, ...], load_after: tuple[float, ...], seconds: float
) -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        cpu = platform.processor() or cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"Machine: {cpu}, {cores} cores; Python {platform.python_version()} "
        f"({platform.python_implementation()}); {platform.platform()}\n"
        f"Scale {scale:g} (1.0 = 1 GiB artifacts); took {seconds:.0f} s; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


if __name__ == "__main__":
    sys.exit(main())

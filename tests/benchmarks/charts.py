"""Charts of a benchmark run, drawn as SVG with matplotlib (the ``bench`` extra).

``python -m tests.benchmarks --charts DIR`` (and ``--rst``, into
``docs/_static/``) calls :func:`draw` with the rows of the run:

- ``benchmark-costs.svg``: each layer's own cost in microseconds per
  operation, against its target, for the rows whose target is in ``us/op``
  (reads, ``exists`` and listings served from the page cache), one panel per
  operation;
- ``benchmark-ratios.svg``: every row whose target is a ratio (``<= 1.05x``,
  ``>= 0.9x``), as a bar from parity (1.0x) on a logarithmic scale, against
  its target.

A bar is green when its row met its target and red when it did not; the
black tick is the target.  The output depends on the rows alone: Agg draws
it with matplotlib's default style, whatever the user's ``matplotlibrc``,
SVG ids come from a fixed salt and the file carries no date, so drawing the
same rows again writes the same bytes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from tests.benchmarks.common import Row, target_met, target_unit

COSTS_FILE = "benchmark-costs.svg"
RATIOS_FILE = "benchmark-ratios.svg"

_MET = "#4c9a5b"
_MISSED = "#c8553d"
_NO_VERDICT = "#9a9a9a"
_LABEL_WIDTH = 58  # characters of a bar's label per line


def draw(rows: list[Row], directory: Path) -> list[Path]:
    """Draw the charts of *rows* into *directory* (created if missing) and
    return the files written; a chart with no row to show is not drawn."""
    costs = [row for row in rows if target_unit(row) == "us/op" and row.cost_us is not None]
    ratios = [row for row in rows if target_unit(row) == "x" and row.ratio is not None]
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with _reproducible():
        if costs:
            written.append(_save(_costs_figure(costs), directory / COSTS_FILE))
        if ratios:
            written.append(_save(_ratios_figure(ratios), directory / RATIOS_FILE))
    return written


def _costs_figure(rows: list[Row]) -> Figure:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group or row.name, []).append(row)
    names = [[row.label or row.name for row in members] for members in groups.values()]
    # Panels that show the same layers share their names, on the left.
    shared = all(labels == names[0] for labels in names)
    height = 1.6 + 0.45 * max(len(labels) for labels in names)
    width = (3.0 if shared else 5.0) * len(groups) + (2.0 if shared else 0.0)
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(groups), squeeze=False, sharey=shared)[0]
    for index, (ax, (group, members)) in enumerate(zip(axes, groups.items(), strict=True)):
        targets = [_bound(row) for row in members]
        values = [row.cost_us or 0.0 for row in members]
        _bars(ax, names[index], values, targets, members, left=0.0, unit="us")
        if shared and index:
            ax.tick_params(labelleft=False)
        ax.set_title(group, fontsize=10)
        ax.set_xlim(min(0.0, *values) * 1.2, max(*values, *targets) * 1.35)
        ax.set_xlabel("own cost, us per operation")
        ax.axvline(0.0, color="black", linewidth=0.6)
    figure.suptitle("Each layer's own cost on page-cache operations, against its target")
    _legend(figure)
    return figure


def _ratios_figure(rows: list[Row]) -> Figure:
    figure = Figure(figsize=(10.0, 1.4 + 0.42 * len(rows)), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    labels = [_wrap(f"{row.name} vs {row.baseline}") for row in rows]
    values = [row.ratio or 1.0 for row in rows]
    targets = [_bound(row) for row in rows]
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    _bars(ax, labels, values, targets, rows, left=1.0, unit="x")
    ax.axvline(1.0, color="black", linewidth=0.6)
    low, high = min(*values, *targets), max(*values, *targets)
    ax.set_xlim(low / 1.6, high * 1.6)
    ax.set_xlabel("ratio to the baseline (log scale; a >= target: higher is better)")
    figure.suptitle("Every ratio against its target")
    _legend(figure)
    return figure


def _legend(figure: Figure) -> None:
    figure.legend(
        handles=[
            Patch(color=_MET, label="target met"),
            Patch(color=_MISSED, label="target missed"),
            Line2D([], [], color="black", linewidth=2, label="target"),
        ],
        loc="outside lower center", ncols=3, fontsize=8, frameon=False,
    )  # fmt: skip


def _bars(
    ax: Axes,
    labels: list[str],
    values: list[float],
    targets: list[float],
    rows: list[Row],
    *,
    left: float,
    unit: str,
) -> None:
    """One horizontal bar per row from *left* to its value, with its target as a tick."""
    places = range(len(rows))
    colours = [{True: _MET, False: _MISSED, None: _NO_VERDICT}[target_met(row)] for row in rows]
    widths = [value - left for value in values]
    ax.barh(places, widths, left=left, color=colours, height=0.6)
    for place, value, target in zip(places, values, targets, strict=True):
        ax.plot([target, target], [place - 0.4, place + 0.4], color="black", linewidth=2)
        text = f"{value:.2f}{unit}" if unit == "x" else f"{value:+.1f} {unit}"
        ax.annotate(
            text, (max(value, target, left), place), xytext=(4, 0),
            textcoords="offset points", va="center", fontsize=8,
        )  # fmt: skip
    ax.set_yticks(list(places), labels, fontsize=8)
    ax.invert_yaxis()  # the first row on top, as in the table
    ax.grid(axis="x", linewidth=0.3)


def _bound(row: Row) -> float:
    """The number in *row*'s target (``"<= 3 us/op"`` -> 3.0)."""
    return float(row.target.split()[1].removesuffix("x"))


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, _LABEL_WIDTH, break_on_hyphens=False))


def _save(figure: Figure, path: Path) -> Path:
    # No date and no creator (the matplotlib version): same rows, same file.
    figure.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    return path


@contextmanager
def _reproducible() -> Iterator[None]:
    """matplotlib's default style and a fixed salt for SVG ids, restored after."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(
            {"svg.hashsalt": "django-snapshots-benchmarks", "svg.fonttype": "none"}
        )
        yield

"""Per-operation overhead of Telemetry over a bare LocalFileSystemBackend,
and the cost of one span beside the cost of one JSON log line.

- Telemetry without an SDK (OpenTelemetry's global providers, no-ops until
  a project configures one) and Telemetry with the SDK (a tracer provider
  exporting every span to memory through ``SimpleSpanProcessor``, and a
  meter provider aggregating into an ``InMemoryMetricReader``), each against
  the bare backend, on the 4 KiB objects and batches of ``bench_wrappers``:
  write, read, exists and list.  Each round times one batch of each variant
  and of the bare backend in a shuffled order (``paired_ratios``); a figure
  is the median of the per-round ratios, and an A/A row gives the noise.
- One span with the SDK (started, given the attributes Telemetry records,
  ended and exported to memory, with the three metric recordings of an
  operation) against one JSON log line rendered by structlog and written to
  ``/dev/null`` (``null_json_logger``), which is what ``Logging`` costs per
  operation.

Run alone with ``python -m tests.benchmarks.bench_telemetry [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_snapshots.storage.local import LocalFileSystemBackend
from django_snapshots.storage.wrappers.telemetry import Telemetry
from tests.benchmarks.bench_wrappers import BATCH, LIST_CALLS, operations
from tests.benchmarks.common import Row, null_json_logger, paired_ratios

SPANS = 1000  # spans, and log lines, per timed batch


def _sdk() -> tuple[TracerProvider, MeterProvider, Callable[[], None]]:
    """SDK providers that keep everything in memory, and how to empty it."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    return tracer_provider, meter_provider, exporter.clear


def _per_operation(root: Path, scale: float) -> list[Row]:
    tracer_provider, meter_provider, clear = _sdk()
    bare = operations(LocalFileSystemBackend(root), scoped=False)
    sdk = operations(
        Telemetry(
            LocalFileSystemBackend(root),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        ),
        scoped=False,
    )
    batches = {
        "bare Local again (A/A)": operations(LocalFileSystemBackend(root), scoped=False),
        "Telemetry, no SDK": operations(Telemetry(LocalFileSystemBackend(root)), scoped=False),
        "Telemetry, SDK to memory": {
            op: (lambda run=run: (run(), clear())) for op, run in sdk.items()
        },
    }
    targets = {"Telemetry, no SDK": "<= 1.05x"}
    bare["write"]()  # every later read, exists and list finds the objects
    rows = []
    for op in ("write", "read", "exists", "list"):
        rounds = (61 if op == "write" else 31) if scale >= 0.5 else 9
        base, ratios = paired_ratios(
            bare[op], {name: batch[op] for name, batch in batches.items()}, rounds=rounds
        )
        bare_us = base / (LIST_CALLS if op == "list" else BATCH) * 1e6
        for name in batches:
            ratio = statistics.median(ratios[name])
            low, _, high = statistics.quantiles(ratios[name], n=4)
            rows.append(
                Row(
                    f"{name} {op} (4 KiB objects)",
                    f"bare Local {op}",
                    ratio,
                    targets.get(name, ""),
                    detail=f"{(ratio - 1) * bare_us:+.1f} us/op over {bare_us:.0f} us; "
                    f"middle half {low:.2f}-{high:.2f}x",
                )
            )
    return rows


def _span_against_log_line(scale: float) -> Row:
    tracer_provider, meter_provider, clear = _sdk()
    tracer = tracer_provider.get_tracer("bench")
    meter = meter_provider.get_meter("bench")
    operations_counter = meter.create_counter("snapshots.storage.operations")
    duration = meter.create_histogram("snapshots.storage.duration", "s")
    moved = meter.create_counter("snapshots.storage.bytes", "By")
    logger = null_json_logger()
    stack = "LocalFileSystemBackend('/srv/snapshots')"
    by_outcome = {"snapshots.storage.operation": "write", "snapshots.storage.outcome": "ok"}
    by_operation = {"snapshots.storage.operation": "write"}
    by_direction = {"snapshots.storage.operation": "write", "snapshots.storage.direction": "write"}

    def spans() -> None:
        for _ in range(SPANS):
            span = tracer.start_span(
                "snapshots.storage.write",
                attributes={
                    "snapshots.storage.operation": "write",
                    "snapshots.storage.stack": stack,
                    "snapshots.storage.key": "db/latest.dump",
                },
            )
            span.set_attribute("snapshots.storage.outcome", "ok")
            span.set_attributes({"snapshots.storage.bytes": 4096})
            span.end()
            operations_counter.add(1, by_outcome)
            duration.record(0.001, by_operation)
            moved.add(4096, by_direction)
        clear()

    def log_lines() -> None:
        for _ in range(SPANS):
            logger.info(
                "snapshots.storage.write", op="write", outcome="ok", duration_ms=1.0,
                storage=stack, path="db/latest.dump", bytes=4096,
            )  # fmt: skip

    base, ratios = paired_ratios(log_lines, {"span": spans}, rounds=21 if scale >= 0.5 else 7)
    ratio = statistics.median(ratios["span"])
    line_us = base / SPANS * 1e6
    return Row(
        "one span and its metrics, SDK to memory",
        "one JSON log line (structlog)",
        ratio,
        detail=f"{ratio * line_us:.1f} us per span against {line_us:.1f} us per line",
    )


def measure(*, scale: float = 1.0) -> list[Row]:
    """Measure Telemetry's overhead per operation, and a span against a log line."""
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as root:
        rows = _per_operation(Path(root), scale)
    rows.append(_span_against_log_line(scale))
    return rows


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))

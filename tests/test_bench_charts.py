"""Tests for the charts of the benchmark suite (tests/benchmarks/charts.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tests.benchmarks import charts
from tests.benchmarks.common import Row

SVG = "{http://www.w3.org/2000/svg}"

ROWS = [
    Row("Retry read (4 KiB objects)", "bare Local read", 1.05, "<= 1 us/op",
        cost_us=0.8, group="read", label="Retry"),
    Row("Prefix read (4 KiB objects)", "bare Local read", 1.2, "<= 1 us/op",
        cost_us=1.7, group="read", label="Prefix"),
    Row("Prefix list (4 KiB objects)", "bare Local list", 1.1, "<= 11 us/op",
        cost_us=9.5, group="list", label="Prefix"),
    Row("Retry write (4 KiB objects)", "bare Local write", 1.02, "<= 1.05x", cost_us=9.0),
    Row("stream_read 64 MiB on S3", "boto3 download_fileobj", 5.1, ">= 0.9x"),
    Row("peak RSS", "RSS before", None, "<= 64 MiB above", detail="+4 MiB", met=True),
    Row("Checksum read (4 KiB objects)", "bare Local read", 3.4, "", cost_us=47.0),
]  # fmt: skip


def texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return ["".join(element.itertext()) for element in root.iter() if element.tag == f"{SVG}text"]


def test_the_costs_chart_shows_each_row_with_a_target_in_us_per_group(tmp_path: Path) -> None:
    charts.draw(ROWS, tmp_path)
    shown = texts(tmp_path / charts.COSTS_FILE)
    for text in ("read", "list", "Retry", "Prefix", "+0.8 us", "+1.7 us", "+9.5 us"):
        assert text in shown
    assert "Checksum" not in " ".join(shown)  # no target in us: not a layer's cost to judge
    assert "+9.0 us" not in shown  # a write is held to a ratio


def test_the_ratios_chart_shows_each_row_with_a_ratio_target(tmp_path: Path) -> None:
    charts.draw(ROWS, tmp_path)
    shown = " ".join(texts(tmp_path / charts.RATIOS_FILE))
    assert "Retry write (4 KiB objects) vs bare Local write" in shown
    assert "1.02x" in shown
    assert "stream_read 64 MiB on S3 vs boto3" in shown
    assert "5.10x" in shown
    assert "peak RSS" not in shown
    assert "Prefix read" not in shown


def test_drawing_the_same_rows_again_writes_the_same_bytes(tmp_path: Path) -> None:
    first = charts.draw(ROWS, tmp_path / "first")
    second = charts.draw(ROWS, tmp_path / "second")
    assert [path.name for path in first] == [charts.COSTS_FILE, charts.RATIOS_FILE]
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes()
        assert b"<dc:date>" not in one.read_bytes()


def test_a_chart_with_no_row_to_show_is_not_drawn(tmp_path: Path) -> None:
    assert charts.draw(ROWS[3:4], tmp_path) == [tmp_path / charts.RATIOS_FILE]
    assert not (tmp_path / charts.COSTS_FILE).exists()
    assert charts.draw(ROWS[5:6], tmp_path / "none") == []

"""The transition report page (plain Python)."""

from __future__ import annotations

import importlib
import xml.etree.ElementTree as ET

import pytest

from core.matrix import TransitionRow

CLASSES = ["Water", "Low vegetation", "Building"]
ROWS = [
    TransitionRow(0, None, None, "No change", 9000, 0.9),
    TransitionRow(3, "Water", "Building", "Water -> Building", 300, 0.03),
    TransitionRow(6, "Low vegetation", "Building", "Low vegetation -> Building", 700, 0.07),
    TransitionRow(5, "Low vegetation", "Low vegetation", "Changed (Low vegetation, <unresolved>)", 0, 0.0),
]


@pytest.fixture
def report(plugin_package):
    return importlib.import_module("semantic_change.plugin.report")


def render(report, rows=ROWS):
    return report.render_report(title="Semantic change: a -> b", facts=[("Device", "cpu <fast>")], transitions=rows,
                                colors={3: "#112233", 6: "#445566", 5: "#778899"}, class_names=CLASSES,
                                csv_name="report.csv")


def test_report_chart_table_and_matrix(report):
    page = render(report)
    svg = page[page.index("<svg"):page.index("</svg>") + 6]
    ET.fromstring(svg)  # well-formed
    bars = [e.attrib["fill"] for e in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}rect")]
    assert bars[:2] == ["#445566", "#112233"]  # largest first, in the map's colours
    assert "cpu &lt;fast&gt;" in page and "&lt;unresolved&gt;" in page  # text is escaped
    assert "0.10 ha (10.00 % of the area" in page
    assert '<a href="report.csv">' in page and "only meaningful inside" in page
    # Matrix row "Low vegetation": 0 to Water, 0 to Low vegetation, 0.07 to Building.
    assert '<th class="name">Low vegetation</th><td></td><td></td><td>0.07</td><td>0.07</td>' in page


def test_report_without_change_and_long_tails(report, tmp_path):
    assert "No change was detected." in render(report, ROWS[:1])
    many = [ROWS[0]] + [TransitionRow(v, "Water", "Building", f"t{v}", v, v / 100) for v in range(1, 21)]
    page = render(report, many)
    assert "5 other transitions" in page
    path = report.write_report(tmp_path / "r.html", page)
    assert path.read_text(encoding="utf-8") == page and [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_areas_have_sensible_precision(report):
    assert [report.format_hectares(v) for v in (0, 0.0123456, 0.5, 3.14159, 56.78, 1234.5678)] == [
        "0", "0.012", "0.50", "3.14", "56.8", "1,235"]


def test_warnings_come_first(report):
    page = report.render_report(title="t", facts=[], transitions=ROWS, colors={}, class_names=CLASSES,
                                warnings=["The model m.pt is untrained <random>"])
    assert page.index("untrained &lt;random&gt;") < page.index("<table>")


def test_a_comparison_of_thousands_of_classes_gives_a_page_one_can_open(report):
    # 1,699 classes gave a matrix of 2.9 million cells (about 30 MB of HTML); the CSV holds them, the page says so
    names = [f"Class {i}" for i in range(1, 1700)]
    rows = [ROWS[0]] + [TransitionRow(1 + i * 1700, names[i], names[i + 1], f"{names[i]} -> {names[i + 1]}", 1,
                                      0.01) for i in range(1698)]
    page = report.render_report(title="t", facts=[], transitions=rows, colors={}, class_names=names,
                                csv_name="report.csv")
    assert "The matrix of 1,699 classes (2,886,601 cells) is too large for this page; it is in report.csv" in page
    assert "1,198 other transitions" in page  # the table shows the largest 500
    assert len(page) < 500_000

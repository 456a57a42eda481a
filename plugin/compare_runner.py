"""One comparison of two land-cover maps for ``scd:compareclassifications``, with its report and styles.

Imports :mod:`core.compare` (QGIS's own GDAL), never torch. Whatever this run wrote
is removed again when a later step fails or is cancelled, as in :mod:`.runner`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import QgsProcessingFeedback

from ..core.classtable import ClassInfo
from ..core.compare import CompareOptions, CompareSummary, compare_classifications
from ..core.product_table import COMPARE
from ..core.products import Legends, OutputPaths
from .change_algorithm import RunRequest
from .cleanup import removed_on_failure
from .destinations import csv_beside_report
from .feedback import FeedbackProgress
from .product_styles import styles_for
from .report import COMPARISON_NOTE, render_report, write_report
from .styling import Style

Palette = dict[int, tuple[str, tuple[int, int, int]]]


@dataclass
class Outcome:
    """What a comparison produced: files by product name, the styles to apply, and the summary."""

    summary: CompareSummary
    written: dict[str, str] = field(default_factory=dict)
    styles: dict[str, Style] = field(default_factory=dict)


def run(request: RunRequest, class_table: str | None, class_table_t2: str | None, mapping: str | None,
        palettes: list[Palette], feedback: QgsProcessingFeedback,
        bands: tuple[int | None, int | None] = (None, None)) -> Outcome:
    """Compare the two maps of ``request``, then write the report; clean up everything on failure.

    ``bands`` holds the band of each date's class codes, None where the user chose none.

    Raises:
        QgsProcessingException: with the core's message for anything the user can fix, including a cancel.
    """
    written: list[Path] = []
    with removed_on_failure(written):
        csv_path = csv_beside_report(request.report) if request.report else None
        outputs = OutputPaths(**request.rasters, transitions_csv=csv_path, polygons=request.polygons)
        options = CompareOptions(class_table=class_table, class_table_t2=class_table_t2, mapping=mapping,
                                 legend_t1=_legend(palettes[0]), legend_t2=_legend(palettes[1]),
                                 min_patch_pixels=request.min_area, overwrite=True)  # checked by check_destinations
        summary = compare_classifications(request.t1, request.t2, outputs, options, FeedbackProgress(feedback),
                                          band_t1=bands[0], band_t2=bands[1])
        written.extend(Path(p) for p in summary.outputs.values())
        outcome = Outcome(summary, written=dict(summary.outputs))
        legends = Legends(COMPARE, summary.classes, classes_inside_change_only=False, present_only=True)
        outcome.styles = styles_for(outcome.written, legends, summary.transitions)
        if request.report and csv_path:
            present = {row.value for row in summary.transitions}
            page = render_report(
                title=f"Land-cover change: {request.t1_name} -> {request.t2_name}",
                facts=_facts(request, summary),
                transitions=summary.transitions,
                colors={e.value: e.hex_color for e in legends.entries("fromto", present)},
                class_names=[c.name for c in summary.classes],
                csv_name=Path(csv_path).name,
                note=COMPARISON_NOTE,
                persistence_ha=summary.persistence_ha,
            )
            write_report(request.report, page)
            written.append(Path(request.report))
            outcome.written["report"] = request.report
    feedback.setProgress(100.0)
    return outcome


def _legend(palette: Palette) -> dict[int, ClassInfo]:
    return {code: ClassInfo(label or None, color) for code, (label, color) in palette.items()}


def _facts(request: RunRequest, summary: CompareSummary) -> list[tuple[str, str]]:
    return [
        ("Earlier map (T1)", f"{request.t1_name} ({request.t1}), band {summary.bands[0]}"),
        ("Later map (T2)", f"{request.t2_name} ({request.t2}), band {summary.bands[1]}"),
        ("Classes compared", ", ".join(f"{code} {c.name}" for code, c in zip(summary.codes, summary.classes,
                                                                            strict=True))),
        ("Comparison area", f"{summary.width} x {summary.height} pixels"),
        ("Time", f"{summary.elapsed_seconds:.1f} s"),
        ("Date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
    ]

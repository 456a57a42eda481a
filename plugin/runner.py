"""One run of the engine for an algorithm, with polygons and the report.

This is the only plugin module that imports the engine (and so torch); the
algorithms import it inside ``processAlgorithm`` once they know torch is there.
Every :class:`~core.errors.ChangeDetectionError` reaches the user as a
``QgsProcessingException`` with the engine's message, and whatever this run wrote
is removed again when a later step fails or is cancelled.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from ..core import engine
from ..core.errors import ChangeDetectionError
from ..core.files import sidecars
from ..core.io import terminate_cleanly
from ..core.models.card import ModelCard
from ..core.models.checkpoint import read_card
from ..core.products import Legends
from .change_algorithm import RunRequest
from .destinations import csv_beside_report
from .feedback import FeedbackProgress
from .product_styles import present_codes, styles_for
from .report import render_report, write_report
from .styling import Style


@dataclass
class Outcome:
    """What a run produced: files by product name, the styles to apply, and the engine's summary."""

    card: ModelCard
    summary: engine.RunSummary
    written: dict[str, str] = field(default_factory=dict)
    styles: dict[str, Style] = field(default_factory=dict)


def run(request: RunRequest, feedback: QgsProcessingFeedback) -> Outcome:
    """Run the engine for ``request``, then polygons and report; clean up everything on failure.

    Raises:
        QgsProcessingException: with the engine's message for anything the user can fix,
            including a cancel.
    """
    written: list[Path] = []
    with terminate_cleanly(lambda: _remove(written)):  # qgis_process runs algorithms in its main thread
        try:
            card = _checked_card(request)
            outcome = _run(request, card, feedback, written)
        except ChangeDetectionError as error:
            _remove(written)
            raise QgsProcessingException(str(error)) from error
        except BaseException:
            _remove(written)
            raise
    return outcome


def _checked_card(request: RunRequest) -> ModelCard:
    from ..core.models.registry import describe_task, title

    card = read_card(request.model)
    if request.task == "semantic" and card.task != "semantic":
        raise QgsProcessingException(
            f"{Path(request.model).name} holds a binary change model ({title(card.model)}): it finds where change "
            "happened but not what became what, so it cannot make a from-to map. Run 'Binary change' "
            f"(scd:binarychange) with this file, or choose {describe_task('semantic')} file here.")
    return card


def _run(request: RunRequest, card: ModelCard, feedback: QgsProcessingFeedback, written: list[Path]) -> Outcome:
    tile = request.tile_size or card.tile_size
    overlap = round(tile * request.overlap_percent / 100.0)
    options = engine.RunOptions(bands_t1=request.bands_t1, bands_t2=request.bands_t2, tile_size=tile,
                                overlap=overlap, batch_size=request.batch_size, device=request.device,
                                min_patch_pixels=request.min_area, overwrite=True)  # checked by check_destinations
    csv_path = csv_beside_report(request.report) if request.report else None
    outputs = engine.OutputPaths(**request.rasters, transitions_csv=csv_path, polygons=request.polygons)
    feedback.pushInfo(f"model: {Path(request.model).name} ({card.model}, {card.task} change, trained on "
                      f"{card.dataset}); tile {tile} px, overlap {overlap} px ({request.overlap_percent:g} %)"
                      + (f"; minimum change patch {request.min_area} px" if request.min_area > 1 else ""))

    summary = engine.run_change_detection(request.t1, request.t2, request.model, outputs, options,
                                          FeedbackProgress(feedback))
    written.extend(Path(p) for p in summary.outputs.values())
    outcome = Outcome(card, summary, written={name: str(path) for name, path in summary.outputs.items()})
    legends = Legends(card.task, tuple(card.classes), card.change_color)
    outcome.styles = styles_for(outcome.written, legends, summary.transitions)

    if request.report and csv_path:
        page = render_report(
            title=f"Semantic change: {request.t1_name} -> {request.t2_name}",
            facts=_facts(request, card, summary),
            transitions=summary.transitions,
            colors={e.value: e.hex_color for e in legends.entries("fromto", present_codes(summary.transitions))},
            class_names=card.class_names,
            csv_name=Path(csv_path).name,
        )
        write_report(request.report, page)
        written.append(Path(request.report))
        outcome.written["report"] = request.report

    feedback.setProgress(100.0)
    feedback.pushInfo(
        f"summary: device {summary.device}; estimated memory {engine.describe_memory(summary.memory_estimate_bytes)}; "
        f"{summary.tiles_total} tiles ({summary.tiles_run} run, {summary.tiles_skipped} without data); "
        f"{summary.changed_pixels} changed pixels ({summary.changed_area_m2 / 10_000:.4f} ha); "
        f"{summary.elapsed_seconds:.1f} s")
    return outcome


def _facts(request: RunRequest, card: ModelCard, summary: engine.RunSummary) -> list[tuple[str, str]]:
    return [
        ("Earlier image (T1)", f"{request.t1_name} ({request.t1})"),
        ("Later image (T2)", f"{request.t2_name} ({request.t2})"),
        ("Model", f"{Path(request.model).name}: {card.model}, trained on {card.dataset}"),
        ("Processing area", f"{summary.width} x {summary.height} pixels"),
        ("Tiles", f"{summary.tiles_total} of {summary.tile_size} px, overlap {summary.overlap} px"),
        ("Device", f"{summary.device} ({summary.device_reason})"),
        ("Time", f"{summary.elapsed_seconds:.1f} s"),
        ("Date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
    ]


#: Files a Shapefile consists of besides the ``.shp``.
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg")


def _remove(paths: list[Path]) -> None:
    """Delete outputs of a run that failed later on, with their legend sidecars (or Shapefile parts)."""
    for path in paths:
        parts = [path.with_suffix(s) for s in SHAPEFILE_PARTS] if path.suffix.lower() == ".shp" else []
        for file in (path, *sidecars(path), *parts):
            file.unlink(missing_ok=True)

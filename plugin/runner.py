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
from ..core.files import Publication
from ..core.models.card import ModelCard
from ..core.models.checkpoint import read_card
from ..core.products import Legends
from ..core.tiling import default_tile_size
from .bands import contradictions, expected_bands, read_bands, trained_bands
from .change_algorithm import RunRequest
from .cleanup import publish, removed_on_failure
from .destinations import csv_beside_report
from .feedback import FeedbackProgress
from .product_styles import present_codes, styles_for
from .report import format_hectares, raster_grid, render_report, stage_report
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
    publication = Publication()
    with removed_on_failure(publication):
        card = _checked_card(request)
        outcome = _run(request, card, feedback, publication)
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


def _run(request: RunRequest, card: ModelCard, feedback: QgsProcessingFeedback, publication: Publication) -> Outcome:
    tile = request.tile_size or default_tile_size(card.tile_size)
    overlap = round(tile * request.overlap_percent / 100.0)
    options = engine.RunOptions(bands_t1=request.bands_t1, bands_t2=request.bands_t2, tile_size=tile,
                                overlap=overlap, batch_size=request.batch_size, device=request.device,
                                min_patch_pixels=request.min_area, extent=request.extent, mask=request.mask,
                                backend=request.backend, int8=None if request.int8 else False,
                                overwrite=True)  # checked by check_destinations
    csv_path = csv_beside_report(request.report) if request.report else None
    outputs = engine.OutputPaths(**request.rasters, transitions_csv=csv_path, polygons=request.polygons)
    feedback.pushInfo(f"model: {Path(request.model).name} ({card.model}, {card.task} change, {_trained(card)}); "
                      f"tile {tile} px, overlap {overlap} px ({request.overlap_percent:g} %)"
                      + (f"; minimum change patch {request.min_area} px" if request.min_area > 1 else ""))
    warnings = _model_warnings(request, card)
    bands_used = {}
    for label, path, bands in (("T1", request.t1, request.bands_t1 or card.bands_t1),
                               ("T2", request.t2, request.bands_t2 or card.bands_t2)):
        infos = read_bands(path, bands)
        bands_used[label] = ", ".join(map(str, infos))
        feedback.pushInfo(f"{label} bands used, in the model's order: {bands_used[label]}")
        expected = expected_bands(len(bands), trained_bands(card.training, label.lower()))
        order = ", ".join(meaning or "any" for meaning in expected or ())
        warnings += [f"{label}: {problem}; choose the bands in the model's order ({order}) under "
                     f"'Bands of {label}'" for problem in contradictions(infos, expected)]
    for warning in warnings:
        _warn(feedback, warning)

    engine_progress = FeedbackProgress(feedback)
    engine_progress.set_progress(0.0)  # a determinate bar from the start, not QGIS's "busy" one
    summary = engine.run_change_detection(request.t1, request.t2, request.model, outputs, options, engine_progress,
                                          publication=publication)
    outcome = Outcome(card, summary, written={name: str(path) for name, path in summary.outputs.items()})
    legends = Legends(card.task, tuple(card.classes), card.change_color)
    outcome.styles = styles_for(outcome.written, legends, summary.transitions)

    unresolved = [row for row in summary.transitions
                  if row.pixels and row.value and row.from_class == row.to_class]
    if unresolved:
        feedback.pushInfo(
            f"{sum(r.pixels for r in unresolved)} changed pixels are labelled 'Changed (class, class "
            "unresolved)': the network found change there but gave the same class at both dates, so what the "
            "area became is not known")

    if request.report and csv_path:
        page = render_report(
            title=f"Semantic change: {request.t1_name} -> {request.t2_name}",
            facts=_facts(request, card, summary, bands_used, publication),
            warnings=warnings,
            transitions=summary.transitions,
            colors={e.value: e.hex_color for e in legends.entries("fromto", present_codes(summary.transitions))},
            class_names=card.class_names,
            csv_name=Path(csv_path).name,
        )
        stage_report(publication, request.report, page)
        outcome.written["report"] = request.report
    publish(publication, feedback)  # every file of the run at once, the report included

    feedback.setProgress(100.0)
    feedback.pushInfo(
        f"summary: device {summary.device}; estimated memory {engine.describe_memory(summary.memory_estimate_bytes)}; "
        f"{summary.tiles_total} tiles ({summary.tiles_run} run, {summary.tiles_skipped} without data); "
        f"{summary.changed_pixels} changed pixels ({format_hectares(summary.changed_area_m2 / 10_000)} ha); "
        f"{summary.elapsed_seconds:.1f} s")
    return outcome


def _trained(card: ModelCard) -> str:
    return "UNTRAINED (random weights)" if card.dataset == UNTRAINED else f"trained on {card.dataset}"


#: What ``init`` writes as the dataset of a model that has never been trained.
UNTRAINED = "untrained"


def _model_warnings(request: RunRequest, card: ModelCard) -> list[str]:
    if card.dataset != UNTRAINED:
        return []
    return [f"The model {Path(request.model).name} is untrained: it was written by the training tool's 'init' and "
            "its weights are random, so its maps show noise, not real change. Use it only to try the workflow; "
            "train it (or get a trained model file) before reading anything into the results."]


def _warn(feedback: QgsProcessingFeedback, message: str) -> None:
    if hasattr(feedback, "pushWarning"):
        feedback.pushWarning(message)
    else:  # QGIS before 3.16.2
        feedback.pushInfo(f"WARNING: {message}")


def _facts(request: RunRequest, card: ModelCard, summary: engine.RunSummary,
           bands_used: dict[str, str], publication: Publication) -> list[tuple[str, str]]:
    crs, pixel = raster_grid(publication.where(summary.outputs.get("fromto") or summary.outputs["change_mask"]))
    return [
        ("Earlier image (T1)", f"{request.t1_name} ({request.t1})"),
        ("Later image (T2)", f"{request.t2_name} ({request.t2})"),
        ("Bands used", f"T1: {bands_used['T1']}; T2: {bands_used['T2']}"),
        ("Model", f"{Path(request.model).name}: {card.model}, {_trained(card)}"),
        ("Coordinate reference system", crs),
        ("Pixel size", pixel),
        ("Processing area", f"{summary.width} x {summary.height} pixels"
                            + (f" ({request.area_note})" if request.area_note else "")),
        ("Tiles", f"{summary.tiles_total} of {summary.tile_size} px, overlap {summary.overlap} px"),
        ("Device", f"{summary.device} ({summary.device_reason})"),
        ("Inference backend", summary.backend),
        *([("int8", summary.int8_check)] if summary.int8_check else []),
        ("Time", f"{summary.elapsed_seconds:.1f} s"),
        ("Date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
    ]

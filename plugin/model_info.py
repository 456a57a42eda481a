"""``scd:modelinfo``: what a model file contains, to check it before a long run."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
)
from qgis.PyQt.QtGui import QIcon

from ..core.tiling import default_tile_size
from .change_algorithm import MODEL_FILTER, REPORT_WRITTEN, help_text, hide_html_from_batch, report_written
from .dependencies import diagnostics, require_engine
from .report import write_report
from .resources import HOMEPAGE, plugin_icon

USES = {
    "semantic": "Semantic change (from-to) for from-to maps, or Binary change for a change mask",
    "binary": "Binary change only (a binary model cannot tell what became what)",
}


class ModelInfoAlgorithm(QgsProcessingAlgorithm):
    """Reads a checkpoint's model card (without building the network) and shows it."""

    MODEL = "MODEL"
    OUTPUT_HTML = "OUTPUT_HTML"
    TASK = "TASK"
    NETWORK = "NETWORK"
    CLASSES = "CLASSES"
    NUM_CLASSES = "NUM_CLASSES"
    TILE_SIZE = "TILE_SIZE"
    BANDS_T1 = "BANDS_T1"
    BANDS_T2 = "BANDS_T2"
    DATASET = "DATASET"
    METRICS = "METRICS"

    def createInstance(self) -> QgsProcessingAlgorithm:
        return type(self)()

    def name(self) -> str:
        return "modelinfo"

    def displayName(self) -> str:
        return "Model information"

    def shortDescription(self) -> str:
        return "What a model file contains: task, classes and colours, tile size, bands, training data, metrics."

    def tags(self) -> list[str]:
        return ["model", "checkpoint", "classes", "information"]

    def icon(self) -> QIcon:
        return plugin_icon()

    def helpUrl(self) -> str:
        return HOMEPAGE

    def hasHtmlOutputs(self) -> bool:
        """Only after a run that wrote the report (see :func:`.change_algorithm.report_written`)."""
        return report_written(self.id())

    def shortHelpString(self) -> str:
        return help_text(
            "Shows what a model file contains, to check it before a long run: the network and its <b>task</b> "
            "(semantic: from-to maps; binary: a change mask), the <b>classes and colours</b> of the legend, the "
            "<b>tile size</b>, the <b>bands</b> it reads, the <b>training data</b> (or that it is untrained) and "
            "its <b>metrics</b>, and which algorithm to run it with.",
            "The file is only read, never run: files holding program code are refused. The values are also "
            "outputs, so a graphical model can use them.",
        )

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        model = QgsProcessingParameterFile(
            self.MODEL, "Model file (checkpoint)", behavior=QgsProcessingParameterFile.File, fileFilter=MODEL_FILTER)
        report = QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, "Model report", "HTML files (*.html)", optional=True, createByDefault=True)
        if hasattr(model, "setHelp"):  # QGIS 3.16 and later
            model.setHelp("A model file (.pt) made with this plugin's training tool.")
            report.setHelp("The same as an HTML page.")
        self.addParameter(model)
        self.addParameter(report)
        for name, description in ((self.TASK, "Task"), (self.NETWORK, "Network"), (self.CLASSES, "Classes"),
                                  (self.BANDS_T1, "Bands of T1"), (self.BANDS_T2, "Bands of T2"),
                                  (self.DATASET, "Training data"), (self.METRICS, "Metrics (JSON)")):
            self.addOutput(QgsProcessingOutputString(name, description))
        self.addOutput(QgsProcessingOutputNumber(self.NUM_CLASSES, "Number of classes"))
        self.addOutput(QgsProcessingOutputNumber(self.TILE_SIZE, "Tile size"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        feedback.pushInfo(diagnostics())
        require_engine()
        from ..core.errors import ChangeDetectionError
        from ..core.models.checkpoint import read_card

        REPORT_WRITTEN[self.id()] = False
        path = self.parameterAsFile(parameters, self.MODEL, context)
        try:
            card = read_card(path)
        except ChangeDetectionError as error:
            raise QgsProcessingException(str(error)) from error

        rows = describe_card(card)
        for label, value in rows:
            feedback.pushInfo(f"{label}: {value}")
        classes = ", ".join(card.class_names)
        results: dict[str, Any] = {
            self.TASK: card.task, self.NETWORK: card.model, self.CLASSES: classes, self.NUM_CLASSES: card.num_classes,
            self.TILE_SIZE: card.tile_size, self.BANDS_T1: _numbers(card.bands_t1),
            self.BANDS_T2: _numbers(card.bands_t2), self.DATASET: card.dataset,
            self.METRICS: json.dumps(card.metrics, sort_keys=True),
        }
        report = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        if report:
            write_report(report, card_page(Path(path).name, card, rows))
            results[self.OUTPUT_HTML] = report
            REPORT_WRITTEN[self.id()] = True
            hide_html_from_batch(self, results, feedback)
        return results


def describe_card(card: Any) -> list[tuple[str, str]]:
    """(label, value) rows that explain a model card to an analyst."""
    classes = "; ".join(f"{e.value} {e.label} ({e.hex_color})" for e in _class_entries(card)) \
        or "none (binary model: change / no change)"
    options = ", ".join(f"{k}={v}" for k, v in card.options.items() if k != "pretrained")
    units = card.scaling.units
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(card.metrics.items())) or "none recorded"
    resize = card.training_resize
    resized = [] if resize is None else [(
        "Resized training imagery",
        f"{resize.describe()}: objects were that much larger in pixels than in the source imagery, and the tile "
        "size counts resized pixels; a scene at the source's resolution matches what the network learned once it "
        "is resampled by the same factor (its pixel size divided by it)")]
    return [
        ("Network", f"{card.model} ({options})"),
        ("Task", f"{card.task} change"),
        ("Use with", USES.get(card.task, card.task)),
        ("Classes", classes),
        ("Tile size", f"{card.tile_size} px, the size it was trained with; runs use "
                      f"{default_tile_size(card.tile_size)} px when Tile size is left at 0"),
        *resized,
        ("Bands of T1", _numbers(card.bands_t1)),
        ("Bands of T2", _numbers(card.bands_t2)),
        ("Normalisation T1", f"mean {_numbers(card.mean_t1)}, std {_numbers(card.std_t1)} ({units})"),
        ("Normalisation T2", f"mean {_numbers(card.mean_t2)}, std {_numbers(card.std_t2)} ({units})"),
        ("Input scaling", card.scaling.describe()),
        ("Training data", card.dataset if card.dataset != "untrained" else
         "none: UNTRAINED (written by the training tool's 'init', random weights); its maps are noise until it is "
         "trained"),
        ("Validation metrics", metrics),
        ("Written", f"{card.created or 'unknown date'} by version {card.software_version or 'unknown'} "
                    f"(checkpoint format {card.format_version})"),
    ]


def card_page(file_name: str, card: Any, rows: list[tuple[str, str]]) -> str:
    """An HTML page of the card: the rows, then the classes with their colour swatches."""
    e = html.escape
    table = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    swatches = "\n".join(
        f'<tr><td>{entry.value}</td><td><span style="display:inline-block;width:1em;height:1em;'
        f'border:1px solid #888;background:{entry.hex_color}"></span> {e(entry.label)}</td></tr>'
        for entry in _class_entries(card))
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(file_name)}</title></head>'
            f'<body style="font-family:sans-serif"><h1>Model file {e(file_name)}</h1>'
            f'<table border="1" cellpadding="4" style="border-collapse:collapse">{table}</table>'
            + (f"<h2>Classes</h2><table>{swatches}</table>" if swatches else "") + "</body></html>\n")


def _class_entries(card: Any) -> list[Any]:
    """The classes as the legend of a class map shows them (value, label, colour), without "No change"."""
    from ..core.legend import class_legend

    return [entry for entry in class_legend(card.classes) if entry.value != 0]


def _numbers(values: Any) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

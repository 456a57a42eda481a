"""What the two change algorithms share: inputs, options, the run and styling of the outputs.

The flow of one run:

1. ``prepareAlgorithm`` (main thread) decides how each input layer will be read
   (:mod:`.inputs`);
2. ``processAlgorithm`` (worker thread) logs the diagnostics line, stops with
   install instructions when torch is missing, turns the parameters into a plain
   :class:`RunRequest`, and hands it to :mod:`.runner`, the only module that imports
   the engine (and so torch);
3. it then attaches a :class:`~.styling.LayerStyler` to every output QGIS will load,
   so styling happens in the main thread (:mod:`.styling`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)
from qgis.PyQt.QtGui import QIcon

from ..core.area import check_extent, check_mask, mask_bounds
from ..core.errors import ChangeDetectionError
from ..core.product_table import BY_NAME, Product
from .dependencies import diagnostics, require_engine
from .destinations import check_destinations
from .inputs import IMAGERY, LayerSource, default_inputs, describe_layer, refuse_same_input
from .resources import HOMEPAGE, plugin_icon
from .styling import LayerStyler, RunGroup, Style, legend_once

DEVICES = ("auto", "cpu", "cuda")
#: Where the network runs (core.backends.BACKEND_CHOICES; not imported here, that would import torch).
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
MODEL_FILTER = "Model files (*.pt *.pth *.ckpt);;All files (*.*)"
RASTER_SUFFIXES = (".tif", ".tiff")


class RunCancelled(QgsProcessingException):
    """The user cancelled: the run stops, removes what it wrote and returns no outputs, without an error."""


@dataclass
class RunRequest:
    """A run as plain data: what :mod:`.runner` needs, with nothing QGIS-specific in it.

    ``rasters`` maps engine output names (``fromto``, ``t1_classes``, ``t2_classes``,
    ``change_prob``, ``change_mask``) to files.
    """

    task: str
    t1: str
    t2: str
    t1_name: str
    t2_name: str
    model: str
    bands_t1: list[int] | None
    bands_t2: list[int] | None
    tile_size: int
    overlap_percent: float
    batch_size: int
    device: str
    min_area: int
    rasters: dict[str, str]
    polygons: str | None = None
    report: str | None = None
    backend: str = "auto"
    int8: bool = True  # allowed where it pays (the engine's int8=None); False: never
    extent: tuple[float, float, float, float] | None = None  # in T1's CRS
    mask: list[dict[str, Any]] | None = None  # GeoJSON-like polygons in T1's CRS
    area_note: str = ""  # the extent and mask as the log and report state them


#: Minimum change patch by default: a 3 x 3 block. Smaller patches are mostly speckle (single
#: pixels at class edges), which made hundreds of one-pixel polygons.
DEFAULT_MIN_PATCH = 9


def help_text(*paragraphs: str) -> str:
    """Help for the panel beside the dialog: QGIS 3.22 shows each line as a paragraph, so one line each."""
    return "\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


#: The shared part of both change algorithms' help; the details are in each parameter's help.
COMMON_HELP = (
    "<b>Inputs:</b> two images of the same area, T1 earlier and T2 later (T2 is warped onto T1's grid; the "
    "results cover the area both cover), and a model file. <i>Model information</i> shows what a model expects.",
    "<b>Options:</b> bands, tile size, overlap, batch size and device have defaults that suit most runs; hover "
    "over a parameter for its help. Small change patches are removed (default: fewer than "
    f"{DEFAULT_MIN_PATCH} pixels, a 3 x 3 block).",
    "The log lists the versions and the device found, the bands used, and warns about untrained models and "
    "bands that do not match the model.",
)

#: Per-parameter help (shown as the parameter's tooltip).
PARAMETER_HELP = {
    "INPUT_T1": "The earlier image. Its grid (CRS, pixel size, extent) is the grid of every output.",
    "INPUT_T2": "The later image of the same area; any CRS, resolution or extent: it is warped onto T1's grid.",
    "MODEL": "A model file (.pt) made with this plugin's training tool. 'Model information' shows its contents.",
    "BANDS_T1": "Bands of T1 in the order the model expects, as many as it takes (three, red, green, blue, for "
                "the published datasets' models; four or more for a model trained on your own bands, e.g. red, "
                "green, blue, near infrared). Empty: the bands the model file names ('Model information' lists "
                "them). Another number of bands than the model's is refused.",
    "BANDS_T2": "Bands of T2 in the order the model expects, as many as for T1. Empty: the bands the model file "
                "names.",
    "TILE_SIZE": "Side of the squares the scene is cut into. 0 (recommended): the size the model was trained with, "
                 "or 256 px if it was trained on smaller crops (more context per tile, fewer tiles: better and "
                 "faster, as measured).",
    "OVERLAP": "How much neighbouring tiles overlap, in % of the tile; overlaps are blended so no seams show.",
    "BATCH_SIZE": "Tiles per step: larger is faster on a GPU but needs more memory. Cancel stops within a batch.",
    "DEVICE": "auto: an NVIDIA GPU when one is usable, else the CPU. The log says which was used and why.",
    "BACKEND": "auto: on a CPU, the fastest of PyTorch and the installed ONNX Runtime or OpenVINO, measured once "
               "on this computer for each model, on the first tiles of a large run (the model is converted once "
               "and kept in your cache folder). The log says which was used, why, and what to install for speed.",
    "INT8": "Compute with 8-bit integers on the CPU where that is faster: on CPUs with AVX-512 VNNI, AVX-VNNI "
            "or AMX, for runs of 24 batches or more, with ONNX Runtime installed and backend auto or a runtime "
            "(the network then runs about 2 x faster). The model is calibrated on tiles of the scene, then "
            "checked on other tiles: int8 is used only where it keeps at least 99.5 % of the full-precision "
            "labels (0.2-0.3 % differed on the models measured). The log says whether int8 was used and why. "
            "Untick for full precision everywhere.",
    "MIN_AREA": f"Change patches smaller than this many pixels become 'no change' in every output (default "
                f"{DEFAULT_MIN_PATCH}, a 3 x 3 block, removes speckle); 0 keeps every changed pixel.",
    "EXTENT": "Run on this part of the scene only (in any CRS; it is transformed to T1's). Empty: all of the area "
              "both images cover.",
    "MASK": "Polygons: pixels outside them are nodata in every output, and the run covers their extent only.",
    "OUTPUT_CHANGE_PROB": "How sure the model is that each pixel changed, 0 to 1.",
    "OUTPUT_POLYGONS": "One polygon per connected patch of one change, with from, to, label and area in m².",
}


#: Algorithm id -> whether its latest run wrote an HTML report; see :meth:`ChangeAlgorithm.hasHtmlOutputs`.
REPORT_WRITTEN: dict[str, bool] = {}


def report_written(algorithm_id: str) -> bool:
    """Whether the latest run of ``algorithm_id`` wrote an HTML report.

    QGIS's dialog says "HTML output has been generated by this algorithm" after
    every run, failed or not, of an algorithm that declares an HTML output. The
    dialog asks ``hasHtmlOutputs()`` of its own algorithm object, not of the copy
    that ran, so the run records its outcome here under the algorithm's id.
    """
    return REPORT_WRITTEN.get(algorithm_id, False)


def hide_html_from_batch(algorithm: QgsProcessingAlgorithm, results: dict[str, Any],
                         feedback: QgsProcessingFeedback) -> None:
    """Leave HTML outputs out of a batch row's results (the file is written all the same).

    QGIS 3.22's batch dialog hands every HTML result to the results viewer with a
    call that lacks an argument, and the batch ends in a Python error. Batch rows
    run with the dialog's ``BatchFeedback``; for them the report's path is logged
    instead.
    """
    if type(feedback).__name__ != "BatchFeedback":
        return
    for output in algorithm.outputDefinitions():
        if output.type() == "outputHtml" and results.get(output.name()):
            feedback.pushInfo(f"{output.description()}: {results.pop(output.name())}")


class ChangeAlgorithm(QgsProcessingAlgorithm):
    """Base of ``scd:semanticchange`` and ``scd:binarychange``; subclasses declare their outputs."""

    INPUT_T1 = "INPUT_T1"
    INPUT_T2 = "INPUT_T2"
    MODEL = "MODEL"
    BANDS_T1 = "BANDS_T1"
    BANDS_T2 = "BANDS_T2"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    BACKEND = "BACKEND"
    INT8 = "INT8"
    MIN_AREA = "MIN_AREA"
    EXTENT = "EXTENT"
    MASK = "MASK"
    OUTPUT_CHANGE_PROB = BY_NAME["change_prob"].parameter
    OUTPUT_POLYGONS = BY_NAME["polygons"].parameter
    CHANGED_PIXELS = "CHANGED_PIXELS"
    CHANGED_AREA_M2 = "CHANGED_AREA_M2"
    DEVICE_USED = "DEVICE_USED"

    #: "semantic" or "binary": the outputs the subclass asks of the engine.
    task = ""

    #: The products the algorithm offers (names in :data:`core.product_table.PRODUCTS`), set by subclasses.
    offered: ClassVar[tuple[str, ...]] = ()

    @property
    def products(self) -> dict[str, str]:
        """Engine product -> algorithm output parameter, from the products table."""
        return {name: BY_NAME[name].parameter for name in self.offered}

    #: Help of the subclass's own parameters, by name, added to :data:`PARAMETER_HELP`.
    parameter_help: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[LayerSource] = []
        self.refusal: QgsProcessingException | None = None
        self.t1_crs = QgsCoordinateReferenceSystem()
        self.t1_bounds: tuple[float, float, float, float] | None = None

    def createInstance(self) -> QgsProcessingAlgorithm:
        return type(self)()

    def icon(self) -> QIcon:
        return plugin_icon()

    def helpUrl(self) -> str:
        return HOMEPAGE

    def hasHtmlOutputs(self) -> bool:
        return report_written(self.id())

    # -- parameters -------------------------------------------------------------------------------

    def add_inputs(self) -> None:
        """The inputs and options both change algorithms take."""
        default_t1, default_t2 = default_inputs(IMAGERY)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_T1, "Earlier image (T1)", default_t1))
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_T2, "Later image (T2)", default_t2))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model file (checkpoint)", behavior=QgsProcessingParameterFile.File, fileFilter=MODEL_FILTER))
        advanced = [
            QgsProcessingParameterBand(self.BANDS_T1, "Bands of T1, in the model's order (empty: from the model "
                                       "file)", None, self.INPUT_T1, optional=True, allowMultiple=True),
            QgsProcessingParameterBand(self.BANDS_T2, "Bands of T2, in the model's order (empty: from the model "
                                       "file)", None, self.INPUT_T2, optional=True, allowMultiple=True),
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size in pixels (0: the model's, at least 256)",
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=4096),
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (% of the tile)",
                                         QgsProcessingParameterNumber.Integer, 25, minValue=0, maxValue=75),
            QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (tiles per step)",
                                         QgsProcessingParameterNumber.Integer, 4, minValue=1, maxValue=256),
            QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue=0),
            QgsProcessingParameterEnum(self.BACKEND, "Inference backend (CPU runtimes are optional installs)",
                                       options=list(BACKENDS), defaultValue=0),
            QgsProcessingParameterBoolean(self.INT8, "int8 where it pays (CPU, checked per scene)",
                                          defaultValue=True),
        ]
        # Not flagged advanced: QGIS 3.22's batch interface hides advanced parameters' columns
        # behind a button, and batch runs are where analysts set them per row.
        for parameter in advanced:
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, "Minimum change patch in pixels (smaller patches are removed)",
            QgsProcessingParameterNumber.Integer, DEFAULT_MIN_PATCH, optional=True, minValue=0))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Processing extent (empty: the whole overlap)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.MASK, "Mask layer (only inside its polygons)", [QgsProcessing.TypeVectorPolygon], optional=True))

    def add_product(self, name: str, *, optional: bool = True) -> None:
        """The output parameter of one product, named and typed as the products table says."""
        add_product_parameter(self, BY_NAME[name], self.task, optional=optional)

    def add_common_outputs(self) -> None:
        self.add_product("change_prob")
        self.add_product("polygons")
        self.add_counters()
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, "Device used"))

    def add_counters(self) -> None:
        """The numbers every change algorithm returns, for models and scripts."""
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_PIXELS, "Changed pixels"))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_AREA_M2, "Changed area (m²)"))

    def addParameter(self, definition: QgsProcessingParameterDefinition, createOutput: bool = True) -> bool:
        """Every parameter gets its help from :data:`PARAMETER_HELP` (or the subclass's ``parameter_help``)."""
        text = {**PARAMETER_HELP, **self.parameter_help}.get(definition.name())
        if text and hasattr(definition, "setHelp"):  # QGIS 3.16 and later
            definition.setHelp(text)
        return super().addParameter(definition, createOutput)

    # -- running ----------------------------------------------------------------------------------

    def prepareAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> bool:
        # Main thread: layers may be inspected and their providers cloned here, not in processAlgorithm.
        # A refusal is kept and raised by processAlgorithm: QGIS replaces the message of one raised here
        # by "There were errors executing the algorithm" in scripts and qgis_process.
        try:
            t1 = self.parameterAsRasterLayer(parameters, self.INPUT_T1, context)
            t2 = self.parameterAsRasterLayer(parameters, self.INPUT_T2, context)
            self.sources = [describe_layer(t1, "T1"), describe_layer(t2, "T2")]
            refuse_same_input(t1, t2)
            self.t1_crs = QgsCoordinateReferenceSystem(t1.crs())
            box = t1.extent()
            self.t1_bounds = (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())
        except QgsProcessingException as error:
            self.refusal = error
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        REPORT_WRITTEN[self.id()] = False
        feedback.pushInfo(diagnostics())
        if self.refusal is not None:
            raise self.refusal
        request = self.build_request(parameters, context)
        check_destinations(request, {s.label: s.path or s.gdal_source for s in self.sources
                                     if s.path or s.gdal_source}, self.products)
        require_engine()
        from . import runner  # imports the engine, and so torch: only now that torch is known to be there

        self.add_area(request, parameters, context, feedback)
        return self.run_on_inputs(request, context, feedback, lambda: runner.run(request, feedback),
                                  f"Change {request.t1_name} -> {request.t2_name}",
                                  {self.DEVICE_USED: lambda outcome: outcome.summary.device})

    def run_on_inputs(self, request: RunRequest, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                      run: Callable[[], Any], group: str,
                      extra: Mapping[str, Callable[[Any], Any]] | None = None) -> dict[str, Any]:
        """Materialise the inputs, ``run``, then hand the results and styled layers to QGIS.

        ``run`` returns an outcome with ``written``, ``styles`` and a ``summary`` that
        counts changed pixels and area; ``extra`` adds results read off the outcome.
        """
        work = Path(tempfile.mkdtemp(prefix="scd-inputs-", dir=QgsProcessingUtils.tempFolder()))
        try:
            request.t1 = self.sources[0].materialize(work, context, feedback)
            request.t2 = self.sources[1].materialize(work, context, feedback)
            outcome = run()
        except RunCancelled as cancelled:
            # Cancelling is no failure: say so in the log (not in red) and load nothing, as QGIS's own
            # algorithms do, instead of "Execution failed" and the layers QGIS would fail to load.
            feedback.pushInfo(str(cancelled))
            self.forget_outputs(context, request)
            return {}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results: dict[str, Any] = {self.products[name]: path for name, path in outcome.written.items()}
        results.update({self.CHANGED_PIXELS: outcome.summary.changed_pixels,
                        self.CHANGED_AREA_M2: outcome.summary.changed_area_m2})
        results.update({key: value(outcome) for key, value in (extra or {}).items()})
        run_group = RunGroup(group)
        loaded = [name for name, path in outcome.written.items() if context.willLoadLayerOnCompletion(path)]
        for name, style in legend_once(outcome.styles, loaded).items():
            self.attach_style(context, name, outcome.written[name], style, request, run_group)
        REPORT_WRITTEN[self.id()] = "report" in outcome.written
        hide_html_from_batch(self, results, feedback)
        return results

    def build_request(self, parameters: dict[str, Any], context: QgsProcessingContext) -> RunRequest:
        """The parameters as plain data; output files are checked here so mistakes show before the run."""
        not_rasters = ("polygons", "report", "transitions_csv")
        rasters = self.raster_outputs(parameters, context, [p for p in self.products if p not in not_rasters])
        report = self.parameterAsFileOutput(parameters, self.products["report"], context) \
            if "report" in self.products else ""
        return RunRequest(
            task=self.task,
            t1="", t2="",
            t1_name=self.sources[0].layer_name, t2_name=self.sources[1].layer_name,
            model=self.parameterAsFile(parameters, self.MODEL, context),
            bands_t1=self.parameterAsInts(parameters, self.BANDS_T1, context) or None,
            bands_t2=self.parameterAsInts(parameters, self.BANDS_T2, context) or None,
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap_percent=self.parameterAsDouble(parameters, self.OVERLAP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            min_area=self.parameterAsInt(parameters, self.MIN_AREA, context),
            backend=BACKENDS[self.parameterAsEnum(parameters, self.BACKEND, context)],
            int8=self.parameterAsBoolean(parameters, self.INT8, context),
            rasters=rasters,
            polygons=self.output_layer(parameters, self.OUTPUT_POLYGONS, context) or None,
            report=report or None,
        )

    def add_area(self, request: RunRequest, parameters: dict[str, Any], context: QgsProcessingContext,
                 feedback: QgsProcessingFeedback) -> None:
        """The optional processing extent and mask polygons, in T1's CRS, onto ``request``.

        Both are checked here by :mod:`core.area`, with the names the user gave them: an
        extent that is not a number or has no area, a mask layer without polygons, with
        other geometries, or away from T1 is refused instead of running the whole scene
        or writing a map of nodata.
        """
        notes = []
        crs = f"T1's CRS ({self.t1_crs.authid()})"
        if parameters.get(self.EXTENT) not in (None, ""):
            extent = self.parameterAsExtent(parameters, self.EXTENT, context, self.t1_crs)
            try:
                request.extent = check_extent((extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                                               extent.yMaximum()), label="the processing extent (EXTENT)")
            except ChangeDetectionError as error:
                raise QgsProcessingException(str(error)) from error
            notes.append("extent " + ", ".join(f"{v:.6g}" for v in request.extent))
        source = self.parameterAsSource(parameters, self.MASK, context)
        if source is not None:
            label = f"the mask layer {source.sourceName()}"
            transform = QgsCoordinateTransform(source.sourceCrs(), self.t1_crs, context.transformContext())
            polygons = []
            for feature in source.getFeatures():
                geometry = QgsGeometry(feature.geometry())
                if geometry.isEmpty() or geometry.transform(transform) != 0:
                    continue
                polygons.append(json.loads(geometry.asJson()))
            if not polygons:
                raise QgsProcessingException(
                    f"{label} has no polygons (or none selected); choose a layer with polygons or leave the mask "
                    "empty")
            try:
                request.mask = check_mask(polygons, self.t1_bounds, label=label, crs=crs, item="feature")
                if request.extent is not None:
                    check_mask(polygons, request.extent, label=label, crs=f"the processing extent, {crs}",
                               item="feature")
            except ChangeDetectionError as error:
                raise QgsProcessingException(str(error)) from error
            box = mask_bounds(request.mask)
            request.extent = box if request.extent is None else (
                max(box[0], request.extent[0]), max(box[1], request.extent[1]),
                min(box[2], request.extent[2]), min(box[3], request.extent[3]))
            notes.append(f"mask {source.sourceName()} ({len(polygons)} polygons)")
        request.area_note = "; ".join(notes)
        if notes:
            feedback.pushInfo(f"processing area limited to: {request.area_note} ({crs})")

    def forget_outputs(self, context: QgsProcessingContext, request: RunRequest) -> None:
        """Take this run's outputs off the layers QGIS loads when the algorithm completes."""
        loads = context.layersToLoadOnCompletion()
        for path in (*request.rasters.values(), request.polygons):
            if path and path in loads:
                del loads[path]
        context.setLayersToLoadOnCompletion(loads)

    def raster_outputs(self, parameters: dict[str, Any], context: QgsProcessingContext,
                       products: list[str]) -> dict[str, str]:
        """The raster outputs the user asked for, by product; a file that is not a GeoTIFF is refused here."""
        rasters: dict[str, str] = {}
        for product in products:
            output = self.products[product]
            path = self.output_layer(parameters, output, context)
            if not path:
                continue
            if Path(path).suffix.lower() not in RASTER_SUFFIXES:
                raise QgsProcessingException(
                    f"{self.parameterDefinition(output).description()}: the outputs are GeoTIFF files; "
                    f"give a file name ending in .tif instead of '{Path(path).name}'")
            rasters[product] = path
        return rasters

    def output_layer(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """The file of an output layer, or "" when the user left the optional output empty.

        QGIS 3.22 adds an empty optional output that has a destination project (as
        every row of the batch interface has) to the layers to load as "", and its
        post-processing then reports in red "The following layers were not correctly
        generated." with an empty name. That entry is removed here.
        """
        path = self.parameterAsOutputLayer(parameters, name, context)
        if not path:
            loads = context.layersToLoadOnCompletion()
            if "" in loads:
                del loads[""]
                context.setLayersToLoadOnCompletion(loads)
        return path

    def attach_style(self, context: QgsProcessingContext, product: str, destination: str, style: Style,
                     request: RunRequest, run_group: RunGroup) -> None:
        """Style an output QGIS will load, named after the two inputs unless the user (or a model) named it.

        Every layer of the run goes into ``run_group`` at the top of the layer tree.
        """
        if not context.willLoadLayerOnCompletion(destination):
            return
        output = self.products[product]
        description = self.parameterDefinition(output).description()
        given = context.layerToLoadOnCompletionDetails(destination).name
        named = given not in ("", description, output)
        LayerStyler.attach(context, destination, style,
                           None if named else f"{description}: {request.t1_name} -> {request.t2_name}",
                           run_group, product)


def add_product_parameter(algorithm: QgsProcessingAlgorithm, product: Product, task: str, *,
                          optional: bool = True) -> None:
    """Add the destination (or output) parameter of ``product`` to ``algorithm``."""
    title = product.title(task)
    extra = {"optional": True, "createByDefault": False} if optional else {}
    if product.kind == "raster":
        algorithm.addParameter(QgsProcessingParameterRasterDestination(product.parameter, title, **extra))
    elif product.kind == "vector":
        algorithm.addParameter(QgsProcessingParameterVectorDestination(
            product.parameter, title, QgsProcessing.TypeVectorPolygon, **extra))
    elif product.kind == "report":
        algorithm.addParameter(QgsProcessingParameterFileDestination(
            product.parameter, title, "HTML files (*.html)", **extra))
    else:  # the CSV matrix is written beside the report, under its name: an output, not a parameter
        algorithm.addOutput(QgsProcessingOutputFile(product.parameter, title))

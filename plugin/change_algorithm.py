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

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)
from qgis.PyQt.QtGui import QIcon

from ..core.product_table import BY_NAME, Product
from .dependencies import diagnostics, require_engine
from .destinations import check_destinations
from .inputs import LayerSource, describe_layer
from .resources import HOMEPAGE, plugin_icon
from .styling import LayerStyler, Style

DEVICES = ("auto", "cpu", "cuda")
MODEL_FILTER = "Model files (*.pt *.pth *.ckpt);;All files (*.*)"
RASTER_SUFFIXES = (".tif", ".tiff")


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


COMMON_HELP = """
<p><b>Inputs.</b> <i>Earlier image (T1)</i> and <i>Later image (T2)</i> are two images of the same area: raster
layers of the project or image files. T1's grid is the master: T2 may be in another CRS, resolution or extent and
is warped onto it; the results cover the area both images cover, and pixels that are nodata in either image are
nodata in the results. <i>Model file</i> is a checkpoint made with this plugin's training tool (a <code>.pt</code>
file); run <i>Model information</i> first to see what it contains.</p>
<p><b>Advanced options.</b> <i>Bands</i>: the bands of each image to use, in the model's order (empty: the bands the
model file names, usually 1, 2, 3). <i>Tile size</i>: the side of the squares the image is cut into (0: the size the
model was trained with, which gives the best results). <i>Overlap</i>: how much neighbouring tiles overlap, in percent
of the tile (default 25 %); overlapping predictions are blended so no seams show. <i>Batch size</i>: tiles per step;
larger is faster on a GPU but needs more memory; cancelling stops within one batch. <i>Device</i>: <i>auto</i> uses
an NVIDIA GPU when one is usable, otherwise the CPU; the log says which device was used and why.</p>
<p><b>Minimum change patch</b> (optional): change patches smaller than this many pixels are removed (set to
no change) in every output, a minimum mapping unit that removes speckle.</p>
<p>The log starts with a diagnostics line (QGIS, Python, PyTorch, CUDA and GDAL versions and the device found) and
reports the device, the memory estimate, the number of tiles and the time taken. If PyTorch is not installed, the
algorithm stops with the command that installs it.</p>
"""


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
    MIN_AREA = "MIN_AREA"
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

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[LayerSource] = []
        self.refusal: QgsProcessingException | None = None

    def createInstance(self) -> QgsProcessingAlgorithm:
        return type(self)()

    def icon(self) -> QIcon:
        return plugin_icon()

    def helpUrl(self) -> str:
        return HOMEPAGE

    # -- parameters -------------------------------------------------------------------------------

    def add_inputs(self) -> None:
        """The inputs and options both change algorithms take."""
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_T1, "Earlier image (T1)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_T2, "Later image (T2)"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model file (checkpoint)", behavior=QgsProcessingParameterFile.File, fileFilter=MODEL_FILTER))
        advanced = [
            QgsProcessingParameterBand(self.BANDS_T1, "Bands of T1, in the model's order (empty: from the model "
                                       "file)", None, self.INPUT_T1, optional=True, allowMultiple=True),
            QgsProcessingParameterBand(self.BANDS_T2, "Bands of T2, in the model's order (empty: from the model "
                                       "file)", None, self.INPUT_T2, optional=True, allowMultiple=True),
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size in pixels (0: the model's)",
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=4096),
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (% of the tile)",
                                         QgsProcessingParameterNumber.Integer, 25, minValue=0, maxValue=75),
            QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (tiles per step)",
                                         QgsProcessingParameterNumber.Integer, 4, minValue=1, maxValue=256),
            QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue=0),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, "Minimum change patch in pixels (smaller patches are removed)",
            QgsProcessingParameterNumber.Integer, 0, optional=True, minValue=0))

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

    # -- running ----------------------------------------------------------------------------------

    def prepareAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> bool:
        # Main thread: layers may be inspected and their providers cloned here, not in processAlgorithm.
        # A refusal is kept and raised by processAlgorithm: QGIS replaces the message of one raised here
        # by "There were errors executing the algorithm" in scripts and qgis_process.
        try:
            self.sources = [
                describe_layer(self.parameterAsRasterLayer(parameters, self.INPUT_T1, context), "T1"),
                describe_layer(self.parameterAsRasterLayer(parameters, self.INPUT_T2, context), "T2"),
            ]
        except QgsProcessingException as error:
            self.refusal = error
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        feedback.pushInfo(diagnostics())
        if self.refusal is not None:
            raise self.refusal
        request = self.build_request(parameters, context)
        check_destinations(request, {s.label: s.path or s.gdal_source for s in self.sources
                                     if s.path or s.gdal_source}, self.products)
        require_engine()
        from . import runner  # imports the engine, and so torch: only now that torch is known to be there

        work = Path(tempfile.mkdtemp(prefix="scd-inputs-", dir=QgsProcessingUtils.tempFolder()))
        try:
            request.t1 = self.sources[0].materialize(work, context, feedback)
            request.t2 = self.sources[1].materialize(work, context, feedback)
            outcome = runner.run(request, feedback)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results: dict[str, Any] = {self.products[name]: path for name, path in outcome.written.items()}
        results.update({self.CHANGED_PIXELS: outcome.summary.changed_pixels,
                        self.CHANGED_AREA_M2: outcome.summary.changed_area_m2,
                        self.DEVICE_USED: outcome.summary.device})
        for name, style in outcome.styles.items():
            self.attach_style(context, self.products[name], outcome.written[name], style, request)
        return results

    def build_request(self, parameters: dict[str, Any], context: QgsProcessingContext) -> RunRequest:
        """The parameters as plain data; output files are checked here so mistakes show before the run."""
        rasters: dict[str, str] = {}
        for product, output in self.products.items():
            if product in ("polygons", "report", "transitions_csv"):
                continue
            path = self.parameterAsOutputLayer(parameters, output, context)
            if not path:
                continue
            if Path(path).suffix.lower() not in RASTER_SUFFIXES:
                raise QgsProcessingException(
                    f"{self.parameterDefinition(output).description()}: the outputs are GeoTIFF files; "
                    f"give a file name ending in .tif instead of '{Path(path).name}'")
            rasters[product] = path
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
            rasters=rasters,
            polygons=self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context) or None,
            report=report or None,
        )

    def attach_style(self, context: QgsProcessingContext, output: str, destination: str, style: Style,
                     request: RunRequest) -> None:
        """Style an output QGIS will load, named after the two inputs unless the user (or a model) named it."""
        if not context.willLoadLayerOnCompletion(destination):
            return
        description = self.parameterDefinition(output).description()
        given = context.layerToLoadOnCompletionDetails(destination).name
        named = given not in ("", description, output)
        LayerStyler.attach(context, destination, style,
                           None if named else f"{description}: {request.t1_name} -> {request.t2_name}")


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

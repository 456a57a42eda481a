"""``scd:compareclassifications``: the from-to change between two existing land-cover maps, no network.

Same outputs and styling as ``scd:semanticchange`` (from-to map with its legend,
per-date maps, change mask, polygons, report and CSV matrix), computed by
:func:`core.compare.compare_classifications` from two categorical rasters. It needs
rasterio but not PyTorch.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
    QgsRasterLayer,
)

from ..core.product_table import COMPARE
from .change_algorithm import RASTER_SUFFIXES, ChangeAlgorithm, RunRequest
from .dependencies import diagnostics, install_instructions
from .destinations import check_destinations
from .inputs import describe_layer

CSV_FILTER = "CSV files (*.csv);;All files (*.*)"


def layer_palette(layer: QgsRasterLayer | None) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """The classes of a layer drawn with a paletted renderer (main thread): code -> (label, colour)."""
    if layer is None:
        return {}
    renderer = layer.renderer()
    if not isinstance(renderer, QgsPalettedRasterRenderer):
        return {}
    palette = {}
    for entry in renderer.classes():
        value = float(entry.value)
        if value.is_integer():
            color = entry.color
            palette[int(value)] = (entry.label or "", (color.red(), color.green(), color.blue()))
    return palette


class CompareClassificationsAlgorithm(ChangeAlgorithm):
    """Compares two categorical rasters and writes the from-to products."""

    CLASS_TABLE = "CLASS_TABLE"
    CLASS_TABLE_T2 = "CLASS_TABLE_T2"
    MAPPING = "MAPPING"

    task = COMPARE
    offered: ClassVar[tuple[str, ...]] = ("fromto", "t1_classes", "t2_classes", "change_mask", "polygons", "report",
                                          "transitions_csv")

    def __init__(self) -> None:
        super().__init__()
        self.palettes: list[dict[int, tuple[str, tuple[int, int, int]]]] = [{}, {}]

    def name(self) -> str:
        return "compareclassifications"

    def displayName(self) -> str:
        return "Compare two land-cover maps (from-to)"

    def shortDescription(self) -> str:
        return "What became what between two existing land-cover maps, with a change matrix in hectares."

    def tags(self) -> list[str]:
        return ["change detection", "post-classification comparison", "from-to", "land cover", "transition",
                "cross-tabulation", "change matrix", "worldcover", "corine"]

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_T1, "Earlier land-cover map (T1)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_T2, "Later land-cover map (T2)"))
        for name, title in ((self.CLASS_TABLE, "Class table (CSV: code, name, colour)"),
                            (self.CLASS_TABLE_T2, "Class table of T2, when its legend differs (CSV)"),
                            (self.MAPPING, "Mapping table harmonising the codes (CSV: code, target code)")):
            self.addParameter(QgsProcessingParameterFile(name, title, behavior=QgsProcessingParameterFile.File,
                                                         fileFilter=CSV_FILTER, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, "Minimum change patch in pixels (smaller patches are removed)",
            QgsProcessingParameterNumber.Integer, 0, optional=True, minValue=0))
        self.add_product("fromto", optional=False)
        for name in ("t1_classes", "t2_classes", "change_mask", "polygons", "report", "transitions_csv"):
            self.add_product(name)
        self.add_counters()

    def prepareAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> bool:
        try:
            layers = [self.parameterAsRasterLayer(parameters, key, context) for key in (self.INPUT_T1, self.INPUT_T2)]
            self.sources = [describe_layer(layers[0], "T1"), describe_layer(layers[1], "T2")]
            self.palettes = [layer_palette(layer) for layer in layers]  # the renderer may be read here only
        except QgsProcessingException as error:
            self.refusal = error
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        feedback.pushInfo(diagnostics())
        if self.refusal is not None:
            raise self.refusal
        try:
            importlib.import_module("rasterio")
        except Exception as error:
            raise QgsProcessingException(
                f"Comparing land-cover maps needs rasterio in the Python QGIS uses, but it cannot be imported "
                f"({error}). To install: {install_instructions(['rasterio'])} and start QGIS again.") from error
        from . import compare_runner  # imports rasterio, only now that it is known to be there

        request = self.build_request(parameters, context)
        tables = {key: self.parameterAsFile(parameters, key, context) or None
                  for key in (self.CLASS_TABLE, self.CLASS_TABLE_T2, self.MAPPING)}
        read = {s.label: s.path or s.gdal_source for s in self.sources if s.path or s.gdal_source}
        read.update({key: path for key, path in tables.items() if path})
        check_destinations(request, read, self.products)
        work = Path(tempfile.mkdtemp(prefix="scd-inputs-", dir=QgsProcessingUtils.tempFolder()))
        try:
            request.t1 = self.sources[0].materialize(work, context, feedback)
            request.t2 = self.sources[1].materialize(work, context, feedback)
            outcome = compare_runner.run(request, tables[self.CLASS_TABLE], tables[self.CLASS_TABLE_T2],
                                         tables[self.MAPPING], self.palettes, feedback)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results: dict[str, Any] = {self.products[name]: path for name, path in outcome.written.items()}
        results.update({self.CHANGED_PIXELS: outcome.summary.changed_pixels,
                        self.CHANGED_AREA_M2: outcome.summary.changed_area_m2})
        for name, style in outcome.styles.items():
            self.attach_style(context, self.products[name], outcome.written[name], style, request)
        return results

    def build_request(self, parameters: dict[str, Any], context: QgsProcessingContext) -> RunRequest:
        rasters: dict[str, str] = {}
        for product in ("fromto", "t1_classes", "t2_classes", "change_mask"):
            output = self.products[product]
            path = self.parameterAsOutputLayer(parameters, output, context)
            if not path:
                continue
            if Path(path).suffix.lower() not in RASTER_SUFFIXES:
                raise QgsProcessingException(
                    f"{self.parameterDefinition(output).description()}: the outputs are GeoTIFF files; "
                    f"give a file name ending in .tif instead of '{Path(path).name}'")
            rasters[product] = path
        report = self.parameterAsFileOutput(parameters, self.products["report"], context)
        return RunRequest(
            task=self.task, t1="", t2="",
            t1_name=self.sources[0].layer_name, t2_name=self.sources[1].layer_name,
            model="", bands_t1=None, bands_t2=None, tile_size=0, overlap_percent=0.0, batch_size=1, device="cpu",
            min_area=self.parameterAsInt(parameters, self.MIN_AREA, context),
            rasters=rasters,
            polygons=self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context) or None,
            report=report or None,
        )

    def shortHelpString(self) -> str:
        return """
<p>Compares two existing land-cover maps of the same area (e.g. ESA WorldCover 2020 and 2021, CORINE, NLCD,
Dynamic World, your own classifications) and shows <b>what became what</b>: a <b>from-to map</b> whose legend reads
<i>Tree cover -> Built-up</i>, the change matrix in pixels and hectares, polygons and a report. No model is
needed.</p>
<p><b>Inputs.</b> Two categorical rasters with integer class codes of any kind (10, 20, ... for WorldCover;
111 to 523 for CORINE). T1's grid is the master: T2 may be in another CRS, resolution or extent and is aligned onto
it by nearest neighbour (classes are never interpolated). Pixels that are nodata in either map are nodata in every
result. Class names and colours come from each map's own legend (its colour table, category names or attribute
table, a .qml style beside the file, or the layer's paletted style in this project), or from a <i>class
table</i>: a CSV file with one row per class, <code>code,name,colour</code> (colour as <code>#rrggbb</code>).
Give a second class table when T2's legend differs. Codes without a name are named by their code and listed in
the log.</p>
<p><b>Mapping table</b> (optional): a CSV file <code>code,target code[,target name[,date]]</code> that harmonises
the codes before comparing, e.g. CORINE level 3 to level 1 (<code>111,1,Artificial surfaces</code>), or two
products with different codes (the date column, T1 or T2, limits a row to one map).</p>
<p><b>Outputs.</b> <i>From-to change</i>: each changed pixel holds its transition, unchanged pixels are transparent
(GeoTIFF with its legend beside it; the legend lists only the transitions present; stored as 8, 16 or 32-bit
integers as the number of class pairs needs). <i>Land cover of T1 / T2</i>: both maps on T1's grid in the
harmonised classes. <i>Change mask</i>: 1 where the class changed. <i>Change polygons</i>: one polygon per patch of
one transition, with from/to classes, label and area. <i>Transition report</i>: the matrix as an HTML page with a
chart, and as a CSV file beside it; unlike the network algorithms the matrix is the full cross-tabulation, with the
area that kept its class on the diagonal. <i>Minimum change patch</i>: change patches smaller than this many pixels
are treated as unchanged in the from-to map, the mask and the matrix.</p>
"""

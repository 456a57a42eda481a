"""``scd:compareclassifications``: the from-to change between two existing land-cover maps, no network.

Same outputs and styling as ``scd:semanticchange`` (from-to map with its legend,
per-date maps, change mask, polygons, report and CSV matrix), computed by
:func:`core.compare.compare_classifications` from two categorical rasters. It needs
nothing QGIS does not ship: no PyTorch, and no rasterio (rasters are read and written
with QGIS's own GDAL).
"""

from __future__ import annotations

from typing import Any, ClassVar

from qgis.core import (
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsRasterLayer,
)

from ..core.product_table import BY_NAME, COMPARE
from .change_algorithm import (
    REPORT_WRITTEN,
    ChangeAlgorithm,
    RunRequest,
    help_text,
)
from .dependencies import diagnostics
from .destinations import check_destinations
from .inputs import CLASS_MAPS, default_inputs

CSV_FILTER = "CSV files (*.csv);;All files (*.*)"


def layer_palette(layer: QgsRasterLayer | None, band: int = 1) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """The classes of a layer drawn with a paletted renderer (main thread): code -> (label, colour).

    Only a renderer that draws ``band`` names that band's codes: a palette on another band
    of a stack describes other codes.
    """
    if layer is None:
        return {}
    renderer = layer.renderer()
    if not isinstance(renderer, QgsPalettedRasterRenderer) or renderer.band() != band:
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

    BAND_T1 = "BAND_T1"
    BAND_T2 = "BAND_T2"
    CLASS_TABLE = "CLASS_TABLE"
    CLASS_TABLE_T2 = "CLASS_TABLE_T2"
    MAPPING = "MAPPING"

    task = COMPARE
    parameter_help: ClassVar[dict[str, str]] = {
        "INPUT_T1": "The earlier land-cover map. Its grid (CRS, pixel size, extent) is the grid of every output.",
        "INPUT_T2": "The later map of the same area, in any CRS, resolution or extent: it is aligned onto T1's grid "
                    "by nearest neighbour.",
        BAND_T1: "The band of T1 that holds the class codes (default: band 1). A multi-band T1 compared on band 1 "
                 "because no band was given is reported in the log. A band T1 does not have is refused.",
        BAND_T2: "The band of T2 that holds the class codes (default: band 1), as for T1.",
        CLASS_TABLE: "Optional CSV with one row per class: code,name,colour (colour as #rrggbb). Overrides the "
                     "maps' own legends (colour table, category names, attribute table, a .qml beside the file, or "
                     "the layer's paletted style). Codes without a name are named by their code and listed in the log.",
        CLASS_TABLE_T2: "Optional CSV like the class table, for T2 when its legend differs from T1's.",
        MAPPING: "Optional CSV code,target code[,target name[,date]] that harmonises the codes before comparing, "
                 "e.g. CORINE level 3 to level 1 (111,1,Artificial surfaces); the date column (T1 or T2) limits a row "
                 "to one map.",
        "MIN_AREA": "Change patches smaller than this many pixels count as unchanged in the from-to map, the mask and "
                    "the matrix; 0 (default) keeps the exact cross-tabulation.",
        BY_NAME["fromto"].parameter: "What became what: one code per transition (8, 16 or 32-bit as the number of "
                                     "class pairs needs), with its legend stored beside the GeoTIFF.",
        BY_NAME["t1_classes"].parameter: "The T1 map on T1's grid, in the harmonised classes.",
        BY_NAME["t2_classes"].parameter: "The T2 map aligned onto T1's grid, in the harmonised classes.",
        BY_NAME["change_mask"].parameter: "1 where the class changed, 0 where it stayed the same.",
        BY_NAME["report"].parameter: "An HTML page with the areas of every transition and the full change matrix; a "
                                     "CSV with the same numbers is written beside it.",
    }
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
        default_t1, default_t2 = default_inputs(CLASS_MAPS)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_T1, "Earlier land-cover map (T1)", default_t1))
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_T2, "Later land-cover map (T2)", default_t2))
        for name, title, layer in ((self.BAND_T1, "Band of T1 holding the class codes", self.INPUT_T1),
                                   (self.BAND_T2, "Band of T2 holding the class codes", self.INPUT_T2)):
            # Optional so that scripts, qgis_process and existing models may leave it out (band 1, said in the log).
            self.addParameter(QgsProcessingParameterBand(name, title, 1, layer, optional=True))
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
        super().prepareAlgorithm(parameters, context, feedback)  # the inputs, or the refusal of them
        if self.refusal is None:
            self.palettes = [layer_palette(self.parameterAsRasterLayer(parameters, key, context), band or 1)
                             for key, band in zip((self.INPUT_T1, self.INPUT_T2), self.bands(parameters, context),
                                                  strict=True)]  # the renderer may be read here only
        return True

    def bands(self, parameters: dict[str, Any], context: QgsProcessingContext) -> tuple[int | None, int | None]:
        """The band chosen for each date; None where none was given (the core reads band 1 and says so).

        The dialog and the batch interface always pass a band; ``qgis_process``, scripts and
        models may leave it out.
        """
        chosen = [self.parameterAsInt(parameters, key, context) if parameters.get(key) is not None else None
                  for key in (self.BAND_T1, self.BAND_T2)]
        return chosen[0], chosen[1]

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        REPORT_WRITTEN[self.id()] = False
        feedback.pushInfo(diagnostics(engine=False))  # no network runs here: no torch, CUDA or device
        if self.refusal is not None:
            raise self.refusal
        from . import compare_runner  # core.compare and QGIS's GDAL, never torch

        request = self.build_request(parameters, context)
        tables = {key: self.parameterAsFile(parameters, key, context) or None
                  for key in (self.CLASS_TABLE, self.CLASS_TABLE_T2, self.MAPPING)}
        read = {s.label: s.path or s.gdal_source for s in self.sources if s.path or s.gdal_source}
        read.update({key: path for key, path in tables.items() if path})
        check_destinations(request, read, self.products)
        return self.run_on_inputs(
            request, context, feedback,
            lambda: compare_runner.run(request, tables[self.CLASS_TABLE], tables[self.CLASS_TABLE_T2],
                                       tables[self.MAPPING], self.palettes, feedback,
                                       bands=self.bands(parameters, context)),
            f"Land-cover change {request.t1_name} -> {request.t2_name}")

    def build_request(self, parameters: dict[str, Any], context: QgsProcessingContext) -> RunRequest:
        rasters = self.raster_outputs(parameters, context, ["fromto", "t1_classes", "t2_classes", "change_mask"])
        report = self.parameterAsFileOutput(parameters, self.products["report"], context)
        return RunRequest(
            task=self.task, t1="", t2="",
            t1_name=self.sources[0].layer_name, t2_name=self.sources[1].layer_name,
            model="", bands_t1=None, bands_t2=None, tile_size=0, overlap_percent=0.0, batch_size=1, device="cpu",
            min_area=self.parameterAsInt(parameters, self.MIN_AREA, context),
            rasters=rasters,
            polygons=self.output_layer(parameters, self.OUTPUT_POLYGONS, context) or None,
            report=report or None,
        )

    def shortHelpString(self) -> str:
        return help_text(
            "Compares two existing land-cover maps of the same area (ESA WorldCover, CORINE, NLCD, Dynamic World, "
            "your own classifications) and shows <b>what became what</b>: a from-to map whose legend reads "
            "<i>Tree cover -> Built-up</i>, the change matrix in pixels and hectares, polygons and a report. No model "
            "is needed.",
            "<b>Inputs:</b> two categorical rasters with integer class codes of any kind, read from the band chosen "
            "for each (band 1 by default). T2 is aligned onto T1's "
            "grid by nearest neighbour (classes are never interpolated); nodata in either map is nodata in every "
            "result. Class names and colours come from each map's own legend or from a class table.",
            "<b>Outputs:</b> the from-to map (only the transitions present in its legend); optionally both maps on "
            "T1's grid, a change mask, change polygons and a report whose matrix is the full cross-tabulation, with "
            "the area that kept its class on the diagonal.",
            "Hover over a parameter for its help.",
        )

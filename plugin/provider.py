"""The "Semantic change detection" Processing provider (id ``scd``)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .binary_change import BinaryChangeAlgorithm
from .compare_algorithm import CompareClassificationsAlgorithm
from .model_info import ModelInfoAlgorithm
from .resources import ICON, plugin_icon
from .semantic_change import SemanticChangeAlgorithm


class SemanticChangeProvider(QgsProcessingProvider):
    """Holds the algorithms: two with a network, one comparing land-cover maps, and model information.

    Outputs are GeoTIFF rasters and vector files only: the engine writes GeoTIFF with
    legends in sidecar files, so other raster formats, memory layers and database
    destinations are not offered.
    """

    def id(self) -> str:
        return "scd"

    def name(self) -> str:
        return "Semantic change detection"

    def longName(self) -> str:
        return "Semantic change detection (deep learning, from-to change maps)"

    def icon(self) -> QIcon:
        return plugin_icon()

    def svgIconPath(self) -> str:
        return str(ICON)

    def loadAlgorithms(self) -> None:
        for algorithm in (SemanticChangeAlgorithm(), BinaryChangeAlgorithm(), CompareClassificationsAlgorithm(),
                          ModelInfoAlgorithm()):
            self.addAlgorithm(algorithm)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:
        return "tif"

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        return ["gpkg", "shp", "geojson", "fgb"]

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:
        return "gpkg"

    def supportsNonFileBasedOutput(self) -> bool:
        return False

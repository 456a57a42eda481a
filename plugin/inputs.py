"""From a QGIS raster layer to a file the engine can open.

The engine reads rasters with QGIS's own GDAL (``osgeo.gdal``), so each input layer is
turned into something GDAL opens:

* a GDAL layer on a plain file: the file itself;
* any other GDAL source (a GeoPackage raster table, a subdataset, a ``/vsi`` path):
  a small VRT that points at it;
* a layer of another provider that has pixels of its own at a fixed resolution
  (for example a virtual raster): read through QGIS and written to a temporary
  GeoTIFF;
* a web layer (WMS/WMTS/XYZ tiles, ArcGIS image services): refused, because it has
  no resolution of its own and a rendering is not the imagery a model expects.

:func:`describe_layer` runs in the main thread (it touches the layer and clones its
provider, as QGIS's own raster algorithms do in ``prepareAlgorithm``);
:meth:`LayerSource.materialize` runs in the algorithm's worker thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
)

#: Providers that serve rendered maps rather than pixels of their own.
WEB_PROVIDERS = {"wms", "wcs", "arcgismapserver", "arcgisimageserver"}


@dataclass
class LayerSource:
    """Where the pixels of one input layer come from; see the module docstring for the cases."""

    label: str
    layer_name: str
    path: str | None = None
    gdal_source: str | None = None
    provider: QgsRasterDataProvider | None = None
    extent: QgsRectangle | None = None
    crs: QgsCoordinateReferenceSystem | None = None
    width: int = 0
    height: int = 0

    def materialize(self, folder: Path, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> str:
        """A path the engine can open; temporary files go into ``folder``."""
        if self.path is not None:
            return self.path
        target = folder / f"{self.label.lower()}.{'vrt' if self.gdal_source is not None else 'tif'}"
        if self.gdal_source is not None:
            _build_vrt(self.gdal_source, target, self.label, self.layer_name)
            return str(target)
        assert self.provider is not None and self.extent is not None and self.crs is not None
        feedback.pushInfo(f"{self.label}: reading layer '{self.layer_name}' ({self.provider.name()} provider) "
                          f"through QGIS into a temporary GeoTIFF ({self.width} x {self.height} px)")
        writer = QgsRasterFileWriter(str(target))
        writer.setOutputFormat("GTiff")
        pipe = QgsRasterPipe()
        pipe.set(self.provider)  # the pipe takes ownership of the clone
        self.provider = None
        block_feedback = QgsRasterBlockFeedback()
        feedback.canceled.connect(block_feedback.cancel)
        error = writer.writeRaster(pipe, self.width, self.height, self.extent, self.crs,
                                   context.transformContext(), block_feedback)
        if feedback.isCanceled():
            raise QgsProcessingException("cancelled by the user; no output was written")
        if error != QgsRasterFileWriter.NoError:
            raise QgsProcessingException(
                f"{self.label}: could not read layer '{self.layer_name}' through QGIS (raster writer error "
                f"{int(error)}); save it as a GeoTIFF first (right-click > Export > Save As...) and use that file")
        return str(target)


def describe_layer(layer: QgsRasterLayer | None, label: str) -> LayerSource:
    """Decide how the engine will read ``layer`` (main thread), or refuse it with a message that says what to do.

    Raises:
        QgsProcessingException: No layer, an invalid one, or a web layer.
    """
    if layer is None or not layer.isValid():
        raise QgsProcessingException(f"{label}: choose a valid raster layer or image file")
    provider = layer.dataProvider()
    kind = provider.name()
    if kind == "gdal":
        source = layer.source()
        if os.path.isfile(source):
            return LayerSource(label, layer.name(), path=source)
        return LayerSource(label, layer.name(), gdal_source=source)
    if kind in WEB_PROVIDERS or not provider.capabilities() & QgsRasterDataProvider.Size:
        raise QgsProcessingException(
            f"{label}: layer '{layer.name()}' is a web layer ({kind} provider): it has no pixels of its own at a "
            "fixed resolution, only a rendered map. Save it as a GeoTIFF at the resolution the model needs "
            "(right-click the layer > Export > Save As..., 'Rendered image' off) and choose that file instead.")
    return LayerSource(label, layer.name(), provider=provider.clone(), extent=QgsRectangle(layer.extent()),
                       crs=QgsCoordinateReferenceSystem(layer.crs()), width=layer.width(), height=layer.height())


def refuse_same_input(t1: QgsRasterLayer, t2: QgsRasterLayer) -> None:
    """Refuse one layer, or one file, given for both dates: "change" between an image and itself is noise.

    Raises:
        QgsProcessingException: T1 and T2 are the same layer or read the same file or source.
    """
    if t1.id() == t2.id():
        same = f"the same layer '{t1.name()}'"
    elif t1.providerType() == t2.providerType() and _same_source(t1.source(), t2.source()):
        same = f"the same image ({t1.source()}, layers '{t1.name()}' and '{t2.name()}')"
    else:
        return
    raise QgsProcessingException(
        f"T1 and T2 are {same}: change detection compares two different dates. Choose the earlier image as T1 "
        "and the later image as T2.")


def _same_source(a: str, b: str) -> bool:
    if os.path.isfile(a) and os.path.isfile(b):
        return os.path.samefile(a, b)
    return a == b


def two_different_layers(layers: list[QgsRasterLayer]) -> tuple[str | None, str | None]:
    """Layer ids to preselect as T1 and T2 among a project's raster layers (top of the layer tree first).

    The two top raster layers are taken. When both names hold a year (``scene_1985``,
    ``S2 2020-06``), the earlier year is T1; otherwise the lower layer is T1, since the
    image added last is usually on top. With fewer than two layers nothing is
    preselected and QGIS picks as it always does.
    """
    if len(layers) < 2:
        return None, None
    upper, lower = layers[0], layers[1]
    years = [_year(layer.name()) for layer in (upper, lower)]
    if None not in years and years[0] < years[1]:
        upper, lower = lower, upper
    return lower.id(), upper.id()


def _year(name: str) -> int | None:
    match = re.search(r"(?<!\d)(19\d\d|20\d\d)(?!\d)", name)
    return int(match.group(1)) if match else None


def _build_vrt(source: str, target: Path, label: str, layer_name: str) -> None:
    from ..core.io import gdal_session

    try:
        with gdal_session() as gdal:
            dataset: Any = gdal.BuildVRT(str(target), [source])
            if dataset is None:
                raise RuntimeError("GDAL returned no dataset")
            dataset = None
    except RuntimeError as error:
        raise QgsProcessingException(
            f"{label}: GDAL cannot read layer '{layer_name}' ({source}): {error}") from error

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

import datetime
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterLayerTemporalProperties,
    QgsRasterPipe,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QCoreApplication, QThread

from ..core.pathguard import PRODUCT_TAG
from .styling import OUTPUT_PROPERTY

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
    if is_web_layer(layer):
        raise QgsProcessingException(
            f"{label}: layer '{layer.name()}' is a web layer ({kind} provider): it has no pixels of its own at a "
            "fixed resolution, only a rendered map. Save it as a GeoTIFF at the resolution the model needs "
            "(right-click the layer > Export > Save As..., 'Rendered image' off) and choose that file instead.")
    return LayerSource(label, layer.name(), provider=provider.clone(), extent=QgsRectangle(layer.extent()),
                       crs=QgsCoordinateReferenceSystem(layer.crs()), width=layer.width(), height=layer.height())


def is_web_layer(layer: QgsRasterLayer) -> bool:
    """A layer that serves a rendered map rather than pixels of its own at a fixed resolution: never an input."""
    provider = layer.dataProvider()
    return provider.name() in WEB_PROVIDERS or not provider.capabilities() & QgsRasterDataProvider.Size


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


#: What an algorithm reads as T1 and T2: imagery (the change algorithms) or land-cover maps (the comparison).
IMAGERY = "imagery"
CLASS_MAPS = "class maps"

#: Integer pixel types: a single band of one of them is a class map rather than an image.
_INTEGER_TYPES = (Qgis.Byte, Qgis.UInt16, Qgis.Int16, Qgis.UInt32, Qgis.Int32)

#: File metadata that dates an image, best first: ``(domain, key)``. GDAL's imagery readers (DigitalGlobe,
#: Pleiades, Landsat MTL, ...) give ``ACQUISITIONDATETIME``; the layer's name comes before ``TIFFTAG_DATETIME``,
#: which TIFF defines as the file's creation time (often the day it was processed, not taken).
ACQUISITION_KEYS = (("IMAGERY", "ACQUISITIONDATETIME"), ("", "ACQUISITIONDATETIME"))
FILE_TIME_KEY = ("", "TIFFTAG_DATETIME")

#: A date in a layer name or metadata value: a year (1900..), then optionally month and day, with or without
#: separators (``scene 1985``, ``S2 2020-06``, ``S2A_MSIL2A_20200615T103031``, ``2020:06:15 10:30:31``).
_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)(?:[-_.: ]?(0[1-9]|1[0-2])(?:[-_.: ]?(0[1-9]|[12]\d|3[01]))?)?(?!\d)")

Date = tuple[int, ...]


def project_raster_layers() -> list[QgsRasterLayer]:
    """The current project's raster layers in layer tree order (top first); empty outside the main thread."""
    app = QCoreApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return []
    return [node.layer() for node in QgsProject.instance().layerTreeRoot().findLayers()
            if isinstance(node.layer(), QgsRasterLayer) and node.layer().isValid()]


def default_inputs(kind: str) -> tuple[str | None, str | None]:
    """The layers every algorithm's dialog preselects as T1 and T2 (main thread): :func:`preselected_inputs`."""
    return preselected_inputs(project_raster_layers(), kind)


def preselected_inputs(layers: list[QgsRasterLayer], kind: str = IMAGERY) -> tuple[str | None, str | None]:
    """Layer ids to preselect as T1 and T2 among a project's raster layers (top of the layer tree first).

    The one rule of every algorithm that takes two dates:

    * never a layer this plugin wrote (:func:`is_plugin_output`): after a run its from-to map is the top layer;
      never a web layer (a basemap), which a run refuses;
    * two different layers that read two different files;
    * the layers of the ``kind`` the algorithm reads first (:data:`IMAGERY`, or :data:`CLASS_MAPS` for the
      comparison), then any others, each in layer tree order, so the top two of them are taken;
    * the earlier date is T1 when both layers are dated (:func:`layer_date`) and their dates differ;
      otherwise the lower layer is T1, since the image added last is usually on top.

    With no such layer nothing is preselected (QGIS picks as it always does); with one, it is T1.
    """
    candidates = [(position, layer) for position, layer in enumerate(layers)
                  if not is_web_layer(layer) and not is_plugin_output(layer)]
    fitting = [entry for entry in candidates if _is_class_map(entry[1]) == (kind == CLASS_MAPS)]
    ranked = fitting + [entry for entry in candidates if entry not in fitting]
    if not ranked:
        return None, None
    first = ranked[0]
    second = next((entry for entry in ranked[1:] if not _same_source(entry[1].source(), first[1].source())), None)
    if second is None:
        return first[1].id(), None
    upper, lower = sorted((first, second), key=lambda entry: entry[0])
    earlier = _earlier(layer_date(upper[1]), layer_date(lower[1]))
    if earlier is True:  # the upper layer is the older image
        return upper[1].id(), lower[1].id()
    return lower[1].id(), upper[1].id()


def is_plugin_output(layer: QgsRasterLayer) -> bool:
    """Whether ``layer`` is a product of this plugin: loaded by a run, or a file one of its runs wrote."""
    if layer.customProperty(OUTPUT_PROPERTY):
        return True
    facts = _file_facts(layer)
    return facts is not None and facts.plugin_output


def layer_date(layer: QgsRasterLayer) -> Date | None:
    """When ``layer`` was taken, as ``(year[, month[, day]])``, or None when nothing says so.

    In this order: the layer's own temporal properties in QGIS (a fixed date range), an acquisition date in
    the file's metadata, a date or year in the layer's name, the file's ``TIFFTAG_DATETIME``.
    """
    properties = layer.temporalProperties()
    if properties is not None and properties.isActive() and \
            properties.mode() == QgsRasterLayerTemporalProperties.ModeFixedTemporalRange:
        begin = properties.fixedTemporalRange().begin()
        if begin.isValid():
            return begin.date().year(), begin.date().month(), begin.date().day()
    facts = _file_facts(layer)
    return (facts.acquired if facts else None) or parse_date(layer.name()) or (facts.file_time if facts else None)


def parse_date(text: str) -> Date | None:
    """The first plausible date in ``text`` (a year up to next year's), as ``(year[, month[, day]])``."""
    for match in _DATE.finditer(text or ""):
        if int(match[1]) <= datetime.date.today().year + 1:
            return tuple(int(part) for part in match.groups() if part)
    return None


def _earlier(first: Date | None, second: Date | None) -> bool | None:
    """Whether ``first`` is before ``second``, compared as far as both are known; None when that cannot tell."""
    if first is None or second is None:
        return None
    depth = min(len(first), len(second))
    if first[:depth] == second[:depth]:
        return None
    return first[:depth] < second[:depth]


def _is_class_map(layer: QgsRasterLayer) -> bool:
    """A layer drawn with a palette, or a single band of integers: a land-cover map rather than an image."""
    renderer = layer.renderer()
    if renderer is not None and renderer.type() == "paletted":
        return True
    return layer.bandCount() == 1 and layer.dataProvider().dataType(1) in _INTEGER_TYPES


@dataclass(frozen=True)
class _FileFacts:
    plugin_output: bool
    acquired: Date | None
    file_time: Date | None


def _file_facts(layer: QgsRasterLayer) -> _FileFacts | None:
    """What the file of a GDAL layer says about itself; None for other layers and unreadable files."""
    if layer.providerType() != "gdal" or not os.path.isfile(layer.source()):
        return None
    try:
        stat = os.stat(layer.source())
    except OSError:
        return None
    return _read_file_facts(layer.source(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _read_file_facts(path: str, modified_ns: int, size: int) -> _FileFacts | None:
    """The metadata :func:`_file_facts` needs, read once per version of a file (dialogs open often)."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        dataset = gdal.OpenEx(path, gdal.OF_RASTER)
        if dataset is None:
            return None
        domains = {domain: dataset.GetMetadata(domain) or {} for domain in {d for d, _ in (*ACQUISITION_KEYS,
                                                                                          FILE_TIME_KEY)}}
    except RuntimeError:  # GDAL raising exceptions, where someone turned them on
        return None
    finally:
        gdal.PopErrorHandler()
    acquired = next((parse_date(domains[d][k]) for d, k in ACQUISITION_KEYS if domains[d].get(k)), None)
    domain, key = FILE_TIME_KEY
    return _FileFacts(plugin_output=PRODUCT_TAG in domains[""], acquired=acquired,
                      file_time=parse_date(domains[domain].get(key, "")))


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

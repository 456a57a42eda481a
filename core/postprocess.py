"""Clean-up and vectorising of finished change rasters: minimum mapping unit and polygons.

Two steps analysts ask for after a change map is written:

* :func:`sieve_small_changes` removes change patches smaller than a minimum mapping
  unit (a few stray pixels are noise to a land-cover analyst, not change);
* :func:`polygonize_changes` turns the change patches into polygons with their
  from/to classes, label and area, the form a report or a field check works with.

Both work on rasters of any size in bounded memory: connected patches are found by
GDAL's polygonizer (which streams scanlines and keeps only the open polygons), work
files live in a hidden folder beside the raster (where the outputs already have
room), and pixels are read and written in bands of rows. Nothing here imports QGIS
or Qt.

Patches are measured exactly: a polygonized patch's edges follow pixel edges, so its
area divided by the area of one pixel is its pixel count, and burning the small
patches back (GDAL rasterizes by pixel centre, which is never on an edge) marks
exactly their pixels.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Cancelled, InputError
from .io import AUTHALIC_RADIUS_M, check_output_path, gdal_session
from .legend import LegendEntry
from .progress import Progress, ProgressSpan

#: Pixels per read/write chunk (rows x width), to bound memory on wide rasters.
_CHUNK_PIXELS = 1 << 22

#: Output vector formats by file extension; anything else is looked up in GDAL's driver list.
_VECTOR_DRIVERS = {
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".sqlite": "SQLite",
    ".gml": "GML",
    ".kml": "KML",
}

#: Marks a pixel of a change patch in the work mask; :data:`_SMALL` marks one to remove.
_CHANGED = 1
_SMALL = 2


def sieve_small_changes(
    change_raster: str | os.PathLike[str],
    min_pixels: int,
    *,
    dependents: Sequence[str | os.PathLike[str]] = (),
    connectedness: int = 8,
    progress: Progress | None = None,
) -> int:
    """Remove change patches smaller than a minimum mapping unit, in place.

    A patch is a connected group of changed pixels (any non-zero value, so a patch
    may hold several from-to codes). Every patch of fewer than ``min_pixels`` pixels
    becomes 0 ("no change") in ``change_raster`` and in each integer raster of
    ``dependents``. Nodata pixels and no-change pixels are never modified, and
    patches are never merged into neighbours (unlike ``gdal_sieve``), so no pixel
    gains a change it did not have.

    Args:
        change_raster: Single-band uint8/uint16 raster where 0 is no change and the
            dataset nodata value is nodata (from-to codes or a 0/1 mask).
        min_pixels: Smallest patch kept, in pixels; 0 or 1 keeps everything.
        dependents: Rasters on the same grid that describe the same pixels. Integer
            rasters (per-date class maps, a 0/1 change mask) are set to 0 where a
            patch was removed; floating-point rasters (the change probability) are
            left untouched, because the probability is still what the network said.
        connectedness: 8 (diagonal neighbours join a patch, the default) or 4.
        progress: Receives 0..1 and is asked whether to stop.

    Returns:
        The number of pixels removed.

    Raises:
        ValueError: Bad ``min_pixels``/``connectedness``, a non-integer change raster,
            or a dependent on another grid.
        Cancelled: ``progress`` asked to stop; the rasters are unchanged.
    """
    if int(min_pixels) != min_pixels or min_pixels < 0:
        raise ValueError(f"min_pixels must be a non-negative whole number, got {min_pixels!r}")
    _check_connectedness(connectedness)
    if min_pixels <= 1:
        return 0
    with _gdal_ogr() as (gdal, ogr, _), _work_folder(Path(change_raster)) as work:
        return _sieve(gdal, ogr, Path(change_raster), int(min_pixels), [Path(p) for p in dependents],
                      connectedness, _Steps(progress, (0.15, 0.55, 0.1, 0.2)), work)


def _sieve(gdal: Any, ogr: Any, raster: Path, min_pixels: int, dependents: list[Path], connectedness: int,
           steps: _Steps, work: Path) -> int:
    ds = dep = mask_ds = patches_ds = patches = band = mask = None
    opened: list[Any] = []
    targets: list[Any] = []
    try:
        ds = gdal.OpenEx(str(raster), gdal.OF_RASTER | gdal.OF_UPDATE)
        band = ds.GetRasterBand(1)
        _check_integer(gdal, band, raster)
        targets.append(band)
        for path in dependents:
            dep = gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_UPDATE)
            opened.append(dep)
            if (dep.RasterXSize, dep.RasterYSize) != (ds.RasterXSize, ds.RasterYSize):
                raise ValueError(f"{path} is {dep.RasterXSize} x {dep.RasterYSize} px but {raster} is "
                                 f"{ds.RasterXSize} x {ds.RasterYSize}; dependents must share the grid")
            if not _is_float(gdal, dep.GetRasterBand(1)):
                targets.append(dep.GetRasterBand(1))

        mask_ds = _write_change_mask(gdal, band, work / "mask.tif", steps)
        mask = mask_ds.GetRasterBand(1)
        patches_ds, patches = _polygonize(gdal, ogr, mask, mask, ds, work / "patches.gpkg", connectedness, steps)

        largest_small_area = (min_pixels - 0.5) * _pixel_area(ds.GetGeoTransform())
        large = [f.GetFID() for f in patches if f.GetGeometryRef().GetArea() > largest_small_area]
        small_count = patches.GetFeatureCount() - len(large)
        if small_count == 0:
            return 0
        patches_ds.StartTransaction()
        for fid in large:
            patches.DeleteFeature(fid)
        patches_ds.CommitTransaction()
        gdal.RasterizeLayer(mask_ds, [1], patches, burn_values=[_SMALL], callback=steps.callback())
        steps.advance()

        removed = 0
        for row, rows in _row_chunks(ds):
            small = mask.ReadAsArray(0, row, ds.RasterXSize, rows) == _SMALL
            count = int(small.sum())
            if count:
                removed += count
                for target in targets:
                    values = target.ReadAsArray(0, row, ds.RasterXSize, rows)
                    values[small] = 0
                    target.WriteArray(values, 0, row)
            steps.report(row + rows, ds.RasterYSize, check=False)  # half-applied is worse than late
        return removed
    finally:
        # Close every dataset (GDAL < 3.8 closes on release) before the work folder is removed.
        targets.clear()
        opened.clear()
        del band, mask, patches, ds, dep, mask_ds, patches_ds


def polygonize_changes(
    code_raster: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    entries: Sequence[LegendEntry],
    *,
    layer_name: str = "changes",
    connectedness: int = 4,
    progress: Progress | None = None,
) -> int:
    """Write one polygon per connected patch of one change code.

    Each feature has the attributes ``value`` (the code), ``from_class``,
    ``to_class`` and ``label`` (from ``entries``; empty for a binary mask's "Change")
    and ``area_m2``. Areas are in square metres: for a projected CRS the planar area
    times the square of the CRS unit in metres; for a geographic CRS the area on the
    authalic sphere (the same sphere the engine's areas use), computed in an
    equal-area projection; for a raster without CRS the area in pixel-grid units.

    Polygons are 4-connected by default: an 8-connected patch can touch itself at a
    corner, which GEOS calls invalid, and QGIS algorithms stop on invalid geometries
    by default, so 4 keeps the layer usable in models.

    The file appears under its final name only when complete (it is written in a
    hidden folder beside it and moved into place), and replaces any file of that
    name. The format follows the extension (GeoPackage, Shapefile, GeoJSON, ...).

    Args:
        code_raster: Single-band integer raster; 0 is no change, nodata is skipped.
        out_path: Vector file to write.
        entries: Legend of the raster's values (:func:`core.legend.fromto_legend` or
            :func:`core.legend.binary_legend`); unknown values get empty names.
        layer_name: Layer name, where the format has one.
        connectedness: 4 (default) or 8.
        progress: Receives 0..1 and is asked whether to stop.

    Returns:
        The number of polygons written.

    Raises:
        InputError: The extension names no vector format GDAL can write, or the
            folder cannot be written.
        ValueError: ``connectedness`` is not 4 or 8, or the raster is not integer.
        Cancelled: ``progress`` asked to stop; nothing is left behind.
    """
    _check_connectedness(connectedness)
    target = Path(out_path)
    check_vector_output(target)
    with _gdal_ogr() as (gdal, ogr, osr), _work_folder(target) as work:
        count = _polygonize_to(gdal, ogr, osr, Path(code_raster), work / "out" / target.name, entries, layer_name,
                               connectedness, _Steps(progress, (0.15, 0.55, 0.3)), work)
        for produced in sorted((work / "out").iterdir()):
            os.replace(produced, target.parent / produced.name)
        return count


def _polygonize_to(gdal: Any, ogr: Any, osr: Any, raster: Path, target: Path, entries: Sequence[LegendEntry],
                   layer_name: str, connectedness: int, steps: _Steps, work: Path) -> int:
    ds = band = mask_ds = raw_ds = raw = out_ds = layer = None
    by_value = {e.value: e for e in entries}
    try:
        driver = _vector_driver(ogr, target)  # the caller checked the name; this picks the format
        ds = gdal.OpenEx(str(raster), gdal.OF_RASTER)
        band = ds.GetRasterBand(1)
        _check_integer(gdal, band, raster)
        mask_ds = _write_change_mask(gdal, band, work / "mask.tif", steps)
        raw_ds, raw = _polygonize(gdal, ogr, band, mask_ds.GetRasterBand(1), ds, work / "raw.gpkg",
                                  connectedness, steps)

        srs = ds.GetSpatialRef()
        area_m2 = _area_function(osr, srs)
        target.parent.mkdir()
        out_ds = driver.CreateDataSource(str(target))
        layer = out_ds.CreateLayer(layer_name, srs=srs, geom_type=ogr.wkbPolygon)
        for name, kind in (("value", ogr.OFTInteger), ("from_class", ogr.OFTString), ("to_class", ogr.OFTString),
                           ("label", ogr.OFTString), ("area_m2", ogr.OFTReal)):
            layer.CreateField(ogr.FieldDefn(name, kind))
        definition = layer.GetLayerDefn()
        total = raw.GetFeatureCount()
        transaction = bool(out_ds.TestCapability(ogr.ODsCTransactions))
        if transaction:
            out_ds.StartTransaction()
        count = 0
        for source in raw:
            value = source.GetField(0)
            entry = by_value.get(value)
            geometry = source.GetGeometryRef()
            feature = ogr.Feature(definition)
            feature.SetGeometry(geometry)
            feature.SetField("value", value)
            for name, text in (("label", entry and entry.label), ("from_class", entry and entry.from_class),
                               ("to_class", entry and entry.to_class)):
                if text:
                    feature.SetField(name, text)
                else:
                    feature.SetFieldNull(name)  # null, not unset: some formats drop unset fields
            feature.SetField("area_m2", area_m2(geometry))
            layer.CreateFeature(feature)
            count += 1
            if count % 1000 == 0:
                steps.report(count, total)
        if transaction:
            out_ds.CommitTransaction()
        steps.advance()
        return count
    finally:
        # Close every dataset (GDAL < 3.8 closes on release) before files are moved or removed.
        del layer, raw, band, out_ds, raw_ds, mask_ds, ds


def check_vector_output(out_path: str | os.PathLike[str]) -> None:
    """Refuse a polygon output whose folder is missing or whose extension names no writable format.

    Lets a caller fail before a long run rather than after it.

    Raises:
        InputError: With what to choose instead.
    """
    from osgeo import ogr

    _vector_driver(ogr, check_output_path(out_path))


# --- helpers ---------------------------------------------------------------------------------


class _Steps:
    """Consecutive steps, each a :class:`~.progress.ProgressSpan` of the caller's progress."""

    def __init__(self, progress: Progress | None, shares: Sequence[float]) -> None:
        self.progress = progress
        starts = [0.0, *np.cumsum(shares)[:-1].tolist()]
        self.spans = [ProgressSpan(progress, start, share) for start, share in zip(starts, shares, strict=True)]
        self.step = 0

    @property
    def _span(self) -> ProgressSpan:
        return self.spans[min(self.step, len(self.spans) - 1)]

    def report(self, done: float, total: float, *, check: bool = True) -> None:
        """Within the current step, ``done`` of ``total``; ``check`` raises :class:`Cancelled` if asked to stop."""
        if check and self._span.is_cancelled():
            raise Cancelled("cancelled by the user; no output was written")
        if self.step < len(self.spans):
            self._span.set_progress(min(1.0, done / total) if total else 1.0)

    def advance(self) -> None:
        self.report(1, 1)
        self.step += 1

    def callback(self) -> Callable[[float, Any, Any], int] | None:
        """A GDAL progress callback for the current step; it returns 0 (stop) when cancelled."""
        if self.progress is None:
            return None
        span = self._span

        def callback(complete: float, _message: Any, _data: Any) -> int:
            if span.is_cancelled():
                return 0
            span.set_progress(complete)
            return 1

        return callback


@contextmanager
def _gdal_ogr() -> Iterator[tuple[Any, Any, Any]]:
    """``gdal``, ``ogr`` and ``osr`` with exceptions on (each module has its own switch before
    GDAL 3.7), restored afterwards so other code in the process (QGIS, plugins) is unaffected."""
    from osgeo import ogr, osr

    with gdal_session() as gdal:
        previous = [(module, module.GetUseExceptions()) for module in (ogr, osr)]
        for module, _ in previous:
            module.UseExceptions()
        try:
            yield gdal, ogr, osr
        finally:
            for module, was_on in reversed(previous):  # GDAL keeps the switches on a stack
                if not was_on:
                    module.DontUseExceptions()


def _check_connectedness(connectedness: int) -> None:
    if connectedness not in (4, 8):
        raise ValueError(f"connectedness must be 4 or 8, got {connectedness!r}")


def _is_float(gdal: Any, band: Any) -> bool:
    return band.DataType in (gdal.GDT_Float32, gdal.GDT_Float64)


def _check_integer(gdal: Any, band: Any, path: Path) -> None:
    if band.DataType not in (gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16, gdal.GDT_UInt32, gdal.GDT_Int32):
        raise ValueError(f"{path} holds {gdal.GetDataTypeName(band.DataType)} values; change codes must be integers")


class _work_folder:  # noqa: N801 - used like a function, as tempfile.TemporaryDirectory is
    """A hidden folder beside ``path`` for work files, removed afterwards however the step ends."""

    def __init__(self, path: Path) -> None:
        folder = path.parent if str(path.parent) else Path(".")
        try:
            self._temp = tempfile.TemporaryDirectory(prefix=f".{path.name}.partial-", dir=folder,
                                                     ignore_cleanup_errors=True)
        except OSError as error:
            raise InputError(f"cannot write in {folder}: {error.strerror or error}") from error

    def __enter__(self) -> Path:
        return Path(self._temp.name)

    def __exit__(self, *_: object) -> None:
        self._temp.cleanup()


def _row_chunks(ds: Any) -> Iterator[tuple[int, int]]:
    """``(first row, row count)`` bands of about :data:`_CHUNK_PIXELS` pixels, whole blocks where possible."""
    block_rows = ds.GetRasterBand(1).GetBlockSize()[1] or 1
    rows = max(1, _CHUNK_PIXELS // max(1, ds.RasterXSize))
    rows = max(block_rows, rows // block_rows * block_rows)
    for row in range(0, ds.RasterYSize, rows):
        yield row, min(rows, ds.RasterYSize - row)


def _write_change_mask(gdal: Any, band: Any, path: Path, steps: _Steps) -> Any:
    """A uint8 work raster on the code raster's grid: 1 where a valid pixel has changed, else 0."""
    ds = band.GetDataset()
    width, height = ds.RasterXSize, ds.RasterYSize
    mask_ds = gdal.GetDriverByName("GTiff").Create(
        str(path), width, height, 1, gdal.GDT_Byte,
        ["TILED=YES", "COMPRESS=DEFLATE", "ZLEVEL=1", "SPARSE_OK=TRUE", "BIGTIFF=IF_SAFER"])
    mask_ds.SetGeoTransform(ds.GetGeoTransform())
    projection = ds.GetProjection()
    if projection:
        mask_ds.SetProjection(projection)
    out = mask_ds.GetRasterBand(1)
    nodata = band.GetNoDataValue()
    for row, rows in _row_chunks(ds):
        values = band.ReadAsArray(0, row, width, rows)
        changed = values != 0
        if nodata is not None and not math.isnan(nodata):
            changed &= values != nodata
        out.WriteArray(changed.astype(np.uint8) * _CHANGED, 0, row)
        steps.report(row + rows, height)
    out.FlushCache()
    steps.advance()
    return mask_ds


def _polygonize(gdal: Any, ogr: Any, band: Any, mask: Any, ds: Any, path: Path, connectedness: int,
                steps: _Steps) -> tuple[Any, Any]:
    """Patches of ``band`` where ``mask`` is non-zero, as polygons with a ``value`` field in a work GeoPackage."""
    out_ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = out_ds.CreateLayer("patches", srs=ds.GetSpatialRef(), geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    options = ["8CONNECTED=8"] if connectedness == 8 else []
    out_ds.StartTransaction()
    try:
        gdal.Polygonize(band, mask, layer, 0, options, callback=steps.callback())
    except BaseException:
        layer = out_ds = None  # close the GeoPackage before its folder is removed
        steps.report(0, 1)  # raises Cancelled if that is why GDAL stopped
        raise
    out_ds.CommitTransaction()
    steps.advance()
    return out_ds, layer


def _pixel_area(transform: Sequence[float]) -> float:
    """Area of one pixel in CRS units (the determinant, so rotated grids work too)."""
    return abs(transform[1] * transform[5] - transform[2] * transform[4])


def _area_function(osr: Any, srs: Any) -> Callable[[Any], float]:
    """Area of a polygon in m² (see :func:`polygonize_changes` for each kind of CRS)."""
    if srs is None:
        return lambda geometry: geometry.GetArea()
    if srs.IsGeographic():
        source = srs.Clone()
        source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        equal_area = osr.SpatialReference()
        # Lambert cylindrical equal-area on the authalic sphere: pixel edges (parallels and
        # meridians) stay straight, so pixel-edge polygons need no densifying.
        equal_area.ImportFromProj4(f"+proj=cea +lon_0=0 +lat_ts=0 +R={AUTHALIC_RADIUS_M} +units=m +no_defs")
        equal_area.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        transform = osr.CoordinateTransformation(source, equal_area)

        def geodesic(geometry: Any) -> float:
            clone = geometry.Clone()
            clone.Transform(transform)
            return clone.GetArea()

        return geodesic
    factor = srs.GetLinearUnits() or 1.0
    return lambda geometry: geometry.GetArea() * factor * factor


def _vector_driver(ogr: Any, path: Path) -> Any:
    """The OGR driver that writes ``path``'s format, chosen by its extension."""
    suffix = path.suffix.lower()
    name = _VECTOR_DRIVERS.get(suffix)
    if name is None:
        for index in range(ogr.GetDriverCount()):
            driver = ogr.GetDriver(index)
            metadata = driver.GetMetadata() or {}
            extensions = (metadata.get("DMD_EXTENSIONS") or "").lower().split()
            if suffix.lstrip(".") in extensions and metadata.get("DCAP_CREATE") == "YES":
                name = driver.GetName()
                break
    driver = ogr.GetDriverByName(name) if name else None
    if driver is None:
        raise InputError(f"cannot write polygons to {path.name}: no vector format for '{suffix or 'no extension'}'; "
                         "use .gpkg (GeoPackage), .shp, .geojson or .fgb")
    return driver

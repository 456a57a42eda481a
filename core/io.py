"""Raster input and output, through the GDAL that QGIS ships (``osgeo.gdal``) and nothing else.

* :func:`open_raster` opens a raster as a :class:`Raster`: the GDAL dataset and the
  facts about it every check needs (size, bands, pixel types, CRS, grid, nodata).
* :class:`RasterPair` opens the two dates, warps T2 onto T1's grid (a warped VRT),
  finds the area both cover and reads aligned windows with their combined validity mask.
* :class:`RasterWriter` writes finished rows to a tiled, compressed GeoTIFF under a
  temporary name; :func:`publish` moves it (and its sidecars) into place only when
  everything is complete, so nothing half-written ever looks finished.

Why not rasterio: a rasterio wheel brings a second GDAL into QGIS's process, which
is not safe (docs/dependencies.md). Every GDAL call runs inside :func:`gdal_session`,
so exceptions are on for this code only and QGIS and other plugins are unaffected.
The grid arithmetic (:class:`GeoTransform`, :class:`Window`) is plain Python.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from xml.etree import ElementTree

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import InputError
from .files import sidecars
from .pathguard import PRODUCT_TAG, source_file

#: Authalic radius of the WGS84 ellipsoid: a sphere with the ellipsoid's area.
AUTHALIC_RADIUS_M = 6371007.181

#: What GDAL raises when pixels cannot be read (its Python bindings raise ``RuntimeError``).
READ_ERRORS = (RuntimeError, OSError)


# --- GDAL ------------------------------------------------------------------------------

#: GDAL before 3.7 has one process-wide exception switch per module (gdal, osr, ogr): sessions in several
#: threads share it. Per module: how many sessions are open, and whether exceptions were on before the first.
_SESSIONS_LOCK = threading.Lock()
_SESSIONS: dict[str, list[Any]] = {}


@contextmanager
def _exceptions_on(module: Any) -> Iterator[None]:
    """Exceptions on for one of GDAL's modules (``gdal``, ``osr``, ``ogr``: each has its own switch).

    GDAL 3.7 and later switch them for this thread alone; before 3.7 the switch is
    process-wide, so it stays on while any thread is inside (the engine reads tiles in
    one thread while it writes products in another) and is switched back off by the
    last one out, if it was off before the first came in.
    """
    manager = getattr(module, "ExceptionMgr", None)  # GDAL >= 3.7
    if manager is not None:
        with manager(useExceptions=True):
            yield
        return
    with _SESSIONS_LOCK:
        state = _SESSIONS.setdefault(module.__name__, [0, False])
        if not state[0]:
            state[1] = bool(module.GetUseExceptions())
            module.UseExceptions()
        state[0] += 1
    try:
        yield
    finally:
        with _SESSIONS_LOCK:
            state[0] -= 1
            if not state[0] and not state[1]:
                module.DontUseExceptions()


@contextmanager
def gdal_session() -> Iterator[Any]:
    """GDAL with exceptions on and PAM enabled for this thread, both restored afterwards.

    PAM is forced on because the RAT and category names of a GeoTIFF can only live in
    the ``.aux.xml`` sidecar; the setting is thread-local so nothing else changes.
    Exceptions: see :func:`_exceptions_on`.
    """
    old_pam = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "YES")
    try:
        with _exceptions_on(gdal):
            yield gdal
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", old_pam)


@contextmanager
def _spatial_session() -> Iterator[None]:
    """:func:`gdal_session` with exceptions on for OSR (coordinate systems) and OGR (geometries) too."""
    with gdal_session(), _exceptions_on(osr), _exceptions_on(ogr):
        yield


def _reason(error: BaseException) -> str:
    """The first line of an error's message (GDAL's messages can run over several lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- grids ------------------------------------------------------------------------------


class Window(NamedTuple):
    """A rectangle of pixels: first column and row, width and height."""

    col_off: int
    row_off: int
    width: int
    height: int


class GeoTransform(NamedTuple):
    """Pixel (column, row) to map (x, y): ``x = a*col + b*row + c``, ``y = d*col + e*row + f``.

    The coefficients carry the names the ``affine`` package gives them, so code that
    reads ``transform.a`` or ``transform.e`` takes either.
    """

    a: float
    b: float
    c: float
    d: float
    e: float
    f: float

    @classmethod
    def from_gdal(cls, c: float, a: float, b: float, f: float, d: float, e: float) -> GeoTransform:
        """From GDAL's order ``(c, a, b, f, d, e)`` (``GetGeoTransform``)."""
        return cls(a, b, c, d, e, f)

    def to_gdal(self) -> tuple[float, float, float, float, float, float]:
        """In GDAL's order, for ``SetGeoTransform``."""
        return self.c, self.a, self.b, self.f, self.d, self.e

    @property
    def is_identity(self) -> bool:
        return tuple(self) == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

    def point(self, col: float, row: float) -> tuple[float, float]:
        """The map coordinates of a pixel position (its corner for whole numbers)."""
        return col * self.a + row * self.b + self.c, col * self.d + row * self.e + self.f

    def inverse(self) -> GeoTransform:
        """Map (x, y) to pixel (column, row)."""
        determinant = self.a * self.e - self.b * self.d
        if determinant == 0 or not math.isfinite(determinant):
            raise InputError(f"the raster's pixel grid {tuple(self)} cannot be inverted (zero-sized pixels)")
        idet = 1.0 / determinant
        ra, rb, rd, re = self.e * idet, -self.b * idet, -self.d * idet, self.a * idet
        return GeoTransform(ra, rb, -self.c * ra - self.f * rb, rd, re, -self.c * rd - self.f * re)

    def __mul__(self, position: Any) -> tuple[float, float]:  # type: ignore[override]
        """``transform * (col, row)``, as the ``affine`` package writes :meth:`point`."""
        col, row = position
        return self.point(col, row)

    def __invert__(self) -> GeoTransform:
        """``~transform``, as the ``affine`` package writes :meth:`inverse`."""
        return self.inverse()

    def for_window(self, col_off: float, row_off: float) -> GeoTransform:
        """The grid of a window that starts at (``col_off``, ``row_off``): the same pixels, another origin."""
        x, y = self.point(col_off, row_off)
        return GeoTransform(self.a, self.b, self.c + (x - self.c), self.d, self.e, self.f + (y - self.f))


class CRS:
    """A coordinate reference system (an OSR spatial reference, in x/y = east/north order).

    Offers what the engine asks of a CRS (``to_wkt``, ``is_geographic``,
    ``linear_units_factor``, equality) under the names rasterio's class uses, so the
    rest of the code (and its tests) takes either.
    """

    def __init__(self, srs: osr.SpatialReference) -> None:
        self._srs = srs.Clone()
        self._srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)

    @classmethod
    def from_user_input(cls, text: str) -> CRS:
        """``EPSG:32633``, WKT or a PROJ string."""
        with _spatial_session():
            srs = osr.SpatialReference()
            srs.SetFromUserInput(text)
            return cls(srs)

    @property
    def srs(self) -> osr.SpatialReference:
        """A copy of the spatial reference, for GDAL and OSR calls."""
        return self._srs.Clone()

    def to_wkt(self) -> str:
        with _spatial_session():
            return self._srs.ExportToWkt()

    @property
    def is_geographic(self) -> bool:
        return bool(self._srs.IsGeographic())

    @property
    def linear_units_factor(self) -> tuple[str, float]:
        """The name of the linear unit and its length in metres (projected CRSs)."""
        return self._srs.GetLinearUnitsName(), float(self._srs.GetLinearUnits())

    def authority(self) -> tuple[str, str] | None:
        """``("EPSG", "32633")`` when the CRS is, or is found to be, one of an authority's; else None."""
        with _spatial_session():
            name, code = self._srs.GetAuthorityName(None), self._srs.GetAuthorityCode(None)
            if name and code:
                return name, code
            try:
                matches = self._srs.FindMatches()
            except RuntimeError:
                return None
        for match, confidence in matches:
            if confidence >= 70 and match.GetAuthorityName(None) and match.GetAuthorityCode(None):
                return match.GetAuthorityName(None), match.GetAuthorityCode(None)
        return None

    def to_string(self) -> str:
        """``EPSG:32633`` where an authority's code is known, else the WKT."""
        found = self.authority()
        return ":".join(found) if found else self.to_wkt()

    __str__ = to_string

    def __repr__(self) -> str:
        return f"CRS({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CRS):
            return NotImplemented
        mine, theirs = self.authority(), other.authority()
        if mine is not None and mine == theirs:
            return True
        with _spatial_session():
            return bool(self._srs.IsSame(other._srs))

    __hash__ = None  # type: ignore[assignment]  # mutable underneath, like rasterio's


def _wkt(crs: Any) -> str:
    """WKT of a :class:`CRS` or of anything with ``to_wkt`` (rasterio's CRS), or of a user string."""
    return crs.to_wkt() if hasattr(crs, "to_wkt") else CRS.from_user_input(str(crs)).to_wkt()


# --- opening ------------------------------------------------------------------------------


def _numpy_type(gdal_type: int) -> str:
    """The numpy type name GDAL reads a band of ``gdal_type`` into (CInt16 reads as complex64)."""
    from osgeo import gdal_array

    numpy_type = gdal_array.GDALTypeCodeToNumericTypeCode(gdal_type)
    if numpy_type is None:
        raise InputError(f"pixels of type {gdal.GetDataTypeName(gdal_type)} cannot be read into numbers")
    return np.dtype(numpy_type).name


class Raster:
    """An open raster: its GDAL dataset and the facts every check needs, read once.

    ``name`` is the path the user gave (a signed-byte raster is opened through a view,
    see :func:`signed_byte_view`, whose own name is XML).
    """

    def __init__(self, dataset: gdal.Dataset, name: str, source: str | None = None) -> None:
        self.dataset = dataset
        self.name = name
        #: What opens the same pixels again (the absolute path, or a view's XML), for VRTs built on it.
        self.source = source or (os.path.abspath(name) if os.path.isfile(name) else name)
        self.count = dataset.RasterCount
        self.width, self.height = dataset.RasterXSize, dataset.RasterYSize
        geotransform = dataset.GetGeoTransform(can_return_null=True)
        self.transform = GeoTransform.from_gdal(*(geotransform or (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)))
        srs = dataset.GetSpatialRef()
        self.crs = CRS(srs) if srs is not None else None
        bands = [dataset.GetRasterBand(index) for index in range(1, self.count + 1)]
        self.dtypes = tuple(_numpy_type(band.DataType) for band in bands)
        self.complex = tuple(bool(gdal.DataTypeIsComplex(band.DataType)) for band in bands)
        self.nodata = bands[0].GetNoDataValue() if bands else None
        #: Each band's declared ``value = raw * scale + offset`` (1 and 0 where the file declares none).
        self.scales = tuple(float(band.GetScale() or 1.0) for band in bands)
        self.offsets = tuple(float(band.GetOffset() or 0.0) for band in bands)
        self.mask_flags = tuple(band.GetMaskFlags() for band in bands)
        self.descriptions = tuple(band.GetDescription() or "" for band in bands)
        self.colorinterp = tuple(gdal.GetColorInterpretationName(band.GetColorInterpretation()).lower()
                                 for band in bands)
        self.gcp_count = dataset.GetGCPCount()
        gcp_srs = dataset.GetGCPSpatialRef()
        self.gcp_crs = CRS(gcp_srs) if gcp_srs is not None else None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the raster's footprint in its CRS."""
        t = self.transform
        if t.b == t.d == 0:
            return t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f
        corners = [t.point(col, row) for col, row in ((0, 0), (0, self.height), (self.width, self.height),
                                                       (self.width, 0))]
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def tags(self) -> dict[str, str]:
        """The metadata items of the default domain."""
        with gdal_session():
            return dict(self.dataset.GetMetadata() or {})

    def close(self) -> None:
        self.dataset = None

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_raster(path: str | os.PathLike[str]) -> Raster:
    """Open a raster or raise an :class:`InputError` that says why it cannot be read.

    A signed 8-bit raster that GDAL keeps as Byte (see :func:`signed_byte_view`) is
    opened through a view that holds its real, negative values.
    """
    path = str(path)
    file = source_file(path)
    if file is not None and not Path(file).exists():
        raise InputError(f"raster not found: {path}; check the path or choose another layer")
    with gdal_session():
        try:
            dataset = gdal.OpenEx(path, gdal.OF_RASTER)
            view = signed_byte_view(path, dataset)
            if view is not None:
                dataset = gdal.Open(view)
            return Raster(dataset, path, view)
        except RuntimeError as error:
            raise InputError(f"cannot read {path} as a raster ({_reason(error)}); is it a GDAL-readable image?"
                             ) from error


def raster_tags(path: str | os.PathLike[str], *, sidecar: bool = True) -> dict[str, str]:
    """A raster's metadata items (default domain); with ``sidecar=False`` only those in the file itself.

    Raises:
        RuntimeError: the file cannot be opened as a raster.
    """
    with gdal_session():
        if not sidecar:
            gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")  # gdal_session restores it
        dataset = gdal.OpenEx(str(path), gdal.OF_RASTER)
        return dict(dataset.GetMetadata() or {})


#: What a signed byte stored as an unsigned one is worth: 0..127 as they are, 128..255 are -128..-1. The
#: entries below 0 keep -128..-1 as they are, for a GDAL that reads the same file as Int8 (3.7 and later).
_SIGNED_BYTE_LUT = "-128:-128,-1:-1,0:0,127:127,128:-128,255:-1"


def signed_byte_view(path: str, dataset: gdal.Dataset | None = None) -> str | None:
    """A VRT (its XML) reading the signed 8-bit bands of ``path`` as Int16 with their real values; None if none.

    GDAL before 3.7 has no signed 8-bit type: it keeps such bands as Byte and says
    ``PIXELTYPE=SIGNEDBYTE`` in their metadata. Any read into another type, any warp
    and GDAL's nodata mask then take -23 for 233 (and a nodata of -128 for no nodata
    at all), which gives a plausible but wrong map. The view maps every stored byte to
    its signed value with a lookup table, so reading, warping and masking all see the
    values the file holds, exactly as the same values stored in Int16 would be seen.
    GDAL 3.7 and later read such files as their Int8 type, and this returns None.
    """
    with gdal_session():
        if dataset is None:
            try:
                dataset = gdal.OpenEx(path, gdal.OF_RASTER)
            except RuntimeError:
                return None  # opening it again says why, in the caller's words
        signed = {index for index in range(1, dataset.RasterCount + 1)
                  if dataset.GetRasterBand(index).DataType == gdal.GDT_Byte
                  and dataset.GetRasterBand(index).GetMetadataItem("PIXELTYPE", "IMAGE_STRUCTURE") == "SIGNEDBYTE"}
        if not signed:
            return None
        # the source by its absolute name: the view must not depend on the working folder
        source = os.path.abspath(path) if os.path.isfile(path) else path
        copy = gdal.Translate("", gdal.OpenEx(source, gdal.OF_RASTER), format="VRT")
        root = ElementTree.fromstring(copy.GetMetadata("xml:VRT")[0])
        copy = None
    for band in root.iter("VRTRasterBand"):
        if int(band.get("band", "0")) not in signed:
            continue
        band.set("dataType", "Int16")
        for metadata in band.findall("Metadata[@domain='IMAGE_STRUCTURE']"):
            band.remove(metadata)  # its PIXELTYPE=SIGNEDBYTE describes the file's bytes, not the view's Int16
        for element in band:
            if element.tag in ("SimpleSource", "ComplexSource"):
                element.tag = "ComplexSource"
                ElementTree.SubElement(element, "LUT").text = _SIGNED_BYTE_LUT
    return ElementTree.tostring(root, encoding="unicode")


def unreadable(path: str, error: Exception) -> InputError:
    """The message for pixels GDAL cannot read: a damaged file, or a VRT whose source is missing."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return InputError(
        f"cannot read the pixels of {path} ({reason}). The file is damaged or incomplete (cut short by an "
        "interrupted copy or download?), or it is a virtual raster whose source files are missing; check "
        "it with 'gdalinfo -checksum', get or write it again, or fix the paths in the VRT")


def check_bands(bands: Sequence[int], count: int, label: str, needed: int) -> tuple[int, ...]:
    """Validate 1-based band numbers against the raster and the model."""
    numbers = []
    for band in bands:
        try:
            whole = not isinstance(band, bool) and float(band).is_integer()
        except (TypeError, ValueError):
            whole = False
        if not whole:
            raise InputError(f"band numbers are whole numbers from 1 up; {band!r} was given for {label}")
        numbers.append(int(band))
    bands = tuple(numbers)
    if len(bands) != needed:
        raise InputError(
            f"the model takes {needed} bands per date but {len(bands)} were chosen for {label} "
            f"({', '.join(map(str, bands)) or 'none'}); choose exactly {needed}"
        )
    wrong = [b for b in bands if not 1 <= b <= count]
    if wrong:
        raise InputError(
            f"band {wrong[0]} was requested for {label}, which has {count} band{'s' if count != 1 else ''}; "
            f"choose band numbers from 1 to {count}"
            + ("" if count >= needed else f" (the model needs {needed} bands: this raster has too few)")
        )
    return bands


class RasterPair:
    """Two co-registered views of the dates on T1's grid, limited to the area both cover.

    T1's grid is the master. T2 is read through a warped view (a GDAL warped VRT,
    bilinear) onto T1's CRS, transform and size, whatever its own CRS, resolution or
    extent; when T2 already lies on T1's grid it is read directly at the matching offset.
    """

    def __init__(
        self,
        path_t1: str | os.PathLike[str],
        path_t2: str | os.PathLike[str],
        bands_t1: Sequence[int],
        bands_t2: Sequence[int],
        *,
        needed_bands: int,
        categorical: bool = False,
        extent: tuple[float, float, float, float] | None = None,
        mask: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        # Categories (land-cover codes) are warped by nearest neighbour and read as integers: a
        # bilinear mean of two class codes is a third, unrelated class.
        self.categorical = categorical
        # Optional processing extent (left, bottom, right, top) and mask polygons (GeoJSON-like
        # geometries), both in T1's CRS: the area is cut to the extent, pixels outside the mask are nodata.
        self._extent = extent
        self._mask: Any = None
        self._src1 = open_raster(path_t1)
        try:
            self._src2 = open_raster(path_t2)
        except InputError:
            self._src1.close()
            raise
        self._vrt2: Raster | None = None
        try:
            self.bands_t1 = check_bands(bands_t1, self._src1.count, f"T1 ({path_t1})", needed_bands)
            self.bands_t2 = check_bands(bands_t2, self._src2.count, f"T2 ({path_t2})", needed_bands)
            self._check_georeferenced()
            self._check_pixel_types()
            if mask is not None:
                self._mask = _mask_layer(mask, self._src1.crs)
            self.window = self._overlap_window()
            self._t2_offset = self._grid_offset()
            self._vrt2 = None if self._t2_offset is not None else self._warped_t2()
        except Exception:
            self.close()
            raise
        self.transform = self._src1.transform.for_window(self.window.col_off, self.window.row_off)
        self.crs = self._src1.crs
        self.height = int(self.window.height)
        self.width = int(self.window.width)

    # -- set-up ---------------------------------------------------------------------------
    def _check_georeferenced(self) -> None:
        for label, src in (("T1", self._src1), ("T2", self._src2)):
            if src.transform.is_identity and src.gcp_count:
                raise InputError(
                    f"{label} ({src.name}) is georeferenced by ground control points only ({src.gcp_count} GCPs"
                    f"{f' in {src.gcp_crs}' if src.gcp_crs else ''}), not by a regular pixel grid; warp it onto a "
                    "grid first (Raster > Projections > Warp (Reproject), or gdalwarp) and use the warped image")
            if src.crs is None:
                raise InputError(
                    f"{label} ({src.name}) has no coordinate reference system, so the two dates cannot be "
                    "aligned; assign its CRS (e.g. Raster > Projections > Assign Projection) and run again"
                )

    def _check_pixel_types(self) -> None:
        for label, src, bands in (("T1", self._src1, self.bands_t1), ("T2", self._src2, self.bands_t2)):
            complex_bands = [b for b in bands if src.complex[b - 1]]
            if complex_bands:
                raise InputError(
                    f"{label} ({src.name}) holds complex numbers (band {complex_bands[0]} is "
                    f"{src.dtypes[complex_bands[0] - 1]}, e.g. radar SLC data); the networks take real-valued "
                    "imagery: derive an amplitude or intensity image first (Raster calculator, or gdal_translate "
                    "with a VRT pixel function) and use that")

    def _overlap_window(self) -> Window:
        src1, src2 = self._src1, self._src2
        try:
            left, bottom, right, top = _transform_bounds(src2.crs, src1.crs, src2.bounds)
        except Exception as error:  # any PROJ failure means the footprints cannot be related
            raise InputError(f"cannot relate the CRSs of T1 and T2 ({_reason(error)})") from error
        b1 = _ordered(src1.bounds)
        left, bottom, right, top = _ordered((left, bottom, right, top))
        inter = (max(b1[0], left), max(b1[1], bottom), min(b1[2], right), min(b1[3], top))
        if not (inter[0] < inter[2] and inter[1] < inter[3]):
            raise InputError(
                f"the two rasters do not overlap: T1 covers {_fmt_bounds(b1)} and T2 covers "
                f"{_fmt_bounds((left, bottom, right, top))} in T1's CRS ({src1.crs}); "
                "choose two images of the same area"
            )
        if self._extent is not None:
            e = self._extent
            inter = (max(inter[0], e[0]), max(inter[1], e[1]), min(inter[2], e[2]), min(inter[3], e[3]))
            if not (inter[0] < inter[2] and inter[1] < inter[3]):
                raise InputError(f"the processing extent {_fmt_bounds(e)} lies outside the area both dates cover "
                                 f"in T1's CRS ({src1.crs}); choose an extent inside the images or none")
        # corners to pixels through the inverse transform: right for north-up and south-up grids alike
        inverse = src1.transform.inverse()
        corners = [inverse.point(x, y) for x in (inter[0], inter[2]) for y in (inter[1], inter[3])]
        cols, rows = [c for c, _ in corners], [r for _, r in corners]
        col_off, row_off = min(cols), min(rows)
        width, height = max(cols) - col_off, max(rows) - row_off
        col0 = max(0, math.floor(col_off + 1e-6))
        row0 = max(0, math.floor(row_off + 1e-6))
        col1 = min(src1.width, math.ceil(col_off + width - 1e-6))
        row1 = min(src1.height, math.ceil(row_off + height - 1e-6))
        if col1 <= col0 or row1 <= row0:
            raise InputError("the overlap of the two rasters is smaller than one T1 pixel; choose overlapping images")
        return Window(col0, row0, col1 - col0, row1 - row0)

    def _grid_offset(self) -> tuple[int, int] | None:
        """T2's pixel offset from T1 when both share one grid, so T2 can be read without warping.

        Co-registered pairs (the same CRS, pixel size and pixel alignment, e.g. two
        tiles cut from one mosaic grid) are the common case; warping them would only
        resample every pixel onto itself and cost CPU time that the network needs.
        """
        src1, src2 = self._src1, self._src2
        a, b = src1.transform, src2.transform
        if src1.crs != src2.crs or (a.a, a.b, a.d, a.e) != (b.a, b.b, b.d, b.e) or a.b or a.d:
            return None
        col = (a.c - b.c) / a.a
        row = (a.f - b.f) / a.e
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            return None
        return round(row), round(col)

    def _t2_source(self, window: Window) -> tuple[Raster, Window]:
        """The raster to read T2 from and the window there that matches ``window`` of T1."""
        if self._t2_offset is None:
            assert self._vrt2 is not None
            return self._vrt2, window
        row, col = self._t2_offset
        return self._src2, Window(window.col_off + col, window.row_off + row, window.width, window.height)

    def _warped_t2(self) -> Raster:
        src1, src2 = self._src1, self._src2
        # so that areas outside T2 read as masked (an alpha band or a mask band already does)
        add_alpha = src2.nodata is None and not _has_mask(src2)
        return warp_onto(src2, src1.crs, src1.transform, src1.width, src1.height,
                         nearest=self.categorical, add_alpha=add_alpha)

    # -- reading ----------------------------------------------------------------------------
    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read a window of the processing area from both dates.

        Validity follows GDAL's dataset mask (nodata in every band, alpha, mask band),
        so a single band that happens to equal the nodata value does not blank an RGB
        pixel; NaN in any selected band does.

        Returns:
            T1 and T2 pixels as float32 ``[bands, height, width]`` (the rasters' own
            integer type for a categorical pair; invalid pixels set to 0) and a boolean
            mask, True where both dates hold valid data.
        """
        win = Window(self.window.col_off + col, self.window.row_off + row, width, height)
        source2, win2 = self._t2_source(win)
        # categorical rasters keep their class codes in their own integer type
        out_dtype = None if self.categorical else np.float32
        with gdal_session():
            try:
                img1 = read_bands(self._src1, self.bands_t1, win, out_dtype)
                valid = (_valid(self._src1, img1, win) if self.categorical
                         else dataset_mask(self._src1, win) > 0)
            except READ_ERRORS as error:
                raise unreadable(self._src1.name, error) from error
            try:
                img2 = read_bands(source2, self.bands_t2, win2, out_dtype)
                valid &= _valid(source2, img2, win2) if self.categorical else dataset_mask(source2, win2) > 0
            except READ_ERRORS as error:
                raise unreadable(self._src2.name, error) from error
            if not self.categorical:
                valid &= np.isfinite(img1).all(axis=0) & np.isfinite(img2).all(axis=0)
        if self._mask is not None:
            with _spatial_session():
                valid &= self._inside_mask(win)
        if not valid.all():
            invalid = ~valid
            img1[:, invalid] = 0
            img2[:, invalid] = 0
        return img1, img2, valid

    def _inside_mask(self, window: Window) -> np.ndarray:
        """Where the pixels of ``window`` (T1's grid) lie inside the mask polygons (centres inside, as GDAL burns)."""
        if self._mask is None or not self._mask.GetLayer(0).GetFeatureCount():
            return np.zeros((window.height, window.width), dtype=bool)
        target = gdal.GetDriverByName("MEM").Create("", window.width, window.height, 1, gdal.GDT_Byte)
        target.SetGeoTransform(self._src1.transform.for_window(window.col_off, window.row_off).to_gdal())
        target.SetSpatialRef(self._src1.crs.srs)  # the mask's CRS: GDAL burns it as it is
        gdal.RasterizeLayer(target, [1], self._mask.GetLayer(0), burn_values=[1])
        return target.GetRasterBand(1).ReadAsArray() > 0

    def sample(self, max_pixels: int = 1 << 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A decimated read of the whole processing area, for scaling statistics."""
        factor = max(1.0, math.sqrt(self.height * self.width / max_pixels))
        out_h, out_w = max(1, int(self.height / factor)), max(1, int(self.width / factor))
        win = self.window
        source2, win2 = self._t2_source(win)
        with gdal_session():
            try:
                img1 = read_bands(self._src1, self.bands_t1, win, np.float32, (out_h, out_w))
            except READ_ERRORS as error:
                raise unreadable(self._src1.name, error) from error
            try:
                img2 = read_bands(source2, self.bands_t2, win2, np.float32, (out_h, out_w))
            except READ_ERRORS as error:
                raise unreadable(self._src2.name, error) from error
            try:
                m1 = dataset_mask(self._src1, win, (out_h, out_w))
                m2 = dataset_mask(source2, win2, (out_h, out_w))
            except READ_ERRORS as error:
                raise unreadable(f"{self._src1.name} or {self._src2.name}", error) from error
        valid = (m1 > 0) & (m2 > 0)
        valid &= np.isfinite(img1).all(axis=0) & np.isfinite(img2).all(axis=0)
        return img1, img2, valid

    def valid_sample(self, max_pixels: int = 1 << 20, min_pixels: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Valid pixels of both dates (``[bands, n]`` each), for scaling statistics; never nodata.

        The decimated :meth:`sample` is enough for most scenes. When it holds fewer than
        ``min_pixels`` valid pixels (data on a few rows of a mostly empty raster), the
        whole area is read at full resolution and every valid pixel kept (thinned to
        about ``max_pixels``), so statistics never come from nodata. Empty arrays mean
        the dates have no valid pixel in common.
        """
        img1, img2, valid = self.sample(max_pixels)
        decimated = valid.size < self.height * self.width
        if not decimated or int(valid.sum()) >= min_pixels:
            return img1[:, valid], img2[:, valid]
        parts1, parts2, found = [], [], 0
        rows = max(1, max_pixels // max(1, self.width))
        for row in range(0, self.height, rows):
            a, b, ok = self.read(row, 0, min(rows, self.height - row), self.width)
            parts1.append(a[:, ok])
            parts2.append(b[:, ok])
            found += int(ok.sum())
        v1, v2 = np.concatenate(parts1, axis=1), np.concatenate(parts2, axis=1)
        step = max(1, found // max_pixels)
        return v1[:, ::step], v2[:, ::step]

    # -- facts --------------------------------------------------------------------------------
    # -- facts --------------------------------------------------------------------------------
    def dtypes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        d1 = tuple(self._src1.dtypes[b - 1] for b in self.bands_t1)
        d2 = tuple(self._src2.dtypes[b - 1] for b in self.bands_t2)
        return d1, d2

    def file_scales(self) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
        """``(scale, offset)`` each selected band's file declares (GDAL's ``value = raw * scale + offset``)."""
        s1 = tuple((self._src1.scales[b - 1], self._src1.offsets[b - 1]) for b in self.bands_t1)
        s2 = tuple((self._src2.scales[b - 1], self._src2.offsets[b - 1]) for b in self.bands_t2)
        return s1, s2

    def pixel_area_m2(self, rows: np.ndarray) -> np.ndarray:
        """Ground area of one pixel in each of ``rows`` (processing-area rows), in m²."""
        return pixel_area_m2(self.crs, self.transform, rows)

    def close(self) -> None:
        for name in ("_vrt2", "_src2", "_src1"):
            dataset = getattr(self, name, None)
            if dataset is not None:
                dataset.close()
        self._mask = None

    def __enter__(self) -> RasterPair:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- reading ------------------------------------------------------------------------------


def read_bands(raster: Raster, bands: Sequence[int], window: Window, dtype: Any = None,
               out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Bands of ``raster`` in ``window`` as ``[bands, height, width]``, in ``dtype`` (None: the bands' own type).

    With ``out_shape`` the window is read decimated to that size by nearest neighbour.
    GDAL converts while reading, so a float read of integer pixels costs no extra copy.
    Call inside :func:`gdal_session`.
    """
    height, width = out_shape or (window.height, window.width)
    out_type = np.dtype(dtype) if dtype is not None else np.result_type(*(raster.dtypes[b - 1] for b in bands))
    out = np.empty((len(bands), height, width), dtype=out_type)
    for index, number in enumerate(bands):
        pixels = raster.dataset.GetRasterBand(number).ReadAsArray(
            window.col_off, window.row_off, window.width, window.height, width, height, buf_obj=out[index],
            resample_alg=gdal.GRIORA_NearestNeighbour)
        if pixels is None:  # a GDAL without exceptions here would return None
            raise RuntimeError(gdal.GetLastErrorMsg() or "GDAL returned no pixels")
    return out


def _read_mask(raster: Raster, band: int, window: Window, out_shape: tuple[int, int] | None) -> np.ndarray:
    height, width = out_shape or (window.height, window.width)
    mask = raster.dataset.GetRasterBand(band).GetMaskBand().ReadAsArray(
        window.col_off, window.row_off, window.width, window.height, width, height,
        resample_alg=gdal.GRIORA_NearestNeighbour)
    if mask is None:
        raise RuntimeError(gdal.GetLastErrorMsg() or "GDAL returned no mask")
    return mask


def dataset_mask(raster: Raster, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """GDAL's validity of the pixels of ``window`` (0: nodata, 255: data), for the whole dataset.

    A mask shared by all bands (an alpha band or a mask band) decides alone; an RGBA
    image whose bands also have a nodata value uses its alpha band; otherwise a pixel
    is valid where any band holds data (nodata in every band). Call inside :func:`gdal_session`.
    """
    if raster.mask_flags and raster.mask_flags[0] & gdal.GMF_PER_DATASET:
        return _read_mask(raster, 1, window, out_shape)
    if raster.count == 4 and raster.colorinterp[0] == "red":
        return _read_mask(raster, 4, window, out_shape)
    mask = _read_mask(raster, 1, window, out_shape)
    for band in range(2, raster.count + 1):
        mask |= _read_mask(raster, band, window, out_shape)
    return mask


def _valid(source: Raster, pixels: np.ndarray, window: Window) -> np.ndarray:
    """Where ``pixels`` (read from ``source``) hold data.

    When nodata is a plain value (no alpha band or mask), comparing with it gives the
    same mask as GDAL's, without GDAL reading every block a second time; otherwise
    GDAL's dataset mask decides.
    """
    if source.nodata is not None and all(flags == gdal.GMF_NODATA for flags in source.mask_flags):
        if pixels.shape[0] == 1:  # one band (a land-cover map): no reduction over bands
            return pixels[0] != source.nodata
        return (pixels != source.nodata).any(axis=0)  # as GDAL: invalid where every band is nodata
    return dataset_mask(source, window) > 0


def _has_mask(src: Raster) -> bool:
    """Whether the dataset already says where it has no data (an alpha band or a mask band)."""
    return not src.count or not src.mask_flags[0] & gdal.GMF_ALL_VALID


def warp_onto(source: Raster, crs: CRS, transform: GeoTransform, width: int, height: int, *,
              nearest: bool = False, add_alpha: bool = False) -> Raster:
    """A warped view (a GDAL warped VRT) of ``source`` on the grid ``crs``, ``transform``, ``width`` x ``height``.

    Nothing is computed until pixels are read, so a view of any size costs no memory.
    Bilinear, or nearest neighbour for categories; the source's nodata is the view's
    nodata and an alpha band is carried over; ``add_alpha`` adds one so that areas
    outside a source without nodata or mask read as masked.

    ``gdal.Warp`` only builds north-up grids from bounds and sizes, so the view is
    built on that grid and then given ``transform`` exactly (south-up or rotated
    grids included), in its description and in its transformer.
    """
    with gdal_session():
        left, bottom, right, top = _ordered(_bounds(transform, width, height))
        options = gdal.WarpOptions(format="VRT", dstSRS=crs.to_wkt(), outputBounds=(left, bottom, right, top),
                                   width=width, height=height, dstAlpha=add_alpha,
                                   resampleAlg="near" if nearest else "bilinear")
        warped = gdal.Warp("", source.dataset, options=options)
        root = ElementTree.fromstring(warped.GetMetadata("xml:VRT")[0])
        warped = None
        geotransform = transform.to_gdal()
        inverse = gdal.InvGeoTransform(geotransform)
        root.find("GeoTransform").text = ", ".join(repr(float(v)) for v in geotransform)
        transformer = root.find(".//GenImgProjTransformer")
        transformer.find("DstGeoTransform").text = ",".join(repr(float(v)) for v in geotransform)
        transformer.find("DstInvGeoTransform").text = ",".join(repr(float(v)) for v in inverse)
        # the source by a name that opens it again wherever the working folder is
        source_element = root.find(".//GDALWarpOptions/SourceDataset")
        source_element.text = source.source
        source_element.set("relativeToVRT", "0")
        xml = ElementTree.tostring(root, encoding="unicode")
        return Raster(gdal.Open(xml), source.name, xml)


def _bounds(transform: GeoTransform, width: int, height: int) -> tuple[float, float, float, float]:
    corners = [transform.point(col, row) for col, row in ((0, 0), (0, height), (width, height), (width, 0))]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _transform_bounds(source: CRS, target: CRS, bounds: Sequence[float]) -> tuple[float, float, float, float]:
    """``bounds`` (left, bottom, right, top) in ``source`` as bounds in ``target``, densified along the edges."""
    with _spatial_session():
        transformation = osr.CoordinateTransformation(source.srs, target.srs)
        return tuple(transformation.TransformBounds(*bounds, 21))


def _mask_layer(geometries: Sequence[dict[str, Any]], crs: CRS) -> Any:
    """The mask polygons (GeoJSON-like mappings, in T1's CRS) as an in-memory OGR layer, for burning."""
    with _spatial_session():
        driver = ogr.GetDriverByName("Memory") or ogr.GetDriverByName("MEM")
        store = driver.CreateDataSource("mask")
        layer = store.CreateLayer("mask", srs=crs.srs, geom_type=ogr.wkbUnknown)
        for number, geometry in enumerate(geometries, start=1):
            try:
                shape = ogr.CreateGeometryFromJson(json.dumps(geometry))
            except (RuntimeError, TypeError, ValueError) as error:
                raise InputError(f"mask geometry {number} is not a valid geometry ({_reason(error)}); use a polygon "
                                 "layer as the mask") from error
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetGeometry(shape)
            layer.CreateFeature(feature)
        return store


def pixel_area_m2(crs: Any, transform: Any, rows: np.ndarray) -> np.ndarray:
    """Area of one pixel per row: constant for projected CRSs, by latitude for geographic ones.

    ``crs`` is a :class:`CRS` (or anything with ``is_geographic`` and
    ``linear_units_factor``), ``transform`` a :class:`GeoTransform` (or anything with
    the coefficients ``a`` to ``f``).
    """
    rows = np.asarray(rows, dtype=np.float64)
    if crs is not None and crs.is_geographic:
        # Cell between two parallels on a sphere of the ellipsoid's area.
        lat_top = np.radians(np.clip(transform.f + rows * transform.e, -90, 90))
        lat_bottom = np.radians(np.clip(transform.f + (rows + 1) * transform.e, -90, 90))
        d_lon = np.radians(abs(transform.a))
        return AUTHALIC_RADIUS_M**2 * d_lon * np.abs(np.sin(lat_top) - np.sin(lat_bottom))
    unit = crs.linear_units_factor[1] if crs is not None else 1.0
    return np.full(rows.shape, abs(transform.a * transform.e - transform.b * transform.d) * unit * unit)


def _ordered(bounds: Sequence[float]) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` with left < right and bottom < top, whatever way the grid runs."""
    x0, y0, x1, y1 = bounds
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _fmt_bounds(bounds: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in bounds) + ")"


# --- writing --------------------------------------------------------------------------------

BLOCK_SIZE = 256


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Refuse an output whose folder is missing or not writable, before any work is done."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder does not exist: {folder}; create it or choose another location")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder is not writable: {folder}; choose a folder you can write to")
    if path.is_dir():
        raise InputError(f"output path is a folder: {path}; give a file name such as change.tif")
    return path


#: ``errno`` values that mean the disk (or the user's quota) is full.
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def outputs_folders(outputs: Mapping[str, Path]) -> list[Path]:
    """The folders a run writes into (outputs by product name), for messages about them."""
    return list(dict.fromkeys(Path(os.path.abspath(p)).parent for p in outputs.values()))


@contextmanager
def writing_outputs(folders: Sequence[Path]) -> Iterator[None]:
    """Turn "disk full" while writing outputs, however GDAL or Python reports it, into a clear message."""
    try:
        yield
    except (OSError, RuntimeError) as error:  # GDAL raises RuntimeError
        text = str(error).lower()
        if getattr(error, "errno", None) in _FULL or any(
                words in text for words in ("no space left", "disk space", "quota", "file too large")):
            where = ", ".join(str(f) for f in folders) or "the output folder"
            raise InputError(
                f"the disk holding {where} is full (or a file size limit was reached), so the outputs could not "
                "be written (nothing half-written was left behind); free some space or choose a folder on "
                "another disk, and run again") from error
        raise


class Terminated(BaseException):
    """SIGTERM arrived during a run: unwinds it like Ctrl+C does, so its temporary files are removed."""


@contextmanager
def terminate_cleanly(cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """While a run writes, let SIGTERM unwind it and remove its files, then end the process as asked.

    Python ends on SIGTERM without running ``finally`` blocks or ``except`` clauses,
    which left hidden 0-byte ``.partial`` files beside the outputs; SIGINT already
    unwound. Inside this block SIGTERM raises :class:`Terminated`; ``cleanup`` runs,
    the previous handler is restored and the signal delivered again, so the process
    still ends the way its sender expects. A nested block leaves the work to the
    outermost one (whose ``cleanup`` must then cover everything, the inner run's own
    ``except`` clauses having run on the way out). Outside the main thread (QGIS's
    task threads) signals cannot be caught, and this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        yield
        return
    if getattr(previous, "_scd_terminate", False):  # an outer run already handles it
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated("terminated by SIGTERM")

    handler._scd_terminate = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, handler)
    terminated = False
    try:
        yield
    except Terminated:
        terminated = True
        if cleanup is not None:
            cleanup()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if terminated:
            os.kill(os.getpid(), signal.SIGTERM)


def temporary_path(final: Path) -> Path:
    """A hidden name beside ``final`` that never looks like a finished output."""
    return final.with_name(f".{final.stem}.partial-{uuid.uuid4().hex[:8]}{final.suffix}")


def publish(temporary: Path, final: Path) -> None:
    """Move a complete output and its sidecars into place, the raster itself last."""
    for old, new in zip(sidecars(temporary), sidecars(final), strict=True):
        if old.exists():
            os.replace(old, new)
        elif new.exists():
            new.unlink()  # a stale legend from an earlier run would describe other data
    os.replace(temporary, final)


def discard(temporary: Path) -> None:
    for path in (temporary, *sidecars(temporary)):
        path.unlink(missing_ok=True)


def read_rows(path: Path, rows_per_chunk: int = BLOCK_SIZE) -> Iterator[tuple[int, np.ndarray]]:
    """Band 1 of a raster in chunks of rows, for passes over finished outputs."""
    with gdal_session():
        dataset = gdal.OpenEx(str(path), gdal.OF_RASTER)
        band = dataset.GetRasterBand(1)
        width, height = dataset.RasterXSize, dataset.RasterYSize
    for start in range(0, height, rows_per_chunk):
        count = min(rows_per_chunk, height - start)
        with gdal_session():
            rows = band.ReadAsArray(0, start, width, count)
        yield start, rows


@contextmanager
def _failed_writes(path: Path) -> Iterator[None]:
    """Raise ``OSError`` when GDAL reports a failed write, however it reports it.

    GDAL writes compressed GeoTIFF blocks when a dataset is flushed or closed and
    only logs a failure there ("_tiffWriteProc: No space left on device"); the file
    is then silently cut short. Collecting GDAL's errors for this thread while writing
    turns such a failure into an exception, so the run fails and cleans up instead of
    publishing a damaged output; an error GDAL raises itself becomes an ``OSError`` too.
    """
    failures: list[str] = []

    def collect(level: int, _number: int, message: str) -> None:
        if level >= gdal.CE_Failure:
            failures.append(message)

    gdal.PushErrorHandler(collect)
    try:
        with gdal_session():
            yield
    except RuntimeError as error:
        failures.append(str(error))
    finally:
        gdal.PopErrorHandler()
    if failures:
        raise OSError(f"cannot write {path}: {failures[0]}")


def write_array(path: str | os.PathLike[str], values: np.ndarray, crs: CRS | None, transform: GeoTransform, *,
                scales: Sequence[tuple[float, float]] | None = None) -> None:
    """Write a small ``[bands, rows, cols]`` array as a deflate-compressed, pixel-interleaved GeoTIFF.

    For tiles and other arrays that fit in memory (the products go through :class:`RasterWriter`).
    ``scales`` are each band's ``(scale, offset)``, declared in the file so that readers take the
    values in their real units.
    """
    from osgeo import gdal_array

    bands, height, width = values.shape
    with gdal_session():
        dataset = gdal.GetDriverByName("GTiff").Create(
            str(path), width, height, bands, gdal_array.NumericTypeCodeToGDALTypeCode(values.dtype.type),
            ["COMPRESS=DEFLATE", "INTERLEAVE=PIXEL"])
        dataset.SetGeoTransform(transform.to_gdal())
        if crs is not None:
            dataset.SetProjection(crs.to_wkt())
        for index in range(bands):
            band = dataset.GetRasterBand(index + 1)
            band.WriteArray(values[index])
            if scales is not None:
                band.SetScale(float(scales[index][0]))
                band.SetOffset(float(scales[index][1]))
        dataset.FlushCache()
        dataset = None


class RasterWriter:
    """Writes rows of one band in order to a tiled, compressed GeoTIFF.

    Rows are buffered until a whole row of 256 x 256 blocks is complete, so no
    compressed block is ever written twice.
    """

    def __init__(self, path: Path, *, width: int, height: int, dtype: str, nodata: float,
                 crs: Any, transform: Any) -> None:
        self.path = path
        self.height, self.width = height, width
        self.dtype = np.dtype(dtype)
        creation = {"COMPRESS": "DEFLATE", "ZLEVEL": "6", "BIGTIFF": "IF_SAFER"}
        tiled = width >= BLOCK_SIZE and height >= BLOCK_SIZE
        if tiled:
            creation.update(TILED="YES", BLOCKXSIZE=str(BLOCK_SIZE), BLOCKYSIZE=str(BLOCK_SIZE))
        if self.dtype.kind == "f":
            # Probabilities barely compress; deflate level 1 writes them 2x faster than level 6 for
            # a file 2-3 % larger (measured on a 2048 x 2048 probability, docs/performance.md).
            creation.update(PREDICTOR="3", ZLEVEL="1")
        self._block_rows = BLOCK_SIZE if tiled else height
        self._block_rows = max(1, min(self._block_rows, height))
        from osgeo import gdal_array

        try:
            with gdal_session():
                self._dst = gdal.GetDriverByName("GTiff").Create(
                    str(path), width, height, 1, gdal_array.NumericTypeCodeToGDALTypeCode(self.dtype.type),
                    [f"{key}={value}" for key, value in creation.items()])
                self._dst.SetGeoTransform(tuple(float(v) for v in (transform.c, transform.a, transform.b,
                                                                   transform.f, transform.d, transform.e)))
                self._dst.SetProjection(_wkt(crs))
                self._dst.GetRasterBand(1).SetNoDataValue(float(nodata))
                self._dst.SetMetadataItem(PRODUCT_TAG, "semantic change detection")  # marks the file as ours
        except RuntimeError as error:
            self._dst = None
            discard(path)  # a file GDAL created before the error is no output
            raise InputError(f"cannot create {path} ({_reason(error)}); check the folder and free disk space"
                             ) from error
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._next_row = 0

    def write_rows(self, start_row: int, rows: np.ndarray) -> None:
        if start_row != self._next_row + self._pending_rows:
            raise ValueError(f"rows must arrive in order: expected {self._next_row + self._pending_rows}, "
                             f"got {start_row}")
        self._pending.append(rows.astype(self.dtype, copy=False))
        self._pending_rows += rows.shape[0]
        while self._pending_rows >= self._block_rows:
            self._flush(self._block_rows)

    def _flush(self, count: int) -> None:
        data = np.concatenate(self._pending, axis=0) if len(self._pending) > 1 else self._pending[0]
        chunk, rest = data[:count], data[count:]
        with _failed_writes(self.path):
            self._dst.GetRasterBand(1).WriteArray(np.ascontiguousarray(chunk), 0, self._next_row)
        self._next_row += count
        self._pending = [rest] if rest.shape[0] else []
        self._pending_rows = rest.shape[0]

    def close(self) -> None:
        """Write what is left and close; raises if rows are missing."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        with _failed_writes(self.path):  # GDAL writes most blocks only now, and reports failures only in its log
            self._close_dataset()
        if self._next_row != self.height:
            raise RuntimeError(f"{self.path}: {self._next_row} of {self.height} rows were written")

    def abort(self) -> None:
        with gdal_session():
            self._close_dataset()

    def _close_dataset(self) -> None:
        dataset, self._dst = self._dst, None
        if dataset is None:
            return
        close = getattr(dataset, "Close", None)  # GDAL >= 3.8 says whether closing (writing) worked
        if close is not None:
            close()
        else:
            dataset.FlushCache()
            dataset = None

"""Raster input and output: the only module that opens files with rasterio.

* :class:`RasterPair` opens the two dates, warps T2 onto T1's grid, finds the area
  both cover and reads aligned windows with their combined validity mask.
* :class:`RasterWriter` writes finished rows to a tiled, compressed GeoTIFF under a
  temporary name; :func:`publish` moves it (and its sidecars) into place only when
  everything is complete, so nothing half-written ever looks finished.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from .errors import InputError
from .files import sidecars
from .pathguard import PRODUCT_TAG, source_file

#: Authalic radius of the WGS84 ellipsoid: a sphere with the ellipsoid's area.
AUTHALIC_RADIUS_M = 6371007.181

#: What rasterio raises when pixels cannot be read (its I/O error is an ``OSError``, not a ``RasterioError``).
READ_ERRORS = (RasterioError, OSError)


def open_raster(path: str | os.PathLike[str]) -> rasterio.DatasetReader:
    """Open a raster or raise an :class:`InputError` that says why it cannot be read."""
    path = str(path)
    file = source_file(path)
    if file is not None and not Path(file).exists():
        raise InputError(f"raster not found: {path}; check the path or choose another layer")
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as error:
        raise InputError(f"cannot read {path} as a raster ({error}); is it a GDAL-readable image?") from error


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

    T1's grid is the master. T2 is read through a warped view (bilinear) onto T1's
    CRS, transform and size, whatever its own CRS, resolution or extent; when T2
    already lies on T1's grid it is read directly at the matching offset.
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
        self._mask = list(mask) if mask is not None else None
        self._src1 = open_raster(path_t1)
        try:
            self._src2 = open_raster(path_t2)
        except InputError:
            self._src1.close()
            raise
        try:
            self.bands_t1 = check_bands(bands_t1, self._src1.count, f"T1 ({path_t1})", needed_bands)
            self.bands_t2 = check_bands(bands_t2, self._src2.count, f"T2 ({path_t2})", needed_bands)
            self._check_georeferenced()
            self._check_pixel_types()
            self.window = self._overlap_window()
            self._t2_offset = self._grid_offset()
            self._vrt2 = None if self._t2_offset is not None else self._warped_t2()
        except Exception:
            self.close()
            raise
        self.transform: Affine = rasterio.windows.transform(self.window, self._src1.transform)
        self.crs = self._src1.crs
        self.height = int(self.window.height)
        self.width = int(self.window.width)

    # -- set-up ---------------------------------------------------------------------------
    def _check_georeferenced(self) -> None:
        for label, src in (("T1", self._src1), ("T2", self._src2)):
            gcps, gcp_crs = src.gcps if src.transform.is_identity else ((), None)
            if gcps:
                raise InputError(
                    f"{label} ({src.name}) is georeferenced by ground control points only ({len(gcps)} GCPs"
                    f"{f' in {gcp_crs}' if gcp_crs else ''}), not by a regular pixel grid; warp it onto a grid "
                    "first (Raster > Projections > Warp (Reproject), or gdalwarp) and use the warped image")
            if src.crs is None:
                raise InputError(
                    f"{label} ({src.name}) has no coordinate reference system, so the two dates cannot be "
                    "aligned; assign its CRS (e.g. Raster > Projections > Assign Projection) and run again"
                )

    def _check_pixel_types(self) -> None:
        for label, src, bands in (("T1", self._src1, self.bands_t1), ("T2", self._src2, self.bands_t2)):
            complex_bands = [b for b in bands if np.dtype(src.dtypes[b - 1]).kind == "c"]
            if complex_bands:
                raise InputError(
                    f"{label} ({src.name}) holds complex numbers (band {complex_bands[0]} is "
                    f"{src.dtypes[complex_bands[0] - 1]}, e.g. radar SLC data); the networks take real-valued "
                    "imagery: derive an amplitude or intensity image first (Raster calculator, or gdal_translate "
                    "with a VRT pixel function) and use that")

    def _overlap_window(self) -> Window:
        src1, src2 = self._src1, self._src2
        try:
            left, bottom, right, top = transform_bounds(src2.crs, src1.crs, *src2.bounds, densify_pts=21)
        except Exception as error:  # any PROJ failure means the footprints cannot be related
            raise InputError(f"cannot relate the CRSs of T1 and T2 ({error})") from error
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
        corners = [~src1.transform * (x, y) for x in (inter[0], inter[2]) for y in (inter[1], inter[3])]
        cols, rows = [c for c, _ in corners], [r for _, r in corners]
        window = Window(min(cols), min(rows), max(cols) - min(cols), max(rows) - min(rows))
        col0 = max(0, math.floor(window.col_off + 1e-6))
        row0 = max(0, math.floor(window.row_off + 1e-6))
        col1 = min(src1.width, math.ceil(window.col_off + window.width - 1e-6))
        row1 = min(src1.height, math.ceil(window.row_off + window.height - 1e-6))
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

    def _t2_source(self, window: Window) -> tuple[rasterio.io.DatasetReaderBase, Window]:
        """The dataset to read T2 from and the window there that matches ``window`` of T1."""
        if self._t2_offset is None:
            return self._vrt2, window
        row, col = self._t2_offset
        return self._src2, Window(window.col_off + col, window.row_off + row, window.width, window.height)

    def _warped_t2(self) -> WarpedVRT:
        src1, src2 = self._src1, self._src2
        options: dict[str, Any] = {
            "crs": src1.crs, "transform": src1.transform, "width": src1.width, "height": src1.height,
            "resampling": Resampling.nearest if self.categorical else Resampling.bilinear,
        }
        if src2.nodata is None and not _has_mask(src2):
            options["add_alpha"] = True  # so that areas outside T2 read as masked (an alpha band already does)
        return WarpedVRT(src2, **options)

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
        out_dtype = None if self.categorical else "float32"
        try:
            img1 = self._src1.read(self.bands_t1, window=win, out_dtype=out_dtype)
            valid = _valid(self._src1, img1, win) if self.categorical else self._src1.dataset_mask(window=win) > 0
        except READ_ERRORS as error:
            raise unreadable(self._src1.name, error) from error
        try:
            img2 = source2.read(self.bands_t2, window=win2, out_dtype=out_dtype)
            valid &= _valid(source2, img2, win2) if self.categorical else source2.dataset_mask(window=win2) > 0
        except READ_ERRORS as error:
            raise unreadable(self._src2.name, error) from error
        if not self.categorical:
            valid &= np.isfinite(img1).all(axis=0) & np.isfinite(img2).all(axis=0)
        if self._mask is not None:
            valid &= rasterio.features.geometry_mask(self._mask, (height, width), self._src1.window_transform(win),
                                                     invert=True) if self._mask else False
        if not valid.all():
            invalid = ~valid
            img1[:, invalid] = 0
            img2[:, invalid] = 0
        return img1, img2, valid

    def sample(self, max_pixels: int = 1 << 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A decimated read of the whole processing area, for scaling statistics."""
        factor = max(1.0, math.sqrt(self.height * self.width / max_pixels))
        out_h, out_w = max(1, int(self.height / factor)), max(1, int(self.width / factor))
        win = self.window
        shape1 = (len(self.bands_t1), out_h, out_w)
        source2, win2 = self._t2_source(win)
        try:
            img1 = self._src1.read(self.bands_t1, window=win, out_shape=shape1, out_dtype="float32",
                                   resampling=Resampling.nearest)
        except READ_ERRORS as error:
            raise unreadable(self._src1.name, error) from error
        try:
            img2 = source2.read(self.bands_t2, window=win2, out_shape=shape1, out_dtype="float32",
                                resampling=Resampling.nearest)
        except READ_ERRORS as error:
            raise unreadable(self._src2.name, error) from error
        try:
            m1 = self._src1.dataset_mask(window=win, out_shape=shape1[1:], resampling=Resampling.nearest)
            m2 = source2.dataset_mask(window=win2, out_shape=shape1[1:], resampling=Resampling.nearest)
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

    def __enter__(self) -> RasterPair:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _valid(source: rasterio.io.DatasetReaderBase, pixels: np.ndarray, window: Window) -> np.ndarray:
    """Where ``pixels`` (read from ``source``) hold data.

    When nodata is a plain value (no alpha band or mask), comparing with it gives the
    same mask as GDAL's, without GDAL reading every block a second time; otherwise
    GDAL's dataset mask decides.
    """
    from rasterio.enums import MaskFlags

    if source.nodata is not None and all(flags == [MaskFlags.nodata] for flags in source.mask_flag_enums):
        if pixels.shape[0] == 1:  # one band (a land-cover map): no reduction over bands
            return pixels[0] != source.nodata
        return (pixels != source.nodata).any(axis=0)  # as GDAL: invalid where every band is nodata
    return source.dataset_mask(window=window) > 0


def pixel_area_m2(crs: rasterio.crs.CRS, transform: Affine, rows: np.ndarray) -> np.ndarray:
    """Area of one pixel per row: constant for projected CRSs, by latitude for geographic ones."""
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


def _has_mask(src: rasterio.DatasetReader) -> bool:
    """Whether the dataset already says where it has no data (an alpha band or a mask band)."""
    from rasterio.enums import MaskFlags

    flags = src.mask_flag_enums[0] if src.count else ()
    return MaskFlags.all_valid not in flags


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
    except (OSError, RasterioError) as error:
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
    with rasterio.open(path) as src:
        for start in range(0, src.height, rows_per_chunk):
            count = min(rows_per_chunk, src.height - start)
            yield start, src.read(1, window=Window(0, start, src.width, count))


@contextmanager
def _failed_writes(path: Path) -> Iterator[None]:
    """Raise ``OSError`` when GDAL reports a failed write that rasterio does not raise.

    GDAL writes compressed GeoTIFF blocks when a dataset is flushed or closed and
    only logs a failure there ("_tiffWriteProc: No space left on device"); the file
    is then silently cut short. Collecting GDAL's errors for this thread while writing
    turns such a failure into an exception, so the run fails and cleans up instead of
    publishing a damaged output.
    """
    from osgeo import gdal

    failures: list[str] = []

    def collect(level: int, _number: int, message: str) -> None:
        if level >= gdal.CE_Failure:
            failures.append(message)

    gdal.PushErrorHandler(collect)
    try:
        yield
    finally:
        gdal.PopErrorHandler()
    if failures:
        raise OSError(f"cannot write {path}: {failures[0]}")


class RasterWriter:
    """Writes rows of one band in order to a tiled, compressed GeoTIFF.

    Rows are buffered until a whole row of 256 x 256 blocks is complete, so no
    compressed block is ever written twice.
    """

    def __init__(self, path: Path, *, width: int, height: int, dtype: str, nodata: float,
                 crs: rasterio.crs.CRS, transform: Affine) -> None:
        self.path = path
        self.height, self.width = height, width
        self.dtype = np.dtype(dtype)
        profile: dict[str, Any] = {
            "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": dtype,
            "crs": crs, "transform": transform, "nodata": nodata,
            "compress": "deflate", "zlevel": 6, "BIGTIFF": "IF_SAFER",
        }
        if width >= BLOCK_SIZE and height >= BLOCK_SIZE:
            profile.update(tiled=True, blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE)
        if self.dtype.kind == "f":
            # Probabilities barely compress; deflate level 1 writes them 2x faster than level 6 for
            # a file 2-3 % larger (measured on a 2048 x 2048 probability, docs/performance.md).
            profile.update(predictor=3, zlevel=1)
        self._block_rows = BLOCK_SIZE if profile.get("tiled") else height
        self._block_rows = max(1, min(self._block_rows, height))
        try:
            self._dst = rasterio.open(path, "w", **profile)
            self._dst.update_tags(**{PRODUCT_TAG: "semantic change detection"})  # marks the file as ours
        except RasterioError as error:
            raise InputError(f"cannot create {path} ({error}); check the folder and free disk space") from error
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
            self._dst.write(chunk, 1, window=Window(0, self._next_row, self.width, count))
        self._next_row += count
        self._pending = [rest] if rest.shape[0] else []
        self._pending_rows = rest.shape[0]

    def close(self) -> None:
        """Write what is left and close; raises if rows are missing."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        with _failed_writes(self.path):  # GDAL writes most blocks only now, and reports failures only in its log
            self._dst.close()
        if self._next_row != self.height:
            raise RuntimeError(f"{self.path}: {self._next_row} of {self.height} rows were written")

    def abort(self) -> None:
        self._dst.close()


# --- GDAL ------------------------------------------------------------------------------


@contextmanager
def gdal_session() -> Iterator[Any]:
    """GDAL with exceptions on and PAM enabled for this thread, both restored afterwards.

    PAM is forced on because the RAT and category names of a GeoTIFF can only live in
    the ``.aux.xml`` sidecar; the setting is thread-local so nothing else changes.
    """
    from osgeo import gdal

    old_pam = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "YES")
    try:
        manager = getattr(gdal, "ExceptionMgr", None)  # GDAL >= 3.7
        if manager is not None:
            with manager(useExceptions=True):
                yield gdal
        else:
            was_on = gdal.GetUseExceptions()
            gdal.UseExceptions()
            try:
                yield gdal
            finally:
                if not was_on:
                    gdal.DontUseExceptions()
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", old_pam)


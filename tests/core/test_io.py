"""Raster input checks and pixel areas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from helpers import PointwiseModel, make_card, read_band
from rasterio.crs import CRS

from core.compare import compare_classifications
from core.engine import OutputPaths, RunOptions, run_change_detection
from core.errors import InputError
from core.io import RasterPair, RasterWriter, check_bands, check_output_path, gdal_session, pixel_area_m2


def test_band_numbers_are_checked_against_raster_and_model() -> None:
    assert check_bands([3, 2, 1], 4, "T1", 3) == (3, 2, 1)
    with pytest.raises(InputError, match="band 5 was requested for T1, which has 4 bands"):
        check_bands([1, 2, 5], 4, "T1", 3)
    with pytest.raises(InputError, match="exactly 3"):
        check_bands([1, 2], 4, "T1", 3)


def test_pixel_area_projected_and_geographic() -> None:
    utm = pixel_area_m2(CRS.from_epsg(32633), Affine(10, 0, 0, 0, -10, 0), np.arange(3))
    np.testing.assert_allclose(utm, 100.0)
    feet = pixel_area_m2(CRS.from_epsg(2263), Affine(1, 0, 0, 0, -1, 0), np.arange(1))
    assert feet[0] == pytest.approx(0.3048006**2, rel=1e-4)
    # one arc-second-ish cell shrinks towards the pole
    geo = pixel_area_m2(CRS.from_epsg(4326), Affine(0.001, 0, 0, 0, -0.001, 60.0), np.array([0, 30000]))
    equator_cell = 6371007.181**2 * np.radians(0.001) ** 2
    assert geo[0] == pytest.approx(equator_cell * np.cos(np.radians(60)), rel=1e-3)
    assert geo[1] > geo[0]  # row 30000 lies at 30 degrees north


def test_output_path_checks(tmp_path) -> None:
    assert check_output_path(tmp_path / "a.tif") == tmp_path / "a.tif"
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(tmp_path)


def test_writer_refuses_rows_out_of_order_and_reports_missing_rows(tmp_path) -> None:
    writer = RasterWriter(tmp_path / "x.tif", width=8, height=8, dtype="uint8", nodata=255,
                          crs=CRS.from_epsg(32633), transform=Affine(1, 0, 500000, 0, -1, 0))
    writer.write_rows(0, np.zeros((3, 8), np.uint8))
    with pytest.raises(ValueError, match="in order"):
        writer.write_rows(5, np.zeros((1, 8), np.uint8))
    with pytest.raises(RuntimeError, match="3 of 8 rows"):
        writer.close()


# --- signed 8-bit rasters -------------------------------------------------------------------

def _write_signed(path: Path, data: np.ndarray, *, signed_bytes: bool, origin: tuple[float, float],
                  nodata: float | None = None) -> Path:
    """``data`` (``[bands, H, W]``, values in -128..127) as a signed 8-bit GeoTIFF or as the same values in int16.

    The 8-bit file is written the way GDAL 3.6 writes int8 (Byte with ``PIXELTYPE=SIGNEDBYTE``); GDAL 3.7 and
    later read such a file as their Int8 type.
    """
    from osgeo import osr

    with gdal_session() as gdal:
        if signed_bytes:
            dataset = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0],
                                                           gdal.GDT_Byte, ["PIXELTYPE=SIGNEDBYTE"])
        else:
            dataset = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0],
                                                           gdal.GDT_Int16)
        dataset.SetGeoTransform((origin[0], 10.0, 0.0, origin[1], 0.0, -10.0))
        crs = osr.SpatialReference()
        crs.ImportFromEPSG(32633)
        dataset.SetSpatialRef(crs)
        for index, band_data in enumerate(data, start=1):
            band = dataset.GetRasterBand(index)
            if nodata is not None:
                band.SetNoDataValue(nodata)
            band.WriteArray(band_data.astype(np.int8).view(np.uint8) if signed_bytes else band_data.astype(np.int16))
        dataset = None
    return path


def _signed_scene(folder: Path, *, signed_bytes: bool, nodata: float | None = None, bands: int = 3,
                  low: int = -61, high: int = 14) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """T1 on its grid and T2 half a pixel off it (so T2 is warped), with values in ``low..high``."""
    rng = np.random.default_rng(11)
    t1 = rng.integers(low, high + 1, (bands, 64, 64))
    t2 = t1.copy()
    t2[:, 20:40, 10:50] = rng.integers(low, high + 1, (bands, 20, 40))
    if nodata is not None:
        t1[:, :4, :] = nodata
        t2[:, :, -3:] = nodata
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "int8" if signed_bytes else "int16"
    p1 = _write_signed(folder / f"t1_{suffix}.tif", t1, signed_bytes=signed_bytes, origin=(500000, 4000000),
                       nodata=nodata)
    p2 = _write_signed(folder / f"t2_{suffix}.tif", t2, signed_bytes=signed_bytes, origin=(500005, 3999995),
                       nodata=nodata)
    return p1, p2, t1, t2


def _bands_of(path: Path) -> np.ndarray:
    with gdal_session() as gdal:
        dataset = gdal.Open(str(path))
        data = dataset.ReadAsArray()
        dataset = None
    return data


def test_signed_bytes_are_read_as_their_negative_values(tmp_path: Path) -> None:
    """An int8 raster (GDAL 3.6: Byte with PIXELTYPE=SIGNEDBYTE) reads as -23, not 233, on every read path."""
    p1, p2, t1, _ = _signed_scene(tmp_path, signed_bytes=True, nodata=-128)
    with RasterPair(p1, p2, (1, 2, 3), (1, 2, 3), needed_bands=3) as pair:
        img1, img2, valid = pair.read(0, 0, pair.height, pair.width)
        sample1, sample2, sample_valid = pair.sample()
    assert img1.min() >= -61 and img1.max() <= 14 and img2.min() >= -61 and img2.max() <= 14
    assert (img1[:, valid] < 0).any()
    np.testing.assert_array_equal(img1[:, valid], t1[:, valid].astype(np.float32))
    # -128 is the nodata value: GDAL's own mask of such a file says "all valid", the value itself is nodata
    assert not valid[:4].any() and not valid[:, -3:].any() and valid[4:, :-3].all()
    assert sample1[:, sample_valid].min() >= -61 and sample2[:, sample_valid].max() <= 14


def test_signed_bytes_give_the_map_of_the_same_values_in_int16(tmp_path: Path) -> None:
    """The engine on an int8 pair (T2 warped) gives exactly the map and the stretch of the same values in int16."""
    model, card = PointwiseModel().eval(), make_card()  # one network: a new one has other random biases
    summaries, maps = [], []
    for signed_bytes in (True, False):
        p1, p2, _, _ = _signed_scene(tmp_path / "in", signed_bytes=signed_bytes)
        folder = tmp_path / ("int8" if signed_bytes else "int16")
        folder.mkdir()
        outputs = OutputPaths(fromto=folder / "fromto.tif", change_prob=folder / "prob.tif")
        summaries.append(run_change_detection(p1, p2, (model, card), outputs, RunOptions(tile_size=64)))
        maps.append((read_band(folder / "fromto.tif"), read_band(folder / "prob.tif")))
    int8, int16 = summaries
    assert int8.scaling_t1 == int16.scaling_t1 and int8.scaling_t2 == int16.scaling_t2
    assert "(-6" in int8.scaling_t1  # the stretch starts near -61, not at 0 (233 for -23)
    np.testing.assert_array_equal(maps[0][0], maps[1][0])
    np.testing.assert_array_equal(maps[0][1], maps[1][1])


def test_signed_byte_land_cover_maps_compare_like_int16_ones(tmp_path: Path) -> None:
    """Comparing int8 maps (negative codes, nodata -128, T2 warped) gives the int16 maps' classes and from-to map."""
    results = []
    for signed_bytes in (True, False):
        p1, p2, _, _ = _signed_scene(tmp_path / "in", signed_bytes=signed_bytes, nodata=-128, bands=1,
                                      low=-5, high=2)
        folder = tmp_path / ("int8" if signed_bytes else "int16")
        folder.mkdir()
        summary = compare_classifications(p1, p2, OutputPaths(fromto=folder / "fromto.tif",
                                                              transitions_csv=folder / "matrix.csv"))
        results.append((summary, _bands_of(folder / "fromto.tif"), (folder / "matrix.csv").read_text()))
    (int8, map8, csv8), (int16, map16, csv16) = results
    assert int8.codes == int16.codes == tuple(range(-5, 3))
    assert int8.valid_pixels == int16.valid_pixels
    np.testing.assert_array_equal(map8, map16)
    assert csv8 == csv16

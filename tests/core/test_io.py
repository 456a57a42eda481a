"""Raster input checks and pixel areas."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from core.errors import InputError
from core.io import RasterWriter, check_bands, check_output_path, pixel_area_m2


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

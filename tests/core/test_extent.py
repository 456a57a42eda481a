"""A processing extent and a mask: an analyst runs on part of a scene, as QGIS's raster tools allow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.encode import NODATA_UINT8
from core.engine import OutputPaths, RunOptions, run_change_detection
from core.errors import InputError


def test_extent_cuts_the_outputs_to_it_on_t1s_grid(tmp_path: Path, scene_pair, pointwise) -> None:
    t1, t2, _ = scene_pair
    whole = tmp_path / "whole.tif"
    run_change_detection(t1, t2, pointwise, OutputPaths(fromto=str(whole)), RunOptions(tile_size=64))
    with rasterio.open(t1) as src:
        left, top = src.transform * (20, 30)  # pixel corner (col 20, row 30)
        right, bottom = src.transform * (100.4, 90.6)  # not on pixel edges: whole pixels that touch it
    part = tmp_path / "part.tif"
    summary = run_change_detection(t1, t2, pointwise, OutputPaths(fromto=str(part)),
                                   RunOptions(tile_size=64, extent=(left, bottom, right, top)))
    assert (summary.width, summary.height) == (81, 61)
    with rasterio.open(part) as dst, rasterio.open(whole) as full:
        assert dst.transform.c == left and dst.transform.f == top
        np.testing.assert_array_equal(dst.read(1), full.read(1)[30:91, 20:101])


def test_pixels_outside_the_mask_are_nodata(tmp_path: Path, scene_pair, pointwise) -> None:
    t1, t2, _ = scene_pair
    with rasterio.open(t1) as src:
        (x0, y0), (x1, y1) = src.transform * (10, 10), src.transform * (60, 50)
    square = {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]}
    out = tmp_path / "masked.tif"
    run_change_detection(t1, t2, pointwise, OutputPaths(fromto=str(out)), RunOptions(tile_size=64, mask=[square]))
    with rasterio.open(out) as dst:
        codes = dst.read(1)
    inside = np.zeros(codes.shape, bool)
    inside[10:50, 10:60] = True
    assert (codes[~inside] == NODATA_UINT8).all()
    assert (codes[inside] != NODATA_UINT8).all()


def test_an_extent_outside_the_images_is_refused(tmp_path: Path, scene_pair, pointwise) -> None:
    t1, t2, _ = scene_pair
    with pytest.raises(InputError, match=r"processing extent .* lies outside"):
        run_change_detection(t1, t2, pointwise, OutputPaths(fromto=str(tmp_path / "x.tif")),
                             RunOptions(extent=(0.0, 0.0, 10.0, 10.0)))
    assert not (tmp_path / "x.tif").exists()

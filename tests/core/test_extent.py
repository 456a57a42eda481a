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


def _run_with(tmp_path: Path, scene_pair, pointwise, **options: object) -> Path:
    t1, t2, _ = scene_pair
    out = tmp_path / "area.tif"
    run_change_detection(t1, t2, pointwise, OutputPaths(fromto=str(out)), RunOptions(tile_size=64, **options))
    return out


def _bounds(path: Path) -> tuple[float, float, float, float]:
    with rasterio.open(path) as src:
        return tuple(src.bounds)


@pytest.mark.parametrize(("extent", "said"), [
    ((float("nan"), 0.0, 1.0, 1.0), r"xmin is nan"),
    ((0.0, 0.0, float("inf"), 1.0), r"xmax is inf"),
])
def test_an_extent_that_is_not_a_number_is_refused_not_ignored(tmp_path: Path, scene_pair, pointwise,
                                                               extent, said) -> None:
    # a NaN used to fall out of every max()/min() with the images' bounds: the whole scene ran
    with pytest.raises(InputError, match=rf"processing extent .* is not a number everywhere \({said}"):
        _run_with(tmp_path, scene_pair, pointwise, extent=extent)
    assert not list(tmp_path.glob("*.tif"))


def test_an_inverted_extent_is_refused_saying_so_not_that_it_lies_outside(tmp_path: Path, scene_pair,
                                                                          pointwise) -> None:
    left, bottom, right, top = _bounds(scene_pair[0])
    width, height = right - left, top - bottom
    inside = (left + width / 4, bottom + height / 4, right - width / 4, top - height / 4)
    with pytest.raises(InputError, match=r"is inverted: its xmax \(\S+\) is less than its xmin") as error:
        _run_with(tmp_path, scene_pair, pointwise, extent=(inside[2], inside[1], inside[0], inside[3]))
    assert "lies outside" not in str(error.value)
    with pytest.raises(InputError, match=r"is inverted: its ymax"):
        _run_with(tmp_path, scene_pair, pointwise, extent=(inside[0], inside[3], inside[2], inside[1]))
    with pytest.raises(InputError, match=r"has no width"):
        _run_with(tmp_path, scene_pair, pointwise, extent=(inside[0], inside[1], inside[0], inside[3]))


def _square(x0: float, y0: float, size: float) -> dict:
    return {"type": "Polygon", "coordinates": [[(x0, y0), (x0 + size, y0), (x0 + size, y0 + size), (x0, y0 + size),
                                                (x0, y0)]]}


def test_a_mask_away_from_the_scene_is_refused_not_an_all_nodata_success(tmp_path: Path, scene_pair,
                                                                         pointwise) -> None:
    left, bottom, _, _ = _bounds(scene_pair[0])
    far = _square(left + 100_000, bottom, 500)  # 100 km east of the scene, in its CRS
    with pytest.raises(InputError, match=r"the mask \(1 polygon within .*\) does not overlap the processing area"):
        _run_with(tmp_path, scene_pair, pointwise, mask=[far])
    assert not list(tmp_path.glob("*.tif")) and not list(tmp_path.glob(".*"))


def test_a_mask_over_no_pixel_centre_is_refused_before_publishing(tmp_path: Path, scene_pair, pointwise) -> None:
    # a sliver inside the scene's bounds that holds no pixel centre: every pixel would be nodata
    with rasterio.open(scene_pair[0]) as src:
        x, y = src.transform * (10, 10)  # a pixel corner
    sliver = _square(x - 0.1, y - 0.1, 0.2)
    with pytest.raises(InputError, match=r"no pixel .* holds data"):
        _run_with(tmp_path, scene_pair, pointwise, mask=[sliver])
    assert not list(tmp_path.glob("*.tif")) and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize(("mask", "said"), [
    ([{"type": "Point", "coordinates": (1.0, 2.0)}], r"item 1 is a Point geometry; a mask is polygons"),
    ([{"name": "field 7"}], r"item 1 is dict, not a geometry"),
    (["not json"], r"item 1 is text that is not a GeoJSON geometry"),
    ([{"type": "Polygon", "coordinates": "abc"}], r"item 1 is a Polygon without usable coordinates"),
    ([], r"holds no polygons"),
    ("mask.gpkg", r"must be a list of polygons"),
])
def test_a_mask_that_is_not_polygons_is_refused_clearly(tmp_path: Path, scene_pair, pointwise, mask, said) -> None:
    with pytest.raises(InputError, match=said):
        _run_with(tmp_path, scene_pair, pointwise, mask=mask)
    assert not list(tmp_path.glob("*.tif"))

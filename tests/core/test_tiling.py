"""Tile arithmetic: full coverage, snapped edges, smooth weights and bounded row bands."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from core.tiling import MIN_DEFAULT_TILE_SIZE, RowBandAccumulator, TileGrid, default_tile_size, pad_to, round_up


@pytest.mark.parametrize(("height", "width", "tile", "overlap"), [
    (1000, 700, 256, 64), (256, 256, 256, 64), (100, 60, 256, 64), (513, 1025, 512, 128), (300, 300, 96, 0),
])
def test_windows_cover_every_pixel_and_stay_inside(height: int, width: int, tile: int, overlap: int) -> None:
    grid = TileGrid(height, width, tile, overlap)
    covered = np.zeros((height, width), dtype=int)
    for w in grid.windows():
        assert w.row >= 0 and w.col >= 0
        assert w.row + w.height <= height and w.col + w.width <= width
        covered[w.row:w.row + w.height, w.col:w.col + w.width] += 1
    assert covered.min() >= 1
    assert len(list(grid.windows())) == len(grid)


def test_windows_are_row_major_and_last_window_is_snapped_to_the_edge() -> None:
    grid = TileGrid(1000, 1000, 256, 64)
    rows = grid.row_offsets()
    assert rows[-1] == 1000 - 256
    assert rows == sorted(rows)
    windows = list(grid.windows())
    assert [w.row for w in windows] == sorted(w.row for w in windows)


def test_default_tile_is_the_cards_but_never_below_the_measured_minimum() -> None:
    assert MIN_DEFAULT_TILE_SIZE == 256
    assert default_tile_size(64) == 256  # trained on small crops: larger tiles measured better and faster
    assert default_tile_size(512) == 512
    assert default_tile_size(416) == 416


def test_model_size_is_a_multiple_of_32() -> None:
    assert TileGrid(500, 500, 100, 10).model_size == 128
    assert TileGrid(500, 500, 256, 10).model_size == 256
    assert round_up(33, 32) == 64


def test_weights_taper_inside_but_not_on_the_raster_edge() -> None:
    grid = TileGrid(1000, 1000, 256, 64)
    first = next(iter(grid.windows()))
    weights = grid.weights(first)
    assert weights[0, 0] == 1.0  # top-left corner of the raster: nobody else covers it
    assert weights[128, -1] < 0.01  # right border overlaps the next tile
    assert weights[128, 128] == 1.0
    assert np.all(weights > 0)
    # smooth: no jump larger than the ramp allows
    assert np.abs(np.diff(weights[128])).max() < 0.05


@pytest.mark.parametrize(("tile", "overlap", "message"), [
    (16, 0, "tile size"), (10000, 0, "tile size"), (256, 256, "overlap"), (256, -1, "overlap"), (256, 300, "overlap"),
])
def test_bad_tiling_is_refused_with_advice(tile: int, overlap: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        TileGrid(100, 100, tile, overlap)


def test_pad_to_reflects_and_handles_single_pixels() -> None:
    array = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    padded = pad_to(array, 6)
    assert padded.shape == (1, 6, 6)
    assert padded[0, 3, 0] == array[0, 1, 0]  # reflected row
    single = pad_to(np.ones((2, 1, 1), dtype=np.float32), 32)
    assert single.shape == (2, 32, 32) and np.all(single == 1)


def _blend_everything(height: int, width: int, tile: int, overlap: int, field: np.ndarray) -> np.ndarray:
    grid = TileGrid(height, width, tile, overlap)
    acc = RowBandAccumulator(1, min(tile, height), width)
    out = np.full((height, width), np.nan, dtype=np.float32)
    for window in grid.windows():
        start, values, _ = acc.finish_before(window.row)
        out[start:start + values.shape[1]] = values[0]
        tile_values = field[None, window.row:window.row + window.height, window.col:window.col + window.width]
        acc.add(window, tile_values, grid.weights(window))
    start, values, _ = acc.finish_before(height)
    out[start:start + values.shape[1]] = values[0]
    return out


def test_blending_identical_tiles_reproduces_the_field_exactly() -> None:
    rng = np.random.default_rng(0)
    field = rng.random((700, 500)).astype(np.float32)
    out = _blend_everything(700, 500, 128, 32, field)
    np.testing.assert_allclose(out, field, rtol=0, atol=2e-6)


def test_accumulator_memory_depends_on_width_and_tile_not_height() -> None:
    small = RowBandAccumulator(5, 256, 1024)
    assert small.nbytes == (5 + 1) * 256 * 1024 * 4
    field = np.zeros((4000, 64), dtype=np.float32)
    out = _blend_everything(4000, 64, 64, 16, field)
    assert not np.isnan(out).any()


def test_accumulator_refuses_tiles_added_out_of_order() -> None:
    grid = TileGrid(600, 100, 100, 20)
    acc = RowBandAccumulator(1, 100, 100)
    windows = list(grid.windows())
    acc.finish_before(windows[-1].row)
    with pytest.raises(ValueError, match="outside the rows held"):
        acc.add(windows[0], np.zeros((1, 100, 100), np.float32), np.ones((100, 100), np.float32))

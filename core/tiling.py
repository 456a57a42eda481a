"""All tile arithmetic: windows, padding, blend weights and which rows are finished.

Nothing else in the engine computes an offset. Coordinates are pixels of the
processing area (the part of the T1 grid both dates cover), rows first.

* Windows are ``tile_size`` square, ``stride = tile_size - overlap`` apart, and the
  last window of each axis is snapped back inside the raster, so no window reads
  outside it. An axis shorter than a tile gets one window of the axis' length.
* Every window is reflect-padded to ``model_size`` (the tile size rounded up to a
  multiple of 32) before it goes to the network, and cropped back afterwards.
* Probabilities are blended with a weight that is 1 in the tile's core and falls
  smoothly (sine squared) to almost 0 across the overlap; borders that lie on the
  raster's edge are not tapered, because no other tile covers them.
* :class:`RowBandAccumulator` holds sums only for the rows tiles still touch:
  ``tile_size`` rows by the full width, whatever the height of the raster.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import InputError

SIZE_MULTIPLE = 32
MIN_TILE_SIZE = 32
MAX_TILE_SIZE = 4096

#: The smallest tile a run uses unless told otherwise. Networks trained on small crops (the card's
#: tile size is the crop) agree better with whole-image inference and run faster on larger tiles:
#: the ``make demo`` model, trained on 64 px crops, agreed with whole-image inference on 99.96 % of
#: pixels at 256 px tiles against 99.36 % at 64 px, 1.7 x faster (docs/performance.md). These
#: networks are fully convolutional, so more context than they were trained on does not hurt them.
MIN_DEFAULT_TILE_SIZE = 256


def default_tile_size(card_tile_size: int) -> int:
    """The tile a run uses when none is given: the model card's, but at least :data:`MIN_DEFAULT_TILE_SIZE`."""
    return max(int(card_tile_size), MIN_DEFAULT_TILE_SIZE)
#: The stride must be at least a fifth of the tile (overlap at most 80 %, so at most 25 evaluations per
#: pixel): the plugin's largest overlap, 75 %, always passes, even after rounding to whole pixels.
MAX_STRIDE_DIVISOR = 5


@dataclass(frozen=True)
class TileWindow:
    """One tile: its place in the processing area and which of its borders are raster edges."""

    row: int
    col: int
    height: int
    width: int
    at_top: bool
    at_bottom: bool
    at_left: bool
    at_right: bool


@dataclass(frozen=True)
class TileGrid:
    """The sliding-window layout over a ``height`` x ``width`` processing area."""

    height: int
    width: int
    tile_size: int
    overlap: int

    def __post_init__(self) -> None:
        validate_tiling(self.tile_size, self.overlap)
        if self.height < 1 or self.width < 1:
            raise InputError(f"the processing area is empty ({self.height} x {self.width} pixels)")

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap

    @property
    def model_size(self) -> int:
        """Side of the square array the network sees: the tile padded to a multiple of 32.

        A raster smaller than the tile gets windows of its own size, so they are padded
        only to a multiple of 32 of that size: a 64 x 64 pair with 4096 px tiles runs
        64 px arrays, not 4096 px ones.
        """
        return round_up(min(self.tile_size, max(self.height, self.width)), SIZE_MULTIPLE)

    def row_offsets(self) -> list[int]:
        return _offsets(self.height, self.tile_size, self.stride)

    def col_offsets(self) -> list[int]:
        return _offsets(self.width, self.tile_size, self.stride)

    def __len__(self) -> int:
        return len(self.row_offsets()) * len(self.col_offsets())

    def windows(self) -> Iterator[TileWindow]:
        """Windows in row-major order, the order :class:`RowBandAccumulator` relies on."""
        rows, cols = self.row_offsets(), self.col_offsets()
        tile_h, tile_w = min(self.tile_size, self.height), min(self.tile_size, self.width)
        for row in rows:
            for col in cols:
                yield TileWindow(
                    row, col, tile_h, tile_w,
                    at_top=row == 0, at_bottom=row + tile_h >= self.height,
                    at_left=col == 0, at_right=col + tile_w >= self.width,
                )

    def weights(self, window: TileWindow) -> np.ndarray:
        """Blend weight of every pixel of ``window`` (float32, ``height`` x ``width``; read-only, shared)."""
        return _weights(window.height, window.width, self.overlap,
                        (not window.at_top, not window.at_bottom, not window.at_left, not window.at_right))


def validate_tiling(tile_size: int, overlap: int) -> None:
    """Refuse tile sizes and overlaps the engine cannot use, saying what would work."""
    if not MIN_TILE_SIZE <= tile_size <= MAX_TILE_SIZE:
        raise InputError(
            f"tile size {tile_size} is out of range: use {MIN_TILE_SIZE} to {MAX_TILE_SIZE} pixels "
            "(left unset, or 0 in QGIS, it is the model's training tile size, at least 256)"
        )
    if overlap < 0 or overlap >= tile_size:
        raise InputError(
            f"overlap {overlap} px must be at least 0 and smaller than the tile size {tile_size} px; "
            f"25 % of the tile ({tile_size // 4} px) is a good default"
        )
    stride = tile_size - overlap
    if stride * MAX_STRIDE_DIVISOR < tile_size:
        raise InputError(
            f"overlap {overlap} px on {tile_size} px tiles leaves a stride of {stride} px, so every pixel would be "
            f"computed about {(tile_size / stride) ** 2:.0f} times; use an overlap of at most "
            f"{tile_size - math.ceil(tile_size / MAX_STRIDE_DIVISOR)} px (80 % of the tile); 25 % "
            f"({tile_size // 4} px) is a good default"
        )


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the last two axes of ``array`` at the bottom and right up to ``size``.

    Reflection keeps image statistics near the border, unlike zeros; arrays too small
    to reflect (one pixel) repeat their edge instead.
    """
    pad_h, pad_w = size - array.shape[-2], size - array.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"array {array.shape[-2:]} is larger than the padded size {size}")
    if pad_h == 0 and pad_w == 0:
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, pad_h), (0, pad_w)]
    mode = "reflect" if min(array.shape[-2:]) > 1 else "edge"
    return np.pad(array, widths, mode=mode)


def _offsets(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    offsets = list(range(0, length - tile, stride))
    offsets.append(length - tile)
    return offsets


@functools.lru_cache(maxsize=64)
def _weights(height: int, width: int, overlap: int, tapered: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Weights of one window shape; a scene has at most nine (inner, edges, corners), so they are cached."""
    wy = _taper(height, overlap, tapered[0], tapered[1])
    wx = _taper(width, overlap, tapered[2], tapered[3])
    weights = np.outer(wy, wx).astype(np.float32)
    weights.flags.writeable = False
    return weights


def _taper(length: int, overlap: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    weight = np.ones(length, dtype=np.float64)
    ramp_len = min(overlap, length // 2)
    if ramp_len > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(ramp_len) + 0.5) / ramp_len) ** 2
        if taper_start:
            weight[:ramp_len] = ramp
        if taper_end:
            weight[length - ramp_len:] = ramp[::-1]
    return weight


class RowBandAccumulator:
    """Weighted sums of per-head probabilities for the rows tiles still touch.

    Tiles must be added in row-major order. :meth:`finish_before` returns the
    normalised rows that no later tile can reach and frees them, so memory is
    ``channels x tile_size x width`` floats whatever the raster height.
    """

    def __init__(self, channels: int, band_height: int, width: int) -> None:
        self.channels = channels
        self.band_height = band_height
        self.width = width
        self.origin = 0  # raster row of the buffer's first row
        self._sums = np.zeros((channels, band_height, width), dtype=np.float32)
        self._weights = np.zeros((band_height, width), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return self._sums.nbytes + self._weights.nbytes

    def add(self, window: TileWindow, values: np.ndarray, weights: np.ndarray) -> None:
        """Add ``values`` (``channels`` x tile) weighted by ``weights`` (tile) at ``window``."""
        top = window.row - self.origin
        if top < 0 or top + window.height > self.band_height:
            raise ValueError(
                f"tile at row {window.row} is outside the rows held ({self.origin}..{self.origin + self.band_height})"
            )
        rows = slice(top, top + window.height)
        cols = slice(window.col, window.col + window.width)
        self._sums[:, rows, cols] += values * weights
        self._weights[rows, cols] += weights

    def finish_before(self, row: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Release rows above raster row ``row``.

        Returns:
            The first released raster row, the blended values (``channels`` x rows x
            width; 0 where no tile contributed) and the accumulated weights.
        """
        count = min(max(row - self.origin, 0), self.band_height)
        start = self.origin
        weights = self._weights[:count].copy()
        values = self._sums[:, :count] / np.where(weights > 0, weights, 1.0)
        # shift the remaining rows up and clear the freed space
        self._sums[:, : self.band_height - count] = self._sums[:, count:]
        self._sums[:, self.band_height - count:] = 0
        self._weights[: self.band_height - count] = self._weights[count:]
        self._weights[self.band_height - count:] = 0
        self.origin += count
        return start, values, weights

"""Synthetic two-date scenes, so tests, the demo and benchmarks need no downloads.

A scene is a land-cover map made of smooth random blobs; the second date changes
some rectangles to other classes. Each map is rendered as an RGB image from the
class palette plus texture and noise, and written as a georeferenced GeoTIFF in
any CRS, resolution, data type and with optional nodata borders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject

from .models.card import RGB


@dataclass(frozen=True)
class Scene:
    """Land-cover labels (1..N) of both dates; ``changed`` is where they differ."""

    labels_t1: np.ndarray
    labels_t2: np.ndarray

    @property
    def changed(self) -> np.ndarray:
        return self.labels_t1 != self.labels_t2


def make_scene(height: int, width: int, num_classes: int, *, seed: int = 0, changes: int = 6) -> Scene:
    """Blobby land cover for T1, and T2 with ``changes`` rectangles turned into other classes."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((num_classes, max(2, height // 32 + 2), max(2, width // 32 + 2)))
    fields = np.stack([_upsample(c, height, width) for c in coarse])
    labels_t1 = (fields.argmax(axis=0) + 1).astype(np.uint8)
    labels_t2 = labels_t1.copy()
    for _ in range(changes):
        h = int(rng.integers(max(2, height // 10), max(3, height // 4)))
        w = int(rng.integers(max(2, width // 10), max(3, width // 4)))
        r, c = int(rng.integers(0, max(1, height - h))), int(rng.integers(0, max(1, width - w)))
        region = labels_t2[r:r + h, c:c + w]
        new = int(rng.integers(1, num_classes + 1))
        if num_classes > 1:
            region[region == new] = new % num_classes + 1
            region[region != new] = new
        labels_t2[r:r + h, c:c + w] = region
    return Scene(labels_t1, labels_t2)


def render(labels: np.ndarray, palette: Sequence[RGB], *, seed: int = 0, noise: float = 12.0) -> np.ndarray:
    """An 8-bit RGB image ``[3, H, W]`` of ``labels`` (1..N) with texture and noise."""
    rng = np.random.default_rng(seed)
    colors = np.asarray([(0, 0, 0), *palette], dtype=np.float32)
    image = colors[labels].transpose(2, 0, 1)
    image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _upsample(array: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.linspace(0, array.shape[0] - 1, height)
    cols = np.linspace(0, array.shape[1] - 1, width)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, array.shape[0] - 1), np.minimum(c0 + 1, array.shape[1] - 1)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = array[r0][:, c0] * (1 - fc) + array[r0][:, c1] * fc
    bottom = array[r1][:, c0] * (1 - fc) + array[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def write_geotiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    crs: str | CRS = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    dtype: str | None = None,
) -> Path:
    """Write ``array`` (``[bands, H, W]``) as a GeoTIFF; default: 1 m pixels in UTM 33N."""
    path = Path(path)
    transform = transform or Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 5000000.0)
    dtype = dtype or array.dtype.name
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1],
                       count=array.shape[0], dtype=dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(array.astype(dtype))
    return path


def reproject_geotiff(source: str | os.PathLike[str], target: str | os.PathLike[str], crs: str,
                      *, resolution: float | None = None, nodata: float = 0) -> Path:
    """Warp a GeoTIFF into another CRS (and resolution), as a second date delivered differently would be."""
    target = Path(target)
    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds,
            resolution=resolution)
        profile = src.profile | {"crs": crs, "transform": transform, "width": width, "height": height,
                                 "nodata": nodata}
        with rasterio.open(target, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band), src_nodata=src.nodata,
                          dst_nodata=nodata, resampling=Resampling.bilinear)
    return target


def write_pair(
    folder: str | os.PathLike[str],
    palette: Sequence[RGB],
    *,
    height: int = 256,
    width: int = 256,
    seed: int = 0,
    crs: str = "EPSG:32633",
    transform: Affine | None = None,
) -> tuple[Path, Path, Scene]:
    """A ready-to-run 8-bit RGB pair on the same grid, and the scene it shows."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = make_scene(height, width, len(palette), seed=seed)
    t1 = write_geotiff(folder / "t1.tif", render(scene.labels_t1, palette, seed=seed), crs=crs, transform=transform)
    t2 = write_geotiff(folder / "t2.tif", render(scene.labels_t2, palette, seed=seed + 1), crs=crs,
                       transform=transform)
    return t1, t2, scene

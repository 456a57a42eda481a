"""Test helpers: tiny models with known behaviour and model cards (import as ``helpers``)."""

from __future__ import annotations

import csv
import io
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import Resampling, calculate_default_transform, reproject
from torch import nn

from core.models import registry
from core.models.base import CHANGE_PROB, SEM_LOGITS_T1, SEM_LOGITS_T2, ChangeModel, ModelSpec
from core.models.card import SECOND_CLASSES, ModelCard


class PointwiseModel(ChangeModel):
    """Each output pixel depends on its own input pixel only, so tiling must not change anything."""

    task = "semantic"

    def __init__(self, num_classes: int = 6, bands: int = 3, threshold: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.with_threshold = threshold
        self.learns_threshold = threshold
        generator = torch.Generator().manual_seed(0)
        self.sem = nn.Conv2d(bands, num_classes + 1, 1)
        with torch.no_grad():
            self.sem.weight.copy_(torch.randn(self.sem.weight.shape, generator=generator))

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        diff = (x1 - x2).abs().mean(dim=1, keepdim=True)
        out = {
            "change_prob": torch.sigmoid(4 * (diff - 0.5)),
            "sem_logits_t1": self.sem(x1),
            "sem_logits_t2": self.sem(x2),
        }
        if self.with_threshold:
            out["change_threshold"] = torch.full_like(diff, 0.6)
        return out


class LocalConvModel(ChangeModel):
    """A small convolutional network with a receptive field of 9 px, for seam tests."""

    task = "binary"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"change_prob": torch.sigmoid(self.body(torch.cat([x1, x2], dim=1)))}


def make_card(task: str = "semantic", *, tile_size: int = 64, bands: int = 3, **changes: object) -> ModelCard:
    values: dict[str, object] = {
        "model": "test-pointwise", "options": {}, "task": task,
        "classes": SECOND_CLASSES if task == "semantic" else (),
        "tile_size": tile_size, "bands_t1": tuple(range(1, bands + 1)), "bands_t2": tuple(range(1, bands + 1)),
        "mean_t1": (128.0,) * bands, "std_t1": (64.0,) * bands, "mean_t2": (128.0,) * bands, "std_t2": (64.0,) * bands,
    }
    values.update(changes)
    return ModelCard(**values)  # type: ignore[arg-type]


def read_band(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def random_pair(batch: int = 1, height: int = 64, width: int = 64, seed: int = 0, *,
                channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Two reproducible normalised input batches for network tests."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, height, width)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


# --- Two tiny networks that can be registered like real ones ---------------------------------


class _TinyBase(ChangeModel):
    def __init__(
        self, *, backbone: str = "tiny", pretrained: str | None = None, in_channels: int = 3, width: int = 4
    ) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.change_head = nn.Conv2d(width, 1, 1)
        if pretrained is not None:
            self.encoder.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))


class TinySCD(_TinyBase):
    task = "semantic"

    def __init__(self, *, num_classes: int = 6, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.num_classes = num_classes
        self.sem_head = nn.Conv2d(self.change_head.in_channels, num_classes + 1, 1)

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        f1, f2 = self.encoder(x1), self.encoder(x2)
        return {
            CHANGE_PROB: torch.sigmoid(self.change_head((f1 - f2).abs())),
            SEM_LOGITS_T1: self.sem_head(f1),
            SEM_LOGITS_T2: self.sem_head(f2),
        }


class TinyBCD(_TinyBase):
    task = "binary"

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        return {CHANGE_PROB: torch.sigmoid(self.change_head((self.encoder(x1) - self.encoder(x2)).abs()))}


TINY_SPECS = (
    ModelSpec("tiny_scd", "semantic", TinySCD, "test", 64, ("tiny",), {"backbone": "tiny", "num_classes": 6},
              paper_params_m={"tiny": 0.0001}, paper_gflops={"tiny": 0.01}, paper_flops_size=64,
              paper_flops_unit="macs"),
    ModelSpec("tiny_bcd", "binary", TinyBCD, "test", 64, ("tiny",), {"backbone": "tiny"}),
)


def register_tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the tiny networks the way real ones are: a ``core.models`` sub-package with ``SPEC``."""
    for spec in TINY_SPECS:
        module = types.ModuleType(f"core.models._test_{spec.name}")
        module.SPEC = spec  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setitem(registry._PACKAGES, spec.name, f"_test_{spec.name}")


def write_map(path: Path, data: np.ndarray, *, crs: str = "EPSG:32633", transform: object = None,
              nodata: float | None = 0, names: dict[int, str] | None = None,
              colors: dict[int, tuple[int, int, int]] | None = None) -> Path:
    """A categorical GeoTIFF (a land-cover map), optionally with category names and a colour table (band 1).

    ``data`` of shape ``[bands, height, width]`` gives a multi-band raster (a stack, or an RGB rendering).
    """
    import rasterio
    from rasterio.transform import from_origin

    from core.io import gdal_session

    transform = transform or from_origin(500000, 4000000, 10, 10)
    bands = data if data.ndim == 3 else data[np.newaxis]
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=len(bands),
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(bands)
        if colors:
            dst.write_colormap(1, {k: (*v, 255) for k, v in colors.items()})
    if names:
        with gdal_session() as gdal:
            dataset = gdal.Open(str(path))
            dataset.GetRasterBand(1).SetCategoryNames([names.get(v, "") for v in range(max(names) + 1)])
            dataset = None
    return path


def move_to_band_2(path: Path, filler: int = 1) -> Path:
    """Rewrite a one-band land-cover map in place as band 2 of a 2-band stack, with its category names (a
    GeoTIFF holds a colour table on band 1 only); band 1 holds ``filler`` (a code the map does not use), so
    reading the wrong band shows in every result."""
    from core.io import gdal_session

    with rasterio.open(path) as src:
        data, crs, transform, nodata = src.read(1), src.crs, src.transform, src.nodata
    with gdal_session() as gdal:
        dataset = gdal.Open(str(path))
        band = dataset.GetRasterBand(1)
        band.GetDefaultRAT()  # GDAL 3.6 reads the .aux.xml lazily
        names = band.GetCategoryNames()
        band = dataset = None
    for extra in path.parent.glob(path.name + ".*"):  # the .aux.xml of the one-band map
        extra.unlink()
    write_map(path, np.stack([np.full_like(data, filler), data]), crs=crs, transform=transform, nodata=nodata)
    with gdal_session() as gdal:
        dataset = gdal.Open(str(path), gdal.GA_Update)
        band = dataset.GetRasterBand(2)
        if names:
            band.SetCategoryNames(names)
        band = dataset = None
    return path


# --- from-to rasters for the legend, RAT, QML and matrix tests -----------------------------

def make_raster(path: Path, data: np.ndarray, nodata: float) -> Path:
    """A small tiled, compressed single-band GeoTIFF holding ``data``, the way the engine writes its outputs."""
    from rasterio.transform import from_origin

    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype,
        crs="EPSG:32633", transform=from_origin(500000, 4000000, 0.5, 0.5), nodata=nodata,
        tiled=True, blockxsize=16, blockysize=16, compress="deflate",
    ) as dst:
        dst.write(data, 1)
    return path


def second_codes() -> tuple[np.ndarray, object]:
    """A 32 x 40 from-to raster with every SECOND code, no-change and a nodata corner, and its counter."""
    from core.encode import NODATA_UINT8, TransitionCounter, fromto_codes

    classes = len(SECOND_CLASSES)
    rng = np.random.default_rng(7)
    c1 = rng.integers(1, classes + 1, (32, 40))
    c2 = rng.integers(1, classes + 1, (32, 40))
    changed = rng.random((32, 40)) > 0.4
    codes = fromto_codes(c1, c2, changed, classes)
    codes[0, :classes * classes + 1] = np.arange(classes * classes + 1)
    valid = np.ones(codes.shape, bool)
    valid[-3:, -3:] = False
    codes[~valid] = NODATA_UINT8
    counter = TransitionCounter(classes)
    counter.add(codes, valid, 0.25)
    return codes, counter


# --- land-cover maps for the comparison ------------------------------------------------------

WORLDCOVER = {10: ("Tree cover", (0, 100, 0)), 20: ("Shrubland", (255, 187, 34)), 30: ("Grassland", (255, 255, 76)),
              40: ("Cropland", (240, 150, 255)), 50: ("Built-up", (250, 0, 0)), 80: ("Permanent water bodies",
                                                                                 (0, 100, 200))}


def matrix_block(csv_path: Path, unit: str = "pixels") -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    header = rows[0]
    names = header[2:-1]
    block = [r for r in rows[1:] if r[0] == unit][: len(names)]
    assert [r[1] for r in block] == names
    return names, np.array([[float(v) for v in r[2:-1]] for r in block])


def crosstab(a: np.ndarray, b: np.ndarray, valid: np.ndarray, classes: list[int]) -> np.ndarray:
    """The reference: numpy's own cross-tabulation of the aligned arrays (np.bincount of from*K+to)."""
    index = {c: i for i, c in enumerate(classes)}
    lut = np.zeros(max(max(classes), int(a.max()), int(b.max())) + 1, dtype=np.int64)
    for c, i in index.items():
        lut[c] = i
    k = len(classes)
    return np.bincount(lut[a[valid]] * k + lut[b[valid]], minlength=k * k).reshape(k, k)


def write_worldcover_pair(folder: Path) -> tuple[Path, Path]:
    """T1 in UTM at 10 m with nodata; T2 the same landscape with changes, in Web Mercator at 7 m."""
    rng = np.random.default_rng(5)
    codes = np.array(sorted(WORLDCOVER), dtype=np.uint8)
    blocks = codes[rng.integers(0, len(codes), (12, 10))]
    t1 = np.kron(blocks, np.ones((10, 10), dtype=np.uint8))  # 120 x 100 px of 10 x 10 px fields
    t1[20:30, 30:40] = 10  # a wood ...
    t2 = t1.copy()
    t2[20:50, 30:70] = 50  # ... where a new town is built: whatever was there became Built-up
    t2[90:110, 0:40] = 10  # afforestation
    for row, col in ((60, 60), (61, 61), (70, 15), (80, 85)):  # speckle: single misclassified pixels
        t2[row, col] = 80 if t1[row, col] != 80 else 20
    t1[:5, :] = 0  # a nodata strip in T1
    names = {k: v[0] for k, v in WORLDCOVER.items()}
    colors = {k: v[1] for k, v in WORLDCOVER.items()}
    folder.mkdir(parents=True, exist_ok=True)
    p1 = write_map(folder / "wc2020.tif", t1, names=names, colors=colors)
    # T2 in another CRS and resolution: reproject the later map by nearest neighbour.
    utm = write_map(folder / "wc2021_utm.tif", t2, names=names, colors=colors)
    with rasterio.open(utm) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height,
                                                               *src.bounds, resolution=7)
        data = np.zeros((height, width), dtype=np.uint8)
        reproject(src.read(1), data, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs="EPSG:3857", resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    p2 = write_map(folder / "wc2021.tif", data, crs="EPSG:3857", transform=transform, names=names, colors=colors)
    return p1, p2


def aligned_t2(p1: Path, p2: Path) -> np.ndarray:
    """T2 on T1's grid by nearest neighbour, as an analyst would align it (rasterio's reproject)."""
    with rasterio.open(p1) as ref, rasterio.open(p2) as src:
        out = np.zeros((ref.height, ref.width), dtype=src.dtypes[0])
        reproject(src.read(1), out, src_transform=src.transform, src_crs=src.crs, dst_transform=ref.transform,
                  dst_crs=ref.crs, resampling=Resampling.nearest, src_nodata=src.nodata, dst_nodata=0)
    return out



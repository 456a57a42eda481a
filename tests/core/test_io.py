"""Raster input checks and pixel areas."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from helpers import PointwiseModel, make_card, read_band
from osgeo import gdal
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


def test_a_writer_that_cannot_be_set_up_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot create .*x\.tif"):
        RasterWriter(tmp_path / "x.tif", width=8, height=8, dtype="uint8", nodata=255, crs="no such CRS",
                     transform=Affine(1, 0, 500000, 0, -1, 0))
    assert not list(tmp_path.iterdir())


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
            if not signed_bytes:
                band.WriteArray(band_data.astype(np.int16))
            elif band.DataType == gdal.GDT_Byte:  # GDAL < 3.7 takes the bytes as they are stored
                band.WriteArray(band_data.astype(np.int8).view(np.uint8))
            else:  # GDAL >= 3.7 made it an Int8 band
                band.WriteArray(band_data.astype(np.int8))
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


# --- what QGIS ships is enough ----------------------------------------------------------------

#: Runs the engine and the comparison on the inputs in argv[1], writing to argv[2]; with argv[3] == "block",
#: rasterio and affine (neither ships with QGIS) cannot be imported, and every attempt is written down.
_WITHOUT_RASTERIO = r'''
import importlib.abc, json, sys
from pathlib import Path

inputs, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
attempts = []


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rasterio", "affine"):
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: QGIS does not ship it)", name=name)
        return None


if mode == "block":
    sys.meta_path.insert(0, Blocker())

import torch
from torch import nn

from core.compare import compare_classifications
from core.engine import OutputPaths, RunOptions, run_change_detection
from core.models.base import ChangeModel
from core.models.card import SECOND_CLASSES, ModelCard


class Pointwise(ChangeModel):
    task = "semantic"

    def __init__(self):
        super().__init__()
        self.num_classes = len(SECOND_CLASSES)
        generator = torch.Generator().manual_seed(0)
        self.sem = nn.Conv2d(3, self.num_classes + 1, 1)
        with torch.no_grad():
            self.sem.weight.copy_(torch.randn(self.sem.weight.shape, generator=generator))
            self.sem.bias.copy_(torch.randn(self.sem.bias.shape, generator=generator))

    def predict(self, x1, x2):
        diff = (x1 - x2).abs().mean(dim=1, keepdim=True)
        return {"change_prob": torch.sigmoid(4 * (diff - 0.5)), "sem_logits_t1": self.sem(x1),
                "sem_logits_t2": self.sem(x2)}


card = ModelCard(model="test-pointwise", options={}, task="semantic", classes=SECOND_CLASSES, tile_size=64,
                 bands_t1=(1, 2, 3), bands_t2=(1, 2, 3), mean_t1=(128.0,) * 3, std_t1=(64.0,) * 3,
                 mean_t2=(128.0,) * 3, std_t2=(64.0,) * 3)
engine = out / "engine"
engine.mkdir(parents=True)
summary = run_change_detection(
    inputs / "t1.tif", inputs / "t2_wgs84.tif", (Pointwise().eval(), card),
    OutputPaths(fromto=engine / "fromto.tif", change_prob=engine / "prob.tif", change_mask=engine / "mask.tif",
                transitions_csv=engine / "matrix.csv"),
    RunOptions(tile_size=64, backend="torch", precision="fp32"))
compared = out / "compare"
compared.mkdir()
comparison = compare_classifications(inputs / "wc" / "wc2020.tif", inputs / "wc" / "wc2021.tif", OutputPaths(
    fromto=compared / "fromto.tif", t1_classes=compared / "t1.tif", change_mask=compared / "mask.tif",
    transitions_csv=compared / "matrix.csv"))
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"rasterio", "affine"})
(out / "facts.json").write_text(json.dumps({"attempts": attempts, "loaded": loaded,
                                            "engine_valid": summary.valid_pixels,
                                            "compare_valid": comparison.valid_pixels}))
'''


def test_engine_and_comparison_run_with_rasterio_unimportable_and_give_the_same_outputs(tmp_path: Path) -> None:
    """QGIS's installers ship GDAL's own bindings but no rasterio: nothing the plugin runs may need it."""
    import subprocess
    import sys

    from helpers import write_worldcover_pair

    from core import synthetic
    from core.models.card import SECOND_CLASSES

    inputs = tmp_path / "in"
    _, t2, _ = synthetic.write_pair(inputs, [c.color for c in SECOND_CLASSES], height=96, width=80, seed=4)
    synthetic.reproject_geotiff(t2, inputs / "t2_wgs84.tif", "EPSG:4326", resolution=0.00001, nodata=0)
    write_worldcover_pair(inputs / "wc")
    script = tmp_path / "run.py"
    script.write_text(_WITHOUT_RASTERIO, encoding="utf-8")
    repo = Path(__file__).resolve().parents[2]
    facts = {}
    for mode in ("block", "plain"):
        run = subprocess.run([sys.executable, "-W", "ignore", str(script), str(inputs), str(tmp_path / mode), mode],
                             cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True,
                             timeout=300, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        facts[mode] = json.loads((tmp_path / mode / "facts.json").read_text())
    assert facts["block"]["attempts"] == [] and facts["block"]["loaded"] == []  # nothing even tried to import it
    assert facts["plain"]["loaded"] == []  # nor is it imported where it could be
    assert facts["block"]["engine_valid"] > 0.5 * 96 * 80 and facts["block"]["compare_valid"] > 0
    written = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*") if p.is_file())
    assert len(written) >= 10
    for relative in written:
        assert (tmp_path / "block" / relative).read_bytes() == (tmp_path / "plain" / relative).read_bytes(), relative


@pytest.mark.parametrize("case", ["bilinear with nodata", "alpha band", "categorical", "south-up T1"])
def test_the_warped_view_reads_what_rasterio_s_warped_vrt_reads(tmp_path: Path, case: str) -> None:
    """The GDAL warped VRT of T2 gives the pixels and the mask rasterio's WarpedVRT gave (the reference it replaced)."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window as RioWindow

    from core import synthetic
    from core.models.card import SECOND_CLASSES

    palette = [c.color for c in SECOND_CLASSES]
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", palette, height=90, width=70, seed=6)
    bands = (1, 2, 3)
    categorical = case == "categorical"
    if case in ("bilinear with nodata", "south-up T1"):
        t2 = synthetic.reproject_geotiff(t2, tmp_path / "t2_4326.tif", "EPSG:4326", resolution=0.000013, nodata=0)
    if case == "south-up T1":  # rows run northwards: the view must take T1's grid as it is, not a north-up one
        with rasterio.open(t1) as src:
            t1 = synthetic.write_geotiff(tmp_path / "south.tif", src.read()[:, ::-1].copy(),
                                         transform=Affine(1, 0, src.bounds.left, 0, 1, src.bounds.bottom))
    elif case == "alpha band":
        with rasterio.open(t2) as src:
            rgba = np.concatenate([src.read(), np.full((1, 90, 70), 255, np.uint8)])
            rgba[3, :10] = 0
            profile = src.profile | {"count": 4, "photometric": "RGB", "alpha": "YES"}
        with rasterio.open(tmp_path / "rgba.tif", "w", **profile) as dst:
            dst.write(rgba)
        t2 = tmp_path / "rgba32.tif"
        gdal.Warp(str(t2), str(tmp_path / "rgba.tif"), dstSRS="EPSG:32632").FlushCache()
    else:
        from helpers import write_worldcover_pair

        t1, t2 = write_worldcover_pair(tmp_path / "wc")
        bands = (1,)
    with RasterPair(t1, t2, bands, bands, needed_bands=len(bands), categorical=categorical) as pair:
        assert pair._vrt2 is not None  # T2 is warped in every case
        _, ours, valid = pair.read(0, 0, pair.height, pair.width)
        window = pair.window
    with rasterio.open(t1) as ref, rasterio.open(t2) as src:
        options = {"crs": ref.crs, "transform": ref.transform, "width": ref.width, "height": ref.height,
                   "resampling": Resampling.nearest if categorical else Resampling.bilinear}
        if src.nodata is None and all(rasterio.enums.MaskFlags.all_valid in f for f in src.mask_flag_enums[:1]):
            options["add_alpha"] = True
        with WarpedVRT(src, **options) as vrt:
            rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
            theirs = vrt.read(bands, window=rio_window, out_dtype=None if categorical else "float32")
            their_mask = vrt.dataset_mask(window=rio_window) > 0
    with rasterio.open(t1) as ref:
        mask1 = ref.dataset_mask(window=rio_window) > 0
    np.testing.assert_array_equal(valid, mask1 & their_mask)
    np.testing.assert_array_equal(ours[:, valid], theirs[:, valid])
    assert valid.mean() > 0.5

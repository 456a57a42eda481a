"""Bad and unusual inputs, model files and output locations: a correct result or a clear message, never a
traceback, a silently wrong map or a half-written file."""

from __future__ import annotations

import errno
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from helpers import make_card, read_band, register_tiny_models
from rasterio.control import GroundControlPoint

from core import io, legend, memory, qml, synthetic
from core.engine import OutputPaths, RunOptions, run_change_detection
from core.errors import CheckpointError, InputError
from core.models import registry
from core.models.card import SECOND_CLASSES, LandCoverClass
from core.models.checkpoint import load_checkpoint, save_checkpoint
from core.models.checkpoint import make_card as checkpoint_card
from core.tiling import TileGrid

PALETTE = [c.color for c in SECOND_CLASSES]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or p.name.endswith(".tmp"))


# --- silently wrong maps ----------------------------------------------------------------------


def test_scaling_statistics_come_from_valid_pixels_even_when_the_sample_misses_them(tmp_path, pointwise,
                                                                                   monkeypatch):
    data = np.full((3, 64, 64), -9999.0, dtype=np.float32)
    data[:, 37, :] = np.linspace(1000.0, 2000.0, 64, dtype=np.float32)  # one row of real data
    t1 = synthetic.write_geotiff(tmp_path / "t1.tif", data, nodata=-9999.0)
    t2 = synthetic.write_geotiff(tmp_path / "t2.tif", data[::-1].copy(), nodata=-9999.0)
    sample = io.RasterPair.sample
    monkeypatch.setattr(io.RasterPair, "sample", lambda self, max_pixels=0: sample(self, 100))  # misses row 37
    with io.RasterPair(t1, t2, (1, 2, 3), (1, 2, 3), needed_bands=3) as pair:
        assert not sample(pair, 100)[2].any()
        values, _ = pair.valid_sample()
    assert values.shape[1] == 64 and values.min() >= 1000.0

    summary = run_change_detection(t1, t2, pointwise, OutputPaths(change_prob=tmp_path / "p.tif"))
    assert "-9999" not in summary.scaling_t1 and "1020" in summary.scaling_t1
    assert summary.valid_pixels == 64


@pytest.fixture
def model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    register_tiny_models(monkeypatch)
    card = checkpoint_card("tiny_scd", "second", tile_size=64)
    path = tmp_path / "model.pt"
    save_checkpoint(path, registry.build_model("tiny_scd", **card.options), card)
    return path


def _edit_card(path: Path, **changes: object) -> Path:
    """Change the card of a model file the way a hand edit would; the weights' checksum still holds."""
    payload = torch.load(path, weights_only=True)
    card = json.loads(payload["card"])
    for key, value in changes.items():
        if key == "class_colour":
            card["classes"][0]["color"] = value
        elif key == "class_name":
            card["classes"][0]["name"] = value
        else:
            card[key] = value
    payload["card"] = json.dumps(card)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(("change", "said"), [
    ({"std_t1": [float("nan"), 1.0, 1.0]}, "not a finite number"),
    ({"mean_t2": [float("inf"), 1.0, 1.0]}, "not a finite number"),
    ({"std_t2": [0.0, 1.0, 1.0]}, "must be positive"),
    ({"class_colour": [300, 0, 0]}, "0 to 255"),
    ({"change_color": [0, -1, 0]}, "0 to 255"),
    ({"bands_t1": [0, 1, 2]}, "from 1 up"),
    ({"bands_t2": [1.5, 2, 3]}, "from 1 up"),
    ({"tile_size": 64.5}, "whole number"),
    ({"class_name": "Water\x07"}, "control character"),
])
def test_a_model_file_with_a_broken_card_is_refused_on_load_and_blamed(model_file, tmp_path, change, said):
    _edit_card(model_file, **change)
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=32, width=32)
    with pytest.raises(CheckpointError) as caught:
        run_change_detection(t1, t2, model_file, OutputPaths(change_prob=tmp_path / "p.tif"))
    assert said in str(caught.value) and str(model_file) in str(caught.value)
    assert "edited by hand" in str(caught.value)
    assert not (tmp_path / "p.tif").exists()


def test_class_names_with_control_characters_still_give_well_formed_styles():
    entries = legend.class_legend((LandCoverClass("Water", (0, 0, 255)),))
    entries = [type(e)(**{**e.__dict__, "label": "Wa\x00ter\x1b"}) if e.value == 1 else e for e in entries]
    root = ET.fromstring(qml.paletted_qml(entries).split("\n", 1)[1])
    labels = [e.get("label") for e in root.iter("paletteEntry")]
    assert "Wa\\x00ter\\x1b" in labels
    with pytest.raises(ValueError, match=r"control character"):
        make_card(classes=(LandCoverClass("Wa\x00ter", (0, 0, 255)),))


# --- tracebacks where a message belongs -------------------------------------------------------


def test_an_rgba_t2_in_another_crs_simply_works(tmp_path, pointwise):
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=64, width=64)
    with rasterio.open(t2) as src:
        rgb = src.read()
    rgba = np.concatenate([rgb, np.full((1, 64, 64), 255, np.uint8)])
    rgba_path = tmp_path / "rgba.tif"
    with rasterio.open(rgba_path, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(1, 0, 500000, 0, -1, 5000000), photometric="RGB",
                       alpha="YES") as dst:
        dst.write(rgba)
    from osgeo import gdal

    warped = tmp_path / "rgba-utm32.tif"
    gdal.Warp(str(warped), str(rgba_path), dstSRS="EPSG:32632").FlushCache()  # keeps the alpha band, no nodata
    with rasterio.open(warped) as src:
        assert src.count == 4 and src.colorinterp[3].name == "alpha"
    summary = run_change_detection(t1, warped, pointwise, OutputPaths(change_mask=tmp_path / "m.tif"),
                                   RunOptions(bands_t2=(1, 2, 3)))
    assert summary.valid_pixels > 0.8 * 64 * 64


def test_a_truncated_geotiff_is_blamed_with_its_name(tmp_path, pointwise):
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=256, width=256)
    cut = tmp_path / "cut.tif"
    with rasterio.open(t2) as src, rasterio.open(cut, "w", **(src.profile | {"tiled": False, "compress": "deflate",
                                                                             "blockysize": 8})) as dst:
        dst.write(src.read())
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match=r"cut\.tif") as caught:
        run_change_detection(t1, cut, pointwise, OutputPaths(change_prob=tmp_path / "out" / "p.tif"))
    assert "damaged or incomplete" in str(caught.value)
    assert not list((tmp_path / "out").iterdir())


def test_a_vrt_whose_source_is_missing_is_blamed_with_its_name(tmp_path, pointwise):
    from osgeo import gdal

    t1, t2, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=64, width=64)
    copy = tmp_path / "copy.tif"
    copy.write_bytes(t2.read_bytes())
    vrt = tmp_path / "t2.vrt"
    gdal.BuildVRT(str(vrt), [str(copy)]).FlushCache()
    copy.unlink()
    with pytest.raises(InputError, match=r"t2.vrt"):
        run_change_detection(t1, vrt, pointwise, OutputPaths(change_prob=tmp_path / "p.tif"))
    assert not _leftovers(tmp_path)


def test_a_full_disk_gives_a_message_and_leaves_nothing_behind(tmp_path, pointwise, monkeypatch):
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=64, width=64)
    out = tmp_path / "out"
    out.mkdir()

    def full(self, count):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.RasterWriter, "_flush", full)
    with pytest.raises(InputError, match=r"is full") as caught:
        run_change_detection(t1, t2, pointwise, OutputPaths(fromto=out / "f.tif"))
    assert str(out) in str(caught.value)
    assert not list(out.iterdir())


def test_a_zip_that_is_not_a_model_file_says_so(tmp_path):
    path = tmp_path / "weights.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(CheckpointError, match=r"zip archive but not a PyTorch model file.*readme.txt"):
        load_checkpoint(path)


# --- inputs refused or accepted wrongly ------------------------------------------------------


def test_south_up_rasters_work_and_give_the_north_up_result_mirrored(tmp_path, pointwise):
    north1, north2, _ = synthetic.write_pair(tmp_path / "north", PALETTE, height=48, width=40)
    south = tmp_path / "south"
    south.mkdir()
    flipped = []
    for path in (north1, north2):
        with rasterio.open(path) as src:
            target = south / path.name
            synthetic.write_geotiff(target, src.read()[:, ::-1, :].copy(),
                                    transform=Affine(1.0, 0.0, 500000.0, 0.0, 1.0, 5000000.0 - 48))
            flipped.append(target)
    run_change_detection(north1, north2, pointwise, OutputPaths(fromto=tmp_path / "n.tif"))
    run_change_detection(*flipped, pointwise, OutputPaths(fromto=tmp_path / "s.tif"))
    np.testing.assert_array_equal(read_band(tmp_path / "s.tif"), read_band(tmp_path / "n.tif")[::-1])
    with rasterio.open(tmp_path / "s.tif") as src:
        assert src.transform.e == 1.0


def test_a_gcp_only_raster_is_told_to_be_warped(tmp_path, pointwise):
    t1, _, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=32, width=32)
    gcp_raster = tmp_path / "gcps.tif"
    gcps = [GroundControlPoint(0, 0, 500000, 5000000), GroundControlPoint(0, 32, 500032, 5000000),
            GroundControlPoint(32, 0, 500000, 4999968)]
    with rasterio.open(gcp_raster, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8",
                       gcps=gcps, crs="EPSG:32633") as dst:
        dst.write(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(InputError, match=r"ground control points.*warp") as caught:
        run_change_detection(t1, gcp_raster, pointwise, OutputPaths(change_prob=tmp_path / "p.tif"))
    assert "gcps.tif" in str(caught.value) and "assign its CRS" not in str(caught.value)


@pytest.mark.parametrize("bands", [(1.7, 2, 3), (1, 2.2, 3), ("red", 2, 3), (True, 2, 3)])
def test_band_numbers_that_are_not_whole_are_refused(scene_pair, pointwise, tmp_path, bands):
    t1, t2, _ = scene_pair
    with pytest.raises(InputError, match=r"whole numbers from 1 up") as caught:
        run_change_detection(t1, t2, pointwise, OutputPaths(change_prob=tmp_path / "p.tif"),
                             RunOptions(bands_t1=bands))  # type: ignore[arg-type]
    assert "T1" in str(caught.value) and str(t1) in str(caught.value)


def test_complex_input_is_refused(tmp_path, pointwise):
    t1, _, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=32, width=32)
    slc = synthetic.write_geotiff(tmp_path / "slc.tif", (np.ones((3, 32, 32)) * (1 + 2j)).astype(np.complex64))
    with pytest.raises(InputError, match=r"complex numbers") as caught:
        run_change_detection(t1, slc, pointwise, OutputPaths(change_prob=tmp_path / "p.tif"))
    assert "slc.tif" in str(caught.value)


def test_a_tile_larger_than_the_raster_pads_only_to_what_the_network_needs(tmp_path, pointwise):
    assert TileGrid(64, 64, 4096, 0).model_size == 64
    assert TileGrid(40, 70, 512, 128).model_size == 96
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=64, width=64)
    summary = run_change_detection(t1, t2, pointwise, OutputPaths(change_prob=tmp_path / "p.tif"),
                                   RunOptions(tile_size=4096, overlap=0))
    run_bytes = summary.memory_estimate_bytes - memory.process_rss_bytes()
    assert run_bytes < 200 * 2**20


def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_starts(tmp_path, pointwise, monkeypatch):
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", PALETTE, height=64, width=64)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2**20)
    with pytest.raises(InputError, match=r"needs about .* only 1 MiB is available.*batch size"):
        run_change_detection(t1, t2, pointwise, OutputPaths(change_prob=tmp_path / "p.tif"),
                             RunOptions(device="cpu"))
    assert not list(tmp_path.glob("*.tif")) and not _leftovers(tmp_path)


def test_tiny_strides_are_refused():
    with pytest.raises(InputError, match=r"stride of 1 px.*4096 times"):
        TileGrid(512, 512, 64, 63)
    with pytest.raises(InputError, match=r"at most 51 px \(80 % of the tile\)"):
        TileGrid(512, 512, 64, 52)
    for tile in range(32, 200):  # the plugin's largest overlap, 75 % rounded to whole pixels, always passes
        assert len(TileGrid(512, 512, tile, round(tile * 0.75))) > 0

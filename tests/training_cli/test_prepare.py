"""``prepare``: a user's two GeoTIFFs and labels cut into a training set, split by blocks, nodata skipped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from core import synthetic
from core.models.card import SECOND_CLASSES
from training_cli.cli import main
from training_cli.commands.prepare import assign_blocks
from training_cli.datasets import detect_format, open_dataset


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> synthetic.ScenePaths:
    return synthetic.write_scene(tmp_path_factory.mktemp("scene"), SECOND_CLASSES, size=256, seed=2,
                                 t2_crs="EPSG:4326", nodata_border=0.3)


def _tiles(out: Path) -> list[dict[str, str]]:
    with open(out / "tiles.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _t1_offset(scene: synthetic.ScenePaths, row: dict[str, str]) -> tuple[int, int]:
    with rasterio.open(scene.t1) as src:
        col, line = ~src.transform * (float(row["x"]), float(row["y"]))
    return round(line), round(col)


def test_binary_prepare_aligns_labels_skips_nodata_and_splits_by_block(tmp_path: Path, scene) -> None:
    out = tmp_path / "cd"
    code = main(["prepare", "--t1", str(scene.t1), "--t2", str(scene.t2), "--labels", str(scene.truth_change),
                 "--out", str(out), "--tile", "64", "--block", "2", "--split", "0.5,0.25,0.25"])
    assert code == 0
    tiles = _tiles(out)
    assert 0 < len(tiles) < 16  # T2's nodata strip (30 % of the width) leaves the east column of tiles out
    assert all(float(t["valid"]) >= 0.5 for t in tiles)
    assert {t["split"] for t in tiles} == {"train", "val", "test"}
    assert detect_format(out) == "binary"
    with rasterio.open(scene.truth_change) as src:
        truth = src.read(1)
    for tile in tiles[:3]:
        row, col = _t1_offset(scene, tile)
        label = np.array(Image.open(out / tile["split"] / "label" / tile["name"]))
        t2_valid = np.array(Image.open(out / tile["split"] / "B" / tile["name"])).any(axis=2)
        assert t2_valid.mean() > 0.5
        expected = truth[row:row + 64, col:col + 64] > 0
        assert np.array_equal((label > 0)[t2_valid], expected[t2_valid])
        assert not (label > 0)[~t2_valid].any()  # no label where T2 has no data
    with rasterio.open(scene.t1) as src:
        first = tiles[0]
        row, col = _t1_offset(scene, first)
        t1 = src.read(window=((row, row + 64), (col, col + 64)))
    assert np.array_equal(np.array(Image.open(out / first["split"] / "A" / first["name"])).transpose(2, 0, 1), t1)
    assert len(open_dataset(out, split="train")) == sum(t["split"] == "train" for t in tiles)


def test_semantic_prepare_writes_the_second_layout(tmp_path: Path, scene) -> None:
    out = tmp_path / "scd"
    assert main(["prepare", "--t1", str(scene.t1), "--t2", str(scene.t2), "--labels", str(scene.truth_t1),
                 "--labels-t2", str(scene.truth_t2), "--out", str(out), "--tile", "64",
                 "--split", "1,0,0"]) == 0
    assert detect_format(out) == "second"
    dataset = open_dataset(out, split="train")
    with rasterio.open(scene.truth_t1) as a, rasterio.open(scene.truth_t2) as b:
        c1, c2 = a.read(1), b.read(1)
    item = dataset[0]
    row, col = _t1_offset(scene, _tiles(out)[0])
    window = np.s_[row:row + 64, col:col + 64]
    changed = c1[window] != c2[window]
    assert np.array_equal(item["change"][0].numpy() > 0, changed)
    assert np.array_equal(item["sem_t1"].numpy(), np.where(changed, c1[window], 0))


def test_prepare_refuses_bad_labels_and_existing_output(tmp_path: Path, scene, capsys) -> None:
    with rasterio.open(scene.truth_t1) as src:
        profile, values = src.profile, src.read()
    bad = tmp_path / "bad.tif"
    with rasterio.open(bad, "w", **profile) as dst:
        dst.write(values)  # classes 1..6 are not a 0/1 change mask
    assert main(["prepare", "--t1", str(scene.t1), "--t2", str(scene.t2), "--labels", str(bad),
                 "--out", str(tmp_path / "x"), "--tile", "64"]) == 2
    assert "bad.tif: a change mask must hold 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial*"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    assert main(["prepare", "--t1", str(scene.t1), "--t2", str(scene.t2), "--labels", str(scene.truth_change),
                 "--out", str(tmp_path / "full"), "--tile", "64"]) == 2
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep"


def test_blocks_go_wholly_to_one_split_in_proportion() -> None:
    tiles = [(r, c) for r in range(8) for c in range(8)]
    splits = assign_blocks(tiles, 2, (0.5, 0.25, 0.25), seed=1)
    for r in range(0, 8, 2):
        for c in range(0, 8, 2):
            assert len({splits[(r + i, c + j)] for i in range(2) for j in range(2)}) == 1
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 32, "val": 16, "test": 16}


def test_tiles_outside_the_labels_footprint_are_skipped(tmp_path: Path, scene) -> None:
    with rasterio.open(scene.truth_change) as src:
        profile, values = src.profile, src.read(window=((0, 256), (0, 128)))
    west = tmp_path / "west.tif"
    with rasterio.open(west, "w", **(profile | {"width": 128})) as dst:
        dst.write(values)
    out = tmp_path / "west-only"
    assert main(["prepare", "--t1", str(scene.t1), "--t2", str(scene.t2), "--labels", str(west),
                 "--out", str(out), "--tile", "64", "--split", "1,0,0"]) == 0
    tiles = _tiles(out)
    assert tiles and all(_t1_offset(scene, t)[1] < 128 for t in tiles)


@pytest.fixture(scope="module")
def multispectral(tmp_path_factory: pytest.TempPathFactory) -> synthetic.ScenePaths:
    """Five bands of uint16 reflectance x 10000 (red, green, blue, near infrared, one more)."""
    return synthetic.write_multispectral_scene(tmp_path_factory.mktemp("ms"), size=128, bands=5, seed=3)


def test_prepare_keeps_any_bands_in_their_own_units_and_records_training_statistics(tmp_path: Path,
                                                                                   multispectral) -> None:
    out = tmp_path / "ms"
    assert main(["prepare", "--t1", str(multispectral.t1), "--t2", str(multispectral.t2), "--labels",
                 str(multispectral.truth_t1), "--labels-t2", str(multispectral.truth_t2), "--out", str(out),
                 "--tile", "64", "--block", "1", "--split", "0.5,0.5,0", "--bands-t1", "4,3,2,5"]) == 0
    record = json.loads((out / "prepare.json").read_text())
    assert record["bands_t1"] == record["bands_t2"] == [4, 3, 2, 5]  # T2 takes T1's numbers unless told
    assert record["scaling"] == "statistics" and record["dtype_t1"] == "uint16"
    assert [d[0] for d in record["band_descriptions_t1"]] == ["NIR", "Blue", "Green", "Extra 5"]
    tiles = _tiles(out)
    with rasterio.open(multispectral.t1) as src:
        source = src.read([4, 3, 2, 5])
    pixels = []
    for tile in tiles:
        row, col = _t1_offset(multispectral, tile)
        path = out / tile["split"] / "im1" / tile["name"].replace(".png", ".tif")
        with rasterio.open(path) as written:
            values = written.read()
            assert written.dtypes[0] == "uint16" and written.count == 4
        assert np.array_equal(values, source[:, row:row + 64, col:col + 64])  # the values themselves: no stretch
        if tile["split"] == "train":
            pixels.append(values.reshape(4, -1))
    train = np.concatenate(pixels, axis=1).astype(np.float64)
    statistics = record["statistics"]
    np.testing.assert_allclose(statistics["mean_t1"], train.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(statistics["std_t1"], train.std(axis=1), rtol=1e-5)
    assert statistics["split"] == "train" and statistics["pixels"] == train.shape[1]
    # the dataset reads the four bands, normalised by those statistics by default
    dataset = open_dataset(out, split="train")
    item = dataset[0]
    counted = sum(np.bincount(d[key].reshape(-1).numpy(), minlength=7) for d in dataset for key in ("sem_t1", "sem_t2"))
    assert np.array_equal(dataset.class_pixels(), counted)  # what balanced class weights count, labels only
    assert item["t1"].shape == (4, 64, 64)
    row, col = _t1_offset(multispectral, next(t for t in tiles if t["split"] == "train"))
    expected = (source[:, row:row + 64, col:col + 64] - np.array(statistics["mean_t1"])[:, None, None]) \
        / np.array(statistics["std_t1"])[:, None, None]
    np.testing.assert_allclose(item["t1"].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_prepare_applies_a_declared_scale_and_offset_and_keeps_it_on_the_tiles(tmp_path: Path, multispectral) -> None:
    """A Sentinel-2 L2A file of processing baseline 04.00 declares scale 0.0001 and offset -0.1 (-1000 DN)."""
    declared = tmp_path / "t2-n0400.tif"
    with rasterio.open(multispectral.t2) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(declared, "w", **profile) as dst:
        dst.write(data + 1000)
        dst.scales, dst.offsets = [0.0001] * 5, [-0.1] * 5
    out = tmp_path / "declared"
    assert main(["prepare", "--t1", str(multispectral.t1), "--t2", str(declared), "--labels",
                 str(multispectral.truth_change), "--out", str(out), "--tile", "64", "--split", "1,0,0"]) == 0
    record = json.loads((out / "prepare.json").read_text())
    assert record["bands_t2"] == [1, 2, 3, 4, 5]  # every band by default
    statistics = record["statistics"]
    # T2's statistics are reflectance (0..1); T1's stay in its own DN
    np.testing.assert_allclose(statistics["mean_t2"], data.reshape(5, -1).mean(axis=1) / 10000, rtol=0.05)
    assert statistics["mean_t1"][0] > 100
    tile = _tiles(out)[0]
    with rasterio.open(out / "train" / "B" / tile["name"].replace(".png", ".tif")) as written:
        assert written.scales == (0.0001,) * 5 and written.offsets == (-0.1,) * 5
    item = open_dataset(out, split="train", mean=(0.0,) * 5, std=(1.0,) * 5)[0]
    row, col = _t1_offset(multispectral, tile)
    np.testing.assert_allclose(item["t2"].numpy(), data[:, row:row + 64, col:col + 64] / 10000, atol=1e-6)


@pytest.mark.parametrize(("options", "said"), [
    (["--bands-t1", "4,3,2,5", "--bands-t2", "3,2,1"], "4 bands for T1 ("),
    ([], "5 bands for T1 ("),
])
def test_dates_with_different_band_counts_are_refused_naming_both_counts(tmp_path: Path, multispectral, capsys,
                                                                        options: list[str], said: str) -> None:
    three = tmp_path / "t2-rgb.tif"
    with rasterio.open(multispectral.t2) as src:
        profile, data = src.profile, src.read([1, 2, 3])
    with rasterio.open(three, "w", **(profile | {"count": 3})) as dst:
        dst.write(data)
    out = tmp_path / "refused"
    assert main(["prepare", "--t1", str(multispectral.t1), "--t2", str(three), "--labels",
                 str(multispectral.truth_change), "--out", str(out), "--tile", "64", *options]) == 2
    error = capsys.readouterr().err
    assert said in error and f"{multispectral.t1}" in error and "but 3 for T2" in error and str(three) in error
    assert not out.exists() and not list(tmp_path.glob(".refused*"))

"""Dataset layouts read into the trainer's items: labels decoded, splits found, bad data named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import InputError
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES
from training_cli.datasets import detect_format, list_samples, open_dataset
from training_cli.datasets.dataset import crop_starts

SECOND_PALETTE = [(255, 255, 255), *(c.color for c in SECOND_CLASSES)]
LANDSAT_PALETTE = [(255, 255, 255), *(c.color for c in LANDSAT_SCD_CLASSES)]


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def _colour(indices: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    return np.asarray(palette, np.uint8)[indices]


def _second_pair(base: Path, name: str, seed: int, size: tuple[int, int] = (20, 24)) -> tuple[np.ndarray, ...]:
    """A pair whose T1 red band encodes the T1 class (class * 30), so transforms can be checked pixel by pixel."""
    rng = np.random.default_rng(seed)
    sem1 = rng.integers(1, 7, size)
    sem2 = rng.integers(1, 7, size)
    unchanged = rng.random(size) < 0.5
    sem1[unchanged] = 0
    sem2[unchanged] = 0
    image1 = rng.integers(0, 256, (*size, 3))
    image1[..., 0] = sem1 * 30
    image2 = 255 - image1
    _save(base / "im1" / f"{name}.png", image1)
    _save(base / "im2" / f"{name}.png", image2)
    _save(base / "label1" / f"{name}.png", _colour(sem1, SECOND_PALETTE))
    _save(base / "label2" / f"{name}.png", _colour(sem2, SECOND_PALETTE))
    return image1, image2, sem1, sem2


@pytest.fixture
def second(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, ...]]]:
    root = tmp_path / "second"
    pairs = {"a": _second_pair(root / "train", "a", 1), "b": _second_pair(root / "train", "b", 2),
             "c": _second_pair(root / "val", "c", 3)}
    return root, pairs


def test_second_items_decode_palette_labels_and_normalise_each_date(second) -> None:
    root, pairs = second
    assert detect_format(root) == "second"
    dataset = open_dataset(root, split="train", mean=(10, 20, 30), std=(2, 4, 5), mean_t2=(0, 0, 0),
                           std_t2=(1, 1, 1))
    assert len(dataset) == 2 and dataset.task == "semantic"
    item = dataset[0]
    image1, image2, sem1, sem2 = pairs["a"]
    assert item["name"] == "a"
    assert item["t1"].dtype == torch.float32 and item["t1"].shape == (3, 20, 24)
    expected_t1 = (image1.transpose(2, 0, 1) - np.array([10, 20, 30])[:, None, None]) / np.array([2, 4, 5])[:, None,
                                                                                                             None]
    assert np.allclose(item["t1"].numpy(), expected_t1)
    assert np.allclose(item["t2"].numpy(), image2.transpose(2, 0, 1))
    assert item["sem_t1"].dtype == torch.int64 and np.array_equal(item["sem_t1"].numpy(), sem1)
    assert np.array_equal(item["sem_t2"].numpy(), sem2)
    assert item["change"].dtype == torch.float32 and item["change"].shape == (1, 20, 24)
    assert np.array_equal(item["change"][0].numpy(), (sem1 > 0).astype(np.float32))
    assert item["valid"].min() == 1


def test_second_default_normalisation_is_the_preset_per_date(second) -> None:
    root, pairs = second
    item = open_dataset(root, "second", "val")[0]
    image1 = pairs["c"][0].transpose(2, 0, 1)
    expected = (image1[0] - 113.40) / 48.30
    assert np.allclose(item["t1"][0].numpy(), expected, atol=1e-5)


def test_second_bisrnet_proportion_split_and_list_files(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for k in range(10):
        _second_pair(root, f"{k:05d}", k, size=(4, 4))
    train = {s.name for s in list_samples(root, "second", "train")}
    val = {s.name for s in list_samples(root, "second", "val")}
    assert len(train) == 8 and len(val) == 2 and not train & val
    assert train | val == {f"{k:05d}" for k in range(10)}
    assert {s.name for s in list_samples(root, "second", "train")} == train  # stable
    (root / "val.txt").write_text("00003.png\n00007.png\n")
    assert [s.name for s in list_samples(root, "second", "val")] == ["00003", "00007"]
    listed = tmp_path / "mine.txt"
    listed.write_text("some/where/00001.png\n")
    assert [s.name for s in open_dataset(root, split=listed).samples] == ["00001"]


def test_label_colour_outside_the_palette_names_the_file_and_colour(second) -> None:
    root, _ = second
    label = np.array(Image.open(root / "train" / "label1" / "b.png"))
    label[3, 5] = (1, 2, 3)
    _save(root / "train" / "label1" / "b.png", label)
    with pytest.raises(InputError, match=r"label1/b\.png: label colour \(1, 2, 3\) at row 3, column 5"):
        open_dataset(root, split="train")[1]


def test_missing_partner_and_mismatched_size_are_named(second) -> None:
    root, _ = second
    (root / "train" / "im2" / "b.png").unlink()
    with pytest.raises(InputError, match=r"im1/b\.png: no partner image named b\.\* in .*im2"):
        open_dataset(root, split="train")
    _second_pair(root / "val", "d", 4, size=(20, 20))
    (root / "val" / "label2" / "d.png").unlink()
    _save(root / "val" / "label2" / "d.png", np.full((18, 20, 3), 255))
    with pytest.raises(InputError, match=r"label2/d\.png: 20 x 18 px, but .*im1/d\.png is 20 x 20 px"):
        open_dataset(root, split="val")
    (root / "val" / "im1" / "x.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"im1/x\.png: no partner image"):
        open_dataset(root, split="val")


def _binary_pair(base: Path, name: str, label: np.ndarray, label_folder: str = "label") -> None:
    rng = np.random.default_rng(0)
    _save(base / "A" / f"{name}.png", rng.integers(0, 256, (*label.shape, 3)))
    _save(base / "B" / f"{name}.png", rng.integers(0, 256, (*label.shape, 3)))
    _save(base / label_folder / f"{name}.png", label)


def test_binary_labels_0_255_become_0_1_and_other_values_are_refused(tmp_path: Path) -> None:
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 1:3] = 255
    _binary_pair(tmp_path / "levir" / "test", "p1", label)
    assert detect_format(tmp_path / "levir") == "binary"
    dataset = open_dataset(tmp_path / "levir", split="test")
    item = dataset[0]
    assert dataset.task == "binary" and "sem_t1" not in item
    assert np.array_equal(item["change"][0].numpy(), label / 255)
    _binary_pair(tmp_path / "cdd" / "train", "q", label, label_folder="OUT")
    assert open_dataset(tmp_path / "cdd", "binary", "train")[0]["change"].sum() == 6
    label[0, 0] = 128
    _binary_pair(tmp_path / "bad", "r", label)
    with pytest.raises(InputError, match=r"label/r\.png: a binary change label must hold only 0 .* \[128\]"):
        open_dataset(tmp_path / "bad", "binary")[0]
    with pytest.raises(InputError, match="no split 'train'"):
        open_dataset(tmp_path / "bad", "binary", "train")


def test_landsat_fromto_label_splits_into_both_dates_with_invalid_areas_masked(tmp_path: Path) -> None:
    root = tmp_path / "landsat"
    codes = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], np.uint8).repeat(2, axis=0)
    image = np.full((4, 5, 3), 100, np.uint8)
    image2 = image.copy()
    image[0, 0] = image2[0, 0] = 255        # blank in both dates: no label
    image[0, 1] = 255                       # blank in T1 only: still labelled
    _save(root / "A" / "x.png", image)
    _save(root / "B" / "x.png", image2)
    _save(root / "label" / "x.png", codes)
    assert detect_format(root) == "landsat-scd"
    item = open_dataset(root)[0]
    assert item["sem_t1"][2].tolist() == [2, 3, 3, 4, 4]
    assert item["sem_t2"][2].tolist() == [4, 1, 2, 1, 2]
    assert item["sem_t1"][0].tolist() == [0, 1, 1, 2, 2]
    assert item["valid"][0, 0, :2].tolist() == [0, 1]
    assert item["change"][0, 0].tolist() == [0, 1, 1, 1, 1]
    resized = open_dataset(root, resize=16)[0]
    assert resized["t1"].shape == (3, 16, 16) and resized["sem_t1"].shape == (16, 16)
    assert set(resized["sem_t1"].unique().tolist()) <= {0, 1, 2, 3, 4}


def test_landsat_per_date_colour_maps_with_black_invalid(tmp_path: Path) -> None:
    root = tmp_path / "landsat"
    sem = np.array([[0, 1], [3, 4]])
    colours = _colour(sem, LANDSAT_PALETTE)
    colours[0, 0] = 0
    _save(root / "A" / "y.png", np.zeros((2, 2, 3)))
    _save(root / "B" / "y.png", np.zeros((2, 2, 3)))
    _save(root / "labelA_rgb" / "y.png", colours)
    _save(root / "labelB_rgb" / "y.png", colours)
    item = open_dataset(root)[0]
    assert item["sem_t1"].tolist() == [[0, 1], [3, 4]]
    assert item["valid"][0].tolist() == [[0, 1], [1, 1]]


def test_crop_grid_covers_sizes_that_are_not_a_multiple_and_pads_small_images(second) -> None:
    assert crop_starts(20, 16) == [0, 4] and crop_starts(32, 16) == [0, 16] and crop_starts(10, 16) == [0]
    root, pairs = second
    dataset = open_dataset(root, split="train", crop=16)
    assert len(dataset) == 2 * 2 * 2
    names = [dataset[i]["name"] for i in range(4)]
    assert names == ["a@0_0", "a@0_8", "a@4_0", "a@4_8"]
    last = dataset[3]
    assert np.array_equal(last["sem_t1"].numpy(), pairs["a"][2][4:20, 8:24])
    small = open_dataset(root, split="train", crop=32)[0]
    assert small["t1"].shape == (3, 32, 32)
    assert small["valid"][0, :20, :24].min() == 1 and small["valid"][0, 20:].max() == 0
    assert small["t1"][:, 20:].abs().max() < 1e-5  # padded with the mean: 0 after normalisation


def test_landsat_proportion_split_leaves_out_the_augmented_copies(tmp_path: Path) -> None:
    root = tmp_path / "landsat"
    names = [f"{k}" for k in range(10)] + ["3_rotate90", "4_Crop2", "5_ZheDang"]
    for name in names:
        _save(root / "A" / f"{name}.png", np.zeros((2, 2, 3)))
        _save(root / "B" / f"{name}.png", np.zeros((2, 2, 3)))
        _save(root / "label" / f"{name}.png", np.zeros((2, 2)))
    splits = {s: [x.name for x in list_samples(root, "landsat-scd", s)] for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [6, 2, 2]
    assert sorted(n for v in splits.values() for n in v) == sorted(names[:10])
    assert len(list_samples(root, "landsat-scd", "all")) == 13

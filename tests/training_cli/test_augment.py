"""The trainer's seeded flips and rotations (the one augmentation there is) keep every plane of an item aligned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.models.card import LANDSAT_SCD_CLASSES
from training_cli.augment import SPATIAL_KEYS, SeededItems, random_transform
from training_cli.datasets import open_dataset

LANDSAT_PALETTE = np.asarray([(255, 255, 255), *(c.color for c in LANDSAT_SCD_CLASSES)], np.uint8)


def test_every_dihedral_transform_keeps_images_labels_and_valid_mask_aligned() -> None:
    height = width = 8
    # every plane holds the same pixel index pattern, so aligned planes stay equal after any transform
    index = torch.arange(height * width, dtype=torch.float32).reshape(height, width)
    item = {"t1": index.expand(3, -1, -1).clone(), "t2": index.expand(3, -1, -1).clone(),
            "change": index[None].clone(), "valid": index[None].clone(), "sem_t1": index.long(),
            "sem_t2": index.long(), "name": "pair"}
    seen = set()
    for seed in range(64):
        out = random_transform(item, torch.Generator().manual_seed(seed), "dihedral")
        reference = out["change"][0]
        seen.add(tuple(reference.flatten()[:2].tolist()))
        for key in ("t1", "t2", "valid"):
            assert torch.equal(out[key][0], reference), key
        for key in ("sem_t1", "sem_t2"):
            assert torch.equal(out[key].float(), reference), key
        assert out["name"] == "pair"
    assert len(seen) == 8  # all eight symmetries of the square occur


def _landsat_pair(root: Path, size: int = 12) -> None:
    """A Landsat-SCD pair with a blank (no-data) block in one corner, so ``valid`` is not symmetric."""
    rng = np.random.default_rng(4)
    changed = rng.random((size, size)) < 0.5
    sem1 = np.where(changed, rng.integers(1, 5, (size, size)), 0)
    sem2 = np.where(changed, rng.integers(1, 5, (size, size)), 0)
    image1 = rng.integers(0, 200, (size, size, 3))
    image2 = 200 - image1
    image1[:3, :5] = image2[:3, :5] = 255  # blank in both dates: no label
    for folder, array in (("A", image1), ("B", image2), ("labelA_rgb", LANDSAT_PALETTE[sem1]),
                          ("labelB_rgb", LANDSAT_PALETTE[sem2])):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(array, np.uint8)).save(root / folder / "p.png")


def _symmetries(item: dict, allowed: list[tuple[int, bool]]) -> list[dict[str, np.ndarray]]:
    """``item``'s planes under each (quarter turns, then left-right mirror) symmetry, computed with numpy."""
    out = []
    for turns, mirror in allowed:
        moved = {}
        for key in SPATIAL_KEYS:
            array = np.rot90(item[key].numpy(), turns, axes=(-2, -1))
            moved[key] = array[..., ::-1] if mirror else array
        out.append(moved)
    return out


DIHEDRAL = [(turns, mirror) for turns in range(4) for mirror in (False, True)]
FLIPS = [(0, False), (0, True), (2, True), (2, False)]  # none, left-right, up-down, both


@pytest.mark.parametrize(("mode", "allowed"), [("dihedral", DIHEDRAL), ("flips", FLIPS)])
def test_seeded_augmentation_moves_both_dates_labels_and_valid_mask_together(
        tmp_path: Path, mode: str, allowed: list[tuple[int, bool]]) -> None:
    """Through the trainer's wrapper on a real Landsat-SCD item with a blank corner: every epoch's item is
    exactly one allowed symmetry of the original applied to T1, T2, both labels, change and ``valid``; every
    allowed symmetry occurs, and the same run seed and epoch give the same item again (exact resume)."""
    _landsat_pair(tmp_path / "landsat")
    dataset = open_dataset(tmp_path / "landsat", "landsat-scd", mean=(0, 0, 0), std=(1, 1, 1))
    original = dataset[0]
    assert 0 < original["valid"].sum() < original["valid"].numel()  # the blank corner is unlabelled
    candidates = _symmetries(original, allowed)
    items = SeededItems(dataset, seed=9, augment=mode)
    again = SeededItems(dataset, seed=9, augment=mode)
    seen = set()
    for epoch in range(48):
        items.set_epoch(epoch)
        item = items[0]
        matches = [k for k, moved in enumerate(candidates)
                   if all(np.array_equal(item[key].numpy(), moved[key]) for key in SPATIAL_KEYS)]
        assert len(matches) == 1, f"epoch {epoch}: the planes were not moved by one common symmetry"
        seen.add(matches[0])
        blank = (item["t1"] == 255).all(0) & (item["t2"] == 255).all(0)
        assert torch.equal(item["valid"][0] == 0, blank)
        again.set_epoch(epoch)
        assert all(torch.equal(item[key], again[0][key]) for key in SPATIAL_KEYS)
    assert seen == set(range(len(allowed)))


def test_the_datasets_themselves_do_not_augment(tmp_path: Path) -> None:
    """One augmentation path: reading an item twice gives it unchanged (the trainer's wrapper moves it)."""
    _landsat_pair(tmp_path / "landsat")
    dataset = open_dataset(tmp_path / "landsat", "landsat-scd")
    first, second = dataset[0], dataset[0]
    assert all(torch.equal(first[key], second[key]) for key in SPATIAL_KEYS)
    with pytest.raises(TypeError):
        open_dataset(tmp_path / "landsat", "landsat-scd", augment=True)  # type: ignore[call-arg]

"""Tiny in-memory bitemporal datasets for trainer tests, following the datasets' item layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from core import synthetic
from core.models.card import SECOND_CLASSES

MEAN, STD = 127.5, 64.0


class MemoryPairs(Dataset):
    """``count`` synthetic pairs of ``size`` px: items as ``training_cli.datasets`` gives them.

    Semantic labels carry the land cover only where it changed (0 elsewhere), as SECOND does.
    """

    def __init__(self, count: int, size: int = 64, *, seed: int = 0, semantic: bool = True, classes: int = 6) -> None:
        palette = [c.color for c in SECOND_CLASSES[:classes]]
        self.items: list[dict[str, Any]] = []
        for index in range(count):
            scene = synthetic.make_scene(size, size, classes, seed=seed * 1000 + index, changes=4)
            changed = scene.changed
            item: dict[str, Any] = {
                "t1": _normalised(synthetic.render(scene.labels_t1, palette, seed=2 * index)),
                "t2": _normalised(synthetic.render(scene.labels_t2, palette, seed=2 * index + 1)),
                "change": torch.from_numpy(changed[None].astype(np.float32)),
                "name": f"pair{index:03d}.png",
            }
            if semantic:
                item["sem_t1"] = torch.from_numpy(np.where(changed, scene.labels_t1, 0).astype(np.int64))
                item["sem_t2"] = torch.from_numpy(np.where(changed, scene.labels_t2, 0).astype(np.int64))
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self.items[index])


def _normalised(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((image.astype(np.float32) - MEAN) / STD)


def write_folder(root: Path, *, semantic: bool, train: int, val: int, size: int = 64, seed: int = 0,
                 changes: int = 4) -> Path:
    """A dataset folder with ``train/`` and ``val/`` in the SECOND (``im1 im2 label1 label2``, colour
    labels, white = no change) or binary (``A B label``, 0/255) layout, as the real sets are released."""
    from PIL import Image

    palette = [c.color for c in SECOND_CLASSES]
    for split, count, offset in (("train", train, 0), ("val", val, 500)):
        for index in range(count):
            scene = synthetic.make_scene(size, size, 6, seed=seed * 1000 + offset + index, changes=changes)
            changed = scene.changed
            images = {"1": synthetic.render(scene.labels_t1, palette, seed=2 * (offset + index)),
                      "2": synthetic.render(scene.labels_t2, palette, seed=2 * (offset + index) + 1)}
            name = f"{index:04d}.png"
            folders = ("im1", "im2") if semantic else ("A", "B")
            for folder, key in zip(folders, ("1", "2"), strict=True):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[key].transpose(1, 2, 0)).save(root / split / folder / name)
            if semantic:
                colours = np.asarray([(255, 255, 255), *palette], dtype=np.uint8)
                for folder, labels in (("label1", scene.labels_t1), ("label2", scene.labels_t2)):
                    (root / split / folder).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(colours[np.where(changed, labels, 0)]).save(root / split / folder / name)
            else:
                (root / split / "label").mkdir(parents=True, exist_ok=True)
                Image.fromarray((changed * 255).astype(np.uint8)).save(root / split / "label" / name)
    return root

"""Test helpers: tiny models with known behaviour and model cards (import as ``helpers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models.base import ChangeModel
from core.models.card import SECOND_CLASSES, ModelCard


class PointwiseModel(ChangeModel):
    """Each output pixel depends on its own input pixel only, so tiling must not change anything."""

    task = "semantic"

    def __init__(self, num_classes: int = 6, bands: int = 3, threshold: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.with_threshold = threshold
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

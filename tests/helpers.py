"""Test helpers: tiny models with known behaviour and model cards (import as ``helpers``)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
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

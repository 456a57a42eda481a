"""Shared fixtures: tiny models with known behaviour and synthetic two-date rasters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import PointwiseModel, make_card
from torch import nn

from core import synthetic
from core.models.card import SECOND_CLASSES, ModelCard


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The tests' convolutions are tiny: one intra-op thread runs them faster than two spinning OpenMP threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _private_backend_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Exported networks go to a folder of the test session's own, never the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCD_CACHE_DIR", str(tmp_path_factory.mktemp("backend-cache")))
        yield


@pytest.fixture
def pointwise() -> tuple[nn.Module, ModelCard]:
    return PointwiseModel().eval(), make_card()


@pytest.fixture
def scene_pair(tmp_path: Path) -> tuple[Path, Path, synthetic.Scene]:
    """A 200 x 150 px 8-bit RGB pair on one UTM grid."""
    palette = [c.color for c in SECOND_CLASSES]
    return synthetic.write_pair(tmp_path / "in", palette, height=200, width=150, seed=3)


"""LSAFNet (Zhou et al.), a late-stage bitemporal feature fusion network for semantic change detection."""

from __future__ import annotations

from ..base import ModelSpec
from .losses import TRAINING, compute_loss
from .model import LSAFNet

SPEC = ModelSpec(
    name="lsafnet",
    task="semantic",
    model_class=LSAFNet,
    paper="Zhou et al., A Late-Stage Bitemporal Feature Fusion Network for Semantic Change Detection (LSAFNet)",
    default_tile_size=512,
    backbones=("resnet34",),
    default_options={"backbone": "resnet34", "num_classes": 6, "variant": "paper"},
    training=TRAINING,
)

__all__ = ["SPEC", "LSAFNet", "compute_loss"]

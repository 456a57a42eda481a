"""GAPL-SCD (seed paper P0): graph aggregation prototype learning for semantic change detection."""

from __future__ import annotations

from ..base import ModelSpec
from .losses import TRAINING, compute_loss, project_conflicting, rotated_backward
from .model import BACKBONES, GAPLSCD

SPEC = ModelSpec(
    name="gapl_scd",
    task="semantic",
    model_class=GAPLSCD,
    paper="Xu et al., Graph Aggregation Prototype Learning for Semantic Change Detection in Remote Sensing (GAPL-SCD)",
    default_tile_size=512,
    backbones=BACKBONES,
    default_options={"backbone": "resnet34", "num_classes": 6},
    training=TRAINING,
)

__all__ = ["GAPLSCD", "SPEC", "TRAINING", "compute_loss", "project_conflicting", "rotated_backward"]

"""SSCFNet (Wang et al., IEEE JSTARS 16, 2023): binary change detection by spatial-spectral cross fusion."""

from __future__ import annotations

from ..base import ModelSpec
from .losses import TRAINING, compute_loss
from .model import BACKBONES, SSCFNet

SPEC = ModelSpec(
    name="sscfnet",
    task="binary",
    model_class=SSCFNet,
    paper=(
        "Wang et al., SSCFNet: A Spatial-Spectral Cross Fusion Network for Remote Sensing Change Detection, "
        "IEEE JSTARS 16, 2023"
    ),
    default_tile_size=256,
    backbones=BACKBONES,
    default_options={"backbone": "resnet50", "upsample_mode": "bilinear", "lightweight_head": False},
    paper_params_m={"resnet50": 29.21, "resnext50_32x4d": 28.68, "resnet101": 48.20},
    paper_gflops={"resnet50": 73.06, "resnext50_32x4d": 72.12, "resnet101": 111.95},
    paper_flops_size=256,
    paper_flops_unit="flops",
    training=TRAINING,
)

__all__ = ["SPEC", "SSCFNet", "compute_loss"]

"""CLDRNet (Wan et al., IEEE JSTARS 2023): binary change detection with a learned threshold map.

See :mod:`.model` for the architecture and every choice made where the paper is silent, and
:mod:`.losses` for the two training stages.
"""

from __future__ import annotations

from ..base import ModelSpec
from .losses import TRAINING, compute_loss
from .model import CLDRNet, stage_parameters

SPEC = ModelSpec(
    name="cldrnet",
    task="binary",
    model_class=CLDRNet,
    paper=(
        "Wan et al., CLDRNet: A Difference Refinement Network Based on Category Context Learning "
        "for Remote Sensing Image Change Detection, IEEE JSTARS 2023"
    ),
    default_tile_size=512,
    backbones=("resnet50",),
    default_options={"backbone": "resnet50", "clusters": 8, "descriptor_dim": 3, "share_ccm": True},
    paper_params_m={"resnet50": 22.92},
    paper_gflops={"resnet50": 46.30},
    paper_flops_size=512,
    paper_flops_unit="macs",
    training=TRAINING,
)

__all__ = ["SPEC", "CLDRNet", "compute_loss", "stage_parameters"]

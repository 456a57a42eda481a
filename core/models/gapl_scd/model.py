"""GAPL-SCD: Graph Aggregation Prototype Learning for Semantic Change Detection.

Xu, Wu, Jiang, Geng (NWPU), "Graph Aggregation Prototype Learning for Semantic Change
Detection in Remote Sensing" (overview in docs/networks.md). A shared Siamese ResNet-34 feeds
three branches: SQMLFI + a 1x1 classifier per date (semantic segmentation, weights shared
between dates), BTFF + a 3x3/1x1 head (2-class change detection), and GAPL, a graph /
prototype branch that exists only to give the training loss ``L_cpa`` and is skipped at
inference. The multi-task loss (eq. 8, 16-18) and the gradient projection (eq. 19) live in
:mod:`.losses`.

Choices made where the paper is silent or contradicts itself:

Outputs and classes
    * The semantic heads give ``N + 1`` logits, index 0 = "no change", which is never a
      target (``ignore_index=0`` in ``L_ss``); the GAPL prototypes are over the ``N`` land-cover
      classes only ("no change" is not a land-cover class and has no prototype).
    * Every head works at H/4 and its logits are bilinearly upsampled x4 to the input size.
    * ``change_prob`` is ``softmax(change_logits)[:, 1]``; the 2-class logits are also returned,
      in training mode only, as ``aux_change_logits`` so ``L_cd`` is a stable cross-entropy.
    * Outputs are cast to float32 (autocast may compute them in bfloat16).

Backbone
    * torchvision ResNet-34 without its classifier; ``X_1..X_4`` = layer1..layer4 (64/128/256/512
      channels at strides 4/8/16/32). The stem output is not used.
    * Both dates go through the encoder (and the semantic branch) as one concatenated batch, so
      in training mode BatchNorm statistics are taken over both dates together.

SQMLFI (eq. 10-12)
    * The self-query map ``Q_l`` has ``C_l`` channels (a literal element-wise Hadamard weighting);
      its 3x3 conv has a bias.
    * The conv block is Conv3x3(256, with bias) -> ReLU -> BatchNorm, in the paper's order.
    * "FC over the stacked levels" = ``Linear(4 -> 1)`` along the level axis (one learned weight per
      level, shared over pixels and channels), initialised to the mean of the levels.
    * Classifier: Conv1x1(256 -> 128) -> BN -> ReLU -> Conv1x1(128 -> N + 1).
    * SQMLFI and classifier weights are shared between T1 and T2 (Siamese convention).

BTFF (eq. 13-15)
    * ``cos`` is the cosine similarity along channels (a 1-channel map).
    * Width 64 throughout: both 3x3 convs of eq. 13 give 64 channels each, eq. 14's 3x3 conv maps
      128 -> 64 (no bias, BN follows) and its 1x1 conv 64 -> 64, so every ``F_l`` has 64 channels.
    * DeConv = ``ConvTranspose2d(64, 64, kernel_size=2, stride=2)``, a separate one per step.
    * CD head: Conv3x3(64 -> 64) -> BN -> ReLU -> Conv1x1(64 -> 2); the BN + ReLU are added.

GAPL (eq. 1-9, training only)
    * One graph per image over its H/32 x W/32 feature vectors of ``X_4`` (d = 512).
    * The graph (default ``graph_kernel="knn"``): the heat kernel ``exp(-d^2 / (2 sigma^2))`` with sigma
      = the median off-diagonal pairwise distance of that image (detached), kept only between each node
      and its ``graph_neighbours`` (8) nearest nodes and zero elsewhere. Eq. 1 as printed (dense,
      non-squared distance) is ``graph_kernel="paper"``; it is degenerate, see the end of this docstring.
      Gradients flow through the adjacency (distances are differentiable; sigma and the choice of
      neighbours are not).
    * ``X_4`` is not detached on its way into GAPL: ``L_cpa`` trains the shared backbone, which is
      what makes the paper's gradient rotation between ``L_merge`` and ``L_cpa`` meaningful.
    * GCN: two layers ``ReLU(D^-1/2 (A + I) D^-1/2 F W)``, ``W`` 512 x 512 without bias.
    * ``C_mk`` = the semantic softmax over the ``N`` land-cover logits (index 0 excluded, as in the
      engine's decoding), average-pooled from H/4 to the H/32 grid and detached.
    * Eq. 4's "+" in the numerator is read as a product. One prototype library per date per
      mini-batch, pooled over all its images (the paper speaks of a "mini-batch" library).
    * EMA (eq. 9, beta = 0.9): the loss uses ``beta * P_global.detach() + (1 - beta) * P_local``,
      which is then stored detached as the new ``P_global``; the first training mini-batch
      initialises ``P_global`` with its local library. ``P_global`` is a buffer (saved in
      checkpoints), one per date.
    * The affinity matrices (eq. 5-7) and the libraries are returned as ``aux_affinity_t1``,
      ``aux_affinity_t2``, ``aux_affinity_t12`` (``[N, N]``) and ``aux_prototypes_t1``,
      ``aux_prototypes_t2`` (``[N, 512]``). Computed in float32 with autocast off.

Loss parameters
    * sigma_1^2 and sigma_2^2 of eq. 18 are parameterised as log-variances ``s = ln sigma^2`` (model
      parameters ``log_var_ss`` and ``log_var_cd``, initialised to 0, i.e. sigma^2 = 1) and passed to
      the loss as ``aux_log_var_ss`` / ``aux_log_var_cd``, so an optimiser over
      ``model.parameters()`` trains them, as the paper's "Adam over all parameters" does.

Sizes (the paper reports neither parameters nor FLOPs, so there is nothing to match), measured
with :mod:`core.models.complexity` for ``num_classes=6``:
    * parameters: 28.15 M in all (28,146,512) = 27.62 M used at inference (21.28 M ResNet-34 without
      fc, 5.38 M SQMLFI + classifier, 0.95 M BTFF + CD head) + 0.52 M training-only (the two
      512 x 512 GCN weights and the two log-variances).
    * compute, inference path only: 113.68 GFLOPs (2 x MACs) at 512 x 512, 28.42 GFLOPs at 256 x 256
      (the ResNet-34 pair alone is 76.55 GFLOPs at 512; SQMLFI's full-width 3x3 query and
      refinement convs at four levels, run for both dates, are most of the rest).

Known weakness of eq. 1 as printed: with the non-squared distance and sigma = median distance the
exponent is ``-d / (2 sigma^2)``, which depends on the feature scale. ResNet-34 ``X_4`` vectors are
some 40 units apart, so every edge weight lands in about [0.98, 0.99] (measured at 256 x 256 with a
randomly initialised encoder; ImageNet weights could not be fetched offline to check them):
the graph is nearly complete and uniform and the GCN close to global averaging.
``graph_kernel="squared"`` is scale-free (edge weights about 0.47-0.83 on the same features) but
still dense. Either dense graph makes two GCN layers average every node into nearly the same
vector, so the class prototypes coincide, every affinity is about 1 and ``L_cpa`` aligns nothing
class-wise. The default therefore keeps only each node's nearest neighbours (a k-nearest-neighbour
graph, the usual way to build a sparse graph over feature vectors), so nodes of different land
cover stay apart through the GCN and the prototypes of different classes differ (tested).

Pretraining: the paper starts its ResNet-34 from ImageNet-1k (torchvision ``IMAGENET1K_V1``); the
training recipe does the same (``pretrained = "imagenet"``), while building a network without a
recipe starts from random weights so nothing is ever downloaded unasked.

Training (:data:`.losses.TRAINING`): one stage, Adam over every parameter including the two
log-variances of eq. 18 (in their own group, without weight decay), and the gradient rotation of
eq. 19-21 on the shared encoder with two gradient computations per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import ResNetEncoder, backbone_channels
from ..base import ChangeModel
from .blocks import BTFF, SQMLFI, GraphPrototypeBranch, SemanticHead

#: Backbones the constructor accepts: the paper's ResNet-34 and, for small CPU-trained models (the
#: demo), ResNet-18, which has the same stage widths and strides with half the blocks.
BACKBONES: tuple[str, ...] = ("resnet34", "resnet18")
GRAPH_KERNELS: tuple[str, ...] = ("knn", "paper", "squared")


class GAPLSCD(ChangeModel):
    """GAPL-SCD semantic change detection network (see the module docstring for every choice made).

    Args:
        backbone: Encoder name: ``"resnet34"`` (the paper's) or ``"resnet18"`` (same widths, half
            the blocks; for small models trained on a CPU).
        pretrained: ``None``, a local ``.pth`` state dict, or ``"imagenet"`` (torchvision's weights).
        in_channels: Input bands per date.
        num_classes: Land-cover classes ``N`` (excluding "no change"); 6 for SECOND, 4 for Landsat-SCD.
        sqmlfi_channels: Width of ``X_hat_l`` and ``X_merge`` (256 in the paper).
        head_channels: Hidden width of the two-layer 1x1 semantic classifier.
        btff_channels: Common width of every ``F_l`` and of the CD head.
        ema_momentum: ``beta`` of the global prototype EMA (0.9 in the paper).
        graph_kernel: ``"knn"`` (default: heat kernel on each node's nearest neighbours), ``"paper"``
            (eq. 1 as printed, dense, non-squared distance) or ``"squared"`` (dense heat kernel).
        graph_neighbours: Neighbours per node of the ``"knn"`` graph.
    """

    task = "semantic"

    def __init__(
        self,
        *,
        backbone: str = "resnet34",
        pretrained: str | None = None,
        in_channels: int = 3,
        num_classes: int = 6,
        sqmlfi_channels: int = 256,
        head_channels: int = 128,
        btff_channels: int = 64,
        ema_momentum: float = 0.9,
        graph_kernel: str = "knn",
        graph_neighbours: int = 8,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"GAPL-SCD backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if graph_kernel not in GRAPH_KERNELS:
            raise ValueError(f"graph_kernel must be one of {GRAPH_KERNELS}, got {graph_kernel!r}")
        if graph_neighbours < 1:
            raise ValueError(f"graph_neighbours must be at least 1, got {graph_neighbours}")
        if not 0.0 <= ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1), got {ema_momentum}")
        self.num_classes = num_classes
        levels = backbone_channels(backbone)[1:]
        self.encoder = ResNetEncoder(backbone, pretrained=pretrained, in_channels=in_channels)
        self.sqmlfi = SQMLFI(levels, sqmlfi_channels)
        self.sem_head = SemanticHead(sqmlfi_channels, head_channels, num_classes + 1)
        self.btff = BTFF(levels, btff_channels)
        self.gapl = GraphPrototypeBranch(
            levels[-1], num_classes, momentum=ema_momentum, kernel=graph_kernel, neighbours=graph_neighbours
        )
        self.log_var_ss = nn.Parameter(torch.zeros(()))
        self.log_var_cd = nn.Parameter(torch.zeros(()))

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = x1.shape[0]
        size = x1.shape[-2:]
        features = self.encoder(torch.cat([x1, x2], dim=0))[1:]  # X_1..X_4 of both dates
        sem_logits = self.sem_head(self.sqmlfi(features))  # [2B, N + 1, H/4, W/4]
        change_logits = self.btff([f[:batch] for f in features], [f[batch:] for f in features])
        change_logits = _upsample(change_logits, size)
        sem_full = _upsample(sem_logits, size)
        outputs = {
            "change_prob": change_logits.softmax(dim=1)[:, 1:2],
            "sem_logits_t1": sem_full[:batch],
            "sem_logits_t2": sem_full[batch:],
        }
        if self.training:
            confidence = sem_logits.detach().float()[:, 1:].softmax(dim=1)
            confidence = F.avg_pool2d(confidence, kernel_size=features[0].shape[-1] // features[-1].shape[-1])
            graph = self.gapl(features[-1], confidence)
            outputs.update({f"aux_{key}": value for key, value in graph.items()})
            outputs["aux_change_logits"] = change_logits
            outputs["aux_log_var_ss"] = self.log_var_ss
            outputs["aux_log_var_cd"] = self.log_var_cd
        return outputs


def _upsample(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bilinear upsampling of H/4 logits to the input size, in float32."""
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)

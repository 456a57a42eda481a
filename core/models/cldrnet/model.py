"""CLDRNet: binary change detection with a learned per-pixel threshold.

Paper: L. Wan, Y. Tian, W. Kang, L. Ma, "CLDRNet: A Difference Refinement Network Based on
Category Context Learning for Remote Sensing Image Change Detection", IEEE JSTARS 17 (2024),
2133-2148, DOI 10.1109/JSTARS.2023.3327340 (overview in docs/networks.md).

Pipeline (paper section III): a Siamese ResNet-50 + FPN (BFE) gives ``E_2..E_5`` and 32-channel
``F_2..F_5``; a differentiable soft K-means on ``E_5`` (CL, eqs. 1-4) gives K = 8 category
descriptors of D = 3 dims per date, which a concatenate-split step turns into ``xi^1, xi^2``; a
transformer decoder (CCM, eqs. 5-9) lets every pixel of every pyramid level attend to its date's
descriptors, giving ``A_2..A_5``; DMG (eq. 10) decodes ``|A^1 - A^2|`` into the difference map DM
(``change_prob``) and DMR (eqs. 11-13) decodes ``max(A_2^1, A_2^2)`` into the threshold map TM
(``change_threshold``). A pixel is changed when DM > 0.5 and DM > TM. Training has two stages
(see :func:`stage_parameters` and :mod:`.losses`); TM is always computed because inference needs it.

Choices made where the paper is silent or contradicts itself:

* Backbone: torchvision's ResNet-50, unmodified (via ``ResNetEncoder``); the paper's "modified
  ResNet-50" is never described (it "follows D-TNet"). Pretraining is the ``pretrained`` option.
* Siamese branches run as one concatenated batch, so training-mode batch-norm statistics are
  pooled over both dates.
* FPN: the standard one of Lin et al. (1 x 1 laterals with bias, nearest-neighbour top-down
  upsampling and addition, one 3 x 3 smoothing convolution per level, no normalisation).
* CL: ``W_E`` and ``W_V`` are 1 x 1 convolutions with bias; eq. 4's ``(P)^T x C`` is read as
  ``v_hat_i = sum_k p_ik c_k``; eq. 3's denominator gets ``+1e-6``; the clustering runs per image
  (per tile), and ``L_DA`` back-propagates into both V and V-hat (no stop-gradient).
* Concatenate-split (the paper names the step but not its layers): the 2K descriptors of both
  dates are lifted by one shared ``Linear(D -> 32)``, one pre-LN multi-head self-attention layer
  (8 heads x 64, residual, no FFN, no temporal embedding) runs over the 2K tokens, and the tokens
  are split back per date.
  This also answers how the D = 3 descriptors reach the width C = 32 that eq. 5's ``W^k, W^v`` need.
* CCM: pre-LN decoder layer, separate LayerNorms for queries and keys/values, ``W^q, W^k, W^v``
  without bias (eq. 5 shows plain matrices), ``W^O`` with bias, scale ``1/sqrt(64)``, softmax over
  the K key tokens (the paper's "channel dimension"), FFN ``32 -> 128 -> 32`` with GELU (width
  4 x 32 is a choice), no dropout, no positional encoding, no final LayerNorm. One decoder is
  shared by the four levels and both dates (``share_ccm=True``, reading "apply the process to all
  levels" as one module); ``share_ccm=False`` builds one per level (+0.22 M parameters).
* DMG: every ``F`` in eq. 10 has its own weights (seven 3 x 3 conv-BN-ReLU blocks, no conv bias);
  "Avg" is the mean of the four terms; the 1 x 1 convolution keeps 16 channels; the two DUC
  layers upsample x2 each: ``3x3 conv 16 -> 64, BN, ReLU, pixel shuffle`` then
  ``3x3 conv 16 -> 4, pixel shuffle`` (no BN/ReLU, so it can emit a logit); sigmoid gives DM.
* DMR: the first "upsampling layer" of eq. 12 and the one before CBRC are bilinear x2
  (``align_corners=False``, as everywhere here); CA's FCs have bias; CBRC is
  ``1x1 conv 16 -> 16 (no bias), BN, ReLU, 1x1 conv 16 -> 1``; sigmoid gives TM.
* Initialisation: PyTorch defaults for everything outside the backbone.
* Outputs: ``change_prob`` and ``change_threshold`` are float32 even under autocast. Training-only
  outputs: ``aux_change_logit`` (DM before the sigmoid, for a stable ``L_ce``) and the pixel
  representations ``aux_pixel_repr_t1/t2`` (V) and reconstructions ``aux_pixel_recon_t1/t2``
  (V-hat), ``[B, D, H/32, W/32]``, for ``L_DA``.

Sizes (``core.models.complexity``; the paper's "FLOPs" are multiply-accumulates, so compare
``count_flops / 2``):

=====================  ===================  =================================
quantity               this implementation  paper (Tables II and VI)
=====================  ===================  =================================
parameters             23,854,946 (23.85 M) 22.92 M (+4.08 %)
MACs at 512 x 512      46.44 G (44.84 G)    46.30 G (+0.31 %)
MACs at 256 x 256      11.61 G (11.21 G)    11.57 G (+0.38 %)
MACs at 128 x 128      2.906 G (2.808 G)    2.89 G (+0.55 %)
=====================  ===================  =================================

The MACs are those of the equations as written; in brackets what the code computes, which
multiplies the same products in another order where the keys are few (the CCM decoders' eight
category descriptors: see ``blocks.MultiHeadAttention``) and so never widens a pixel's query to
``heads x head_dim``. The comparisons below are with the equations as written.

(``share_ccm=False``: 24,077,282 parameters, +5.05 %; same MACs.) The parameter gap cannot be
closed honestly: torchvision's ResNet-50 without its classifier already has 23,508,032
parameters, 0.59 M more than the paper's whole network, and everything after it here adds
0.35 M (FPN 0.160 M, CCM 0.074 M, concat-split 0.066 M, DMG 0.036 M, CL 0.006 M, DMR 0.005 M).
The paper's compute, on the other hand, matches a full ResNet-50 (42.71 G MACs for both dates
at 512) plus these heads within 0.6 % at all three sizes of Table VI, so its "modification"
cannot have removed much that runs at high resolution. A reading that matches the parameter
count, dropping one layer3 bottleneck (-1.12 M, giving 22.96 M with per-level decoders), would
also remove 2.29 G MACs (-4.6 %) and has no support in the text, so it is not used. The gap is
therefore left as it is: the paper's "modified ResNet-50" (unpublished, from D-TNet) is the only
unknown, and the measured numbers above are asserted by the tests.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import PretrainedSource, ResNetEncoder
from ..base import CHANGE_PROB, CHANGE_THRESHOLD, ChangeModel
from .blocks import (
    FPN,
    CategoryContextDecoder,
    ClusteringLearning,
    DescriptorInteraction,
    DifferenceMapGeneration,
    DifferenceMapRefinement,
)

#: Backbones the paper reports (a ResNet-50 only).
BACKBONES: tuple[str, ...] = ("resnet50",)

#: Keys of the training-only outputs (pixel representations V and reconstructions V-hat for L_DA).
AUX_REPR_T1 = "aux_pixel_repr_t1"
AUX_REPR_T2 = "aux_pixel_repr_t2"
AUX_RECON_T1 = "aux_pixel_recon_t1"
AUX_RECON_T2 = "aux_pixel_recon_t2"
AUX_CHANGE_LOGIT = "aux_change_logit"


class CLDRNet(ChangeModel):
    """Category-context-learning difference refinement network: DM and learned threshold map TM.

    Changed pixels are those with ``change_prob > 0.5`` and ``change_prob > change_threshold``.

    Args:
        backbone: ``"resnet50"``, the only backbone the paper uses.
        pretrained: ``None``, a local ``.pth`` state dict or ``"imagenet"`` for the backbone.
        in_channels: Bands per date.
        clusters: K, the number of category descriptors (8 in the paper).
        descriptor_dim: D, the dimension of the pixel representation V (3 in the paper).
        fpn_channels: Width C of the pyramid and of the decoder tokens (32 in the paper).
        heads: Attention heads (8 in the paper).
        head_dim: Dimension d of each head (64 in the paper).
        ffn_ratio: Hidden width of the CCM feed-forward network in multiples of C (a choice).
        decoder_channels: Width of DMG and DMR (16 in the paper).
        share_ccm: One CCM decoder for all pyramid levels (default) or one per level.
    """

    task = "binary"
    #: Returns ``change_threshold`` beside ``change_prob`` (see docs/model-contract.md).
    learns_threshold = True

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        pretrained: PretrainedSource = None,
        in_channels: int = 3,
        clusters: int = 8,
        descriptor_dim: int = 3,
        fpn_channels: int = 32,
        heads: int = 8,
        head_dim: int = 64,
        ffn_ratio: int = 4,
        decoder_channels: int = 16,
        share_ccm: bool = True,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"CLDRNet uses a ResNet-50 backbone only; got {backbone!r}")
        if clusters < 1 or descriptor_dim < 1:
            raise ValueError(f"clusters and descriptor_dim must be positive, got {clusters} and {descriptor_dim}")
        self.encoder = ResNetEncoder(backbone, pretrained=pretrained, in_channels=in_channels)
        stage_channels = self.encoder.channels[1:]  # E_2..E_5: 256, 512, 1024, 2048
        self.fpn = FPN(stage_channels, fpn_channels)
        self.clustering = ClusteringLearning(stage_channels[-1], clusters, descriptor_dim)
        self.interaction = DescriptorInteraction(descriptor_dim, fpn_channels, heads, head_dim)
        n_decoders = 1 if share_ccm else len(stage_channels)
        self.ccm = nn.ModuleList(
            CategoryContextDecoder(fpn_channels, heads, head_dim, ffn_ratio) for _ in range(n_decoders)
        )
        self.dmg = DifferenceMapGeneration(fpn_channels, decoder_channels, len(stage_channels))
        self.dmr = DifferenceMapRefinement(fpn_channels, decoder_channels)

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """BFE and CL for a batch of images: FPN levels F_2..F_5, descriptors C, V and V-hat."""
        stages = self.encoder(x)[1:]
        pyramid = self.fpn(stages)
        centroids, v, v_hat = self.clustering(stages[-1])
        return pyramid, centroids, v, v_hat

    def _context(self, pyramid: list[torch.Tensor], descriptors: torch.Tensor) -> list[torch.Tensor]:
        """CCM on every pyramid level: category-awareness features A_2..A_5."""
        decoders = self.ccm if len(self.ccm) == len(pyramid) else [self.ccm[0]] * len(pyramid)
        return [decoder(f, descriptors) for decoder, f in zip(decoders, pyramid, strict=True)]

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = x1.shape[0]
        # Siamese: both dates share every weight, so run them as one batch.
        pyramid, centroids, v, v_hat = self._features(torch.cat([x1, x2], dim=0))
        xi1, xi2 = self.interaction(centroids[:batch], centroids[batch:])
        context = self._context(pyramid, torch.cat([xi1, xi2], dim=0))
        a1 = [a[:batch] for a in context]
        a2 = [a[batch:] for a in context]
        dm_logit = self.dmg([torch.abs(p - q) for p, q in zip(a1, a2, strict=True)])
        tm_logit = self.dmr(a1[0], a2[0])
        outputs = {
            CHANGE_PROB: torch.sigmoid(dm_logit.float()),
            CHANGE_THRESHOLD: torch.sigmoid(tm_logit.float()),
        }
        if self.training:
            outputs[AUX_CHANGE_LOGIT] = dm_logit
            outputs[AUX_REPR_T1], outputs[AUX_REPR_T2] = v[:batch], v[batch:]
            outputs[AUX_RECON_T1], outputs[AUX_RECON_T2] = v_hat[:batch], v_hat[batch:]
        return outputs


def stage_parameters(model: CLDRNet, stage: int) -> list[nn.Parameter]:
    """Parameters trained in ``stage`` of the two-stage schedule (Algorithm 1).

    Stage 1 trains BFE, CCL and DMG with DMR frozen; stage 2 trains DMG and DMR only.
    Frozen modules should also be kept in eval mode by the trainer so that their batch-norm
    statistics stay as learned.
    """
    if stage == 1:
        return [p for name, p in model.named_parameters() if not name.startswith("dmr.")]
    if stage == 2:
        return [*model.dmg.parameters(), *model.dmr.parameters()]
    raise ValueError(f"CLDRNet trains in stage 1 or 2, got stage={stage!r}")

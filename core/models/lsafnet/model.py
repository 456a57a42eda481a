"""LSAFNet: late-stage bitemporal feature fusion for semantic change detection.

Paper: Zhou, Zhang, Guo, Zou, Shi, "A Late-Stage Bitemporal Feature Fusion Network for
Semantic Change Detection" (LSAFNet), IEEE letter, Beihang University; public code
github.com/STORMTROOPERRR/RSISCD (``models/SCD.py``), read only as a reference.

Two weight-sharing encoder-decoders segment each date on its own (ResNet-34 plus the
Semantic Fusion Module, SFM, with LGAA, eqs. 1-5; an SS decoder with LGCE, eqs. 6-8, and
two ConvBlocks). Only their *decoded* features meet, in a shallow change-detection (CD)
decoder (eqs. 9-14), whose 1-channel sigmoid head gives the change map.

Two variants (option ``variant``):

* ``"paper"`` (default) follows the equations: LGAA fusion of ``F'_H1`` and ``F'_H2``,
  depthwise spatial convs in the ConvBlocks, LGAA without a scale, LGCE *before* the SS
  decoding, SS classifiers fed with the SS features only, output stride 32 backbone.
* ``"code"`` reproduces the public code's differences from the paper:
  the SK-style CTFA fusion concatenated with ``|F'_H1 - F'_H2|``; a 3x3 conv of dilation 2
  instead of the depthwise conv; LGAA output multiplied by 2 (and its arguments in the
  code's order, reduced high-level map first); LGCE applied after the SS decoding to the
  raw ``F_H``, feeding only the CD decoder; the SS classifiers fed ``cat[F'_L, F_C]``
  through one more decoder block; and output stride 8 by setting the stride of the first
  block of ``layer3`` and ``layer4`` to 1 (no dilation, as in the code). Inputs still only
  need to be multiples of 32 (8 would do for this variant; the engine asks 32 of all).

Choices where the paper is silent or contradicts itself (both variants unless said):

* Strides (paper variant): the paper gives none; the torchvision ResNet-34 strides are
  kept, so ``F_L``, ``F_M``, ``F_1``, ``F_2``, ``F_3`` are at 1/2, 1/4, 1/8, 1/16, 1/32 and
  the SFM bilinearly upsamples the reduced higher level (after its 1x1 conv, the cheap
  side) to the lower level's size before LGAA. The code variant needs no upsampling.
* Backbone: the stem ``conv1-bn1-relu`` output is ``F_L`` and ``layer1`` (after max-pool)
  is ``F_M``, as in the code. One encoder serves both dates (Siamese), as the decoders are
  said to share weights and the code shares it; each date goes through separately, so
  BatchNorm batch statistics are per date, as in the code. ``pretrained`` defaults to
  ``None`` (the paper says Kaiming initialisation; the code loads ImageNet weights:
  pass ``pretrained="imagenet"`` for that).
* Initialisation: every layer outside the backbone is Kaiming-normal (fan-in, ReLU gain),
  biases zero, BatchNorm weight 1 / bias 0, as in the code's ``initialize_weights``.
* LGAA / LGCE branches: eqs. 3, 4, 6, 7 nest as GAP-BN-Conv-ReLU-BN-Conv, while the text
  says "two layers of Conv-BN-ReLU"; the MS-CAM form Conv1x1 (C -> C/r) - BN - ReLU -
  Conv1x1 (C/r -> C) - BN of the cited AFF paper and of the code is used, with ``r = 4``
  (the code's; option ``reduction``) and no conv bias (each conv is followed by BN).
* BatchNorm on the pooled (1 x 1) branch cannot compute batch statistics for one image;
  with a training batch of one it normalises with its running statistics instead
  (:class:`~.blocks.PooledBatchNorm`), so a training batch of one works, provided the
  backbone's own BatchNorm gets more than one value per channel (with output stride 32,
  an input larger than 32 x 32; a limit of every ResNet, not of LSAFNet).
* LGAA argument order (paper variant): as written, ``LGAA(F_2, reduced F_3)`` and
  ``LGAA(F_1, reduced F'_2)``; the blend is symmetric up to ``w -> 1 - w``, which the last
  BN can represent, so the order only changes the initial state.
* Eq. 9 writes ``LGAA(F'_H1 + F'_H2)`` with one argument; read as ``LGAA(F'_H1, F'_H2)``
  (LGAA sums its inputs itself). Eq. 14 writes ``f(F'_C, F'_L)``; read as the
  difference map ``f(F'_C, |F'_L1 - F'_L2|)`` of eq. 12.
* Widths: decoder width 128 (the code's; option ``decoder_channels``); eq. 10's "reduce
  its channel dimension" goes 128 -> 64 (``decoder_channels // 2``); classifier hidden
  width 64 (``decoder_channels // 2``).
* ConvBlock ``f(a, b)``: bilinear upsampling of ``a`` to ``b`` (align_corners False),
  concatenation ``[a, b]``, ResBlock(in -> 128, 1x1 conv-BN shortcut), ResBlock(128), then
  the paper's "depthwise convolution" as a 3x3 depthwise conv - BN - ReLU (kernel size,
  normalisation and activation unspecified; taken from the code's dilated conv block).
* Classifiers: the paper only says "its classifier" / "CD classifier"; the code's head
  Conv1x1 (128 -> 64) - BN - ReLU - Conv1x1 (64 -> K) is used, K = N + 1 semantic logits
  (index 0 = "no change", never a target) and K = 1 change logit. The two dates get
  separate SS classifiers, as in the code (the paper does not say whether they share).
* Resolution: the heads run at 1/2 of the input; logits are bilinearly upsampled to the
  input size, and the change probability is the sigmoid of the upsampled logit.
* Outputs are cast to float32 (under bf16 autocast the network itself runs in bf16).
  Training mode adds ``aux_change_logits`` (the pre-sigmoid change map) so that the loss
  can use a numerically safe BCE-with-logits; it costs nothing extra.

Sizes (measured with :mod:`core.models.complexity`, ResNet-34, one image pair, 3 bands,
``num_classes=6``; FLOPs = 2 x multiply-accumulates, MACs in brackets). The paper reports
no parameter count, FLOPs or speed, so there is no paper figure to compare against:

* ``variant="paper"``: 24.45 M parameters (encoder 21.28, SFM 0.25, SS decoder 1.40,
  CD decoder 1.49, heads 0.03); 430.2 GFLOPs (215.1 G MACs) at 512 x 512, 107.6 GFLOPs
  at 256 x 256. Of the 430 G, the Siamese encoder is 77 G, the two SS decoders 226 G and
  the CD decoder 124 G: the decoders run 128-channel ResBlocks at 1/2 input resolution.
* ``variant="code"``: 27.86 M parameters; 1040.6 GFLOPs (520.3 G MACs) at 512 x 512,
  260.2 GFLOPs at 256 x 256 (encoder 362 G at output stride 8, SS decoders 274 G, CD
  decoder 158 G, SS fusion blocks the rest). A scratch re-typing of the public
  ``SCDNet`` counts exactly the same FLOPs and 28.37 M parameters; the 0.51 M gap is the
  unused ImageNet ``fc`` layer (0.513 M) kept in its backbone plus the conv biases of its
  LGAA/SFM convs (each followed by BN here, so dropped).
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import PretrainedSource, ResNetEncoder
from ..base import CHANGE_PROB, SEM_LOGITS_T1, SEM_LOGITS_T2, ChangeModel
from .blocks import (
    CTFA,
    LGAA,
    LGCE,
    ClassifierHead,
    ConvBlock,
    DecoderBlock,
    conv_bn_relu,
    kaiming_init,
    resize_to,
)

#: Key of the pre-sigmoid change logits (training mode only), used by ``compute_loss``.
AUX_CHANGE_LOGITS = "aux_change_logits"

VARIANTS = ("paper", "code")
BACKBONES = ("resnet34",)


class SemanticFusionModule(nn.Module):
    """SFM (eqs. 1-2): fuse ``F_1, F_2, F_3`` into the 128-channel ``F_H`` with two LGAA steps."""

    def __init__(self, channels: tuple[int, int, int], reduction: int, variant: str) -> None:
        super().__init__()
        c1, c2, c3 = channels
        scale = 2.0 if variant == "code" else 1.0
        self.high_first = variant == "code"
        self.reduce3 = conv_bn_relu(c3, c2)
        self.reduce2 = conv_bn_relu(c2, c1)
        self.lgaa3 = LGAA(c2, reduction, scale)
        self.lgaa2 = LGAA(c1, reduction, scale)

    def _fuse(self, lgaa: LGAA, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = resize_to(high, low)
        return lgaa(high, low) if self.high_first else lgaa(low, high)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor) -> torch.Tensor:
        f2_prime = self._fuse(self.lgaa3, f2, self.reduce3(f3))
        return self._fuse(self.lgaa2, f1, self.reduce2(f2_prime))


class SSDecoder(nn.Module):
    """SS decoder shared by both dates: LGCE on ``F_H`` and two ConvBlocks up to 1/2 resolution.

    Returns ``(F'_L, F'_M, F'_H)``. In the code variant the decoding starts from the raw
    ``F_H`` and ``F'_H = LGCE(F_H)`` only feeds the CD decoder.
    """

    def __init__(self, high: int, mid: int, low: int, width: int, reduction: int, variant: str) -> None:
        super().__init__()
        spatial = "dilated" if variant == "code" else "depthwise"
        self.lgce_first = variant == "paper"
        self.lgce = LGCE(high, reduction)
        self.block_m = ConvBlock(high + mid, width, spatial)
        self.block_l = ConvBlock(width + low, width, spatial)

    def forward(
        self, f_l: torch.Tensor, f_m: torch.Tensor, f_h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f_h_prime = self.lgce(f_h)
        start = f_h_prime if self.lgce_first else f_h
        f_m_prime = self.block_m(start, f_m)
        f_l_prime = self.block_l(f_m_prime, f_l)
        return f_l_prime, f_m_prime, f_h_prime


class CDDecoder(nn.Module):
    """Late-stage CD decoder (eqs. 9-14): fuse ``F'_H`` of both dates, then add |differences| of ``F'_M``, ``F'_L``.

    Paper: ``LGAA`` then Conv1x1-BN-ReLU (eqs. 9-10) and two ConvBlocks. Code: CTFA
    (``cat[fused, |diff|]``) then three decoder blocks.
    """

    def __init__(self, high: int, mid: int, low: int, width: int, reduction: int, variant: str) -> None:
        super().__init__()
        self.variant = variant
        if variant == "paper":
            self.fuse: nn.Module = LGAA(high, reduction)
            self.reduce: nn.Module = conv_bn_relu(high, width // 2)
            self.block_m = ConvBlock(width // 2 + mid, width, "depthwise")
            self.block_l = ConvBlock(width + low, width, "depthwise")
        else:
            self.fuse = CTFA(high)
            self.reduce = DecoderBlock(2 * high, width, "dilated")
            self.block_m = ConvBlock(width + mid, width, "dilated")
            self.block_l = ConvBlock(width + low, width, "dilated")

    def forward(
        self,
        t1: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        t2: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        (l1, m1, h1), (l2, m2, h2) = t1, t2
        high = self.reduce(self.fuse(h1, h2))
        change = self.block_m(high, torch.abs(m1 - m2))
        return self.block_l(change, torch.abs(l1 - l2))


class LSAFNet(ChangeModel):
    """LSAFNet semantic change detection network (see the module docstring for every choice made).

    Args:
        backbone: Encoder name; only ``"resnet34"`` (the paper's) is supported.
        pretrained: ``None``, a local ``.pth`` file or ``"imagenet"`` for the encoder.
        in_channels: Input bands per date.
        num_classes: Land-cover classes N (excluding "no change"); the SS heads give N + 1 logits.
        variant: ``"paper"`` (the equations) or ``"code"`` (the public code's differences).
        decoder_channels: Width of the SS and CD decoders (128 in the code).
        reduction: Channel reduction ratio inside LGAA and LGCE (4 in the code).
    """

    task = "semantic"

    def __init__(
        self,
        backbone: str = "resnet34",
        pretrained: PretrainedSource = None,
        in_channels: int = 3,
        num_classes: int = 6,
        variant: str = "paper",
        decoder_channels: int = 128,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"LSAFNet supports only the backbone(s) {', '.join(BACKBONES)}, got {backbone!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if decoder_channels < 2 or reduction < 1:
            raise ValueError(f"need decoder_channels >= 2 and reduction >= 1, got {decoder_channels}, {reduction}")
        self.num_classes = num_classes
        self.variant = variant

        self.encoder = ResNetEncoder(backbone, pretrained=pretrained, in_channels=in_channels)
        if variant == "code":
            _remove_late_strides(self.encoder)
        c_l, c_m, c1, c2, c3 = self.encoder.channels
        width = decoder_channels

        self.sfm = SemanticFusionModule((c1, c2, c3), reduction, variant)
        self.ss_decoder = SSDecoder(c1, c_m, c_l, width, reduction, variant)
        self.cd_decoder = CDDecoder(c1, width, width, width, reduction, variant)
        # Code variant only: each SS classifier first fuses cat[F'_L, F_C] with one more decoder block.
        self.ss_fusion: nn.ModuleList | None = None
        if variant == "code":
            self.ss_fusion = nn.ModuleList([DecoderBlock(2 * width, width, "dilated") for _ in range(2)])
        self.ss_heads = nn.ModuleList([ClassifierHead(width, width // 2, num_classes + 1) for _ in range(2)])
        self.cd_head = ClassifierHead(width, width // 2, 1)
        for module in (self.sfm, self.ss_decoder, self.cd_decoder, self.ss_heads, self.cd_head):
            kaiming_init(module)
        if self.ss_fusion is not None:
            kaiming_init(self.ss_fusion)

    def _encode_decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One date through the shared encoder, SFM and SS decoder: ``(F'_L, F'_M, F'_H)``."""
        f_l, f_m, f1, f2, f3 = self.encoder(x)
        f_h = self.sfm(f1, f2, f3)
        return self.ss_decoder(f_l, f_m, f_h)

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        t1 = self._encode_decode(x1)
        t2 = self._encode_decode(x2)
        f_c = self.cd_decoder(t1, t2)
        sem_logits = []
        for index, features in enumerate((t1[0], t2[0])):
            if self.ss_fusion is not None:
                features = self.ss_fusion[index](torch.cat([features, f_c], dim=1))
            sem_logits.append(resize_to(self.ss_heads[index](features), x1).float())
        change_logits = resize_to(self.cd_head(f_c), x1).float()
        outputs = {
            CHANGE_PROB: torch.sigmoid(change_logits),
            SEM_LOGITS_T1: sem_logits[0],
            SEM_LOGITS_T2: sem_logits[1],
        }
        if self.training:
            outputs[AUX_CHANGE_LOGITS] = change_logits
        return outputs


def _remove_late_strides(encoder: ResNetEncoder) -> None:
    """Output stride 8 the public code's way: stride 1 in layer3/layer4's first block, no dilation."""
    for layer in (encoder.layer3, encoder.layer4):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Conv2d) and (name.endswith("conv1") or name.endswith("downsample.0")):
                module.stride = (1, 1)

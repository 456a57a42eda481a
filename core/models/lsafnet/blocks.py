"""Building blocks of LSAFNet: LGAA, LGCE, ResBlock, ConvBlock, CTFA and the heads.

Every block avoids in-place operations so that autograd sees a clean graph, and
every attention block that pools to a 1 x 1 map uses :class:`PooledBatchNorm`,
which keeps training possible with a batch of one image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PooledBatchNorm(nn.BatchNorm2d):
    """BatchNorm for globally pooled ``[B, C, 1, 1]`` maps that tolerates ``B == 1`` in training.

    With one value per channel a batch variance does not exist (PyTorch raises). In that
    case this layer normalises with its running statistics, as in evaluation, and leaves
    them unchanged; with two or more images it is an ordinary ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Pointwise ``ReLU(BN(Conv1x1(x)))``, the channel reduction of eqs. 1, 2 and 10."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def resize_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``x`` to the spatial size of ``reference`` (no-op when equal)."""
    if x.shape[-2:] == reference.shape[-2:]:
        return x
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class LocalGlobalWeights(nn.Module):
    """``Sigmoid(w1 + w2)`` of eqs. 3-4 and 6-7: global (pooled) plus local (per-pixel) channel context.

    Each branch is Conv1x1(C -> C/r) - BN - ReLU - Conv1x1(C/r -> C) - BN, the MS-CAM form of
    the AFF paper the authors cite and of the public code ("two layers of Conv-BN-ReLU").
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.local_att = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(),
            nn.Conv2d(inner, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.global_att = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, inner, 1, bias=False),
            PooledBatchNorm(inner),
            nn.ReLU(),
            nn.Conv2d(inner, channels, 1, bias=False),
            PooledBatchNorm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.local_att(x) + self.global_att(x))


class LGAA(nn.Module):
    """Local-global attentional aggregation (eqs. 3-5): a learned per-pixel, per-channel blend of two maps.

    ``scale`` is 1 in the paper; the public code multiplies the blend by 2.
    """

    def __init__(self, channels: int, reduction: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        self.weights = LocalGlobalWeights(channels, reduction)
        self.scale = scale

    def forward(self, fi: torch.Tensor, fj: torch.Tensor) -> torch.Tensor:
        w = self.weights(fi + fj)
        out = fi * w + fj * (1.0 - w)
        return out * self.scale if self.scale != 1.0 else out


class LGCE(nn.Module):
    """Local-global context enhancement (eqs. 6-8): channel attention on one map, ``F * Sigmoid(w1 + w2)``."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.weights = LocalGlobalWeights(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class ResBlock(nn.Module):
    """A ResNet basic block (two 3x3 conv-BN, identity or 1x1 conv-BN shortcut)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class DecoderBlock(nn.Module):
    """Two cascaded ResBlocks then a spatial-context 3x3 conv-BN-ReLU.

    ``spatial="depthwise"`` is the paper's depthwise conv; ``"dilated"`` the public code's
    full 3x3 conv with dilation 2.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial: str = "depthwise") -> None:
        super().__init__()
        if spatial == "depthwise":
            context = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=False)
        elif spatial == "dilated":
            context = nn.Conv2d(out_channels, out_channels, 3, padding=2, dilation=2, bias=False)
        else:
            raise ValueError(f"spatial must be 'depthwise' or 'dilated', got {spatial!r}")
        self.res1 = ResBlock(in_channels, out_channels)
        self.res2 = ResBlock(out_channels, out_channels)
        self.context = nn.Sequential(context, nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.context(self.res2(self.res1(x)))


class ConvBlock(DecoderBlock):
    """The ConvBlock ``f(a, b)`` of the paper: upsample ``a`` to ``b``, concatenate, then decode."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([resize_to(a, b), b], dim=1))


class CTFA(nn.Module):
    """The public code's cross-temporal fusion: SK-style softmax over the two dates, then ``cat[fused, |x1 - x2|]``.

    Returns ``2 * channels`` channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 4, 4)
        self.squeeze = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, inner, 1, bias=False), nn.LeakyReLU(0.2)
        )
        self.excite = nn.ModuleList([nn.Conv2d(inner, channels, 1, bias=False) for _ in range(2)])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z = self.squeeze(x1 + x2)
        attention = torch.softmax(torch.stack([fc(z) for fc in self.excite], dim=1), dim=1)
        fused = x1 * attention[:, 0] + x2 * attention[:, 1]
        return torch.cat([fused, torch.abs(x1 - x2)], dim=1)


class ClassifierHead(nn.Sequential):
    """Conv1x1 (C -> hidden) - BN - ReLU - Conv1x1 (hidden -> classes), as in the public code."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, 1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, out_channels, 1),
        )


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal convolutions, zero biases, unit BatchNorm: the paper's initialisation of new layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

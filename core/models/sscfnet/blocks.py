"""Building blocks of SSCFNet: size unifier, Latin-square regrouping, SE, branches and heads.

Each block follows one equation of the paper (Wang et al., IEEE JSTARS 16, 2023);
the docstrings name it. No block uses in-place operations, so autograd sees a clean graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Size-unifier interpolation modes: the public code's (default) and the paper's eq. 1.
UPSAMPLE_MODES: tuple[str, ...] = ("bilinear", "nearest")


def resize(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Interpolate ``x`` to ``size``; ``align_corners=False`` for bilinear, as the public code does."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def latin_square_regroup(levels: Sequence[torch.Tensor], mode: str = "bilinear") -> list[torch.Tensor]:
    """Size unifier and combined enhancement (eqs. 1-3): S levels of S channel chunks -> S mixed blocks at H/4.

    Level ``a`` is split into ``S`` equal channel chunks ``X[a, 1..S]``; block ``F_i`` is
    ``Concat(X[(i+1)%S, 1], X[(i+2)%S, 2], ..., X[i, S])``, so every block holds one chunk of
    every level and no chunk is used twice. Chunks are concatenated in chunk order 1..S.

    Each chunk is brought to the first level's size (eq. 1) after the split, not before: resizing
    works per channel, so the blocks are the same, but the split then cuts the small deep levels
    rather than the upsampled ones (OpenVINO ran that split on a reference kernel, 0.1 s per batch),
    and the concatenation takes whole tensors rather than channel slices, which PyTorch copies slowly.
    """
    count = len(levels)
    size = levels[0].shape[-2:]
    chunks = []
    for index, level in enumerate(levels):
        if level.shape[1] % count:
            raise ValueError(f"level {index} has {level.shape[1]} channels, not divisible into {count} chunks")
        chunks.append(torch.chunk(level, count, dim=1))
    return [torch.cat([resize(chunks[(i + j + 1) % count][j], size, mode) for j in range(count)], dim=1)
            for i in range(count)]


class SqueezeExcitation(nn.Module):
    """SE channel attention (eqs. 7-9, Hu et al.): ``x * sigmoid(fc2(relu(fc1(GAP(x)))))``.

    Eq. 7 prints a sum over channels; that is a typo for channel-wise re-weighting, which
    is what SE does and what the output shape of eq. 6 requires. The fully connected
    layers have no bias (a choice; the paper does not say).
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * weights[:, :, None, None].to(x.dtype)


class CrossFusionBranch(nn.Sequential):
    """One semantic cross-fusion branch (eq. 4 and the SE of eq. 5).

    Grouped ``k x k`` convolution with "same" padding ``k // 2``, then BN, ReLU and SE.
    BN-ReLU after the convolution is not in the paper; it is in the public code.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int, reduction: int) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{in_channels} -> {out_channels} channels cannot be split into {groups} groups")
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            SqueezeExcitation(out_channels, reduction),
        )


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise 3x3 - BN - ReLU - pointwise 1x1, the public code's "lightweight" 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


class MainHead(nn.Sequential):
    """Classifier on the fused map: conv3x3 - BN - ReLU - Dropout(p) - conv1x1 to one logit channel."""

    def __init__(self, channels: int, dropout: float, lightweight: bool) -> None:
        conv: nn.Module = (
            DepthwiseSeparableConv(channels, channels)
            if lightweight
            else nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        )
        super().__init__(
            conv,
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(channels, 1, 1),
        )


class AuxiliaryHead(nn.Sequential):
    """Deep-supervision head on one branch (training only): conv3x3 (C -> C/4) - BN - Dropout2d(p) - conv1x1.

    There is no ReLU between BN and the 1x1 convolution, exactly as in the public code's
    ``dsn`` heads; the paper does not describe these heads at all.
    """

    def __init__(self, channels: int, dropout: float) -> None:
        hidden = max(1, channels // 4)
        super().__init__(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden),
            nn.Dropout2d(dropout),
            nn.Conv2d(hidden, 1, 1),
        )

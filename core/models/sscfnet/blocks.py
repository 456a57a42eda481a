"""Building blocks of SSCFNet: size unifier, Latin-square regrouping, SE, branches and heads.

Each block follows one equation of the paper (Wang et al., IEEE JSTARS 16, 2023);
the docstrings name it. No block uses in-place operations, so autograd sees a clean graph.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import upconv
from .upconv import integer_scale, resize

#: Phase kernels kept per piece of a branch's weight: (the weight, its storage stamp, the kernels).
KernelCache = dict[tuple, tuple[weakref.ref, tuple, upconv.PhaseKernels]]

#: Size-unifier interpolation modes: the public code's (default) and the paper's eq. 1.
UPSAMPLE_MODES: tuple[str, ...] = ("bilinear", "nearest")


def latin_square_chunks(levels: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Eqs. 2-3: S levels of S channel chunks -> S blocks of S chunks, each chunk at its level's own size.

    Level ``a`` is split into ``S`` equal channel chunks ``X[a, 1..S]``; block ``F_i`` is
    ``Concat(X[(i+1)%S, 1], X[(i+2)%S, 2], ..., X[i, S])``, so every block holds one chunk of
    every level and no chunk is used twice. Chunks are listed in chunk order 1..S.
    """
    count = len(levels)
    chunks = []
    for index, level in enumerate(levels):
        if level.shape[1] % count:
            raise ValueError(f"level {index} has {level.shape[1]} channels, not divisible into {count} chunks")
        chunks.append(torch.chunk(level, count, dim=1))
    return [[chunks[(i + j + 1) % count][j] for j in range(count)] for i in range(count)]


def latin_square_regroup(levels: Sequence[torch.Tensor], mode: str = "bilinear") -> list[torch.Tensor]:
    """Size unifier and combined enhancement (eqs. 1-3): the blocks of :func:`latin_square_chunks` at H/4.

    Each chunk is brought to the first level's size (eq. 1) after the split, not before: resizing
    works per channel, so the blocks are the same, but the split then cuts the small deep levels
    rather than the upsampled ones (OpenVINO ran that split on a reference kernel, 0.1 s per batch),
    and the concatenation takes whole tensors rather than channel slices, which PyTorch copies slowly.
    The network itself never builds these blocks (see :meth:`CrossFusionBranch.forward_chunks`).
    """
    size = levels[0].shape[-2:]
    return [torch.cat([resize(chunk, size, mode) for chunk in block], dim=1) for block in latin_square_chunks(levels)]


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
        # kernels derived from the convolution's weight for forward_chunks, kept while the weight is unchanged
        self._phase_kernels: KernelCache = {}

    def __getstate__(self) -> dict:
        """Copies and pickles leave the kept kernels behind: they are derived again on first use."""
        state = dict(self.__dict__)
        state["_phase_kernels"] = {}
        return state

    def forward_chunks(self, chunks: Sequence[torch.Tensor], size: Sequence[int], mode: str) -> torch.Tensor:
        """The branch over ``Concat(resize(chunk) for chunk in chunks)`` without building that block.

        The convolution over a concatenation is the sum of convolutions over its chunks, each with
        its slice of the kernel, and a chunk that the size unifier upsamples by an integer factor is
        convolved at its own size (:func:`.upconv.upsampled_conv2d`): a 9 x 9 kernel over a chunk
        upsampled 8 times needs 3 x 3 taps there. Same result up to rounding; where no chunk gains
        (the 3 x 3 branch), the block is built and convolved as written.
        """
        conv = self[0]
        fused = _chunked_convolution(chunks, conv.weight, conv.groups, size, mode, self._phase_kernels)
        if fused is None:
            return self(torch.cat([resize(chunk, size, mode) for chunk in chunks], dim=1))
        for layer in list(self)[1:]:
            fused = layer(fused)
        return fused


def _chunked_convolution(chunks: Sequence[torch.Tensor], weight: torch.Tensor, groups: int, size: Sequence[int],
                         mode: str, cache: KernelCache) -> torch.Tensor | None:
    """``conv2d(Concat(resize(chunks)), weight, groups)`` ("same" padding) chunk by chunk, or None where no chunk gains.

    Group borders need not fall on chunk borders (SSCFNet's chunks have 64 to 512 channels, its
    groups 60 to 480), so each chunk is cut at them: a run of whole groups is one grouped
    convolution with its own output channels, and a piece of a group adds to that group's outputs.

    The derived kernels are kept in ``cache`` between calls that do not train the weight (keyed by
    the piece, checked against the weight's storage, version and dtype), so inference derives them
    once and a graph traced for ONNX holds them as constants.
    """
    kernel = int(weight.shape[-1])  # plain ints throughout, under the ONNX trace too: they key the output slices
    scales = [integer_scale(chunk.shape[-2:], size) for chunk in chunks]
    if not any(scale and upconv.pays_off(kernel, scale, mode) for scale in scales):
        return None
    group_in, group_out = int(weight.shape[1]), int(weight.shape[0]) // groups
    reusable = not (torch.is_grad_enabled() and weight.requires_grad)
    parts: dict[tuple[int, int], torch.Tensor] = {}  # (first group, groups) -> sum of the pieces' convolutions
    start = 0
    for chunk, scale in zip(chunks, scales, strict=True):
        end = start + int(chunk.shape[1])
        position = start
        while position < end:
            group = position // group_in
            if position % group_in == 0 and end - position >= group_in:  # whole groups
                count = (end - position) // group_in
                stop, kernels = position + count * group_in, weight[group * group_out:(group + count) * group_out]
            else:  # a piece of one group
                count, stop = 1, min(end, (group + 1) * group_in)
                local = slice(position - group * group_in, stop - group * group_in)
                kernels = weight[group * group_out:(group + 1) * group_out, local]
            piece = chunk[:, position - start:stop - start]
            if scale and scale > 1:
                derived = _derived_kernels(cache, weight, kernels, (position, stop, scale, mode)) if reusable else None
                part = upconv.upsampled_conv2d(piece, kernels, scale, mode, count, derived)
            else:
                part = F.conv2d(resize(piece, size, mode), kernels, padding=kernel // 2, groups=count)
            key = (group, count)
            parts[key] = parts[key] + part if key in parts else part
            position = stop
        start = end
    return torch.cat([parts[key] for key in sorted(parts)], dim=1)


def _derived_kernels(cache: KernelCache, weight: torch.Tensor, kernel_slice: torch.Tensor,
                     key: tuple) -> upconv.PhaseKernels | None:
    """The phase kernels of ``kernel_slice`` (a slice of ``weight``), derived again only when the weight changed."""
    scale, mode = key[2], key[3]
    if not upconv.pays_off(int(kernel_slice.shape[-1]), scale, mode):
        return None
    # the same tensor (not one at a freed one's address), the same storage, no in-place change since
    try:
        stamp = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    except RuntimeError:  # an inference tensor (built under inference_mode) keeps no version counter
        return upconv.phase_kernels(kernel_slice, scale, mode)
    kept = cache.get(key)
    if kept is None or kept[0]() is not weight or kept[1] != stamp:
        kept = (weakref.ref(weight), stamp, upconv.phase_kernels(kernel_slice, scale, mode))
        cache[key] = kept
    return kept[2]


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

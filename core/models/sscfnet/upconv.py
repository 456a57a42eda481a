"""A convolution of an upsampled map, computed at the map's own resolution.

SSCFNet upsamples its deep levels (1/8, 1/16 and 1/32 of the input) to 1/4 and then runs
5 x 5 to 9 x 9 convolutions over them. Upsampling by an integer factor ``s`` and convolving are
both linear, so their composition is, for each of the ``s x s`` output phases, one convolution
of the small map with a small kernel: a 9 x 9 kernel over a map upsampled 8 times touches at
most 3 x 3 of its pixels. :func:`upsampled_conv2d` runs all phases as one convolution with
``s^2`` times the output channels, then interleaves them (``pixel_shuffle``).

Away from the borders that is the whole story. At the borders the two differ in one way: the
upsampling clamps its source coordinates (so beyond the map it continues as its edge row and
column), while the convolution pads its input with zeros. The phase convolution runs over the
small map padded by replication, which reproduces the clamped upsampling everywhere and sees
the upsampled map continued by its edge rows and columns. What that continuation adds is
subtracted again: for each side, the edge row (or column) convolved with the kernel's partial
sums over the taps that fall outside, and the four corners added back once (they lie outside
two sides). The result equals ``conv2d(interpolate(x), weight, padding=k // 2)`` up to rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@functools.cache
def _tap_matrix(kernel: int, scale: int, mode: str) -> tuple[torch.Tensor, int, int]:
    """Per axis: how each output phase's kernel taps fall on the small map.

    Returns ``A`` of shape ``[scale, m, kernel]`` (``A[p, j, d]``: weight of small-map offset
    ``j - before`` in tap ``d`` of phase ``p``), and the padding before and after the small map
    that the ``m``-wide phase kernels need.
    """
    radius = kernel // 2
    entries = []
    for phase in range(scale):
        for tap in range(-radius, radius + 1):
            whole, within = divmod(phase + tap, scale)
            for offset, weight in _interpolation_taps(scale, mode)[within]:
                entries.append((phase, whole + offset, tap + radius, weight))
    low = min(entry[1] for entry in entries)
    high = max(entry[1] for entry in entries)
    matrix = torch.zeros(scale, high - low + 1, kernel, dtype=torch.float64)
    for phase, offset, tap, weight in entries:
        matrix[phase, offset - low, tap] += weight
    return matrix, -low, high


@functools.cache
def _interpolation_taps(scale: int, mode: str) -> tuple[tuple[tuple[int, float], ...], ...]:
    """Per output phase ``p`` of ``s * u + p``: (offset from ``u``, weight) pairs, as ``F.interpolate`` computes them.

    Bilinear with ``align_corners=False`` samples the small map at ``u + (p + 0.5) / s - 0.5``;
    nearest takes ``floor((s * u + p) / s) = u``.
    """
    if mode == "nearest":
        return tuple(((0, 1.0),) for _ in range(scale))
    taps = []
    for phase in range(scale):
        fraction = (phase + 0.5) / scale - 0.5
        taps.append(((0, 1.0 - fraction), (1, fraction)) if fraction >= 0 else ((-1, -fraction), (0, 1.0 + fraction)))
    return tuple(taps)


def phase_kernel_size(kernel: int, scale: int, mode: str) -> int:
    """Width of the phase kernels; the small-map route costs ``(m / kernel)^2`` of the direct one, plus the borders."""
    return _tap_matrix(kernel, scale, mode)[0].shape[1]


def pays_off(kernel: int, scale: int, mode: str) -> bool:
    """Whether the phase convolution does less arithmetic than convolving the upsampled map."""
    return scale > 1 and kernel > 1 and kernel % 2 == 1 and phase_kernel_size(kernel, scale, mode) < kernel


@dataclass(frozen=True)
class PhaseKernels:
    """The kernels :func:`upsampled_conv2d` runs, derived from one convolution kernel ``[O, C, k, k]``.

    Attributes:
        phases: ``[O * s * s, C, m, m]``, output channel ``o * s * s + p * s + q`` for phase ``(p, q)``,
            as ``pixel_shuffle`` interleaves them.
        above, below: ``[O * r, C, 1, k]``: for each of the ``r = k // 2`` outermost output rows
            (top down), the sum of the kernel rows that land beyond the top (or bottom) border.
        left, right: ``[O * r, C, k, 1]``: the same for columns.
        corners: Top-left, top-right, bottom-left, bottom-right ``[O * r * r, C, 1, 1]``: the sums
            of the taps beyond both of a corner's borders, for each of its ``r x r`` outputs.
    """

    phases: torch.Tensor
    above: torch.Tensor
    below: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    corners: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def phase_kernels(weight: torch.Tensor, scale: int, mode: str) -> PhaseKernels:
    """Derive :class:`PhaseKernels`, in float32 arithmetic or wider, returned in the weight's dtype."""
    outputs, inputs, _, kernel = (int(extent) for extent in weight.shape)
    radius = kernel // 2
    arithmetic = torch.promote_types(weight.dtype, torch.float32)
    matrix = _tap_matrix(kernel, scale, mode)[0].to(device=weight.device, dtype=arithmetic)
    size = matrix.shape[1]
    master = weight.to(arithmetic)
    # W[o, p, q, i, j, l] = sum over taps (d, e) of A[p, j, d] A[q, l, e] w[o, i, d, e]
    columns = torch.einsum("qle,oide->oidql", matrix, master)
    phases = torch.einsum("pjd,oidql->opqijl", matrix, columns).reshape(outputs * scale * scale, inputs, size, size)
    # partial sums: above[:, i] sums the kernel rows landing above output row i, below[:, i] those
    # landing below output row H - r + i; left and right likewise for columns
    above = torch.stack([master[:, :, : radius - i].sum(2) for i in range(radius)], 1)  # [O, r, C, k]
    below = torch.stack([master[:, :, 2 * radius - i:].sum(2) for i in range(radius)], 1)
    left = torch.stack([master[:, :, :, : radius - i].sum(3) for i in range(radius)], 1)
    right = torch.stack([master[:, :, :, 2 * radius - i:].sum(3) for i in range(radius)], 1)
    lead = [slice(0, radius - i) for i in range(radius)]  # taps left of output column i
    trail = [slice(2 * radius - i, kernel) for i in range(radius)]  # taps right of column W - r + i

    def corner(rows: torch.Tensor, columns: list[slice]) -> torch.Tensor:
        sums = torch.stack([rows[..., taps].sum(-1) for taps in columns], 2)  # [O, r, r, C]
        return sums.reshape(outputs * radius * radius, inputs, 1, 1)

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(weight.dtype).contiguous()

    return PhaseKernels(
        phases=cast(phases),
        above=cast(above.reshape(outputs * radius, inputs, 1, kernel)),
        below=cast(below.reshape(outputs * radius, inputs, 1, kernel)),
        left=cast(left.reshape(outputs * radius, inputs, kernel, 1)),
        right=cast(right.reshape(outputs * radius, inputs, kernel, 1)),
        corners=(cast(corner(above, lead)), cast(corner(above, trail)),
                 cast(corner(below, lead)), cast(corner(below, trail))),
    )


def upsampled_conv2d(x: torch.Tensor, weight: torch.Tensor, scale: int, mode: str, groups: int = 1,
                     kernels: PhaseKernels | None = None) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=scale), weight, padding=k // 2, groups=groups)``, without the big input.

    Args:
        x: The small map, ``[B, C, h, w]``.
        weight: A square, odd-sized kernel ``[O, C / groups, k, k]`` (no bias: add it to the result).
        scale: Integer upsampling factor; the output is ``[B, O, scale * h, scale * w]``.
        mode: ``"bilinear"`` (``align_corners=False``) or ``"nearest"``.
        groups: Convolution groups.
        kernels: ``phase_kernels(weight, scale, mode)``, where the caller keeps them between calls.
    """
    # plain ints, which the ONNX trace keeps as constants (the batch size alone stays free)
    _, _, rows, kernel = (int(extent) for extent in weight.shape)
    height, width = int(x.shape[-2]) * scale, int(x.shape[-1]) * scale
    radius = kernel // 2
    if not pays_off(kernel, scale, mode) or rows != kernel or min(height, width) < 2 * radius:
        return F.conv2d(resize(x, (height, width), mode), weight, padding=radius, groups=groups)
    if kernels is None:
        kernels = phase_kernels(weight, scale, mode)
    _, before, after = _tap_matrix(kernel, scale, mode)
    padded = F.pad(x, (before, after, before, after), mode="replicate")
    main = F.pixel_shuffle(F.conv2d(padded, kernels.phases, groups=groups), scale)
    return main - _border_excess(x, kernels, scale, mode, groups, radius)


def resize(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Interpolate ``x`` to ``size``; ``align_corners=False`` for bilinear, as the public code does."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def _border_excess(x: torch.Tensor, kernels: PhaseKernels, scale: int, mode: str, groups: int,
                   radius: int) -> torch.Tensor:
    """What the replicated continuation beyond the borders adds to the outermost ``k // 2`` rows and columns.

    Beyond each side the continued upsampled map repeats that side's edge row (or column), so the
    excess of an output row ``i`` from the top is the edge row convolved with the sum of the kernel
    rows that land above the map; likewise for the other sides. Taps beyond two sides at once fall
    in a corner, where the map continues as its corner pixel: they are counted by both sides and
    taken off once.
    """
    batch = x.shape[0]
    height, width = int(x.shape[-2]) * scale, int(x.shape[-1]) * scale
    outputs = kernels.phases.shape[0] // (scale * scale)
    top_row, bottom_row = (resize(x[:, :, rows], (1, width), mode) for rows in (slice(0, 1), slice(-1, None)))
    left_column, right_column = (resize(x[:, :, :, columns], (height, 1), mode)
                                 for columns in (slice(0, 1), slice(-1, None)))

    def along_rows(row: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:  # [B, C, 1, W] -> [B, O, r, W]
        extended = F.pad(row, (radius, radius, 0, 0), mode="replicate")
        return F.conv2d(extended, sums, groups=groups).view(batch, outputs, radius, width)

    def along_columns(column: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:  # [B, C, H, 1] -> [B, O, H, r]
        extended = F.pad(column, (0, 0, radius, radius), mode="replicate")
        return F.conv2d(extended, sums, groups=groups).view(batch, outputs, radius, height).transpose(2, 3)

    def corner(pixel: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:  # [B, C, 1, 1] -> [B, O, r, r]
        return F.conv2d(pixel, sums, groups=groups).view(batch, outputs, radius, radius)

    top_left, top_right, bottom_left, bottom_right = kernels.corners
    top = (along_rows(top_row, kernels.above)
           - F.pad(corner(top_row[..., :1], top_left), (0, width - radius))
           - F.pad(corner(top_row[..., -1:], top_right), (width - radius, 0)))
    bottom = (along_rows(bottom_row, kernels.below)
              - F.pad(corner(bottom_row[..., :1], bottom_left), (0, width - radius))
              - F.pad(corner(bottom_row[..., -1:], bottom_right), (width - radius, 0)))
    return (F.pad(top, (0, 0, 0, height - radius)) + F.pad(bottom, (0, 0, height - radius, 0))
            + F.pad(along_columns(left_column, kernels.left), (0, width - radius))
            + F.pad(along_columns(right_column, kernels.right), (width - radius, 0)))


def integer_scale(small: Sequence[int], large: Sequence[int]) -> int | None:
    """The factor that takes ``small`` to ``large`` on both axes, or None where there is none."""
    (small_height, small_width), (large_height, large_width) = (map(int, small), map(int, large))
    scale = large_height // small_height
    if scale * small_height != large_height or scale * small_width != large_width:
        return None
    return scale


__all__ = ["PhaseKernels", "integer_scale", "pays_off", "phase_kernel_size", "phase_kernels", "resize",
           "upsampled_conv2d"]

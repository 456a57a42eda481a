"""The three branches of GAPL-SCD: SQMLFI (semantic), BTFF (change) and GAPL (graph prototypes).

Each block follows one section of the paper (III-B, III-C, III-D); the choices made where
the paper is silent are listed in the package's ``model`` module docstring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Guards divisions by a sum of confidences and the kernel bandwidth against zero.
_EPS = 1e-6


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``), a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SelfQueryLevel(nn.Module):
    """Eq. 10-11 for one level: ``Conv(X * Sigmoid(Conv3x3(X)) + X)``, conv block = Conv3x3 -> ReLU -> BN.

    The query map has as many channels as ``X`` (a true element-wise Hadamard weighting),
    and the conv block keeps the paper's order (ReLU before BatchNorm).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.refine = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(x * torch.sigmoid(self.query(x)) + x)


class SQMLFI(nn.Module):
    """Self-Query Multi-Level Feature Interaction (eq. 10-12): one date's four levels -> ``X_merge`` at H/4.

    The "FC over the stacked levels" is a ``Linear(4 -> 1)`` applied per pixel and channel along
    the level axis: it learns one fusion weight per level, as the paper describes. It starts as
    the plain mean of the levels so early training sees every level equally.
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int = 256) -> None:
        super().__init__()
        self.levels = nn.ModuleList(SelfQueryLevel(c, channels) for c in in_channels)
        self.fuse = nn.Linear(len(in_channels), 1)
        with torch.no_grad():
            self.fuse.weight.fill_(1.0 / len(in_channels))
            self.fuse.bias.zero_()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # The Linear over the level axis, written as the weighted sum it is: stacking the levels
        # along a new last axis interleaves them in memory, and ONNX runtimes run that stack and
        # the per-pixel product slowly (a third of the whole network's time under OpenVINO).
        size = features[0].shape[-2:]
        levels = [_resize(level(x), size) for level, x in zip(self.levels, features, strict=True)]
        weights = self.fuse.weight[0]
        merged = self.fuse.bias[0] + weights[0] * levels[0]
        for index in range(1, len(levels)):
            merged = merged + weights[index] * levels[index]
        return merged


class SemanticHead(nn.Module):
    """The SS classifier: two 1x1 convolutions (with BN + ReLU between them) -> ``N + 1`` logits at H/4."""

    def __init__(self, in_channels: int, hidden_channels: int, num_logits: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, num_logits, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class BTFFLevel(nn.Module):
    """Eq. 13-14 for one level: difference and cosine cues, concatenated and refined to ``width`` channels."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.diff_conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.cos_conv = nn.Conv2d(1, width, 3, padding=1)
        self.refine = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        cosine = F.cosine_similarity(x2, x1, dim=1, eps=1e-6).unsqueeze(1)
        d = torch.cat([self.diff_conv(x2 - x1), self.cos_conv(cosine)], dim=1)
        return self.refine(d)


class BTFF(nn.Module):
    """Bi-Temporal Feature Fusion (eq. 13-15) plus the CD head: four levels -> 2-class change logits at H/4.

    Every ``F_l`` has the same ``width`` so that eq. 15's sums need no projection; each DeConv is
    a ``ConvTranspose2d(width, width, 2, stride=2)`` (an exact x2 upsampler, one per step).
    """

    def __init__(self, in_channels: tuple[int, ...], width: int = 64) -> None:
        super().__init__()
        self.levels = nn.ModuleList(BTFFLevel(c, width) for c in in_channels)
        self.deconvs = nn.ModuleList(nn.ConvTranspose2d(width, width, 2, stride=2) for _ in in_channels[1:])
        self.head = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2, 1),
        )

    def forward(self, features1: list[torch.Tensor], features2: list[torch.Tensor]) -> torch.Tensor:
        fused = [level(a, b) for level, a, b in zip(self.levels, features1, features2, strict=True)]
        total = fused[-1]
        # deconvs[i] lifts level i + 1 onto level i, applied deepest first (eq. 15).
        for i in range(len(fused) - 2, -1, -1):
            total = self.deconvs[i](total) + fused[i]
        return self.head(total)


def pairwise_distance(features: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[G, Ns, Ns]`` between the rows of ``[G, Ns, d]``, safe to differentiate.

    Computed with a matrix product (the explicit difference tensor would be ``Ns^2 x d``); the
    diagonal is forced to exactly zero and the square root is taken of a clamped value so that
    coincident features give a zero, not an infinite, gradient.
    """
    sq_norm = features.pow(2).sum(-1)
    squared = sq_norm.unsqueeze(-1) + sq_norm.unsqueeze(-2) - 2.0 * features @ features.transpose(-1, -2)
    eye = torch.eye(features.shape[-2], dtype=torch.bool, device=features.device)
    squared = squared.clamp_min(1e-12).masked_fill(eye, 0.0)
    return squared.sqrt().masked_fill(eye, 0.0)


def median_bandwidth(distance: torch.Tensor) -> torch.Tensor:
    """Per-graph kernel bandwidth sigma ``[G]``: the median off-diagonal distance, detached.

    A graph with a single node has no pairs; it gets sigma = 1 (its adjacency is ``[[1]]`` anyway).
    """
    nodes = distance.shape[-1]
    if nodes < 2:
        return distance.new_ones(distance.shape[0])
    rows, cols = torch.triu_indices(nodes, nodes, offset=1, device=distance.device)
    return distance.detach()[:, rows, cols].median(dim=-1).values.clamp_min(_EPS)


def gaussian_adjacency(features: torch.Tensor, kernel: str = "knn", neighbours: int = 8) -> torch.Tensor:
    """Eq. 1: ``A_mn = exp(-||f_m - f_n|| / (2 sigma^2))`` per graph, sigma = median pairwise distance.

    ``kernel="squared"`` uses the usual heat kernel ``exp(-||f_m - f_n||^2 / (2 sigma^2))`` instead,
    which does not depend on the feature scale once sigma is the median distance.
    ``kernel="knn"`` (the default) is the squared kernel kept only between each node and its
    ``neighbours`` nearest nodes (either way round, so the graph stays symmetric), zero elsewhere.
    The dense kernels connect every node to every other with nearly equal weight, so two GCN
    layers average all nodes into one and every class prototype comes out the same; a sparse
    graph keeps nodes of different land cover apart, which is what ``L_cpa`` needs.
    """
    distance = pairwise_distance(features)
    sigma = median_bandwidth(distance).view(-1, 1, 1)
    if kernel == "paper":
        return torch.exp(-distance / (2.0 * sigma.pow(2)))
    weights = torch.exp(-distance.pow(2) / (2.0 * sigma.pow(2)))
    if kernel == "squared":
        return weights
    nodes = distance.shape[-1]
    keep = min(neighbours, nodes - 1) + 1  # the node itself is its own nearest
    nearest = distance.detach().topk(keep, dim=-1, largest=False).indices
    mask = torch.zeros_like(weights, dtype=torch.bool).scatter_(-1, nearest, True)
    return weights * (mask | mask.transpose(-1, -2))


def normalise_adjacency(adjacency: torch.Tensor) -> torch.Tensor:
    """Eq. 2-3: ``D^-1/2 (A + I) D^-1/2`` with ``D`` the row sums of ``A + I``."""
    eye = torch.eye(adjacency.shape[-1], dtype=adjacency.dtype, device=adjacency.device)
    with_self = adjacency + eye
    inv_sqrt = with_self.sum(-1).rsqrt()
    return inv_sqrt.unsqueeze(-1) * with_self * inv_sqrt.unsqueeze(-2)


class GraphPrototypeBranch(nn.Module):
    """GAPL (section III-B, training only): graph -> 2-layer GCN -> class prototypes -> affinity matrices.

    Holds the global prototype libraries of both dates as buffers (saved with the weights, so a
    resumed training keeps them) and updates them by EMA (eq. 9) on every training forward.
    Everything runs in float32 with autocast off: exponentials of distances and a median do not
    survive bfloat16.
    """

    def __init__(
        self, channels: int, num_classes: int, *, momentum: float = 0.9, kernel: str = "knn", neighbours: int = 8
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.neighbours = neighbours
        self.momentum = momentum
        self.gcn = nn.ModuleList(nn.Linear(channels, channels, bias=False) for _ in range(2))
        self.register_buffer("global_prototypes", torch.zeros(2, num_classes, channels))
        self.register_buffer("global_initialised", torch.zeros((), dtype=torch.bool))

    def forward(self, features: torch.Tensor, confidence: torch.Tensor) -> dict[str, torch.Tensor]:
        """Prototypes and affinities of one mini-batch.

        Args:
            features: Last-level features of both dates, ``[2B, d, H/32, W/32]`` (T1 images first).
            confidence: Per-class confidences on the same grid, ``[2B, N, H/32, W/32]`` (no gradient).

        Returns:
            ``prototypes_t1``/``prototypes_t2`` ``[N, d]`` (the EMA-mixed libraries the loss uses) and
            ``affinity_t1``/``affinity_t2``/``affinity_t12`` ``[N, N]`` (eq. 5-7).
        """
        with torch.autocast(device_type=features.device.type, enabled=False):
            nodes = features.float().flatten(2).transpose(1, 2)  # [2B, Ns, d]
            weights = confidence.float().flatten(2).transpose(1, 2)  # [2B, Ns, N]
            adjacency = normalise_adjacency(gaussian_adjacency(nodes, self.kernel, self.neighbours))
            for layer in self.gcn:
                nodes = F.relu(adjacency @ layer(nodes))
            batch = nodes.shape[0] // 2
            local = torch.stack(
                [self._prototypes(nodes[:batch], weights[:batch]), self._prototypes(nodes[batch:], weights[batch:])]
            )
            library = self._mix_with_global(local)
            unit = F.normalize(library, dim=-1, eps=1e-8)
            return {
                "prototypes_t1": library[0],
                "prototypes_t2": library[1],
                "affinity_t1": unit[0] @ unit[0].T,
                "affinity_t2": unit[1] @ unit[1].T,
                "affinity_t12": unit[0] @ unit[1].T,
            }

    @staticmethod
    def _prototypes(nodes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Eq. 4 (with the printed "+" read as a product), pooled over every image of one date: ``[N, d]``."""
        weighted_sum = torch.einsum("bmk,bmd->kd", weights, nodes)
        return weighted_sum / (weights.sum(dim=(0, 1)).unsqueeze(-1) + _EPS)

    def _mix_with_global(self, local: torch.Tensor) -> torch.Tensor:
        """Eq. 9: the loss sees ``beta * P_global + (1 - beta) * P_local`` (gradient through the local part only).

        The first mini-batch initialises the library; the mixed library is stored, detached, as
        the new global one.
        """
        if bool(self.global_initialised):
            library = self.momentum * self.global_prototypes.clone() + (1.0 - self.momentum) * local
        else:
            library = local
        with torch.no_grad():
            self.global_prototypes.copy_(library.detach())
            self.global_initialised.fill_(True)
        return library

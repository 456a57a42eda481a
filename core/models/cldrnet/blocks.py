"""Building blocks of CLDRNet (Wan et al., IEEE JSTARS 2023), one class per paper module.

The choices made where the paper is silent are listed in the docstring of
:mod:`core.models.cldrnet.model`; the classes here only say which equation they follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """The paper's ``F``: a 3 x 3 convolution, batch norm and ReLU (used by DMG and DMR)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling, the paper's ``U``."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class FPN(nn.Module):
    """Feature pyramid (Lin et al. 2017) over ``E_2..E_5``: lateral 1 x 1, top-down add, 3 x 3 smoothing.

    Returns ``F_2..F_5`` at strides 4..32 with ``channels`` channels each (32 in the paper).
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            top = F.interpolate(merged[0], size=lateral.shape[-2:], mode="nearest")
            merged.insert(0, lateral + top)
        return [conv(m) for conv, m in zip(self.smooth, merged, strict=True)]


class ClusteringLearning(nn.Module):
    """CA-DESC learning as a differentiable soft K-means (eqs. 1-4).

    ``V = conv1x1(E_5)`` (D dims), ``P = softmax_K(conv1x1(BN-ReLU(V)))``,
    ``c_k = sum_i v_i p_ik / sum_i p_ik`` and the reconstruction ``V_hat = P C``.
    """

    def __init__(self, in_channels: int, clusters: int = 8, descriptor_dim: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        self.encode = nn.Conv2d(in_channels, descriptor_dim, 1)  # W_E, eq. 1
        self.assign = nn.Sequential(  # BR then W_V, eq. 2
            nn.BatchNorm2d(descriptor_dim),
            nn.ReLU(),
            nn.Conv2d(descriptor_dim, clusters, 1),
        )
        self.eps = eps

    def forward(self, e5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return descriptors ``C`` [B, K, D], representations ``V`` and reconstructions ``V_hat`` [B, D, h, w]."""
        v = self.encode(e5)
        p = torch.softmax(self.assign(v), dim=1)  # [B, K, h, w], sums to 1 over K
        v_flat = v.flatten(2)  # [B, D, N]
        p_flat = p.flatten(2)  # [B, K, N]
        mass = p_flat.sum(dim=2, keepdim=True)  # [B, K, 1]
        centroids = torch.bmm(p_flat, v_flat.transpose(1, 2)) / (mass + self.eps)  # eq. 3, [B, K, D]
        v_hat = torch.bmm(centroids.transpose(1, 2), p_flat).view_as(v)  # eq. 4, [B, D, h, w]
        return centroids, v, v_hat


class MultiHeadAttention(nn.Module):
    """Multi-head attention with the paper's projections (eqs. 5-8).

    ``W_q, W_k, W_v`` map width ``channels`` to ``heads x head_dim`` (C x d per head, no bias);
    ``W_O`` maps back to ``channels``. The softmax runs over the key tokens.
    """

    def __init__(self, channels: int, heads: int = 8, head_dim: int = 64) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_k = nn.Linear(channels, inner, bias=False)
        self.to_v = nn.Linear(channels, inner, bias=False)
        self.to_out = nn.Linear(inner, channels)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        batch, n_q, channels = queries.shape
        n_k = keys.shape[1]
        heads, dim = self.heads, self.head_dim
        k = self.to_k(keys).view(batch, n_k, heads, dim).transpose(1, 2)  # [B, heads, n_k, d]
        v = self.to_v(keys).view(batch, n_k, heads, dim).transpose(1, 2)
        # multiplications per query: heads x d x (C + n_k) projecting it, heads x n_k x C folded
        if n_k * channels >= dim * (channels + n_k):
            q = self.to_q(queries).view(batch, n_q, heads, dim).transpose(1, 2)
            attention = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * dim**-0.5, dim=-1)
            out = torch.matmul(attention, v).transpose(1, 2).reshape(batch, n_q, heads * dim)
            return self.to_out(out)
        # Few keys (the category descriptors): the same products in another order. W_q moves onto
        # the keys, q_h k_h^T = x (k_h W_q,h)^T, and W_O onto the values, so no query is ever widened
        # to heads x d (16 x the decoder's width) and the queries keep their layout: about a tenth of
        # the arithmetic and memory traffic for every pixel of the CCM decoders.
        w_q = self.to_q.weight.view(heads, dim, channels)
        keys_in = torch.matmul(k, w_q).permute(0, 3, 1, 2).reshape(batch, channels, heads * n_k)
        scores = torch.matmul(queries, keys_in).view(batch, n_q, heads, n_k) * dim**-0.5
        attention = torch.softmax(scores, dim=-1).view(batch, n_q, heads * n_k)
        w_o = self.to_out.weight.view(-1, heads, dim).permute(1, 2, 0)  # [heads, d, out]
        values_out = torch.matmul(v, w_o).reshape(batch, heads * n_k, -1)
        return torch.matmul(attention, values_out) + self.to_out.bias


class DescriptorInteraction(nn.Module):
    """The concatenate-split step (Fig. 4(b)) that turns ``C^1, C^2`` into ``xi^1, xi^2``.

    A shared ``Linear(D -> C)`` lifts each descriptor to the decoder width, one pre-LN
    self-attention layer (with residual) runs over the ``2K`` concatenated tokens so the
    two dates exchange information, and the result is split back per date.
    """

    def __init__(self, descriptor_dim: int, channels: int = 32, heads: int = 8, head_dim: int = 64) -> None:
        super().__init__()
        self.lift = nn.Linear(descriptor_dim, channels)
        self.norm = nn.LayerNorm(channels)
        self.attention = MultiHeadAttention(channels, heads, head_dim)

    def forward(self, c1: torch.Tensor, c2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.lift(torch.cat([c1, c2], dim=1))  # [B, 2K, C]
        normed = self.norm(tokens)
        tokens = tokens + self.attention(normed, normed)
        xi1, xi2 = tokens.split(c1.shape[1], dim=1)
        return xi1, xi2


class CategoryContextDecoder(nn.Module):
    """CCM: one pre-LN transformer decoder layer with pixels as queries and ``xi`` as keys/values (eqs. 5-9)."""

    def __init__(self, channels: int = 32, heads: int = 8, head_dim: int = 64, ffn_ratio: int = 4) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.attention = MultiHeadAttention(channels, heads, head_dim)
        self.norm_ffn = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(
            nn.Linear(channels, channels * ffn_ratio),
            nn.GELU(),
            nn.Linear(channels * ffn_ratio, channels),
        )

    def forward(self, features: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
        """``features`` [B, C, h, w], ``descriptors`` [B, K, C] -> category-awareness features ``A`` [B, C, h, w]."""
        batch, channels, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # F-bar: [B, h*w, C]
        tokens = tokens + self.attention(self.norm_q(tokens), self.norm_kv(descriptors))  # F-hat
        tokens = tokens + self.ffn(self.norm_ffn(tokens))
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class DUC(nn.Module):
    """Dense upsampling convolution (Wang et al. 2018): 3 x 3 conv to ``r^2 x out`` channels, pixel shuffle by ``r``.

    ``activate`` adds BN and ReLU before the shuffle; the last DUC of a head leaves it out so
    it can produce logits.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int = 2, activate: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels * factor**2, 3, padding=1, bias=not activate)]
        if activate:
            layers += [nn.BatchNorm2d(out_channels * factor**2), nn.ReLU(inplace=True)]
        layers.append(nn.PixelShuffle(factor))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DifferenceMapGeneration(nn.Module):
    """DMG (eq. 10 and Fig. 6(a)): multi-level |A^1 - A^2| -> averaged 16-channel T -> DM logits.

    Level ``i`` (stride ``2^i``) goes through ``i - 2`` ``UF`` blocks (``F`` then x2 bilinear)
    after its first ``F`` so every term lands at stride 4; the four terms are averaged, then a
    1 x 1 convolution and two x2 DUC layers bring T to full resolution as one logit channel.
    """

    def __init__(self, in_channels: int = 32, channels: int = 16, levels: int = 4) -> None:
        super().__init__()
        self.branches = nn.ModuleList()
        for level in range(levels):
            depth = max(level, 1)  # F for X_2; one, two, three UF for X_3, X_4, X_5
            blocks = [ConvBNReLU(in_channels if j == 0 else channels, channels) for j in range(depth)]
            self.branches.append(nn.ModuleList(blocks))
        self.project = nn.Conv2d(channels, channels, 1)
        self.duc1 = DUC(channels, channels, 2, activate=True)
        self.duc2 = DUC(channels, 1, 2, activate=False)

    def forward(self, differences: list[torch.Tensor]) -> torch.Tensor:
        terms = []
        for level, (x, blocks) in enumerate(zip(differences, self.branches, strict=True)):
            for block in blocks:
                x = block(x)
                if level:
                    x = upsample2(x)  # UF = F followed by x2 bilinear upsampling
            terms.append(x)
        t = torch.stack(terms).mean(dim=0)  # "Avg" of the four stride-4 terms
        return self.duc2(self.duc1(self.project(t)))


class ChannelAttention(nn.Module):
    """Eq. 13: ``sigmoid(FC-ReLU-FC(AvgPool(x))) * x`` with ``hidden`` (4) channels in the bottleneck."""

    def __init__(self, channels: int, hidden: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.fc(x.mean(dim=(2, 3))))
        return x * weights[:, :, None, None]


class DifferenceMapRefinement(nn.Module):
    """DMR (eqs. 11-13 and Fig. 6(b)): max over dates of ``A_2`` -> threshold-map logits at full resolution.

    ``Th = sigmoid(CA(F(U(max(A_2^1, A_2^2)))))`` at stride 2, then x2 bilinear upsampling and
    CBRC (1 x 1 conv-BN-ReLU-1 x 1 conv, 16 hidden channels) to one channel.
    """

    def __init__(self, in_channels: int = 32, channels: int = 16, attention_hidden: int = 4) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, channels)
        self.attention = ChannelAttention(channels, attention_hidden)
        self.cbrc = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1),
        )

    def forward(self, a2_t1: torch.Tensor, a2_t2: torch.Tensor) -> torch.Tensor:
        merged = torch.maximum(a2_t1, a2_t2)  # eq. 11
        th = torch.sigmoid(self.attention(self.conv(upsample2(merged))))  # eq. 12
        return self.cbrc(upsample2(th))

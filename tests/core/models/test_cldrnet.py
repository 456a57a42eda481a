"""Tests of CLDRNet: the training outputs, both training stages, the registry and the sizes.

The model contract shared by every network is checked in ``test_contract.py``.
"""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import random_pair

from core.models.base import AUX_PREFIX, CHANGE_PROB, CHANGE_THRESHOLD
from core.models.cldrnet import SPEC, CLDRNet, compute_loss, stage_parameters
from core.models.cldrnet.blocks import ClusteringLearning, MultiHeadAttention
from core.models.cldrnet.losses import dm_loss, threshold_loss
from core.models.cldrnet.model import (
    AUX_CHANGE_LOGIT,
    AUX_RECON_T1,
    AUX_RECON_T2,
    AUX_REPR_T1,
    AUX_REPR_T2,
)
from core.models.complexity import count_flops, count_parameters
from core.models.registry import build_model, get_spec

MAIN_KEYS = {CHANGE_PROB, CHANGE_THRESHOLD}
AUX_KEYS = {AUX_CHANGE_LOGIT, AUX_REPR_T1, AUX_REPR_T2, AUX_RECON_T1, AUX_RECON_T2}

#: Measured sizes reported in the model docstring (ResNet-50, K = 8, D = 3).
DOCUMENTED_PARAMS = {True: 23_854_946, False: 24_077_282}  # keyed by share_ccm
DOCUMENTED_GMACS = {512: 46.44, 256: 11.61, 128: 2.906}
#: What the code computes: the attention over the eight descriptors folds its projections (see
#: ``MultiHeadAttention``), the same products in another order.
COMPUTED_GMACS = {512: 44.84, 256: 11.21, 128: 2.808}
#: The paper's figures (Tables II and VI); its "FLOPs" are multiply-accumulates.
PAPER_GMACS = {512: 46.30, 256: 11.57}  # Table VI also gives 2.89 G at 128


@pytest.fixture(scope="module")
def model() -> CLDRNet:
    torch.manual_seed(0)
    return CLDRNet()


def _targets(batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"change": (torch.rand(batch, 1, height, width, generator=generator) > 0.5).float()}


def test_training_mode_adds_aux_outputs(model: CLDRNet) -> None:
    model.train()
    out = model(*random_pair(2, 64, 96))
    model.eval()
    assert set(out) == MAIN_KEYS | AUX_KEYS
    assert all(key.startswith(AUX_PREFIX) for key in AUX_KEYS)
    torch.testing.assert_close(torch.sigmoid(out[AUX_CHANGE_LOGIT]), out[CHANGE_PROB])
    for key in (AUX_REPR_T1, AUX_REPR_T2, AUX_RECON_T1, AUX_RECON_T2):
        assert out[key].shape == (2, 3, 2, 3)  # [B, D, H/32, W/32]


def test_both_stage_losses_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = CLDRNet().train()
    out = net(*random_pair(1, 64, 64))
    targets = _targets(1, 64, 64)
    stage1 = compute_loss(out, targets, stage=1)
    stage2 = compute_loss(out, targets, stage=2)
    assert set(stage1) == {"loss", "ce", "tversky", "contrastive", "da"}
    assert set(stage2) == {"loss", "ce", "tversky", "contrastive", "tm_c", "tm_uc", "tm_fp", "tm_fn"}
    for terms in (stage1, stage2):
        assert torch.isfinite(terms["loss"])
        torch.testing.assert_close(terms["loss"], sum(v for k, v in terms.items() if k != "loss"))
    dmr = list(net.dmr.parameters())
    # the stage-1 loss never reaches DMR (frozen in stage 1); the stage-2 loss reaches all of it
    assert all(g is None for g in torch.autograd.grad(stage1["loss"], dmr, allow_unused=True, retain_graph=True))
    assert all(g is not None for g in torch.autograd.grad(stage2["loss"], dmr, allow_unused=True, retain_graph=True))
    (stage1["loss"] + stage2["loss"]).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for: {missing}"


def test_stage_parameters_split_the_network(model: CLDRNet) -> None:
    ids = {stage: {id(p) for p in stage_parameters(model, stage)} for stage in (1, 2)}
    dmg = {id(p) for p in model.dmg.parameters()}
    dmr = {id(p) for p in model.dmr.parameters()}
    assert ids[2] == dmg | dmr
    assert ids[1] == {id(p) for p in model.parameters()} - dmr
    with pytest.raises(ValueError, match="stage"):
        stage_parameters(model, 3)


def test_stage1_loss_needs_training_outputs(model: CLDRNet) -> None:
    model.eval()
    with torch.no_grad():
        out = model(*random_pair(1, 64, 64))
    with pytest.raises(ValueError, match="training mode"):
        compute_loss(out, _targets(1, 64, 64), stage=1)
    assert torch.isfinite(compute_loss(out, _targets(1, 64, 64), stage=2)["loss"])


def test_losses_match_the_paper_on_hand_values() -> None:
    prob = torch.tensor([0.9, 0.3, 0.8, 0.1]).view(1, 1, 2, 2)
    label = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    threshold = torch.tensor([0.5, 0.2, 0.6, 0.4]).view(1, 1, 2, 2)
    terms = dm_loss(prob, label)
    # contrastive (m = 0.5), averaged: changed 0.3 -> 0.5 * 0.2^2; unchanged 0.8, 0.1 -> 0.5 * p^2
    torch.testing.assert_close(terms["contrastive"], torch.tensor((0.5 * 0.04 + 0.5 * 0.64 + 0.5 * 0.01) / 4))
    tp, fn, fp = 1.2, 0.8, 0.9
    torch.testing.assert_close(terms["tversky"], torch.tensor(1 - (tp + 1) / (tp + 0.9 * fn + 0.1 * fp + 1)))
    tm = threshold_loss(prob, threshold, label)
    # L_C: pixel 2 (P 0.3, PT 0.2): 0 + 0.2^2; L_UC: pixel 3 (P 0.8 > PT 0.6): 0.2^2
    torch.testing.assert_close(tm["tm_c"], torch.tensor(0.04 / 4))
    torch.testing.assert_close(tm["tm_uc"], torch.tensor(0.04 / 4))
    # L_FP only for the false alarm (pixel 3); L_FN only for the miss (pixel 2)
    torch.testing.assert_close(tm["tm_fp"], -torch.log(torch.tensor((0.6 - 0.8 + 1) / 2)) / 4)
    torch.testing.assert_close(tm["tm_fn"], -torch.log(torch.tensor(0.3)) / 4)


def test_clustering_reconstructs_from_soft_centroids() -> None:
    torch.manual_seed(0)
    cl = ClusteringLearning(16, clusters=4, descriptor_dim=3).eval()
    centroids, v, v_hat = cl(torch.randn(2, 16, 4, 6))
    assert centroids.shape == (2, 4, 3) and v.shape == v_hat.shape == (2, 3, 4, 6)
    p = torch.softmax(cl.assign(v), dim=1).flatten(2)
    expected = (p @ v.flatten(2).transpose(1, 2)) / p.sum(dim=2, keepdim=True)
    torch.testing.assert_close(centroids, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(v_hat.flatten(2), centroids.transpose(1, 2) @ p)


def test_registry_builds_it() -> None:
    spec = get_spec("cldrnet")
    assert spec is SPEC and spec.task == "binary" and spec.backbones == ("resnet50",)
    assert spec.default_tile_size == 512 and spec.paper_flops_unit == "macs"
    net = build_model("cldrnet", clusters=4)
    assert isinstance(net, CLDRNet) and net.task == "binary"
    assert net.build_options["clusters"] == 4 and net.build_options["descriptor_dim"] == 3
    with pytest.raises(ValueError):
        build_model("cldrnet", backbone="resnet34")


@pytest.mark.parametrize("share_ccm", [True, False])
def test_parameter_count_is_the_documented_one(share_ccm: bool) -> None:
    params = count_parameters(CLDRNet(share_ccm=share_ccm))
    assert params == DOCUMENTED_PARAMS[share_ccm]
    if share_ccm:  # the default is within the 5 % of the paper's 22.92 M (see the docstring)
        assert abs(params / 1e6 - SPEC.paper_params_m["resnet50"]) / SPEC.paper_params_m["resnet50"] < 0.05


def test_flops_match_the_paper(model: CLDRNet, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SPEC.paper_gflops["resnet50"] == PAPER_GMACS[SPEC.paper_flops_size]
    for size, computed in COMPUTED_GMACS.items():
        assert count_flops(model, size) / 2e9 == pytest.approx(computed, rel=2e-3)
    # the equations as written (the attention projecting every query) are what the paper counts
    monkeypatch.setattr(MultiHeadAttention, "forward", _textbook_attention)
    for size, documented in DOCUMENTED_GMACS.items():
        gmacs = count_flops(model, size) / 2e9
        assert gmacs == pytest.approx(documented, rel=2e-3)
        if size in PAPER_GMACS:
            assert abs(gmacs - PAPER_GMACS[size]) / PAPER_GMACS[size] < 0.10


def _textbook_attention(block: MultiHeadAttention, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Eqs. 5-8 as written: project queries, keys and values per head, attend, concatenate, project out."""
    batch, n_q, _ = queries.shape
    heads, dim = block.heads, block.head_dim
    q = block.to_q(queries).view(batch, n_q, heads, dim).transpose(1, 2)
    k = block.to_k(keys).view(batch, keys.shape[1], heads, dim).transpose(1, 2)
    v = block.to_v(keys).view(batch, keys.shape[1], heads, dim).transpose(1, 2)
    attention = torch.softmax(q @ k.transpose(-2, -1) / dim**0.5, dim=-1)
    return block.to_out((attention @ v).transpose(1, 2).reshape(batch, n_q, heads * dim))


@pytest.mark.parametrize(("channels", "head_dim", "n_keys"), [(32, 64, 16), (256, 32, 64)])
def test_attention_equals_the_papers_equations_in_either_order(channels: int, head_dim: int, n_keys: int) -> None:
    # with few keys (the descriptors) the projections are folded onto keys and values; with many,
    # the queries are projected as written: both must be eqs. 5-8
    generator = torch.Generator().manual_seed(4)
    block = MultiHeadAttention(channels, heads=4, head_dim=head_dim).eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    queries = torch.randn(2, 300, channels, generator=generator, requires_grad=True)
    keys = torch.randn(2, n_keys, channels, generator=generator, requires_grad=True)
    upstream = torch.randn(2, 300, channels, generator=generator)
    results = []
    for attend in (block, functools.partial(_textbook_attention, block)):
        block.zero_grad()
        queries.grad = keys.grad = None
        out = attend(queries, keys)
        (out * upstream).sum().backward()
        results.append((out.detach(), queries.grad, keys.grad, [p.grad.clone() for p in block.parameters()]))
    (out, grad_q, grad_k, grads), (expected, expected_q, expected_k, expected_grads) = results
    # the same function and the same gradients, so training follows the paper's equations too
    pairs = [(out, expected), (grad_q, expected_q), (grad_k, expected_k), *zip(grads, expected_grads, strict=True)]
    for got, want in pairs:  # float32 rounding, at each tensor's own magnitude
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))

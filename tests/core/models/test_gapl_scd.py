"""GAPL-SCD: the training-only graph branch, the loss and eq. 19.

The model contract shared by every network is checked in ``test_contract.py``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_pair

from core.models.complexity import count_flops, count_parameters
from core.models.gapl_scd import GAPLSCD, SPEC, compute_loss, project_conflicting
from core.models.gapl_scd.losses import affinity_alignment, uncertainty_weighted
from core.models.registry import build_model, get_spec

NUM_CLASSES = 6
SIZES = [(64, 64), (64, 96)]

#: Measured sizes reported in the model docstring (the paper gives none); guards against drift.
MEASURED_PARAMS = 28_146_512
MEASURED_GFLOPS_512 = 113.68


def _model(**options: object) -> GAPLSCD:
    torch.manual_seed(0)
    return GAPLSCD(num_classes=NUM_CLASSES, **options)


def _targets(batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    change = (torch.rand(batch, 1, height, width, generator=generator) > 0.5).float()
    sem1 = torch.randint(1, NUM_CLASSES + 1, (batch, height, width), generator=generator) * change[:, 0].long()
    sem2 = torch.randint(1, NUM_CLASSES + 1, (batch, height, width), generator=generator) * change[:, 0].long()
    return {"change": change, "sem_t1": sem1, "sem_t2": sem2}


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_training_outputs_have_aux(height: int, width: int) -> None:
    model = _model().train()
    out = model(*random_pair(2, height, width, seed=1))
    aux = {k for k in out if k.startswith("aux_")}
    assert aux == {
        "aux_affinity_t1",
        "aux_affinity_t2",
        "aux_affinity_t12",
        "aux_prototypes_t1",
        "aux_prototypes_t2",
        "aux_change_logits",
        "aux_log_var_ss",
        "aux_log_var_cd",
    }
    for key in ("aux_affinity_t1", "aux_affinity_t2", "aux_affinity_t12"):
        assert out[key].shape == (NUM_CLASSES, NUM_CLASSES)
        assert out[key].abs().max() <= 1.0 + 1e-5
    assert out["aux_prototypes_t1"].shape == (NUM_CLASSES, 512)
    assert out["aux_change_logits"].shape == (2, 2, height, width)
    assert torch.allclose(out["change_prob"], out["aux_change_logits"].softmax(1)[:, 1:2])


def test_global_prototypes_follow_eq9_ema() -> None:
    model = _model().train()
    fresh = copy.deepcopy(model)  # same weights, empty library: its prototypes are the local ones
    x1, x2 = random_pair(2, 64, 64, seed=1)
    out = model(x1, x2)
    assert bool(model.gapl.global_initialised)
    first = model.gapl.global_prototypes.clone()
    assert torch.equal(first[0], out["aux_prototypes_t1"].detach())
    out = model(x2, x1)
    local = fresh(x2, x1)["aux_prototypes_t1"].detach()
    expected = 0.9 * first[0] + 0.1 * local
    assert torch.allclose(out["aux_prototypes_t1"].detach(), expected, atol=1e-5)
    assert torch.equal(model.gapl.global_prototypes[0], out["aux_prototypes_t1"].detach())
    stored = model.gapl.global_prototypes.clone()
    model.eval()
    with torch.no_grad():
        model(x1, x2)
    assert torch.equal(model.gapl.global_prototypes, stored), "eval must not touch the EMA library"


def test_backward_reaches_every_parameter() -> None:
    model = _model().train()
    out = model(*random_pair(2, 64, 64, seed=1))
    losses = compute_loss(out, _targets(2, 64, 64))
    assert losses["loss_cpa"].requires_grad
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient: {missing}"
    assert not bad, f"non-finite gradient: {bad}"


def test_bf16_autocast() -> None:
    """Both paths run under bfloat16 autocast; outputs stay float32 (the graph branch runs in float32)."""
    model = _model()
    x1, x2 = random_pair(1, 64, 64, seed=1)
    for training in (False, True):
        model.train(training)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x1, x2)
            loss = compute_loss(out, _targets(1, 64, 64))["loss"]
        assert torch.isfinite(loss)
        assert all(value.dtype == torch.float32 for value in out.values())
        assert all(torch.isfinite(value).all() for value in out.values())


def test_squared_kernel_option() -> None:
    model = _model(graph_kernel="squared").train()
    out = model(*random_pair(1, 64, 64, seed=1))
    assert torch.isfinite(out["aux_affinity_t12"]).all()


def test_compute_loss_terms() -> None:
    height, width = 32, 32
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, NUM_CLASSES + 1, height, width, generator=generator)
    change_logits = torch.randn(2, 2, height, width, generator=generator)
    eye = torch.eye(NUM_CLASSES)
    outputs = {
        "sem_logits_t1": logits,
        "sem_logits_t2": logits.flip(0),
        "change_prob": change_logits.softmax(1)[:, 1:2],
        "aux_change_logits": change_logits,
        "aux_affinity_t1": eye,
        "aux_affinity_t2": eye,
        "aux_affinity_t12": eye,
        "aux_log_var_ss": torch.zeros(()),
        "aux_log_var_cd": torch.zeros(()),
    }
    targets = _targets(2, height, width)
    losses = compute_loss(outputs, targets)
    assert set(losses) >= {"loss", "loss_merge", "loss_cpa", "loss_ss", "loss_cd"}
    assert losses["loss_cpa"] == 0
    # eq. 18 at sigma^2 = 1: L_ss / 2 + L_cd / 2 + 2 ln 2
    expected = 0.5 * losses["loss_ss"] + 0.5 * losses["loss_cd"] + 2 * torch.log(torch.tensor(2.0))
    assert torch.allclose(losses["loss_merge"], expected)
    assert torch.allclose(losses["loss"], losses["loss_merge"] + losses["loss_cpa"])
    # eval outputs (no logits) rebuild the same change CE from change_prob
    eval_losses = compute_loss({k: v for k, v in outputs.items() if not k.startswith("aux_")}, targets)
    assert torch.allclose(eval_losses["loss_cd"], losses["loss_cd"], atol=1e-5)
    assert eval_losses["loss_cpa"] == 0
    # no labelled semantic pixel: finite, zero L_ss
    empty = {**targets, "sem_t1": torch.zeros_like(targets["sem_t1"]), "sem_t2": torch.zeros_like(targets["sem_t2"])}
    assert compute_loss(outputs, empty)["loss_ss"] == 0


def test_uncertainty_weighting_and_affinity_loss() -> None:
    log_var = torch.log(torch.tensor(4.0))
    value = uncertainty_weighted(torch.tensor(8.0), torch.tensor(0.0), log_var, torch.tensor(0.0))
    assert value.item() == pytest.approx(8.0 / 8 + math.log(5.0) + math.log(2.0), rel=1e-6)
    a1, a2, a12 = torch.zeros(2, 2), torch.ones(2, 2), torch.full((2, 2), 0.5)
    assert torch.allclose(affinity_alignment(a1, a2, a12), torch.tensor(1.0 + 0.5 + 0.5))


def test_project_conflicting_eq19() -> None:
    g_a, g_b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    projected = project_conflicting(g_a, g_b)
    assert torch.allclose(projected, torch.tensor([0.5, 0.5]))
    assert torch.allclose(torch.dot(projected, g_b), torch.tensor(0.0))
    agreeing = torch.tensor([1.0, 2.0])
    assert torch.equal(project_conflicting(g_a, agreeing), g_a)
    assert torch.equal(project_conflicting(g_a, torch.zeros(2)), g_a)
    matrix_a, matrix_b = g_a.view(2, 1), g_b.view(2, 1)
    assert torch.allclose(project_conflicting(matrix_a, matrix_b), projected.view(2, 1))
    with pytest.raises(ValueError, match="same shape"):
        project_conflicting(g_a, torch.zeros(3))


def test_registry_builds_it() -> None:
    spec = get_spec("gapl_scd")
    assert spec is SPEC
    assert spec.task == "semantic"
    assert spec.backbones == ("resnet34", "resnet18")
    assert spec.default_tile_size == 512
    assert spec.paper.startswith("Xu et al., Graph Aggregation Prototype Learning")
    model = build_model("gapl_scd")
    assert isinstance(model, GAPLSCD)
    assert model.task == "semantic" and model.num_classes == 6
    assert build_model("gapl_scd", num_classes=4).num_classes == 4


def test_sizes_match_the_docstring() -> None:
    """The paper reports no sizes; the measured ones are documented and must not drift."""
    assert not SPEC.paper_params_m and not SPEC.paper_gflops
    model = _model()
    assert count_parameters(model) == MEASURED_PARAMS
    gflops = count_flops(model, 512) / 1e9
    assert gflops == pytest.approx(MEASURED_GFLOPS_512, rel=0.01)


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="backbone must be one of resnet34, resnet18"):
        GAPLSCD(backbone="resnet50")
    with pytest.raises(ValueError, match="num_classes"):
        GAPLSCD(num_classes=0)
    with pytest.raises(ValueError, match="graph_kernel"):
        GAPLSCD(graph_kernel="cosine")


def _two_land_covers(side: int = 8, channels: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-level features of two dates showing two land covers (left and right half) some 30 units apart,
    as far apart as ResNet-34 ``X_4`` vectors are, with their one-hot class confidences."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(2, channels, generator=generator).abs() * 1.5
    labels = torch.zeros(side, side, dtype=torch.long)
    labels[:, side // 2:] = 1
    noise = 0.3 * torch.randn(channels, side, side, generator=generator).abs()
    features = (centres[labels].permute(2, 0, 1) + noise).unsqueeze(0).repeat(2, 1, 1, 1)
    confidence = F.one_hot(labels, 2).permute(2, 0, 1).float().unsqueeze(0).repeat(2, 1, 1, 1)
    return features, confidence


def _prototype_cosine(kernel: str) -> float:
    from core.models.gapl_scd.blocks import GraphPrototypeBranch

    torch.manual_seed(1)
    branch = GraphPrototypeBranch(512, 2, kernel=kernel).train()
    out = branch(*_two_land_covers())
    prototypes = out["prototypes_t1"]
    cosine = F.cosine_similarity(prototypes[0], prototypes[1], dim=0)
    assert torch.allclose(out["affinity_t1"][0, 1], cosine, atol=1e-5)
    return float(cosine.detach())


def test_default_graph_keeps_prototypes_of_different_classes_apart() -> None:
    """The review's finding: with eq. 1 as printed, two GCN layers make every prototype the same."""
    assert GAPLSCD().gapl.kernel == "knn"
    assert _prototype_cosine("paper") > 0.9999  # degenerate: L_cpa would align nothing class-wise
    assert _prototype_cosine("knn") < 0.9


def test_knn_graph_links_each_node_only_to_its_nearest_neighbours() -> None:
    from core.models.gapl_scd.blocks import gaussian_adjacency

    features, _ = _two_land_covers()
    nodes = features[:1].flatten(2).transpose(1, 2)  # [1, 64, 512]: columns 0-3 class 0, 4-7 class 1
    adjacency = gaussian_adjacency(nodes, "knn", neighbours=8)[0]
    assert torch.equal(adjacency, adjacency.T)
    assert ((adjacency > 0).sum(dim=1) >= 9).all()  # itself and at least its 8 nearest
    left = (torch.arange(64) % 8) < 4
    assert adjacency[left][:, ~left].abs().max() == 0  # no edge between the two land covers
    dense = gaussian_adjacency(nodes, "paper")[0]
    assert dense[left][:, ~left].min() > 0.9  # every node linked to every other


def test_resnet18_backbone_gives_the_same_outputs_with_fewer_parameters():
    """The small-model option (the demo's): same stage widths, so every head fits unchanged."""
    import torch

    from core.models.gapl_scd import GAPLSCD

    small = GAPLSCD(backbone="resnet18", sqmlfi_channels=64, head_channels=64, btff_channels=32).eval()
    paper = GAPLSCD().eval()
    with torch.no_grad():
        outputs = small(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert outputs["sem_logits_t1"].shape == (1, 7, 64, 64) and outputs["change_prob"].shape == (1, 1, 64, 64)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(small) < 0.6 * count(paper)


def test_sqmlfi_fuses_the_levels_as_a_linear_layer_over_the_stacked_levels() -> None:
    # eq. 12's "FC over the stacked levels": the fusion must equal Linear(4 -> 1) along a level axis,
    # with trained (not just the initial mean) weights
    from core.models.gapl_scd.blocks import SQMLFI

    generator = torch.Generator().manual_seed(5)
    block = SQMLFI((8, 16, 16, 32), channels=8).eval()
    with torch.no_grad():
        block.fuse.weight.copy_(torch.tensor([[0.7, -0.2, 0.4, 1.3]]))
        block.fuse.bias.fill_(0.25)
    features = [torch.randn(2, width, side, side, generator=generator)
                for width, side in ((8, 16), (16, 8), (16, 4), (32, 2))]
    with torch.no_grad():
        levels = [F.interpolate(level(x), size=(16, 16), mode="bilinear", align_corners=False)
                  if x.shape[-1] != 16 else level(x) for level, x in zip(block.levels, features, strict=True)]
        expected = block.fuse(torch.stack(levels, dim=-1)).squeeze(-1)
        torch.testing.assert_close(block(features), expected)

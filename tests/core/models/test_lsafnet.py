"""Tests of LSAFNet (both variants): the default-width contract, the loss, the registry and the sizes.

The model contract shared by every network is checked in ``test_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import random_pair
from torch import nn

from core.models.base import AUX_PREFIX, CHANGE_PROB, SEM_LOGITS_T1, SEM_LOGITS_T2
from core.models.complexity import count_flops, count_parameters
from core.models.lsafnet import SPEC, LSAFNet, compute_loss
from core.models.lsafnet.blocks import CTFA, LGAA, DecoderBlock
from core.models.lsafnet.losses import semantic_consistency_loss
from core.models.lsafnet.model import AUX_CHANGE_LOGITS
from core.models.registry import build_model, get_spec

VARIANTS = ("paper", "code")
NUM_CLASSES = 6
MAIN_KEYS = {CHANGE_PROB, SEM_LOGITS_T1, SEM_LOGITS_T2}

#: Decoder width of the light models most tests use: the structure (every module, every parameter
#: name) is that of the default width 128, at a fraction of the CPU time.
LIGHT_WIDTH = 16

#: Measured sizes reported in the model docstring (ResNet-34, 6 classes, FLOPs = 2 x MACs at 512).
DOCUMENTED_PARAMS = {"paper": 24_446_607, "code": 27_857_807}
DOCUMENTED_GFLOPS_512 = {"paper": 430.2, "code": 1040.6}


@pytest.fixture(scope="module", params=VARIANTS)
def model(request: pytest.FixtureRequest) -> LSAFNet:
    return _light(request.param)


def _light(variant: str, **options: int) -> LSAFNet:
    torch.manual_seed(0)
    return LSAFNet(num_classes=NUM_CLASSES, variant=variant, decoder_channels=LIGHT_WIDTH, **options)


def _targets(batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    change = (torch.rand(batch, 1, height, width, generator=generator) > 0.5).float()
    sem = [torch.randint(1, NUM_CLASSES + 1, (batch, height, width), generator=generator) for _ in range(2)]
    unchanged = change[:, 0] == 0
    return {
        "change": change,
        "sem_t1": sem[0].masked_fill(unchanged, 0),
        "sem_t2": sem[1].masked_fill(unchanged, 0),
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_default_width_model_keeps_the_contract(variant: str) -> None:
    net = build_model("lsafnet", variant=variant).eval()
    with torch.no_grad():
        out = net(*random_pair(1, 32, 64))
    _check_eval_outputs(out, 1, 32, 64)


def _check_eval_outputs(out: dict[str, torch.Tensor], batch: int, height: int, width: int) -> None:
    assert set(out) == MAIN_KEYS
    assert out[CHANGE_PROB].shape == (batch, 1, height, width)
    assert out[CHANGE_PROB].dtype == torch.float32
    assert out[CHANGE_PROB].min() >= 0.0 and out[CHANGE_PROB].max() <= 1.0
    for key in (SEM_LOGITS_T1, SEM_LOGITS_T2):
        assert out[key].shape == (batch, NUM_CLASSES + 1, height, width)
        assert out[key].dtype == torch.float32
        assert torch.isfinite(out[key]).all()


def test_training_mode_adds_aux_change_logits(model: LSAFNet) -> None:
    model.train()
    out = model(*random_pair(2, 32, 32))
    model.eval()
    assert set(out) == {*MAIN_KEYS, AUX_CHANGE_LOGITS}
    assert all(key.startswith(AUX_PREFIX) for key in set(out) - MAIN_KEYS)
    torch.testing.assert_close(torch.sigmoid(out[AUX_CHANGE_LOGITS]), out[CHANGE_PROB])


@pytest.mark.parametrize("variant", VARIANTS)
def test_backward_reaches_every_parameter(variant: str) -> None:
    torch.manual_seed(0)
    net = LSAFNet(num_classes=NUM_CLASSES, variant=variant).train()
    losses = compute_loss(net(*random_pair(2, 64, 64)), _targets(2, 64, 64))
    assert set(losses) == {"loss", "bcd", "ss_t1", "ss_t2", "sc"}
    assert all(torch.isfinite(value) for value in losses.values())
    losses["loss"].backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    bad = [name for name, p in net.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without gradient: {missing}"
    assert not bad, f"parameters with non-finite gradient: {bad}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_trains_with_a_batch_of_one(variant: str) -> None:
    net = _light(variant).train()
    # 32 x 64 rather than 32 x 32: the backbone's own BatchNorm needs more than one value per channel at 1/32.
    out = net(*random_pair(1, 32, 64))
    out[CHANGE_PROB].mean().backward()
    assert out[CHANGE_PROB].shape == (1, 1, 32, 64)


def test_registry_builds_it_with_the_spec_defaults() -> None:
    spec = get_spec("lsafnet")
    assert spec is SPEC
    assert spec.task == "semantic"
    assert spec.default_tile_size == 512
    assert spec.backbones == ("resnet34",)
    assert "LSAFNet" in spec.paper
    net = build_model("lsafnet")
    assert isinstance(net, LSAFNet)
    assert net.task == "semantic" and net.num_classes == 6 and net.variant == "paper"
    assert net.build_options == {"backbone": "resnet34", "num_classes": 6, "variant": "paper"}
    assert build_model("lsafnet", variant="code", num_classes=4).num_classes == 4


@pytest.mark.parametrize(
    "options",
    [{"backbone": "resnet50"}, {"variant": "github"}, {"num_classes": 0}],
)
def test_invalid_options_raise_value_error(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_model("lsafnet", **options)


def test_more_input_bands() -> None:
    net = _light("paper", in_channels=4).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 4, 32, 32), torch.randn(1, 4, 32, 32))
    assert out[SEM_LOGITS_T1].shape == (1, NUM_CLASSES + 1, 32, 32)


def test_variants_differ_as_documented() -> None:
    paper = LSAFNet(variant="paper")
    code = LSAFNet(variant="code")
    # Output stride: 32 with the paper's (torchvision) strides, 8 with the code's stride-1 layer3/layer4.
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert paper.eval().encoder(x)[-1].shape[-1] == 2
        assert code.eval().encoder(x)[-1].shape[-1] == 8
    # CD fusion: LGAA (paper) vs CTFA concatenated with |diff| (code).
    assert isinstance(paper.cd_decoder.fuse, LGAA) and isinstance(code.cd_decoder.fuse, CTFA)
    # LGAA output scale: 1 (paper) vs 2 (code).
    assert paper.sfm.lgaa2.scale == 1.0 and code.sfm.lgaa2.scale == 2.0
    # Spatial conv of the decoder blocks: depthwise (paper) vs dilated (code).
    for net, groups, dilation in ((paper, 128, 1), (code, 1, 2)):
        blocks = [m for m in net.modules() if isinstance(m, DecoderBlock)]
        assert blocks
        convs = [block.context[0] for block in blocks]
        assert all(isinstance(c, nn.Conv2d) for c in convs)
        assert all(c.groups == groups and c.dilation == (dilation, dilation) for c in convs)
    # LGCE placement and SS classifier input.
    assert paper.ss_decoder.lgce_first and not code.ss_decoder.lgce_first
    assert paper.ss_fusion is None and code.ss_fusion is not None


@pytest.mark.parametrize("variant", VARIANTS)
def test_sizes_match_the_documented_measurements(variant: str) -> None:
    # The paper reports no parameter count or FLOPs; guard the numbers the docstring reports.
    assert not SPEC.paper_params_m and not SPEC.paper_gflops
    net = LSAFNet(variant=variant)
    assert count_parameters(net) == DOCUMENTED_PARAMS[variant]
    gflops = count_flops(net, 512) / 1e9
    assert gflops == pytest.approx(DOCUMENTED_GFLOPS_512[variant], rel=0.01)


def test_semantic_consistency_sign_convention() -> None:
    logits = torch.randn(1, NUM_CLASSES + 1, 4, 4)
    unchanged = torch.zeros(1, 1, 4, 4)
    changed = torch.ones(1, 1, 4, 4)
    # Identical predictions: free where unchanged (1 - cos = 0), maximal where changed (cos = 1).
    assert semantic_consistency_loss(logits, logits, unchanged).item() == pytest.approx(0.0, abs=1e-6)
    assert semantic_consistency_loss(logits, logits, changed).item() == pytest.approx(1.0, abs=1e-6)
    # Orthogonal one-hot class distributions: the reverse.
    one = torch.full((1, NUM_CLASSES + 1, 4, 4), -30.0)
    other = one.clone()
    one[:, 1] = 30.0
    other[:, 2] = 30.0
    assert semantic_consistency_loss(one, other, changed).item() == pytest.approx(0.0, abs=1e-6)
    assert semantic_consistency_loss(one, other, unchanged).item() == pytest.approx(1.0, abs=1e-6)


def test_loss_without_changed_pixels_is_finite() -> None:
    outputs = {
        CHANGE_PROB: torch.full((1, 1, 8, 8), 0.3),
        SEM_LOGITS_T1: torch.randn(1, NUM_CLASSES + 1, 8, 8, requires_grad=True),
        SEM_LOGITS_T2: torch.randn(1, NUM_CLASSES + 1, 8, 8),
    }
    targets = {
        "change": torch.zeros(1, 1, 8, 8),
        "sem_t1": torch.zeros(1, 8, 8, dtype=torch.long),
        "sem_t2": torch.zeros(1, 8, 8, dtype=torch.long),
    }
    losses = compute_loss(outputs, targets)
    assert losses["ss_t1"].item() == 0.0 and losses["ss_t2"].item() == 0.0
    assert losses["bcd"].item() == pytest.approx(-torch.log(torch.tensor(0.7)).item(), rel=1e-5)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()

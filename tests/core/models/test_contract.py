"""The model contract of ``core.models.base``, checked once for every registered network.

Each network is built once per module, through the registry, with the cheapest options that keep
its architecture. What only one network does (its auxiliary outputs, losses, sizes, variants) is
tested in that network's own file.
"""

from __future__ import annotations

import copy
import json
from typing import Any, NamedTuple

import pytest
import torch
from helpers import random_pair

from core.models.base import (
    AUX_PREFIX,
    CHANGE_PROB,
    CHANGE_THRESHOLD,
    SEM_LOGITS_T1,
    SEM_LOGITS_T2,
    ChangeModel,
)
from core.models.registry import build_model, get_spec, model_names

#: Options that keep a network's architecture at a fraction of the CPU time; one build per entry.
#: A network not listed is built with its defaults.
LIGHT_OPTIONS: dict[str, tuple[dict[str, Any], ...]] = {
    "gapl_scd": ({"sqmlfi_channels": 32, "head_channels": 16, "btff_channels": 16},),
    "lsafnet": ({"variant": "paper", "decoder_channels": 16}, {"variant": "code", "decoder_channels": 16}),
}

#: Networks that learn a per-pixel threshold map (``change_threshold``).
LEARNED_THRESHOLD = frozenset({"cldrnet"})

#: Eval sizes: square and non-square, both multiples of 32.
SIZES = [(64, 64), (64, 96)]

#: Sizes that are not multiples of 32, in height and in width.
BAD_SIZES = [(48, 64), (60, 64), (64, 48), (64, 63)]


#: Output dictionaries keyed by input ``(height, width)``.
Outputs = dict[tuple[int, int], dict[str, torch.Tensor]]


class Built(NamedTuple):
    name: str
    options: dict[str, Any]
    model: ChangeModel


def _cases() -> list[Any]:
    cases = []
    for name in model_names():
        for options in LIGHT_OPTIONS.get(name, ({},)):
            label = "-".join([name, *(str(value) for key, value in options.items() if key == "variant")])
            cases.append(pytest.param((name, options), id=label))
    return cases


@pytest.fixture(scope="module", params=_cases())
def built(request: pytest.FixtureRequest) -> Built:
    """One network in eval mode, built once for this module; tests that change it use a copy."""
    name, options = request.param
    torch.manual_seed(0)
    return Built(name, options, build_model(name, **options).eval())


def _contract_keys(built: Built) -> set[str]:
    """The output keys the contract requires of this network in eval mode, no more."""
    keys = {CHANGE_PROB}
    if built.model.task == "semantic":
        keys |= {SEM_LOGITS_T1, SEM_LOGITS_T2}
    if built.name in LEARNED_THRESHOLD:
        keys.add(CHANGE_THRESHOLD)
    return keys


def _check_outputs(built: Built, out: dict[str, torch.Tensor], batch: int, height: int, width: int) -> None:
    """Eval outputs: exactly the contract keys, float32, finite, full input size, probabilities in [0, 1]."""
    assert set(out) == _contract_keys(built)
    assert not any(key.startswith(AUX_PREFIX) for key in out)
    for key, value in out.items():
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value).all(), key
    for key in {CHANGE_PROB, CHANGE_THRESHOLD} & set(out):
        assert out[key].shape == (batch, 1, height, width), key
        assert out[key].min() >= 0.0 and out[key].max() <= 1.0, key
    if built.model.task == "semantic":
        assert built.model.num_classes >= 1
        for key in (SEM_LOGITS_T1, SEM_LOGITS_T2):
            assert out[key].shape == (batch, built.model.num_classes + 1, height, width), key


@pytest.fixture(scope="module")
def eval_outputs(built: Built) -> Outputs:
    """The network's eval outputs for a batch of two at every size in ``SIZES``, computed once."""
    with torch.no_grad():
        return {(height, width): built.model(*random_pair(2, height, width, seed=1)) for height, width in SIZES}


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_eval_outputs_have_contract_keys_shapes_and_ranges(
    built: Built, eval_outputs: Outputs, height: int, width: int
) -> None:
    _check_outputs(built, eval_outputs[height, width], 2, height, width)


def test_eval_mode_is_deterministic(built: Built, eval_outputs: Outputs) -> None:
    height, width = SIZES[-1]
    with torch.no_grad():
        again = built.model(*random_pair(2, height, width, seed=1))
    first = eval_outputs[height, width]
    assert set(again) == set(first)
    for key in first:
        assert torch.equal(first[key], again[key]), key


def test_training_mode_adds_aux_outputs(built: Built) -> None:
    model = copy.deepcopy(built.model).train()  # training updates BatchNorm statistics: keep the shared model clean
    with torch.no_grad():
        out = model(*random_pair(2, 32, 32, seed=1))  # two images: BatchNorm needs more than one value at 1/32
    extra = set(out) - _contract_keys(built)
    assert _contract_keys(built) <= set(out)
    assert extra, "training mode must add at least one aux_* output"
    assert all(key.startswith(AUX_PREFIX) for key in extra), extra
    assert out[CHANGE_PROB].shape == (2, 1, 32, 32)


def test_bf16_autocast_gives_float32_outputs(built: Built) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = built.model(*random_pair(1, 32, 64, seed=1))
    _check_outputs(built, out, 1, 32, 64)


def test_bad_inputs_raise_value_error(built: Built) -> None:
    for height, width in BAD_SIZES:
        with pytest.raises(ValueError, match="multiples of 32"):
            built.model(torch.zeros(1, 3, height, width), torch.zeros(1, 3, height, width))
    with pytest.raises(ValueError, match="same shape"):
        built.model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 96))


def test_registry_builds_it(built: Built) -> None:
    spec = get_spec(built.name)
    assert spec.name == built.name
    assert isinstance(built.model, spec.model_class) and isinstance(built.model, ChangeModel)
    assert built.model.task == spec.task
    assert built.model.model_name == built.name  # type: ignore[attr-defined]
    options = built.model.build_options  # type: ignore[attr-defined]
    assert options == {**spec.default_options, **built.options}
    assert json.loads(json.dumps(options)) == options  # a checkpoint stores them as JSON


def test_training_part_trains_every_stage_without_knowing_the_network(built: Built) -> None:
    """The trainer's view: per stage, the loss's named terms and a gradient step that fills exactly the
    stage's parameters (every one of them) and leaves the frozen ones without gradient."""
    training = get_spec(built.name).training
    assert training is not None and training.stages
    model = copy.deepcopy(built.model).train()
    x1, x2 = random_pair(2, 64, 64, seed=5)
    targets = {"change": (x1[:, :1] > x2[:, :1]).float()}
    if built.model.task == "semantic":
        classes = torch.randint(1, built.model.num_classes + 1, (2, 64, 64), generator=torch.Generator().manual_seed(0))
        targets["sem_t1"] = classes * targets["change"][:, 0].long()
        targets["sem_t2"] = (classes % built.model.num_classes + 1) * targets["change"][:, 0].long()
    for index, stage in enumerate(training.stages):
        trained = {id(p) for group in stage.parameter_groups(model) for p in group["params"]}
        assert trained, stage.name
        for p in model.parameters():
            p.requires_grad_(id(p) in trained)
            p.grad = None
        terms = training.loss(model(x1, x2), targets, index)
        assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])
        training.backward(model, terms, lambda loss: loss, lambda tensors: None)
        for name, p in model.named_parameters():
            if id(p) in trained:
                assert p.grad is not None, f"{stage.name}: {name} gets no gradient"
            else:
                assert p.grad is None, f"{stage.name}: frozen {name} got a gradient"


def test_the_names_table_matches_every_registered_network() -> None:
    """The plugin's help and the engine's messages read core.models.names; it must agree with the specs."""
    from core.models.names import NETWORKS
    from core.models.registry import get_spec, model_names

    assert set(NETWORKS) == set(model_names())
    for name, (_, task) in NETWORKS.items():
        assert get_spec(name).task == task, name


def _left_half(value: torch.Tensor) -> torch.Tensor:
    """The left half of a map (``[..., H, W]``, at any resolution); tensors without a map stay whole."""
    return value[..., : value.shape[-1] // 2] if value.ndim >= 3 else value


def test_pixels_without_a_label_are_left_out_of_every_loss_term(built: Built) -> None:
    """A batch whose right half is unlabelled (``valid`` 0) and holds garbage targets there gives, in every
    stage, the same loss terms and the same gradient step as the labelled left half alone: blank areas and
    padding are never learned as "no change"."""
    training = get_spec(built.name).training
    assert training is not None
    size = 64
    x1, x2 = random_pair(2, size, size, seed=7)
    generator = torch.Generator().manual_seed(3)
    change = (torch.rand(2, 1, size, size, generator=generator) > 0.5).float()
    labelled = {"change": change}
    garbage = {"change": (torch.rand(2, 1, size, size, generator=generator) > 0.3).float()}
    classes = built.model.num_classes
    if built.model.task == "semantic":
        for key in ("sem_t1", "sem_t2"):
            labelled[key] = torch.randint(1, classes + 1, (2, size, size), generator=generator) * change[:, 0].long()
            garbage[key] = torch.randint(0, classes + 1, (2, size, size), generator=generator)
    valid = torch.ones(2, 1, size, size)
    valid[..., size // 2:] = 0
    right = valid == 0
    dirty = {key: torch.where(right if value.ndim == 4 else right[:, 0], garbage[key], value)
             for key, value in labelled.items()}
    dirty["valid"] = valid
    alone = {key: _left_half(value) for key, value in labelled.items()}
    for index, stage in enumerate(training.stages):
        steps = []
        for targets, crop in ((dirty, False), (alone, True)):
            model = copy.deepcopy(built.model).train()
            trained = {id(p) for group in stage.parameter_groups(model) for p in group["params"]}
            for p in model.parameters():
                p.requires_grad_(id(p) in trained)
            torch.manual_seed(11)  # the same dropout masks in both passes
            outputs = model(x1, x2)
            if crop:
                outputs = {key: _left_half(value) for key, value in outputs.items()}
            terms = training.loss(outputs, targets, index)
            training.backward(model, terms, lambda loss: loss, lambda tensors: None)
            steps.append((terms, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}))
        (terms_dirty, grads_dirty), (terms_alone, grads_alone) = steps
        assert set(terms_dirty) == set(terms_alone)
        for key in terms_alone:
            torch.testing.assert_close(terms_dirty[key], terms_alone[key], rtol=1e-5, atol=1e-6,
                                       msg=f"{stage.name}: term {key}")
        assert grads_dirty.keys() == grads_alone.keys()
        # summing over the masked whole rounds differently from summing over the crop, at the size of
        # the network's largest gradients: a gradient that cancels to almost nothing (CLDRNet's last FFN
        # bias, 3e-10) differs by more than its own size, while a garbage label that leaked in moves the
        # loss terms above and the gradients by their own order of magnitude
        rounding = 1e-7 * max(float(grad.abs().max()) for grad in grads_alone.values())
        for name, grad in grads_alone.items():
            scale = float(grad.abs().max()) or 1.0
            torch.testing.assert_close(grads_dirty[name], grad, rtol=1e-4, atol=1e-5 * scale + rounding,
                                       msg=f"{stage.name}: gradient of {name}")


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("bands", [1, 10])
def test_every_network_takes_any_number_of_bands(name: str, bands: int) -> None:
    """``in_channels`` is every network's option: its first convolution takes N bands and the outputs are the
    contract's."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=bands, **LIGHT_OPTIONS.get(name, ({},))[0]).eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == bands
    x1, x2 = random_pair(1, 64, 64, channels=bands)
    with torch.inference_mode():
        outputs = model(x1, x2)
    assert outputs[CHANGE_PROB].shape == (1, 1, 64, 64)
    assert torch.isfinite(outputs[CHANGE_PROB]).all()
    with pytest.raises(RuntimeError):
        model(*random_pair(1, 64, 64, channels=3 if bands != 3 else 4))

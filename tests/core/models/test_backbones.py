"""Backbones and the registry: local weights, offline fall-back, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models as tv_models

from core.models import backbones
from core.models.backbones import ResNetEncoder, backbone_channels
from core.models.registry import build_model, get_spec, model_names


def test_encoder_returns_every_stage_with_the_declared_channels() -> None:
    encoder = ResNetEncoder("resnet34").eval()
    features = encoder(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == list(backbone_channels("resnet34"))
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]


def test_imagenet_weights_load_from_a_local_file(tmp_path: Path) -> None:
    reference = tv_models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    encoder = ResNetEncoder("resnet34", pretrained=path)
    assert torch.equal(encoder.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)


def test_a_weights_file_for_another_backbone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(tv_models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit a resnet50"):
        ResNetEncoder("resnet50", pretrained=path)
    with pytest.raises(FileNotFoundError, match="not found"):
        ResNetEncoder("resnet50", pretrained=tmp_path / "missing.pth")


def test_offline_imagenet_request_warns_and_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*_: object, **__: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_models.ResNet34_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.warns(RuntimeWarning, match="random initialisation"):
        encoder = ResNetEncoder("resnet34", pretrained="imagenet")
    assert isinstance(encoder, torch.nn.Module)


def test_more_than_three_bands() -> None:
    features = ResNetEncoder("resnet34", in_channels=4).eval()(torch.zeros(1, 4, 64, 64))
    assert features[-1].shape == (1, 512, 2, 2)


def test_registry_knows_the_four_networks_and_refuses_unknown_names_and_options() -> None:
    assert set(model_names()) == {"gapl_scd", "lsafnet", "sscfnet", "cldrnet"}
    assert {get_spec(name).task for name in model_names()} == {"semantic", "binary"}
    with pytest.raises(ValueError, match="available models"):
        get_spec("unet")
    with pytest.raises(ValueError, match="invalid options"):
        build_model("sscfnet", no_such_option=1)
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.backbone_channels("vgg16")


@pytest.mark.parametrize("bands", [1, 2, 4, 6, 10])
def test_imagenet_stem_is_adapted_to_any_band_count_by_timms_rule(tmp_path: Path, bands: int) -> None:
    """timm's ``adapt_input_conv``: the RGB kernels repeated cyclically and scaled by 3/N (one band: their sum),
    so the stem's activations keep their magnitude: exactly, for an image of one value in every band, with one
    band or a multiple of three."""
    reference = tv_models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    rgb = reference.conv1.weight.detach()
    stem = ResNetEncoder("resnet34", pretrained=path, in_channels=bands).stem[0].weight.detach()
    assert stem.shape == (64, bands, 7, 7)
    if bands == 1:
        torch.testing.assert_close(stem[:, 0], rgb.sum(dim=1))
    else:
        for band in range(bands):
            torch.testing.assert_close(stem[:, band], rgb[:, band % 3] * 3 / bands)
    flat = torch.nn.functional.conv2d(torch.full((1, bands, 7, 7), 0.5), stem)
    imagenet = torch.nn.functional.conv2d(torch.full((1, 3, 7, 7), 0.5), rgb)
    if bands == 1 or bands % 3 == 0:
        torch.testing.assert_close(flat, imagenet)
    else:
        assert float(flat.abs().mean()) == pytest.approx(float(imagenet.abs().mean()), rel=0.5)
    # the rest of the network is ImageNet's, untouched
    encoder = ResNetEncoder("resnet34", pretrained=path, in_channels=bands)
    assert torch.equal(encoder.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


def test_without_pretrained_weights_a_multiband_stem_is_a_fresh_layer() -> None:
    torch.manual_seed(0)
    stem = ResNetEncoder("resnet18", in_channels=4).stem[0].weight.detach()
    assert stem.shape == (64, 4, 7, 7)
    assert not torch.allclose(stem[:, 3], stem[:, 0] * 1.0)  # not a copy of a random RGB kernel
    assert float(stem.std()) == pytest.approx((2 / (64 * 49)) ** 0.5, rel=0.1)  # torchvision's fan-out init


def test_adapting_to_the_same_band_count_is_a_copy_and_zero_bands_are_refused() -> None:
    weight = torch.randn(8, 3, 3, 3)
    assert torch.equal(backbones.adapt_input_weights(weight, 3), weight)
    with pytest.raises(ValueError, match="at least 1"):
        backbones.adapt_input_weights(weight, 0)

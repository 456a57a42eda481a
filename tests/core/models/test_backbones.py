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

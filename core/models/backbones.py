"""Siamese ResNet-family encoders from torchvision, shared by all four networks.

Weights never download at run time unless asked: ``pretrained`` is ``None`` (random
initialisation), a path to a local ``.pth`` state dict (loaded with
``weights_only=True``), or ``"imagenet"`` (torchvision's weights API, which uses the
local torch hub cache first and falls back to random initialisation with a warning
when the network cannot be reached).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tv_models

# name -> (constructor, torchvision weights enum name, channels of stem, layer1..layer4)
_BACKBONES: dict[str, tuple[Callable[..., tv_models.ResNet], str, tuple[int, ...]]] = {
    "resnet18": (tv_models.resnet18, "ResNet18_Weights", (64, 64, 128, 256, 512)),
    "resnet34": (tv_models.resnet34, "ResNet34_Weights", (64, 64, 128, 256, 512)),
    "resnet50": (tv_models.resnet50, "ResNet50_Weights", (64, 256, 512, 1024, 2048)),
    "resnext50_32x4d": (tv_models.resnext50_32x4d, "ResNeXt50_32X4D_Weights", (64, 256, 512, 1024, 2048)),
    "resnet101": (tv_models.resnet101, "ResNet101_Weights", (64, 256, 512, 1024, 2048)),
}

PretrainedSource = str | Path | None


def backbone_names() -> tuple[str, ...]:
    return tuple(_BACKBONES)


def backbone_channels(name: str) -> tuple[int, ...]:
    """Channels of the stem and of layer1..layer4, in that order."""
    return _lookup(name)[2]


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its classifier that returns every stage.

    ``forward`` returns ``[stem, layer1, layer2, layer3, layer4]`` at strides
    2, 4, 8, 16, 32 (unless ``dilate`` replaced some strides with dilation).
    """

    def __init__(
        self,
        name: str = "resnet50",
        *,
        pretrained: PretrainedSource = None,
        in_channels: int = 3,
        dilate: tuple[bool, bool, bool] = (False, False, False),
    ) -> None:
        super().__init__()
        constructor, _, channels = _lookup(name)
        net = constructor(weights=None, replace_stride_with_dilation=list(dilate))
        load_pretrained(net, name, pretrained)
        if in_channels != 3:
            net.conv1 = _first_conv_for(net.conv1, in_channels, adapt=pretrained not in (None, ""))
        self.name = name
        self.channels = channels
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.maxpool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.stem(x)
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [stem, f1, f2, f3, f4]


def adapt_input_weights(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A convolution kernel ``[out, C, kh, kw]`` adapted to ``channels`` input bands, as timm does it.

    This is ``timm.models.adapt_input_conv``'s rule (the one torchgeo's multispectral
    ResNets follow too), so a network started here behaves like one started there:

    * one band: the sum of the kernels over the input channels (a grey image gives
      the response the colour image of the same brightness gave);
    * any other count: the kernels repeated cyclically (band ``i`` gets kernel ``i mod C``,
      so bands 1..3 in red, green, blue order keep ImageNet's red, green and blue
      filters) and scaled by ``C / channels``, so that the activations keep the magnitude
      the following batch norm was trained with (exactly, for an input of one value in
      every band, when ``channels`` is a multiple of ``C``; on average otherwise).

    Also used by ``train --init-from`` to carry a model's first convolution to another
    band count (``C`` is then that model's band count).
    """
    if channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {channels}")
    source = weight.shape[1]
    if channels == source:
        return weight.clone()
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-channels // source)
    return weight.repeat(1, repeats, 1, 1)[:, :channels] * (source / channels)


def _first_conv_for(conv: nn.Conv2d, in_channels: int, *, adapt: bool) -> nn.Conv2d:
    """The stem convolution for ``in_channels`` bands.

    With pretrained weights (``adapt``) they are carried over by :func:`adapt_input_weights`;
    without, the new convolution keeps PyTorch's own initialisation of a fresh layer, as
    torchvision's constructor would give it for that many bands.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    if adapt:
        with torch.no_grad():
            new.weight.copy_(adapt_input_weights(conv.weight, in_channels))
    else:  # torchvision's ResNet initialisation of its convolutions
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    return new


def load_pretrained(net: nn.Module, name: str, pretrained: PretrainedSource) -> None:
    """Load ImageNet weights into ``net`` from a local file or torchvision's cache.

    A missing file is an error (the user named it); an unreachable download is a
    warning, so a model still builds offline.
    """
    if pretrained is None or pretrained == "":
        return
    if str(pretrained).lower() == "imagenet":
        state = _torchvision_weights(name)
        if state is None:
            return
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"weights do not fit a {name}: {str(error).splitlines()[-1].strip()}") from error
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit a {name}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )


def _torchvision_weights(name: str) -> dict[str, Any] | None:
    enum_name = _lookup(name)[1]
    weights = getattr(tv_models, enum_name).IMAGENET1K_V1
    try:
        return dict(weights.get_state_dict(progress=False))
    except Exception as error:  # noqa: BLE001 - any download failure means "offline"
        warnings.warn(
            f"could not fetch ImageNet weights for {name} ({error.__class__.__name__}: {error}); "
            "the backbone starts from random initialisation. Pass a local .pth file to use pretrained weights.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _lookup(name: str) -> tuple[Callable[..., tv_models.ResNet], str, tuple[int, ...]]:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(_BACKBONES)}") from None

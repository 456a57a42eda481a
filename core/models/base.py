"""The model contract every change-detection network in this package follows.

The engine knows nothing about a particular network: it calls ``forward(x1, x2)``
and reads the keys listed here. Keeping the contract in one place is what lets a
fifth network slot in without touching the engine, the plugin or the CLI.

Contract (docs/model-contract.md explains the why):

* ``forward(x1, x2)`` takes two normalised ``[B, C, H, W]`` float tensors, ``H`` and
  ``W`` multiples of 32, and returns a ``dict[str, Tensor]``.
* ``change_prob``: ``[B, 1, H, W]``, probability of change in ``[0, 1]``. Always present.
* ``change_threshold``: ``[B, 1, H, W]`` learned per-pixel threshold in ``[0, 1]``;
  present only for networks that learn one (CLDRNet).
* ``sem_logits_t1`` and ``sem_logits_t2``: ``[B, N + 1, H, W]`` raw class logits, index 0
  being "no change" (never a prediction target); semantic networks only.
* ``aux_*``: anything needed only by a training loss; present only in training mode.

Decoding (done by the engine, not here): changed = ``change_prob > 0.5`` and, where a
threshold map exists, ``change_prob > change_threshold``; class = argmax over
channels ``1..N`` of the semantic logits, masked by change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Task = Literal["semantic", "binary"]

CHANGE_PROB = "change_prob"
CHANGE_THRESHOLD = "change_threshold"
SEM_LOGITS_T1 = "sem_logits_t1"
SEM_LOGITS_T2 = "sem_logits_t2"
AUX_PREFIX = "aux_"

#: Target key of the mask of labelled pixels: ``[B, 1, H, W]`` float, 1 where a pixel carries a label and
#: 0 where it carries none (Landsat-SCD's blank areas, the padding of images smaller than the crop).
VALID = "valid"

#: Target key of the optional class weights of the semantic losses: float ``[N + 1]``, the weight of a pixel of
#: class ``k`` in the land-cover cross-entropy (index 0, "no change", is never a target). The recipe's
#: ``train.class_weights`` puts it there; absent, every class weighs 1.
CLASS_WEIGHTS = "class_weights"

#: Spatial sizes given to a network must be multiples of this (output stride 32).
SIZE_MULTIPLE = 32


#: ``loss(outputs, targets, stage)``: named scalar terms, the one to minimise under ``"loss"``.
LossFunction = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], int], dict[str, torch.Tensor]]
#: ``scale(loss)``: the gradient scaler's scaling (identity without mixed precision).
Scale = Callable[[torch.Tensor], torch.Tensor]
#: ``average(tensors)``: averages tensors in place over the training processes (no-op in one process).
Average = Callable[[list[torch.Tensor]], None]
#: ``backward(model, terms, scale, average)``: fills ``.grad`` of every trainable parameter.
BackwardStep = Callable[[nn.Module, Mapping[str, torch.Tensor], Scale, Average], None]


def plain_backward(model: nn.Module, terms: Mapping[str, torch.Tensor], scale: Scale, average: Average) -> None:
    """One backward pass of the total loss; in distributed training DDP averages the gradients itself."""
    del model, average
    scale(terms["loss"]).backward()


def valid_mask(targets: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The targets' ``valid`` mask as float32 ``[B, 1, h, w]`` at the size of ``like`` (``[B, *, h, w]``).

    Every loss term weights its pixels by this mask, so a pixel without a label (``valid`` 0) adds
    nothing to the loss or its gradient, whatever its targets hold: without it a blank area would be
    learned as "no change". Targets without ``valid`` (all pixels labelled) give a mask of ones. At a
    coarser size than the targets (a network's feature grid) a cell's weight is the share of its
    pixels that are labelled.
    """
    size = like.shape[-2:]
    valid = targets.get(VALID)
    if valid is None:
        return torch.ones(like.shape[0], 1, *size, device=like.device, dtype=torch.float32)
    valid = valid.to(like.device, torch.float32)
    if valid.ndim == 3:
        valid = valid.unsqueeze(1)
    valid = (valid > 0.5).float()
    if valid.shape[-2:] != size:
        valid = nn.functional.interpolate(valid, size=size, mode="area")
    return valid


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the pixels ``weights`` keeps (weights broadcast over ``values``' channels).

    A batch without a labelled pixel gives 0, still connected to the graph of ``values``.
    """
    weights = weights.expand_as(values)
    total = weights.sum()
    return (values * weights).sum() / torch.where(total > 0, total, torch.ones_like(total))


def masked_labels(labels: torch.Tensor, weights: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``[B, H, W]`` class labels, every unlabelled pixel (``weights`` ``[B, 1, H, W]`` 0) set to ``ignore_index``."""
    return torch.where(weights[:, 0] > 0.5, labels.long(), torch.full_like(labels.long(), ignore_index))


def masked_change(change: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The float ``[B, 1, H, W]`` change target with unlabelled pixels set to 0 (they are weighted out anyway;
    this keeps whatever they held, NaN included, out of the arithmetic)."""
    change = change.float()
    if change.ndim == 3:
        change = change.unsqueeze(1)
    return torch.where(weights > 0.5, change, torch.zeros_like(change))


def class_weights(targets: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor | None:
    """The targets' :data:`CLASS_WEIGHTS` as float32 on ``like``'s device, or ``None`` (every class weighs 1)."""
    weights = targets.get(CLASS_WEIGHTS)
    return None if weights is None else weights.to(like.device, torch.float32)


def all_parameters(model: nn.Module) -> list[dict[str, Any]]:
    """One parameter group holding every parameter of the network."""
    return [{"name": "network", "params": list(model.parameters())}]


@dataclass(frozen=True)
class TrainingStage:
    """One stage of a network's training schedule.

    Attributes:
        name: Stage name; the recipe's ``[[stages]]`` tables are matched to stages in order.
        parameter_groups: ``model -> [{"name", "params", optional "lr_scale" / "weight_decay"}]``:
            the parameters this stage trains, in optimiser groups. Every parameter not listed is
            frozen (``requires_grad`` off) for the stage.
        frozen_modules: ``model -> modules`` kept in eval mode during the stage, so that frozen
            batch-norm layers keep the statistics they learned.
    """

    name: str = "train"
    parameter_groups: Callable[[nn.Module], list[dict[str, Any]]] = all_parameters
    frozen_modules: Callable[[nn.Module], Iterable[nn.Module]] = lambda model: ()


@dataclass(frozen=True)
class TrainingSpec:
    """The training part of the contract: what a trainer needs to train a network without knowing it.

    The trainer builds one optimiser per stage over ``stage.parameter_groups(model)``, puts
    ``stage.frozen_modules(model)`` in eval mode, and per step calls ``loss`` on the model's
    training-mode outputs and ``backward`` on the terms it returns. Nothing else about a
    network is special-cased anywhere.

    Attributes:
        loss: ``(outputs, targets, stage_index) -> terms``; ``terms["loss"]`` is minimised, the
            other terms are logged. Targets follow the dataset items: ``change`` ``[B, 1, H, W]``
            float 0/1, ``valid`` ``[B, 1, H, W]`` float (1 = labelled; may be absent: all labelled)
            and, for semantic networks, ``sem_t1`` / ``sem_t2`` ``[B, H, W]`` long and optionally
            ``class_weights`` ``[N + 1]`` (:data:`CLASS_WEIGHTS`, :func:`class_weights`), which the
            land-cover cross-entropy terms weight their pixels by. Every term must
            leave the pixels with ``valid`` 0 out (:func:`valid_mask`, :func:`masked_mean`,
            :func:`masked_labels`): their targets are meaningless.
        stages: The training stages, run in order (most networks have one).
        backward: Fills the gradients from the terms (:func:`plain_backward` unless the network's
            paper prescribes another gradient step).
        pretrained_backbone: What the paper starts its backbone from (for docs and ``models``).
    """

    loss: LossFunction
    stages: tuple[TrainingStage, ...] = (TrainingStage(),)
    backward: BackwardStep = plain_backward
    pretrained_backbone: str = "ImageNet-1k (torchvision IMAGENET1K_V1)"


@dataclass(frozen=True)
class ModelSpec:
    """What the registry, the CLI and the checkpoints know about one network.

    Attributes:
        name: Registry name, e.g. ``"sscfnet"``.
        task: ``"semantic"`` (two class maps plus change) or ``"binary"``.
        model_class: The ``nn.Module`` subclass; its keyword arguments are the options.
        paper: Short citation of the paper the network follows.
        default_tile_size: Training crop the paper uses; the inference tile default.
        backbones: Backbone names the constructor accepts; the first is the default.
        default_options: Keyword options used when none are given.
        paper_params_m: Parameter count the paper reports, in millions, if any.
        paper_gflops: Compute the paper reports, in G, at ``paper_flops_size``.
        paper_flops_size: Square input size the paper's compute figure is for.
        paper_flops_unit: ``"flops"`` when the paper counts 2 x multiply-accumulates,
            ``"macs"`` when its "FLOPs" are multiply-accumulates.
        training: How the network is trained (loss, stages, gradient step).
    """

    name: str
    task: Task
    model_class: type[nn.Module]
    paper: str
    default_tile_size: int
    backbones: tuple[str, ...]
    default_options: dict[str, Any] = field(default_factory=dict)
    paper_params_m: dict[str, float] = field(default_factory=dict)
    paper_gflops: dict[str, float] = field(default_factory=dict)
    paper_flops_size: int | None = None
    paper_flops_unit: Literal["flops", "macs"] = "flops"
    training: TrainingSpec | None = None


class ChangeModel(nn.Module):
    """Base class of every network: declares the task and checks inputs once.

    Subclasses implement :meth:`predict` and set ``task`` and, for semantic
    networks, ``num_classes`` (land-cover classes, excluding "no change").
    """

    task: Task = "binary"
    #: True for a network that also returns ``change_threshold``; the engine lays out its channels from it.
    learns_threshold: bool = False
    num_classes: int = 0

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        check_pair(x1, x2)
        outputs = self.predict(x1, x2)
        if not self.training:
            outputs = {k: v for k, v in outputs.items() if not k.startswith(AUX_PREFIX)}
        return outputs

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def check_pair(x1: torch.Tensor, x2: torch.Tensor) -> None:
    """Refuse inputs the networks cannot take, with a message saying why."""
    if x1.shape != x2.shape:
        raise ValueError(f"both dates must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    if x1.ndim != 4:
        raise ValueError(f"inputs must be [B, C, H, W], got {x1.ndim} dimensions")
    height, width = x1.shape[-2:]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(
            f"height and width must be multiples of {SIZE_MULTIPLE}, got {height} x {width}; pad the input first"
        )

"""CLDRNet's two training losses (paper eqs. 14-22).

Stage 1 (``stage=1``): ``L1 = L_DM + L_DA`` with ``L_DM = L_ce + L_tver + L_contra``.
Stage 2 (``stage=2``): ``L2 = L_DM + L_TM`` with ``L_TM = L_C + L_UC + L_FP + L_FN``.

Choices where the paper is silent: ``L_contra`` is averaged over pixels (the paper writes a
sum, which would scale with the tile size); the Tversky sums run over every labelled pixel of
the batch with a smoothing term of 1 so that an all-unchanged batch still has a gradient; the
stage-2 indicators ``1[P > 0.5]`` use the live DM, detached; logarithms are clamped at
``1e-6``. ``L_ce`` uses the DM logits when the model provides them (training mode), which is
the numerically stable form of eq. 17. All terms are computed in float32.

Pixels without a label (``valid`` 0: blank areas, padding) are left out of every term: the
per-pixel terms average over the labelled pixels, the Tversky sums skip the others, and
``L_DA`` weights each cell of its H/32 grid by the share of labelled pixels in it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..base import CHANGE_PROB, CHANGE_THRESHOLD, TrainingSpec, TrainingStage, masked_change, masked_mean, valid_mask
from .model import AUX_CHANGE_LOGIT, AUX_RECON_T1, AUX_RECON_T2, AUX_REPR_T1, AUX_REPR_T2, stage_parameters

#: Tversky weight of false negatives (stage 1 favours recall).
TVERSKY_ALPHA = 0.9
#: Margin of the contrastive loss and of L_C.
MARGIN = 0.5
_EPS = 1e-6


def compute_loss(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], stage: int = 1
) -> dict[str, torch.Tensor]:
    """Total loss of ``stage`` (1 or 2) under ``"loss"``, plus every named term so a trainer can log them.

    ``targets``: ``change`` ``[B, 1, H, W]`` float 0/1 and optionally ``valid`` (same size, 1 = labelled),
    whose 0 pixels no term sees.
    """
    if stage not in (1, 2):
        raise ValueError(f"CLDRNet trains in stage 1 or 2, got stage={stage!r}")
    with torch.autocast(device_type=outputs[CHANGE_PROB].device.type, enabled=False):
        prob = outputs[CHANGE_PROB].float()
        weights = valid_mask(targets, prob)
        label = masked_change(targets["change"], weights)
        terms = dm_loss(prob, label, outputs.get(AUX_CHANGE_LOGIT), weights)
        if stage == 1:
            terms["da"] = reconstruction_loss(outputs, targets)
        else:
            terms.update(threshold_loss(prob, outputs[CHANGE_THRESHOLD].float(), label, weights))
        terms["loss"] = torch.stack(list(terms.values())).sum()
    return terms


def dm_loss(prob: torch.Tensor, label: torch.Tensor, logit: torch.Tensor | None = None,
            weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``L_DM`` terms (eqs. 16-19): cross-entropy, Tversky (alpha 0.9) and contrastive (m 0.5).

    ``weights`` (``[B, 1, H, W]``, 1 = labelled; default all) leaves unlabelled pixels out of every term.
    """
    if weights is None:
        weights = torch.ones_like(prob)
    if logit is not None:
        ce = masked_mean(F.binary_cross_entropy_with_logits(logit.float(), label, reduction="none"), weights)
    else:
        p = prob.clamp(_EPS, 1 - _EPS)
        ce = masked_mean(-(label * p.log() + (1 - label) * (1 - p).log()), weights)
    tp = (weights * label * prob).sum()
    fn = (weights * label * (1 - prob)).sum()
    fp = (weights * (1 - label) * prob).sum()
    tversky = 1 - (tp + 1.0) / (tp + TVERSKY_ALPHA * fn + (1 - TVERSKY_ALPHA) * fp + 1.0)
    contrastive = masked_mean(
        0.5 * (1 - label) * prob.square() + 0.5 * label * (MARGIN - prob).clamp(min=0).square(), weights)
    return {"ce": ce, "tversky": tversky, "contrastive": contrastive}


def reconstruction_loss(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """``L_DA`` (eq. 15): ``||v - v_hat||^2`` summed over D, averaged over pixels, summed over the two dates.

    With a ``valid`` mask in ``targets`` each cell of the representation's grid counts by its share of
    labelled pixels, so blank areas and padding are not part of the average.
    """
    keys = (AUX_REPR_T1, AUX_RECON_T1, AUX_REPR_T2, AUX_RECON_T2)
    missing = [k for k in keys if k not in outputs]
    if missing:
        raise ValueError(f"stage-1 loss needs the training outputs {missing}; run the model in training mode")
    weights = valid_mask(targets or {}, outputs[AUX_REPR_T1])
    total = outputs[AUX_REPR_T1].new_zeros((), dtype=torch.float32)
    for repr_key, recon_key in ((AUX_REPR_T1, AUX_RECON_T1), (AUX_REPR_T2, AUX_RECON_T2)):
        diff = outputs[repr_key].float() - outputs[recon_key].float()
        total = total + masked_mean(diff.square().sum(dim=1, keepdim=True), weights)
    return total


def threshold_loss(prob: torch.Tensor, threshold: torch.Tensor, label: torch.Tensor,
                   weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``L_TM`` terms (eqs. 21-22), keyed ``tm_c``, ``tm_uc``, ``tm_fp``, ``tm_fn``, over the labelled pixels."""
    if weights is None:
        weights = torch.ones_like(prob)
    unchanged = 1 - label
    detected = (prob.detach() > 0.5).float()
    tm_c = masked_mean(label * ((threshold - prob).clamp(min=0).square() + (MARGIN - prob).clamp(min=0).square()),
                       weights)
    tm_uc = masked_mean(unchanged * (prob - threshold).clamp(min=0).square(), weights)
    tm_fp = masked_mean(-unchanged * detected * ((threshold - prob + 1) / 2).clamp(min=_EPS).log(), weights)
    tm_fn = masked_mean(-label * (1 - detected) * prob.clamp(min=_EPS).log(), weights)
    return {"tm_c": tm_c, "tm_uc": tm_uc, "tm_fp": tm_fp, "tm_fn": tm_fn}


def training_loss(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], stage: int
) -> dict[str, torch.Tensor]:
    """The contract's loss: stage index 0 is the paper's stage 1 (``L1``), index 1 its stage 2 (``L2``)."""
    return compute_loss(outputs, targets, stage=stage + 1)


def _stage_groups(stage: int) -> Callable[[nn.Module], list[dict[str, object]]]:
    def groups(model: nn.Module) -> list[dict[str, object]]:
        return [{"name": f"stage{stage}", "params": stage_parameters(model, stage)}]  # type: ignore[arg-type]

    return groups


def _stage1_frozen(model: nn.Module) -> list[nn.Module]:
    return [model.dmr]


def _stage2_frozen(model: nn.Module) -> list[nn.Module]:
    return [model.encoder, model.fpn, model.clustering, model.interaction, model.ccm]


#: Algorithm 1: stage 1 trains BFE, CCL and DMG with DMR frozen; stage 2 trains DMG and DMR only, the
#: rest frozen and in eval mode. The recipe gives each stage its epochs and learning rate. The paper
#: starts its ResNet-50 from ImageNet.
TRAINING = TrainingSpec(
    loss=training_loss,
    stages=(
        TrainingStage("stage1", _stage_groups(1), _stage1_frozen),
        TrainingStage("stage2", _stage_groups(2), _stage2_frozen),
    ),
    pretrained_backbone="ImageNet-1k ResNet-50 (torchvision IMAGENET1K_V1)",
)

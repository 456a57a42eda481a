"""SSCFNet's multi-loss (eqs. 10-11): ``L = 1 * BCE(main) + 0.5 * sum_i BCE(branch_i)``.

Every BCE is the mean over the labelled pixels of every image (``valid`` 1; pixels
without a label add nothing); eq. 10's normalisation is garbled in the paper (it divides a
sum over pixels by the sample count). The terms are computed from logits in float32
(``binary_cross_entropy_with_logits``), which is numerically stable and safe under
autocast; when only ``change_prob`` is available (eval-mode outputs) the main term falls
back to BCE on the clamped probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import CHANGE_PROB, TrainingSpec, masked_change, masked_mean, valid_mask

#: Training-only key of the main head's logits at full resolution.
MAIN_LOGITS = "aux_change_logits"
#: Training-only keys of the four branch heads' logits (branches k = 3, 5, 7, 9).
BRANCH_LOGITS: tuple[str, ...] = tuple(f"aux_branch{i}_logits" for i in range(4))

#: Eq. 11: w1 for the main loss, w2..w5 for the auxiliary losses.
MAIN_WEIGHT = 1.0
AUX_WEIGHT = 0.5

_EPS = 1e-7


def compute_loss(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    *,
    main_weight: float = MAIN_WEIGHT,
    aux_weight: float = AUX_WEIGHT,
) -> dict[str, torch.Tensor]:
    """Weighted sum of the main and auxiliary BCE losses.

    Args:
        outputs: The model's outputs; training-mode outputs carry the logits under
            :data:`MAIN_LOGITS` and :data:`BRANCH_LOGITS`, eval-mode ones only ``change_prob``.
        targets: ``"change"``: ``[B, 1, H, W]`` (or ``[B, H, W]``) float 0/1 change mask; optionally
            ``"valid"`` (same size, 1 = labelled): pixels with 0 are left out of every term.
        main_weight: ``w1`` of eq. 11.
        aux_weight: ``w2..w5`` of eq. 11.

    Returns:
        ``{"loss": total, "loss_main": ..., "loss_aux0": ..., ...}``; the auxiliary terms
        appear only when the outputs hold the auxiliary logits.
    """
    weights = valid_mask(targets, outputs[CHANGE_PROB])
    target = masked_change(targets["change"], weights)
    if MAIN_LOGITS in outputs:
        main = _bce(outputs[MAIN_LOGITS], target, weights)
    else:
        prob = outputs[CHANGE_PROB].float().clamp(_EPS, 1.0 - _EPS)
        main = masked_mean(-(target * prob.log() + (1.0 - target) * (1.0 - prob).log()), weights)
    terms = {"loss_main": main}
    total = main_weight * main
    for index, key in enumerate(BRANCH_LOGITS):
        if key in outputs:
            term = _bce(outputs[key], target, weights)
            terms[f"loss_aux{index}"] = term
            total = total + aux_weight * term
    return {"loss": total, **terms}


def _bce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy from logits, averaged over the labelled pixels."""
    return masked_mean(F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none"), weights)


def training_loss(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], stage: int
) -> dict[str, torch.Tensor]:
    """The contract's loss: eq. 11 with the paper's weights; SSCFNet trains in one stage."""
    del stage
    return compute_loss(outputs, targets)


#: One stage over all parameters, one plain backward pass; the backbones start from ImageNet.
TRAINING = TrainingSpec(
    loss=training_loss,
    pretrained_backbone="ImageNet-1k ResNet-50 / ResNeXt-50 / ResNet-101 (torchvision IMAGENET1K_V1)",
)

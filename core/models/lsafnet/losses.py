"""LSAFNet training loss (eq. 18): ``L_BCD + 0.5 * (L_SS1 + L_SS2) + L_SC``.

* ``L_BCD`` (eq. 16): plain binary cross-entropy on the change map (the public code's
  0.25 / 0.75 class-balanced variant is not used), computed from the logits when the
  model gives them (training mode) and from clamped probabilities otherwise.
* ``L_SS`` (eq. 15): per-pixel cross-entropy over the N + 1 logits with
  ``ignore_index=0``: only changed pixels carry a land-cover label. A batch without a
  single labelled pixel contributes 0 (instead of PyTorch's NaN). With the recipe's
  class weights it is their weighted mean (a user's option for unbalanced legends).
* ``L_SC`` (eq. 17, from Bi-SRNet) with the intended sign convention (eq. 17 as
  printed has the sign inverted): per pixel, with ``x_t`` the softmax over the
  land-cover logits 1..N (channel 0 dropped, as in the code), unchanged pixels cost
  ``1 - cos(x1, x2)`` and changed pixels ``max(0, cos(x1, x2))``, averaged over all pixels
  (``CosineEmbeddingLoss(margin=0)`` in the code).

Pixels without a label (``valid`` 0: Landsat-SCD's blank areas, padding) are left out of
every term: ``L_BCD`` and ``L_SC`` average over the labelled pixels only, and ``L_SS`` sees
them as "no change" (its ignore index).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import (
    CHANGE_PROB,
    SEM_LOGITS_T1,
    SEM_LOGITS_T2,
    TrainingSpec,
    class_weights,
    masked_change,
    masked_labels,
    masked_mean,
    valid_mask,
)
from .model import AUX_CHANGE_LOGITS

#: Weight of each semantic segmentation term in eq. 18.
SS_WEIGHT = 0.5
#: Label of "no change" in the semantic targets, never a training target.
IGNORE_INDEX = 0


def compute_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Total LSAFNet loss and its named terms.

    Args:
        outputs: The model's outputs (``change_prob``, ``sem_logits_t1/t2``, optionally ``aux_change_logits``).
        targets: ``change`` [B, 1, H, W] float 0/1 and ``sem_t1``, ``sem_t2`` [B, H, W] long (0 = no change);
            optionally ``valid`` [B, 1, H, W] (1 = labelled), whose 0 pixels no term sees.

    Returns:
        ``{"loss", "bcd", "ss_t1", "ss_t2", "sc"}``, all scalar tensors.
    """
    weights = valid_mask(targets, outputs[CHANGE_PROB])
    change = masked_change(targets["change"], weights)
    if AUX_CHANGE_LOGITS in outputs:
        logits = outputs[AUX_CHANGE_LOGITS].float()
    else:
        logits = torch.logit(outputs[CHANGE_PROB].float().clamp(1e-7, 1.0 - 1e-7))
    bcd = masked_mean(F.binary_cross_entropy_with_logits(logits, change, reduction="none"), weights)
    logits1 = outputs[SEM_LOGITS_T1].float()
    logits2 = outputs[SEM_LOGITS_T2].float()
    per_class = class_weights(targets, logits1)
    ss1 = _masked_cross_entropy(logits1, masked_labels(targets["sem_t1"], weights, IGNORE_INDEX), per_class)
    ss2 = _masked_cross_entropy(logits2, masked_labels(targets["sem_t2"], weights, IGNORE_INDEX), per_class)
    sc = semantic_consistency_loss(logits1, logits2, change, weights)
    total = bcd + SS_WEIGHT * (ss1 + ss2) + sc
    return {"loss": total, "bcd": bcd, "ss_t1": ss1, "ss_t2": ss2, "sc": sc}


def semantic_consistency_loss(logits1: torch.Tensor, logits2: torch.Tensor, change: torch.Tensor,
                              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pull the two dates' class distributions together where unchanged, apart where changed.

    ``weights`` (``[B, 1, H, W]``, 1 = labelled) leaves unlabelled pixels out of the mean.
    """
    prob1 = torch.softmax(logits1[:, 1:], dim=1)
    prob2 = torch.softmax(logits2[:, 1:], dim=1)
    cos = F.cosine_similarity(prob1, prob2, dim=1, eps=1e-8)
    changed = change.reshape(cos.shape) > 0.5
    per_pixel = torch.where(changed, cos.clamp(min=0.0), 1.0 - cos)
    if weights is None:
        return per_pixel.mean()
    return masked_mean(per_pixel, weights.reshape(cos.shape))


def _masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                          per_class: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the labelled pixels, a weighted mean when ``per_class`` weights are given."""
    target = target.long()
    if not bool((target != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=per_class, ignore_index=IGNORE_INDEX)


def training_loss(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], stage: int
) -> dict[str, torch.Tensor]:
    """The contract's loss: LSAFNet trains in one stage, so ``stage`` is always 0."""
    del stage
    return compute_loss(outputs, targets)


#: One stage over all parameters, one plain backward pass. The paper starts its ResNet-34 from ImageNet.
TRAINING = TrainingSpec(loss=training_loss, pretrained_backbone="ImageNet-1k ResNet-34 (torchvision IMAGENET1K_V1)")

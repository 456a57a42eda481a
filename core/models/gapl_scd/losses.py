"""GAPL-SCD training loss (eq. 8, 16-18, 20) and the gradient projection of eq. 19.

``compute_loss`` returns the two parts a gradient-rotating trainer needs separately,
``loss_merge`` (the uncertainty-weighted classification losses) and ``loss_cpa`` (the
prototype-affinity alignment), next to their sum ``loss`` (eq. 20). The trainer of eq. 21
takes ``g_a = grad(loss_merge)`` and ``g_b = grad(loss_cpa)`` over the shared backbone,
sets ``g_a' = project_conflicting(g_a, g_b)`` and ``g_b' = project_conflicting(g_b, g_a)``
(each against the *original* other gradient, as PCGrad does; projecting ``g_b`` against
``g_a'`` would never change it since ``g_a'`` is orthogonal to ``g_b``) and steps with
``g_a' + g_b'``; :func:`rotated_backward` does exactly that and is the gradient step of
:data:`TRAINING`. Plain ``loss.backward()`` is the paper's "w/o gradient rotation" setting.

Choices where the paper is silent:
    * ``L_ss`` ignores label 0 ("no change") in each date's cross-entropy and averages over the
      labelled pixels; a batch without any labelled pixel gives ``L_ss = 0`` (not NaN).
    * ``sigma^2 = exp(s)`` with ``s`` a learnable log-variance, so eq. 18 reads
      ``0.5 exp(-s1) L_ss + 0.5 exp(-s2) L_cd + softplus(s1) + softplus(s2)``
      (``ln(1 + sigma^2) = softplus(s)``). Without the model's ``aux_log_var_*`` (eval outputs)
      ``s = 0`` is used.
    * ``L_cpa`` is 0 when the outputs hold no affinity matrices (eval-mode outputs).
    * Pixels without a label (``valid`` 0: Landsat-SCD's blank areas, padding) are left out of
      ``L_ss`` (as "no change", its ignore index) and of ``L_cd`` (averaged over the labelled
      pixels). ``L_cpa`` uses no label: its prototypes are pooled inside the network from its own
      class confidences over the whole crop, as the paper describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Average, Scale, TrainingSpec, TrainingStage, class_weights, masked_labels, masked_mean, valid_mask

#: Keeps ``log`` finite when the change loss has to be rebuilt from probabilities.
_PROB_EPS = 1e-7


def compute_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The GAPL-SCD objective ``L_total = L_merge + L_cpa`` with its terms.

    Args:
        outputs: The model's outputs (training mode for ``L_cpa`` and the learnable weights).
        targets: ``change`` ``[B, 1, H, W]`` float 0/1; ``sem_t1``, ``sem_t2`` ``[B, H, W]`` long,
            0 = no change (ignored); optionally ``valid`` ``[B, 1, H, W]`` (1 = labelled): pixels with
            0 are left out of ``L_ss`` and ``L_cd``.

    Returns:
        ``loss`` (total), ``loss_merge``, ``loss_cpa``, ``loss_ss``, ``loss_cd`` and the current
        weights' variances ``sigma1_sq``, ``sigma2_sq`` (detached, for logging).
    """
    weights = valid_mask(targets, outputs["change_prob"])
    per_class = class_weights(targets, outputs["sem_logits_t1"])
    sem1 = _semantic_ce(outputs["sem_logits_t1"], masked_labels(targets["sem_t1"], weights, 0), per_class)
    sem2 = _semantic_ce(outputs["sem_logits_t2"], masked_labels(targets["sem_t2"], weights, 0), per_class)
    loss_ss = (sem1 + sem2) / 2  # eq. 16
    loss_cd = _change_ce(outputs, targets["change"], weights)  # eq. 17
    zero = loss_ss.new_zeros(())
    log_var_ss = outputs.get("aux_log_var_ss", zero).float()
    log_var_cd = outputs.get("aux_log_var_cd", zero).float()
    loss_merge = uncertainty_weighted(loss_ss, loss_cd, log_var_ss, log_var_cd)  # eq. 18
    if "aux_affinity_t1" in outputs:
        loss_cpa = affinity_alignment(
            outputs["aux_affinity_t1"], outputs["aux_affinity_t2"], outputs["aux_affinity_t12"]
        )  # eq. 8
    else:
        loss_cpa = zero
    return {
        "loss": loss_merge + loss_cpa,  # eq. 20
        "loss_merge": loss_merge,
        "loss_cpa": loss_cpa,
        "loss_ss": loss_ss,
        "loss_cd": loss_cd,
        "sigma1_sq": log_var_ss.detach().exp(),
        "sigma2_sq": log_var_cd.detach().exp(),
    }


def uncertainty_weighted(
    loss_ss: torch.Tensor, loss_cd: torch.Tensor, log_var_ss: torch.Tensor, log_var_cd: torch.Tensor
) -> torch.Tensor:
    """Eq. 18 with ``sigma^2 = exp(s)``: ``L/(2 sigma^2) + ln(1 + sigma^2)`` summed over the two tasks."""
    return (
        0.5 * torch.exp(-log_var_ss) * loss_ss
        + 0.5 * torch.exp(-log_var_cd) * loss_cd
        + F.softplus(log_var_ss)
        + F.softplus(log_var_cd)
    )


def affinity_alignment(
    affinity_t1: torch.Tensor, affinity_t2: torch.Tensor, affinity_t12: torch.Tensor
) -> torch.Tensor:
    """Eq. 8: mean absolute difference between each pair of the three ``[N, N]`` affinity matrices."""
    return (
        (affinity_t1 - affinity_t2).abs() + (affinity_t1 - affinity_t12).abs() + (affinity_t2 - affinity_t12).abs()
    ).mean()


def project_conflicting(g_a: torch.Tensor, g_b: torch.Tensor) -> torch.Tensor:
    """Eq. 19: ``g_a`` with its component along ``g_b`` removed when the two conflict (negative cosine).

    Works on tensors of any (equal) shape, treated as flat vectors; a zero ``g_b`` leaves ``g_a``
    unchanged. Pure: neither input is modified.
    """
    if g_a.shape != g_b.shape:
        raise ValueError(f"gradients must have the same shape, got {tuple(g_a.shape)} and {tuple(g_b.shape)}")
    dot = torch.sum(g_a * g_b)
    norm_sq = torch.sum(g_b * g_b)
    conflict = (dot < 0) & (norm_sq > 0)
    coefficient = torch.where(conflict, dot / norm_sq.clamp_min(torch.finfo(norm_sq.dtype).tiny), 0.0)
    return g_a - coefficient * g_b


def _semantic_ce(logits: torch.Tensor, labels: torch.Tensor, per_class: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the labelled (non-zero) pixels; 0 when there are none.

    With ``per_class`` weights (the recipe's class weights) it is their weighted mean, as PyTorch's own.
    """
    labels = labels.long()
    per_pixel = F.cross_entropy(logits.float(), labels, weight=per_class, ignore_index=0, reduction="sum")
    if per_class is None:
        return per_pixel / (labels != 0).sum().clamp_min(1)
    total = torch.where(labels != 0, per_class[labels], torch.zeros_like(per_class[labels])).sum()
    return torch.where(total > 0, per_pixel / torch.where(total > 0, total, torch.ones_like(total)), per_pixel * 0)


def _change_ce(outputs: dict[str, torch.Tensor], change: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """2-class cross-entropy (eq. 17) over the labelled pixels, from the change logits or from ``change_prob``."""
    labelled = weights[:, 0]
    target = torch.where(labelled > 0.5, change.reshape(labelled.shape).round().long(), 0)
    if "aux_change_logits" in outputs:
        per_pixel = F.cross_entropy(outputs["aux_change_logits"].float(), target, reduction="none")
    else:
        prob = outputs["change_prob"].float().squeeze(1).clamp(_PROB_EPS, 1 - _PROB_EPS)
        log_probs = torch.stack([torch.log1p(-prob), torch.log(prob)], dim=1)
        per_pixel = F.nll_loss(log_probs, target, reduction="none")
    return masked_mean(per_pixel, labelled)


# --- The training contract ---------------------------------------------------------------------

#: Names of the eq. 18 log-variances; they train in their own group without weight decay, because
#: weight decay would pull sigma^2 towards 1 instead of letting the data set the balance.
UNCERTAINTY_PARAMETERS = ("log_var_ss", "log_var_cd")


def training_loss(
    outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], stage: int
) -> dict[str, torch.Tensor]:
    """The contract's loss: eq. 20 with its terms; GAPL-SCD trains in one stage."""
    del stage
    return compute_loss(dict(outputs), dict(targets))


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Every parameter (Adam over all, as the paper says), the uncertainty weights in a group of their own."""
    uncertainty = [getattr(model, name) for name in UNCERTAINTY_PARAMETERS]
    taken = {id(p) for p in uncertainty}
    network = [p for p in model.parameters() if id(p) not in taken]
    return [
        {"name": "network", "params": network},
        {"name": "uncertainty", "params": uncertainty, "weight_decay": 0.0},
    ]


def rotated_backward(model: nn.Module, terms: Mapping[str, torch.Tensor], scale: Scale, average: Average) -> None:
    """Eq. 19-21: gradients of ``L_merge`` and ``L_cpa`` separately, PCGrad-rotated on the shared encoder.

    ``g_a = grad(L_merge)`` and ``g_b = grad(L_cpa)`` are taken over every trainable parameter in
    two passes, averaged over the training processes (so several processes compute what one
    process would on the whole batch), and on the shared encoder's parameters (flattened into one
    vector, as PCGrad does) each is projected against the *original* other one; the encoder gets
    ``g_a' + g_b'``, every other parameter the plain ``g_a + g_b`` (a head fed by one loss has no
    conflict to resolve). Without a ``L_cpa`` graph (the branch switched off) this is one plain pass.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    merge, cpa = terms["loss_merge"], terms["loss_cpa"]
    if not cpa.requires_grad:
        grads_a = _grads(scale(merge), params, retain=False)
        average(grads_a)
        _assign(params, grads_a)
        return
    grads_a = _grads(scale(merge), params, retain=True)
    grads_b = _grads(scale(cpa), params, retain=False)
    average(grads_a + grads_b)
    shared_ids = {id(p) for p in model.encoder.parameters()}
    shared = [i for i, p in enumerate(params) if id(p) in shared_ids]
    total = [a + b for a, b in zip(grads_a, grads_b, strict=True)]
    if shared:
        flat_a = torch.cat([grads_a[i].reshape(-1) for i in shared])
        flat_b = torch.cat([grads_b[i].reshape(-1) for i in shared])
        rotated = project_conflicting(flat_a, flat_b) + project_conflicting(flat_b, flat_a)
        offset = 0
        for i in shared:
            count = total[i].numel()
            total[i] = rotated[offset:offset + count].view_as(total[i])
            offset += count
    _assign(params, total)


def _grads(loss: torch.Tensor, params: list[nn.Parameter], *, retain: bool) -> list[torch.Tensor]:
    found = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found, strict=True)]


def _assign(params: list[nn.Parameter], grads: list[torch.Tensor]) -> None:
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad if param.grad is None else param.grad + grad


#: One stage (Adam over every parameter, the log-variances included), the rotated gradient step,
#: and an ImageNet-1k ResNet-34 backbone as in the paper.
TRAINING = TrainingSpec(
    loss=training_loss,
    stages=(TrainingStage("train", parameter_groups),),
    backward=rotated_backward,
    pretrained_backbone="ImageNet-1k ResNet-34 (torchvision ResNet34_Weights.IMAGENET1K_V1)",
)

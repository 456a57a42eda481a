"""GAPL-SCD training loss (eq. 8, 16-18, 20) and the gradient projection of eq. 19.

``compute_loss`` returns the two parts a gradient-rotating trainer needs separately,
``loss_merge`` (the uncertainty-weighted classification losses) and ``loss_cpa`` (the
prototype-affinity alignment), next to their sum ``loss`` (eq. 20). The trainer of eq. 21
takes ``g_a = grad(loss_merge)`` and ``g_b = grad(loss_cpa)`` over the shared backbone,
sets ``g_a' = project_conflicting(g_a, g_b)`` and ``g_b' = project_conflicting(g_b, g_a)``
(each against the *original* other gradient, as PCGrad does; projecting ``g_b`` against
``g_a'`` would never change it since ``g_a'`` is orthogonal to ``g_b``) and steps with
``g_a' + g_b'``. Plain ``loss.backward()`` is the paper's "w/o gradient rotation" setting.

Choices where the paper is silent:
    * ``L_ss`` ignores label 0 ("no change") in each date's cross-entropy and averages over the
      labelled pixels; a batch without any labelled pixel gives ``L_ss = 0`` (not NaN).
    * ``sigma^2 = exp(s)`` with ``s`` a learnable log-variance, so eq. 18 reads
      ``0.5 exp(-s1) L_ss + 0.5 exp(-s2) L_cd + softplus(s1) + softplus(s2)``
      (``ln(1 + sigma^2) = softplus(s)``). Without the model's ``aux_log_var_*`` (eval outputs)
      ``s = 0`` is used.
    * ``L_cpa`` is 0 when the outputs hold no affinity matrices (eval-mode outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Keeps ``log`` finite when the change loss has to be rebuilt from probabilities.
_PROB_EPS = 1e-7


def compute_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The GAPL-SCD objective ``L_total = L_merge + L_cpa`` with its terms.

    Args:
        outputs: The model's outputs (training mode for ``L_cpa`` and the learnable weights).
        targets: ``change`` ``[B, 1, H, W]`` float 0/1; ``sem_t1``, ``sem_t2`` ``[B, H, W]`` long,
            0 = no change (ignored).

    Returns:
        ``loss`` (total), ``loss_merge``, ``loss_cpa``, ``loss_ss``, ``loss_cd`` and the current
        weights' variances ``sigma1_sq``, ``sigma2_sq`` (detached, for logging).
    """
    sem1 = _semantic_ce(outputs["sem_logits_t1"], targets["sem_t1"])
    sem2 = _semantic_ce(outputs["sem_logits_t2"], targets["sem_t2"])
    loss_ss = (sem1 + sem2) / 2  # eq. 16
    loss_cd = _change_ce(outputs, targets["change"])  # eq. 17
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


def _semantic_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled (non-zero) pixels; 0 when there are none."""
    labels = labels.long()
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=0, reduction="sum")
    return per_pixel / (labels != 0).sum().clamp_min(1)


def _change_ce(outputs: dict[str, torch.Tensor], change: torch.Tensor) -> torch.Tensor:
    """2-class cross-entropy (eq. 17) from the change logits, or from ``change_prob`` without them."""
    target = change.squeeze(1).round().long()
    if "aux_change_logits" in outputs:
        return F.cross_entropy(outputs["aux_change_logits"].float(), target)
    prob = outputs["change_prob"].float().squeeze(1).clamp(_PROB_EPS, 1 - _PROB_EPS)
    log_probs = torch.stack([torch.log1p(-prob), torch.log(prob)], dim=1)
    return F.nll_loss(log_probs, target)

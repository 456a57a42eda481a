"""Change-detection scores, computed the way the papers compute them.

Two accumulators, both built on a confusion matrix whose rows are the
*prediction* and columns the *ground truth* (``matrix[i, j]`` = pixels predicted
``i`` whose truth is ``j``):

* :class:`SemanticConfusion` follows the SECOND protocol used by the semantic
  change-detection literature (Yang et al. for SECOND, Ding et al. for Bi-SRNet
  and F_scd). Class 0 is "no change"; the matrix is accumulated over *both*
  per-date maps (T1 and T2) of every pair, and each map is the semantic
  prediction multiplied by the predicted change mask (so unchanged pixels are 0).
  The formulas are written out in ``docs/training.md`` ("Metrics").
* :class:`BinaryConfusion` gives the change-class precision, recall, F1, IoU,
  overall accuracy and Cohen's kappa of binary change detection, over the whole
  test set (one global matrix, not per-image averages).

Both accept torch tensors or numpy arrays, keep their state in numpy int64 /
float64 arrays (so a distributed trainer can ``all_reduce`` them as tensors and
set them back, see :meth:`SemanticConfusion.state_vector`) and can be merged.

Undefined ratios. When a denominator is zero the quantity has nothing to
measure; we then give it the value of a perfect score when prediction and
truth agree on having nothing (for example no changed pixel anywhere, in both),
and 0 otherwise. The reference code of the papers gives ``nan`` for the IoU and
0 for kappa/SeK in the all-unchanged case; the two agree whenever the test set
contains changed pixels, which any real test set does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Target value excluded from every count (invalid areas, e.g. Landsat-SCD's blank borders).
IGNORE_INDEX = 255


def _as_numpy(array: Any) -> np.ndarray:
    """A numpy view of a torch tensor (any device) or array-like."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _as_maps(array: Any, name: str) -> np.ndarray:
    """Integer maps ``[images, H, W]`` from ``[H, W]``, ``[B, H, W]`` or ``[B, 1, H, W]``."""
    array = _as_numpy(array)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must hold class indices (integers), got non-integer values")
    elif array.dtype.kind == "b":
        array = array.astype(np.uint8)
    elif array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold class indices, got dtype {array.dtype}")
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be [H, W], [B, H, W] or [B, 1, H, W], got shape {tuple(array.shape)}")
    return array.astype(np.int64, copy=False)


def _f1(precision: float, recall: float, nothing_changed: bool) -> float:
    """Harmonic mean of precision and recall; 1 when neither prediction nor truth holds any change."""
    if nothing_changed:
        return 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ratio(numerator: float, denominator: float, *, empty: float) -> float:
    """``numerator / denominator``, or ``empty`` when there is nothing to divide."""
    return float(numerator) / float(denominator) if denominator > 0 else float(empty)


def cohen_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` of a square confusion matrix.

    An empty matrix, or one where chance agreement is already certain
    (``p_e == 1``, i.e. prediction and truth are one and the same class
    everywhere), scores 1: there is no disagreement to measure.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    if total == 0:
        return 1.0
    p_o = np.trace(matrix) / total
    p_e = float(matrix.sum(axis=1) @ matrix.sum(axis=0)) / total**2
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else 0.0
    return float((p_o - p_e) / (1.0 - p_e))


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"


class SemanticConfusion:
    """SECOND-protocol semantic change-detection scores over many pairs.

    Call :meth:`update` once per date map (T1 and T2) of every batch, with the
    *masked* prediction (semantic class times predicted change, 0 = no change)
    and the label (0 = no change, 1..N = land cover, :data:`IGNORE_INDEX` =
    invalid, not counted).

    Args:
        num_classes: Number of land-cover classes N (without "no change"); the
            matrix is ``(N + 1) x (N + 1)``.
        class_names: Optional names of classes 1..N, used in the per-class keys
            (``iou_water``); default ``iou_class_1`` ... .
        ignore_index: Target value that is left out of every count.

    Attributes:
        matrix: ``int64 [N + 1, N + 1]``, rows = prediction, columns = truth.
        image_accuracy_sum: Sum over maps of each map's pixel accuracy (float64).
        image_count: Number of maps with at least one valid pixel (int64).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget every count."""
        size = self.num_classes + 1
        self.matrix = np.zeros((size, size), dtype=np.int64)
        self.image_accuracy_sum = 0.0
        self.image_count = 0

    def update(self, pred: Any, target: Any) -> None:
        """Add one or a batch of masked per-date maps.

        Args:
            pred: Predicted classes 0..N, ``[H, W]``, ``[B, H, W]`` or ``[B, 1, H, W]``.
            target: Labels of the same shape; ``ignore_index`` pixels are skipped.

        Raises:
            ValueError: Shapes differ, or a value lies outside 0..N.
        """
        pred, target = _as_maps(pred, "prediction"), _as_maps(target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
        size = self.num_classes + 1
        valid = target != self.ignore_index
        for label, values in (("prediction", pred), ("target", target[valid])):
            if values.size and (values.min() < 0 or values.max() >= size):
                raise ValueError(f"{label} holds values outside 0..{self.num_classes}: "
                                 f"{sorted(set(np.unique(values).tolist()) - set(range(size)))[:5]}")
        codes = pred * size + target
        self.matrix += np.bincount(codes[valid], minlength=size * size).reshape(size, size)
        valid_per_map = valid.reshape(len(valid), -1).sum(axis=1)
        correct_per_map = ((pred == target) & valid).reshape(len(valid), -1).sum(axis=1)
        counted = valid_per_map > 0
        self.image_accuracy_sum += float((correct_per_map[counted] / valid_per_map[counted]).sum())
        self.image_count += int(counted.sum())

    def merge(self, other: SemanticConfusion) -> SemanticConfusion:
        """Add ``other``'s counts to this one (e.g. from another process); returns self."""
        if other.matrix.shape != self.matrix.shape:
            raise ValueError("cannot merge confusion matrices of different class counts")
        self.matrix += other.matrix
        self.image_accuracy_sum += other.image_accuracy_sum
        self.image_count += other.image_count
        return self

    def state_vector(self) -> np.ndarray:
        """All counts as one float64 vector, to be summed across processes (``all_reduce``).

        float64 holds integers exactly up to 2**53 pixels, far beyond any test set.
        """
        return np.concatenate([self.matrix.ravel().astype(np.float64),
                               [self.image_accuracy_sum, float(self.image_count)]])

    def load_state_vector(self, vector: Any) -> None:
        """Set the counts from a (summed) :meth:`state_vector`."""
        vector = _as_numpy(vector).astype(np.float64).ravel()
        size = self.num_classes + 1
        if vector.size != size * size + 2:
            raise ValueError(f"state vector has {vector.size} values, expected {size * size + 2}")
        self.matrix = np.rint(vector[: size * size]).astype(np.int64).reshape(size, size)
        self.image_accuracy_sum = float(vector[-2])
        self.image_count = int(np.rint(vector[-1]))

    def compute(self) -> dict[str, float]:
        """The scores as fractions (0..1), flat keys.

        Keys: ``oa`` (mean per-image pixel accuracy over all T1 and T2 maps, the
        number the papers report as OA/"Avg"), ``oa_global`` (accuracy of the
        global confusion matrix), ``miou`` (mean of no-change and change IoU),
        ``iou_nc``, ``iou_c``, ``sek``, ``kappa_nc`` (kappa with the
        no-change/no-change count removed, the kappa inside SeK), ``kappa``
        (Cohen's kappa of the full matrix), ``precision_scd``, ``recall_scd``,
        ``f_scd``, ``score`` (SECOND challenge score 0.3 mIoU + 0.7 SeK), and
        ``iou_<class>`` for "no change" and every land-cover class.
        """
        q = self.matrix.astype(np.float64)
        total = q.sum()
        q00 = q[0, 0]
        pred_change = total - q[0, :].sum()  # predicted 1..N
        true_change = total - q[:, 0].sum()  # truly 1..N
        both_change = q[1:, 1:].sum()
        no_change_union = q[0, :].sum() + q[:, 0].sum() - q00
        nothing_changed = pred_change == 0 and true_change == 0
        iou_nc = _ratio(q00, no_change_union, empty=1.0)
        iou_c = _ratio(both_change, total - q00, empty=1.0)

        hat = q.copy()
        hat[0, 0] = 0
        kappa_nc = cohen_kappa(hat)
        sek = kappa_nc * math.exp(iou_c - 1.0)

        correct_change = np.trace(q[1:, 1:])
        precision = _ratio(correct_change, pred_change, empty=1.0 if true_change == 0 else 0.0)
        recall = _ratio(correct_change, true_change, empty=1.0 if pred_change == 0 else 0.0)
        f_scd = _f1(precision, recall, nothing_changed)
        miou = (iou_nc + iou_c) / 2
        scores = {
            "oa": _ratio(self.image_accuracy_sum, self.image_count, empty=1.0),
            "oa_global": _ratio(np.trace(q), total, empty=1.0),
            "miou": miou,
            "iou_nc": iou_nc,
            "iou_c": iou_c,
            "sek": sek,
            "kappa_nc": kappa_nc,
            "kappa": cohen_kappa(q),
            "precision_scd": precision,
            "recall_scd": recall,
            "f_scd": f_scd,
            "score": 0.3 * miou + 0.7 * sek,
        }
        names = ("no change", *(self.class_names or (f"class {k}" for k in range(1, self.num_classes + 1))))
        for k, name in enumerate(names):
            union = q[k, :].sum() + q[:, k].sum() - q[k, k]
            scores[f"iou_{_slug(name)}"] = _ratio(q[k, k], union, empty=1.0)
        return scores


class BinaryConfusion:
    """Binary change-detection scores from one global 2 x 2 matrix.

    Attributes:
        matrix: ``int64 [2, 2]``, rows = prediction (0 unchanged, 1 changed),
            columns = truth; so ``TP = matrix[1, 1]``, ``FP = matrix[1, 0]``,
            ``FN = matrix[0, 1]``, ``TN = matrix[0, 0]``.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget every count."""
        self.matrix = np.zeros((2, 2), dtype=np.int64)

    def update(self, pred: Any, target: Any) -> None:
        """Add 0/1 maps (``[H, W]``, ``[B, H, W]`` or ``[B, 1, H, W]``; bool or integers).

        Raises:
            ValueError: Shapes differ, or a value is not 0 or 1 (``ignore_index`` targets are skipped).
        """
        pred, target = _as_maps(pred, "prediction"), _as_maps(target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
        valid = target != self.ignore_index
        for label, values in (("prediction", pred), ("target", target[valid])):
            if values.size and (values.min() < 0 or values.max() > 1):
                raise ValueError(f"{label} must be 0/1 change masks, found values "
                                 f"{sorted(set(np.unique(values).tolist()) - {0, 1})[:5]}")
        self.matrix += np.bincount(pred[valid] * 2 + target[valid], minlength=4).reshape(2, 2)

    def merge(self, other: BinaryConfusion) -> BinaryConfusion:
        """Add ``other``'s counts to this one; returns self."""
        self.matrix += other.matrix
        return self

    def state_vector(self) -> np.ndarray:
        """The counts as a float64 vector for ``all_reduce`` (see :class:`SemanticConfusion`)."""
        return self.matrix.ravel().astype(np.float64)

    def load_state_vector(self, vector: Any) -> None:
        """Set the counts from a (summed) :meth:`state_vector`."""
        vector = _as_numpy(vector).astype(np.float64).ravel()
        if vector.size != 4:
            raise ValueError(f"state vector has {vector.size} values, expected 4")
        self.matrix = np.rint(vector).astype(np.int64).reshape(2, 2)

    def compute(self) -> dict[str, float]:
        """Fractions: ``precision``, ``recall``, ``f1``, ``iou`` (change class), ``iou_unchanged``,
        ``miou`` (mean of both IoUs), ``oa``, ``kappa``."""
        tn, fn = float(self.matrix[0, 0]), float(self.matrix[0, 1])
        fp, tp = float(self.matrix[1, 0]), float(self.matrix[1, 1])
        predicted, actual = tp + fp, tp + fn
        nothing_changed = predicted == 0 and actual == 0
        precision = _ratio(tp, predicted, empty=1.0 if actual == 0 else 0.0)
        recall = _ratio(tp, actual, empty=1.0 if predicted == 0 else 0.0)
        f1 = _f1(precision, recall, nothing_changed)
        iou = _ratio(tp, tp + fp + fn, empty=1.0)
        iou_unchanged = _ratio(tn, tn + fp + fn, empty=1.0)
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "iou": iou,
            "iou_unchanged": iou_unchanged,
            "miou": (iou + iou_unchanged) / 2,
            "oa": _ratio(tp + tn, tp + tn + fp + fn, empty=1.0),
            "kappa": cohen_kappa(self.matrix),
        }

"""SECOND-protocol and binary scores against confusion matrices worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.metrics import IGNORE_INDEX, BinaryConfusion, SemanticConfusion, cohen_kappa

# (prediction, truth) pixels giving, with rows = prediction and columns = truth,
#   Q = [[5, 1, 1],
#        [2, 3, 1],
#        [0, 1, 2]]
PAIRS = [(0, 0)] * 5 + [(0, 1), (0, 2), (1, 0), (1, 0)] + [(1, 1)] * 3 + [(1, 2), (2, 1), (2, 2), (2, 2)]
Q = np.array([[5, 1, 1], [2, 3, 1], [0, 1, 2]])


def _maps(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = zip(*pairs, strict=True)
    return np.array(pred).reshape(1, -1), np.array(truth).reshape(1, -1)


def _hand_counted() -> SemanticConfusion:
    """Q over two maps: 4 correct unchanged pixels (accuracy 1), and the other 12 pixels (accuracy 6/12)."""
    confusion = SemanticConfusion(2, class_names=("Water", "Low vegetation"))
    confusion.update(*_maps(PAIRS[:4]))
    confusion.update(*_maps(PAIRS[4:]))
    return confusion


def test_semantic_matrix_convention_rows_are_predictions() -> None:
    assert np.array_equal(_hand_counted().matrix, Q)
    assert _hand_counted().matrix.dtype == np.int64


def test_semantic_scores_match_hand_calculation() -> None:
    scores = _hand_counted().compute()
    iou_nc, iou_c = 5 / 9, 7 / 11          # 5/(7+7-5); changed-vs-changed 7 of the 11 pixels off q00
    kappa_hat = 9 / 75                     # rho 5/11, eta (2*2 + 6*5 + 3*4)/121
    expected = {
        "oa": 0.75,                        # mean of the two maps' accuracies: (1 + 0.5) / 2
        "oa_global": 10 / 16,
        "iou_nc": iou_nc,
        "iou_c": iou_c,
        "miou": (iou_nc + iou_c) / 2,
        "kappa_nc": kappa_hat,
        "sek": kappa_hat * math.exp(iou_c - 1),
        "precision_scd": 5 / 9,            # diagonal 3 + 2 of 9 predicted changed
        "recall_scd": 5 / 9,               # ... of 9 truly changed
        "f_scd": 5 / 9,
        "kappa": 69 / 165,                 # p_o 10/16, p_e (7*7 + 6*5 + 3*4)/256
        "iou_no_change": 5 / 9,
        "iou_water": 3 / 8,
        "iou_low_vegetation": 2 / 5,
    }
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value), key
    assert scores["score"] == pytest.approx(0.3 * expected["miou"] + 0.7 * expected["sek"])


def _reference_style(hist: np.ndarray) -> tuple[float, float, float]:
    """F_scd, mIoU, SeK written the way the SECOND evaluation scripts do (2 x 2 change matrix, kappa of Q-hat)."""
    c2 = np.array([[hist[0, 0], hist[0].sum() - hist[0, 0]], [hist[:, 0].sum() - hist[0, 0], hist[1:, 1:].sum()]])
    iu = np.diag(c2) / (c2.sum(1) + c2.sum(0) - np.diag(c2))
    n0 = hist.astype(float).copy()
    n0[0, 0] = 0
    po = np.trace(n0) / n0.sum()
    pe = (n0.sum(1) @ n0.sum(0)) / n0.sum() ** 2
    sek = (po - pe) / (1 - pe) * math.exp(iu[1]) / math.e
    tp = np.trace(hist[1:, 1:])
    precision, recall = tp / (hist.sum() - hist[0].sum()), tp / (hist.sum() - hist[:, 0].sum())
    return 2 * precision * recall / (precision + recall), iu.mean(), sek


def test_semantic_scores_equal_the_evaluation_script_formulation_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    confusion = SemanticConfusion(6)
    for _ in range(3):
        truth = rng.integers(0, 7, (2, 32, 32))
        pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 7, truth.shape))
        confusion.update(torch.from_numpy(pred), torch.from_numpy(truth))
    f_scd, miou, sek = _reference_style(confusion.matrix)
    scores = confusion.compute()
    assert scores["f_scd"] == pytest.approx(f_scd)
    assert scores["miou"] == pytest.approx(miou)
    assert scores["sek"] == pytest.approx(sek)


def test_semantic_nothing_changed_anywhere_is_a_perfect_score() -> None:
    confusion = SemanticConfusion(6)
    confusion.update(np.zeros((2, 8, 8), np.int64), np.zeros((2, 8, 8), np.int64))
    scores = confusion.compute()
    for key in ("oa", "oa_global", "miou", "iou_c", "sek", "f_scd", "kappa", "kappa_nc"):
        assert scores[key] == 1.0, key


def test_semantic_change_predicted_where_nothing_changed_scores_zero() -> None:
    confusion = SemanticConfusion(3)
    truth = np.zeros((4, 4), np.int64)
    pred = truth.copy()
    pred[:2] = 2
    confusion.update(pred, truth)
    scores = confusion.compute()
    assert scores["iou_c"] == 0.0
    assert scores["precision_scd"] == 0.0 and scores["recall_scd"] == 0.0 and scores["f_scd"] == 0.0
    assert scores["sek"] == 0.0
    assert scores["iou_nc"] == pytest.approx(0.5)
    assert scores["oa"] == pytest.approx(0.5)


def test_semantic_change_missed_entirely_scores_zero() -> None:
    confusion = SemanticConfusion(3)
    truth = np.zeros((4, 4), np.int64)
    truth[0] = 1
    confusion.update(np.zeros_like(truth), truth)
    scores = confusion.compute()
    assert scores["iou_c"] == 0.0 and scores["f_scd"] == 0.0 and scores["sek"] == 0.0
    assert scores["recall_scd"] == 0.0 and scores["precision_scd"] == 0.0


def test_semantic_ignored_pixels_count_nowhere() -> None:
    confusion = SemanticConfusion(2)
    truth = np.array([[1, IGNORE_INDEX], [0, IGNORE_INDEX]])
    pred = np.array([[1, 2], [0, 0]])
    confusion.update(pred, truth)
    assert confusion.matrix.sum() == 2
    assert confusion.compute()["oa"] == 1.0
    confusion.update(np.zeros((2, 2), np.int64), np.full((2, 2), IGNORE_INDEX))  # fully invalid map: skipped
    assert confusion.image_count == 1


def test_semantic_merge_and_state_vector_equal_one_accumulator() -> None:
    rng = np.random.default_rng(1)
    maps = [(rng.integers(0, 4, (2, 8, 8)), rng.integers(0, 4, (2, 8, 8))) for _ in range(4)]
    whole, first, second = SemanticConfusion(3), SemanticConfusion(3), SemanticConfusion(3)
    for k, (pred, truth) in enumerate(maps):
        whole.update(pred, truth)
        (first if k % 2 else second).update(pred, truth)
    summed = SemanticConfusion(3)
    summed.load_state_vector(torch.from_numpy(first.state_vector() + second.state_vector()))
    merged = first.merge(second)
    for other in (merged, summed):
        assert np.array_equal(other.matrix, whole.matrix)
        assert other.compute() == pytest.approx(whole.compute())


def test_semantic_refuses_values_outside_the_classes_and_shape_mismatch() -> None:
    confusion = SemanticConfusion(2)
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        confusion.update(np.array([[3]]), np.array([[0]]))
    with pytest.raises(ValueError, match="shape"):
        confusion.update(np.zeros((2, 2), np.int64), np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match="integers"):
        confusion.update(np.array([[0.5]]), np.array([[0]]))


def _binary(tp: int, fp: int, fn: int, tn: int) -> BinaryConfusion:
    pred = np.array([1] * tp + [1] * fp + [0] * fn + [0] * tn)
    truth = np.array([1] * tp + [0] * fp + [1] * fn + [0] * tn)
    confusion = BinaryConfusion()
    confusion.update(torch.from_numpy(pred).view(1, 1, 1, -1).float(), truth.reshape(1, -1))
    return confusion


def test_binary_scores_match_hand_calculation() -> None:
    confusion = _binary(tp=6, fp=2, fn=3, tn=9)
    assert confusion.matrix.tolist() == [[9, 3], [2, 6]]
    scores = confusion.compute()
    assert scores["precision"] == pytest.approx(6 / 8)
    assert scores["recall"] == pytest.approx(6 / 9)
    assert scores["f1"] == pytest.approx(12 / 17)
    assert scores["iou"] == pytest.approx(6 / 11)
    assert scores["iou_unchanged"] == pytest.approx(9 / 14)
    assert scores["oa"] == pytest.approx(15 / 20)
    assert scores["kappa"] == pytest.approx(24 / 49)   # p_o 300/400, p_e (12*11 + 8*9)/400


def test_binary_reproduces_a_published_consistent_row() -> None:
    """CLDRNet's LEVIR-CD row: precision 90.17 and recall 91.40 give F1 90.78 and IoU 83.12."""
    tp, fn = 9140, 860
    fp = round(tp / 0.9017 - tp)
    scores = _binary(tp=tp, fp=fp, fn=fn, tn=100_000).compute()
    assert scores["f1"] == pytest.approx(0.9078, abs=5e-5)
    assert scores["iou"] == pytest.approx(0.8312, abs=5e-5)


def test_binary_edge_cases() -> None:
    assert _binary(0, 0, 0, 10).compute() == pytest.approx(
        {"precision": 1, "recall": 1, "f1": 1, "iou": 1, "iou_unchanged": 1, "miou": 1, "oa": 1, "kappa": 1})
    false_alarm = _binary(0, 3, 0, 7).compute()
    assert (false_alarm["precision"], false_alarm["recall"], false_alarm["f1"], false_alarm["iou"]) == (0, 0, 0, 0)
    missed = _binary(0, 0, 4, 6).compute()
    assert (missed["precision"], missed["recall"], missed["f1"], missed["iou"]) == (0, 0, 0, 0)
    assert BinaryConfusion().compute()["f1"] == 1.0


def test_binary_merge_state_vector_and_bad_values() -> None:
    first, second = _binary(1, 2, 3, 4), _binary(5, 6, 7, 8)
    summed = BinaryConfusion()
    summed.load_state_vector(first.state_vector() + second.state_vector())
    assert first.merge(second).matrix.tolist() == summed.matrix.tolist() == [[12, 10], [8, 6]]
    with pytest.raises(ValueError, match="0/1"):
        BinaryConfusion().update(np.array([[255]]), np.array([[1]]))
    confusion = BinaryConfusion()
    confusion.update(np.array([[1, 1]]), np.array([[1, IGNORE_INDEX]]))
    assert confusion.matrix.sum() == 1


def test_cohen_kappa_of_chance_agreement_is_zero() -> None:
    assert cohen_kappa(np.array([[25, 25], [25, 25]])) == pytest.approx(0.0)

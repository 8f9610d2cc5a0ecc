"""GLUE metrics against hand-computed values and scipy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from sparsekit.data import (
    TASKS,
    accuracy,
    compute_metrics,
    f1_binary,
    matthews_corrcoef,
    pearson,
    spearman,
)


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    # Degenerate inputs must not leak RuntimeWarning / ConstantInputWarning to callers.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# Binary hand example: tp=2 (idx 0,4), fp=1 (idx 1), fn=1 (idx 3), tn=1 (idx 2).
PRED = np.array([1, 1, 0, 0, 1])
GOLD = np.array([1, 0, 0, 1, 1])


def test_accuracy_hand() -> None:
    assert accuracy(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])) == 0.75
    assert accuracy(PRED, GOLD) == pytest.approx(3 / 5)


def test_f1_hand() -> None:
    # precision 2/3, recall 2/3 -> F1 2/3.
    assert f1_binary(PRED, GOLD) == pytest.approx(2 / 3)
    # precision 1/1, recall 1/3 -> F1 = 2 * 1 * (1/3) / (4/3) = 0.5.
    assert f1_binary(np.array([1, 0, 0, 0]), np.array([1, 1, 1, 0])) == pytest.approx(0.5)
    # The positive class can be chosen.
    assert f1_binary(PRED, GOLD, positive=0) == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))


def test_f1_degenerate() -> None:
    assert f1_binary(np.zeros(4, int), np.zeros(4, int)) == 0.0  # no positives anywhere
    assert f1_binary(np.zeros(4, int), np.array([0, 1, 1, 0])) == 0.0  # never predicts 1
    assert f1_binary(np.array([1, 1, 0, 0]), np.zeros(4, int)) == 0.0  # no true positives


def test_mcc_binary_hand() -> None:
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2) = 1/6.
    assert matthews_corrcoef(PRED, GOLD) == pytest.approx(1 / 6)
    assert matthews_corrcoef(GOLD, GOLD) == pytest.approx(1.0)
    assert matthews_corrcoef(1 - GOLD, GOLD) == pytest.approx(-1.0)


def test_mcc_binary_matches_textbook_formula_on_random_data() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pred = rng.integers(0, 2, size=200)
        gold = rng.integers(0, 2, size=200)
        tp = np.sum((pred == 1) & (gold == 1))
        tn = np.sum((pred == 0) & (gold == 0))
        fp = np.sum((pred == 1) & (gold == 0))
        fn = np.sum((pred == 0) & (gold == 1))
        expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        assert matthews_corrcoef(pred, gold) == pytest.approx(expected)


def test_mcc_multiclass_hand() -> None:
    gold = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 2, 2, 2])
    # c = 5 correct, s = 6, t = [2, 2, 2], p = [2, 1, 3]:
    # (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (30 - 12) / sqrt(22 * 24).
    assert matthews_corrcoef(pred, gold) == pytest.approx(18 / math.sqrt(528))
    # Class ids need not be contiguous and may appear only in predictions.
    assert matthews_corrcoef(pred + 10, gold + 10) == pytest.approx(18 / math.sqrt(528))
    # Classes {0, 1, 2, 3}: c = 2, s = 3, t = [1, 1, 1, 0], p = [1, 1, 0, 1], t.p = 2.
    assert matthews_corrcoef(np.array([0, 1, 3]), np.array([0, 1, 2])) == pytest.approx(
        (2 * 3 - 2) / math.sqrt((9 - 3) * (9 - 3))
    )


def test_mcc_degenerate() -> None:
    gold = np.array([0, 1, 1, 0, 1])
    assert matthews_corrcoef(np.ones(5, int), gold) == 0.0  # constant predictor
    assert matthews_corrcoef(gold, np.ones(5, int)) == 0.0  # constant labels
    assert matthews_corrcoef(np.zeros(3, int), np.zeros(3, int)) == 0.0
    assert isinstance(matthews_corrcoef(gold, gold), float)


def test_pearson_spearman_hand() -> None:
    # dx = [-1, 0, 1], dy = [-7/3, -1/3, 8/3]: r = 5 / sqrt(2 * 114/9).
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0])) == pytest.approx(
        5 / math.sqrt(2 * 114 / 9)
    )
    # With ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5).
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])) == (
        pytest.approx(4.5 / math.sqrt(22.5))
    )
    # Spearman only sees order: a monotone transform gives 1.
    x = np.array([0.1, 0.5, 0.2, 3.0])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert pearson(x, -2 * x + 1) == pytest.approx(-1.0)


def test_correlations_match_scipy_on_random_data() -> None:
    rng = np.random.default_rng(1)
    for n in (5, 50, 1500):
        labels = rng.uniform(0, 5, size=n)
        preds = labels + rng.normal(0, 1.5, size=n)
        assert pearson(preds, labels) == pytest.approx(stats.pearsonr(preds, labels)[0])
        assert spearman(preds, labels) == pytest.approx(stats.spearmanr(preds, labels)[0])
        # Rounded scores have many ties.
        rounded = np.round(labels)
        assert spearman(preds, rounded) == pytest.approx(stats.spearmanr(preds, rounded)[0])


def test_correlation_degenerate() -> None:
    labels = np.array([0.0, 1.0, 2.5, 4.0])
    assert pearson(np.full(4, 2.0), labels) == 0.0
    assert spearman(np.full(4, 2.0), labels) == 0.0
    assert pearson(labels, np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match="finite"):
        pearson(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="at least 2"):
        spearman(np.array([1.0]), np.array([2.0]))


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        accuracy(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="zero examples"):
        f1_binary(np.array([], int), np.array([], int))
    with pytest.raises(ValueError, match="1-D"):
        matthews_corrcoef(np.zeros((2, 2), int), np.zeros(2, int))


def test_compute_metrics_classification_from_logits() -> None:
    # Logits whose argmax is PRED.
    logits = np.stack([1 - PRED, PRED], axis=1).astype(np.float32) * 2.0 - 1.0
    out = compute_metrics("MRPC", logits, GOLD)
    assert list(out) == ["accuracy", "f1"]
    assert out == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})
    assert all(type(v) is float for v in out.values())
    assert compute_metrics("sst-2", logits, GOLD) == pytest.approx({"accuracy": 0.6})
    assert compute_metrics("cola", logits, GOLD) == pytest.approx({"matthews": 1 / 6})
    assert list(compute_metrics("qqp", logits, GOLD)) == ["accuracy", "f1"]
    # Integer class ids, and integral float labels (e.g. from a float tensor), are accepted.
    assert compute_metrics(TASKS["rte"], PRED, GOLD.astype(np.float32)) == {"accuracy": 0.6}


def test_compute_metrics_multiclass() -> None:
    gold = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 0, 1, 2, 2, 2]]
    assert compute_metrics("mnli", logits, gold) == pytest.approx({"accuracy": 5 / 6})


def test_compute_metrics_regression() -> None:
    rng = np.random.default_rng(2)
    labels = rng.uniform(0, 5, size=100).astype(np.float32)
    preds = (labels + rng.normal(0, 1, size=100)).astype(np.float32)
    out = compute_metrics("STS-B", preds[:, None], labels)
    assert list(out) == ["pearson", "spearman"]
    assert out["pearson"] == pytest.approx(stats.pearsonr(preds, labels)[0], rel=1e-5)
    assert out["spearman"] == pytest.approx(stats.spearmanr(preds, labels)[0], rel=1e-5)
    assert compute_metrics("stsb", preds, labels) == out
    assert all(type(v) is float for v in out.values())


def test_compute_metrics_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match=r"expected \[N, 3\]"):
        compute_metrics("mnli", np.zeros((4, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="classification task"):
        compute_metrics("sst2", np.array([0.2, 0.9]), np.array([0, 1]))
    with pytest.raises(ValueError, match="regression task"):
        compute_metrics("stsb", np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="integer class ids"):
        compute_metrics("sst2", np.zeros((2, 2)), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="Unknown GLUE task"):
        compute_metrics("squad", np.zeros((2, 2)), np.array([0, 1]))

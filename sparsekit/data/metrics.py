"""GLUE metrics in numpy (plus scipy for the correlations), computed locally, nothing fetched.

Degenerate inputs give 0.0 instead of NaN and a warning: MCC or a correlation with a constant
predictor, F1 with no predicted and no true positives. A constant predictor carries no
information, and 0.0 keeps "higher is better" comparisons between checkpoints well defined.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats

from sparsekit.data.glue import TaskSpec, get_task


def _check_pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"expected 1-D predictions and labels, got shapes {predictions.shape} and "
            f"{labels.shape}."
        )
    if predictions.shape[0] != labels.shape[0]:
        raise ValueError(
            f"predictions and labels differ in length: {predictions.shape[0]} vs "
            f"{labels.shape[0]}."
        )
    if predictions.shape[0] == 0:
        raise ValueError("cannot compute a metric on zero examples.")
    return predictions, labels


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of positions where predicted class == label. Both: int arrays of shape [N]."""
    predictions, labels = _check_pair(predictions, labels)
    return float(np.mean(predictions == labels))


def f1_binary(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 score of class `positive` (default 1). Both: int arrays of shape [N].

    0.0 when there are no true positives (including no positives at all)."""
    predictions, labels = _check_pair(predictions, labels)
    pred_pos = predictions == positive
    true_pos = labels == positive
    tp = int(np.sum(pred_pos & true_pos))
    fp = int(np.sum(pred_pos & ~true_pos))
    fn = int(np.sum(~pred_pos & true_pos))
    if tp == 0:
        return 0.0
    return float(2 * tp / (2 * tp + fp + fn))


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient for binary or multi-class labels (Gorodkin's R_K).

    Both: int arrays of shape [N]. 0.0 when predictions or labels are constant."""
    predictions, labels = _check_pair(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    n = labels.shape[0]
    k = classes.shape[0]
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (encoded[:n], encoded[n:]), 1.0)
    t_k = confusion.sum(axis=1)  # times each class truly occurred
    p_k = confusion.sum(axis=0)  # times each class was predicted
    correct = np.trace(confusion)
    s = float(n)
    cov_ytyp = correct * s - float(np.dot(t_k, p_k))
    cov_ypyp = s * s - float(np.dot(p_k, p_k))
    cov_ytyt = s * s - float(np.dot(t_k, t_k))
    denominator = cov_ypyp * cov_ytyt
    if denominator == 0.0:
        return 0.0
    return float(cov_ytyp / np.sqrt(denominator))


def _check_correlation_inputs(
    predictions: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    predictions, labels = _check_pair(predictions, labels)
    predictions = predictions.astype(np.float64)
    labels = labels.astype(np.float64)
    if not (np.all(np.isfinite(predictions)) and np.all(np.isfinite(labels))):
        raise ValueError("predictions and labels must be finite (found NaN or inf).")
    if predictions.shape[0] < 2:
        raise ValueError("a correlation needs at least 2 examples.")
    if np.all(predictions == predictions[0]) or np.all(labels == labels[0]):
        return None
    return predictions, labels


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation. Both: float arrays of shape [N], N >= 2. 0.0 if either is constant."""
    checked = _check_correlation_inputs(predictions, labels)
    if checked is None:
        return 0.0
    with warnings.catch_warnings():
        # Near-constant inputs can still trip scipy's precision warning; the value is usable.
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        return float(stats.pearsonr(*checked)[0])


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation. Both: float arrays of shape [N], N >= 2. 0.0 if either is
    constant."""
    checked = _check_correlation_inputs(predictions, labels)
    if checked is None:
        return 0.0
    return float(stats.spearmanr(*checked)[0])


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def _class_ids(predictions: np.ndarray, spec: TaskSpec) -> np.ndarray:
    if predictions.ndim == 2:
        if predictions.shape[1] != spec.num_labels:
            raise ValueError(
                f"{spec.display_name} has {spec.num_labels} classes but the logits have shape "
                f"{predictions.shape}; expected [N, {spec.num_labels}]."
            )
        return np.argmax(predictions, axis=-1)
    if predictions.ndim == 1 and np.issubdtype(predictions.dtype, np.integer):
        return predictions
    raise ValueError(
        f"{spec.display_name} is a classification task: pass logits of shape "
        f"[N, {spec.num_labels}] or integer class ids of shape [N]; got an array of shape "
        f"{predictions.shape} and dtype {predictions.dtype}."
    )


def _integer_labels(labels: np.ndarray, spec: TaskSpec) -> np.ndarray:
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [N], got {labels.shape}.")
    if np.issubdtype(labels.dtype, np.integer):
        return labels
    if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    raise ValueError(
        f"{spec.display_name} labels must be integer class ids; got dtype {labels.dtype}."
    )


def compute_metrics(
    task: str | TaskSpec, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Score predictions with the task's GLUE metrics.

    predictions: logits `[N, C]` (argmax is taken) or integer class ids `[N]` for classification;
    float scores `[N]` or `[N, 1]` for regression (STS-B). labels: `[N]` class ids or scores.
    Returns `{metric_name: value}` as plain floats, in the order of `spec.metrics`.
    """
    spec = get_task(task)
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if spec.is_regression:
        if predictions.ndim == 2 and predictions.shape[1] == 1:
            predictions = predictions[:, 0]
        if predictions.ndim != 1:
            raise ValueError(
                f"{spec.display_name} is a regression task: pass scores of shape [N] or [N, 1]; "
                f"got {predictions.shape}."
            )
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
    else:
        predictions = _class_ids(predictions, spec)
        labels = _integer_labels(labels, spec)
    return {name: METRICS[name](predictions, labels) for name in spec.metrics}

"""Classification metrics of the warm-up benches (pure numpy): ``METRICS`` maps each task metric's name
to its function."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int | None = None) -> np.ndarray:
    """(K, K) counts, rows = true label, columns = predicted label."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {y_true.shape} and {y_pred.shape}")
    if y_true.size and min(y_true.min(), y_pred.min()) < 0:
        raise ValueError("label ids must be non-negative")
    k = num_labels if num_labels is not None else int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _f1_per_class(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)  # 2TP + FP + FN
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    cm = confusion_matrix(y_true, y_pred)
    return float(np.trace(cm) / max(cm.sum(), 1))


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the pooled TP/FP/FN over all labels."""
    cm = confusion_matrix(y_true, y_pred)
    tp = np.trace(cm)
    denom = 2 * tp + (cm.sum(0) - np.diag(cm)).sum() + (cm.sum(1) - np.diag(cm)).sum()
    return float(2 * tp / denom) if denom else 0.0


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the labels that occur in y_true or y_pred (scikit-learn's convention)."""
    cm = confusion_matrix(y_true, y_pred)
    present = (cm.sum(0) + cm.sum(1)) > 0
    return float(_f1_per_class(cm)[present].mean()) if present.any() else 0.0


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of label 1 (the positive class of MRPC)."""
    cm = confusion_matrix(y_true, y_pred, max(2, int(max(np.max(y_true, initial=0), np.max(y_pred, initial=0)) + 1)))
    return float(_f1_per_class(cm)[1])


def matthews_corrcoef(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews' correlation coefficient, multiclass (Gorodkin's R_K); 0 when undefined."""
    cm = confusion_matrix(y_true, y_pred).astype(np.float64)
    t, p = cm.sum(1), cm.sum(0)
    n, c = cm.sum(), np.trace(cm)
    denom = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float((c * n - t @ p) / denom) if denom > 0 else 0.0


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "micro_f1": micro_f1,
    "macro_f1": macro_f1,
    "f1": binary_f1,
    "mcc": matthews_corrcoef,
    "accuracy": accuracy,
}


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    return METRICS[metric](y_true, y_pred)

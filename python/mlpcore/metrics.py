"""Metrics reported next to the loss: accuracy for classification losses, mean absolute error
and R² for regression losses."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

__all__ = ["METRICS", "check_metrics", "regression_metrics", "accuracy"]

METRICS = ("accuracy", "mae", "r2")


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    """Mean absolute error and the coefficient of determination R² (averaged over outputs,
    scikit-learn's ``uniform_average``; an output with constant targets scores 1 when fitted
    exactly, else 0), computed in float64."""
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    t = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    err = p - t
    ss_res = np.sum(err * err, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                      np.where(ss_res == 0, 1.0, 0.0))
    return {"mae": float(np.mean(np.abs(err))), "r2": float(np.mean(r2))}


def predictions_per_row(loss, y: np.ndarray) -> int:
    """How many predictions a target row holds for accuracy: 1 for class labels and for
    cross_entropy's one-hot/probability rows, else one per output (multi-label)."""
    return 1 if (y.ndim == 1 or loss.name == "cross_entropy") else y.shape[1]


def accuracy(correct: int, rows: int, loss, y: np.ndarray) -> float:
    """The fraction of correct predictions, from the native count of correct ones."""
    return correct / (rows * predictions_per_row(loss, y))


def check_metrics(metrics, loss) -> List[str]:
    """compile's ``metrics``: a list of names from METRICS that apply to ``loss`` (a
    :class:`mlpcore.losses.LossInfo`)."""
    if metrics is None:
        return []
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
        raise TypeError(f"compile: metrics must be a list of names, got {type(metrics).__name__}")
    out: List[str] = []
    for name in metrics:
        if not isinstance(name, str) or name.lower() not in METRICS:
            raise ValueError(f"compile: unknown metric {name!r} in metrics; valid names: "
                             f"{', '.join(METRICS)}")
        name = name.lower()
        if (name == "accuracy") != loss.classification:
            kind = "classification" if loss.classification else "regression"
            raise ValueError(f"compile: metric {name!r} does not apply to the {kind} loss "
                             f"{loss.name!r} (accuracy is for classification losses, mae and r2 "
                             "for regression losses)")
        if name not in out:
            out.append(name)
    return out

"""Normalise user arrays once at the boundary: dtype, shape, order, finiteness, label range.

Errors name the calling function and the argument: TypeError for types/dtypes, ValueError for
shapes and values.
"""
from __future__ import annotations

import numpy as np

from .losses import LossInfo


def _as_numeric_array(value, func: str, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise ValueError(f"{func}: {name} could not be converted to an array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{func}: {name} must hold real numbers (bool, int or float), "
                        f"got dtype {arr.dtype}")
    return arr


def _first_non_finite(arr: np.ndarray) -> str:
    bad = np.argwhere(~np.isfinite(arr))[0]
    return ", ".join(str(int(i)) for i in bad)


def as_inputs(x, dtype: np.dtype, n_features: int, func: str, name: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous (n, n_features) array of ``dtype``; copies only when needed."""
    arr = _as_numeric_array(x, func, name)
    if arr.ndim != 2:
        hint = " (use x.reshape(-1, 1) for a single feature)" if arr.ndim == 1 else ""
        raise ValueError(f"{func}: {name} must be 2-D (n_samples, {n_features}), "
                         f"got shape {arr.shape}{hint}")
    if arr.shape[1] != n_features:
        raise ValueError(f"{func}: {name} must have {n_features} features (columns) as the "
                         f"model's first layer expects, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{func}: {name} is empty (0 samples)")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{func}: {name} contains NaN or Inf (first at index "
                         f"[{_first_non_finite(arr)}])")
    return arr


def as_targets(y, loss: LossInfo, n_rows: int, n_outputs: int, dtype: np.dtype, func: str,
               name: str = "y") -> np.ndarray:
    """Targets in the form the native loss reads: int64 labels (n,) for cross_entropy with class
    labels, otherwise a C-contiguous (n, n_outputs) array of ``dtype``."""
    arr = _as_numeric_array(y, func, name)
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(f"{func}: {name} must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{func}: {name} has {arr.shape[0]} rows but x has {n_rows}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{func}: {name} contains NaN or Inf (first at index "
                         f"[{_first_non_finite(arr)}])")
    if loss.custom is not None:  # a custom loss receives the targets as given, in float
        return np.ascontiguousarray(arr, dtype=dtype)
    if loss.takes_labels and arr.ndim == 1:
        return _as_labels(arr, n_outputs, func, name)
    if arr.ndim == 1:
        if n_outputs != 1:
            raise ValueError(f"{func}: {name} must have shape ({n_rows}, {n_outputs}) for loss "
                             f"{loss.name!r} (the model has {n_outputs} outputs), got {arr.shape}")
        arr = arr.reshape(-1, 1)
    if arr.shape[1] != n_outputs:
        raise ValueError(f"{func}: {name} must have shape ({n_rows}, {n_outputs}) to match the "
                         f"model's {n_outputs} outputs, got {arr.shape}")
    if loss.targets_in_unit_range and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{func}: {name} must lie in [0, 1] for loss {loss.name!r}, got values "
                         f"in [{arr.min()}, {arr.max()}]")
    if loss.takes_labels and ((arr < 0).any()):
        raise ValueError(f"{func}: class probabilities in {name} must be non-negative")
    return np.ascontiguousarray(arr, dtype=dtype)


def _as_labels(arr: np.ndarray, n_classes: int, func: str, name: str) -> np.ndarray:
    if arr.dtype.kind == "f" and not np.all(arr == np.floor(arr)):
        raise ValueError(f"{func}: class labels in {name} must be whole numbers, "
                         f"got e.g. {arr[arr != np.floor(arr)][0]}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    low, high = arr.min(), arr.max()
    if low < 0 or high >= n_classes:
        bad = (low if low < 0 else high).item()
        raise ValueError(f"{func}: {name} holds class label {bad} outside the valid range "
                         f"[0, {n_classes - 1}] (the model has {n_classes} outputs)")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_positive_int(value, func: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{func}: {name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{func}: {name} must be a positive int, got {value}")
    return int(value)


def as_sample_weight(w, n_rows: int, dtype: np.dtype, func: str,
                     name: str = "sample_weight"):
    """Per-sample weights as a C-contiguous (n,) array of ``dtype``, or None."""
    if w is None:
        return None
    arr = _as_numeric_array(w, func, name)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"{func}: {name} must have shape ({n_rows},) (one weight per sample), "
                         f"got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{func}: {name} must be finite and non-negative")
    return np.ascontiguousarray(arr, dtype=dtype)

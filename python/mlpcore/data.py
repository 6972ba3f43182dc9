"""Data sets for the command line: scikit-learn's digits, or the user's .npz / .csv file."""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["Dataset", "load_digits", "load_file", "train_test_split", "standardize"]


@dataclass
class Dataset:
    x: np.ndarray               # (n, features) float64
    y: np.ndarray               # (n,) class indices (int64) or (n,)/(n, k) regression values
    name: str
    classes: Optional[np.ndarray] = None  # original class values for classification

    @property
    def is_classification(self) -> bool:
        return self.classes is not None


def load_digits() -> Dataset:
    """The 8x8 handwritten digits shipped with scikit-learn (1797 images, 10 classes)."""
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    return Dataset(d.data.astype(np.float64), d.target.astype(np.int64), "digits",
                   np.arange(10))


def _encode_target(raw: np.ndarray, task: str) -> tuple:
    """Class indices and class values for classification, or float values for regression."""
    numeric = raw.dtype.kind in "biuf"
    if task == "auto":
        few_whole = numeric and np.all(np.mod(raw, 1) == 0) and len(np.unique(raw)) <= 100
        task = "classification" if (not numeric or few_whole) else "regression"
    if task == "classification":
        classes, y = np.unique(raw, return_inverse=True)
        if numeric:
            _check_class_target(raw, len(classes))
        return y.astype(np.int64), classes
    if not numeric:
        raise ValueError("the target column holds text, so it can only be used for classification")
    return raw.astype(np.float64), None


def _check_class_target(raw: np.ndarray, n_classes: int) -> None:
    """A numeric target asked to be classes must look like classes: whole numbers, with on
    average several samples per class (a regression target of whole numbers does not)."""
    if not np.all(np.mod(raw, 1) == 0):
        raise ValueError("--task classification: the target holds non-integer values (e.g. "
                         f"{raw[np.mod(raw, 1) != 0][0]!r}), so it is a regression target; use "
                         "--task regression")
    if n_classes * 5 > len(raw):
        raise ValueError(f"--task classification: the target has {n_classes} distinct values "
                         f"for {len(raw)} samples (fewer than 5 samples per class), which looks "
                         "like a regression target; use --task regression")


def load_file(path, target: Optional[str] = None, task: str = "auto") -> Dataset:
    """Features and target from a .npz (arrays ``x``/``X`` and ``y``, or ``target`` naming the
    target array) or a .csv with a header row (``target`` names the target column)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            x, raw = _read_npz(f, path.name, target)
    elif suffix == ".csv":
        if not target:
            raise ValueError("a .csv file needs --target COLUMN naming the target column")
        x, raw = _read_csv(path, target)
    else:
        raise ValueError(f"unsupported data file {path.name!r}: use .npz or .csv")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{path.name}: features must be numeric, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2 or len(raw) != len(x):
        raise ValueError(f"{path.name}: features {x.shape} and target {raw.shape} do not match")
    y, classes = _encode_target(raw, task)
    return Dataset(x.astype(np.float64), y, path.stem, classes)


def _read_npz(f, name: str, target: Optional[str]):
    """Features and target of an open .npz: the arrays ``x``/``X``/``data`` and ``y`` (or the
    one ``target`` names); with ``target`` and no ``x`` array, the other arrays are the
    features (one 2-D array, or 1-D arrays as columns, as ``np.savez(path, **columns)``)."""
    keys = list(f.keys())
    if target is not None and target not in f:
        raise ValueError(f"{name}: --target {target!r} is not an array of the file; arrays: "
                         f"{keys}")
    y_key = target or next((k for k in ("y", "Y", "target") if k in f), None)
    x_key = next((k for k in ("x", "X", "data") if k in f and k != y_key), None)
    if y_key is None:
        raise ValueError(f"{name}: expected arrays 'x' and 'y' (or --target NAME naming the "
                         f"target array), found {keys}")
    if x_key is not None:
        return np.asarray(f[x_key]), np.asarray(f[y_key])
    others = [k for k in keys if k != y_key]
    if target is None or not others:
        raise ValueError(f"{name}: expected arrays 'x' and 'y' (or --target NAME naming the "
                         f"target array), found {keys}")
    arrays = [np.asarray(f[k]) for k in others]
    if len(arrays) == 1:
        return arrays[0], np.asarray(f[y_key])
    if any(a.ndim != 1 for a in arrays):
        shapes = [(k, a.shape) for k, a in zip(others, arrays)]
        raise ValueError(f"{name}: the features must be one array named 'x' or 1-D arrays "
                         f"(one per column); found {shapes}")
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(f"{name}: the feature columns {others} have different lengths")
    for k, a in zip(others, arrays):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name}: feature column {k!r} must be numeric, got dtype {a.dtype}")
    return np.stack(arrays, axis=1), np.asarray(f[y_key])


def _read_csv(path: Path, target: str):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path.name}: expected a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise ValueError(f"{path.name}: no column named {target!r}; columns: {header}")
    t = header.index(target)
    feats, labels = [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{path.name}: line {line_no} has {len(row)} fields, "
                             f"expected {len(header)}")
        values = []
        for j, v in enumerate(row):
            if j == t:
                continue
            try:
                values.append(float(v))
            except ValueError:
                raise ValueError(f"{path.name}: line {line_no}, column {header[j]!r}: "
                                 f"non-numeric feature value {v!r}") from None
        feats.append(values)
        labels.append(row[t].strip())
    x = np.array(feats, dtype=np.float64).reshape(len(feats), len(header) - 1)
    if t != 0 and x.shape[1] > 1 and _is_index_column(header[0], x[:, 0]):
        warnings.warn(f"{path.name}: the first column (unnamed, holding row numbers) looks like "
                      "a pandas index written by to_csv; it is dropped, not used as a feature "
                      "(write with index=False to avoid this)", UserWarning, stacklevel=3)
        x = x[:, 1:]
    raw = np.array(labels)
    try:
        raw = raw.astype(np.float64)
    except ValueError:
        pass  # text labels: classification
    return x, raw


def _is_index_column(name: str, values: np.ndarray) -> bool:
    """pandas' to_csv writes the index first, under an empty name, as distinct integers."""
    return (name in ("", "Unnamed: 0") and len(values) > 1
            and np.all(np.mod(values, 1) == 0) and len(np.unique(values)) == len(values))


def train_test_split(ds: Dataset, test_size: float, seed: Optional[int]):
    """Shuffled split (stratified for classification) into train and test arrays."""
    rng = np.random.default_rng(seed)
    n = len(ds.x)
    if ds.is_classification:
        test_idx = []
        for c in np.unique(ds.y):
            members = rng.permutation(np.flatnonzero(ds.y == c))
            test_idx.append(members[:int(round(len(members) * test_size))])
        test = np.sort(np.concatenate(test_idx))
    else:
        test = np.sort(rng.permutation(n)[:int(round(n * test_size))])
    train = np.setdiff1d(np.arange(n), test)
    train = rng.permutation(train)
    return ds.x[train], ds.y[train], ds.x[test], ds.y[test]


def standardize(x_train: np.ndarray, *others: np.ndarray):
    """Scale features to zero mean and unit variance using the training set's statistics."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return tuple((a - mean) / std for a in (x_train, *others))

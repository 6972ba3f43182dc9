"""Data sets for the command line: scikit-learn's digits, or the user's .npz / .csv file."""
from __future__ import annotations

import csv
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
        return y.astype(np.int64), classes
    if not numeric:
        raise ValueError("the target column holds text, so it can only be used for classification")
    return raw.astype(np.float64), None


def load_file(path, target: Optional[str] = None, task: str = "auto") -> Dataset:
    """Features and target from a .npz (arrays ``x``/``X`` and ``y``, or ``target`` naming the
    target array) or a .csv with a header row (``target`` names the target column)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            x_key = next((k for k in ("x", "X", "data") if k in f), None)
            y_key = target or next((k for k in ("y", "Y", "target") if k in f), None)
            if x_key is None or y_key not in f:
                raise ValueError(f"{path.name}: expected arrays 'x' and 'y' (or --target NAME), "
                                 f"found {keys}")
            x, raw = np.asarray(f[x_key]), np.asarray(f[y_key])
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
        try:
            feats.append([float(v) for j, v in enumerate(row) if j != t])
        except ValueError:
            raise ValueError(f"{path.name}: line {line_no} has a non-numeric feature") from None
        labels.append(row[t].strip())
    raw = np.array(labels)
    try:
        raw = raw.astype(np.float64)
    except ValueError:
        pass  # text labels: classification
    return np.array(feats, dtype=np.float64), raw


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

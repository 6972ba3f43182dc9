"""The fit loop: epochs of shuffled batches, validation, progress bar and history."""
from __future__ import annotations

import math
import sys
from typing import Dict, List, Optional

import numpy as np

from ._validation import as_inputs, as_targets, check_positive_int

__all__ = ["History", "fit"]


class History:
    """Per-epoch records, shaped like Keras' History: ``history.history["loss"]`` is a list."""

    def __init__(self) -> None:
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def _record(self, epoch: int, logs: Dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def _check_validation(model, validation_data):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError("fit: validation_data must be a tuple (x_val, y_val)")
    xv = as_inputs(validation_data[0], model.dtype, model.in_features, "fit", "validation_data[0]")
    yv = as_targets(validation_data[1], model.loss, xv.shape[0], model.out_features, model.dtype,
                    "fit", "validation_data[1]")
    return xv, yv


def _progress(total: int, epoch: int, epochs: int, verbose: int):
    if verbose != 1:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=True,
                file=sys.stderr, dynamic_ncols=True)


def fit(model, x, y, *, epochs: int, batch_size: int, shuffle: bool, validation_data,
        verbose: int) -> History:
    from .model import NonFiniteLossError

    model._require_compiled("fit")
    epochs = check_positive_int(epochs, "fit", "epochs")
    batch_size = check_positive_int(batch_size, "fit", "batch_size")
    if verbose not in (0, 1, 2):
        raise ValueError(f"fit: verbose must be 0, 1 or 2, got {verbose!r}")
    x = as_inputs(x, model.dtype, model.in_features, "fit")
    y = as_targets(y, model.loss, x.shape[0], model.out_features, model.dtype, "fit")
    validation = _check_validation(model, validation_data)
    n = x.shape[0]
    per_sample = 1 if (y.ndim == 1 or model.loss.name == "cross_entropy") else y.shape[1]
    n_batches = math.ceil(n / batch_size)
    history = History()
    net = model._net
    for epoch in range(epochs):
        order = model.rng.permutation(n) if shuffle else None
        bar = _progress(n_batches, epoch, epochs, verbose)
        loss_sum = 0.0
        correct = 0
        try:
            for step in range(n_batches):
                lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
                if order is None:
                    xb, yb = x[lo:hi], y[lo:hi]
                else:
                    idx = order[lo:hi]
                    xb, yb = x[idx], y[idx]
                model._sync_optimizer()
                loss, batch_correct, finite = net.train_step(xb, yb)
                if not finite:
                    raise NonFiniteLossError(
                        f"fit: the loss or a gradient became non-finite (loss={loss}) at epoch "
                        f"{epoch + 1}, step {step + 1}; training stopped and the weights hold the "
                        "last finite step")
                loss_sum += loss * (hi - lo)
                correct += batch_correct
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / hi:.4f}", refresh=False)
            logs = {"loss": loss_sum / n}
            if model.loss.classification:
                logs["accuracy"] = correct / (n * per_sample)
            if validation is not None:
                val = model.evaluate(*validation)
                logs.update({f"val_{k}": v for k, v in val.items()})
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
        finally:
            if bar is not None:
                bar.close()
        if verbose == 2:
            text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {text}", file=sys.stderr)
        history._record(epoch, logs)
    return history

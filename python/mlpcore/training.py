"""The fit loop: epochs of shuffled batches, validation, progress bar and history."""
from __future__ import annotations

import math
import sys
from typing import Dict, List, Optional

import numpy as np

from . import _core
from ._validation import as_inputs, as_targets, check_positive_int

__all__ = ["History", "fit"]

_PROGRESS_UPDATES = 20  # native calls per epoch when a progress bar is shown


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


def fit(model, x, y, *, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
        validation_data=None, verbose: int = 1) -> History:
    """Train ``model`` for ``epochs`` passes over (x, y) in batches of ``batch_size``.

    Each epoch runs natively (one call, or a few when a progress bar is shown): batches are
    drawn in a seeded order (``shuffle``), each is a full train_step. ``verbose``: 0 silent,
    1 progress bar, 2 one line per epoch. Stops with NonFiniteLossError, naming the epoch and
    step, if a loss or gradient becomes NaN/Inf (the weights keep the last finite step).
    """
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
    # With a progress bar, control comes back to Python a few times per epoch; otherwise the
    # whole epoch runs in one native call.
    chunk = max(1, n_batches // _PROGRESS_UPDATES) if verbose == 1 else n_batches
    history = History()
    net = model._net
    for epoch in range(epochs):
        order = _core.shuffled_indices(int(model.rng.integers(2**63)), n) if shuffle else None
        bar = _progress(n_batches, epoch, epochs, verbose)
        loss_sum, correct, done = 0.0, 0, 0
        try:
            while done < n_batches:
                model._sync_optimizer()
                part_loss, part_correct, part_done, finite, bad_loss = net.train_batches(
                    x, y, order, batch_size, done, min(chunk, n_batches - done))
                loss_sum += part_loss
                correct += part_correct
                done += part_done
                if not finite:
                    raise NonFiniteLossError(
                        f"fit: the loss or a gradient became non-finite (loss={bad_loss}) at "
                        f"epoch {epoch + 1}, step {done + 1}; training stopped and the weights "
                        "hold the last finite step")
                if bar is not None:
                    bar.update(part_done)
                    bar.set_postfix(loss=f"{loss_sum / min(n, done * batch_size):.4f}",
                                    refresh=False)
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

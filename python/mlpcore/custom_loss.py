"""Training steps with a custom (Python) loss: the forward and backward passes stay native; the
loss value and its gradient with respect to the network output come from Python per batch.

The functions take the model's native network ``net``, the loss (a
:class:`mlpcore.losses.CustomLoss`) and, to train, ``update``: the model's one update call
(statistics, clipping, optimizer rule; False when it found a non-finite gradient)."""
from __future__ import annotations

import math

import numpy as np


def _own(a: np.ndarray) -> np.ndarray:
    """A copy for the loss to keep or change in place: y may be the caller's own array and the
    output is the network's buffer that the backward pass reads. (Read-only views would refuse
    in-place arithmetic that is harmless on a copy, and torch.from_numpy warns about them.)"""
    return np.array(a, copy=True)


def custom_step(net, loss, x, y, *, update=None, want_dx: bool = False):
    """One batch: returns (loss including penalties, finite, dL/dx or None); calls
    ``update()`` (False: a gradient was not finite, nothing applied) after a finite backward
    pass when it is given."""
    out = net.forward_for_custom(x)
    if out is None:  # the anomaly sentinel saw a NaN/Inf in the forward pass
        return math.nan, False, None
    value, grad = loss(_own(out), _own(y))
    if not math.isfinite(value):
        return value, False, None
    penalty, finite, dx = net.backward_from(x, grad, want_dx)
    if finite and update is not None:
        finite = update()
    return value + penalty, finite, dx


def custom_batches(net, loss, update, x, y, order, batch_size, first_batch, n_batches,
                   weights=None):
    """fit's batch runner for custom losses, with net.train_batches' return values."""
    if weights is not None:
        raise ValueError("fit: sample_weight and class_weight are not supported with a custom "
                         "loss (weigh the samples inside the loss instead)")
    n = x.shape[0]
    loss_sum, done = 0.0, 0
    for b in range(first_batch, first_batch + n_batches):
        lo = b * batch_size
        if lo >= n:
            break
        idx = slice(lo, min(n, lo + batch_size)) if order is None else order[lo:lo + batch_size]
        xb, yb = x[idx], y[idx]
        value, finite, _ = custom_step(net, loss, np.ascontiguousarray(xb), yb, update=update)
        if not finite:
            return loss_sum, 0, done, False, value
        loss_sum += value * xb.shape[0]
        done += 1
    return loss_sum, 0, done, True, 0.0


def custom_evaluate(net, loss, x, y) -> float:
    """Mean custom loss over (x, y) in inference mode, plus the L1/L2 penalties."""
    value, _ = loss(net.predict(x), _own(y))
    return value + net.regularization_loss()

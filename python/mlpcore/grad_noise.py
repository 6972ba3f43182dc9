"""How noisy are the mini-batch gradients? One estimate per epoch for ``fit(diagnostics=True)``.

At the weights the epoch ended with, the full-batch gradient ``G`` (over the first
:data:`NOISE_ROWS` training rows at most, so a large data set costs no more than that) and the
gradients ``g_1 .. g_k`` of the first ``k`` mini-batches among those rows (in data order,
``k`` at most :data:`NOISE_BATCHES`) are computed with :meth:`Sequential.compute_gradients`.
Reported:

* ``grad_noise``: mean over the batches of ``|g_i - G|^2 / |G|^2`` -- the variance of a
  mini-batch gradient around the full one, relative to the full one's size. Near 0: every
  batch points the same way; near or above 1: the batch-to-batch noise is as large as the
  signal (a smaller learning rate or a larger batch averages it out).
* ``grad_noise_scale``: ``batch_size * grad_noise``, the "simple noise scale" B_simple =
  tr(Sigma) / |G|^2 of McCandlish et al. (2018), with Sigma the per-sample gradient
  covariance: roughly the batch size beyond which larger batches stop helping.

The model is left as it was: gradient views, BatchNorm statistics and the dropout generator
are put back.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

__all__ = ["gradient_noise", "NOISE_BATCHES", "NOISE_ROWS"]

#: mini-batches compared with the full-batch gradient per estimate
NOISE_BATCHES = 8
#: rows the "full-batch" gradient is taken over, at most
NOISE_ROWS = 4096


def gradient_noise(model, x: np.ndarray, y: np.ndarray, batch_size: int,
                   weights: Optional[np.ndarray] = None) -> Dict[str, float]:
    """``{"grad_noise": ..., "grad_noise_scale": ...}`` for ``model`` on validated (x, y);
    empty when there are fewer than two batches or the full gradient is zero or not finite."""
    n = min(x.shape[0], NOISE_ROWS)
    x, y = x[:n], y[:n]
    weights = None if weights is None else weights[:n]
    k = min(NOISE_BATCHES, n // batch_size)
    if k < 1 or batch_size >= n:
        return {}
    grads = model.grads_view()
    saved_grads = np.array(grads)
    saved_arrays = model.get_weights()  # BatchNorm running statistics among them
    saved_dropout = model.dropout_rng_state
    try:
        model.compute_gradients(x, y, sample_weight=weights)
        full = np.array(grads, dtype=np.float64)
        full_sq = float(full @ full)
        if not np.isfinite(full_sq) or full_sq == 0.0:
            return {}
        spread = 0.0
        for i in range(k):
            rows = slice(i * batch_size, (i + 1) * batch_size)
            model.compute_gradients(x[rows], y[rows],
                                    sample_weight=None if weights is None else weights[rows])
            diff = np.asarray(grads, dtype=np.float64) - full
            spread += float(diff @ diff)
    finally:
        grads[...] = saved_grads
        model.set_weights(saved_arrays)
        model.dropout_rng_state = saved_dropout
    noise = spread / k / full_sq
    return {"grad_noise": noise, "grad_noise_scale": batch_size * noise}

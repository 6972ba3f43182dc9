"""The learning-rate range test: "tune the learning rate first", measured.

:func:`lr_find` trains a compiled model for a few hundred steps while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``, records the loss of every step, smooths it
(an exponential moving average with bias correction, as Adam's moments) and stops once the
smoothed loss exceeds ``diverge`` times its best value. The suggestion is the rate where the
smoothed loss falls fastest (the most negative slope against log(lr)) before its minimum,
capped at a tenth of the rate at the minimum (the moving average lags the raw loss, so the
steepest point of the smoothed curve can sit close to the edge of divergence).

Everything the test changes is put back afterwards, bit for bit: weights and biases,
BatchNorm statistics, gradient views, optimizer state and step count, the optimizer's
hyper-parameters, the model's random generator and the dropout generator. The batches are
drawn with a generator of the test's own (``seed``).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ._validation import as_inputs, as_targets, check_int, check_real, require
from .errors import NonFiniteLossError

__all__ = ["lr_find", "LRFinderResult"]


@dataclass
class LRFinderResult:
    """``lrs`` and ``losses`` (one per step taken, raw batch losses), ``smoothed`` (the bias-
    corrected moving average), ``suggestion`` (the learning rate at the steepest descent of
    the smoothed loss before divergence; None when fewer than 3 steps were taken) and
    ``diverged`` (whether the test stopped because the loss blew up or became NaN/Inf)."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: Optional[float]
    diverged: bool

    def __str__(self) -> str:
        best = int(np.argmin(self.smoothed)) if self.smoothed.size else None
        parts = [f"lr_find: {self.lrs.size} steps, lr {self.lrs[0]:.2e} .. {self.lrs[-1]:.2e}"
                 if self.lrs.size else "lr_find: no step taken"]
        if best is not None:
            parts.append(f"lowest smoothed loss {self.smoothed[best]:.4g} at lr "
                         f"{self.lrs[best]:.2e}")
        if self.suggestion is not None:
            parts.append(f"suggested lr {self.suggestion:.2e}")
        if self.diverged:
            parts.append("the loss diverged at the end")
        return "; ".join(parts)

    def plot(self, ax=None):
        """Smoothed loss against the learning rate (log scale) with the suggestion marked;
        needs matplotlib. Returns the axes."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("LRFinderResult.plot needs matplotlib: pip install matplotlib") \
                from None
        if ax is None:
            _, ax = plt.subplots()
        ax.plot(self.lrs, self.losses, alpha=0.3, label="batch loss")
        ax.plot(self.lrs, self.smoothed, label="smoothed")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="red", linestyle="--",
                       label=f"suggestion {self.suggestion:.1e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend()
        return ax


def lr_find(model, x, y, *, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 200,
            batch_size: int = 32, smoothing: float = 0.9, diverge: float = 4.0,
            seed: int = 0) -> LRFinderResult:
    """Run the range test on a compiled model (see the module docstring) and return an
    :class:`LRFinderResult`; the model is left exactly as it was.

    ``smoothing`` is the moving average's factor (0: no smoothing); ``diverge`` the multiple of
    the best smoothed loss at which the test stops; ``seed`` draws the batches."""
    model._require_compiled("lr_find")
    start_lr = check_real(start_lr, owner="lr_find", name="start_lr")
    end_lr = check_real(end_lr, owner="lr_find", name="end_lr")
    require(0 < start_lr < end_lr and math.isfinite(end_lr), owner="lr_find",
            name="start_lr/end_lr", expected="0 < start_lr < end_lr < inf",
            value=f"{start_lr!r}/{end_lr!r}")
    num_steps = check_int(num_steps, owner="lr_find", name="num_steps")
    batch_size = check_int(batch_size, owner="lr_find", name="batch_size")
    smoothing = check_real(smoothing, owner="lr_find", name="smoothing")
    require(0 <= smoothing < 1, owner="lr_find", name="smoothing", expected="in [0, 1)",
            value=smoothing)
    diverge = check_real(diverge, owner="lr_find", name="diverge")
    require(diverge > 1 and math.isfinite(diverge), owner="lr_find", name="diverge",
            expected="a finite number > 1", value=diverge)
    seed = check_int(seed, owner="lr_find", name="seed", low=0)
    x = as_inputs(x, model.dtype, model.in_features, "lr_find")
    y = as_targets(y, model.loss, x.shape[0], model.out_features, model.dtype, "lr_find")

    lrs = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / max(num_steps - 1, 1))
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    taken: List[float] = []
    losses: List[float] = []
    smoothed: List[float] = []
    diverged = False
    with _restored(model):
        order = rng.permutation(n)
        pos, avg, best = 0, 0.0, math.inf
        for i, lr in enumerate(lrs):
            if pos + batch_size > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            model.optimizer.lr = float(lr)
            try:
                loss = model.train_step(x[idx], y[idx])
            except NonFiniteLossError:
                diverged = True
                break
            avg = smoothing * avg + (1 - smoothing) * loss
            value = avg / (1 - smoothing ** (i + 1))
            taken.append(float(lr))
            losses.append(float(loss))
            smoothed.append(value)
            if not math.isfinite(value) or value > diverge * best:
                diverged = True
                break
            best = min(best, value)
    result = LRFinderResult(np.array(taken), np.array(losses), np.array(smoothed), None,
                            diverged)
    result.suggestion = _steepest(result.lrs, result.smoothed)
    return result


def _steepest(lrs: np.ndarray, smoothed: np.ndarray) -> Optional[float]:
    """The learning rate where the smoothed loss falls fastest against log(lr), looking from
    the first tenth of the steps on (the moving average is still settling there) up to the
    smoothed loss's minimum (beyond it the loss is on the way to diverging)."""
    if lrs.size < 3:
        return None
    start = min(lrs.size // 10, lrs.size - 3)
    stop = max(int(np.argmin(smoothed)) + 1, start + 3)
    slope = np.gradient(smoothed[start:stop], np.log(lrs[start:stop]))
    steepest = float(lrs[start + int(np.argmin(slope))])
    # the moving average lags the raw loss, so its steepest point can sit close to the edge:
    # keep at most a tenth of the rate with the lowest loss (the other rule of thumb)
    return min(steepest, float(lrs[stop - 1]) / 10)


class _restored:
    """Context manager: snapshot everything a training step changes, put it back on exit."""

    def __init__(self, model) -> None:
        self.model = model

    def __enter__(self):
        m = self.model
        self.weights = m.get_weights()  # parameters and BatchNorm statistics
        self.grads = np.array(m.grads_view())
        self.opt_state = {k: v.copy() for k, v in m.optimizer_state_views().items()}
        self.opt_steps = m.optimizer_steps
        self.hyper = dict(m.optimizer.param_groups[0])
        self.rng = copy.deepcopy(m.rng.bit_generator.state)
        self.dropout = m.dropout_rng_state
        return self

    def __exit__(self, *exc) -> None:
        m = self.model
        group = m.optimizer.param_groups[0]
        for key, value in self.hyper.items():
            group[key] = value
        m.set_weights(self.weights)
        m.grads_view()[...] = self.grads
        for name, view in m.optimizer_state_views().items():
            view[...] = self.opt_state[name]
        m.optimizer_steps = self.opt_steps
        m.rng.bit_generator.state = self.rng
        m.dropout_rng_state = self.dropout

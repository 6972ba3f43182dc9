"""Training-health diagnostics on one batch: what backprop debugging looks at first.

:func:`diagnose` runs a forward pass (every layer's output) and a backward pass
(:meth:`Sequential.compute_gradients`) on the first ``batch_size`` rows and reports per layer:

* Dense layers: weight L2 norm ``|W|``, weight-gradient L2 norm ``|dW|``, their ratio, and an
  estimate of the relative change one optimizer step would make, ``update/|W|``:

  - SGD (and unknown optimizers with an ``lr``): ``lr * |dW + weight_decay * W| / |W|``, times
    ``(1 - dampening) / (1 - momentum)`` with momentum -- the step size once the momentum
    buffer has built up under a steady gradient;
  - adaptive optimizers (Adam, AdamW, RMSprop, Adagrad): they divide each gradient entry by
    its running RMS, so each entry with a non-zero gradient moves by about ``lr`` per step
    whatever the gradient's scale; the estimate is ``lr * sqrt(k) / |W|`` with ``k`` the
    number of non-zero gradient entries (an upper end: Adagrad's steps shrink over time, and
    weight decay is left out).

  A common rule of thumb is a ratio around 1e-3.
* Activation layers: mean and standard deviation of the output; for ReLU the fraction of
  *dead* units (output 0 for every sample of the batch, so no gradient flows through them),
  for LeakyReLU the fraction of units on the negative side for every sample; for Sigmoid the
  fraction of *saturated* output elements (< 0.01 or > 0.99) and for Tanh those with
  ``|output| > 0.99`` (where the derivative is tiny).

Warnings follow the classic debugging table -- the sign, its likely cause, what to check
first -- for vanishing and exploding gradients, dead units, saturated units and a learning
rate that looks too high or too low. The thresholds are the module constants below. The
gradient-norm comparisons across layers use the RMS gradient ``|dW| / sqrt(W.size)`` so that
layers of different sizes compare fairly. Saturation of the model's *last* layer (a Sigmoid
output of a confident classifier) is reported but not warned about.

Output statistics come from an inference-mode pass (what ``predict`` computes: no dropout,
BatchNorm running statistics), gradients from a training-mode one, as training sees them.
LayerNorm/BatchNorm1d rows show the norms of their scale (gamma) and its gradient; layers
inside Residual blocks get their own rows.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ._validation import as_inputs, as_targets, check_int
from .gradcheck import preserved_side_state
from .layers import Activation, BatchNorm1d, Dense, LayerNorm, LeakyReLU, ReLU, Sigmoid, Tanh

__all__ = [
    "diagnose", "Diagnosis", "VANISHING_RATIO", "EXPLODING_RATIO", "EXPLODING_GRAD_NORM",
    "DEAD_FRACTION_WARN", "SATURATION_WARN", "SIGMOID_SATURATION", "TANH_SATURATION",
    "LR_HIGH_RATIO", "LR_LOW_RATIO",
]

#: Vanishing: a Dense layer's RMS gradient below this fraction of the last Dense layer's
#: (three orders of magnitude smaller towards the input).
VANISHING_RATIO = 1e-3
#: Exploding: a Dense layer's RMS gradient above this multiple of the last Dense layer's.
EXPLODING_RATIO = 1e3
#: Exploding: any Dense weight-gradient L2 norm above this (or a NaN/Inf gradient).
EXPLODING_GRAD_NORM = 1e3
#: Dead units: warn when more than this fraction of a ReLU/LeakyReLU layer's units is dead.
DEAD_FRACTION_WARN = 0.5
#: Saturation: warn when more than this fraction of a Sigmoid/Tanh layer's outputs saturates.
SATURATION_WARN = 0.5
#: A Sigmoid output is saturated below this or above 1 minus this.
SIGMOID_SATURATION = 0.01
#: A Tanh output is saturated when its absolute value exceeds this.
TANH_SATURATION = 0.99
#: Learning rate looks too high: some Dense layer's estimated update/|W| exceeds this.
LR_HIGH_RATIO = 1e-1
#: Learning rate looks too low: every Dense layer's estimated update/|W| is below this.
LR_LOW_RATIO = 1e-5

_THRESHOLDS = ("VANISHING_RATIO", "EXPLODING_RATIO", "EXPLODING_GRAD_NORM", "DEAD_FRACTION_WARN",
               "SATURATION_WARN", "SIGMOID_SATURATION", "TANH_SATURATION", "LR_HIGH_RATIO",
               "LR_LOW_RATIO")


@dataclass
class Diagnosis:
    """Result of :func:`diagnose`: one dict per layer in ``rows`` and the warnings.

    Row keys: ``index`` (the layer's number in ``model.summary()`` and saved files; Residual
    blocks are opened up), ``layer`` (class name), ``kind`` (``"dense"``, ``"activation"``,
    ``"norm"`` for LayerNorm/BatchNorm1d -- whose ``weight`` is gamma -- or ``"other"``),
    ``out_mean``, ``out_std``, ``is_output`` (the model's last layer) and, None where they do
    not apply, ``weight_norm``, ``grad_norm``, ``grad_rms`` (``grad_norm / sqrt(size)``),
    ``grad_weight_ratio``, ``update_ratio``, ``dead_fraction``, ``saturated_fraction``. The
    gradient-flow and learning-rate warnings look at Dense rows only. ``thresholds`` records
    the module constants used; ``healthy`` is True when there is no warning.
    """

    rows: List[Dict[str, Any]]
    warnings: List[str]
    loss: float
    n_samples: int
    optimizer: str = ""
    thresholds: Dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.warnings

    def report(self) -> str:
        header = (f"{'#':>3}  {'layer':<10} {'out mean':>9} {'out std':>9} {'|W|':>9} "
                  f"{'|dW|':>9} {'|dW|/|W|':>9} {'update/|W|':>10} {'dead':>6} {'satur.':>6}")
        lines = [f"diagnose: loss {self.loss:.6g} on {self.n_samples} samples"
                 + (f", optimizer {self.optimizer}" if self.optimizer else ""), header,
                 "-" * len(header)]
        for r in self.rows:
            lines.append(
                f"{r['index']:>3}  {r['layer']:<10.10} {_fmt(r['out_mean'])} "
                f"{_fmt(r['out_std'])} {_fmt(r['weight_norm'])} {_fmt(r['grad_norm'])} "
                f"{_fmt(r['grad_weight_ratio'])} {_fmt(r['update_ratio'], 10)} "
                f"{_pct(r['dead_fraction'])} {_pct(r['saturated_fraction'])}")
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines.extend(f"  - {w}" for w in self.warnings)
        else:
            lines.append("no warnings")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _fmt(value: Optional[float], width: int = 9) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}.2e}"


def _pct(value: Optional[float]) -> str:
    return f"{'-':>6}" if value is None else f"{100 * value:>5.0f}%"


def _update_ratio(optimizer, weight: np.ndarray, grad: np.ndarray,
                  weight_norm: float) -> Optional[float]:
    """Estimated |one step's change of W| / |W| (see the module docstring)."""
    if optimizer is None or weight_norm == 0 or not math.isfinite(weight_norm):
        return None
    group = optimizer.param_groups[0]
    lr = float(group.get("lr", float("nan")))
    if not math.isfinite(lr):
        return None
    if getattr(optimizer, "adaptive", False):  # each entry's step is about lr (see the module docstring)
        return lr * math.sqrt(np.count_nonzero(grad)) / weight_norm
    wd = float(group.get("weight_decay", 0.0))
    step = grad + wd * weight if wd else grad
    factor = 1.0
    momentum = float(group.get("momentum", 0.0))  # heavy-ball momentum (SGD's)
    if 0 < momentum < 1:
        factor = (1.0 - float(group.get("dampening", 0.0))) / (1.0 - momentum)
    return lr * factor * float(np.linalg.norm(step)) / weight_norm


def _layer_list(indices: List[int]) -> str:
    return ", ".join(str(i) for i in indices)


def diagnose(model, x, y, *, batch_size: int = 256, file=None) -> Diagnosis:
    """Per-layer health table and warnings for ``model`` on the first ``batch_size`` rows of
    ``(x, y)``; prints the table to ``file`` (default: standard output) and returns a
    :class:`Diagnosis`. Output statistics come from an inference-mode pass (as predict),
    gradients from a training-mode one (:meth:`Sequential.compute_gradients`). The weights,
    BatchNorm statistics and dropout generator are left as they were; the layers' gradient
    views hold this batch's gradients afterwards. Inputs are validated as by
    :meth:`Sequential.evaluate`."""
    model._require_compiled("diagnose")
    batch_size = check_int(batch_size, owner="diagnose", name="batch_size")
    x = as_inputs(x, model.dtype, model.in_features, "diagnose")
    y = as_targets(y, model.loss, x.shape[0], model.out_features, model.dtype, "diagnose")
    x, y = x[:batch_size], y[:batch_size]
    n = x.shape[0]

    outputs = model.layer_outputs(x)  # inference mode: what predict computes
    with preserved_side_state(model):  # keep BatchNorm statistics and dropout generator
        loss = float(model.compute_gradients(x, y))

    rows: List[Dict[str, Any]] = []
    for layer in model.flat_layers:
        index = layer.index
        out = np.asarray(outputs[index], dtype=np.float64)
        kind = ("dense" if isinstance(layer, Dense) else
                "activation" if isinstance(layer, Activation) else
                "norm" if isinstance(layer, (LayerNorm, BatchNorm1d)) else "other")
        row: Dict[str, Any] = {
            "index": index, "layer": type(layer).__name__, "kind": kind,
            "out_mean": float(out.mean()), "out_std": float(out.std()),
            "weight_norm": None, "grad_norm": None, "grad_rms": None,
            "grad_weight_ratio": None, "update_ratio": None,
            "dead_fraction": None, "saturated_fraction": None,
            "is_output": index == len(outputs) - 1,
        }
        if kind in ("dense", "norm"):
            w = np.asarray(layer.weight, dtype=np.float64)
            g = np.asarray(layer.weight_grad, dtype=np.float64)
            wn, gn = float(np.linalg.norm(w)), float(np.linalg.norm(g))
            row.update(weight_norm=wn, grad_norm=gn, grad_rms=gn / math.sqrt(g.size),
                       grad_weight_ratio=gn / wn if wn > 0 else None,
                       update_ratio=_update_ratio(model.optimizer, w, g, wn))
        elif isinstance(layer, ReLU):
            row["dead_fraction"] = float(np.mean(np.all(out == 0, axis=0)))
        elif isinstance(layer, LeakyReLU):
            row["dead_fraction"] = float(np.mean(np.all(out <= 0, axis=0)))
        elif isinstance(layer, Sigmoid):
            row["saturated_fraction"] = float(np.mean((out < SIGMOID_SATURATION)
                                                      | (out > 1 - SIGMOID_SATURATION)))
        elif isinstance(layer, Tanh):
            row["saturated_fraction"] = float(np.mean(np.abs(out) > TANH_SATURATION))
        rows.append(row)

    diagnosis = Diagnosis(rows=rows, warnings=_warnings(rows), loss=loss, n_samples=n,
                          optimizer=type(model.optimizer).__name__ if model.optimizer else "",
                          thresholds={name: globals()[name] for name in _THRESHOLDS})
    print(diagnosis.report(), file=sys.stdout if file is None else file)
    return diagnosis


def _warnings(rows: List[Dict[str, Any]]) -> List[str]:
    out: List[str] = []
    dense = [r for r in rows if r["kind"] == "dense"]

    # --- gradient flow ------------------------------------------------------------------
    non_finite = [r["index"] for r in dense if not math.isfinite(r["grad_norm"])]
    if non_finite:
        out.append(
            f"exploding gradients: the gradient of layer(s) {_layer_list(non_finite)} is NaN "
            "or Inf. Likely cause: overflow from too-large weights, inputs or learning rate. "
            "Check first: input/target scaling, the weight initialisation, the learning rate; "
            "consider clip_norm.")
    finite = [r for r in dense if math.isfinite(r["grad_norm"])]
    big = [r["index"] for r in finite if r["grad_norm"] > EXPLODING_GRAD_NORM]
    vanishing: List[int] = []
    growing: List[int] = []
    if len(finite) >= 2 and finite[-1]["grad_rms"] > 0:
        ref = finite[-1]["grad_rms"]
        earlier = finite[:-1]
        vanishing = [r["index"] for r in earlier if r["grad_rms"] < VANISHING_RATIO * ref]
        growing = [r["index"] for r in earlier if r["grad_rms"] > EXPLODING_RATIO * ref]
        if vanishing:
            smallest = min(r["grad_rms"] for r in earlier) / ref
            out.append(
                f"vanishing gradients: the RMS gradient of layer(s) {_layer_list(vanishing)} "
                f"is below {VANISHING_RATIO:g} x that of the last Dense layer "
                f"(down to {smallest:.1e}); these early layers will barely learn. Likely cause: "
                "saturating activations (sigmoid/tanh) stacked deep, or too-small initial "
                "weights. Check first: the 'satur.' column and 'out std' shrinking with depth; "
                "try ReLU-family activations, Glorot/He initialisation or fewer layers.")
    if big or growing:
        signs = []
        if big:
            worst = max(r["grad_norm"] for r in finite)
            signs.append(f"the weight-gradient norm of layer(s) {_layer_list(big)} exceeds "
                         f"{EXPLODING_GRAD_NORM:g} (largest {worst:.2e})")
        if growing:
            signs.append(f"the RMS gradient of layer(s) {_layer_list(growing)} is above "
                         f"{EXPLODING_RATIO:g} x that of the last Dense layer (growing towards "
                         "the input)")
        out.append(
            f"exploding gradients: {'; '.join(signs)}. Likely cause: too-large initial weights "
            "(activations or gradients growing layer by layer) or unscaled inputs/targets. "
            "Check first: the 'out std' column growing with depth, input and target scaling, "
            "the initialiser; consider clip_norm.")

    # --- units ----------------------------------------------------------------------------
    for r in rows:
        dead = r["dead_fraction"]
        if dead is not None and dead > DEAD_FRACTION_WARN:
            out.append(
                f"dead units: {100 * dead:.0f}% of the units of layer {r['index']} "
                f"({r['layer']}) are inactive for every sample, so no gradient flows through "
                "them. Likely cause: a large negative bias or a too-high learning rate that "
                "pushed pre-activations below zero. Check first: the preceding Dense layer's "
                "bias and weights, the learning rate; consider LeakyReLU/ELU or He init.")
        sat = r["saturated_fraction"]
        if sat is not None and sat > SATURATION_WARN and not r["is_output"]:
            out.append(
                f"saturated units: {100 * sat:.0f}% of the outputs of layer {r['index']} "
                f"({r['layer']}) sit in the flat tails where the derivative is nearly zero. "
                "Likely cause: too-large weights or unscaled inputs. Check first: input "
                "scaling and the preceding Dense layer's weight norm; use a smaller init.")

    # --- learning rate --------------------------------------------------------------------
    stepped = [r for r in dense if r["update_ratio"] is not None
               and math.isfinite(r["update_ratio"])]
    high = [r["index"] for r in stepped if r["update_ratio"] > LR_HIGH_RATIO]
    # layers without any gradient are a gradient-flow problem (reported above), not the LR's
    moving = [r for r in stepped if r["grad_norm"] > 0]
    if high:
        worst = max(r["update_ratio"] for r in stepped)
        out.append(
            f"learning rate looks too high: one step would change the weights of layer(s) "
            f"{_layer_list(high)} by more than {LR_HIGH_RATIO:g} of their norm (up to "
            f"{worst:.2e}; around 1e-3 is typical). Likely cause: the learning rate. Check "
            "first: lower it by 10x; a loss that jumps or diverges confirms it.")
    elif moving and all(r["update_ratio"] < LR_LOW_RATIO for r in moving):
        worst = max(r["update_ratio"] for r in moving)
        out.append(
            f"learning rate looks too low: one step would change every layer's weights by less "
            f"than {LR_LOW_RATIO:g} of their norm (at most {worst:.2e}; around 1e-3 is typical). "
            "Likely cause: a too-small learning rate, or a model that has already converged. "
            "Check first: raise the learning rate by 10x if the loss is still high.")
    return out

"""Finite-difference gradient checking for any compiled model.

:func:`gradcheck` compares the analytic gradients that :meth:`Sequential.compute_gradients`
fills in (every parameter tensor and, optionally, the input) with float64 central differences
of the loss that the same method returns::

    result = mc.gradcheck(model, x, y)
    print(result)            # per-tensor table
    assert result.passed

Only ``compute_gradients`` is used to obtain gradients and losses, so whatever the model's loss
is (a built-in one, or any loss ``compile`` accepts later) is checked the same way. The loss
differentiated is the *training-mode* one, exactly the function whose gradient training uses:
BatchNorm1d normalises with the batch's statistics, and Dropout's masks are drawn once and
then frozen for every evaluation of the check (so the check is of the gradient for that mask).

Precision: central differences need float64. A float64 model is checked in place (parameters
are perturbed one entry at a time and each entry is written back with its original value, so
the weights end bit-identical; BatchNorm running statistics and the dropout generator are
restored too). A float32 model is never touched: an identical float64 *twin* (same layer
config, every stored array -- weights, biases, norm statistics -- converted exactly to float64,
same loss and ``huber_delta``) is built and checked instead. That checks the backpropagation
algorithm and layer formulas, which the float32 and float64 kernels share.

Error measure, per tensor ``t`` with analytic gradient ``a`` and numeric gradient ``n``::

    error(t) = max_i |a_i - n_i| / max(max|a|, max|n|, floor)

i.e. the worst absolute difference relative to the tensor's largest gradient. Entries whose
gradient is (close to) zero do not blow the measure up as an element-wise ratio would. The
floor handles tensors whose gradient is zero or tiny overall (a dead unit's weights, sign
cancellations under ``mae``, a bias feeding a BatchNorm): without it, the round-off of the
differences themselves -- about machine epsilon x |loss| / eps, i.e. ~1e-10 for eps=1e-6 and a
loss of order one -- would be divided by a near-zero scale and look like a large error. So::

    floor = max(GRADCHECK_FLOOR, machine_epsilon x max(1, |loss|) / (eps x tolerance))

:data:`GRADCHECK_FLOOR` (1e-4) is the fixed part: a tensor whose gradients are all below it is
compared absolutely, to ``tolerance x 1e-4`` (1e-10 at the default tolerance), about the noise
level of the differences, so a gradient that is wrong by any meaningful amount is still caught.
The second term is that noise level divided by the tolerance; it takes over when the loss is
large or ``eps``/``tolerance`` are small (at the defaults, eps = tolerance = 1e-6, it is
2.2e-4 x max(1, |loss|)), so that differences at the round-off level of the central
differences themselves never fail a check. The floor used is ``GradcheckResult.floor``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ._validation import as_inputs, check_finite, is_int, is_real, require
from .layers import layer_from_config
from .losses import LOSSES
from .model import Sequential
from .saving import layer_arrays

__all__ = ["gradcheck", "GradcheckResult", "GRADCHECK_FLOOR", "preserved_side_state"]

#: Smallest gradient scale used in the relative error (see the module docstring for why; it is
#: raised further when the differences' round-off demands it).
GRADCHECK_FLOOR = 1e-4


@dataclass
class GradcheckResult:
    """Outcome of :func:`gradcheck`.

    ``errors`` maps each checked tensor (``"layers.0.weight"``, ``"layers.0.bias"``, ...,
    ``"input"``; layers are numbered as in saved files and ``model.summary()``) to its relative
    error (module docstring); ``passed`` is True when every error is below ``tolerance`` (a NaN
    error fails). ``checked``/``sizes`` give how many entries of each tensor were compared out
    of how many, ``worst_index`` the entry with the largest difference, ``loss`` the loss at the
    unperturbed point and ``twin`` whether a float64 twin of a float32 model was checked.
    """

    errors: Dict[str, float]
    tolerance: float
    eps: float
    checked: Dict[str, int] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)
    worst_index: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    loss: float = float("nan")
    twin: bool = False
    floor: float = GRADCHECK_FLOOR

    @property
    def passed(self) -> bool:
        return all(err < self.tolerance for err in self.errors.values())

    @property
    def max_error(self) -> float:
        """The largest error over all tensors (NaN counts as infinite)."""
        return max((_nan_to_inf(e) for e in self.errors.values()), default=0.0)

    @property
    def worst(self) -> Optional[str]:
        """Name of the tensor with the largest error."""
        if not self.errors:
            return None
        return max(self.errors, key=lambda k: _nan_to_inf(self.errors[k]))

    @property
    def failed(self) -> List[str]:
        """Names of the tensors whose error is not below the tolerance."""
        return [k for k, e in self.errors.items() if not e < self.tolerance]

    def report(self) -> str:
        """A table: one line per tensor with its error, entries checked and verdict."""
        how = "float64 twin of a float32 model" if self.twin else "float64"
        lines = [f"gradcheck ({how}, eps={self.eps:g}, tolerance={self.tolerance:g}, "
                 f"floor={self.floor:.2g}, loss={self.loss:.6g})"]
        width = max([len("tensor")] + [len(k) for k in self.errors])
        lines.append(f"  {'tensor':<{width}}  {'rel. error':>10}  {'checked':>13}  "
                     f"{'worst entry':<12}  result")
        for name, err in self.errors.items():
            checked = f"{self.checked.get(name, '?')}/{self.sizes.get(name, '?')}"
            where = self.worst_index.get(name)
            where = "-" if where is None else str(tuple(int(i) for i in where))
            verdict = "ok" if err < self.tolerance else "FAIL"
            lines.append(f"  {name:<{width}}  {err:>10.2e}  {checked:>13}  {where:<12}  "
                         f"{verdict}")
        if self.passed:
            lines.append(f"passed: every relative error < {self.tolerance:g}")
        else:
            lines.append(f"FAILED: {', '.join(self.failed)} (worst {self.worst}: "
                         f"{self.max_error:.2e} >= {self.tolerance:g})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _nan_to_inf(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _positive_finite(value, name: str) -> float:
    # gradcheck's own contract: a ValueError whatever is wrong with eps or tolerance
    require(is_real(value), owner="gradcheck", name=name,
            expected="a positive finite number", value=repr(value))
    return check_finite(value, owner="gradcheck", name=name, positive=True)


def _param_tensors(model) -> Iterator[Tuple[str, object, str]]:
    """(name, layer, attribute) for every parameter tensor that has a gradient view."""
    for layer in model.flat_layers:
        for attr in ("weight", "bias"):
            if (isinstance(getattr(type(layer), attr, None), property)
                    and isinstance(getattr(type(layer), attr + "_grad", None), property)):
                yield f"layers.{layer.index}.{attr}", layer, attr


@contextlib.contextmanager
def preserved_side_state(model):
    """Restore what a training-mode forward pass changes besides gradients: BatchNorm running
    statistics and the dropout generator (so checking or diagnosing a model leaves its future
    training unchanged)."""
    buffers = []
    for layer in model.flat_layers:
        for attr in ("running_mean", "running_var"):
            if isinstance(getattr(type(layer), attr, None), property):
                view = getattr(layer, attr)
                buffers.append((view, view.copy()))
    rng_state = model.dropout_rng_state
    try:
        yield
    finally:
        for view, saved in buffers:
            view[...] = saved
        model.dropout_rng_state = rng_state


def _float64_twin(model):
    """A float64 copy of a float32 model: same layers, arrays, loss and huber_delta."""
    config = model.get_config()
    twin = Sequential([layer_from_config(c) for c in config["layers"]], dtype="float64", seed=0)
    source = layer_arrays(model)
    for name, view in layer_arrays(twin).items():
        view[...] = np.asarray(source[name], dtype=np.float64)
    loss = model.loss
    spec = loss.name if getattr(loss, "name", None) in LOSSES else loss
    try:
        twin.compile(loss=spec, optimizer="sgd", huber_delta=model.huber_delta)
    except (TypeError, ValueError) as exc:
        raise RuntimeError(
            "gradcheck: could not rebuild this float32 model's loss in float64 "
            f"({exc}); build the model with dtype='float64' and check that one") from None
    return twin


def _choose_entries(shape: Tuple[int, ...], limit: Optional[int],
                    rng: np.random.Generator) -> np.ndarray:
    size = int(np.prod(shape))
    if limit is None or limit >= size:
        return np.arange(size)
    return np.sort(rng.choice(size, size=limit, replace=False))


def _numeric(loss_at: Callable[[], float], array: np.ndarray, flat_indices: np.ndarray,
             eps: float) -> np.ndarray:
    """Central differences of ``loss_at()`` w.r.t. the chosen entries of ``array`` (written in
    place and restored to their exact original values)."""
    out = np.empty(len(flat_indices))
    shape = array.shape
    for k, flat in enumerate(flat_indices):
        idx = np.unravel_index(int(flat), shape)
        old = array[idx]
        try:
            array[idx] = old + eps
            up_at = float(array[idx])
            up = loss_at()
            array[idx] = old - eps
            down_at = float(array[idx])
            down = loss_at()
        finally:
            array[idx] = old
        # divide by the step actually taken (old +- eps is rounded to the nearest double)
        out[k] = (up - down) / (up_at - down_at)
    return out


def _relative_error(analytic: np.ndarray, numeric: np.ndarray, full_analytic: np.ndarray,
                    floor: float = GRADCHECK_FLOOR) -> Tuple[float, int]:
    """(error, position in ``numeric`` of the worst difference) per the module docstring;
    ``analytic`` holds the compared entries, ``full_analytic`` the whole tensor (the scale)."""
    if numeric.size == 0:
        return 0.0, 0
    diff = np.abs(analytic - numeric)
    if not np.all(np.isfinite(diff)):
        return math.inf, int(np.flatnonzero(~np.isfinite(diff))[0])
    a_max = float(np.max(np.abs(full_analytic)))
    if not math.isfinite(a_max):  # a NaN/Inf gradient among the entries not compared
        return math.inf, int(np.argmax(diff))
    scale = max(a_max, float(np.max(np.abs(numeric))), floor)
    worst = int(np.argmax(diff))
    return float(diff[worst]) / scale, worst


def gradcheck(model, x, y, *, eps: float = 1e-6, tolerance: float = 1e-6, sample_weight=None,
              max_checks_per_tensor: Optional[int] = None, seed: int = 0,
              check_input: bool = True) -> GradcheckResult:
    """Compare ``model``'s analytic gradients on the batch ``(x, y)`` with central differences.

    Every parameter tensor (``layers.{i}.weight`` / ``layers.{i}.bias`` of each Dense and norm
    layer) and, with ``check_input``, the input gradient (``"input"``) is checked.
    ``max_checks_per_tensor`` compares only that many randomly chosen entries of each larger
    tensor (chosen with ``seed``); the error's scale still uses the whole analytic tensor. The
    loss, and so the check, includes ``sample_weight`` and any L1/L2 penalties. Each checked
    entry costs two forward/backward passes on the batch, so keep the batch small.

    A float64 model's weights are perturbed in place and restored to their exact values; its
    ``weight_grad``/``bias_grad`` views hold the gradients of this batch afterwards (as after
    ``compute_gradients``). A float32 model is checked through a float64 twin and not touched.

    Raises RuntimeError if the model is not compiled, ValueError for a non-positive or
    non-finite ``eps``/``tolerance`` or a bad ``max_checks_per_tensor``, and the validation
    errors of :meth:`Sequential.compute_gradients` for bad ``x``, ``y`` or ``sample_weight``.
    """
    if getattr(model, "loss", None) is None:
        raise RuntimeError("gradcheck: call model.compile(loss=..., optimizer=...) first")
    eps = _positive_finite(eps, "eps")
    tolerance = _positive_finite(tolerance, "tolerance")
    if max_checks_per_tensor is not None:
        require(is_int(max_checks_per_tensor) and max_checks_per_tensor > 0,
                owner="gradcheck", name="max_checks_per_tensor",
                expected="a positive int or None", value=repr(max_checks_per_tensor))
        max_checks_per_tensor = int(max_checks_per_tensor)

    twin = model.dtype != np.float64
    target = _float64_twin(model) if twin else model
    x = as_inputs(x, np.dtype(np.float64), target.in_features, "gradcheck")
    if check_input:
        x = x.copy()  # perturbed in place below; never the caller's array

    with preserved_side_state(target):
        # this pass draws the dropout masks that every later pass reuses
        loss, dx = target.compute_gradients(x, y, sample_weight=sample_weight,
                                            return_input_grad=True)
        analytic: Dict[str, np.ndarray] = {
            name: np.array(getattr(layer, attr + "_grad"), dtype=np.float64, copy=True)
            for name, layer, attr in _param_tensors(target)}
        if check_input:
            analytic["input"] = np.array(dx, dtype=np.float64, copy=True)

        def loss_at() -> float:
            return float(target.compute_gradients(x, y, sample_weight=sample_weight))

        rng = np.random.default_rng(seed)
        roundoff = np.finfo(np.float64).eps * max(1.0, abs(float(loss))) / (eps * tolerance)
        floor = max(GRADCHECK_FLOOR, roundoff) if math.isfinite(roundoff) else GRADCHECK_FLOOR
        result = GradcheckResult(errors={}, tolerance=tolerance, eps=eps, loss=float(loss),
                                 twin=twin, floor=floor)
        tensors = [(name, getattr(layer, attr)) for name, layer, attr in _param_tensors(target)]
        if check_input:
            tensors.append(("input", x))
        with target.frozen_dropout_masks():
            for name, array in tensors:
                chosen = _choose_entries(array.shape, max_checks_per_tensor, rng)
                numeric = _numeric(loss_at, array, chosen, eps)
                a = analytic[name]
                err, pos = _relative_error(a.reshape(-1)[chosen], numeric, a, floor)
                result.errors[name] = err
                result.checked[name] = int(chosen.size)
                result.sizes[name] = int(a.size)
                if chosen.size:
                    result.worst_index[name] = tuple(
                        int(i) for i in np.unravel_index(int(chosen[pos]), array.shape))
        # leave the gradient views as the unperturbed batch's (what compute_gradients leaves)
        for name, layer, attr in _param_tensors(target):
            getattr(layer, attr + "_grad")[...] = analytic[name]
    return result

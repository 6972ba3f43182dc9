"""See backpropagation at work: every layer's forward values and error signals for one batch.

:func:`trace` (also ``model.trace(X, y)``) runs one forward pass and, given targets, one
backward pass, and returns per layer what the textbook derivations name::

    z_l = a_{l-1} W_l + b_l        (mlpcore stores W_l as (inputs, outputs): row vectors)
    a_l = f(z_l)
    delta_l = dL/dz_l              (dL/db_l = sum over the batch of delta_l,
                                    dL/dW_l = a_{l-1}^T delta_l (+ any l1/l2 penalty))

What is native and what is NumPy:

* forward values (every layer's output) come from :meth:`Sequential.layer_outputs`, the
  inference-mode pass that ``predict`` runs;
* the loss, every parameter gradient (``dW``, ``db``) and the input gradient ``dL/dx`` come
  from :meth:`Sequential.compute_gradients` on the model itself -- the training step's code;
* the per-sample error signals (``dL/d output`` of every layer, so ``delta`` of every Dense
  layer) are also native: the backward pass is replayed one layer at a time, each layer in a
  small network of its own dtype (an identity Dense in front, whose ``x @ I + 0`` and
  ``g @ I^T`` are exact, then a copy of the layer with the same weights) trained on a
  "loss" whose gradient is the signal arriving from above; the output signal ``dL/d output``
  is the model's own loss gradient, taken the same way. NumPy only copies arrays and adds the
  two branches of a residual block.

The model is not changed: weights, gradient views, optimizer state, the model's random
generator, the dropout generator and BatchNorm statistics are as before.

Forward and backward follow one function only when training mode and inference mode agree,
so the backward pass is refused for models with Dropout or BatchNorm1d (their forward-only
trace works).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ._validation import as_inputs
from .layers import Activation, BatchNorm1d, Dense, Dropout, Residual, Softmax, layer_from_config
from .losses import LOSSES

__all__ = ["trace", "Trace", "LayerTrace", "DenseStep"]


@dataclass
class LayerTrace:
    """One layer of a :class:`Trace` (plan index ``index`` as in ``model.summary()``;
    ``name`` is the layer class, or ``"Residual end"`` where a block adds its skip).

    ``input``/``output`` are (n, features) arrays; ``grad_output`` is dL/d``output`` per
    sample (None without targets); ``weight``, ``bias``, ``weight_grad``, ``bias_grad`` are
    copies for layers with parameters (None otherwise)."""

    index: int
    name: str
    input: np.ndarray
    output: np.ndarray
    grad_output: Optional[np.ndarray] = None
    grad_input: Optional[np.ndarray] = None
    weight: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    weight_grad: Optional[np.ndarray] = None
    bias_grad: Optional[np.ndarray] = None


@dataclass
class DenseStep:
    """The textbook view of Dense layer l = ``number`` (1-based): ``a_prev`` (its input, a_{l-1}),
    ``W``/``b``, ``z`` (pre-activation), ``activation`` (name of the element-wise activation
    right after it, or None), ``a`` = f(z) (``z`` itself without one), ``fprime`` = f'(z)
    (native, by back-propagating ones through the activation; None without an element-wise
    activation), and with targets ``delta`` = dL/dz, ``delta_a`` = dL/da, ``dW``, ``db``."""

    number: int
    index: int
    a_prev: np.ndarray
    W: np.ndarray
    b: np.ndarray
    z: np.ndarray
    a: np.ndarray
    activation: Optional[str]
    fprime: Optional[np.ndarray] = None
    delta: Optional[np.ndarray] = None
    delta_a: Optional[np.ndarray] = None
    dW: Optional[np.ndarray] = None
    db: Optional[np.ndarray] = None


@dataclass
class Trace:
    """Result of :func:`trace`: ``layers`` (every layer, :class:`LayerTrace`), ``dense``
    (one :class:`DenseStep` per Dense layer), ``x``, ``output`` (the network output, logits
    when the loss fuses softmax/sigmoid), and with targets ``loss`` (as compute_gradients:
    mean loss plus penalties), ``loss_name``, ``grad_output`` (dL/d output) and
    ``input_grad`` (dL/dx)."""

    x: np.ndarray
    output: np.ndarray
    layers: List[LayerTrace]
    dense: List[DenseStep]
    loss: Optional[float] = None
    loss_name: Optional[str] = None
    grad_output: Optional[np.ndarray] = None
    input_grad: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)

    @property
    def z(self) -> List[np.ndarray]:
        """Pre-activations z_1 .. z_L of the Dense layers."""
        return [d.z for d in self.dense]

    @property
    def a(self) -> List[np.ndarray]:
        """Activations a_1 .. a_L after each Dense layer's activation."""
        return [d.a for d in self.dense]

    @property
    def delta(self) -> List[Optional[np.ndarray]]:
        """Error signals delta_l = dL/dz_l of the Dense layers."""
        return [d.delta for d in self.dense]

    def report(self) -> str:
        n = self.x.shape[0]
        head = f"trace: {n} sample(s)"
        if self.loss is not None:
            head += f", loss {self.loss:.6g} ({self.loss_name})"
        header = (f"{'#':>3}  {'layer':<12} {'out shape':>10} {'out mean':>9} {'out std':>9} "
                  f"{'|dL/dout|':>9} {'|W|':>9} {'|dW|':>9} {'|db|':>9}")
        lines = [head, header, "-" * len(header)]
        for t in self.layers:
            shape = "x".join(str(s) for s in t.output.shape)
            lines.append(
                f"{t.index:>3}  {t.name:<12.12} {shape:>10} {_num(t.output.mean())} "
                f"{_num(t.output.std())} {_norm(t.grad_output)} {_norm(t.weight)} "
                f"{_norm(t.weight_grad)} {_norm(t.bias_grad)}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _num(value: float) -> str:
    return f"{float(value):>9.2e}"


def _norm(array: Optional[np.ndarray]) -> str:
    if array is None:
        return f"{'-':>9}"
    return _num(np.linalg.norm(np.asarray(array, dtype=np.float64)))


class _Inject:
    """A 'loss' whose gradient is a given signal: value sum(pred * g), gradient g."""

    name = "inject"

    def __init__(self, signal: np.ndarray) -> None:
        self.signal = signal

    def __call__(self, prediction, target):
        return float(np.sum(prediction * self.signal)), self.signal


def _loss_spec(model):
    loss = model.loss
    return loss.name if loss.custom is None and loss.name in LOSSES else loss.custom.source


def _through(model, layer, x_in: np.ndarray, signal: Optional[np.ndarray], y=None
             ) -> np.ndarray:
    """dL/d(input of ``layer``) for the signal dL/d(output) arriving from above, by the native
    backward pass of a copy of the layer behind an exact identity Dense (``layer`` None: the
    identity alone). With ``signal`` None the model's own loss against ``y`` is used."""
    k = x_in.shape[1]
    layers = [Dense(k, k)] + ([] if layer is None else [layer_from_config(layer.get_config())])
    sub = type(model)(layers, dtype=model.dtype, seed=0)  # a Sequential, as the model
    arrays = [np.eye(k), np.zeros(k)]
    if layer is not None and isinstance(layer, Dense):
        arrays += [np.array(layer.weight), np.array(layer.bias)]
    elif layer is not None and hasattr(type(layer), "weight"):  # LayerNorm: gamma, beta
        arrays += [np.array(layer.weight), np.array(layer.bias)]
    sub.set_weights(arrays)
    if signal is None:
        sub.compile(loss=_loss_spec(model), optimizer="sgd", huber_delta=model.huber_delta)
        target = y
    else:
        sub.compile(loss=_Inject(np.ascontiguousarray(signal, dtype=model.dtype)),
                    optimizer="sgd")
        target = np.zeros((x_in.shape[0], sub.out_features), dtype=model.dtype)
    _, dx = sub.compute_gradients(np.ascontiguousarray(x_in), target, return_input_grad=True)
    return np.array(dx)


def trace(model, x, y=None) -> Trace:
    """One forward pass (and, with ``y``, one backward pass) of ``model`` on ``x``, every
    layer's values kept; see the module docstring. ``y`` needs a compiled model."""
    x = as_inputs(x, model.dtype, model.in_features, "trace")
    outputs = [np.array(o) for o in model.layer_outputs(x)]
    entries = _plan(model)
    layers: List[LayerTrace] = []
    for index, layer, inp in _with_inputs(entries, outputs, x):
        t = LayerTrace(index=index, name="Residual end" if layer is None else type(layer).__name__,
                       input=inp, output=outputs[index])
        if layer is not None and hasattr(type(layer), "weight_grad"):
            t.weight, t.bias = np.array(layer.weight), np.array(layer.bias)
        layers.append(t)
    result = Trace(x=x, output=outputs[-1], layers=layers, dense=[])
    if y is not None:
        model._require_compiled("trace")
        blocking = [type(layer).__name__ for layer in model.flat_layers
                    if isinstance(layer, (Dropout, BatchNorm1d))]
        if blocking:
            raise ValueError(
                f"trace: cannot trace the backward pass of a model with {blocking[0]}: its "
                "training-mode forward differs from the inference-mode one traced here; "
                "trace without y (forward only), or trace the model without that layer")
        _backward(model, x, y, entries, layers, result)
    result.dense = _dense_steps(model, layers, y is not None)
    return result


def _plan(model) -> List[tuple]:
    """(plan index, layer or None for a block end, the block's begin index) in plan order,
    Residual begin markers left out (their output is their input)."""
    entries: List[tuple] = []
    index = 0

    def walk(layer_list, begin):
        nonlocal index
        for layer in layer_list:
            if isinstance(layer, Residual):
                start = index
                index += 1
                walk(layer.layers, start)
                entries.append((index, None, start))
                index += 1
            else:
                entries.append((index, layer, begin))
                index += 1
    walk(model.layers, None)
    return entries


def _with_inputs(entries, outputs, x):
    """(index, layer, input array) for every entry."""
    for index, layer, _ in entries:
        if layer is None:  # block end: its input is the inner branch's output
            yield index, layer, outputs[index - 1]
        else:
            yield index, layer, (x if index == 0 else outputs[index - 1])


def _backward(model, x, y, entries, layers: List[LayerTrace], result: Trace) -> None:
    # no Dropout/BatchNorm here (trace refused them), so only the gradient views change
    grads_before = np.array(model.grads_view())
    try:
        loss, dx = model.compute_gradients(x, y, return_input_grad=True)
        by_index: Dict[int, LayerTrace] = {t.index: t for t in layers}
        for layer in model.flat_layers:
            if hasattr(type(layer), "weight_grad"):
                t = by_index[layer.index]
                t.weight_grad, t.bias_grad = np.array(layer.weight_grad), np.array(layer.bias_grad)
    finally:
        model.grads_view()[...] = grads_before
    result.loss, result.input_grad = float(loss), np.array(dx)
    result.loss_name = model.loss.name
    signal = _through(model, None, result.output, None, y)  # dL/d output: the loss's gradient
    result.grad_output = signal
    skips: Dict[int, np.ndarray] = {}  # block begin index -> dL/d(block output)
    for t, (index, layer, begin) in zip(reversed(layers), reversed(entries)):
        t.grad_output = signal
        if layer is None:
            skips[begin] = signal  # the skip branch carries it unchanged to the block's input
            t.grad_input = signal
        else:
            signal = _through(model, layer, t.input, signal)
            # at a block's input (a begin marker, or several nested ones): add the skip branch
            position = index - 1
            while position in skips:
                signal = signal + skips.pop(position)
                position -= 1
            t.grad_input = signal
    if not math.isfinite(result.loss):
        result.notes.append("the loss is not finite; the signals may hold NaN/Inf")


def _dense_steps(model, layers: List[LayerTrace], backward: bool) -> List[DenseStep]:
    steps: List[DenseStep] = []
    by_index = {t.index: t for t in layers}
    lookup = {layer.index: layer for layer in model.flat_layers}
    for t in layers:
        layer = lookup.get(t.index)
        if not isinstance(layer, Dense):
            continue
        after = by_index.get(t.index + 1)
        act_layer = lookup.get(t.index + 1)
        elementwise = (isinstance(act_layer, Activation) and not isinstance(act_layer, Softmax)
                       and after is not None)
        step = DenseStep(number=len(steps) + 1, index=t.index, a_prev=t.input, W=t.weight, b=t.bias,
                         z=t.output, a=after.output if elementwise else t.output,
                         activation=type(act_layer).__name__ if elementwise else None)
        if elementwise:
            ones = np.ones_like(t.output)
            step.fprime = _through(model, act_layer, t.output, ones)
        if backward:
            step.delta, step.dW, step.db = t.grad_output, t.weight_grad, t.bias_grad
            step.delta_a = after.grad_output if elementwise else t.grad_output
        steps.append(step)
    return steps

"""Sequential: a stack of layers compiled into one native network, the only owner of its
handle (``_net``); other modules go through the public methods below."""
from __future__ import annotations

import contextlib
import copyreg
import warnings
from typing import Any, Dict, Iterable, Iterator, List, Optional

import numpy as np
# Every model draws its initial weights and shuffles from a NumPy Generator: load numpy.random
# (about 6 MiB of modules NumPy 2 imports lazily) with mlpcore, not inside the first model build.
import numpy.random  # noqa: F401

from . import _core, saving
from ._validation import (as_inputs, as_sample_weight, as_targets, check_int,
                          beyond_memory, check_positive_finite_or_none, gib, require)
from .custom_loss import custom_batches, custom_evaluate, custom_step
from .errors import NonFiniteLossError
from .layers import (BatchNorm1d, Dense, Dropout, Layer, Residual, Sigmoid, Softmax,
                     flatten_layers, has_parameters, layer_from_config)
from .frozen import FrozenModel
from .losses import PROBABILITY_LOSSES, LossInfo, get_loss, probabilities
from .metrics import accuracy, check_metrics, regression_metrics
from .optim import MAX_STEPS, Optimizer, get_optimizer
from .torch_modules import to_torch
from .trace import Trace, trace as trace_pass
from .training import Trainer

__all__ = ["Sequential", "NonFiniteLossError"]

_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _parse_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"Sequential: dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt.name not in _DTYPES:
        raise TypeError(f"Sequential: dtype must be 'float32' or 'float64', got {dt.name!r}")
    return _DTYPES[dt.name]


class Sequential(Trainer):
    """A multilayer perceptron: layers applied in order, computed by the native core.

    >>> model = Sequential([Dense(64, 128), ReLU(), Dense(128, 10)], dtype="float32", seed=0)
    >>> model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-3))
    """

    def __init__(self, layers: Iterable[Layer], dtype="float32", seed: Optional[int] = None):
        if isinstance(layers, Layer) or not isinstance(layers, Iterable):
            raise TypeError("Sequential: layers must be a list of layers, got "
                            f"{type(layers).__name__}")
        self.layers: List[Layer] = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layers[{i}] must be an mlpcore layer, "
                                f"got {type(layer).__name__}")
        plan = flatten_layers(self.layers)
        objects = [layer for layer, _ in plan if layer is not None]
        if len({id(layer) for layer in objects}) != len(objects):
            raise ValueError("Sequential: the same layer object appears twice; create one per use")
        self.dtype = _parse_dtype(dtype)
        if seed is not None:  # (as a Python int: NumPy's integers are not JSON, for save)
            seed = check_int(seed, owner="Sequential", name="seed", low=0,
                             expected="non-negative", kind="an int or None")
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        _check_memory(plan, self.dtype)
        native = _core.Network32 if self.dtype == np.float32 else _core.Network64
        self._net = native([spec for _, spec in plan])
        # what predict's fast path compares with (plain attributes: a property costs a native
        # call, a third of a batch-1 predict's Python time)
        self._np_dtype = np.dtype(self.dtype)
        self._in_width = self._net.in_features
        for index, (layer, _) in enumerate(plan):
            if layer is not None:
                layer._attach(self._net, index, self)
        self._plan_layers = [layer for layer, _ in plan]  # by plan index (None: a block's end)
        #: every layer in plan order, Residual blocks opened up (their inner layers included)
        self.flat_layers: List[Layer] = [layer for layer, _ in plan
                                         if layer is not None and not isinstance(layer, Residual)]
        for layer in self.flat_layers:
            if isinstance(layer, Dense):
                layer._initialize(self.rng)
        if any(isinstance(layer, Dropout) for layer in self.flat_layers):
            self._net.seed_dropout(int(self.rng.integers(2**63)))
        self.loss: Optional[LossInfo] = None
        self.huber_delta = 1.0
        self.optimizer: Optional[Optimizer] = None
        self.clip_norm: Optional[float] = None
        self.clip_value: Optional[float] = None
        self._synced_opt_version = -1
        self._classes: Optional[np.ndarray] = None

    # --- structure ------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        return self._net.in_features

    @property
    def out_features(self) -> int:
        return self._net.out_features

    @property
    def num_params(self) -> int:
        return self._net.num_params

    def get_config(self) -> Dict[str, Any]:
        return {"dtype": self.dtype.name, "layers": [layer.get_config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config: Dict[str, Any], seed: Optional[int] = None) -> "Sequential":
        """A new, untrained model with the architecture of :meth:`get_config` output (Keras'
        ``from_config``); weights are freshly initialised (``seed``)."""
        if not isinstance(config, dict) or "layers" not in config:
            raise TypeError("Sequential.from_config: config must be a dict as get_config "
                            f"returns (with 'layers'), got {type(config).__name__}")
        layers = [layer_from_config(c) for c in config["layers"]]
        return cls(layers, dtype=config.get("dtype", "float32"), seed=seed)

    @property
    def classes_(self) -> Optional[np.ndarray]:
        """The class names for each output index (scikit-learn's ``classes_``), or None:
        ``model.classes_[model.predict(x).argmax(1)]`` are the predicted names. Set by
        ``mlpcore train`` (or assign a sequence); saved with the model."""
        return self._classes

    @classes_.setter
    def classes_(self, names) -> None:
        if names is None:
            self._classes = None
            return
        arr = np.asarray(names)
        if arr.ndim != 1 or arr.dtype.kind not in "biufU":
            raise TypeError("classes_: expected a 1-D sequence of class names (str or numbers), "
                            f"got {arr.dtype} with shape {arr.shape}")
        self._classes = arr

    def _output_widths(self) -> List[int]:
        """Feature count after each flat layer (plan order)."""
        widths, width = [], self.in_features
        for layer in self.flat_layers:
            width = layer.out_features if isinstance(layer, Dense) else width
            widths.append(width)
        return widths

    def summary(self, print_fn=None) -> None:
        """Print a table of the layers (index, layer, output shape, parameters) and the
        totals, as Keras does; ``print_fn`` (default ``print``) receives each line."""
        print_fn = print if print_fn is None else print_fn
        if not callable(print_fn):
            raise TypeError(f"summary: print_fn must be callable, got {type(print_fn).__name__}")
        rows = []
        for layer, width in zip(self.flat_layers, self._output_widths()):
            n = layer.num_params if has_parameters(layer) else 0
            rows.append((f"{layer.index}", repr(layer), f"(None, {width})", f"{n:,}"))
        head = ("#", "Layer", "Output shape", "Params")
        sizes = [max(len(r[k]) for r in [head, *rows]) for k in range(4)]
        rule = "-" * (sum(sizes) + 6)
        fmt = "{:>%d}  {:<%d}  {:<%d}  {:>%d}" % tuple(sizes)
        buffers = sum(v.size for layer in self.flat_layers for v in layer.buffers().values())
        lines = [f'Model: "Sequential" ({self.dtype.name})', rule, fmt.format(*head), rule,
                 *(fmt.format(*r) for r in rows), rule,
                 f"Total params: {self.num_params + buffers:,}",
                 f"Trainable params: {self.num_params:,}",
                 f"Non-trainable params: {buffers:,}"]
        for line in lines:
            print_fn(line)

    def __repr__(self) -> str:
        return f"Sequential({self.layers!r}, dtype={self.dtype.name!r})"

    def layer_at(self, index: int) -> Optional[Layer]:
        """The layer at plan position ``index`` (its ``layer.index``, as ``summary()`` numbers
        it); None at the position that closes a Residual block."""
        index = check_int(index, owner="layer_at", name="index", low=0, expected=">= 0")
        if index >= len(self._plan_layers):
            raise ValueError(f"layer_at: index must be < {len(self._plan_layers)}, got {index}")
        return self._plan_layers[index]

    def __reduce_ex__(self, protocol):
        # pickle, copy.copy and copy.deepcopy find mlpcore.io's reducer (the bytes of a
        # checkpoint) in copyreg's table before they get here; picklers with a table of their
        # own and subclasses (which io cannot rebuild as such) land here.
        reducer = copyreg.dispatch_table.get(Sequential)
        if type(self) is not Sequential or reducer is None:
            raise TypeError(f"cannot pickle or copy a {type(self).__name__}: only "
                            "mlpcore.Sequential itself pickles; save its weights (model.save, "
                            "get_weights) instead")
        return reducer(self)

    # --- compile --------------------------------------------------------------------------
    def compile(self, loss=None, optimizer="adam", *, huber_delta: float = 1.0,
                clip_norm: Optional[float] = None, clip_value: Optional[float] = None,
                metrics: Optional[List[str]] = None, detect_anomaly: bool = False) -> None:
        """Choose the loss (see :mod:`mlpcore.losses`) and the optimizer (name or instance).

        ``loss`` is required: a name (Keras' names are aliases, see :mod:`mlpcore.losses`),
        or a custom loss: ``fn(prediction, target) -> (value, gradient)``
        (or an object with such a ``value_and_grad`` method), called once per batch.

        ``detect_anomaly=True`` checks every layer's output and gradient for NaN/Inf during
        training; the error then names the layer, the pass (forward, loss or backward) and the
        step. Without it a non-finite loss or gradient still stops training (cheaply).

        ``metrics``: extra training-set metrics for fit's history: ``"mae"`` and ``"r2"`` for
        regression losses (``"accuracy"`` is always reported for classification losses).

        ``clip_norm`` rescales all gradients when their global L2 norm exceeds it, and
        ``clip_value`` clamps each gradient to [-clip_value, clip_value], before every update
        (torch.nn.utils.clip_grad_norm_ / clip_grad_value_ semantics, in that order). The
        pre-clip norm of the last step is ``model.last_grad_norm``.
        """
        if loss is None:
            raise ValueError("compile: loss is required, e.g. compile(loss='cross_entropy') "
                             "for classification or compile(loss='mse') for regression")
        info = get_loss(loss)
        last = self.layers[-1]  # a Residual block ends in its sum, not its last inner layer
        if info.name == "bce" and not isinstance(last, (Sigmoid, Softmax)):
            raise ValueError("compile: loss 'bce' expects probabilities, so the last layer must be "
                             "Sigmoid or Softmax; use loss='bce_with_logits' on raw outputs")
        _warn_double_squashing(info.name, last, loss)
        huber_delta = float(huber_delta)
        require(huber_delta > 0 and np.isfinite(huber_delta), owner="compile", name="huber_delta",
                expected="positive and finite", value=huber_delta)
        clip = [check_positive_finite_or_none(clip_norm, owner="compile", name="clip_norm"),
                check_positive_finite_or_none(clip_value, owner="compile", name="clip_value")]
        metrics = check_metrics(metrics, info)
        opt = get_optimizer(optimizer)
        opt._bind(self)
        if info.custom is None:
            self._net.set_loss(info.kind, huber_delta)
        self._net.set_clipping(*clip)
        self._net.set_sentinel(bool(detect_anomaly))
        self.detect_anomaly = bool(detect_anomaly)
        # (as Python floats, None when off: what save writes and load gives back)
        self.clip_norm, self.clip_value = (float(c) if c else None for c in clip)
        self.loss, self.huber_delta, self.optimizer = info, huber_delta, opt
        self.metrics = metrics
        self._synced_opt_version = -1
        self._sync_optimizer()

    @property
    def last_grad_norm(self) -> float:
        """Global L2 norm of the gradients of the last step, before any clipping."""
        return self._net.last_grad_norm

    def _nonfinite_where(self) -> str:
        """Where the anomaly sentinel saw the first NaN/Inf of the last step ('' if off)."""
        pass_name, index = self._net.sentinel_report()
        if pass_name == "none":
            return ""
        if pass_name == "loss":
            return " (first seen in the loss)"
        layer = self._plan_layers[index]
        kind = type(layer).__name__ if layer is not None else "Residual (end)"
        return f" (first seen in the {pass_name} pass at layer {index}, {kind})"

    def _require_compiled(self, func: str) -> None:
        if self.loss is None:
            raise RuntimeError(f"{func}: call model.compile(loss=..., optimizer=...) first")

    def _sync_optimizer(self) -> None:
        opt = self.optimizer
        if opt is not None and opt._version() != self._synced_opt_version:
            self._net.set_optimizer(opt._native_config())
            self._synced_opt_version = opt._version()

    def _apply_update(self) -> bool:
        """The one update path (statistics, clipping, rule) on the gradients as they are now;
        False, with nothing applied, if one of them is NaN/Inf."""
        self._sync_optimizer()
        return self._net.update()

    def _step_optimizer(self) -> None:
        """optimizer.step(): the update path on the gradients in the gradient views."""
        if not self._apply_update():
            raise NonFiniteLossError("optimizer.step: a gradient is not finite; the weights "
                                     "were left unchanged")

    # --- parameters and state, for the other modules and users ------------------------------
    def params_view(self) -> np.ndarray:
        """Writable flat view of every trainable parameter (weights and biases, plan order):
        the native parameter arena."""
        return self._net.params_view()

    def grads_view(self) -> np.ndarray:
        """Writable flat view of every gradient, laid out as :meth:`params_view`."""
        return self._net.grads_view()

    def get_weights(self) -> List[np.ndarray]:
        """Copies of every layer array a saved file holds, in plan order (Keras style): per
        layer with parameters its weight and bias, then BatchNorm1d's running mean and
        variance."""
        views = list(saving.layer_arrays(self).values())
        return self._locked(lambda: [view.copy() for view in views])

    def _locked(self, fn):
        """``fn()`` with no training step of another thread running (the network's lock held):
        copies taken there are of one state. Calling into the network from ``fn`` raises."""
        return self._net.locked(fn)

    def set_weights(self, weights) -> None:
        """Write arrays shaped as :meth:`get_weights` returns them; all are checked (count,
        shapes, finiteness) before any is written."""
        views = list(saving.layer_arrays(self).items())
        if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
            raise TypeError(f"set_weights: weights must be a list of arrays, "
                            f"got {type(weights).__name__}")
        if len(weights) != len(views):
            raise ValueError(f"set_weights: expected {len(views)} arrays (as get_weights "
                             f"returns), got {len(weights)}")
        checked = []
        for (name, view), value in zip(views, weights):
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"set_weights: {name} must hold real numbers, "
                                f"got dtype {arr.dtype}")
            if arr.shape != view.shape:
                raise ValueError(f"set_weights: {name} must have shape {view.shape}, "
                                 f"got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"set_weights: {name} contains NaN or Inf")
            checked.append(arr)
        for (_, view), arr in zip(views, checked):
            view[...] = arr

    @property
    def dropout_rng_state(self) -> List[int]:
        """State of the native generator that draws dropout masks (four ints); assign a saved
        one to continue the same mask sequence."""
        return list(self._net.dropout_rng_state)

    @dropout_rng_state.setter
    def dropout_rng_state(self, state) -> None:
        self._net.dropout_rng_state = [int(v) for v in state]

    @property
    def optimizer_steps(self) -> int:
        """Updates the optimizer has applied (its step count, e.g. Adam's bias correction)."""
        return int(self._net.optimizer_steps)

    @optimizer_steps.setter
    def optimizer_steps(self, steps: int) -> None:
        self._net.optimizer_steps = check_int(steps, owner="optimizer_steps", name="steps",
                                              low=0, expected=">= 0", high=MAX_STEPS)

    def optimizer_state_views(self) -> Dict[str, np.ndarray]:
        """Writable flat views of the optimizer's native state buffers, by torch.optim's names
        (``exp_avg`` ...), laid out as :meth:`params_view`."""
        self._sync_optimizer()
        net = self._net
        return {name: net.optimizer_state_view(k)
                for k, name in enumerate(net.optimizer_state_names)}

    def layer_outputs(self, x) -> List[np.ndarray]:
        """Every layer's output for ``x`` in inference mode (what predict computes), by plan
        index."""
        return self._net.forward_collect(as_inputs(x, self.dtype, self.in_features,
                                                   "layer_outputs"))

    def trace(self, x, y=None) -> Trace:
        """Every layer's z, a and (with ``y``) delta = dL/dz and gradients for one batch; see
        :mod:`mlpcore.trace`. ``print(model.trace(x, y))`` shows a per-layer table."""
        return trace_pass(self, x, y)

    @contextlib.contextmanager
    def frozen_dropout_masks(self) -> Iterator[None]:
        """Inside, every training-mode pass reuses the dropout masks of the last pass made
        before entering (to differentiate one fixed function, as gradcheck does)."""
        self._net._freeze_dropout_masks(True)
        try:
            yield
        finally:
            self._net._freeze_dropout_masks(False)

    # --- one batch ------------------------------------------------------------------------
    def _batch(self, x, y, func: str):
        """Validated (x, y) for the native core; arrays already in the right form pass as is."""
        x = as_inputs(x, self.dtype, self.in_features, func)
        y = as_targets(y, self.loss, x.shape[0], self.out_features, self.dtype, func)
        return x, y

    def train_step(self, x, y, sample_weight=None) -> float:
        """Forward, loss, backward and optimizer update on one batch; returns the batch loss.

        ``sample_weight`` (n,) weighs each sample's loss (the batch loss is the mean of
        weight x sample loss, as Keras)."""
        self._require_compiled("train_step")
        x, y = self._batch(x, y, "train_step")
        w = as_sample_weight(sample_weight, x.shape[0], self.dtype, "train_step")
        self._sync_optimizer()
        if self.loss.custom is not None:
            _no_weights(w, "train_step")
            loss, finite, _ = custom_step(self._net, self.loss.custom, x, y,
                                          update=self._apply_update)
        else:
            loss, _, finite = self._net.train_step(x, y, w)
        if not finite:
            raise NonFiniteLossError(f"train_step: the loss or a gradient is not finite "
                                     f"(loss={loss}){self._nonfinite_where()}; the weights were "
                                     "left unchanged")
        return loss

    def compute_gradients(self, x, y, *, sample_weight=None, return_input_grad: bool = False,
                          return_correct: bool = False):
        """Forward and backward only: fills the layers' ``weight_grad``/``bias_grad`` views.

        Returns the batch loss, or a tuple ``(loss, dL/dx, correct)`` of what is asked for:
        ``return_input_grad`` adds dL/dx, ``return_correct`` the count of correct predictions
        (classification losses; 0 otherwise).
        """
        self._require_compiled("compute_gradients")
        x, y = self._batch(x, y, "compute_gradients")
        w = as_sample_weight(sample_weight, x.shape[0], self.dtype, "compute_gradients")
        if self.loss.custom is not None:
            _no_weights(w, "compute_gradients")
            loss, _, dx = custom_step(self._net, self.loss.custom, x, y,
                                      want_dx=bool(return_input_grad))
            correct = 0
        else:
            loss, correct, _, dx = self._net.compute_gradients(x, y, bool(return_input_grad), w)
        out = (loss, *((dx,) if return_input_grad else ()), *((correct,) if return_correct else ()))
        return out if len(out) > 1 else loss

    def set_batchnorm_reducer(self, fn) -> None:
        """Synchronised BatchNorm for a hand-written data-parallel loop (``fit(...,
        distributed=True)`` installs one itself). During training passes every
        ``BatchNorm1d(synchronized=True)`` calls ``fn(values, kind)``, which must sum the
        float64 array ``values`` over the replicas in place: kind 0 holds the per-feature sums
        of x and then the row count, kind 1 the squared deviations from the global mean, kind 2
        the backward sums of dy and dy * xhat and then the row count. Every replica makes the
        same calls in the same order. An exception raised by ``fn`` is raised by the training
        call once its pass is over. ``None`` turns it off."""
        flags = [isinstance(layer, BatchNorm1d) and layer.synchronized
                 for layer in self._plan_layers]
        self._net.set_stat_reducer(fn, flags)

    def apply_gradients(self) -> None:
        """One optimizer update from the gradients now in :meth:`grads_view` (after
        :meth:`compute_gradients`, edits, or an allreduce across ranks): clipping measures
        these gradients. NonFiniteLossError, with nothing applied, if one is NaN/Inf."""
        self._require_compiled("apply_gradients")
        if not self._apply_update():
            raise NonFiniteLossError("apply_gradients: a gradient is not finite; the weights "
                                     "were left unchanged")

    # --- whole data sets ------------------------------------------------------------------
    def predict(self, x, batch_size: Optional[int] = None, *,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        """Network output for every row of x (logits when the loss fuses softmax/sigmoid; see
        :meth:`predict_proba`).

        ``batch_size`` (Keras' argument) bounds the rows computed per native call (None: the
        core's own chunking); the result does not depend on it. ``out``: a C-contiguous,
        writable (n, out_features) array of the model's dtype that receives the result (and
        is returned); a service calling predict row by row can reuse one and allocate nothing
        per call."""
        if not (type(x) is np.ndarray and x.dtype is self._np_dtype and x.ndim == 2
                and x.shape[1] == self._in_width and x.shape[0] and x.flags.c_contiguous):
            x = as_inputs(x, self.dtype, self.in_features, "predict")
        # an array already in the model's form goes straight to the native checks (finiteness)
        rows = x.shape[0]
        if batch_size is not None:
            batch_size = check_int(batch_size, owner="predict", name="batch_size")
        if batch_size is None or batch_size >= rows:
            return self._net.predict(x, out)
        x = as_inputs(x, self.dtype, self.in_features, "predict")  # errors index x, not a chunk
        if out is None:
            out = np.empty((rows, self.out_features), dtype=self.dtype)
        elif not (isinstance(out, np.ndarray) and out.shape == (rows, self.out_features)):
            return self._net.predict(x, out)  # the native checks say what is wrong with out
        for i in range(0, rows, batch_size):
            self._net.predict(x[i:i + batch_size], out[i:i + batch_size])
        return out

    def predict_proba(self, x, batch_size: Optional[int] = None) -> np.ndarray:
        """Class probabilities, by the compiled loss: softmax of the logits for
        ``cross_entropy`` (rows sum to 1), sigmoid for ``bce_with_logits``, the output as is
        for ``bce`` (whose model ends in Sigmoid/Softmax). Regression and custom losses have
        no probabilities: ValueError."""
        self._require_compiled("predict_proba")
        name = self.loss.name
        if self.loss.custom is not None or name not in PROBABILITY_LOSSES:
            raise ValueError(f"predict_proba: the model's loss {name!r} does not define class "
                             "probabilities (cross_entropy, bce_with_logits and bce do); use "
                             "predict")
        return probabilities(self.predict(x, batch_size=batch_size), name)

    def freeze(self) -> FrozenModel:
        """A read-only copy of this model for serving (as an ONNX Runtime session or
        ``torch.jit.freeze``): the same layers and weights, with every Dense weight also packed
        once into the layout the running CPU's matrix kernels read, so that ``predict`` does
        not pack it on every call. It gives the same bits as this model's ``predict``; later
        changes to this model do not reach it. The packed copies take as much memory again as
        the Dense weights. Pays where the weights do not fit in L2 (784-1024-1024-10, 16
        rows: 1.4-1.6x faster here); small layers are read in place either way."""
        clone = Sequential.from_config(self.get_config(), seed=0)
        clone.set_weights(self.get_weights())
        clone.classes_ = self.classes_
        clone._net.prepack_weights()
        loss = self.loss.name if self.loss is not None and self.loss.custom is None else None
        return FrozenModel(clone, loss)

    def evaluate(self, x, y, sample_weight=None) -> Dict[str, float]:
        """Mean loss over (x, y), and accuracy for classification losses or the mean
        absolute error ``mae`` and R² ``r2`` (from :meth:`predict`) for regression losses."""
        self._require_compiled("evaluate")
        x, y = self._batch(x, y, "evaluate")
        w = as_sample_weight(sample_weight, x.shape[0], self.dtype, "evaluate")
        if self.loss.custom is not None:
            _no_weights(w, "evaluate")
            return {"loss": custom_evaluate(self._net, self.loss.custom, x, y)}
        loss, correct, _ = self._net.evaluate(x, y, w)
        result = {"loss": float(loss)}
        if self.loss.classification:
            result["accuracy"] = accuracy(correct, x.shape[0], self.loss, y)
        else:
            result.update(regression_metrics(self._net.predict(x), y))
        return result

    def save(self, path) -> None:
        """Write architecture, weights and optimizer state to a safetensors file (atomically)."""
        saving.save(self, path)

    # --- the native side of Trainer.fit -----------------------------------------------------
    def _train_batches(self, x, y, order, batch_size, first_batch, n_batches, weights=None):
        # A batch larger than the data is the whole data (and 2**63 would not fit the native
        # index type)
        batch_size = min(batch_size, x.shape[0])
        if self.loss.custom is not None:
            return custom_batches(self._net, self.loss.custom, self._apply_update, x, y, order,
                                  batch_size, first_batch, n_batches, weights)
        extra = () if weights is None else (weights,)
        return self._net.train_batches(x, y, order, batch_size, first_batch, n_batches, *extra)

    def _train_epochs(self, x, y, seeds, batch_size, epochs, rule, weights=None):
        """Whole epochs in one native call (see Trainer._fit_epochs); None for a custom loss,
        whose batches need Python."""
        if self.loss.custom is not None:
            return None
        return self._net.train_epochs(x, y, seeds, min(batch_size, x.shape[0]), epochs, rule,
                                      weights)

    def _predict_array(self, x: np.ndarray) -> np.ndarray:
        return self._net.predict(x)

    def _set_diagnostics(self, on: bool) -> None:
        self._net.set_diagnostics(bool(on))

    def _take_stats(self) -> Dict:
        return self._net.take_stats()

    def to_torch(self):
        """The equivalent torch.nn.Sequential (needs PyTorch); see :mod:`mlpcore.torch_interop`."""
        return to_torch(self)


def _check_memory(plan, dtype) -> None:
    """MemoryError, naming the largest layer, for parameters and gradients beyond this
    machine's RAM (the native allocation would be granted, then killed when touched)."""
    sized = [layer for layer, _ in plan if layer is not None and has_parameters(layer)]
    if any(layer.num_params > _core._max_elements for layer in sized):
        return  # no machine holds it: the native constructor's ValueError names the layer
    n_bytes = 2 * sum(layer.num_params for layer in sized) * np.dtype(dtype).itemsize
    total = beyond_memory(n_bytes)
    if total is not None:
        largest = max(sized, key=lambda layer: layer.num_params)
        raise MemoryError(f"Sequential: the parameters and their gradients need {gib(n_bytes)}, "
                          f"more than this machine's {gib(total)} of memory "
                          f"(the largest layer: {largest!r}, {largest.num_params:,} parameters)")


def _warn_double_squashing(loss_name: str, last, given) -> None:
    """A loss that applies softmax / sigmoid itself after a layer that already did trains on a
    squashed copy (slow, poor optima): warn, naming the fix."""
    fused = {"cross_entropy": (Softmax, "softmax"), "bce_with_logits": (Sigmoid, "sigmoid")}
    if loss_name in fused and isinstance(last, fused[loss_name][0]):
        layer, fn = type(last).__name__, fused[loss_name][1]
        alias = f" ({given!r} means {loss_name!r} here)" if given != loss_name else ""
        warnings.warn(f"compile: the last layer is {layer} but loss {loss_name!r}{alias} applies "
                      f"{fn} itself, so it would be applied twice; remove the {layer} layer "
                      f"(predict_proba gives probabilities)"
                      + (" or use loss='bce'" if loss_name == "bce_with_logits" else ""),
                      UserWarning, stacklevel=3)


def _no_weights(w, func: str) -> None:
    if w is not None:
        raise ValueError(f"{func}: sample_weight is not supported with a custom loss "
                         "(weigh the samples inside the loss instead)")

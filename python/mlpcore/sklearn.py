"""scikit-learn drop-ins: :class:`MLPClassifier` and :class:`MLPRegressor`, trained by mlpcore.

They take scikit-learn's constructor parameters with the same names, defaults and meaning, fit
the same networks (the same initial weights for a given ``random_state``), expose the same
fitted attributes and work in Pipelines, ``GridSearchCV``, ``cross_val_score``, ``clone`` and
joblib. The epochs run natively: all of a fit's epochs in one call when ``tol`` /
``n_iter_no_change`` alone decide when to stop (the native loop applies scikit-learn's rule and
the loss curve is recorded afterwards), else one call per epoch with the per-epoch bookkeeping
(early stopping, learning-rate schedules, ``verbose``) in Python between them.

How scikit-learn's training maps onto mlpcore's (``k`` = number of network outputs):

* The losses differ by a constant factor ``c`` (mlpcore's gradient / scikit-learn's): softmax
  cross-entropy ``c = 1``; sigmoid log-loss (binary, multi-label) ``c = 1 / k`` (mlpcore averages
  over outputs, scikit-learn sums); squared error ``c = 2 / k`` (scikit-learn's gradient is
  ``(pred - y) / n``, mlpcore's MSE gives ``2 (pred - y) / (n k)``). Every hyper-parameter that
  the scale reaches is converted by ``c`` so that the updates are scikit-learn's: the SGD
  learning rate is divided by ``c``, Adam's epsilon multiplied by it, the L2 term below scaled
  by it, and the reported ``loss_`` divided by it.
* ``alpha``: scikit-learn adds ``alpha * ||W||^2 / (2 n_batch)`` to each batch's loss (weights,
  not intercepts), i.e. the gradient ``alpha * W / n_batch``. mlpcore's ``Dense(l2=...)`` adds
  ``l2 * ||W||^2`` (weights only) to the batch loss, so ``l2 = c * alpha / (2 * batch_size)``.
  The one difference: scikit-learn's smaller last batch of an epoch gets a slightly larger
  penalty; here every batch gets the full-batch one.
* Adam is scikit-learn's: epsilon added to ``sqrt(v)`` before the bias correction
  (``optim.Adam(eps_before_correction=True)``; torch's default adds it after).
* SGD momentum: scikit-learn's velocity ``v = momentum v - lr g`` is torch's buffer times
  ``-lr``; with a constant rate the updates are the same, with a changing one (invscaling,
  adaptive) they differ slightly (torch's rule applies the new rate to the whole buffer).
* ``sample_weight`` is scaled to mean 1: mlpcore averages ``w_i * loss_i`` over the batch,
  scikit-learn divides by the batch's weight sum; with mean-1 weights both agree on average.

Extra keyword arguments (defaults keep the drop-in behaviour): ``dropout`` (after each hidden
activation), ``batch_norm`` (BatchNorm1d before each hidden activation), ``class_weight``
(classifier: dict or ``"balanced"``), ``dtype`` (``"float32"`` or ``"float64"``),
``n_threads`` (mlpcore threads during fit/predict), ``optimizer="adamw"`` (Adam with ``alpha``
as decoupled weight decay instead of the L2 loss term), and the activations leaky_relu, gelu,
silu, elu and selu. ``model_`` is the trained :class:`mlpcore.Sequential`. ``solver="lbfgs"``
runs scipy's L-BFGS-B over the full batch with mlpcore computing loss and gradients.

Sparse input is accepted and densified one batch at a time (training then steps batch by batch
from Python, slower than the native epochs on dense input), predict and validation scoring a
chunk of rows at a time (at most 64 MiB of dense copies); ``solver="lbfgs"`` densifies all of
X and refuses a sparse X whose dense copy would pass 1 GiB.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from numbers import Integral, Real

import numpy as np

try:
    import scipy.sparse as sp
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.class_weight import compute_sample_weight
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import (
        _check_sample_weight,
        check_is_fitted,
        column_or_1d,
        validate_data,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("mlpcore.sklearn needs scikit-learn >= 1.6 (and SciPy): "
                      "pip install 'scikit-learn>=1.6'") from exc

from . import _core, optim
from ._validation import beyond_memory, cast_checked, cast_finite, gib, is_int
from .errors import NonFiniteLossError
from .layers import BatchNorm1d, Dense, Dropout, get_activation, layer_from_config
from .model import Sequential

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity", "logistic", "tanh", "relu",  # scikit-learn's
                "leaky_relu", "gelu", "silu", "elu", "selu"}  # mlpcore's extras
_SPARSE_PREDICT_ROWS = 4096  # rows densified at a time in predict and validation scoring, at most
_SPARSE_CHUNK_BYTES = 64 * 2**20  # ... and fewer for wide data: the dense copies of one chunk
_LBFGS_SPARSE_MAX_BYTES = 2**30  # lbfgs densifies all of a sparse X: up to this size
_SPARSE_BATCH_MAX_BYTES = 2**30  # adam / sgd densify one batch of a sparse X: up to this size
_NEVER = 2**62  # epochs without improvement that n_iter_no_change=np.inf (or more) waits for


@contextlib.contextmanager
def _threads(n_threads):
    if n_threads is None:
        yield
        return
    old = _core.get_num_threads()
    _core.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        _core.set_num_threads(old)


def _refuse_non_numeric(values, name: str) -> None:
    """TypeError for strings, bytes, records, dates or durations given as numbers (NumPy would
    convert '1.5' or a datetime silently; scikit-learn refuses them): sparse matrices and
    DataFrames are left to validate_data."""
    if sp.issparse(values) or hasattr(values, "iloc"):
        return
    dtype = getattr(values, "dtype", None)
    if not isinstance(dtype, np.dtype):
        dtype = np.asarray(values).dtype  # (a list: converted as validate_data will)
    if dtype.kind in "USVMm":
        raise TypeError(f"{name} must hold numbers, got an array of dtype {dtype}")


def _normalized_weights(w: np.ndarray, name: str):
    """(w / max(w), max(w)) for finite non-negative weights (dividing first: sums of huge
    weights would overflow); ValueError naming ``name`` otherwise."""
    if not np.isfinite(w).all():
        raise ValueError(f"{name} must be finite, got {w[~np.isfinite(w)][0]}")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative, got a minimum of {w.min()}")
    peak = float(w.max())
    if not peak > 0:
        raise ValueError(f"{name} must have a positive sum")
    return w / peak, peak


def _snapshot(model):
    """(view, copy) pairs of every trained array of ``model`` (to restore the best epoch)."""
    pairs = []
    for layer in model.flat_layers:
        for name in ("weight", "bias", "running_mean", "running_var"):
            if hasattr(type(layer), name):
                view = getattr(layer, name)
                pairs.append((view, view.copy()))
    return pairs


class _LayerArrays(list):
    """coefs_ / intercepts_: views of the Dense layers' weights (or biases), as a list whose
    items can be assigned: ``coefs_[i] = W`` writes W into layer i, as assigning into
    scikit-learn's list changes its model."""

    def __init__(self, layers, attr: str, name: str) -> None:
        super().__init__(getattr(layer, attr) for layer in layers)
        self._layers, self._attr, self._name = layers, attr, name

    def _check(self, index: int, value) -> np.ndarray:
        view = list.__getitem__(self, index)
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{self._name}[{index}] must hold real numbers, got dtype "
                            f"{array.dtype}")
        if array.shape != view.shape:
            raise ValueError(f"{self._name}[{index}] must have shape {view.shape}, got "
                             f"{array.shape}")
        return array

    def __reduce__(self):  # (pickled or deep-copied alone: a plain list of copies)
        return list, ([np.array(view) for view in self],)

    def __setitem__(self, index, value) -> None:
        if not isinstance(index, Integral):
            raise TypeError(f"{self._name}: assign one array at a time ({self._name}[i] = "
                            f"array), got index {index!r}")
        index = range(len(self))[index]  # (negative indices; IndexError past the end)
        setattr(self._layers[index], self._attr, self._check(index, value))


class _BaseMLP(BaseEstimator):
    """What both estimators share: parameters, network building, the training loop."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(_ACTIVATIONS)],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_norm": ["boolean"],
        "dtype": [StrOptions({"float32", "float64"})],
        "n_threads": [Interval(Integral, 1, 1024, closed="both"), None],
        "optimizer": [StrOptions({"adamw"}), None],
    }

    # --- the fitted arrays are live views of the network's weights ----------------------------
    @property
    def coefs_(self):
        """Weight matrices (n_in, n_out) of the Dense layers: writable views of ``model_``;
        ``coefs_[i] = W`` writes W into the network, as into scikit-learn's list."""
        check_is_fitted(self, "model_")
        return _LayerArrays(self._dense_layers(), "weight", "coefs_")

    @coefs_.setter
    def coefs_(self, values) -> None:
        self._set_layer_arrays(values, "weight", "coefs_")

    @property
    def intercepts_(self):
        """Bias vectors of the Dense layers: writable views of ``model_``; ``intercepts_[i] =
        b`` writes b into the network."""
        check_is_fitted(self, "model_")
        return _LayerArrays(self._dense_layers(), "bias", "intercepts_")

    @intercepts_.setter
    def intercepts_(self, values) -> None:
        self._set_layer_arrays(values, "bias", "intercepts_")

    def _set_layer_arrays(self, values, attr: str, name: str) -> None:
        check_is_fitted(self, "model_", msg=f"{name} can be assigned only on a fitted "
                        f"%(name)s (it writes into the trained network); call fit first")
        layers = self._dense_layers()
        values = list(values) if isinstance(values, (list, tuple)) else values
        if not isinstance(values, list) or len(values) != len(layers):
            got = f"{len(values)} arrays" if isinstance(values, list) else type(values).__name__
            raise ValueError(f"{name} must be a list of {len(layers)} arrays (one per layer), "
                             f"got {got}")
        views = _LayerArrays(layers, attr, name)
        arrays = [views._check(i, value) for i, value in enumerate(values)]  # all, then write
        for layer, array in zip(layers, arrays):
            setattr(layer, attr, array)

    def _dense_layers(self):
        return [layer for layer in self.model_.flat_layers if isinstance(layer, Dense)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # --- building ------------------------------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        for size in sizes:
            if not is_int(size):
                raise TypeError(f"hidden_layer_sizes must hold integers, got {size!r} "
                                f"({type(size).__name__}) in {self.hidden_layer_sizes!r}")
        if any(int(s) <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    def _architecture(self) -> dict:
        """The parameters that shape the network (warm_start and partial_fit keep it)."""
        return {"hidden_layer_sizes": tuple(self._hidden_sizes()), "activation": self.activation,
                "dropout": float(self.dropout), "batch_norm": bool(self.batch_norm),
                "dtype": self.dtype}

    def _check_architecture(self, incremental: bool) -> None:
        """warm_start and partial_fit train the fitted network on: refuse parameters that
        would shape another one (else the fit would silently ignore them)."""
        built = getattr(self, "_built_architecture", None)
        if built is None:
            return
        now = self._architecture()
        changed = [name for name in built if built[name] != now[name]]
        if changed:
            how = "partial_fit" if incremental else "fit with warm_start=True"
            raise ValueError(f"{how} trains the fitted network on, built with "
                             + ", ".join(f"{k}={built[k]!r}" for k in changed) + "; now "
                             + ", ".join(f"{k}={now[k]!r}" for k in changed)
                             + ". Fit with warm_start=False (or a clone) for a new network.")

    def _check_network_memory(self, layer_units) -> None:
        """ValueError naming hidden_layer_sizes for a network beyond this machine's memory: the
        initial weights (drawn in float64), the parameters, their gradients and two optimizer
        states would be granted by overcommit and killed when touched."""
        pairs = list(zip(layer_units[:-1], layer_units[1:]))
        n_params = sum(a * b + b for a, b in pairs)
        n_bytes = n_params * (8 + 4 * np.dtype(self.dtype).itemsize)
        total = beyond_memory(n_bytes)
        if total is not None:
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r}: the network for "
                             f"{layer_units[0]} features has {n_params:,} parameters and needs "
                             f"about {gib(n_bytes)} to train, more than this machine's "
                             f"{gib(total)} of memory")

    def _grad_scale(self) -> float:
        """mlpcore's loss (and gradient) divided by scikit-learn's for this output layer."""
        k = self.n_outputs_
        return {"softmax": 1.0, "logistic": 1.0 / k, "identity": 2.0 / k}[self.out_activation_]

    def _loss_scale(self) -> float:
        """mlpcore's reported loss divided by scikit-learn's. For several regression outputs
        scikit-learn's loss (a mean over outputs) and gradient (a sum) disagree by the output
        count; the gradient is matched (see above), and the reported squared error is halved
        as scikit-learn's: its alpha term then shows divided by the number of outputs."""
        return 2.0 if self.out_activation_ == "identity" else self._grad_scale()

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                          "to be clipped", stacklevel=2)
        return int(np.clip(self.batch_size, 1, n_samples))

    def _build(self, layer_units, rs, l2: float) -> None:
        """A new network with scikit-learn's Glorot-uniform initial weights and intercepts,
        drawn from ``rs`` in scikit-learn's order (so a random_state gives its initial net)."""
        layers = []
        n_hidden = len(layer_units) - 2
        for i, (fan_in, fan_out) in enumerate(zip(layer_units[:-1], layer_units[1:])):
            layers.append(Dense(fan_in, fan_out, l2=l2 if self.optimizer is None else 0.0))
            if i < n_hidden:
                if self.batch_norm:
                    layers.append(BatchNorm1d(fan_out))
                layers.append(get_activation(self.activation))
                if self.dropout > 0:
                    layers.append(Dropout(self.dropout))
        factor = 2.0 if self.activation == "logistic" else 6.0
        init = []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            init.append((rs.uniform(-bound, bound, (fan_in, fan_out)),
                         rs.uniform(-bound, bound, fan_out)))
        # the network's own seed (dropout masks) comes from a copy of rs: rs itself goes on to
        # draw the early-stopping split exactly as scikit-learn's does
        twin = np.random.RandomState()
        twin.set_state(rs.get_state())
        model = Sequential(layers, dtype=self.dtype, seed=int(twin.randint(np.iinfo(np.int32).max)))
        dense = [layer for layer in model.flat_layers if isinstance(layer, Dense)]
        for layer, (w, b) in zip(dense, init):
            layer.weight, layer.bias = w, b
        self.model_ = model

    def _initialize(self, Y, layer_units, rs, batch_size: int) -> None:
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        self._l2 = self._l2_for(batch_size)
        self._check_network_memory(layer_units)
        self._build(layer_units, rs, self._l2)
        self._built_architecture = self._architecture()
        if self.solver == "lbfgs":
            return
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _new_optimizer(self):
        c = self._grad_scale()
        if self.solver == "sgd":
            self._learning_rate = float(self.learning_rate_init)
            momentum = float(self.momentum)
            return optim.SGD(lr=self._learning_rate / c, momentum=momentum,
                             nesterov=bool(self.nesterovs_momentum) and momentum > 0)
        # scikit-learn's Adam: epsilon added before the bias correction
        hyper = dict(lr=float(self.learning_rate_init),
                     betas=(float(self.beta_1), float(self.beta_2)),
                     eps=float(self.epsilon) * c, eps_before_correction=True)
        if self.optimizer == "adamw":
            return optim.AdamW(weight_decay=self.alpha, **hyper)
        return optim.Adam(**hyper)

    def _l2_for(self, batch_size: int) -> float:
        """Dense's l2 giving scikit-learn's alpha penalty for batches of ``batch_size``."""
        if self.optimizer is not None:  # adamw: alpha is the decoupled weight decay instead
            return 0.0
        return self._grad_scale() * self.alpha / (2.0 * batch_size)

    def _training_batch_size(self, n_samples: int, weight_sum: float) -> float:
        """The batch size of the coming fit (lbfgs: the whole set, counted as the sum of the
        sample weights as scikit-learn divides the penalty by it; early stopping holds out
        ceil(validation_fraction * n) rows first, as train_test_split does)."""
        if self.solver == "lbfgs":
            return weight_sum
        if self.early_stopping:
            n_samples -= math.ceil(self.validation_fraction * n_samples)
        return self._batch_size(max(n_samples, 1))

    def _compile(self, batch_size: int, fresh_optimizer: bool) -> None:
        """Set the L2 term for this batch size and (re)start or keep the optimizer."""
        l2 = self._l2_for(batch_size)
        model = self.model_
        if l2 != self._l2:  # the penalty lives in the layers: rebuild them around the weights
            self._rebuild_with_l2(l2)
            model = self.model_
        if fresh_optimizer or model.optimizer is None:
            opt = self._new_optimizer()
            if model.optimizer is not None and type(model.optimizer) is type(opt):
                # the native state of the same rule would carry over: start it from zero
                model.compile(loss=self._mc_loss(), optimizer=opt)
                opt.load_state_dict({"name": type(opt).__name__,
                                     "param_groups": [dict(opt.param_groups[0])], "step": 0,
                                     "state": {k: np.zeros_like(v) for k, v in opt.state.items()}})
            else:
                model.compile(loss=self._mc_loss(), optimizer=opt)

    def _rebuild_with_l2(self, l2: float) -> None:
        old = self.model_
        layers = [_with_l2(layer, l2) for layer in old.layers]
        new = Sequential(layers, dtype=old.dtype, seed=old.seed)
        for (view, _), (_, value) in zip(_snapshot(new), _snapshot(old)):
            view[...] = value
        new.rng = old.rng
        if old.optimizer is not None:
            state = old.optimizer.state_dict()
            opt = optim.optimizer_from_state(state)
            new.compile(loss=old.loss.name, optimizer=opt)
            opt.load_state_dict(state)
        self.model_ = new
        self._l2 = l2

    # --- training ------------------------------------------------------------------------------
    def _fit(self, X, y, sample_weight=None, incremental=False):
        # Until training starts, a refused fit leaves a fitted estimator as it was (the input
        # checks set classes_, n_features_in_ and the label binarizer as they go).
        fitted = dict(self.__dict__)
        try:
            X, Y, sample_weight, rs, batch_size = self._prepare_fit(X, y, sample_weight,
                                                                    incremental)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(fitted)
            raise
        with _threads(self.n_threads):
            try:
                if self.solver == "lbfgs":
                    self._fit_lbfgs(X, Y, sample_weight, batch_size)
                else:
                    self._fit_stochastic(X, Y, sample_weight, rs, incremental, batch_size)
            except NonFiniteLossError:
                raise ValueError("Solver produced non-finite parameter weights. The input data "
                                 "may contain large values and need to be preprocessed.") from None
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")
        return self

    def _prepare_fit(self, X, y, sample_weight, incremental):
        """The checked inputs and the network to train (built on a first pass)."""
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        if not first_pass:
            self._check_architecture(incremental)
        dense = not sp.issparse(X)
        _refuse_non_numeric(X, "X")
        X, Y = self._validate_input(X, y, incremental, reset=first_pass, check_finite=not dense)
        if dense and sp.issparse(X):  # (a DataFrame of pandas' sparse columns becomes CSR)
            if not np.isfinite(X.data).all():
                raise ValueError("Input X contains NaN or infinity.")
        elif dense:  # cast to the model's dtype and checked for NaN/Inf in one pass
            X = cast_finite(X, self.dtype, "X")
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        sample_weight, weight_sum = self._sample_weight(sample_weight, X, y)
        self._check_extras()
        rs = check_random_state(self.random_state)
        batch_size = self._training_batch_size(X.shape[0], weight_sum)
        if first_pass:
            self._initialize(Y, [X.shape[1], *hidden, Y.shape[1]], rs, batch_size)
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs, the fitted network {self.n_outputs_}")
        return X, Y, sample_weight, rs, batch_size

    def _check_extras(self) -> None:
        if self.optimizer == "adamw" and self.solver != "adam":
            raise ValueError(f"optimizer='adamw' is a variant of solver='adam', got "
                             f"solver={self.solver!r}")
        if self.solver == "lbfgs" and (self.dropout > 0 or self.batch_norm):
            raise ValueError("solver='lbfgs' needs a deterministic full-batch loss: use "
                             "dropout=0 and batch_norm=False (or solver='adam' / 'sgd')")

    def _sample_weight(self, sample_weight, X, y):
        """The weights scaled to mean 1 (see above), and their sum as given (lbfgs divides the
        penalty by it; infinite if it overflows, as scikit-learn's would)."""
        scale = 1.0
        if sample_weight is not None:
            sample_weight, scale = _normalized_weights(
                _check_sample_weight(sample_weight, X, dtype=np.float64), "sample_weight")
        class_weight = getattr(self, "class_weight", None)
        if isinstance(class_weight, dict):
            for label, weight in class_weight.items():
                if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, Real):
                    raise TypeError(f"class_weight[{label!r}] must be a number, got "
                                    f"{type(weight).__name__}")
        if class_weight is not None:
            cw, cw_scale = _normalized_weights(compute_sample_weight(class_weight, y),
                                               "class_weight")
            sample_weight = cw if sample_weight is None else sample_weight * cw
            scale *= cw_scale
        if sample_weight is None:
            return None, float(X.shape[0])
        total = float(sample_weight.sum())
        if not total > 0:
            raise ValueError("sample_weight (times class_weight) must have a positive sum")
        return sample_weight * (len(sample_weight) / total), total * scale

    def _native_targets(self, Y):
        """Y (n, k) as mlpcore's loss reads it: class indices for softmax, else float rows."""
        if self.out_activation_ == "softmax":  # one-hot rows: the column of each row's 1
            # (a product with 0, 1, ..., k-1, exact; argmax over a few columns is 7x slower)
            return (Y @ np.arange(Y.shape[1], dtype=Y.dtype)).astype(np.int64)
        return cast_checked(Y, self.model_.dtype, "y")

    def _fit_stochastic(self, X, Y, sample_weight, rs, incremental, batch_size):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        fresh = not incremental or self.model_.optimizer is None
        if self.early_stopping:
            stratify = Y if self._is_classifier() and self.n_outputs_ == 1 else None
            parts = [X, Y] if sample_weight is None else [X, Y, sample_weight]
            split = train_test_split(*parts, random_state=rs, test_size=self.validation_fraction,
                                     stratify=stratify)
            X, X_val, Y, Y_val = split[:4]
            sample_weight, sw_val = (split[4], split[5]) if sample_weight is not None \
                else (None, None)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            validation = (X_val, Y_val, sw_val)
        else:
            validation = None
        n_samples = X.shape[0]
        self.n_iter_ = 0  # epochs of this call, as scikit-learn counts them (t_ goes on)
        self._compile(batch_size, fresh)
        model = self.model_
        model.rng = np.random.default_rng(rs.randint(np.iinfo(np.int32).max, size=4))
        if fresh:
            self._learning_rate = float(self.learning_rate_init)
        best = _snapshot(model) if self.early_stopping else None
        epochs = 1 if incremental else self.max_iter
        state = {"stopped": False}

        def end_epoch(mc_loss: float) -> bool:
            stop = self._end_epoch(mc_loss, n_samples, validation, incremental, best)
            state["stopped"] = stop
            return stop

        T = self._native_targets(Y)
        w = None if sample_weight is None else sample_weight.astype(model.dtype)
        if sp.issparse(X):
            X = X.tocsr()
            _check_sparse_batch(X, batch_size, model.dtype)
            for _ in range(epochs):
                if end_epoch(self._sparse_epoch(X, T, w, batch_size)):
                    break
        else:
            X = cast_checked(X, model.dtype, "X")
            model._fit_epochs(X, T, epochs=epochs, batch_size=batch_size,
                              shuffle=bool(self.shuffle), sample_weight=w, end_epoch=end_epoch,
                              plateau=self._native_plateau(validation), x_finite=True)
        if self.early_stopping:
            for view, value in best:  # restore the best validation epoch's weights
                view[...] = value

    def _native_plateau(self, validation):
        """_end_epoch's stopping rule for the native epoch loop, when that rule alone decides
        (no validation score, no per-epoch learning rate, nothing printed); else None."""
        if validation is not None or self.verbose or (
                self.solver == "sgd" and self.learning_rate != "constant"):
            return None
        # (np.inf or a huge count: never reached, as a native 64-bit count)
        patience = min(self.n_iter_no_change, _NEVER)
        return (self._loss_scale(), float(self.tol), float(self.best_loss_),
                int(patience), int(self._no_improvement_count))

    def _sparse_epoch(self, X, T, w, batch_size: int) -> float:
        model = self.model_
        n = X.shape[0]
        order = model.rng.permutation(n) if self.shuffle else np.arange(n)
        total = 0.0
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            xb = cast_checked(X[rows].toarray(), model.dtype, "X")
            total += model.train_step(xb, T[rows], None if w is None else w[rows]) * len(rows)
        return total / n

    def _end_epoch(self, mc_loss, n_samples, validation, incremental, best) -> bool:
        """scikit-learn's bookkeeping after an epoch; True to stop training."""
        self.n_iter_ += 1
        self.loss_ = float(mc_loss) / self._loss_scale()
        self.t_ += n_samples
        self.loss_curve_.append(self.loss_)
        if self.verbose:
            print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
        if validation is not None:
            score = self._validation_score(*validation)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                for view, value in best:
                    value[...] = view
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            self._set_learning_rate(self.learning_rate_init / (self.t_ + 1) ** self.power_t)
        if self._no_improvement_count > self.n_iter_no_change:
            what = "Validation score" if validation is not None else "Training loss"
            msg = (f"{what} did not improve more than tol={self.tol:f} for "
                   f"{self.n_iter_no_change} consecutive epochs.")
            if self._trigger_stopping(msg):
                return True
            self._no_improvement_count = 0
        if not incremental and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=2)
        return incremental

    def _set_learning_rate(self, lr: float) -> None:
        self._learning_rate = float(lr)
        self.model_.optimizer.lr = self._learning_rate / self._grad_scale()

    def _trigger_stopping(self, msg: str) -> bool:
        if self.solver == "adam" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_learning_rate(self._learning_rate / 5.0)
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._learning_rate)
        return False

    def _fit_lbfgs(self, X, Y, sample_weight, weight_sum: float) -> None:
        """scipy's L-BFGS-B over all parameters, full batch (scikit-learn's lbfgs solver)."""
        from scipy.optimize import minimize

        self._compile(weight_sum, fresh_optimizer=True)
        model = self.model_
        dense_views = [(layer.weight, layer.weight_grad, layer.bias, layer.bias_grad)
                       for layer in self._dense_layers()]
        if sp.issparse(X):
            dense_bytes = X.shape[0] * X.shape[1] * np.dtype(model.dtype).itemsize
            if dense_bytes > _LBFGS_SPARSE_MAX_BYTES:
                raise ValueError(f"solver='lbfgs' trains on all of X at once: the sparse X of "
                                 f"shape {X.shape} would take {gib(dense_bytes)} dense (at most "
                                 f"{gib(_LBFGS_SPARSE_MAX_BYTES)}); use solver='adam' or 'sgd', "
                                 "which densify one batch at a time")
            X = X.toarray()
        X = cast_checked(X, model.dtype, "X")
        T = self._native_targets(Y)
        w = None if sample_weight is None else sample_weight.astype(model.dtype)
        c = self._grad_scale()

        def loss_and_grad(theta):
            offset = 0
            for wv, _, bv, _ in dense_views:
                for v in (wv, bv):
                    v[...] = theta[offset:offset + v.size].reshape(v.shape)
                    offset += v.size
            loss = model.compute_gradients(X, T, sample_weight=w)
            grad = np.concatenate([a.ravel() for _, wg, _, bg in dense_views for a in (wg, bg)])
            return loss / self._loss_scale(), grad.astype(np.float64) / c

        theta0 = np.concatenate([a.ravel() for wv, _, bv, _ in dense_views for a in (wv, bv)])
        result = minimize(loss_and_grad, theta0.astype(np.float64), method="L-BFGS-B", jac=True,
                          options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                                   "gtol": self.tol})
        loss_and_grad(result.x)  # leave the network at the solution
        self.n_iter_ = int(result.nit)
        self.loss_ = float(result.fun)
        if result.status != 0:
            warnings.warn("lbfgs failed to converge after %d iteration(s) (status=%d): %s"
                          % (self.n_iter_, result.status, result.message), ConvergenceWarning,
                          stacklevel=2)

    # --- prediction ----------------------------------------------------------------------------
    def _forward(self, X) -> np.ndarray:
        """Raw network outputs (logits for classifiers) as float64, (n, n_outputs)."""
        check_is_fitted(self, "model_")
        _refuse_non_numeric(X, "X")
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False,
                          dtype=(np.float64, np.float32))
        with _threads(self.n_threads):
            return self._raw_predict(X)

    def _raw_predict(self, X) -> np.ndarray:
        """The network's outputs as float64; a sparse X densified a chunk of rows at a time."""
        model = self.model_
        if not sp.issparse(X):
            return model.predict(cast_checked(X, model.dtype, "X")).astype(np.float64)
        X = X.tocsr()
        per_row = _dense_row_bytes(X, model.dtype)
        rows = max(1, min(_SPARSE_PREDICT_ROWS, _SPARSE_CHUNK_BYTES // max(per_row, 1)))
        parts = [model.predict(cast_checked(X[i:i + rows].toarray(), model.dtype, "X"))
                 for i in range(0, X.shape[0], rows)]
        return np.concatenate(parts).astype(np.float64)

    def _is_classifier(self) -> bool:
        return isinstance(self, ClassifierMixin)


def _dense_row_bytes(X, dtype) -> int:
    """Bytes that densifying one row of the sparse X takes: its copy in X's dtype, then in the
    model's ``dtype``."""
    return X.shape[1] * (X.dtype.itemsize + np.dtype(dtype).itemsize)


def _check_sparse_batch(X, batch_size: int, dtype) -> None:
    """A ValueError, before any batch is densified, when one batch of the sparse X would take
    more than _SPARSE_BATCH_MAX_BYTES dense."""
    per_row = _dense_row_bytes(X, dtype)
    if batch_size * per_row > _SPARSE_BATCH_MAX_BYTES:
        fits = _SPARSE_BATCH_MAX_BYTES // per_row
        hint = (f"use batch_size={fits} or less" if fits >= 1
                else "reduce the features (a single row is too wide)")
        raise ValueError(f"X is sparse with {X.shape[1]} features: each batch of {batch_size} "
                         f"rows is densified for training, {gib(batch_size * per_row)} (at most "
                         f"{gib(_SPARSE_BATCH_MAX_BYTES)}); {hint}")


# Integer labels spanning at most this many values are counted with np.bincount (a table of
# this many counts) instead of the hash-based np.unique that LabelBinarizer.fit runs twice.
_BINCOUNT_MAX_SPAN = 1 << 16


def _fitted_binarizer(y):
    """LabelBinarizer().fit(y), and for 1-D integer labels of a small span, fitted from one
    np.bincount (1.2 of 116 ms of a 37,500-row fit went to LabelBinarizer.fit); then also each
    row's class index (else None)."""
    lb = LabelBinarizer()
    kind = y.dtype.kind if isinstance(y, np.ndarray) and y.ndim == 1 and y.size else ""
    if not (kind == "i" or (kind == "u" and y.dtype.itemsize < 8)):  # (exact in int64)
        return lb.fit(y), None
    low = int(y.min())
    span = int(y.max()) - low + 1
    if span > _BINCOUNT_MAX_SPAN:
        return lb.fit(y), None
    offset = y.astype(np.int64) - low
    present = np.bincount(offset, minlength=span) > 0
    # what LabelBinarizer.fit sets for such labels: type_of_target's "binary" / "multiclass"
    lb.classes_ = (np.flatnonzero(present) + low).astype(y.dtype)
    lb.y_type_ = "multiclass" if len(lb.classes_) > 2 else "binary"
    lb.sparse_input_ = False
    return lb, (np.cumsum(present) - 1)[offset]


def _with_l2(layer, l2: float):
    """A fresh copy of ``layer`` (and of a Residual's layers) with Dense's ``l2`` set."""
    config = layer.get_config()
    if config["type"] == "Dense":
        config = {**config, "l2": l2}
    return layer_from_config(config)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's MLPClassifier, trained by mlpcore.

    Parameters are scikit-learn's (see its documentation) plus ``dropout``, ``batch_norm``,
    ``class_weight``, ``dtype``, ``n_threads`` and ``optimizer``: see :mod:`mlpcore.sklearn`.
    Multi-class targets train a softmax output with cross-entropy; binary and multi-label
    (indicator matrix) targets sigmoid outputs with log-loss, as scikit-learn.
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dropout=0.0, batch_norm=False, class_weight=None, dtype="float32",
                 n_threads=None, optimizer=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.class_weight = class_weight
        self.dtype = dtype
        self.n_threads = n_threads
        self.optimizer = optimizer

    def _out_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _mc_loss(self) -> str:
        return "cross_entropy" if self.out_activation_ == "softmax" else "bce_with_logits"

    def _validate_input(self, X, y, incremental, reset, check_finite):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset,
                             ensure_all_finite=check_finite)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        index = None
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer, index = _fitted_binarizer(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes "
                                     f"as in the previous call to fit. Previously got "
                                     f"{self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        return X, self._one_hot(y, index)

    def _one_hot(self, y, index=None) -> np.ndarray:
        """LabelBinarizer.transform(y) as float64; for the multiclass case (classes known to
        hold every label of y) built directly, without its sparse matrix (5 of 200 ms of a
        50,000-row fit), from each row's class index when known."""
        lb = self._label_binarizer
        if lb.y_type_ != "multiclass" or y.ndim != 1 or lb.sparse_output:
            return lb.transform(y).astype(np.float64)
        if index is None:
            index = np.searchsorted(lb.classes_, y)
        Y = np.zeros((y.shape[0], len(lb.classes_)))
        Y[np.arange(y.shape[0]), index] = 1.0
        return Y

    def _validation_score(self, X, Y, sample_weight) -> float:
        proba = self._proba(self._raw_predict(X))
        if not np.isfinite(proba).all():
            return np.nan
        y_true = self._label_binarizer.inverse_transform(Y)
        return accuracy_score(y_true, self._labels(proba), sample_weight=sample_weight)

    def _proba(self, logits: np.ndarray) -> np.ndarray:
        if self.out_activation_ == "softmax":
            z = logits - logits.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            return z
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-logits))

    def _labels(self, proba: np.ndarray):
        if self.n_outputs_ == 1:
            proba = proba.ravel()
        return self._label_binarizer.inverse_transform(proba)

    def fit(self, X, y, sample_weight=None):
        """Fit the network to data ``X`` and labels ``y`` (classes, or an indicator matrix)."""
        self._validate_params()
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y); ``classes`` (all labels) is required on the first call."""
        self._validate_params()
        if isinstance(self.class_weight, str):  # ('balanced': the only string allowed)
            raise ValueError("class_weight='balanced' is not supported for partial_fit: each "
                             "call sees one batch, whose class counts differ from the data's. "
                             "Pass a dict from sklearn.utils.class_weight.compute_class_weight "
                             "over all of y instead")
        first = not hasattr(self, "classes_")
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on the first call to "
                             f"partial_fit, was: {self.classes_!r}")
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted class labels (or indicator rows for multi-label targets)."""
        return self._labels(self._proba(self._forward(X)))

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``."""
        proba = self._proba(self._forward(X))
        if self.n_outputs_ == 1:
            return np.hstack([1.0 - proba, proba])
        return proba

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's MLPRegressor, trained by mlpcore.

    Parameters are scikit-learn's (``loss="squared_error"``; ``"poisson"`` is not available)
    plus ``dropout``, ``batch_norm``, ``dtype``, ``n_threads`` and ``optimizer``: see
    :mod:`mlpcore.sklearn`.
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dropout=0.0, batch_norm=False, dtype="float32", n_threads=None, optimizer=None):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.dtype = dtype
        self.n_threads = n_threads
        self.optimizer = optimizer

    def _out_activation(self) -> str:
        return "identity"

    def _mc_loss(self) -> str:
        return "mse"

    def _validate_input(self, X, y, incremental, reset, check_finite):
        if self.loss == "poisson":
            raise ValueError("MLPRegressor: loss='poisson' is not available in mlpcore (it has "
                             "no exponential output and Poisson loss); use loss='squared_error'")
        _refuse_non_numeric(y, "y")
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset,
                             ensure_all_finite=check_finite)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, np.asarray(y, dtype=np.float64)

    def _validation_score(self, X, Y, sample_weight) -> float:
        pred = self._raw_predict(X)
        if not np.isfinite(pred).all():
            return np.nan
        return r2_score(Y, pred, sample_weight=sample_weight)

    def fit(self, X, y, sample_weight=None):
        """Fit the network to data ``X`` and targets ``y`` ((n,) or (n, n_outputs))."""
        self._validate_params()
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y)."""
        self._validate_params()
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted targets, (n,) for one output, else (n, n_outputs)."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out


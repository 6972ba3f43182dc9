"""Layers: descriptions of a network's parts, and once a model is built, views of its memory.

A layer object is created by the user, handed to :class:`mlpcore.Sequential`, and from then on
reads and writes the model's native parameter memory directly (``layer.weight`` is a NumPy view,
not a copy).
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Dict, List, Optional

import numpy as np

from . import _core, initializers
from ._validation import check_finite, check_int, check_values

#: the largest feature count a layer can be given (the native plan's size type); the native side
#: then checks that every product of sizes fits as well
MAX_FEATURES = 2**63 - 1

__all__ = [
    "Layer", "Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "SELU", "GELU", "SiLU",
    "Sigmoid", "Tanh", "Softplus", "Softmax", "Identity", "Dropout", "LayerNorm", "BatchNorm1d",
    "Normalization", "Residual", "ACTIVATIONS", "get_activation", "flatten_layers",
    "has_parameters",
]


class Layer:
    """Base class: a layer knows its place in a built model (or that it has none yet)."""

    def __init__(self) -> None:
        self._net = None
        self._index: Optional[int] = None
        self._owner = None  # a weak reference to the model, once the layer is part of one

    def _attach(self, net, index: int, owner) -> None:
        if self._net is not None:
            raise ValueError(
                f"{type(self).__name__} layer is already part of another model; "
                "create a new layer object for each model")
        self._net = net
        self._index = index
        self._owner = weakref.ref(owner)  # a pickled layer takes its model along

    @property
    def index(self) -> Optional[int]:
        """The layer's number in its model's plan (as in ``model.summary()`` and saved files),
        None before the layer is part of a model."""
        return self._index

    def _require_built(self, what: str):
        if self._net is None:
            raise RuntimeError(
                f"{type(self).__name__}.{what} is available once the layer is part of a "
                "Sequential model")
        return self._net

    def get_config(self) -> Dict[str, Any]:
        return {"type": type(self).__name__}

    def buffers(self) -> Dict[str, np.ndarray]:
        """Writable views of the layer's non-trainable arrays by name (BatchNorm1d's running
        statistics, Normalization's mean and variance); saved with the model. Empty here."""
        return {}

    def array_shapes(self) -> Dict[str, tuple]:
        """Shapes of the arrays this layer keeps in a built model, by name (``weight``, ``bias``,
        and those of :meth:`buffers`); known before any model is built (load checks a file's
        tensors against them before allocating anything)."""
        return {}

    # A layer of a built model is a view of that model's memory, as a torch module's tensors
    # are its storage: pickling or deep-copying it takes its whole model along, and gives back
    # the matching layer of the copied model (the very layer of the copy when the model is in
    # the same pickle). A layer not yet in a model pickles as a plain description.
    def __reduce_ex__(self, protocol):
        if self._net is None:
            return super().__reduce_ex__(protocol)
        model = self._owner()
        if model is None:
            raise TypeError(f"cannot pickle {type(self).__name__}: the model it belongs to no "
                            "longer exists")
        return (_layer_of, (model, self._index))

    def __copy__(self):
        if self._net is not None:
            raise TypeError(f"copy.copy of a {type(self).__name__} that belongs to a model: a "
                            "layer is a view of its model; copy.deepcopy(layer) copies the whole "
                            "model, copy.deepcopy(model) too")
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def _spec(self) -> _core.LayerSpec:
        """This layer's entry in the native plan."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _layer_of(model, index: int) -> Layer:
    """The layer at plan position ``index`` of ``model`` (how an unpickled layer finds itself
    in its unpickled model)."""
    return model.layer_at(index)


class _Parametrised(Layer):
    """A layer with a weight and a bias in the model's parameter arena, seen as NumPy views."""

    @property
    def _shapes(self):
        raise NotImplementedError

    @property
    def weight(self) -> np.ndarray:
        """Writable view of the weight (Dense: (in, out); norm layers: gamma, (features,))."""
        return self._require_built("weight").weight_view(self._index, False)

    @weight.setter
    def weight(self, value) -> None:
        self.weight[...] = check_values(value, shape=self._shapes[0], owner=type(self).__name__,
                                     name="weight")

    @property
    def bias(self) -> np.ndarray:
        """Writable view of the bias (norm layers: beta)."""
        return self._require_built("bias").bias_view(self._index, False)

    @bias.setter
    def bias(self, value) -> None:
        self.bias[...] = check_values(value, shape=self._shapes[1], owner=type(self).__name__,
                                   name="bias")

    @property
    def weight_grad(self) -> np.ndarray:
        """Writable view of dL/dweight from the last compute_gradients/train_step."""
        return self._require_built("weight_grad").weight_view(self._index, True)

    @property
    def bias_grad(self) -> np.ndarray:
        """Writable view of dL/dbias from the last compute_gradients/train_step."""
        return self._require_built("bias_grad").bias_view(self._index, True)

    @property
    def num_params(self) -> int:
        return math.prod(self._shapes[0]) + math.prod(self._shapes[1])

    def array_shapes(self) -> Dict[str, tuple]:
        return {"weight": self._shapes[0], "bias": self._shapes[1]}


def has_parameters(layer: Layer) -> bool:
    """True for layers with a weight and a bias (Dense, LayerNorm, BatchNorm1d)."""
    return isinstance(layer, _Parametrised)


class Dense(_Parametrised):
    """Fully connected layer ``z = x @ weight + bias``.

    ``weight`` has shape ``(in_features, out_features)`` and ``bias`` ``(out_features,)``.
    ``init`` chooses the weight initialiser (see :mod:`mlpcore.initializers`; default
    ``"glorot_uniform"``, biases start at zero) or gives the initial weight as an array of
    shape ``(in_features, out_features)`` (Keras' kernel layout; a torch.nn.Linear weight,
    stored (out, in), is passed as ``linear.weight.T``).
    ``l1`` / ``l2`` add ``l1 * sum|W| + l2 * sum W**2`` to the loss (Keras' kernel
    regularisers: the weight only, not the bias), with its gradient, natively.
    """

    def __init__(self, in_features: int, out_features: int, *, init="glorot_uniform",
                 l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__()
        self.in_features = check_int(in_features, owner="Dense", name="in_features",
                                     expected="positive", high=MAX_FEATURES)
        self.out_features = check_int(out_features, owner="Dense", name="out_features",
                                      expected="positive", high=MAX_FEATURES)
        initializers.check(init, (self.in_features, self.out_features))
        self.init = init
        self.l1 = check_finite(l1, owner="Dense", name="l1", non_negative=True)
        self.l2 = check_finite(l2, owner="Dense", name="l2", non_negative=True)

    def _spec(self) -> _core.LayerSpec:
        return _core.LayerSpec(kind=_core.LayerKind.Dense, in_features=self.in_features,
                               out_features=self.out_features, l1=self.l1, l2=self.l2)

    def get_config(self) -> Dict[str, Any]:
        init = self.init if isinstance(self.init, str) else "array"
        config = {"type": "Dense", "in_features": self.in_features,
                  "out_features": self.out_features, "init": init}
        if self.l1 or self.l2:
            config.update(l1=self.l1, l2=self.l2)
        return config

    def _initialize(self, rng: np.random.Generator) -> None:
        self.weight[...] = initializers.make(self.init, (self.in_features, self.out_features), rng)
        self.bias[...] = 0

    @property
    def _shapes(self):
        return (self.in_features, self.out_features), (self.out_features,)


class Activation(Layer):
    """An element-wise (or, for Softmax, row-wise) activation with torch.nn semantics."""

    kind = _core.Act.Identity  # native kind: MLPCORE_ACTIVATIONS in kernels/activations.hpp

    def _params(self) -> Dict[str, Any]:
        return {}

    def _spec(self) -> _core.LayerSpec:
        # the parameters the native formulas read (ActParams); the others are Python-side only
        native = {k: float(v) for k, v in self._params().items()
                  if k in ("negative_slope", "alpha", "beta", "threshold")}
        return _core.LayerSpec(kind=_core.LayerKind.Activation, act=self.kind,
                               params=_core.ActParams(**native))

    def get_config(self) -> Dict[str, Any]:
        return {"type": type(self).__name__, **self._params()}


class Identity(Activation):
    kind = _core.Act.Identity


class ReLU(Activation):
    kind = _core.Act.ReLU


class LeakyReLU(Activation):
    kind = _core.Act.LeakyReLU

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_finite(negative_slope, owner="LeakyReLU",
                                           name="negative_slope")

    def _params(self):
        return {"negative_slope": self.negative_slope}


class ELU(Activation):
    kind = _core.Act.ELU

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_finite(alpha, owner="ELU", name="alpha")

    def _params(self):
        return {"alpha": self.alpha}


class SELU(Activation):
    kind = _core.Act.SELU


class GELU(Activation):
    """GELU; ``approximate="none"`` (erf, exact) or ``"tanh"``, as torch.nn.GELU."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(
                f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.kind = _core.Act.GELU if approximate == "none" else _core.Act.GELUTanh

    def _params(self):
        return {"approximate": self.approximate}


class SiLU(Activation):
    kind = _core.Act.SiLU


class Sigmoid(Activation):
    kind = _core.Act.Sigmoid


class Tanh(Activation):
    kind = _core.Act.Tanh


class Softplus(Activation):
    """Softplus ``log(1 + exp(beta x)) / beta``, linear where ``beta x > threshold``."""

    kind = _core.Act.Softplus

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = check_finite(beta, owner="Softplus", name="beta", positive=True)
        self.threshold = check_finite(threshold, owner="Softplus", name="threshold")

    def _params(self):
        return {"beta": self.beta, "threshold": self.threshold}


class Softmax(Activation):
    """Softmax along the feature axis (torch.nn.Softmax(dim=-1) on a batch)."""

    kind = _core.Act.Softmax

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        if dim not in (-1, 1):
            raise ValueError(f"Softmax: dim must be -1 or 1 (the feature axis), got {dim!r}")
        self.dim = dim

    def _params(self):
        return {"dim": self.dim}


class Dropout(Layer):
    """Inverted dropout (torch.nn.Dropout): in training each element is zeroed with probability
    ``p`` and the rest scaled by 1 / (1 - p); in predict/evaluate it is the identity. Masks come
    from the model's seeded generator, so ``seed=`` makes them reproducible."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        p = check_finite(p, owner="Dropout", name="p")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1), got {p}")
        self.p = p

    def _spec(self) -> _core.LayerSpec:
        return _core.LayerSpec(kind=_core.LayerKind.Dropout, p=self.p)

    def get_config(self) -> Dict[str, Any]:
        return {"type": "Dropout", "p": self.p}


class _Norm(_Parametrised):
    def __init__(self, num_features: int, eps: float, owner: str) -> None:
        super().__init__()
        self.num_features = check_int(num_features, owner=owner, name="num_features",
                                      expected="positive", high=MAX_FEATURES)
        self.eps = check_finite(eps, owner=owner, name="eps", positive=True)

    @property
    def _shapes(self):
        return (self.num_features,), (self.num_features,)

    def _initialize(self, rng) -> None:  # gamma = 1, beta = 0, set natively
        pass


class LayerNorm(_Norm):
    """Layer normalisation over the features of each sample (torch.nn.LayerNorm(n)), with a
    learned scale ``weight`` (gamma, starts at 1) and shift ``bias`` (beta, starts at 0)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5) -> None:
        super().__init__(normalized_shape, eps, "LayerNorm")

    def _spec(self) -> _core.LayerSpec:
        return _core.LayerSpec(kind=_core.LayerKind.LayerNorm, in_features=self.num_features,
                               eps=self.eps)

    def get_config(self) -> Dict[str, Any]:
        return {"type": "LayerNorm", "normalized_shape": self.num_features, "eps": self.eps}


# Layer buffers that are variances: the layer divides by their square root, so a negative value
# (from an edited file) makes NaN outputs.
NONNEGATIVE_BUFFERS = frozenset({"running_var", "variance"})


class BatchNorm1d(_Norm):
    """Batch normalisation of each feature (torch.nn.BatchNorm1d): batch statistics in training
    (which update ``running_mean`` / ``running_var`` with ``momentum``, the variance unbiased),
    running statistics in predict/evaluate. Training batches need more than one sample.

    ``synchronized=True`` (Keras' name; torch's SyncBatchNorm) matters only in data-parallel
    training (``fit(..., distributed=True)``): the batch statistics, and their gradients, are
    then those of the whole global batch, summed over the ranks during each pass, so N ranks
    train like one process on the same batches. By default each rank normalises with its own
    shard's statistics, as PyTorch's DDP does. One process: no difference."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *,
                 synchronized: bool = False) -> None:
        super().__init__(num_features, eps, "BatchNorm1d")
        momentum = check_finite(momentum, owner="BatchNorm1d", name="momentum")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm1d: momentum must lie in [0, 1], got {momentum}")
        if not isinstance(synchronized, (bool, np.bool_)):
            raise TypeError(f"BatchNorm1d: synchronized must be a bool, got "
                            f"{type(synchronized).__name__}")
        self.momentum = momentum
        self.synchronized = bool(synchronized)

    def _spec(self) -> _core.LayerSpec:
        return _core.LayerSpec(kind=_core.LayerKind.BatchNorm, in_features=self.num_features,
                               eps=self.eps, momentum=self.momentum)

    def get_config(self) -> Dict[str, Any]:
        config = {"type": "BatchNorm1d", "num_features": self.num_features, "eps": self.eps,
                  "momentum": self.momentum}
        if self.synchronized:  # (left out otherwise: files from before it load unchanged)
            config["synchronized"] = True
        return config

    def buffers(self) -> Dict[str, np.ndarray]:
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def array_shapes(self) -> Dict[str, tuple]:
        n = (self.num_features,)
        return {**super().array_shapes(), "running_mean": n, "running_var": n}

    @property
    def running_mean(self) -> np.ndarray:
        """Writable view of the running mean, (num_features,)."""
        return self._require_built("running_mean").buffer_view(self._index, 0)

    @property
    def running_var(self) -> np.ndarray:
        """Writable view of the running variance, (num_features,)."""
        return self._require_built("running_var").buffer_view(self._index, 1)


class Normalization(Layer):
    """Feature-wise standardisation with fixed statistics, Keras' ``Normalization``:
    ``y = (x - mean) / sqrt(variance + eps)``, computed natively as part of the network, so a
    saved model carries its preprocessing and predicts on raw features.

    ``adapt(x)`` sets ``mean`` and ``variance`` from data (per column, the population variance
    as NumPy's ``var``); a column that is constant in ``x`` gets variance 1, so it passes
    shifted but unscaled (as scikit-learn's StandardScaler) instead of being blown up by
    ``1 / sqrt(eps)`` on new data. ``mean`` / ``variance`` can also be given, or assigned
    later. They are not trained (they are buffers: in ``get_weights`` and the saved file, not in
    the parameters the optimizer updates); the gradient passes through as ``dy / sqrt(variance
    + eps)``. ``num_features`` may be left out when ``adapt`` (or ``mean``) comes before the
    layer joins a model. Until adapted: mean 0, variance 1.
    """

    def __init__(self, num_features: Optional[int] = None, *, mean=None, variance=None,
                 eps: float = 1e-7) -> None:
        super().__init__()
        self.num_features = None if num_features is None else check_int(
            num_features, owner="Normalization", name="num_features", expected="positive")
        self.eps = check_finite(eps, owner="Normalization", name="eps", positive=True)
        self._pending: Dict[str, np.ndarray] = {}  # statistics set before the layer is built
        if mean is not None:
            self.mean = mean
        if variance is not None:
            self.variance = variance

    def _spec(self) -> _core.LayerSpec:
        if self.num_features is None:
            raise ValueError("Normalization: the number of features is unknown; give "
                             "num_features or call adapt(x) before building the model")
        return _core.LayerSpec(kind=_core.LayerKind.Normalization,
                               in_features=self.num_features, eps=self.eps)

    def _attach(self, net, index: int, owner) -> None:
        super()._attach(net, index, owner)
        for name, value in self._pending.items():
            self.buffers()[name][...] = value
        self._pending = {}

    def get_config(self) -> Dict[str, Any]:
        return {"type": "Normalization", "num_features": self.num_features, "eps": self.eps}

    def buffers(self) -> Dict[str, np.ndarray]:
        return {"mean": self.mean, "variance": self.variance}

    def array_shapes(self) -> Dict[str, tuple]:
        n = (self.num_features,)
        return {"mean": n, "variance": n}

    def _statistic(self, name: str, k: int) -> np.ndarray:
        if self._net is not None:
            return self._net.buffer_view(self._index, k)
        if name in self._pending:
            return self._pending[name]
        default = 0.0 if name == "mean" else 1.0
        return np.full(self.num_features or 0, default)

    def _set_statistic(self, name: str, value) -> None:
        arr = np.asarray(value)
        if arr.ndim == 1 and self.num_features is None and self._net is None:
            self.num_features = check_int(arr.shape[0], owner="Normalization",
                                          name=f"{name} length", expected="positive")
        arr = check_values(arr, shape=(self.num_features,), owner="Normalization", name=name)
        if name == "variance" and (arr < 0).any():
            raise ValueError("Normalization.variance: values must be >= 0")
        if self._net is not None:
            self._statistic(name, 0 if name == "mean" else 1)[...] = arr
        else:
            self._pending[name] = arr.astype(np.float64)

    @property
    def mean(self) -> np.ndarray:
        """Per-feature mean, (num_features,): a writable view once the layer is in a model."""
        return self._statistic("mean", 0)

    @mean.setter
    def mean(self, value) -> None:
        self._set_statistic("mean", value)

    @property
    def variance(self) -> np.ndarray:
        """Per-feature variance, (num_features,): a writable view once in a model."""
        return self._statistic("variance", 1)

    @variance.setter
    def variance(self, value) -> None:
        self._set_statistic("variance", value)

    def adapt(self, data) -> "Normalization":
        """Set ``mean`` and ``variance`` from ``data`` (n_samples, num_features); returns the
        layer. The statistics are computed in float64."""
        arr = np.asarray(data)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Normalization.adapt: data must hold real numbers, "
                            f"got dtype {arr.dtype}")
        expected = self.num_features if self.num_features is not None else "n_features"
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"Normalization.adapt: data must be 2-D (n_samples, {expected}) "
                             f"with at least one row, got shape {arr.shape}")
        if self.num_features is not None and arr.shape[1] != self.num_features:
            raise ValueError(f"Normalization.adapt: data must have {self.num_features} "
                             f"features (columns), got shape {arr.shape}")
        arr = arr.astype(np.float64, copy=False)
        if not np.isfinite(arr).all():
            raise ValueError("Normalization.adapt: data contains NaN or Inf")
        variance = arr.var(axis=0)
        variance[variance == 0] = 1.0
        self.mean = arr.mean(axis=0)
        self.variance = variance
        return self


class Residual(Layer):
    """A residual block: ``output = input + f(input)``, where f applies ``layers`` in order and
    must keep the feature count (e.g. ``Residual([Dense(64, 64), ReLU(), Dense(64, 64)])``)."""

    def __init__(self, layers) -> None:
        super().__init__()
        layers = list(layers) if not isinstance(layers, Layer) else None
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise TypeError("Residual: layers must be a non-empty list of mlpcore layers")
        self.layers: List[Layer] = layers

    def get_config(self) -> Dict[str, Any]:
        return {"type": "Residual", "layers": [layer.get_config() for layer in self.layers]}

    def __repr__(self) -> str:
        return f"Residual({self.layers!r})"


ACTIVATIONS = {
    "identity": Identity, "linear": Identity, "relu": ReLU, "leaky_relu": LeakyReLU, "elu": ELU,
    "selu": SELU, "gelu": GELU, "silu": SiLU, "swish": SiLU, "sigmoid": Sigmoid,
    "logistic": Sigmoid, "tanh": Tanh, "softplus": Softplus, "softmax": Softmax,
}

LAYER_TYPES = {cls.__name__: cls for cls in (
    Dense, Identity, ReLU, LeakyReLU, ELU, SELU, GELU, SiLU, Sigmoid, Tanh, Softplus, Softmax,
    Dropout, LayerNorm, BatchNorm1d, Normalization, Residual)}


def get_activation(name: str) -> Activation:
    """A new activation layer from its name (e.g. ``"relu"``, ``"gelu"``); names are case-blind."""
    if not isinstance(name, str):
        raise TypeError(f"activation must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}; valid names: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[key]()


def layer_from_config(config: Dict[str, Any]) -> Layer:
    """Rebuild a layer from :meth:`Layer.get_config` output (used by load)."""
    kind = config.get("type")
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r} in model config; "
                         f"valid types: {', '.join(sorted(LAYER_TYPES))}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    if kind == "Residual":
        return Residual([layer_from_config(c) for c in kwargs["layers"]])
    if kind == "Dense":
        kwargs.pop("init", None)  # weights come from the file
    return LAYER_TYPES[kind](**kwargs)


def flatten_layers(layers) -> List[tuple]:
    """The native plan of a layer list: (layer or None, spec) pairs in order, a Residual block
    becoming a begin marker (carrying the block), its layers, and an end marker (None)."""
    plan: List[tuple] = []
    for layer in layers:
        if isinstance(layer, Residual):
            plan.append((layer, _core.LayerSpec(kind=_core.LayerKind.ResidualBegin)))
            plan.extend(flatten_layers(layer.layers))
            plan.append((None, _core.LayerSpec(kind=_core.LayerKind.ResidualEnd)))
        else:
            plan.append((layer, layer._spec()))
    return plan

"""Optimizers with torch.optim's names, arguments, defaults and update rules.

Every optimizer also takes Keras' ``learning_rate=`` in place of ``lr=``.

Each class only holds hyper-parameters; the update is one native kernel over the model's
parameter arena, and the state (momentum, moment estimates ...) lives in native memory.
Hyper-parameters can be changed between steps through ``optimizer.lr`` or, as in PyTorch,
``optimizer.param_groups[0]["lr"]``.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Optional

import numpy as np

from . import _core
from ._validation import check_betas as _check_betas, check_hyper

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "OPTIMIZERS", "get_optimizer"]

# The most updates a step count may say were applied: the count is a signed 64-bit integer that
# every update adds one to, and from 2**62 none can reach its end (about 146 years at 1 ns each).
MAX_STEPS = 2**62

# State buffers that hold sums or averages of squared gradients: the update divides by their
# square root, so a negative value (from an edited file or state_dict) makes NaN weights.
NONNEGATIVE_STATE = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"})


class _ParamGroup(dict):
    """The hyper-parameter dict; counts changes so the model re-sends it only when needed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.version = 0

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.version += 1


def _native_value(name: str, value, default):
    """A hyper-parameter in the native field's type (that of its default)."""
    if isinstance(default, bool):
        return bool(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: expected a number, got {type(value).__name__}")
    return float(value)


def _pick_lr(lr, learning_rate, default: float):
    """``learning_rate=`` (Keras' name) is accepted beside ``lr=`` (torch's); not both."""
    if learning_rate is None:
        return lr
    if lr is not default and lr != default:
        raise TypeError(f"got both lr={lr!r} and learning_rate={learning_rate!r}; they are the "
                        "same setting, pass one")
    return learning_rate


class Optimizer:
    """Base class. Subclasses name their native rule; the native side allocates the state
    buffers the configuration needs (torch.optim's state keys, e.g. ``exp_avg``)."""

    #: the native rule (MLPCORE_OPTIMIZERS in cpp/kernels/optim.hpp)
    kind: _core.OptKind
    #: whether the rule scales each parameter's step by its own gradient history
    adaptive = False

    def __init__(self, **hyper: Any) -> None:
        self.param_groups = [_ParamGroup(hyper)]
        self._model = None

    # --- hyper-parameters -------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = check_hyper(value, what="learning rate")

    @property
    def learning_rate(self) -> float:
        """The learning rate (Keras' name for ``lr``)."""
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.lr = value

    @property
    def defaults(self) -> Dict[str, Any]:
        return dict(self.param_groups[0])

    def _version(self) -> int:
        return self.param_groups[0].version

    def _native_config(self) -> _core.OptConfig:
        """The native rule and every hyper-parameter it reads; the native side validates it
        (ValueError naming the first unusable one, whichever path set it)."""
        return self._config_of(self.param_groups[0])

    def _config_of(self, group) -> _core.OptConfig:
        hyper = dict(group)
        betas = hyper.pop("betas", None)
        if betas is not None:
            hyper["beta1"], hyper["beta2"] = _check_betas(betas)
        config = _core.OptConfig(kind=self.kind)
        for name in _core.OptConfig.fields:
            if name in hyper:
                setattr(config, name, _native_value(name, hyper[name], getattr(config, name)))
        return config

    # --- pickling ---------------------------------------------------------------------------
    def __reduce_ex__(self, protocol):
        # The state lives in the model's native memory: a bound optimizer pickles with its
        # model (whose pickle holds the state) and comes back as that copy's optimizer.
        model = self._model
        if model is not None and model.optimizer is self:
            return (_optimizer_of, (model,))
        return (_unbound_optimizer, (type(self), dict(self.param_groups[0])))

    # --- binding to a model -----------------------------------------------------------------
    def _bind(self, model) -> None:
        if self._model is not None and self._model is not model:
            raise ValueError(f"{type(self).__name__} is already bound to another model; "
                             "create one optimizer per model")
        self._model = model

    def _require_model(self):
        if self._model is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a model: "
                               "pass it to model.compile(optimizer=...) first")
        return self._model

    def step(self) -> None:
        """Apply one update from the gradients currently in the model's gradient buffers."""
        self._require_model()._step_optimizer()

    def zero_grad(self) -> None:
        """Set every gradient buffer of the model to zero."""
        self._require_model().grads_view()[...] = 0

    # --- state ------------------------------------------------------------------------------
    @property
    def state(self) -> Dict[str, np.ndarray]:
        """Flat views of the native state buffers (one value per model parameter)."""
        return self._require_model().optimizer_state_views()

    @property
    def step_count(self) -> int:
        return int(self._require_model().optimizer_steps)

    def state_dict(self) -> Dict[str, Any]:
        """Hyper-parameters, step count and copies of the state buffers."""
        return {"name": type(self).__name__, "param_groups": [dict(self.param_groups[0])],
                "step": self.step_count,
                "state": {k: v.copy() for k, v in self.state.items()}}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore hyper-parameters, step count and state buffers from :meth:`state_dict`;
        all are checked (as the native side checks a config) before anything is written."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"load_state_dict: expected a dict, got {type(state_dict).__name__}")
        if state_dict.get("name") != type(self).__name__:
            raise ValueError(f"load_state_dict: state is for {state_dict.get('name')!r}, "
                             f"not {type(self).__name__}")
        step = state_dict.get("step")
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"load_state_dict: step must be an int, got {type(step).__name__}")
        if not 0 <= step <= MAX_STEPS:
            raise ValueError(f"load_state_dict: step must be in [0, 2**62], got {step}")
        groups = state_dict.get("param_groups")
        if not isinstance(groups, (list, tuple)) or len(groups) != 1 \
                or not isinstance(groups[0], dict):
            raise TypeError("load_state_dict: param_groups must be a list of one dict")
        hyper = dict(self.param_groups[0])
        for key, value in groups[0].items():
            if key not in hyper:
                raise ValueError(f"load_state_dict: unknown hyper-parameter {key!r} for "
                                 f"{type(self).__name__}")
            hyper[key] = tuple(value) if key == "betas" else value
        self._config_of(hyper).validate()  # ValueError naming e.g. "Invalid learning rate: nan"
        states = state_dict.get("state")
        if not isinstance(states, dict):
            raise TypeError("load_state_dict: state must be a dict of arrays")
        group, before = self.param_groups[0], dict(self.param_groups[0])
        for key, value in hyper.items():  # which state buffers exist depends on them
            group[key] = value
        current = self.state
        for name, value in states.items():
            problem = None
            if name not in current or current[name].shape != np.shape(value):
                problem = f"state buffer {name!r} does not match the model"
            elif name in NONNEGATIVE_STATE and np.any(np.asarray(value) < 0):
                problem = (f"state buffer {name!r} must be >= 0 (a sum of squared gradients), "
                           f"got {np.min(value)}")
            if problem is not None:
                for key, value in before.items():
                    group[key] = value
                raise ValueError(f"load_state_dict: {problem}")
        for name, value in states.items():
            current[name][...] = value
        self._model.optimizer_steps = int(step)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.param_groups[0].items())
        return f"{type(self).__name__}({args})"


def _optimizer_of(model) -> "Optimizer":
    return model.optimizer


def _unbound_optimizer(cls, hyper: Dict[str, Any]) -> "Optimizer":
    opt = cls.__new__(cls)
    Optimizer.__init__(opt, **hyper)
    return opt


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum / Nesterov, as torch.optim.SGD."""

    kind = _core.OptKind.SGD

    def __init__(self, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *,
                 learning_rate: Optional[float] = None) -> None:
        lr = check_hyper(_pick_lr(lr, learning_rate, 1e-3), what="learning rate")
        momentum = check_hyper(momentum, what="momentum value")
        weight_decay = check_hyper(weight_decay, what="weight_decay value")
        dampening = float(dampening)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(lr=lr, momentum=momentum, dampening=dampening,
                         nesterov=bool(nesterov), weight_decay=weight_decay)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as torch.optim.Adam.

    ``eps_before_correction=True`` places ``eps`` as Keras and scikit-learn do (the paper's
    "epsilon hat"): added to ``sqrt(v)`` before the bias correction, which then scales the step,
    ``p -= lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + eps)``. torch's default
    adds it after: ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``.
    The two differ only through ``eps``; the first costs one division per parameter, not two.
    """

    kind = _core.OptKind.Adam
    adaptive = True

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *,
                 learning_rate: Optional[float] = None,
                 eps_before_correction: bool = False) -> None:
        lr = _pick_lr(lr, learning_rate, 1e-3)
        super().__init__(lr=check_hyper(lr, what="learning rate"), betas=_check_betas(betas),
                         eps=check_hyper(eps, what="epsilon value"),
                         weight_decay=check_hyper(weight_decay, what="weight_decay value"),
                         amsgrad=bool(amsgrad),
                         eps_before_correction=bool(eps_before_correction))


class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW (``eps_before_correction``: as
    :class:`Adam`'s)."""

    kind = _core.OptKind.AdamW

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 learning_rate: Optional[float] = None,
                 eps_before_correction: bool = False) -> None:
        super().__init__(lr=_pick_lr(lr, learning_rate, 1e-3), betas=betas, eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad,
                         eps_before_correction=eps_before_correction)


class RMSprop(Optimizer):
    """RMSprop (optionally centered, with momentum), as torch.optim.RMSprop."""

    kind = _core.OptKind.RMSprop
    adaptive = True

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 learning_rate: Optional[float] = None) -> None:
        lr = _pick_lr(lr, learning_rate, 1e-2)
        super().__init__(lr=check_hyper(lr, what="learning rate"),
                         alpha=check_hyper(alpha, what="alpha value"),
                         eps=check_hyper(eps, what="epsilon value"),
                         weight_decay=check_hyper(weight_decay, what="weight_decay value"),
                         momentum=check_hyper(momentum, what="momentum value"),
                         centered=bool(centered))


class Adagrad(Optimizer):
    """Adagrad with learning-rate decay, as torch.optim.Adagrad."""

    kind = _core.OptKind.Adagrad
    adaptive = True

    def __init__(self, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 eps: float = 1e-10, *, learning_rate: Optional[float] = None) -> None:
        lr = _pick_lr(lr, learning_rate, 1e-2)
        super().__init__(lr=check_hyper(lr, what="learning rate"),
                         lr_decay=check_hyper(lr_decay, what="lr_decay value"),
                         weight_decay=check_hyper(weight_decay, what="weight_decay value"),
                         eps=check_hyper(eps, what="epsilon value"))


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get_optimizer(spec, lr: Optional[float] = None) -> Optimizer:
    """An optimizer instance from an instance (returned as is) or a name such as ``"adam"``."""
    if isinstance(spec, Optimizer):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"optimizer must be a name or an mlpcore.optim.Optimizer, "
                        f"got {type(spec).__name__}")
    key = spec.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {spec!r}; valid names: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[key]() if lr is None else OPTIMIZERS[key](lr=lr)


def optimizer_from_state(state: Dict[str, Any]) -> Optimizer:
    """A new optimizer with the hyper-parameters of a :meth:`Optimizer.state_dict`."""
    classes = {cls.__name__: cls for cls in OPTIMIZERS.values()}
    name = state.get("name")
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r} in saved state")
    hyper = dict(state["param_groups"][0])
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    return classes[name](**hyper)

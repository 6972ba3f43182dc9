"""Losses by name: mean reduction, PyTorch semantics, computed natively.

=================  ==============================  =====================================
name               prediction                      target
=================  ==============================  =====================================
mse                any                             same shape as the output
mae (alias l1)     any                             same shape as the output
huber              any                             same shape; ``huber_delta`` (1.0)
bce                probabilities in [0, 1]         values in [0, 1], same shape
bce_with_logits    logits (sigmoid fused in)       values in [0, 1], same shape
cross_entropy      logits (softmax fused in)       class labels (n,) or probabilities (n, k)
=================  ==============================  =====================================

Keras' names are accepted as aliases: ``mean_squared_error``, ``mean_absolute_error``,
``binary_crossentropy`` (= ``bce``: probabilities, as Keras' default ``from_logits=False``),
``categorical_crossentropy`` and ``sparse_categorical_crossentropy`` (both = ``cross_entropy``,
which takes **logits**: Keras' ``from_logits=True`` form. A Keras model ending in
``Activation("softmax")`` drops that layer here; compile warns if it is left in, since the
softmax would be applied twice. ``predict_proba`` gives the probabilities).

The mse convention: ``mse`` is the mean over *every entry* (samples and outputs) of
(p - y)^2, as torch's ``MSELoss()`` and Keras, so its gradient is ``2 (p - y) / (n k)``
for n rows and k outputs -- twice the "error = predicted - actual" of the textbook loss
1/2 (p - y)^2, and divided by the batch. For that convention use :class:`HalfMSE`
(``compile(loss=mc.losses.HalfMSE())``: gradient ``(p - y) / n``; with
``reduction="sum"``, ``p - y`` itself). It is a custom loss: the forward and backward
passes stay native, the loss and its gradient are NumPy, once per batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from . import _core

__all__ = ["LossInfo", "LOSSES", "CustomLoss", "HalfMSE", "get_loss"]


class CustomLoss:
    """A loss written in Python: ``fn(prediction, target) -> (value, gradient)``, where the
    gradient is dvalue/dprediction with the prediction's shape, or an object with such a
    ``value_and_grad`` method. It is called once per batch (training steps with it run the
    forward and backward passes natively and only the loss in Python)."""

    def __init__(self, fn: Any) -> None:
        method = getattr(fn, "value_and_grad", None)
        self._fn: Callable = method if callable(method) else fn
        if not callable(self._fn):
            raise TypeError("compile: loss must be a loss name, a callable "
                            "fn(prediction, target) -> (value, gradient), or an object with a "
                            f"value_and_grad method; got {type(fn).__name__}")
        self.name = getattr(fn, "name", None) or getattr(fn, "__name__", None) or \
            type(fn).__name__
        self.source = fn

    def __call__(self, prediction: np.ndarray, target: np.ndarray) -> Tuple[float, np.ndarray]:
        result = self._fn(prediction, target)
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(f"custom loss {self.name!r} must return (value, gradient), "
                            f"got {type(result).__name__}")
        value, grad = result
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"custom loss {self.name!r} returned a value that is not a number: "
                            f"{value!r}") from None
        grad = np.asarray(grad)
        if grad.shape != prediction.shape:
            raise ValueError(f"custom loss {self.name!r} returned a gradient of shape "
                             f"{grad.shape}; it must have the prediction's shape "
                             f"{prediction.shape}")
        if grad.dtype.kind not in "biuf":
            raise TypeError(f"custom loss {self.name!r} returned a gradient of dtype {grad.dtype}")
        return value, np.ascontiguousarray(grad, dtype=prediction.dtype)


class HalfMSE:
    """The textbook squared error 1/2 |p - y|^2 per sample (summed over the outputs), averaged
    over the batch (``reduction="mean"``: gradient (p - y) / n) or summed (``"sum"``:
    gradient p - y, the articles' "error = predicted - actual"). Pass an instance to
    ``compile(loss=...)``."""

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"HalfMSE: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.name = f"half_mse_{reduction}"

    def value_and_grad(self, prediction: np.ndarray, target: np.ndarray):
        target = np.asarray(target, dtype=prediction.dtype).reshape(prediction.shape)
        error = prediction - target
        scale = 1.0 if self.reduction == "sum" else 1.0 / prediction.shape[0]
        return 0.5 * scale * float(np.sum(error * error, dtype=np.float64)), scale * error


@dataclass(frozen=True)
class LossInfo:
    name: str
    kind: Optional[_core.Loss]  # the native loss (MLPCORE_LOSSES, kernels/losses.hpp); None: custom
    classification: bool      # evaluate() reports accuracy
    takes_labels: bool        # accepts integer class labels of shape (n,)
    targets_in_unit_range: bool
    custom: Optional[CustomLoss] = None


LOSSES: Dict[str, LossInfo] = {
    "mse": LossInfo("mse", _core.Loss.MSE, False, False, False),
    "mae": LossInfo("mae", _core.Loss.MAE, False, False, False),
    "huber": LossInfo("huber", _core.Loss.Huber, False, False, False),
    "bce": LossInfo("bce", _core.Loss.BCE, True, False, True),
    "bce_with_logits": LossInfo("bce_with_logits", _core.Loss.BCEWithLogits, True, False, True),
    "cross_entropy": LossInfo("cross_entropy", _core.Loss.CrossEntropy, True, True, False),
}
_ALIASES = {"l1": "mae", "mean_squared_error": "mse", "mean_absolute_error": "mae",
            # Keras' names (see the module docstring: the categorical ones take logits)
            "binary_crossentropy": "bce", "categorical_crossentropy": "cross_entropy",
            "sparse_categorical_crossentropy": "cross_entropy"}


def get_loss(name) -> LossInfo:
    """The loss called ``name``, or a custom loss from a callable / ``value_and_grad`` object;
    raises ValueError listing the valid names for an unknown name."""
    if not isinstance(name, str):
        if callable(name) or callable(getattr(name, "value_and_grad", None)):
            custom = CustomLoss(name)
            return LossInfo(custom.name, None, False, False, False, custom)
        raise TypeError(f"compile: loss must be a str or a callable, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in LOSSES:
        valid = ", ".join(sorted([*LOSSES, *_ALIASES]))
        raise ValueError(f"Unknown loss {name!r}; valid names: {valid}")
    return LOSSES[key]


# Losses whose outputs map to class probabilities (predict_proba).
PROBABILITY_LOSSES = ("cross_entropy", "bce_with_logits", "bce")


def probabilities(out: np.ndarray, loss_name: str) -> np.ndarray:
    """Class probabilities from network outputs, by the loss the model was trained with:
    softmax of the logits for cross_entropy (rows sum to 1), sigmoid for bce_with_logits,
    the output as is for bce (whose model ends in Sigmoid/Softmax)."""
    if loss_name == "cross_entropy":
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if loss_name == "bce_with_logits":
        e = np.exp(-np.abs(out))
        return np.where(out >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(out.dtype)
    return out

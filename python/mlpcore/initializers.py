"""Weight initialisers for Dense layers, by name (or an explicit array).

The default, ``glorot_uniform``, is Keras' default; ``he_uniform``/``he_normal`` suit ReLU-family
networks; ``torch`` reproduces torch.nn.Linear's default weight range.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Tuple

import numpy as np

Shape = Tuple[int, int]


def _glorot_uniform(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    limit = math.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, size=shape)


def _glorot_normal(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, math.sqrt(2.0 / (shape[0] + shape[1])), size=shape)


def _he_uniform(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    limit = math.sqrt(6.0 / shape[0])
    return rng.uniform(-limit, limit, size=shape)


def _he_normal(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, math.sqrt(2.0 / shape[0]), size=shape)


def _lecun_normal(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, math.sqrt(1.0 / shape[0]), size=shape)


def _torch_default(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    limit = 1.0 / math.sqrt(shape[0])
    return rng.uniform(-limit, limit, size=shape)


def _zeros(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(shape)


INITIALIZERS: Dict[str, Callable[[Shape, np.random.Generator], np.ndarray]] = {
    "glorot_uniform": _glorot_uniform, "xavier_uniform": _glorot_uniform,
    "glorot_normal": _glorot_normal, "xavier_normal": _glorot_normal,
    "he_uniform": _he_uniform, "kaiming_uniform": _he_uniform,
    "he_normal": _he_normal, "kaiming_normal": _he_normal,
    "lecun_normal": _lecun_normal, "torch": _torch_default, "zeros": _zeros,
}


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def check(init, shape: Shape) -> None:
    """Raise a clear error now (at layer creation) for an unusable ``init``.

    An array is the weight in mlpcore's layout, (in_features, out_features) (Keras' kernel
    layout); torch.nn.Linear's ``weight`` is (out_features, in_features): pass its ``.T``. A
    square torch tensor cannot be told apart, so it gets a warning."""
    if isinstance(init, str):
        if init not in INITIALIZERS:
            raise ValueError(f"Dense: unknown init {init!r}; valid names: "
                             f"{', '.join(sorted(INITIALIZERS))}, or an array of shape {shape}")
        return
    from_torch = _is_torch_tensor(init)
    if from_torch:
        init = init.detach().cpu().numpy()
    arr = np.asarray(init)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"Dense: init must be a name or a real numeric array, got dtype {arr.dtype}")
    if arr.shape != shape:
        hint = ""
        if arr.shape == shape[::-1]:
            hint = (" (it has the transposed shape: torch.nn.Linear stores (out_features, "
                    "in_features); pass init=weight.T)")
        raise ValueError(f"Dense: init array must have shape {shape} (in_features, "
                         f"out_features), got {arr.shape}{hint}")
    if from_torch and shape[0] == shape[1]:
        warnings.warn("Dense: init is a square torch tensor; mlpcore's weight layout is "
                      "(in_features, out_features) while torch.nn.Linear.weight is "
                      "(out_features, in_features): pass linear.weight.T (a square tensor fits "
                      "either way, so check which one this is)", UserWarning, stacklevel=3)
    if not np.all(np.isfinite(arr)):
        raise ValueError("Dense: init array must be finite (no NaN or Inf)")


def make(init, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    if isinstance(init, str):
        return INITIALIZERS[init](shape, rng)
    if _is_torch_tensor(init):
        init = init.detach().cpu().numpy()
    return np.asarray(init)

"""Weight initialisers for Dense layers, by name (or an explicit array).

The default, ``glorot_uniform``, is Keras' default; ``he_uniform``/``he_normal`` suit ReLU-family
networks; ``torch`` reproduces torch.nn.Linear's default weight range.
"""
from __future__ import annotations

import math
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


def check(init, shape: Shape) -> None:
    """Raise a clear error now (at layer creation) for an unusable ``init``."""
    if isinstance(init, str):
        if init not in INITIALIZERS:
            raise ValueError(f"Dense: unknown init {init!r}; valid names: "
                             f"{', '.join(sorted(INITIALIZERS))}, or an array of shape {shape}")
        return
    arr = np.asarray(init)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"Dense: init must be a name or a real numeric array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"Dense: init array must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("Dense: init array must be finite (no NaN or Inf)")


def make(init, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    if isinstance(init, str):
        return INITIALIZERS[init](shape, rng)
    return np.asarray(init)

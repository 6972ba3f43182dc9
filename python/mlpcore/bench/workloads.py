"""The training-benchmark workloads, their data and the initial weights every contender shares."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

import numpy as np

__all__ = ["Workload", "WORKLOADS", "make_data", "initial_params", "write_inputs",
           "theoretical_bytes"]


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: Tuple[int, ...]     # layer widths, input first; ReLU between Dense layers
    batch: int
    optimizer: str             # "sgd" (no momentum) or "adam"
    lr: float
    samples: int               # synthetic data size (digits: the real 1797 images)
    data: str = "synthetic"    # or "digits"

    def as_dict(self) -> dict:
        return asdict(self)


WORKLOADS: Dict[str, Workload] = {w.name: w for w in [
    Workload("tiny", (2, 16, 16, 2), 32, "sgd", 0.05, 8192),
    Workload("digits", (64, 128, 64, 10), 32, "adam", 1e-3, 1797, "digits"),
    Workload("mnist-shape", (784, 256, 128, 10), 64, "sgd", 0.01, 8192),
    Workload("wide", (784, 1024, 1024, 10), 256, "sgd", 0.01, 8192),
    Workload("big", (1024, 4096, 4096, 1024), 512, "adam", 1e-3, 4096),
]}
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def make_data(w: Workload, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(x float32 (n, in), y int64 class labels (n,)).

    Synthetic data: standard-normal features, labels from a fixed random linear "teacher" (so
    the task is learnable). "digits": scikit-learn's 8x8 digits, standardized.
    """
    if w.data == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x = d.data.astype(np.float64)
        std = x.std(axis=0)
        std[std == 0] = 1.0
        x = (x - x.mean(axis=0)) / std
        return np.ascontiguousarray(x, dtype=np.float32), d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((w.samples, w.sizes[0]), dtype=np.float32)
    teacher = rng.standard_normal((w.sizes[0], w.sizes[-1]), dtype=np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int64)
    return x, y


def initial_params(sizes, seed: int = 0) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform float32 weights (in, out) and zero biases, from a fixed seed."""
    rng = np.random.default_rng(seed + 1)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
        params.append((w, np.zeros(fan_out, dtype=np.float32)))
    return params


def write_inputs(w: Workload, path: str, seed: int = 0) -> dict:
    """Save data and initial weights to an .npz that every contender child loads."""
    x, y = make_data(w, seed)
    arrays = {"x": x, "y": y}
    for i, (wt, b) in enumerate(initial_params(w.sizes, seed)):
        arrays[f"W{i}"], arrays[f"b{i}"] = wt, b
    np.savez(path, **arrays)
    return {"samples": int(x.shape[0]), "data_bytes": int(x.nbytes + y.nbytes)}


def theoretical_bytes(w: Workload, itemsize: int = 4) -> dict:
    """The least memory training needs: parameters + gradients + optimizer state + one batch of
    activations (the input batch, every Dense output and every ReLU output)."""
    params = sum(a * b + b for a, b in zip(w.sizes[:-1], w.sizes[1:]))
    state = 2 * params if w.optimizer == "adam" else 0
    hidden = sum(w.sizes[1:-1])
    activations = w.batch * (w.sizes[0] + sum(w.sizes[1:]) + hidden)
    parts = {"params": params, "grads": params, "optimizer_state": state,
             "activations": activations}
    out = {k: v * itemsize for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out


def model_flops_per_sample(w: Workload) -> int:
    """The matrix products of one training sample, in flops (2 per multiply-add): the forward
    product of every Dense layer, its weight gradient, and its input gradient except the first
    layer's (nothing below it wants one). Element-wise work is not counted."""
    products = [a * b for a, b in zip(w.sizes[:-1], w.sizes[1:])]
    return 2 * (2 * sum(products) + sum(products[1:]))

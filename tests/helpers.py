"""Builders and checks shared by several test files (the plain NumPy references of the
kernels are in reference.py)."""
import contextlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import mlpcore as mc

#: the folder holding the mlpcore package, for subprocesses' PYTHONPATH
PYTHON_DIR = str(Path(mc.__file__).resolve().parent.parent)


# --- models --------------------------------------------------------------------------------
def identity_dense(n):
    """Dense(n, n) with identity weight and zero bias."""
    return mc.Dense(n, n, init=np.eye(n))


def identity_model(k, dtype="float64", last=None):
    """Dense(k, k) with identity weight, then ``last`` if given: predict(x) == last(x) and
    dL/dx == dL/dout through the Dense layer."""
    layers = [identity_dense(k)] + ([last] if last is not None else [])
    return mc.Sequential(layers, dtype=dtype, seed=0)


def dense_layers(model):
    """The model's top-level Dense layers, in order."""
    return [layer for layer in model.layers if isinstance(layer, mc.Dense)]


def dense_arrays(model, dtype=None):
    """Copies [W0, b0, W1, b1, ...] of the Dense layers (the order of the native parameter
    arena), converted to ``dtype`` when given."""
    return [np.array(a, dtype=dtype, copy=True) for layer in dense_layers(model)
            for a in (layer.weight, layer.bias)]


def same_bits(a, b):
    """Two lists of arrays are equal element for element."""
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def epochs_by_train_step(model, x, y, epochs, batch_size, shuffle=True):
    """What fit's native epoch loop does, one train_step call per batch: each epoch shuffles
    with a seed drawn from the model's generator. Returns the epochs' mean losses."""
    losses = []
    for _ in range(epochs):
        order = (mc._core.shuffled_indices(int(model.rng.integers(2**63)), len(x)) if shuffle
                 else np.arange(len(x)))
        total = 0.0
        for lo in range(0, len(x), batch_size):
            rows = order[lo:lo + batch_size]
            total += model.train_step(x[rows], y[rows]) * len(rows)
        losses.append(total / len(x))
    return losses


# --- gradients -----------------------------------------------------------------------------
ACTIVATION_FACTORIES = {
    "Identity": mc.Identity, "ReLU": mc.ReLU, "LeakyReLU": lambda: mc.LeakyReLU(0.2),
    "ELU": lambda: mc.ELU(0.7), "SELU": mc.SELU, "GELU": mc.GELU,
    "GELUTanh": lambda: mc.GELU(approximate="tanh"), "SiLU": mc.SiLU, "Sigmoid": mc.Sigmoid,
    "Tanh": mc.Tanh, "Softplus": lambda: mc.Softplus(beta=1.5), "Softmax": mc.Softmax,
}
ACTIVATION_PARAMS = {"LeakyReLU": {"negative_slope": 0.2}, "ELU": {"alpha": 0.7},
                     "Softplus": {"beta": 1.5}}

LOSS_CASES = ["mse", "mae", "huber", "bce", "bce_with_logits", "cross_entropy_labels",
              "cross_entropy_probs"]
GRADIENT_TOLERANCE = 1e-6


def make_targets(case, n, k, rng):
    if case == "cross_entropy_labels":
        return rng.integers(0, k, size=n)
    if case == "cross_entropy_probs":
        t = rng.random((n, k))
        return t / t.sum(axis=1, keepdims=True)
    if case in ("bce", "bce_with_logits"):
        return rng.random((n, k))
    return rng.normal(0, 1.5, size=(n, k))


def loss_name(case):
    return "cross_entropy" if case.startswith("cross_entropy") else case


def relative_error(analytic, numeric):
    # Relative to the tensor's largest gradient. The floor keeps a tensor whose gradient is zero
    # analytically (sign cancellations under mae, a bias feeding a BatchNorm) from turning the
    # central differences' round-off (eps * loss / h, up to ~2e-10 here) into a large ratio:
    # such a tensor must then match to 1e-9 absolutely.
    scale = max(np.abs(analytic).max(), np.abs(numeric).max(), 1e-3)
    return np.abs(analytic - numeric).max() / scale


def numeric_gradient(f, array, h=1e-6):
    grad = np.zeros_like(array)
    flat, g = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        g[i] = (up - down) / (2 * h)
    return grad


def check_model(model, x, y):
    """Compare every analytic gradient (parameters and input) with central differences."""
    loss, dx = model.compute_gradients(x, y, return_input_grad=True)
    analytic = {}
    for i, layer in enumerate(model.layers):
        if isinstance(layer, mc.Dense):
            analytic[f"{i}.weight"] = layer.weight_grad.copy()
            analytic[f"{i}.bias"] = layer.bias_grad.copy()

    def f():
        return model.evaluate(x, y)["loss"]

    assert f() == pytest.approx(loss, rel=1e-12)
    errors = {"input": relative_error(dx, numeric_gradient(f, x))}
    for i, layer in enumerate(model.layers):
        if isinstance(layer, mc.Dense):
            errors[f"{i}.weight"] = relative_error(analytic[f"{i}.weight"],
                                                   numeric_gradient(f, layer.weight))
            errors[f"{i}.bias"] = relative_error(analytic[f"{i}.bias"],
                                                 numeric_gradient(f, layer.bias))
    worst = max(errors, key=errors.get)
    assert errors[worst] < GRADIENT_TOLERANCE, \
        f"gradient of {worst}: relative error {errors[worst]:.2e}"


# --- the ISA copies of the kernels -------------------------------------------------------
@contextlib.contextmanager
def kernel_isa(name):
    """Run the block with mlpcore's kernels on one ISA path (GEMM and element-wise copies)."""
    before = mc._core._get_gemm_isa()
    mc._core._set_gemm_isa(name)
    try:
        yield
    finally:
        mc._core._set_gemm_isa(before)


def usable_isas():
    return list(mc.kernel_info()["available"])


# --- resident memory --------------------------------------------------------------------------
def rss_bytes():
    """This process's resident memory (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Resident memory shows what was freed only in a normal build: the sanitizer job's ASan keeps
# freed blocks resident in its quarantine (to catch uses after free).
needs_resident_memory = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm") or os.environ.get("MLPCORE_SANITIZED") == "1",
    reason="needs /proc, and a build without ASan's quarantine")


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name):
    """A script of benchmarks/ (``name``.py) loaded as a module, without running its main."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

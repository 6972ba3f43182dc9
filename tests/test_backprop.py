"""Float64 central-difference gradient checks: every activation x every loss, through whole
networks (input, weight and bias gradients), plus the fused/unfused layer arrangements."""
import zlib

import numpy as np
import pytest

import mlpcore as mc
from conftest import ACTIVATION_FACTORIES

LOSS_CASES = ["mse", "mae", "huber", "bce", "bce_with_logits", "cross_entropy_labels",
              "cross_entropy_probs"]
TOLERANCE = 1e-6


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
    assert errors[worst] < TOLERANCE, f"gradient of {worst}: relative error {errors[worst]:.2e}"


@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("act", sorted(ACTIVATION_FACTORIES))
def test_gradients_every_activation_and_loss(act, case):
    rng = np.random.default_rng(zlib.crc32(f"{act}-{case}".encode()))
    n, n_in, hidden, k = 7, 4, 5, 3  # odd n: mae sign sums cannot cancel to exactly 0
    layers = [mc.Dense(n_in, hidden), ACTIVATION_FACTORIES[act](), mc.Dense(hidden, k)]
    if case == "bce":
        layers.append(mc.Sigmoid())  # bce takes probabilities
    model = mc.Sequential(layers, dtype="float64", seed=1)
    model.compile(loss=loss_name(case), optimizer="sgd")
    x = rng.normal(size=(n, n_in))
    check_model(model, x, make_targets(case, n, k, rng))


@pytest.mark.parametrize("layers", [
    # unfused backward: two activations in a row, Softmax inside, Dense straight into Dense
    lambda: [mc.Dense(4, 6), mc.Tanh(), mc.Sigmoid(), mc.Dense(6, 3)],
    lambda: [mc.Dense(4, 6), mc.Softmax(), mc.Dense(6, 5), mc.GELU(), mc.Dense(5, 3)],
    lambda: [mc.Dense(4, 6), mc.Dense(6, 5), mc.SiLU(), mc.Dense(5, 3), mc.Identity()],
    lambda: [mc.Dense(4, 8), mc.ReLU(), mc.Dense(8, 8), mc.ELU(), mc.Dense(8, 8), mc.Tanh(),
             mc.Dense(8, 3)],
], ids=["act-act", "softmax-hidden", "dense-dense", "deep"])
@pytest.mark.parametrize("case", ["mse", "cross_entropy_labels"])
def test_gradients_layer_arrangements(layers, case):
    rng = np.random.default_rng(7)
    model = mc.Sequential(layers(), dtype="float64", seed=2)
    model.compile(loss=loss_name(case), optimizer="sgd")
    check_model(model, rng.normal(size=(5, 4)), make_targets(case, 5, 3, rng))


def test_huber_both_branches_and_custom_delta():
    rng = np.random.default_rng(3)
    model = mc.Sequential([mc.Dense(3, 4), mc.Tanh(), mc.Dense(4, 2)], dtype="float64", seed=0)
    model.compile(loss="huber", optimizer="sgd", huber_delta=0.3)
    x = rng.normal(size=(8, 3))
    y = model.predict(x) + rng.choice([-1.0, 1.0], size=(8, 2)) * rng.uniform(0.05, 0.6, (8, 2))
    check_model(model, x, y)

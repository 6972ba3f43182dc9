"""Float64 central-difference gradient checks: every activation x every loss, through whole
networks (input, weight and bias gradients), plus the fused/unfused layer arrangements."""
import zlib

import numpy as np
import pytest

import mlpcore as mc
from helpers import (ACTIVATION_FACTORIES, LOSS_CASES, check_model, loss_name,
                     make_targets)


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

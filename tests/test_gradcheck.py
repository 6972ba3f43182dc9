"""mc.gradcheck: passes on correct models (float32 through a float64 twin, float64 in place,
every loss, sample weights, norm/dropout/residual layers), fails on a deliberately wrong
gradient, and never changes the model's weights."""
import numpy as np
import pytest

import mlpcore as mc
from mlpcore.gradcheck import GRADCHECK_FLOOR, GradcheckResult
from helpers import LOSS_CASES, make_targets



def build(case="mse", dtype="float64", seed=0, l2=0.0):
    layers = [mc.Dense(4, 6, l2=l2), mc.Tanh(), mc.Dense(6, 5), mc.ELU(), mc.Dense(5, 3)]
    if case == "bce":
        layers.append(mc.Sigmoid())
    model = mc.Sequential(layers, dtype=dtype, seed=seed)
    loss = "cross_entropy" if case.startswith("cross_entropy") else case
    model.compile(loss=loss, optimizer="adam", huber_delta=0.4)
    return model


def snapshot(model):
    return [(a.copy()) for layer in model.flat_layers if hasattr(layer, "weight_grad")
            for a in (layer.weight, layer.bias)]


def assert_bit_identical(before, model):
    after = snapshot(model)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", LOSS_CASES)
def test_passes_for_every_loss(case, dtype):
    rng = np.random.default_rng(len(case))
    model = build(case, dtype)
    x, y = rng.normal(size=(7, 4)), make_targets(case, 7, 3, rng)
    before = snapshot(model)
    result = mc.gradcheck(model, x, y)
    assert isinstance(result, GradcheckResult)
    assert result.passed, str(result)
    assert result.twin == (dtype == "float32")
    assert set(result.errors) == {"layers.0.weight", "layers.0.bias", "layers.2.weight",
                                  "layers.2.bias", "layers.4.weight", "layers.4.bias", "input"}
    assert result.max_error < 1e-6
    assert_bit_identical(before, model)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sample_weights_and_penalties(dtype):
    rng = np.random.default_rng(5)
    model = build("cross_entropy_labels", dtype, l2=0.05)
    x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    w = rng.uniform(0, 3, size=8)
    result = mc.gradcheck(model, x, y, sample_weight=w)
    assert result.passed, str(result)
    # the weights really enter the check: the loss is the weighted one
    assert result.loss == pytest.approx(model.evaluate(x, y, sample_weight=w)["loss"], rel=1e-5)


def test_norm_dropout_residual_layers_and_side_state_restored():
    rng = np.random.default_rng(2)
    model = mc.Sequential([mc.Dense(4, 6), mc.BatchNorm1d(6), mc.Tanh(),
                           mc.Residual([mc.Dense(6, 6), mc.LayerNorm(6), mc.ReLU(),
                                        mc.Dropout(0.3)]),
                           mc.Dense(6, 3)], dtype="float64", seed=1)
    model.compile(loss="cross_entropy", optimizer="sgd")
    x, y = rng.normal(size=(9, 4)), rng.integers(0, 3, size=9)
    bn = model.layers[1]
    stats = (bn.running_mean.copy(), bn.running_var.copy())
    rng_state = model.dropout_rng_state
    before = snapshot(model)
    result = mc.gradcheck(model, x, y)
    assert result.passed, str(result)
    assert "layers.1.weight" in result.errors and "layers.5.bias" in result.errors
    assert_bit_identical(before, model)
    np.testing.assert_array_equal(bn.running_mean, stats[0])
    np.testing.assert_array_equal(bn.running_var, stats[1])
    assert model.dropout_rng_state == rng_state


def perturb_compute_gradients(model, layer_index, scale=1e-2):
    """Make model.compute_gradients report a wrong gradient for one layer's weight."""
    original = model.compute_gradients
    noise = np.random.default_rng(0).normal(size=model.layers[layer_index].weight.shape)

    def wrong(*args, **kwargs):
        out = original(*args, **kwargs)
        model.layers[layer_index].weight_grad[...] += scale * noise
        return out

    return wrong


def test_fails_on_a_wrong_gradient(monkeypatch):
    rng = np.random.default_rng(3)
    model = build("mse", "float64")
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    before = snapshot(model)
    monkeypatch.setattr(model, "compute_gradients", perturb_compute_gradients(model, 2))
    result = mc.gradcheck(model, x, y)
    assert not result.passed
    assert result.worst == "layers.2.weight"
    assert result.failed == ["layers.2.weight"]
    assert result.errors["layers.2.weight"] > 1e-3
    assert all(err < 1e-6 for name, err in result.errors.items() if name != "layers.2.weight")
    assert "FAIL" in str(result) and "layers.2.weight" in str(result)
    assert_bit_identical(before, model)


def test_fails_on_a_wrong_gradient_through_the_float32_twin(monkeypatch):
    rng = np.random.default_rng(4)
    model = build("cross_entropy_labels", "float32")
    x, y = rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)
    before = snapshot(model)
    original = mc.Sequential.compute_gradients

    def wrong(self, *args, **kwargs):  # the twin is a new Sequential: patch the class
        out = original(self, *args, **kwargs)
        self.layers[0].bias_grad[...] *= 1.01
        return out

    monkeypatch.setattr(mc.Sequential, "compute_gradients", wrong)
    result = mc.gradcheck(model, x, y)
    assert result.twin and not result.passed
    assert result.failed == ["layers.0.bias"]
    assert_bit_identical(before, model)


def test_subset_of_entries():
    rng = np.random.default_rng(6)
    model = mc.Sequential([mc.Dense(30, 40), mc.SiLU(), mc.Dense(40, 2)], dtype="float64",
                          seed=0)
    model.compile(loss="mse", optimizer="sgd")
    x, y = rng.normal(size=(5, 30)), rng.normal(size=(5, 2))
    result = mc.gradcheck(model, x, y, max_checks_per_tensor=25, seed=3)
    assert result.passed, str(result)
    assert result.checked == {"layers.0.weight": 25, "layers.0.bias": 25, "layers.2.weight": 25,
                              "layers.2.bias": 2, "input": 25}
    assert result.sizes["layers.0.weight"] == 1200
    again = mc.gradcheck(model, x, y, max_checks_per_tensor=25, seed=3)
    assert again.worst_index == result.worst_index  # the seed fixes the entries
    no_input = mc.gradcheck(model, x, y, max_checks_per_tensor=5, check_input=False)
    assert "input" not in no_input.errors


def test_floor_keeps_zero_gradients_from_failing():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    # a dead ReLU layer: its incoming weights have exactly zero gradient
    dead = mc.Sequential([mc.Dense(4, 5), mc.ReLU(), mc.Dense(5, 3)], dtype="float64", seed=0)
    dead.compile(loss="mse", optimizer="sgd")
    dead.layers[0].bias[...] = -50
    result = mc.gradcheck(dead, x, y)
    assert result.passed, str(result)
    assert result.errors["layers.0.weight"] == 0.0
    assert result.floor >= GRADCHECK_FLOOR


def test_caller_arrays_untouched_and_report():
    rng = np.random.default_rng(8)
    model = build("mse", "float64")
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    x0 = x.copy()
    result = mc.gradcheck(model, x, y)
    np.testing.assert_array_equal(x, x0)
    text = str(result)
    assert "layers.0.weight" in text and "input" in text and "passed" in text
    assert text == result.report()


def test_errors():
    model = mc.Sequential([mc.Dense(3, 2)], dtype="float64")
    x, y = np.ones((2, 3)), np.ones((2, 2))
    with pytest.raises(RuntimeError, match="compile"):
        mc.gradcheck(model, x, y)
    model.compile(loss="mse", optimizer="sgd")
    for bad in (0, -1e-6, float("nan"), float("inf"), "1e-6", True):
        with pytest.raises(ValueError, match="eps"):
            mc.gradcheck(model, x, y, eps=bad)
        with pytest.raises(ValueError, match="tolerance"):
            mc.gradcheck(model, x, y, tolerance=bad)
    with pytest.raises(ValueError, match="max_checks_per_tensor"):
        mc.gradcheck(model, x, y, max_checks_per_tensor=0)
    with pytest.raises(ValueError, match="features"):
        mc.gradcheck(model, np.ones((2, 4)), y)
    with pytest.raises(ValueError, match="rows"):
        mc.gradcheck(model, x, np.ones((3, 2)))

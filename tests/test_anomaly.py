"""The opt-in anomaly sentinel names the layer, pass and step of the first NaN/Inf; fit's
diagnostics record per-layer statistics natively."""
import numpy as np
import pytest

import mlpcore as mc


def model_with(detect_anomaly=True, loss="cross_entropy", dtype="float32"):
    model = mc.Sequential([mc.Dense(4, 8), mc.ReLU(), mc.Dense(8, 8), mc.Tanh(), mc.Dense(8, 3)],
                          dtype=dtype, seed=0)
    model.compile(loss=loss, optimizer="sgd", detect_anomaly=detect_anomaly)
    return model


def test_sentinel_names_a_planted_forward_layer(rng):
    x, y = rng.normal(size=(16, 4)), rng.integers(0, 3, 16)
    model = model_with()
    model.layers[2].weight[0, 0] = np.inf  # Dense at plan index 2
    with pytest.raises(mc.NonFiniteLossError,
                       match=r"epoch 1, step 1 \(first seen in the forward pass at layer 2, Dense\)"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)


def test_sentinel_names_the_backward_pass(rng):
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 3))

    def nan_gradient(pred, target):
        grad = np.zeros_like(pred)
        grad[0, 0] = np.nan
        return 0.5, grad

    model = model_with(loss=nan_gradient)
    with pytest.raises(mc.NonFiniteLossError, match="backward pass at layer 4, Dense"):
        model.train_step(x, y)


def test_sentinel_reports_the_loss_and_is_silent_when_off(rng):
    x = rng.normal(size=(8, 4))
    model = model_with(loss="mse", dtype="float64")
    model.layers[4].weight[...] = 1e200  # finite outputs that overflow once squared in the loss
    with pytest.raises(mc.NonFiniteLossError, match="first seen in the loss"):
        model.train_step(x, np.zeros((8, 3)))
    model = model_with(loss="mse")
    model.layers[4].weight[...] = 1e30  # float32: the loss (in double) is finite, dW is not
    with pytest.raises(mc.NonFiniteLossError, match="backward pass at layer 4, Dense"):
        model.train_step(x, np.zeros((8, 3)))
    quiet = model_with(detect_anomaly=False, loss="mse")
    quiet.layers[4].weight[...] = 1e30
    with pytest.raises(mc.NonFiniteLossError) as info:
        quiet.train_step(x, np.zeros((8, 3)))
    assert "first seen" not in str(info.value)


def test_sentinel_does_not_change_results(rng):
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64)
    a, b = model_with(True), model_with(False)
    a.fit(x, y, epochs=2, batch_size=8, verbose=0)
    b.fit(x, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_fit_diagnostics_match_python_computations(rng):
    x, y = rng.normal(size=(32, 4)), rng.integers(0, 3, 32)
    model = model_with(detect_anomaly=False, dtype="float64")
    before = [layer.weight.copy() for layer in model.flat_layers if hasattr(layer, "weight")]
    bias_before = model.layers[0].bias.copy()
    history = model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0,
                        diagnostics=True)
    h = {k: v[0] for k, v in history.history.items()}
    # one step: the statistics are those of that step
    assert h["grad_norm_std"] == pytest.approx(0.0, abs=1e-9)
    assert h["grad_norm"] == pytest.approx(model.last_grad_norm, rel=1e-12)
    w0 = model.layers[0]
    assert h["weight_norm/0"] == pytest.approx(
        np.sqrt((w0.weight ** 2).sum() + (w0.bias ** 2).sum()), rel=1e-12)
    change = np.sum((w0.weight - before[0]) ** 2) + np.sum((w0.bias - bias_before) ** 2)
    old = np.sum(before[0] ** 2) + np.sum(bias_before ** 2)
    assert h["update_ratio/0"] == pytest.approx(np.sqrt(change / old), rel=1e-10)
    hidden = model.layer_outputs(x)
    relu, tanh = hidden[1], hidden[3]
    # the step's forward used the weights before the update: recompute from the start weights
    first = np.maximum(x @ before[0] + 0, 0)  # biases start at zero
    assert h["act_mean/1"] == pytest.approx(first.mean(), rel=1e-12)
    assert h["dead_frac/1"] == pytest.approx(np.mean(np.all(first == 0, axis=0)), abs=1e-12)
    assert 0.0 <= h["saturated_frac/3"] <= 1.0 and "dead_frac/3" not in h
    assert relu.shape == (32, 8) and tanh.shape == (32, 8)


def test_diagnostics_over_an_epoch_and_off_by_default(rng):
    x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, 64)
    model = model_with(detect_anomaly=False)
    plain = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert "grad_norm" not in plain.history
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, diagnostics=True)
    assert len(history.history["grad_norm"]) == 2
    assert history.history["grad_norm_std"][0] > 0  # eight batches, different norms
    assert {"grad_norm/0", "grad_norm/2", "grad_norm/4", "act_std/1"} <= set(history.history)

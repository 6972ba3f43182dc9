"""Custom (Python) losses: same results as the built-in loss they re-implement, gradient check,
fit, errors."""
import numpy as np
import pytest

import mlpcore as mc
from helpers import check_model


def mse_loss(pred, target):
    diff = pred - target
    return float(np.mean(diff ** 2)), 2 * diff / diff.size


class Cauchy:
    """An object with value_and_grad: log(1 + d^2), averaged."""
    name = "cauchy"

    def value_and_grad(self, pred, target):
        d = pred - target
        return float(np.mean(np.log1p(d * d))), 2 * d / (1 + d * d) / d.size


def make(loss, dtype="float64", seed=0, **kw):
    model = mc.Sequential([mc.Dense(4, 8, l2=0.01), mc.Tanh(), mc.Dense(8, 2)], dtype=dtype,
                          seed=seed)
    model.compile(loss=loss, optimizer=mc.optim.Adam(lr=1e-2), **kw)
    return model


def test_custom_mse_equals_builtin_mse(rng):
    x, y = rng.normal(size=(64, 4)), rng.normal(size=(64, 2))
    custom, builtin = make(mse_loss), make("mse")
    assert custom.compute_gradients(x, y) == pytest.approx(builtin.compute_gradients(x, y),
                                                           rel=1e-12)
    np.testing.assert_allclose(custom.layers[0].weight_grad, builtin.layers[0].weight_grad,
                               rtol=1e-12)
    hc = custom.fit(x, y, epochs=3, batch_size=16, verbose=0)
    hb = builtin.fit(x, y, epochs=3, batch_size=16, verbose=0)
    np.testing.assert_allclose(hc.history["loss"], hb.history["loss"], rtol=1e-10)
    np.testing.assert_allclose(custom.predict(x), builtin.predict(x), rtol=1e-9)
    assert custom.evaluate(x, y)["loss"] == pytest.approx(builtin.evaluate(x, y)["loss"],
                                                          rel=1e-10)


def test_custom_loss_object_passes_the_gradient_check(rng):
    model = make(Cauchy())
    assert model.loss.name == "cauchy"
    check_model(model, rng.normal(size=(7, 4)), rng.normal(size=(7, 2)))


def test_custom_loss_errors(rng):
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 2))
    model = make(lambda p, t: (0.0, np.zeros((3, 3))))
    with pytest.raises(ValueError, match="gradient of shape"):
        model.train_step(x, y)
    model = make(lambda p, t: 1.0)
    with pytest.raises(TypeError, match=r"must return \(value, gradient\)"):
        model.train_step(x, y)
    model = make(mse_loss)
    with pytest.raises(ValueError, match="sample_weight is not supported"):
        model.train_step(x, y, sample_weight=np.ones(8))
    with pytest.raises(TypeError, match="loss must be a str or a callable"):
        make(3)


def test_non_finite_custom_loss_stops_training(rng):
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 2))
    model = make(lambda p, t: (float("nan"), np.zeros_like(p)))
    before = model.layers[0].weight.copy()
    with pytest.raises(mc.NonFiniteLossError):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    np.testing.assert_array_equal(model.layers[0].weight, before)


def test_model_with_custom_loss_saves_weights_and_loads_uncompiled(tmp_path, rng):
    model = make(mse_loss)
    x = rng.normal(size=(5, 4))
    model.save(tmp_path / "m.safetensors")
    loaded = mc.load(tmp_path / "m.safetensors")
    assert loaded.loss is None
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_loss_that_works_in_place_changes_neither_the_targets_nor_the_training(rng):
    """y may be the caller's own array and the output is the buffer the backward pass reads:
    the loss gets copies, so arithmetic in place on either changes nothing outside it."""
    x = rng.normal(size=(16, 4))
    y = rng.normal(size=(16, 2))
    y_before = y.copy()

    def in_place(pred, tgt):
        pred -= tgt  # the difference, in the prediction's array
        tgt *= 0.0
        return float(np.mean(pred ** 2)), 2 * pred / pred.size

    runs = []
    for loss in (in_place, mse_loss):
        model = make(loss)
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        np.testing.assert_array_equal(y, y_before)
        runs.append((model.layers[0].weight.copy(), model.evaluate(x, y)))
        np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]

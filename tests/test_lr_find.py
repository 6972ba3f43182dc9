"""mc.lr_find: the learning-rate range test, and that it leaves the model bit for bit as it was."""
import numpy as np
import pytest

import mlpcore as mc


def _problem(rng, n=256):
    x = rng.normal(size=(n, 6))
    w = rng.normal(size=(6, 1))
    return x, x @ w + 0.05 * rng.normal(size=(n, 1))


def _state(model):
    return (model.get_weights(), np.array(model.grads_view()),
            {k: v.copy() for k, v in model.optimizer_state_views().items()},
            model.optimizer_steps, dict(model.optimizer.param_groups[0]),
            model.rng.bit_generator.state, model.dropout_rng_state)


def _same(a, b):
    assert len(a[0]) == len(b[0]) and all(np.array_equal(u, v) for u, v in zip(a[0], b[0]))
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2].keys() == b[2].keys() and all(np.array_equal(a[2][k], b[2][k]) for k in a[2])
    assert a[3:] == b[3:]


def test_range_test_finds_a_rate_and_restores_everything(rng):
    x, y = _problem(rng)
    model = mc.Sequential([mc.Dense(6, 16), mc.Tanh(), mc.Dropout(0.1),
                           mc.BatchNorm1d(16), mc.Dense(16, 1)], seed=3)
    model.compile(loss="mse", optimizer=mc.optim.Adam(lr=1e-3))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # non-trivial optimizer state
    before = _state(model)
    result = mc.lr_find(model, x, y, start_lr=1e-6, end_lr=10.0, num_steps=150)
    _same(before, _state(model))
    assert result.lrs.size == result.losses.size == result.smoothed.size > 3
    assert np.all(np.diff(result.lrs) > 0)
    assert result.lrs[0] == pytest.approx(1e-6)
    assert result.diverged  # an lr of 10 blows this problem up
    assert 1e-6 <= result.suggestion <= result.lrs[int(np.argmin(result.smoothed))]
    # the suggestion trains: a few epochs at it from the same start lower the loss
    start = model.evaluate(x, y)["loss"]
    model.optimizer.lr = result.suggestion
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert model.evaluate(x, y)["loss"] < start
    assert "suggested lr" in str(result)


def test_restored_model_trains_identically(rng):
    x, y = _problem(rng, 64)

    def build():
        m = mc.Sequential([mc.Dense(6, 8), mc.ReLU(), mc.Dropout(0.2), mc.Dense(8, 1)], seed=5)
        m.compile(loss="mse", optimizer=mc.optim.SGD(lr=1e-2, momentum=0.9))
        return m
    a, b = build(), build()
    mc.lr_find(a, x, y, num_steps=20, batch_size=16)
    ha = a.fit(x, y, epochs=2, batch_size=16, verbose=0).history["loss"]
    hb = b.fit(x, y, epochs=2, batch_size=16, verbose=0).history["loss"]
    assert ha == hb


def test_bad_arguments(rng):
    x, y = _problem(rng, 16)
    model = mc.Sequential([mc.Dense(6, 1)])
    with pytest.raises(RuntimeError, match="compile"):
        mc.lr_find(model, x, y)
    model.compile(loss="mse", optimizer="sgd")
    with pytest.raises(ValueError, match="start_lr"):
        mc.lr_find(model, x, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="smoothing"):
        mc.lr_find(model, x, y, smoothing=1.0)
    with pytest.raises(ValueError, match="x"):
        mc.lr_find(model, x[:, :3], y)


def test_plot(rng):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    x, y = _problem(rng, 64)
    model = mc.Sequential([mc.Dense(6, 1)], seed=0)
    model.compile(loss="mse", optimizer="sgd")
    ax = mc.lr_find(model, x, y, num_steps=30).plot()
    assert ax.get_xscale() == "log" and len(ax.lines) >= 2

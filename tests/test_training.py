"""fit: the real digits task, history, validation and progress output."""
import numpy as np
import pytest

import mlpcore as mc
from mlpcore.data import load_digits, standardize, train_test_split


@pytest.fixture(scope="module")
def digits():
    x_tr, y_tr, x_te, y_te = train_test_split(load_digits(), 0.25, seed=0)
    x_tr, x_te = standardize(x_tr, x_te)
    return x_tr, y_tr, x_te, y_te


def digits_model(seed=0):
    model = mc.Sequential([mc.Dense(64, 128), mc.ReLU(), mc.Dense(128, 64), mc.ReLU(),
                           mc.Dense(64, 10)], dtype="float32", seed=seed)
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-3))
    return model


def test_digits_reaches_97_percent_test_accuracy(digits):
    x_tr, y_tr, x_te, y_te = digits
    model = digits_model()
    history = model.fit(x_tr, y_tr, epochs=30, batch_size=32, validation_data=(x_te, y_te),
                        verbose=0)
    result = model.evaluate(x_te, y_te)
    assert result["accuracy"] >= 0.97
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 30 and history.epoch == list(range(30))
    assert history.history["loss"][-1] < history.history["loss"][0] / 10
    assert history.history["val_accuracy"][-1] == pytest.approx(result["accuracy"])
    assert history.history["val_loss"][-1] == pytest.approx(result["loss"])
    predicted = model.predict(x_te).argmax(axis=1)
    assert np.mean(predicted == y_te) == pytest.approx(result["accuracy"])


def test_fit_loss_is_the_mean_of_its_batches(digits):
    x_tr, y_tr, _, _ = digits
    x, y = x_tr[:100], y_tr[:100]
    a, b = digits_model(seed=4), digits_model(seed=4)
    history = a.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    losses = [b.train_step(x[i:i + 32], y[i:i + 32]) for i in range(0, 100, 32)]
    sizes = [32, 32, 32, 4]
    assert history.history["loss"][0] == pytest.approx(np.dot(losses, sizes) / 100, rel=1e-12)
    assert all(np.array_equal(la.weight, lb.weight) for la, lb in zip(a.layers, b.layers)
               if isinstance(la, mc.Dense))


def test_verbose_levels(digits, capsys):
    x_tr, y_tr, _, _ = digits
    digits_model().fit(x_tr[:64], y_tr[:64], epochs=2, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    digits_model().fit(x_tr[:64], y_tr[:64], epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "loss=" in err
    digits_model().fit(x_tr[:64], y_tr[:64], epochs=2, verbose=2)
    err = capsys.readouterr().err
    assert "Epoch 2/2 - loss:" in err and "accuracy:" in err


def test_regression_fit_and_evaluate(rng):
    x = rng.normal(size=(256, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1
    model = mc.Sequential([mc.Dense(3, 32), mc.Tanh(), mc.Dense(32, 1)], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=mc.optim.Adam(lr=1e-2))
    history = model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    result = model.evaluate(x, y)
    assert set(result) == {"loss"}
    assert result["loss"] < 0.05 and result["loss"] < history.history["loss"][0] / 20

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
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
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


def test_verbose_levels(digits, capsys, monkeypatch):
    x_tr, y_tr, _, _ = digits
    digits_model().fit(x_tr[:64], y_tr[:64], epochs=2, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    monkeypatch.setattr(mc.callbacks, "_is_terminal", lambda stream: True)  # a bar
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
    assert set(result) == {"loss", "mae", "r2"}
    assert result["loss"] < 0.05 and result["loss"] < history.history["loss"][0] / 20


# --- fit options: weights, validation_split, initial_epoch, lr, metrics, plot ---------------
def small_classifier(seed=0, dtype="float64"):
    model = mc.Sequential([mc.Dense(5, 12), mc.Tanh(), mc.Dense(12, 3)], dtype=dtype, seed=seed)
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-2))
    return model


def small_data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)


def test_fit_sample_weight_equals_weighted_train_steps():
    x, y = small_data()
    w = np.random.default_rng(1).uniform(0, 2, size=len(x))
    fitted, stepped = small_classifier(), small_classifier()
    history = fitted.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0,
                         sample_weight=w)
    for _ in range(2):
        total = 0.0
        for lo in range(0, len(x), 32):
            sl = slice(lo, lo + 32)
            total += stepped.train_step(x[sl], y[sl], sample_weight=w[sl]) * len(x[sl])
    assert np.array_equal(fitted.params_view(), stepped.params_view())
    assert history.history["loss"][-1] == pytest.approx(total / len(x), rel=1e-12)
    unweighted = small_classifier()
    unweighted.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    assert not np.array_equal(unweighted.params_view(), fitted.params_view())


def test_class_weight_is_a_per_class_sample_weight():
    x, y = small_data()
    cw = {0: 0.5, 2: 3.0}  # class 1 keeps weight 1
    a, b = small_classifier(), small_classifier()
    ha = a.fit(x, y, epochs=2, batch_size=16, verbose=0, class_weight=cw)
    hb = b.fit(x, y, epochs=2, batch_size=16, verbose=0,
               sample_weight=np.array([cw.get(int(c), 1.0) for c in y]))
    assert np.array_equal(a.params_view(), b.params_view()) and ha.history == hb.history
    # combined with sample_weight: multiplied
    sw = np.linspace(0.5, 1.5, len(x))
    c, d = small_classifier(), small_classifier()
    c.fit(x, y, epochs=1, verbose=0, class_weight=cw, sample_weight=sw)
    d.fit(x, y, epochs=1, verbose=0, sample_weight=sw * [cw.get(int(k), 1.0) for k in y])
    assert np.array_equal(c.params_view(), d.params_view())
    # one-hot targets: the class is the argmax
    e, f = small_classifier(), small_classifier()
    e.fit(x, np.eye(3)[y], epochs=1, verbose=0, class_weight=cw)
    f.fit(x, y, epochs=1, verbose=0, class_weight=cw)
    assert np.allclose(e.params_view(), f.params_view(), rtol=1e-12, atol=1e-14)


def test_weight_errors_name_the_argument():
    x, y = small_data(40)
    model = small_classifier()
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        model.fit(x, y, verbose=0, sample_weight=np.ones(39))
    with pytest.raises(ValueError, match="sample_weight must be finite and non-negative"):
        model.fit(x, y, verbose=0, sample_weight=np.r_[-1.0, np.ones(39)])
    with pytest.raises(ValueError, match="sample_weight must be finite and non-negative"):
        model.fit(x, y, verbose=0, sample_weight=np.r_[np.nan, np.ones(39)])
    with pytest.raises(ValueError, match="class_weight names class 3"):
        model.fit(x, y, verbose=0, class_weight={0: 1.0, 3: 2.0})
    with pytest.raises(ValueError, match=r"class_weight\[1\]"):
        model.fit(x, y, verbose=0, class_weight={1: -2.0})
    with pytest.raises(TypeError, match="class_weight must be a dict"):
        model.fit(x, y, verbose=0, class_weight=[1.0, 2.0, 3.0])
    reg = mc.Sequential([mc.Dense(5, 1)], dtype="float64")
    reg.compile(loss="mse")
    with pytest.raises(ValueError, match="class_weight needs a classification loss"):
        reg.fit(x, x[:, 0], verbose=0, class_weight={0: 1.0})
    assert model.optimizer.step_count == 0


def test_binary_class_weight_uses_the_0_1_target():
    x, y = small_data(60)
    yb = (y > 0).astype(np.float64).reshape(-1, 1)

    def binary():
        m = mc.Sequential([mc.Dense(5, 4), mc.Tanh(), mc.Dense(4, 1)], dtype="float64", seed=2)
        m.compile(loss="bce_with_logits", optimizer="adam")
        return m

    a, b = binary(), binary()
    a.fit(x, yb, epochs=1, verbose=0, class_weight={1: 4.0})
    b.fit(x, yb, epochs=1, verbose=0, sample_weight=np.where(yb[:, 0] > 0, 4.0, 1.0))
    assert np.array_equal(a.params_view(), b.params_view())
    with pytest.raises(ValueError, match="class_weight names class 2"):
        binary().fit(x, yb, verbose=0, class_weight={2: 1.0})


def test_validation_split_holds_out_the_last_rows():
    x, y = small_data(100)
    a, b = small_classifier(), small_classifier()
    ha = a.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_split=0.2)
    hb = b.fit(x[:80], y[:80], epochs=2, batch_size=16, verbose=0,
               validation_data=(x[80:], y[80:]))
    assert ha.history == hb.history and np.array_equal(a.params_view(), b.params_view())
    assert set(ha.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    # sample weights are split along (and weigh the validation loss)
    w = np.r_[np.ones(80), np.linspace(0, 2, 20)]
    c = small_classifier()
    hc = c.fit(x, y, epochs=1, verbose=0, validation_split=0.2, sample_weight=w)
    assert hc.history["val_loss"][0] == pytest.approx(
        c.evaluate(x[80:], y[80:], sample_weight=w[80:])["loss"], rel=1e-12)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="validation_split"):
            small_classifier().fit(x, y, verbose=0, validation_split=bad)
    with pytest.raises(ValueError, match="validation_split"):
        small_classifier().fit(x[:1], y[:1], verbose=0, validation_split=0.5)


def test_initial_epoch_and_lr_history():
    x, y = small_data()
    model = small_classifier()
    history = model.fit(x, y, epochs=5, initial_epoch=3, verbose=0)
    assert history.epoch == [3, 4] and history.history["lr"] == [1e-2, 1e-2]
    for bad in (-1, 5, 7):
        with pytest.raises(ValueError, match="initial_epoch"):
            model.fit(x, y, epochs=5, initial_epoch=bad, verbose=0)
    model.optimizer.lr = 3e-3
    assert model.fit(x, y, epochs=1, verbose=0).history["lr"] == [3e-3]


def test_regression_metrics_in_evaluate_and_fit(rng):
    x = rng.normal(size=(120, 3))
    y = np.stack([x @ [1.0, -2.0, 0.5], np.sin(x[:, 0])], axis=1)
    model = mc.Sequential([mc.Dense(3, 16), mc.Tanh(), mc.Dense(16, 2)], dtype="float64", seed=0)
    model.compile(loss="huber", optimizer=mc.optim.Adam(lr=1e-2), metrics=["mae", "r2"])
    assert model.metrics == ["mae", "r2"]
    history = model.fit(x[:90], y[:90], epochs=5, verbose=0, validation_data=(x[90:], y[90:]))
    assert set(history.history) == {"loss", "mae", "r2", "val_loss", "val_mae", "val_r2", "lr"}
    result = model.evaluate(x[90:], y[90:])
    pred = model.predict(x[90:])
    assert result["mae"] == pytest.approx(np.mean(np.abs(pred - y[90:])), rel=1e-12)
    r2 = np.mean([1 - np.sum((pred[:, j] - y[90:, j]) ** 2)
                  / np.sum((y[90:, j] - y[90:, j].mean()) ** 2) for j in range(2)])
    assert result["r2"] == pytest.approx(r2, rel=1e-12)
    assert history.history["val_r2"][-1] == pytest.approx(result["r2"], rel=1e-12)
    train = model.evaluate(x[:90], y[:90])
    assert history.history["mae"][-1] == pytest.approx(train["mae"], rel=1e-12)
    assert history.history["r2"][-1] > history.history["r2"][0]
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert result["r2"] == pytest.approx(sklearn_metrics.r2_score(y[90:], pred), rel=1e-10)
    # without compile(metrics=...) the training set is not re-predicted
    model.compile(loss="mse", optimizer="adam")
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == {"loss", "lr"}


def test_compile_metrics_are_validated():
    model = small_classifier()
    with pytest.raises(ValueError, match="valid names: accuracy, mae, r2"):
        model.compile(loss="mse", metrics=["rmse"])
    with pytest.raises(ValueError, match="does not apply"):
        model.compile(loss="cross_entropy", metrics=["r2"])
    with pytest.raises(ValueError, match="does not apply"):
        model.compile(loss="mse", metrics=["accuracy"])
    with pytest.raises(TypeError, match="metrics must be a list"):
        model.compile(loss="mse", metrics="mae")
    model.compile(loss="cross_entropy", metrics=["accuracy"])
    assert model.metrics == ["accuracy"]


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = small_data()
    history = small_classifier().fit(x, y, epochs=3, verbose=0, validation_split=0.2)
    path = tmp_path / "curves.png"
    fig = history.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "lr"]
    assert len(fig.axes[0].lines) == 2  # train and validation
    history.history["grad_norm/0"] = [1.0, 0.5, 0.25]
    history.history["grad_norm/2"] = [2.0, 1.0, 0.5]
    fig = history.plot(keys=["loss", "grad_norm"])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "gradient norm per layer"]
    assert len(fig.axes[1].lines) == 2
    with pytest.raises(ValueError, match="not in the history"):
        history.plot(keys=["mae"])
    with pytest.raises(ValueError, match="empty"):
        mc.History().plot()


def test_history_plot_without_matplotlib(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    history = mc.History()
    history._record(0, {"loss": 1.0})
    with pytest.raises(ImportError, match=r"pip install mlpcore\[plot\]"):
        history.plot()


def test_cli_train_plot_option(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from mlpcore.cli import main
    path = tmp_path / "curves.png"
    assert main(["train", "--epochs", "2", "--layers", "16", "--quiet", "--plot", str(path)]) == 0
    assert f"plot: {path}" in capsys.readouterr().out
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert main(["train", "--epochs", "1", "--plot", str(tmp_path / "no" / "c.png")]) == 2
    assert "--plot: folder" in capsys.readouterr().err


def test_fit_shows_its_arguments_to_help_and_ides():
    import inspect
    params = inspect.signature(mc.Sequential.fit).parameters
    assert not any(p.kind == p.VAR_KEYWORD for p in params.values())
    for name in ("epochs", "batch_size", "shuffle", "validation_data", "verbose", "callbacks",
                 "validation_split", "initial_epoch", "sample_weight", "class_weight"):
        assert name in params and f"``{name}``" in mc.Sequential.fit.__doc__


def _weighted_classifier(seed=0):
    model = mc.Sequential([mc.Dense(6, 16), mc.ReLU(), mc.Dense(16, 3)], seed=seed)
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=0.01))
    return model


def test_fit_epochs_trains_as_fit_and_stops_when_asked():
    """The lean loop the scikit-learn estimators drive: fit's batches and rng draws (same
    bits), its epoch losses, and end_epoch's True ends training."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=150)
    w = rng.uniform(0.5, 2.0, size=150)
    a, b = _weighted_classifier(), _weighted_classifier()
    history = a.fit(x, y, epochs=4, batch_size=32, verbose=0, sample_weight=w)
    losses = []
    b._fit_epochs(x, y, epochs=4, batch_size=32, shuffle=True, sample_weight=w,
                  end_epoch=lambda loss: losses.append(loss) and False)
    for la, lb in zip(a.layers[::2], b.layers[::2]):
        np.testing.assert_array_equal(la.weight, lb.weight)
        np.testing.assert_array_equal(la.bias, lb.bias)
    np.testing.assert_allclose(losses, history.history["loss"], rtol=1e-12)
    c = _weighted_classifier()
    calls = []
    c._fit_epochs(x, y, epochs=4, batch_size=32, shuffle=False,
                  end_epoch=lambda loss: calls.append(loss) or len(calls) == 2)
    assert len(calls) == 2 and c.optimizer.step_count == 2 * 5  # 150 rows: 5 batches


def test_fit_epochs_raises_on_a_non_finite_loss():
    x = np.full((20, 6), 1e30, dtype=np.float32)
    model = _weighted_classifier()
    model.compile(loss="mse", optimizer="sgd")
    with pytest.raises(mc.NonFiniteLossError, match="epoch 1, step 1"):
        model._fit_epochs(x, np.zeros((20, 3), np.float32), epochs=2, batch_size=10,
                          shuffle=True, end_epoch=lambda loss: False)


@pytest.mark.parametrize("run_size", [1024, 2], ids=["one-run", "runs-of-2"])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("tol, epochs", [(0.0, 7), (10.0, 40)], ids=["all-epochs", "plateau"])
def test_fit_epochs_in_one_native_call_match_the_epoch_loop(shuffle, tol, epochs, run_size,
                                                            monkeypatch):
    """With a plateau rule the epochs run in one native call (or runs of a bounded number of
    epochs, the rule's state carried across): the same weights (bits), losses, stopping epoch
    and rng state afterwards as the Python loop applying the same rule."""
    monkeypatch.setattr(mc.training, "_NATIVE_EPOCH_RUN", run_size)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=150)
    scale, patience = 1.0, 2

    def run(plateau):
        model = _weighted_classifier()
        state = {"best": np.inf, "count": 0, "losses": []}

        def end_epoch(loss):  # the rule PlateauRule applies, as scikit-learn's _end_epoch
            state["losses"].append(loss)
            scaled = loss / scale
            state["count"] = state["count"] + 1 if scaled > state["best"] - tol else 0
            state["best"] = min(state["best"], scaled)
            return state["count"] > patience

        model._fit_epochs(x, y, epochs=epochs, batch_size=32, shuffle=shuffle,
                          end_epoch=end_epoch,
                          plateau=(scale, tol, np.inf, patience, 0) if plateau else None)
        return model, state["losses"]

    slow, slow_losses = run(False)
    fast, fast_losses = run(True)
    assert fast_losses == slow_losses
    assert len(fast_losses) == (epochs if tol == 0.0 else patience + 2)  # tol 10: no epoch counts
    np.testing.assert_array_equal(fast.params_view(), slow.params_view())
    assert fast.rng.bit_generator.state == slow.rng.bit_generator.state
    assert fast.optimizer.step_count == slow.optimizer.step_count


def test_fit_epochs_in_one_native_call_record_the_epochs_before_a_non_finite_one():
    x = np.ones((40, 6), dtype=np.float32)
    model = _weighted_classifier()
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=10.0))
    y = np.full((40, 3), 1e3, np.float32)  # a rate this large diverges after some epochs
    losses = []
    with pytest.raises(mc.NonFiniteLossError, match=r"at epoch (\d+)") as info:
        model._fit_epochs(x, y, epochs=50, batch_size=40, shuffle=True,
                          end_epoch=lambda loss: losses.append(loss) and False,
                          plateau=(1.0, 0.0, np.inf, 100, 0))
    assert losses and all(np.isfinite(losses))
    assert f"at epoch {len(losses) + 1}," in str(info.value)

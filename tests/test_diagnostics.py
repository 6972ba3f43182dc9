"""mc.diagnose: per-layer statistics and warnings for planted problems (dead ReLUs, vanishing and
exploding gradients, saturated tanh, too high/low learning rates), none on a healthy net."""
import io

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import diagnostics
from mlpcore.diagnostics import Diagnosis


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8))
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    targets = x[:, :2].sum(axis=1, keepdims=True)
    return x, labels, targets


def run(model, x, y, **kwargs):
    out = io.StringIO()
    diagnosis = mc.diagnose(model, x, y, file=out, **kwargs)
    assert isinstance(diagnosis, Diagnosis)
    assert out.getvalue().strip() == diagnosis.report()
    return diagnosis


def warnings_with(diagnosis, word):
    return [w for w in diagnosis.warnings if word in w]


def test_healthy_nets_have_no_warnings(data):
    x, labels, targets = data
    model = mc.Sequential([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 32), mc.ReLU(),
                           mc.Dense(32, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-3))
    model.fit(x, labels, epochs=3, batch_size=32, verbose=0)
    d = run(model, x, labels)
    assert d.warnings == [] and d.healthy, d.report()
    assert "no warnings" in d.report()

    model = mc.Sequential([mc.Dense(8, 16), mc.Tanh(), mc.Dense(16, 1)], seed=0)
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.05))
    model.fit(x, targets, epochs=3, batch_size=32, verbose=0)
    d = run(model, x, targets)
    assert d.warnings == [], d.report()


def test_rows_hold_the_statistics(data):
    x, labels, _ = data
    model = mc.Sequential([mc.Dense(8, 16), mc.ReLU(), mc.Dense(16, 4), mc.Sigmoid(),
                           mc.Dense(4, 2)], dtype="float64", seed=0)
    model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.1))
    d = run(model, x, labels, batch_size=100)
    assert d.n_samples == 100
    assert [r["layer"] for r in d.rows] == ["Dense", "ReLU", "Dense", "Sigmoid", "Dense"]
    assert [r["kind"] for r in d.rows] == ["dense", "activation", "dense", "activation",
                                           "dense"]
    loss = model.compute_gradients(x[:100], labels[:100])
    assert d.loss == pytest.approx(loss, rel=1e-12)
    dense0, relu, sigmoid = d.rows[0], d.rows[1], d.rows[3]
    w, g = model.layers[0].weight, model.layers[0].weight_grad
    assert dense0["weight_norm"] == pytest.approx(np.linalg.norm(w))
    assert dense0["grad_norm"] == pytest.approx(np.linalg.norm(g))
    assert dense0["grad_weight_ratio"] == pytest.approx(np.linalg.norm(g) / np.linalg.norm(w))
    assert dense0["update_ratio"] == pytest.approx(0.1 * np.linalg.norm(g) / np.linalg.norm(w))
    hidden = np.maximum(x[:100] @ w + model.layers[0].bias, 0)
    assert relu["out_mean"] == pytest.approx(hidden.mean())
    assert relu["out_std"] == pytest.approx(hidden.std())
    assert relu["dead_fraction"] == pytest.approx(np.mean(np.all(hidden == 0, axis=0)))
    assert relu["saturated_fraction"] is None and dense0["dead_fraction"] is None
    assert 0.0 <= sigmoid["saturated_fraction"] <= 1.0
    assert d.thresholds["DEAD_FRACTION_WARN"] == diagnostics.DEAD_FRACTION_WARN


def test_dead_relu_layer(data):
    x, labels, _ = data
    model = mc.Sequential([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    model.layers[0].bias[...] = -100.0
    d = run(model, x, labels)
    assert d.rows[1]["dead_fraction"] == 1.0
    dead = warnings_with(d, "dead")
    assert len(dead) == 1 and "layer 1" in dead[0]
    # zero gradients are a flow problem, not a learning-rate one
    assert not warnings_with(d, "learning rate looks")


def test_vanishing_gradients(data):
    x, labels, _ = data
    layers = [mc.Dense(8, 32), mc.Sigmoid()]
    for _ in range(7):
        layers += [mc.Dense(32, 32), mc.Sigmoid()]
    model = mc.Sequential(layers + [mc.Dense(32, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    d = run(model, x, labels)
    vanishing = warnings_with(d, "vanishing")
    assert len(vanishing) == 1, d.report()
    assert "layer(s) 0, 2" in vanishing[0]  # names the early layers
    grads = [r["grad_rms"] for r in d.rows if r["kind"] == "dense"]
    assert grads[0] < grads[-1] * diagnostics.VANISHING_RATIO
    assert not warnings_with(d, "exploding")


def test_exploding_gradients(data):
    x, _, targets = data
    layers = [mc.Dense(8, 32), mc.ReLU()]
    for _ in range(5):
        layers += [mc.Dense(32, 32), mc.ReLU()]
    model = mc.Sequential(layers + [mc.Dense(32, 1)], seed=0)
    model.compile(loss="mse", optimizer="adam")
    for layer in model.layers:
        if isinstance(layer, mc.Dense):
            layer.weight[...] *= 10
    d = run(model, x, targets)
    assert warnings_with(d, "exploding"), d.report()
    assert not warnings_with(d, "vanishing")


def test_exploding_gradient_growth_towards_the_input(data):
    x, _, targets = data
    # a linear stack with a tiny last layer: the earlier layers' gradients dwarf the last one's
    model = mc.Sequential([mc.Dense(8, 32), mc.Dense(32, 32), mc.Dense(32, 1)],
                          dtype="float64", seed=0)
    model.compile(loss="mse", optimizer="adam")
    model.layers[1].weight[...] *= 1e-3  # small inputs to the last layer: small dW there
    model.layers[2].weight[...] *= 1e3   # large weights: large gradients flowing back
    d = run(model, x, targets)
    growth = warnings_with(d, "growing towards the input")
    assert len(growth) == 1 and "exploding" in growth[0], d.report()
    assert "layer(s) 1" in growth[0]


def test_saturated_tanh(data):
    x, labels, _ = data
    model = mc.Sequential([mc.Dense(8, 32), mc.Tanh(), mc.Dense(32, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    model.layers[0].weight[...] *= 100
    d = run(model, x, labels)
    assert d.rows[1]["saturated_fraction"] > 0.9
    saturated = warnings_with(d, "saturated")
    assert len(saturated) == 1 and "layer 1 (Tanh)" in saturated[0]


def test_output_sigmoid_saturation_is_not_a_warning(data):
    x, labels, _ = data
    model = mc.Sequential([mc.Dense(8, 4), mc.Tanh(), mc.Dense(4, 1), mc.Sigmoid()], seed=0)
    model.compile(loss="bce", optimizer="adam")
    model.layers[2].weight[...] = 50.0
    d = run(model, x, labels.reshape(-1, 1).astype(float))
    assert d.rows[-1]["saturated_fraction"] > 0.5 and d.rows[-1]["is_output"]
    assert not warnings_with(d, "saturated")


def test_learning_rate_too_high_and_too_low(data):
    x, labels, _ = data
    model = mc.Sequential([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=100))
    d = run(model, x, labels)
    assert warnings_with(d, "learning rate looks too high"), d.report()
    model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=1e-8))
    d = run(model, x, labels)
    assert warnings_with(d, "learning rate looks too low"), d.report()
    # adaptive optimizers: each entry moves by about lr, whatever the gradient's scale
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1.0))
    d = run(model, x, labels)
    assert warnings_with(d, "learning rate looks too high"), d.report()


def test_norm_residual_dropout_layers_and_state_untouched(data):
    x, labels, _ = data
    model = mc.Sequential([mc.Dense(8, 16), mc.BatchNorm1d(16), mc.ReLU(),
                           mc.Residual([mc.Dense(16, 16), mc.LayerNorm(16), mc.Tanh(),
                                        mc.Dropout(0.2)]),
                           mc.Dense(16, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    bn = model.layers[1]
    before = [a.copy() for a in (bn.running_mean, bn.running_var, model.layers[0].weight)]
    rng_state = model.dropout_rng_state
    d = run(model, x, labels)
    kinds = {r["layer"]: r["kind"] for r in d.rows}
    assert kinds["BatchNorm1d"] == "norm" and kinds["LayerNorm"] == "norm"
    assert kinds["Dropout"] == "other"
    assert [r["index"] for r in d.rows] == [layer._index for layer in model.flat_layers]
    after = (bn.running_mean, bn.running_var, model.layers[0].weight)
    for a, b in zip(before, after):
        assert a.tobytes() == b.tobytes()
    assert model.dropout_rng_state == rng_state


def test_prints_to_stdout_by_default(data, capsys):
    x, labels, _ = data
    model = mc.Sequential([mc.Dense(8, 4), mc.ReLU(), mc.Dense(4, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    d = mc.diagnose(model, x, labels, batch_size=32)
    assert capsys.readouterr().out.strip() == str(d)


def test_validation_errors_match_evaluate(data):
    x, labels, _ = data
    model = mc.Sequential([mc.Dense(8, 4), mc.ReLU(), mc.Dense(4, 2)], seed=0)
    with pytest.raises(RuntimeError, match="compile"):
        mc.diagnose(model, x, labels)
    model.compile(loss="cross_entropy", optimizer="adam")
    bad_inputs = [
        (x[:, :3], labels),                      # wrong feature count
        (x, labels[:10]),                        # row mismatch
        (np.where(np.arange(8) == 2, np.nan, x), labels),  # NaN
        (x, labels + 5),                         # label out of range
        (x.astype(str), labels),                 # non-numeric
    ]
    for bx, by in bad_inputs:
        with pytest.raises((TypeError, ValueError)) as expected:
            model.evaluate(bx, by)
        with pytest.raises(type(expected.value)) as got:
            mc.diagnose(model, bx, by, file=io.StringIO())
        assert str(got.value).replace("diagnose", "evaluate") == str(expected.value)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="batch_size"):
            mc.diagnose(model, x, labels, batch_size=bad)
    with pytest.raises(TypeError, match="batch_size"):
        mc.diagnose(model, x, labels, batch_size=2.5)

"""The one update path: train_step, the native epoch loop, a custom loss and the manual
compute_gradients + optimizer.step() all apply statistics, clipping, penalties and the rule the
same way, bit for bit; the norm is measured on the gradients the rule reads; no path writes NaN."""
import math

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import optim

RULES = {
    "sgd-nesterov": (optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    "adam-amsgrad": (optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    "adamw": (optim.AdamW, dict(lr=0.02)),
    "rmsprop-centered": (optim.RMSprop, dict(lr=0.003, centered=True, momentum=0.5)),
    "adagrad": (optim.Adagrad, dict(lr=0.1, lr_decay=0.5)),
}
CLIPS = {"norm": dict(clip_norm=0.05), "value": dict(clip_value=0.01),
         "both": dict(clip_norm=0.05, clip_value=0.01), "off": dict()}


def build(rule, clip, dtype, l1=0.0, l2=0.0):
    cls, hyper = RULES[rule]
    model = mc.Sequential([mc.Dense(5, 6, l1=l1, l2=l2), mc.Tanh(), mc.Dense(6, 3, l2=l2)],
                          dtype=dtype, seed=7)
    model.compile(loss="cross_entropy", optimizer=cls(**hyper), **CLIPS[clip])
    return model


def batches(steps=5, n=9):
    rng = np.random.default_rng(3)
    return [(rng.normal(size=(n, 5)) * 3, rng.integers(0, 3, size=n)) for _ in range(steps)]


def assert_same_state(a, b):
    for la, lb in zip(a.flat_layers, b.flat_layers):
        if isinstance(la, mc.Dense):
            np.testing.assert_array_equal(la.weight, lb.weight)
            np.testing.assert_array_equal(la.bias, lb.bias)
    for name, value in a.optimizer.state.items():
        np.testing.assert_array_equal(b.optimizer.state[name], value)
    assert a.optimizer.step_count == b.optimizer.step_count


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("rule", list(RULES))
def test_train_step_equals_compute_gradients_plus_step(rule, clip, dtype):
    fused, manual = build(rule, clip, dtype, l1=1e-3, l2=1e-2), build(rule, clip, dtype, 1e-3, 1e-2)
    for x, y in batches():
        loss_fused = fused.train_step(x, y)
        loss_manual = manual.compute_gradients(x, y)
        manual.optimizer.step()
        assert loss_fused == loss_manual
        assert fused.last_grad_norm == manual.last_grad_norm
    assert_same_state(fused, manual)


@pytest.mark.parametrize("rule", ["sgd-nesterov", "adam-amsgrad"])
def test_fit_equals_manual_loop_with_clipping(rule):
    """The native epoch loop (train_batches) goes through the same update as the manual path."""
    x = np.concatenate([xb for xb, _ in batches()])
    y = np.concatenate([yb for _, yb in batches()])
    fitted, manual = build(rule, "both", "float64", l2=1e-2), build(rule, "both", "float64", l2=1e-2)
    fitted.fit(x, y, epochs=1, batch_size=9, shuffle=False, verbose=0)
    for start in range(0, len(x), 9):
        manual.compute_gradients(x[start:start + 9], y[start:start + 9])
        manual.optimizer.step()
    assert_same_state(fitted, manual)


def test_manual_step_clips_as_compile_says():
    """The reported bug: compute_gradients + optimizer.step() skipped clip_norm."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 2))
    model = mc.Sequential([mc.Dense(4, 2)], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=optim.SGD(lr=1.0), clip_norm=1e-3)
    before = model.layers[0].weight.copy(), model.layers[0].bias.copy()
    model.compute_gradients(x, y)
    assert model.last_grad_norm > 0.1  # far above the clipping threshold
    model.optimizer.step()
    change = np.concatenate([(model.layers[0].weight - before[0]).ravel(),
                             model.layers[0].bias - before[1]])
    # SGD with lr 1 moves the weights by exactly the clipped gradient: norm 1e-3 / (1 + ~1e-6)
    assert np.linalg.norm(change) == pytest.approx(1e-3, rel=1e-5)


def test_update_measures_the_gradients_it_applies():
    """A gradient changed between compute_gradients and step (an allreduce, a user's edit) is
    what the statistics and the clipping see."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 2))
    model = mc.Sequential([mc.Dense(4, 2)], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=optim.SGD(lr=0.1))
    model.compute_gradients(x, y)
    norm = model.last_grad_norm
    model.layers[0].weight_grad[...] *= 0.5
    model.layers[0].bias_grad[...] *= 0.5
    model.optimizer.step()
    assert model.last_grad_norm == pytest.approx(0.5 * norm, rel=1e-12)


def test_step_refuses_non_finite_gradients():
    rng = np.random.default_rng(2)
    model = mc.Sequential([mc.Dense(4, 2)], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=optim.Adam(lr=0.1))
    model.compute_gradients(rng.normal(size=(8, 4)), rng.normal(size=(8, 2)))
    before = model.layers[0].weight.copy()
    model.layers[0].weight_grad[0, 0] = np.nan
    with pytest.raises(mc.NonFiniteLossError, match="optimizer.step"):
        model.optimizer.step()
    np.testing.assert_array_equal(model.layers[0].weight, before)
    assert model.optimizer.step_count == 0


def build_large(rule, clip, dtype):
    """~53,000 parameters: the update measures and applies in two threads' parts."""
    cls, hyper = RULES[rule]
    model = mc.Sequential([mc.Dense(5, 300, l2=1e-2), mc.Tanh(), mc.Dense(300, 170),
                           mc.Dense(170, 3)], dtype=dtype, seed=7)
    model.compile(loss="cross_entropy", optimizer=cls(**hyper), **CLIPS[clip])
    return model


@pytest.mark.skipif(not mc.has_openmp(), reason="built without OpenMP")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("clip", ["norm", "off"])
@pytest.mark.parametrize("rule", list(RULES))
def test_update_in_threads_gives_the_bits_of_one_thread(rule, clip, dtype):
    # 9-row batches stay whole (not sharded); the separate update runs in 1 or 2 threads
    models = []
    for threads in (1, 2):
        mc.set_num_threads(threads)
        model = build_large(rule, clip, dtype)
        for x, y in batches():
            model.train_step(x, y)
            assert model._net.last_step_shards == 1
        norm = model.last_grad_norm
        x, y = batches(1)[0]
        model.compute_gradients(x, y)
        model.layers[0].weight_grad[0, 0] = np.nan  # refused in either: nothing changes
        with pytest.raises(mc.NonFiniteLossError):
            model.optimizer.step()
        models.append((model, norm))
    assert models[0][1] == models[1][1]
    assert_same_state(models[0][0], models[1][0])


@pytest.mark.parametrize("key, value, message", [
    ("lr", math.nan, "Invalid learning rate: nan"),
    ("lr", -10.0, "Invalid learning rate: -10"),
    ("betas", (2.0, math.nan), "Invalid beta parameter at index 0: 2"),
    ("betas", (0.9, math.nan), "Invalid beta parameter at index 1: nan"),
    ("eps", math.inf, "Invalid epsilon value: inf"),
    ("weight_decay", "a lot", "Invalid weight_decay: expected a number, got str"),
])
def test_hyper_parameters_set_through_param_groups_are_validated(key, value, message):
    """param_groups is torch's way in; a value no rule can use stops the next step before it
    touches the weights (it used to turn them into NaN while the step reported a finite loss)."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 2))
    model = mc.Sequential([mc.Dense(4, 2)], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=optim.Adam(lr=0.01))
    model.train_step(x, y)
    before = model.layers[0].weight.copy()
    model.optimizer.param_groups[0][key] = value
    error = TypeError if isinstance(value, str) else ValueError
    with pytest.raises(error, match=message.replace("(", r"\(")):
        model.train_step(x, y)
    np.testing.assert_array_equal(model.layers[0].weight, before)
    assert np.all(np.isfinite(model.layers[0].weight))


def test_native_kinds_come_from_one_list():
    """Python never writes an integer code: the enums are the native lists."""
    core = mc._core
    assert {type(layer()).kind for layer in (mc.ReLU, mc.Tanh, mc.Softmax)} <= set(
        core.Act.__members__.values())
    assert set(core.OptKind.__members__) == {cls.kind.name for cls in optim.OPTIMIZERS.values()}
    with pytest.raises(TypeError, match="unexpected keyword argument 'in_feature'"):
        core.LayerSpec(kind=core.LayerKind.Dense, in_feature=3)

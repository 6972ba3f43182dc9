"""Sequential: zero-copy views, explicit gradient path, reproducibility, thread independence and
clear errors on bad input."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlpcore as mc
from helpers import PYTHON_DIR
from mlpcore._validation import as_inputs


def small_model(dtype="float32", seed=0, loss="cross_entropy", optimizer=None):
    model = mc.Sequential([mc.Dense(5, 16), mc.ReLU(), mc.Dense(16, 3)], dtype=dtype, seed=seed)
    model.compile(loss=loss, optimizer=optimizer or mc.optim.Adam(lr=1e-2))
    return model


def data(rng, n=64, dtype=np.float32):
    x = rng.normal(size=(n, 5)).astype(dtype)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return x, y


# --- zero copy -------------------------------------------------------------------------------
def test_parameter_views_share_native_memory_both_ways(rng):
    model = small_model()
    dense = model.layers[0]
    w = dense.weight
    assert w.shape == (5, 16) and dense.bias.shape == (16,)
    assert np.shares_memory(w, dense.weight) and w.flags.writeable
    x, _ = data(rng, 4)
    before = model.predict(x)
    dense.weight[...] = 0.0
    dense.bias[...] = 0.0
    after = model.predict(x)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, np.tile(model.layers[2].bias, (4, 1)))
    dense.weight = np.ones((5, 16))
    assert np.all(w == 1.0)  # the old view sees the assignment: same memory


def test_gradient_views_and_explicit_step(rng):
    model = small_model(optimizer=mc.optim.SGD(lr=0.1))
    x, y = data(rng, 8)
    loss = model.compute_gradients(x, y)
    dense = model.layers[2]
    g = dense.weight_grad
    assert np.shares_memory(g, dense.weight_grad) and np.abs(g).sum() > 0
    w_before = dense.weight.copy()
    g *= 0.5  # users may edit gradients in place before stepping
    model.optimizer.step()
    np.testing.assert_allclose(dense.weight, w_before - np.float32(0.1) * g, rtol=1e-6)
    model.optimizer.zero_grad()
    assert not dense.weight_grad.any()
    assert isinstance(loss, float)


def test_views_keep_the_network_alive(rng):
    model = small_model()
    w = model.layers[0].weight
    expected = w.copy()
    del model
    import gc
    gc.collect()
    np.testing.assert_array_equal(w, expected)


def test_inputs_in_model_dtype_are_not_copied(rng):
    x = rng.normal(size=(10, 5)).astype(np.float32)
    assert as_inputs(x, np.dtype(np.float32), 5, "f") is x
    converted = as_inputs(x.astype(np.float64), np.dtype(np.float32), 5, "f")
    assert converted.dtype == np.float32 and converted.flags.c_contiguous
    fortran = as_inputs(np.asfortranarray(x), np.dtype(np.float32), 5, "f")
    assert fortran.flags.c_contiguous and np.array_equal(fortran, x)


def test_other_dtypes_and_orders_give_the_same_results(rng):
    model = small_model()
    x, y = data(rng, 16)
    ref = model.predict(x)
    np.testing.assert_array_equal(model.predict(x.astype(np.float64)), ref)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x)), ref)
    np.testing.assert_array_equal(model.predict(x.tolist()), ref)
    assert model.evaluate(x, y.astype(np.int32)) == model.evaluate(x, y)


# --- reproducibility and threads -------------------------------------------------------------
def train_bits(seed, threads=None, dtype="float32"):
    if threads is not None:
        mc.set_num_threads(threads)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 20)).astype(dtype)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64)
    model = mc.Sequential([mc.Dense(20, 64), mc.Tanh(), mc.Dense(64, 64), mc.ReLU(),
                           mc.Dense(64, 2)], dtype=dtype, seed=seed)
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-2))
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return [layer.weight.copy() for layer in model.layers if isinstance(layer, mc.Dense)], history


def test_same_seed_same_bits():
    a, ha = train_bits(11)
    b, hb = train_bits(11)
    c, _ = train_bits(12)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert ha.history == hb.history
    assert not np.array_equal(a[0], c[0])


@pytest.mark.skipif(not mc.has_openmp(), reason="built without OpenMP")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_results_do_not_depend_on_thread_count(dtype):
    one, _ = train_bits(3, threads=1, dtype=dtype)
    two, _ = train_bits(3, threads=2, dtype=dtype)
    assert all(np.array_equal(u, v) for u, v in zip(one, two))


def test_thread_settings():
    mc.set_num_threads(1)
    assert mc.get_num_threads() == 1
    for bad in (0, 1025, 2**31 - 1):  # (a team of 2^31 - 1 took seconds to start)
        with pytest.raises(ValueError, match=r"n must lie in \[1, 1024\], got " + str(bad)):
            mc.set_num_threads(bad)
    assert mc.get_num_threads() == 1


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, exc, pattern", [
    (np.array([["a"] * 5]), TypeError, "x must hold real numbers.*<U1"),
    (np.array([[object()] * 5]), TypeError, "dtype object"),
    (np.ones((2, 5), dtype=complex), TypeError, "complex128"),
    (np.ones(5), ValueError, r"2-D.*got shape \(5,\)"),
    (np.ones((2, 5, 1)), ValueError, "2-D"),
    (np.ones((2, 4)), ValueError, r"5 features.*\(2, 4\)"),
    (np.ones((0, 5)), ValueError, "empty"),
    (np.array([[1, 2, np.nan, 4, 5]]), ValueError, r"NaN or Inf.*\[0, 2\]"),
    (np.array([[1, 2, 3, np.inf, 5]]), ValueError, "NaN or Inf"),
])
def test_bad_inputs_raise_clear_errors(bad, exc, pattern):
    model = small_model()
    with pytest.raises(exc, match=pattern):
        model.train_step(bad, np.zeros(len(bad), dtype=np.int64))
    with pytest.raises(exc, match=pattern):
        model.predict(bad)


def test_bad_targets_raise_clear_errors(rng):
    model = small_model()
    x, y = data(rng, 8)
    with pytest.raises(ValueError, match="7 rows but x has 8"):
        model.train_step(x, y[:7])
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.train_step(x, np.where(np.arange(8) == 3, np.nan, 0.0))
    with pytest.raises(TypeError, match="y must hold real numbers"):
        model.train_step(x, np.array(["a"] * 8))
    regression = small_model(loss="mse")
    with pytest.raises(ValueError, match=r"shape \(8, 3\)"):
        regression.train_step(x, np.zeros((8, 2)))


def test_native_entry_points_validate_too(rng):
    # the bindings recheck what reaches the kernels, so bypassing Python checks cannot crash
    model = small_model()
    net = model._net
    x, y = data(rng, 4)
    with pytest.raises(TypeError, match="float32"):
        net.train_step(x.astype(np.float64), y)
    with pytest.raises(ValueError, match="C-contiguous"):
        net.train_step(np.asfortranarray(np.ones((4, 5), np.float32)), y)
    with pytest.raises(ValueError, match="outside the valid range"):
        net.train_step(x, np.array([0, 1, 2, 9]))
    with pytest.raises(ValueError, match="empty batch"):
        net.predict(np.ones((0, 5), np.float32))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        net.predict([[1.0] * 5])


def test_fit_argument_errors(rng):
    model = small_model()
    x, y = data(rng, 8)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got -3"):
        model.fit(x, y, batch_size=-3, verbose=0)
    with pytest.raises(TypeError, match="epochs must be an int"):
        model.fit(x, y, epochs=2.5, verbose=0)
    with pytest.raises(TypeError, match="validation_data"):
        model.fit(x, y, validation_data=x, verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[0\] must have 5 features"):
        model.fit(x, y, validation_data=(x[:, :3], y), verbose=0)


def test_using_the_model_before_compile_is_an_error(rng):
    model = mc.Sequential([mc.Dense(5, 3)])
    x, y = data(rng, 4)
    for call in (lambda: model.fit(x, y), lambda: model.train_step(x, y),
                 lambda: model.evaluate(x, y), lambda: model.compute_gradients(x, y)):
        with pytest.raises(RuntimeError, match="compile"):
            call()
    assert model.predict(x).shape == (4, 3)  # predict needs no loss


def test_construction_errors():
    with pytest.raises(ValueError, match="expects 8 input features, but the previous layer gives 4"):
        mc.Sequential([mc.Dense(3, 4), mc.ReLU(), mc.Dense(8, 2)])
    with pytest.raises(TypeError, match="float32' or 'float64'"):
        mc.Sequential([mc.Dense(3, 4)], dtype="int8")
    with pytest.raises(TypeError, match=r"layers\[1\] must be an mlpcore layer"):
        mc.Sequential([mc.Dense(3, 4), "relu"])
    with pytest.raises(ValueError, match="first layer must be Dense"):
        mc.Sequential([mc.ReLU(), mc.Dense(3, 4)])
    with pytest.raises(ValueError, match="in_features must be positive"):
        mc.Dense(0, 3)
    with pytest.raises(ValueError, match="unknown init 'orthogonal'"):
        mc.Dense(3, 3, init="orthogonal")
    shared = mc.Dense(3, 3)
    with pytest.raises(ValueError, match="same layer object"):
        mc.Sequential([shared, mc.ReLU(), shared])
    mc.Sequential([shared])
    with pytest.raises(ValueError, match="already part of another model"):
        mc.Sequential([shared])
    with pytest.raises(RuntimeError, match="part of a Sequential"):
        _ = mc.Dense(2, 2).weight


def test_unknown_optimizer_name_lists_valid_ones():
    model = mc.Sequential([mc.Dense(3, 2)])
    with pytest.raises(ValueError, match="valid names: adagrad, adam, adamw, rmsprop, sgd"):
        model.compile(loss="mse", optimizer="lbfgs")


# --- divergence --------------------------------------------------------------------------------
def test_non_finite_loss_stops_fit_and_keeps_last_finite_weights(rng):
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.normal(size=(64, 3)).astype(np.float32) * 1e3
    model = mc.Sequential([mc.Dense(5, 16), mc.ReLU(), mc.Dense(16, 3)], seed=0)
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=1e6))  # diverges within a few steps
    with pytest.raises(mc.NonFiniteLossError, match=r"epoch 1, step \d+") as info:
        model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert "last finite step" in str(info.value)
    for layer in model.layers:
        if isinstance(layer, mc.Dense):
            assert np.isfinite(layer.weight).all() and np.isfinite(layer.bias).all()


def test_diverging_train_steps_keep_the_weights_of_the_last_finite_step(rng):
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.normal(size=(64, 3)).astype(np.float32) * 1e3
    model = mc.Sequential([mc.Dense(5, 16), mc.ReLU(), mc.Dense(16, 3)], seed=0)
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=1e6))
    for step in range(100):
        before = [layer.weight.copy() for layer in model.layers if isinstance(layer, mc.Dense)]
        try:
            model.train_step(x[:8], y[:8])
        except mc.NonFiniteLossError:
            break
    else:
        pytest.fail("the run was expected to diverge")
    after = [layer.weight for layer in model.layers if isinstance(layer, mc.Dense)]
    assert step > 0 and all(np.array_equal(a, b) for a, b in zip(before, after))


def test_train_step_refuses_non_finite_update(rng):
    model = small_model(loss="mse")
    x, _ = data(rng, 4)
    model.layers[2].weight[...] = 1e30  # float32 outputs overflow in the loss
    before = [layer.weight.copy() for layer in model.layers if isinstance(layer, mc.Dense)]
    with pytest.raises(mc.NonFiniteLossError, match="left unchanged"):
        model.train_step(x, np.zeros((4, 3)))
    after = [layer.weight for layer in model.layers if isinstance(layer, mc.Dense)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


# --- batches of different sizes ------------------------------------------------------------------
def test_batch_size_can_change_between_steps(rng):
    model = small_model()
    x, y = data(rng, 40)
    for n in (8, 32, 3, 40, 1):
        assert np.isfinite(model.train_step(x[:n], y[:n]))
    reference = small_model()
    np.testing.assert_array_equal(model.predict(x[:1]).shape, (1, 3))
    assert reference.predict(x).shape == (40, 3)


def test_subnormals_are_flushed_by_default_and_can_be_kept():
    tiny = np.float32(1e-40)  # subnormal in float32
    a = np.full((4, 4), tiny, dtype=np.float32)
    b = np.eye(4, dtype=np.float32)
    assert mc.get_flush_denormal() is True
    try:
        assert not mc.matmul(a, b).any()  # read as zero
        mc.set_flush_denormal(False)
        assert mc.get_flush_denormal() is False
        np.testing.assert_array_equal(mc.matmul(a, b), a)  # exact IEEE arithmetic
    finally:
        mc.set_flush_denormal(True)


# --- accessors (what other modules use instead of the native handle) --------------------------
def test_params_and_grads_views_are_the_layers_memory(rng):
    model = small_model(dtype="float64")
    flat = model.params_view()
    assert flat.shape == (model.num_params,) and flat.flags.writeable
    assert np.shares_memory(flat, model.layers[0].weight)
    assert np.shares_memory(model.grads_view(), model.layers[0].weight_grad)
    x, y = data(rng, 8, np.float64)
    model.compute_gradients(x, y)
    grads = np.concatenate([np.ravel(a) for layer in (model.layers[0], model.layers[2])
                            for a in (layer.weight_grad, layer.bias_grad)])
    np.testing.assert_array_equal(model.grads_view(), grads)


def test_get_and_set_weights_round_trip_like_keras(rng):
    a = mc.Sequential([mc.Dense(4, 6), mc.BatchNorm1d(6), mc.ReLU(), mc.Dense(6, 2)], seed=0)
    b = mc.Sequential([mc.Dense(4, 6), mc.BatchNorm1d(6), mc.ReLU(), mc.Dense(6, 2)], seed=1)
    weights = a.get_weights()
    # Dense W, b; BatchNorm gamma, beta, running mean, running variance; Dense W, b
    assert [w.shape for w in weights] == [(4, 6), (6,), (6,), (6,), (6,), (6,), (6, 2), (2,)]
    assert not np.shares_memory(weights[0], a.layers[0].weight)  # copies
    b.set_weights(weights)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    for got, want in zip(b.get_weights(), weights):
        np.testing.assert_array_equal(got, want)


def test_set_weights_checks_everything_before_writing():
    model = mc.Sequential([mc.Dense(3, 2)], seed=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match="expected 2 arrays"):
        model.set_weights(before[:1])
    with pytest.raises(ValueError, match=r"layers.0.bias must have shape \(2,\), got \(3,\)"):
        model.set_weights([np.zeros((3, 2)), np.zeros(3)])
    with pytest.raises(ValueError, match="layers.0.bias contains NaN"):
        model.set_weights([np.zeros((3, 2)), np.array([0.0, np.nan])])
    with pytest.raises(TypeError, match="must hold real numbers"):
        model.set_weights([np.zeros((3, 2)), np.array(["a", "b"])])
    with pytest.raises(TypeError, match="list of arrays"):
        model.set_weights(np.zeros((3, 2)))
    for got, want in zip(model.get_weights(), before):  # nothing was written
        np.testing.assert_array_equal(got, want)


def test_dropout_state_accessors_replay_the_same_masks(rng):
    model = mc.Sequential([mc.Dense(4, 8), mc.Dropout(0.5), mc.Dense(8, 2)], seed=0,
                          dtype="float64")
    model.compile(loss="mse", optimizer="sgd")
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    state = model.dropout_rng_state
    assert len(state) == 4 and all(isinstance(v, int) for v in state)
    first = model.compute_gradients(x, y)
    assert model.dropout_rng_state != state
    model.dropout_rng_state = state
    assert model.compute_gradients(x, y) == first
    with model.frozen_dropout_masks():
        again = model.compute_gradients(x, y)
        assert model.compute_gradients(x, y) == again == first
    assert model.compute_gradients(x, y) != first  # fresh masks after the block


def test_optimizer_steps_and_state_views(rng):
    model = small_model(dtype="float64")
    x, y = data(rng, 16, np.float64)
    model.train_step(x, y)
    model.train_step(x, y)
    assert model.optimizer_steps == 2 == model.optimizer.step_count
    views = model.optimizer_state_views()
    assert set(views) == set(model.optimizer.state) and "exp_avg" in views
    assert all(v.shape == (model.num_params,) for v in views.values())
    model.optimizer_steps = 7
    assert model.optimizer.step_count == 7


def test_layer_outputs_are_every_layers_inference_output(rng):
    model = small_model(dtype="float64")
    x, _ = data(rng, 5, np.float64)
    outputs = model.layer_outputs(x)
    assert len(outputs) == 3
    hidden = x @ model.layers[0].weight + model.layers[0].bias
    np.testing.assert_allclose(outputs[0], hidden, rtol=1e-12)
    np.testing.assert_array_equal(outputs[1], np.maximum(outputs[0], 0))
    np.testing.assert_array_equal(outputs[2], model.predict(x))
    with pytest.raises(ValueError, match="layer_outputs: x must have 5 features"):
        model.layer_outputs(x[:, :3])


def test_layer_index_is_the_plan_position():
    inner = mc.Dense(4, 4)
    layers = [mc.Dense(3, 4), mc.Residual([inner, mc.ReLU()]), mc.Dense(4, 1)]
    assert layers[0].index is None
    model = mc.Sequential(layers)
    assert [layer.index for layer in model.flat_layers] == [0, 2, 3, 5]
    assert inner.index == 2


# --- Keras conventions ---------------------------------------------------------------------------
def test_summary_prints_layers_output_shapes_and_params_and_returns_none(capsys):
    model = mc.Sequential([mc.Normalization(5), mc.Dense(5, 16), mc.ReLU(), mc.Dense(16, 3)])
    assert model.summary() is None
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert ["0", "Normalization(num_features=5,", "eps=1e-07)", "(None,", "5)", "0"] in rows
    dense = next(r for r in rows if r[:2] == ["1", "Dense(in_features=5,"])
    assert dense[-3:] == ["(None,", "16)", "96"]
    assert ["Trainable", "params:", "147"] in rows and ["Non-trainable", "params:", "10"] in rows
    lines = []
    model.summary(print_fn=lines.append)
    assert "\n".join(lines) + "\n" == out
    with pytest.raises(TypeError, match="print_fn"):
        model.summary(print_fn="stdout")


def test_from_config_rebuilds_the_architecture():
    model = small_model()
    twin = mc.Sequential.from_config(model.get_config(), seed=1)
    assert twin.get_config() == model.get_config() and twin.loss is None
    assert not np.array_equal(twin.params_view(), model.params_view())  # fresh weights
    with pytest.raises(TypeError, match="get_config"):
        mc.Sequential.from_config([1, 2])


def test_compile_without_a_loss_is_an_error():
    model = mc.Sequential([mc.Dense(2, 1)])
    with pytest.raises(ValueError, match="loss is required"):
        model.compile()
    with pytest.raises(ValueError, match="loss is required"):
        model.compile(optimizer="adam")


@pytest.mark.parametrize("last, loss", [(mc.Softmax, "cross_entropy"),
                                        (mc.Softmax, "categorical_crossentropy"),
                                        (mc.Sigmoid, "bce_with_logits")])
def test_compile_warns_on_a_squashing_layer_before_a_loss_that_squashes(last, loss):
    model = mc.Sequential([mc.Dense(4, 3), last()])
    with pytest.warns(UserWarning, match=f"last layer is {last.__name__}.*applied twice"):
        model.compile(loss=loss)


def test_compile_does_not_warn_on_matching_heads():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mc.Sequential([mc.Dense(4, 3)]).compile(loss="cross_entropy")
        mc.Sequential([mc.Dense(4, 1), mc.Sigmoid()]).compile(loss="bce")
        mc.Sequential([mc.Dense(4, 1), mc.Sigmoid()]).compile(loss="binary_crossentropy")


def test_predict_proba_by_loss(rng):
    x = rng.normal(size=(6, 5))
    ce = small_model(dtype="float64")
    logits = ce.predict(x)
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(ce.predict_proba(x), softmax, rtol=1e-12)
    np.testing.assert_allclose(ce.predict_proba(x).sum(1), 1.0, rtol=1e-12)
    bl = small_model(dtype="float64", loss="bce_with_logits")
    np.testing.assert_allclose(bl.predict_proba(x), 1 / (1 + np.exp(-bl.predict(x))), rtol=1e-12)
    big = bl.predict_proba(x * 1e4)  # no overflow warning, values in [0, 1]
    assert np.all((big >= 0) & (big <= 1))
    b = mc.Sequential([mc.Dense(5, 1), mc.Sigmoid()], dtype="float64")
    b.compile(loss="bce")
    np.testing.assert_array_equal(b.predict_proba(x), b.predict(x))
    with pytest.raises(ValueError, match="'mse' does not define class probabilities"):
        small_model(loss="mse").predict_proba(x)
    with pytest.raises(RuntimeError, match="compile"):
        mc.Sequential([mc.Dense(5, 2)]).predict_proba(x)


def test_predict_batch_size_does_not_change_the_result(rng):
    model = small_model(dtype="float64")
    x = rng.normal(size=(50, 5))
    full = model.predict(x)
    for batch_size in (1, 7, 50, 1000):
        np.testing.assert_array_equal(model.predict(x, batch_size=batch_size), full)
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(x, batch_size=0)
    buf = np.empty((50, 3))
    assert model.predict(x, batch_size=7, out=buf) is buf
    np.testing.assert_array_equal(buf, full)
    with pytest.raises(ValueError, match=r"out must have shape \(50, 3\)"):
        model.predict(x, batch_size=7, out=np.empty((50, 2)))
    x[33, 2] = np.nan  # the index is the row of x, not of the chunk
    with pytest.raises(ValueError, match=r"NaN or Inf \(first at index \[33, 2\]\)"):
        model.predict(x, batch_size=7)


def test_predict_on_one_sample_suggests_reshape_1_minus_1(rng):
    model = small_model()
    x = rng.normal(size=(4, 5))
    with pytest.raises(ValueError, match=r"x\.reshape\(1, -1\) for a single sample"):
        model.predict(x[0])
    single = mc.Sequential([mc.Dense(1, 2)])
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\) for samples of a single feature"):
        single.predict(np.zeros(3))


def test_classes_accessor():
    model = small_model()
    assert model.classes_ is None
    model.classes_ = ["cat", "dog", "emu"]
    assert model.classes_.tolist() == ["cat", "dog", "emu"]
    with pytest.raises(TypeError, match="1-D sequence of class names"):
        model.classes_ = [[1, 2]]


def test_layer_at_finds_each_layer_by_its_plan_position():
    inner = mc.Dense(4, 4)
    layers = [mc.Dense(3, 4), mc.Residual([inner, mc.ReLU()]), mc.Dense(4, 1)]
    model = mc.Sequential(layers)
    assert model.layer_at(1) is layers[1] and model.layer_at(2) is inner
    assert model.layer_at(4) is None  # the position that closes the Residual block
    assert all(model.layer_at(layer.index) is layer for layer in model.flat_layers)
    with pytest.raises(ValueError, match="layer_at: index must be < 6, got 6"):
        model.layer_at(6)
    with pytest.raises(TypeError, match="layer_at: index"):
        model.layer_at("0")


def test_predict_into_a_reused_buffer():
    """predict(x, out=buf): the result lands in the caller's buffer (no allocation per call)."""
    model = mc.Sequential([mc.Dense(4, 8), mc.ReLU(), mc.Dense(8, 3)], seed=0)
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    buf = np.empty((5, 3), np.float32)
    assert model.predict(x, out=buf) is buf
    np.testing.assert_array_equal(buf, model.predict(x))
    for bad, error, message in [
            (np.empty((5, 2), np.float32), ValueError, r"out must have shape \(5, 3\)"),
            (np.empty((5, 3), np.float64), TypeError, "out must have dtype float32"),
            (np.empty((3, 5), np.float32).T, ValueError, "out must be C-contiguous")]:
        with pytest.raises(error, match=message):
            model.predict(x, out=bad)
    frozen = np.empty((5, 3), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        model.predict(x, out=frozen)


def test_predict_fast_path_keeps_the_checks():
    """An array already in the model's dtype and layout skips the Python conversion; the native
    checks still name the bad value."""
    model = mc.Sequential([mc.Dense(3, 2)], seed=0)
    x = np.ones((4, 3), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(first at index \[2, 1\]\)"):
        model.predict(x)
    with pytest.raises(ValueError, match="3 features"):
        model.predict(np.ones((4, 5), np.float32))


def test_parameters_beyond_memory_are_refused_before_allocating(monkeypatch):
    import mlpcore._validation as validation

    monkeypatch.setattr(validation, "physical_memory", lambda: 2**20)  # 1 MiB
    with pytest.raises(MemoryError, match=r"need 7.6 GiB|need 0.0 GiB") as info:
        mc.Sequential([mc.Dense(8, 1000), mc.ReLU(), mc.Dense(1000, 1000)])
    assert "largest layer: Dense(in_features=1000, out_features=1000" in str(info.value)
    mc.Sequential([mc.Dense(8, 10)])  # 90 parameters fit


# --- another thread during fit -----------------------------------------------------------------
# Every weight starts equal and SGD on equal inputs keeps them equal at every step, so a copy
# taken while a step writes (a torn copy) holds two different values.
CONCURRENT = textwrap.dedent("""
    import sys, tempfile, threading
    import numpy as np
    import mlpcore as mc
    model = mc.Sequential([mc.Dense(64, 256, init=np.full((64, 256), 0.01)),
                           mc.Dense(256, 1, init=np.full((256, 1), 0.01))], seed=0)
    model.compile(loss="mse", optimizer="sgd")
    x = np.ones((40_000, 64), np.float32)  # epochs long enough to ask for signals inside
    y = np.ones((40_000, 1), np.float32)
    done = threading.Event()
    def train():
        while not done.is_set():
            model.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)
    trainer = threading.Thread(target=train)
    trainer.start()
    torn = 0
    with tempfile.TemporaryDirectory() as folder:
        for i in range(1000):
            w = model.get_weights()[0]
            torn += int(w.min() != w.max())
            if i % 100 == 0:
                path = folder + "/m.safetensors"
                model.save(path)
                w = mc.load(path).get_weights()[0]
                torn += int(w.min() != w.max())
    # calls that take the network's lock used to wait for it holding the GIL, which the fit
    # takes to ask for signals: a deadlock
    for i in range(200):
        model._net.regularization_loss()
        model._net.take_stats()
    done.set()
    trainer.join()
    print("torn", torn)
""")


def test_copies_and_calls_from_another_thread_during_fit(tmp_path):
    script = tmp_path / "concurrent.py"
    script.write_text(CONCURRENT)
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=PYTHON_DIR)
    # a hang guard, not a speed test: the deadlock waited forever
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.stdout.split() == ["torn", "0"], (done.stdout, done.stderr)


def test_a_batch_beyond_the_memory_is_a_memory_error_naming_the_batch():
    """Layer outputs and gradients for the batch are checked against the machine's RAM before
    they are allocated (overcommit would grant them and the kernel kill the process)."""
    from mlpcore._validation import physical_memory

    total = physical_memory()
    if total is None:
        pytest.skip("the machine's memory is unknown here")
    width = 1_000_000
    rows = int(2 * total // (16 * width)) + 1  # outputs and gradients: > 2 x RAM in float32
    model = mc.Sequential([mc.Dense(3, width), mc.ReLU(), mc.Dense(width, 1)], seed=0)
    model.compile("mse", "sgd")
    x = np.zeros((rows, 3), np.float32)
    y = np.zeros((rows, 1), np.float32)
    with pytest.raises(MemoryError, match=rf"a batch of {rows} rows .* more than this machine"):
        model.fit(x, y, batch_size=rows, epochs=1, verbose=0)
    with pytest.raises(MemoryError, match="use a smaller batch_size"):
        model.train_step(x, y)
    assert model.predict(x[:2]).shape == (2, 1)  # the model still works

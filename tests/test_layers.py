"""Dropout, LayerNorm, BatchNorm1d and Residual: float64 gradient checks, forward values against
NumPy (and torch when installed), train/eval behaviour, errors, save/load."""
import pickle

import numpy as np
import pytest

import mlpcore as mc
from helpers import identity_dense, kernel_isa, numeric_gradient, relative_error, usable_isas

TOLERANCE = 1e-6


def training_gradcheck(model, x, y):
    """Like test_backprop.check_model, but the loss is the training-mode one (batch statistics,
    dropout masks frozen), read from compute_gradients."""
    loss, dx = model.compute_gradients(x, y, return_input_grad=True)
    params = [layer for layer in model.flat_layers if hasattr(layer, "weight_grad")]
    analytic = [(layer.weight_grad.copy(), layer.bias_grad.copy()) for layer in params]

    def f():
        return model.compute_gradients(x, y)

    with model.frozen_dropout_masks():
        assert f() == pytest.approx(loss, rel=1e-12)  # the frozen masks reproduce the loss
        errors = {"input": relative_error(dx, numeric_gradient(f, x))}
        for layer, (gw, gb) in zip(params, analytic):
            errors[f"{layer.index}.weight"] = relative_error(gw, numeric_gradient(f, layer.weight))
            errors[f"{layer.index}.bias"] = relative_error(gb, numeric_gradient(f, layer.bias))
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"gradient of {worst}: relative error {errors[worst]:.2e}"


def randomise_norms(model, rng):
    for layer in model.flat_layers:
        if isinstance(layer, (mc.LayerNorm, mc.BatchNorm1d)):
            layer.weight = rng.uniform(0.5, 1.5, layer.num_features)
            layer.bias = rng.normal(0, 0.3, layer.num_features)


ARCHITECTURES = {
    "layernorm": lambda: [mc.Dense(4, 6), mc.LayerNorm(6), mc.Tanh(), mc.Dense(6, 3)],
    "batchnorm": lambda: [mc.Dense(4, 6), mc.BatchNorm1d(6), mc.ReLU(), mc.Dense(6, 3)],
    "dropout": lambda: [mc.Dense(4, 6), mc.GELU(), mc.Dropout(0.3), mc.Dense(6, 3)],
    "residual": lambda: [mc.Dense(4, 6), mc.Residual([mc.Dense(6, 6), mc.Tanh(), mc.Dense(6, 6)]),
                         mc.SiLU(), mc.Dense(6, 3)],
    "nested": lambda: [mc.Dense(4, 6), mc.Residual([mc.LayerNorm(6), mc.Residual(
        [mc.Dense(6, 6), mc.ReLU()]), mc.Dropout(0.2), mc.Dense(6, 6)]), mc.Dense(6, 3)],
    "norm-first": lambda: [mc.BatchNorm1d(4), mc.Dense(4, 5), mc.Sigmoid(), mc.LayerNorm(5),
                           mc.Dense(5, 3)],
}


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_gradients(arch, loss, rng):
    model = mc.Sequential(ARCHITECTURES[arch](), dtype="float64", seed=3)
    randomise_norms(model, rng)
    model.compile(loss=loss, optimizer="sgd")
    x = rng.normal(size=(7, 4))
    y = rng.integers(0, 3, size=7) if loss == "cross_entropy" else rng.normal(size=(7, 3))
    training_gradcheck(model, x, y)


def test_layernorm_forward_matches_numpy(rng):
    x = rng.normal(2, 3, size=(5, 8))
    model = mc.Sequential([identity_dense(8), mc.LayerNorm(8, eps=1e-3)], dtype="float64")
    gamma, beta = rng.normal(size=8), rng.normal(size=8)
    model.layers[1].weight, model.layers[1].bias = gamma, beta
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12, atol=1e-12)


def test_batchnorm_train_and_eval_match_numpy(rng):
    x = rng.normal(1, 2, size=(16, 5))
    bn = mc.BatchNorm1d(5, momentum=0.2)
    model = mc.Sequential([identity_dense(5), bn], dtype="float64")
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.0))
    np.testing.assert_array_equal(bn.weight, 1.0)
    np.testing.assert_array_equal(bn.running_var, 1.0)
    np.testing.assert_array_equal(bn.running_mean, 0.0)
    model.layers[0].weight_grad  # noqa: B018 - the views exist before any step
    _, dx = model.compute_gradients(x, np.zeros_like(x), return_input_grad=True)
    mean, var = x.mean(axis=0), x.var(axis=0)
    np.testing.assert_allclose(bn.running_mean, 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * x.var(axis=0, ddof=1), rtol=1e-12)
    # evaluation uses the running statistics
    expected = (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12, atol=1e-12)
    # training uses batch statistics: mse against zeros of the normalised batch
    xhat = (x - mean) / np.sqrt(var + 1e-5)
    assert model.evaluate(x, np.zeros_like(x))["loss"] != pytest.approx((xhat ** 2).mean())
    assert model.compute_gradients(x, np.zeros_like(x)) == pytest.approx((xhat ** 2).mean(),
                                                                        rel=1e-12)


def test_batchnorm_needs_more_than_one_sample_in_training(rng):
    model = mc.Sequential([mc.Dense(3, 4), mc.BatchNorm1d(4), mc.Dense(4, 2)], seed=0)
    model.compile(loss="cross_entropy", optimizer="sgd")
    with pytest.raises(ValueError, match="more than 1 sample"):
        model.train_step(rng.normal(size=(1, 3)), np.array([0]))
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(rng.normal(size=(9, 3)), rng.integers(0, 2, 9), batch_size=4, verbose=0)
    assert model.predict(rng.normal(size=(1, 3))).shape == (1, 2)  # eval mode is fine


def test_dropout_masks_statistics_and_eval_identity(rng):
    x = np.ones((400, 50))
    model = mc.Sequential([identity_dense(50), mc.Dropout(0.25)], dtype="float64", seed=1)
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.0))
    np.testing.assert_array_equal(model.predict(x), x)  # off in predict
    assert model.evaluate(x, x)["loss"] == 0.0  # and in evaluate
    _, dx = model.compute_gradients(x, np.zeros_like(x), return_input_grad=True)
    # d(mse)/dx = 2 y mask / N with y = x * mask: nonzero exactly where the element was kept
    kept = dx != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(dx[kept], 2 * (1 / 0.75) ** 2 / x.size)


def test_dropout_is_reproducible_with_the_seed(rng):
    x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, 64)

    def train(seed):
        model = mc.Sequential([mc.Dense(4, 16), mc.ReLU(), mc.Dropout(0.5), mc.Dense(16, 3)],
                              seed=seed)
        model.compile(loss="cross_entropy", optimizer="adam")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return model.layers[0].weight.copy()

    assert np.array_equal(train(5), train(5))
    assert not np.array_equal(train(5), train(6))


def test_residual_adds_the_block_input(rng):
    x = rng.normal(size=(6, 4))
    inner = [mc.Dense(4, 4), mc.Tanh()]
    model = mc.Sequential([identity_dense(4), mc.Residual(inner)], dtype="float64", seed=0)
    w, b = inner[0].weight, inner[0].bias
    np.testing.assert_allclose(model.predict(x), x + np.tanh(x @ w + b), rtol=1e-12)
    assert model.flat_layers[1] is inner[0] and len(model.layers) == 2


def test_layer_errors():
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\)"):
        mc.Dropout(1.0)
    with pytest.raises(ValueError, match="p must lie"):
        mc.Dropout(-0.1)
    with pytest.raises(ValueError, match="expects 8 input features, but the previous layer gives 6"):
        mc.Sequential([mc.Dense(4, 6), mc.LayerNorm(8)])
    with pytest.raises(ValueError, match="BatchNorm1d.*expects 3 input features"):
        mc.Sequential([mc.Dense(4, 6), mc.BatchNorm1d(3)])
    with pytest.raises(ValueError, match="must keep the feature count"):
        mc.Sequential([mc.Dense(4, 6), mc.Residual([mc.Dense(6, 5)])])
    with pytest.raises(ValueError, match="first layer must be Dense, LayerNorm, BatchNorm1d or "
                                         "Normalization"):
        mc.Sequential([mc.Dropout(0.1), mc.Dense(3, 3)])
    with pytest.raises(TypeError, match="non-empty list"):
        mc.Residual([])
    with pytest.raises(ValueError, match="momentum"):
        mc.BatchNorm1d(3, momentum=2)
    with pytest.raises(ValueError, match="eps"):
        mc.LayerNorm(3, eps=0)


def test_save_and_load_keep_norm_statistics_and_blocks(tmp_path, rng):
    model = mc.Sequential([mc.Dense(4, 8), mc.BatchNorm1d(8), mc.ReLU(), mc.Dropout(0.2),
                           mc.Residual([mc.LayerNorm(8), mc.Dense(8, 8), mc.GELU()]),
                           mc.Dense(8, 3)], seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    x, y = rng.normal(size=(32, 4)), rng.integers(0, 3, 32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = mc.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.flat_layers[1].running_var, model.flat_layers[1].running_var)
    # training further (dropout included) stays identical: the mask generator state was saved
    model.train_step(x[:8], y[:8])
    loaded.train_step(x[:8], y[:8])
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


TORCH_NORMS = {"LayerNorm": lambda torch: torch.nn.LayerNorm(6),
               "BatchNorm1d": lambda torch: torch.nn.BatchNorm1d(6)}


@pytest.mark.parametrize("name", sorted(TORCH_NORMS))
def test_norms_match_torch(name, rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(1, 2, size=(10, 6))
    g = rng.normal(size=(10, 6))
    module = TORCH_NORMS[name](torch).double().train()
    gamma, beta = rng.uniform(0.5, 1.5, 6), rng.normal(size=6)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(gamma))
        module.bias.copy_(torch.tensor(beta))
    import copy
    with torch.no_grad():  # the training-mode output, from a copy (running stats untouched)
        y_train = copy.deepcopy(module)(torch.tensor(x)).numpy()
    xt = torch.tensor(x, requires_grad=True)
    (module(xt) * torch.tensor(g)).sum().backward()
    layer = getattr(mc, name)(6)
    model = mc.Sequential([identity_dense(6), layer], dtype="float64")
    layer.weight, layer.bias = gamma, beta
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.0))
    # mse against y - g*N/2 makes dL/dy = g exactly, at the training-mode output y
    _, dx = model.compute_gradients(x, y_train - g * x.size / 2, return_input_grad=True)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.weight_grad, module.weight.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(layer.bias_grad, module.bias.grad.numpy(), rtol=1e-9)
    if name == "BatchNorm1d":
        module.eval()
        np.testing.assert_allclose(layer.running_mean, module.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(layer.running_var, module.running_var.numpy(), rtol=1e-12)
        with torch.no_grad():
            np.testing.assert_allclose(model.predict(x), module(torch.tensor(x)).numpy(),
                                       rtol=1e-10, atol=1e-12)


# --- Normalization -----------------------------------------------------------------------------
def normalization_model(rng, dtype="float64"):
    data = rng.normal(5.0, 3.0, size=(40, 4)) * np.array([1.0, 10.0, 0.1, 2.0])
    norm = mc.Normalization().adapt(data)
    model = mc.Sequential([norm, mc.Dense(4, 3)], dtype=dtype, seed=1)
    return model, norm, data


def test_normalization_adapt_sets_numpy_mean_and_variance(rng):
    model, norm, data = normalization_model(rng)
    assert norm.num_features == 4 and norm.index == 0
    np.testing.assert_allclose(norm.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm.variance, data.var(axis=0), rtol=1e-12)
    assert model.num_params == 4 * 3 + 3  # the statistics are not trainable parameters


def test_normalization_forward_and_backward_match_numpy(rng):
    model, norm, data = normalization_model(rng)
    x = rng.normal(5.0, 3.0, size=(6, 4))
    expected = (x - data.mean(0)) / np.sqrt(data.var(0) + norm.eps)
    np.testing.assert_allclose(model.layer_outputs(x)[0], expected, rtol=1e-12)
    dense = model.layers[1]
    np.testing.assert_allclose(model.predict(x), expected @ dense.weight + dense.bias, rtol=1e-12)
    # mse against zeros: dL/dout = 2 out / (n k); dL/dx = (dL/dout W^T) / sqrt(var + eps)
    model.compile(loss="mse", optimizer="sgd")
    out = model.predict(x)
    _, dx = model.compute_gradients(x, np.zeros_like(out), return_input_grad=True)
    dout = 2 * out / out.size
    np.testing.assert_allclose(dx, dout @ dense.weight.T / np.sqrt(data.var(0) + norm.eps),
                               rtol=1e-10)


@pytest.mark.parametrize("where", ["first", "middle"])
def test_normalization_gradcheck(where, rng):
    if where == "first":
        model, _, _ = normalization_model(rng)
    else:
        norm = mc.Normalization(5, mean=rng.normal(size=5), variance=rng.uniform(0.5, 2, 5))
        model = mc.Sequential([mc.Dense(4, 5), mc.Tanh(), norm, mc.Dense(5, 3)],
                              dtype="float64", seed=2)
    model.compile(loss="cross_entropy", optimizer="sgd")
    x, y = rng.normal(size=(7, 4)), rng.integers(0, 3, size=7)
    training_gradcheck(model, x, y)
    assert mc.gradcheck(model, x, y).passed


def test_normalization_statistics_are_not_trained(rng):
    model, norm, data = normalization_model(rng, dtype="float32")
    before = (norm.mean.copy(), norm.variance.copy())
    model.compile(loss="cross_entropy", optimizer="adam")
    model.fit(data, rng.integers(0, 3, size=40), epochs=2, verbose=0)
    np.testing.assert_array_equal(norm.mean, before[0])
    np.testing.assert_array_equal(norm.variance, before[1])


def test_normalization_constant_feature_is_left_unscaled_and_defaults():
    data = np.array([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]])
    norm = mc.Normalization().adapt(data)
    np.testing.assert_array_equal(norm.variance, [np.var([1.0, 3.0, 5.0]), 1.0])
    fresh = mc.Normalization(3)  # not adapted: mean 0, variance 1 (near the identity)
    model = mc.Sequential([fresh], dtype="float64")
    np.testing.assert_array_equal(fresh.mean, np.zeros(3))
    np.testing.assert_array_equal(fresh.variance, np.ones(3))
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(model.predict(x), x / np.sqrt(1 + fresh.eps), rtol=1e-12)


def test_normalization_adapt_after_build_writes_the_model(rng):
    norm = mc.Normalization(2)
    model = mc.Sequential([norm, mc.Dense(2, 1)], dtype="float64")
    data = rng.normal(3, 2, size=(30, 2))
    norm.adapt(data)
    x = data[:5]
    dense = model.layers[1]
    expected = (x - data.mean(0)) / np.sqrt(data.var(0) + norm.eps) @ dense.weight + dense.bias
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12)


@pytest.mark.parametrize("call, error, match", [
    (lambda: mc.Normalization(3).adapt(np.ones((4, 2))), ValueError, "3 features"),
    (lambda: mc.Normalization().adapt(np.ones(4)), ValueError, "2-D"),
    (lambda: mc.Normalization().adapt(np.array([["a"]])), TypeError, "real numbers"),
    (lambda: mc.Normalization().adapt(np.array([[np.nan, 1.0]])), ValueError, "NaN"),
    (lambda: mc.Normalization(2, variance=[1.0, -1.0]), ValueError, ">= 0"),
    (lambda: mc.Normalization(2, mean=[1.0]), ValueError, r"shape \(2,\)"),
    (lambda: mc.Normalization(0), ValueError, "num_features"),
    (lambda: mc.Sequential([mc.Normalization(), mc.Dense(2, 1)]), ValueError, "adapt"),
])
def test_normalization_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_normalization_saved_with_the_model(rng, tmp_path):
    model, norm, data = normalization_model(rng, dtype="float32")
    model.compile(loss="cross_entropy", optimizer="adam")
    path = tmp_path / "norm.safetensors"
    model.save(path)
    loaded = mc.load(path)
    assert isinstance(loaded.layers[0], mc.Normalization)
    assert loaded.layers[0].get_config() == norm.get_config()
    np.testing.assert_array_equal(loaded.layers[0].mean, norm.mean)
    np.testing.assert_array_equal(loaded.layers[0].variance, norm.variance)
    x = rng.normal(5, 3, size=(9, 4))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    names = [w.shape for w in loaded.get_weights()]
    assert names[:2] == [(4,), (4,)]  # get_weights holds the statistics too (Keras)
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copy.layers[0].variance, norm.variance)
    np.testing.assert_array_equal(copy.predict(x), model.predict(x))


def _norm_results(norm, dtype, x, y):
    # the identity Dense is exact on every ISA, so only the normalisation's copy can differ
    model = mc.Sequential([identity_dense(x.shape[1]), norm()], dtype=dtype, seed=0)
    rng = np.random.default_rng(3)
    norm_layer = model.layers[1]
    norm_layer.weight = rng.normal(size=x.shape[1])
    norm_layer.bias = rng.normal(size=x.shape[1])
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.0))  # (the weights stay as they are)
    loss, dx = model.compute_gradients(x, y, return_input_grad=True)
    grads = (norm_layer.weight_grad.tobytes(), norm_layer.bias_grad.tobytes(), dx.tobytes())
    model.train_step(x, y)  # BatchNorm: the running statistics, then evaluation with them
    return loss, grads, model.predict(x).tobytes(), model.evaluate(x, y)["loss"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm", [lambda: mc.LayerNorm(13), lambda: mc.BatchNorm1d(13)],
                         ids=["layernorm", "batchnorm"])
def test_every_isa_copy_of_the_normalisation_layers_gives_the_same_bits(norm, dtype, rng):
    # forward in training and evaluation, the backward pass and the running statistics run in
    # the element-wise copy of the active ISA (kernels/isa_regions.hpp): the same bits in each
    x = rng.normal(1, 2, size=(21, 13))
    y = rng.normal(size=(21, 13))
    isas = usable_isas()
    results = {}
    for isa in isas:
        with kernel_isa(isa):
            results[isa] = _norm_results(norm, dtype, x, y)
    assert np.isfinite(results[isas[0]][0])
    for isa in isas[1:]:
        assert results[isa] == results[isas[0]], isa

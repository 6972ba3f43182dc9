"""L1/L2 penalties and gradient clipping: in the loss and gradients, checked numerically and
against NumPy/torch formulas."""
import numpy as np
import pytest

import mlpcore as mc
from helpers import check_model


def regularised_model(l1, l2, dtype="float64"):
    model = mc.Sequential([mc.Dense(4, 6, l1=l1, l2=l2), mc.Tanh(), mc.Dense(6, 3, l2=l2)],
                          dtype=dtype, seed=0)
    model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.1))
    return model


@pytest.mark.parametrize("l1, l2", [(0.01, 0.0), (0.0, 0.05), (0.02, 0.03)])
def test_penalties_pass_the_gradient_check(l1, l2, rng):
    model = regularised_model(l1, l2)
    check_model(model, rng.normal(size=(7, 4)), rng.integers(0, 3, size=7))


def test_penalty_is_added_to_the_reported_loss(rng):
    x, y = rng.normal(size=(5, 4)), rng.integers(0, 3, size=5)
    plain, reg = regularised_model(0, 0), regularised_model(0.01, 0.02)
    w0, w2 = reg.layers[0].weight, reg.layers[2].weight
    penalty = 0.01 * np.abs(w0).sum() + 0.02 * (w0 ** 2).sum() + 0.02 * (w2 ** 2).sum()
    assert reg.evaluate(x, y)["loss"] == pytest.approx(plain.evaluate(x, y)["loss"] + penalty,
                                                        rel=1e-12)
    assert reg.compute_gradients(x, y) == pytest.approx(reg.evaluate(x, y)["loss"], rel=1e-12)
    # only the weight is regularised, as Keras' kernel_regularizer: bias gradients are unchanged
    plain.compute_gradients(x, y)
    np.testing.assert_allclose(reg.layers[0].bias_grad, plain.layers[0].bias_grad, rtol=1e-12)


def test_regularisation_errors_and_config():
    with pytest.raises(ValueError, match="l2 must be a non-negative finite number"):
        mc.Dense(2, 2, l2=-1)
    with pytest.raises(TypeError, match="l1 must be a number"):
        mc.Dense(2, 2, l1="0.1")
    assert mc.Dense(2, 3, l1=0.5).get_config()["l1"] == 0.5


def grads_of(model):
    return np.concatenate([np.ravel(a) for layer in model.layers if isinstance(layer, mc.Dense)
                           for a in (layer.weight_grad, layer.bias_grad)])


def params_of(model):
    return np.concatenate([np.ravel(a) for layer in model.layers if isinstance(layer, mc.Dense)
                           for a in (layer.weight, layer.bias)])


@pytest.mark.parametrize("clip_norm, clip_value", [(0.05, None), (None, 0.01), (0.05, 0.01),
                                                   (1e6, None)])
def test_clipping_matches_torch_semantics(clip_norm, clip_value, rng):
    x, y = rng.normal(size=(8, 4)) * 3, rng.integers(0, 3, size=8)
    reference, clipped = regularised_model(0, 0), regularised_model(0, 0)
    clipped.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.1), clip_norm=clip_norm,
                    clip_value=clip_value)
    reference.compute_gradients(x, y)
    g = grads_of(reference)
    norm = np.sqrt((g ** 2).sum())
    if clip_norm is not None:
        g = g * min(1.0, clip_norm / (norm + 1e-6))  # torch.nn.utils.clip_grad_norm_
    if clip_value is not None:
        g = np.clip(g, -clip_value, clip_value)  # torch.nn.utils.clip_grad_value_
    before = params_of(clipped)
    clipped.train_step(x, y)
    np.testing.assert_allclose(params_of(clipped), before - 0.1 * g, rtol=1e-12, atol=1e-15)
    assert clipped.last_grad_norm == pytest.approx(norm, rel=1e-12)  # recorded before clipping


def test_clipping_arguments_are_checked():
    model = regularised_model(0, 0)
    with pytest.raises(ValueError, match="clip_norm must be positive"):
        model.compile(loss="mse", clip_norm=0)
    with pytest.raises(TypeError, match="clip_value must be a number"):
        model.compile(loss="mse", clip_value="1")


def test_clip_settings_survive_save_and_load(tmp_path):
    model = regularised_model(0.01, 0.02)
    model.compile(loss="cross_entropy", optimizer="sgd", clip_norm=0.5, clip_value=0.1)
    model.save(tmp_path / "m.safetensors")
    loaded = mc.load(tmp_path / "m.safetensors")
    assert (loaded.clip_norm, loaded.clip_value) == (0.5, 0.1)
    assert loaded.layers[0].l1 == 0.01 and loaded.layers[2].l2 == 0.02


def test_native_epoch_statistics(rng):
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    model = regularised_model(0, 0)
    model._net.take_stats()
    norms = []
    for lo in range(0, 40, 10):
        model.train_step(x[lo:lo + 10], y[lo:lo + 10])
        norms.append(model.last_grad_norm)
    stats = model._net.take_stats()
    assert stats["steps"] == 4
    assert stats["grad_norm_sum"] == pytest.approx(sum(norms), rel=1e-12)
    assert stats["grad_norm_sq_sum"] == pytest.approx(sum(n * n for n in norms), rel=1e-12)
    per_layer = stats["layer_grad_norm_sum"]
    assert per_layer[1] == 0.0 and per_layer[0] > 0 and per_layer[2] > 0
    assert model._net.take_stats()["steps"] == 0

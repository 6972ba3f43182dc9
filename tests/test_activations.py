"""Activation forward values and derivatives against the NumPy reference (and torch if present)."""
import numpy as np
import pytest

import mlpcore as mc
import reference
from helpers import (ACTIVATION_FACTORIES, ACTIVATION_PARAMS, identity_model, kernel_isa,
                     usable_isas)

ELEMENTWISE = sorted(set(ACTIVATION_FACTORIES) - {"Softmax"})
TOL = {"float64": dict(rtol=1e-12, atol=1e-13), "float32": dict(rtol=2e-6, atol=2e-6)}


def sample_inputs(rng, n_rows, n):
    x = rng.normal(0, 3, size=(n_rows, n))
    x[0, :4] = [-30.0, -1e-3, 1e-3, 30.0]  # tails and both sides of 0
    return x


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ELEMENTWISE)
def test_forward_matches_reference(act, dtype, rng):
    x = sample_inputs(rng, 40, 7)
    model = identity_model(7, dtype, last=ACTIVATION_FACTORIES[act]())
    expected, _ = reference.activation(act, x.astype(dtype).astype(np.float64),
                                       **ACTIVATION_PARAMS.get(act, {}))
    np.testing.assert_allclose(model.predict(x), expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ELEMENTWISE)
def test_derivative_matches_reference(act, dtype, rng):
    # with loss mse against zeros, dL/dy = 2y/N, so dL/dx = 2 y f'(x) / N through the identity Dense
    x = sample_inputs(rng, 16, 5)
    model = identity_model(5, dtype, last=ACTIVATION_FACTORIES[act]())
    model.compile(loss="mse", optimizer="sgd")
    _, dx = model.compute_gradients(x, np.zeros_like(x), return_input_grad=True)
    y, dydx = reference.activation(act, x.astype(dtype).astype(np.float64),
                                   **ACTIVATION_PARAMS.get(act, {}))
    np.testing.assert_allclose(dx, 2 * y * dydx / x.size, **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_rows_and_large_inputs(dtype, rng):
    x = rng.normal(0, 3, size=(12, 6))
    x[0] = [1e4, -1e4, 0, 5, 1e4, 3]  # huge logits must not overflow
    model = identity_model(6, dtype, last=mc.Softmax())
    out = model.predict(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference.softmax(x), **TOL[dtype])
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_backward_matches_reference(rng):
    x = rng.normal(size=(5, 4))
    t = rng.normal(size=(5, 4))
    model = identity_model(4, "float64", last=mc.Softmax())
    model.compile(loss="mse", optimizer="sgd")
    _, dx = model.compute_gradients(x, t, return_input_grad=True)
    y = reference.softmax(x)
    dy = 2 * (y - t) / y.size
    expected = y * (dy - (dy * y).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-15)


def test_softplus_threshold_switches_to_identity():
    x = np.array([[25.0, 19.0, -3.0]])
    model = identity_model(3, "float64", last=mc.Softplus(beta=1.0, threshold=20.0))
    out = model.predict(x)[0]
    assert out[0] == 25.0
    assert out[1] == pytest.approx(np.log1p(np.exp(19.0)), rel=1e-14)


def test_invalid_activation_arguments():
    with pytest.raises(ValueError, match="approximate"):
        mc.GELU(approximate="fast")
    with pytest.raises(ValueError, match="beta"):
        mc.Softplus(beta=0)
    with pytest.raises(TypeError, match="negative_slope"):
        mc.LeakyReLU("0.1")
    with pytest.raises(ValueError, match="dim"):
        mc.Softmax(dim=0)
    with pytest.raises(ValueError, match="valid names: .*relu"):
        mc.get_activation("rectifier")
    assert isinstance(mc.get_activation("ReLU"), mc.ReLU)


TORCH_MODULES = {
    "Identity": lambda nn: nn.Identity(), "ReLU": lambda nn: nn.ReLU(),
    "LeakyReLU": lambda nn: nn.LeakyReLU(0.2), "ELU": lambda nn: nn.ELU(0.7),
    "SELU": lambda nn: nn.SELU(), "GELU": lambda nn: nn.GELU(),
    "GELUTanh": lambda nn: nn.GELU(approximate="tanh"), "SiLU": lambda nn: nn.SiLU(),
    "Sigmoid": lambda nn: nn.Sigmoid(), "Tanh": lambda nn: nn.Tanh(),
    "Softplus": lambda nn: nn.Softplus(beta=1.5), "Softmax": lambda nn: nn.Softmax(dim=-1),
}


@pytest.mark.parametrize("act", sorted(TORCH_MODULES))
def test_matches_torch(act, rng):
    torch = pytest.importorskip("torch")
    x = sample_inputs(rng, 20, 6)
    g = rng.normal(size=x.shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = TORCH_MODULES[act](torch.nn)(xt)
    (yt * torch.tensor(g)).sum().backward()
    model = identity_model(6, "float64", last=ACTIVATION_FACTORIES[act]())
    np.testing.assert_allclose(model.predict(x), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    # the derivative, through mse against y - g/2*N: dL/dy = g exactly
    model.compile(loss="mse", optimizer="sgd")
    y = model.predict(x)
    _, dx = model.compute_gradients(x, y - g * x.size / 2, return_input_grad=True)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("isa", usable_isas())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_propagates_nan_as_torch(isa, dtype):
    """torch.relu(nan) is nan: a NaN reaching a ReLU is not hidden as 0, on the fused GEMM
    epilogue (after Dense), the direct small-product path and the stand-alone activation."""
    with kernel_isa(isa):
        for rows in (3, 700):  # direct path and packed path
            fused = mc.Sequential([mc.Dense(4, 5, init="zeros"), mc.ReLU()], dtype=dtype)
            fused.layers[0].bias[...] = [np.nan, -0.0, 0.0, -1.0, 2.0]
            out = fused.predict(np.ones((rows, 4), dtype=dtype))
            assert np.all(np.isnan(out[:, 0]))
            np.testing.assert_array_equal(out[:, 1:], np.tile([0.0, 0.0, 0.0, 2.0], (rows, 1)))
            assert not np.any(np.signbit(out[:, 1]))  # relu(-0.0) is +0.0
        alone = mc.Sequential([mc.LayerNorm(2), mc.ReLU()], dtype=dtype)
        alone.layers[0].bias[...] = [np.nan, 1.0]
        out = alone.predict(np.array([[1.0, 2.0]], dtype=dtype))
        assert np.isnan(out[0, 0]) and out[0, 1] > 0

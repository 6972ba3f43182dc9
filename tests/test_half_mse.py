"""losses.HalfMSE: the textbook 1/2 (p - y)^2 convention beside the native mean mse."""
import numpy as np
import pytest

import mlpcore as mc


@pytest.mark.parametrize("reduction,scale", [("mean", 1 / 6), ("sum", 1.0)])
def test_half_mse_gradient_is_the_error(rng, reduction, scale):
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    half = mc.Sequential([mc.Dense(3, 2)], dtype="float64", seed=0)
    half.compile(loss=mc.losses.HalfMSE(reduction), optimizer="sgd")
    t = half.trace(x, y)
    np.testing.assert_allclose(t.grad_output, scale * (t.output - y), rtol=1e-12)
    assert t.loss == pytest.approx(0.5 * scale * np.sum((t.output - y) ** 2), rel=1e-12)
    native = mc.Sequential([mc.Dense(3, 2)], dtype="float64", seed=0)
    native.compile(loss="mse", optimizer="sgd")
    # the native mse's gradient is 2 (p - y) / (n k): k / 2 times (mean) HalfMSE's times n
    n, k = y.shape
    ratio = 2 / (n * k) / scale
    np.testing.assert_allclose(native.trace(x, y).grad_output, ratio * t.grad_output,
                               rtol=1e-12)


def test_half_mse_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        mc.losses.HalfMSE("max")

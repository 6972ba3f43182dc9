"""model.trace: every layer's z, a, delta and gradients, checked against the four backprop
equations written in NumPy, against compute_gradients, and for leaving the model untouched."""
import numpy as np
import pytest

import mlpcore as mc


def _net(dtype="float64", act=mc.Sigmoid, seed=0):
    return mc.Sequential([mc.Dense(4, 5), act(), mc.Dense(5, 3), act(), mc.Dense(3, 2)],
                         dtype=dtype, seed=seed)


def _sigmoid_prime(z):
    s = 1 / (1 + np.exp(-z))
    return s * (1 - s)


def test_four_equations_hold_for_mse(rng):
    model = _net()
    model.compile(loss="mse", optimizer="sgd")
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    t = model.trace(x, y)
    d = t.dense
    assert [s.activation for s in d] == ["Sigmoid", "Sigmoid", None]
    n, k = y.shape
    # output error: dL/da_L (mse = mean over all entries) times f'(z_L) = 1 (no activation)
    np.testing.assert_allclose(d[-1].delta, 2 * (d[-1].a - y) / (n * k), rtol=1e-12, atol=0)
    for i in (1, 0):  # hidden error: (delta_{l+1} W_{l+1}^T) * f'(z_l)
        expected = (d[i + 1].delta @ d[i + 1].W.T) * _sigmoid_prime(d[i].z)
        np.testing.assert_allclose(d[i].delta, expected, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(d[i].fprime, _sigmoid_prime(d[i].z), rtol=1e-12)
    for s in d:  # dL/db = sum of delta, dL/dW = a_prev^T delta (native gradients)
        np.testing.assert_allclose(s.db, s.delta.sum(axis=0), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(s.dW, s.a_prev.T @ s.delta, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(s.z, s.a_prev @ s.W + s.b, rtol=1e-12)
    np.testing.assert_allclose(t.input_grad, d[0].delta @ d[0].W.T, rtol=1e-12, atol=1e-300)
    assert t.loss == pytest.approx(np.mean((d[-1].a - y) ** 2), rel=1e-12)


def test_cross_entropy_output_error_is_softmax_minus_onehot(rng):
    model = _net(act=mc.Tanh)
    model.compile(loss="cross_entropy", optimizer="sgd")
    x, labels = rng.normal(size=(5, 4)), np.array([0, 1, 1, 0, 1])
    t = model.trace(x, labels)
    logits = t.output
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(t.dense[-1].delta, (p - np.eye(2)[labels]) / 5, rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(t.dense[0].fprime, 1 - np.tanh(t.dense[0].z) ** 2, rtol=1e-12)


def test_residual_blocks_add_the_skip_signal(rng):
    model = mc.Sequential([mc.Dense(3, 4), mc.ReLU(),
                           mc.Residual([mc.Dense(4, 4), mc.Tanh(), mc.Dense(4, 4)]),
                           mc.Dense(4, 2)], dtype="float64", seed=1)
    model.compile(loss="mse", optimizer="sgd")
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    t = model.trace(x, y)
    assert [row.name for row in t.layers] == ["Dense", "ReLU", "Dense", "Tanh", "Dense",
                                              "Residual end", "Dense"]
    np.testing.assert_allclose(t.layers[0].grad_input, t.input_grad, rtol=1e-12, atol=1e-300)
    for s in t.dense:
        np.testing.assert_allclose(s.dW, s.a_prev.T @ s.delta, rtol=1e-12, atol=1e-300)


def test_forward_only_trace_and_float32(rng):
    model = _net(dtype="float32", act=mc.ReLU)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    t = mc.trace(model, x)
    assert t.loss is None and t.dense[0].delta is None
    np.testing.assert_array_equal(t.output, model.predict(x))
    np.testing.assert_array_equal(t.dense[0].a, np.maximum(t.dense[0].z, 0))
    assert t.dense[0].z.dtype == np.float32
    text = str(t)
    assert "Dense" in text and "ReLU" in text and len(text.splitlines()) == 3 + 5


def test_trace_leaves_the_model_as_it_was(rng):
    model = _net(act=mc.Tanh)
    model.compile(loss="mse", optimizer=mc.optim.Adam(lr=1e-2))
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 2))
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    before = (model.get_weights(), np.array(model.grads_view()),
              {k: v.copy() for k, v in model.optimizer_state_views().items()},
              model.optimizer_steps, model.rng.bit_generator.state, model.dropout_rng_state)
    model.trace(x[:3], y[:3])
    after = (model.get_weights(), np.array(model.grads_view()),
             {k: v.copy() for k, v in model.optimizer_state_views().items()},
             model.optimizer_steps, model.rng.bit_generator.state, model.dropout_rng_state)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0]))
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2].keys() == after[2].keys()
    assert all(np.array_equal(before[2][k], after[2][k]) for k in before[2])
    assert before[3:] == after[3:]


def test_custom_loss_is_traced(rng):
    def half_sse(p, y):
        return 0.5 * float(np.sum((p - y) ** 2)), p - y
    model = _net(act=mc.Tanh)
    model.compile(loss=half_sse, optimizer="sgd")
    x, y = rng.normal(size=(4, 4)), rng.normal(size=(4, 2))
    t = model.trace(x, y)
    np.testing.assert_allclose(t.grad_output, t.output - y, rtol=1e-12)


def test_bad_uses_raise_clear_errors(rng):
    model = mc.Sequential([mc.Dense(4, 3), mc.Dropout(0.5), mc.Dense(3, 1)], dtype="float64")
    x = rng.normal(size=(2, 4))
    with pytest.raises(RuntimeError, match="compile"):
        model.trace(x, np.zeros((2, 1)))
    model.compile(loss="mse", optimizer="sgd")
    with pytest.raises(ValueError, match="Dropout"):
        model.trace(x, np.zeros((2, 1)))
    assert model.trace(x).layers[1].name == "Dropout"  # forward only works
    with pytest.raises(ValueError, match="trace"):
        model.trace(rng.normal(size=(2, 5)))

"""fit(diagnostics=True): grad_norm_max (per-step spikes) and the gradient-noise estimate."""
import numpy as np
import pytest

import mlpcore as mc
from mlpcore.grad_noise import NOISE_BATCHES, gradient_noise


def _linear_grad(w, b, x, y):
    r = x @ w + b - y
    n = x.shape[0]
    return np.concatenate([(2 / n * x.T @ r).ravel(), [2 / n * r.sum()]])


def test_noise_matches_a_numpy_reference_for_linear_regression(rng):
    x, y = rng.normal(size=(80, 3)), rng.normal(size=(80, 1))
    model = mc.Sequential([mc.Dense(3, 1)], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer="sgd")
    model.grads_view()[...] = 7.0
    out = gradient_noise(model, x, y, batch_size=16)
    assert np.all(model.grads_view() == 7.0)  # gradient views put back
    w, b = np.array(model.layers[0].weight), np.array(model.layers[0].bias)
    full = _linear_grad(w, b, x, y)
    k = min(NOISE_BATCHES, 80 // 16)
    spread = np.mean([np.sum((_linear_grad(w, b, x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16])
                              - full) ** 2) for i in range(k)])
    assert out["grad_noise"] == pytest.approx(spread / (full @ full), rel=1e-10)
    assert out["grad_noise_scale"] == pytest.approx(16 * out["grad_noise"])
    assert gradient_noise(model, x, y, batch_size=80) == {}  # one batch: nothing to compare


def test_history_has_per_step_max_and_noise(rng):
    x = rng.normal(size=(96, 5))
    y = (x[:, :1] > 0).astype(float)
    model = mc.Sequential([mc.Dense(5, 8), mc.ReLU(), mc.Dense(8, 1)], seed=0)
    model.compile(loss="bce_with_logits", optimizer=mc.optim.SGD(lr=0.1))

    class Norms(mc.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.norms = []

        def on_train_batch_end(self, batch, logs=None):
            self.norms.append(self.model.last_grad_norm)

    seen = Norms()
    h = model.fit(x, y, epochs=2, batch_size=16, verbose=0, diagnostics=True,
                  callbacks=[seen]).history
    assert h["grad_norm_max"][0] == max(seen.norms[:6])
    assert h["grad_norm_max"][1] == max(seen.norms[6:])
    assert all(m >= g for m, g in zip(h["grad_norm_max"], h["grad_norm"]))
    assert all(v > 0 for v in h["grad_noise"]) and len(h["grad_noise_scale"]) == 2
    plain = mc.Sequential([mc.Dense(5, 8), mc.ReLU(), mc.Dense(8, 1)], seed=0)
    plain.compile(loss="bce_with_logits", optimizer=mc.optim.SGD(lr=0.1))
    # the estimates do not change training: same losses as without diagnostics
    assert plain.fit(x, y, epochs=2, batch_size=16, verbose=0).history["loss"] == h["loss"]


def test_full_gradient_is_taken_over_at_most_noise_rows(rng, monkeypatch):
    from mlpcore import grad_noise
    x, y = rng.normal(size=(96, 3)), rng.normal(size=(96, 1))
    model = mc.Sequential([mc.Dense(3, 1)], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer="sgd")
    head = gradient_noise(model, x[:48], y[:48], batch_size=16)
    monkeypatch.setattr(grad_noise, "NOISE_ROWS", 48)
    assert gradient_noise(model, x, y, batch_size=16) == head

"""A plain NumPy multilayer perceptron: the reference contender of the training benchmark.

Written the way a competent NumPy user would: ``@`` for the layers, ReLU hidden layers, a
fused softmax cross-entropy (mean over the batch, integer labels), hand-written backward pass,
and SGD / Adam (PyTorch's update rules) applied in place. Weights are ``(in, out)`` like
mlpcore's. Nothing here imports mlpcore, so the benchmark child that runs it stays lean.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["NumpyMLP"]


class NumpyMLP:
    """Dense layers with ReLU between them; the last layer's output is the logits."""

    def __init__(self, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                 optimizer: str = "sgd", lr: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-8,
                 dtype=np.float32, seed: Optional[int] = 0):
        self.dtype = np.dtype(dtype)
        self.W = [np.array(w, dtype=self.dtype) for w in weights]
        self.b = [np.array(b, dtype=self.dtype) for b in biases]
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"NumpyMLP: optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.optimizer, self.lr, self.betas, self.eps = optimizer, lr, betas, eps
        self.t = 0
        if optimizer == "adam":
            params = self.W + self.b
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.rng = np.random.default_rng(seed)

    # --- forward / backward ------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> Tuple[np.ndarray, List[np.ndarray]]:
        """Logits and the inputs of every layer (kept for the backward pass)."""
        inputs = [x]
        h = x
        last = len(self.W) - 1
        for i, (w, b) in enumerate(zip(self.W, self.b)):
            h = h @ w
            h += b
            if i < last:
                np.maximum(h, 0, out=h)
                inputs.append(h)
        return h, inputs

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """Mean softmax cross-entropy of the batch and the gradients (dW list, db list)."""
        logits, inputs = self.forward(x)
        n = x.shape[0]
        rows = np.arange(n)
        # softmax in place on the logits buffer
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        sums = logits.sum(axis=1, keepdims=True)
        logits /= sums
        probs = logits
        loss = float(-np.mean(np.log(probs[rows, y])))
        # dL/dlogits = (softmax - onehot) / n
        delta = probs
        delta[rows, y] -= 1
        delta *= 1.0 / n
        dW: List[np.ndarray] = [None] * len(self.W)  # type: ignore[list-item]
        db: List[np.ndarray] = [None] * len(self.W)  # type: ignore[list-item]
        for i in range(len(self.W) - 1, -1, -1):
            dW[i] = inputs[i].T @ delta
            db[i] = delta.sum(axis=0)
            if i > 0:
                delta = delta @ self.W[i].T
                delta *= inputs[i] > 0  # ReLU derivative (inputs[i] is the ReLU output)
        return loss, dW, db

    # --- updates -----------------------------------------------------------------------------
    def _update(self, grads: List[np.ndarray]) -> None:
        params = self.W + self.b
        self.t += 1
        if self.optimizer == "sgd":
            for p, g in zip(params, grads):
                g *= self.lr
                p -= g
            return
        b1, b2 = self.betas
        step = self.lr / (1 - b1 ** self.t)
        root_bias2 = np.sqrt(1 - b2 ** self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            denom = np.sqrt(v)
            denom /= root_bias2
            denom += self.eps
            p -= step * (m / denom)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, dW, db = self.loss_and_grads(x, y)
        self._update(dW + db)
        return loss

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 32,
            shuffle: bool = True) -> float:
        """Shuffled mini-batch epochs; returns the mean loss of the last epoch."""
        n = x.shape[0]
        total = 0.0
        for _ in range(epochs):
            order = self.rng.permutation(n) if shuffle else np.arange(n)
            total = 0.0
            for lo in range(0, n, batch_size):
                idx = order[lo:lo + batch_size]
                total += self.train_step(x[idx], y[idx]) * len(idx)
        return total / n

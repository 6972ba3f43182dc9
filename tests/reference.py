"""Plain NumPy references for the tests: activations, losses and a dense MLP's backprop."""
import numpy as np
from math import erf, sqrt

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_erf = np.vectorize(erf)


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def activation(name, z, **p):
    """y = f(z) and dy/dz for the element-wise activations (Softmax handled separately)."""
    if name == "Identity":
        return z, np.ones_like(z)
    if name == "ReLU":
        return np.maximum(z, 0), (z > 0).astype(z.dtype)
    if name == "LeakyReLU":
        s = p.get("negative_slope", 0.01)
        return np.where(z > 0, z, s * z), np.where(z > 0, 1.0, s)
    if name == "ELU":
        a = p.get("alpha", 1.0)
        return np.where(z > 0, z, a * np.expm1(z)), np.where(z > 0, 1.0, a * np.exp(z))
    if name == "SELU":
        y = SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(z))
        return y, SELU_SCALE * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(z))
    if name == "GELU":
        cdf = 0.5 * (1 + _erf(z / sqrt(2)))
        pdf = np.exp(-0.5 * z * z) / sqrt(2 * np.pi)
        return z * cdf, cdf + z * pdf
    if name == "GELUTanh":
        c = sqrt(2 / np.pi)
        t = np.tanh(c * (z + 0.044715 * z ** 3))
        return 0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z)
    if name == "SiLU":
        s = sigmoid(z)
        return z * s, s * (1 + z * (1 - s))
    if name == "Sigmoid":
        s = sigmoid(z)
        return s, s * (1 - s)
    if name == "Tanh":
        t = np.tanh(z)
        return t, 1 - t * t
    if name == "Softplus":
        b, th = p.get("beta", 1.0), p.get("threshold", 20.0)
        lin = b * z > th
        y = np.where(lin, z, np.log1p(np.exp(np.minimum(b * z, th))) / b)
        return y, np.where(lin, 1.0, sigmoid(b * z))
    raise KeyError(name)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def loss(name, out, target, delta=1.0):
    """Mean loss and d loss / d out (PyTorch semantics)."""
    if name == "cross_entropy":
        n, k = out.shape
        p = softmax(out)
        t = np.eye(k)[target] if target.ndim == 1 else target
        value = -(t * np.log(p)).sum() / n
        return value, (p * t.sum(axis=1, keepdims=True) - t) / n
    d = out - target
    N = out.size
    if name == "mse":
        return (d ** 2).mean(), 2 * d / N
    if name == "mae":
        return np.abs(d).mean(), np.sign(d) / N
    if name == "huber":
        quad = np.abs(d) < delta
        v = np.where(quad, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))
        return v.mean(), np.where(quad, d, delta * np.sign(d)) / N
    if name == "bce":
        lp = np.maximum(np.log(out), -100)
        l1p = np.maximum(np.log1p(-out), -100)
        v = -(target * lp + (1 - target) * l1p)
        return v.mean(), (out - target) / np.maximum(out * (1 - out), 1e-12) / N
    if name == "bce_with_logits":
        v = np.maximum(out, 0) - out * target + np.log1p(np.exp(-np.abs(out)))
        return v.mean(), (sigmoid(out) - target) / N
    raise KeyError(name)

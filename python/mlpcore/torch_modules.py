"""mlpcore layers as PyTorch modules (``model.to_torch()``), without depending on PyTorch:
torch is imported only when the function runs. See :mod:`mlpcore.torch_interop` for the way
back and the list of layers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .layers import BatchNorm1d, Dense, LayerNorm, Residual

__all__ = ["to_torch", "torch_residual", "require_torch"]


def require_torch(func: str):
    try:
        import torch
    except ImportError:
        raise ImportError(f"mlpcore.{func} needs PyTorch (pip install torch); mlpcore does not "
                          "depend on it") from None
    return torch


_residual_class = None


def torch_residual():
    """The ``nn.Module`` class mlpcore's Residual becomes: ``forward(x) = x + body(x)``, where
    ``body`` is an ``nn.Sequential``. Build one as ``torch_residual()(nn.Sequential(...))``."""
    global _residual_class
    if _residual_class is None:
        torch = require_torch("torch_residual")

        class Residual(torch.nn.Module):
            """x + body(x) (mlpcore.Residual)."""

            def __init__(self, body) -> None:
                super().__init__()
                self.body = body

            def forward(self, x):
                return x + self.body(x)
        _residual_class = Residual
    return _residual_class


def _activation_module(nn, cfg: dict[str, Any]):
    kind = cfg["type"]
    plain = {"ReLU": nn.ReLU, "SELU": nn.SELU, "SiLU": nn.SiLU, "Sigmoid": nn.Sigmoid,
             "Tanh": nn.Tanh, "Identity": nn.Identity}
    if kind in plain:
        return plain[kind]()
    if kind == "LeakyReLU":
        return nn.LeakyReLU(cfg["negative_slope"])
    if kind == "ELU":
        return nn.ELU(cfg["alpha"])
    if kind == "GELU":
        return nn.GELU(approximate=cfg["approximate"])
    if kind == "Softplus":
        return nn.Softplus(beta=cfg["beta"], threshold=cfg["threshold"])
    if kind == "Softmax":
        return nn.Softmax(dim=-1)
    if kind == "Dropout":
        return nn.Dropout(cfg["p"])
    return None


def _tensor(torch, array: np.ndarray):
    return torch.from_numpy(np.array(array, copy=True))


def _to_modules(torch, layers) -> list:
    nn, modules = torch.nn, []
    for layer in layers:
        if isinstance(layer, Residual):
            modules.append(torch_residual()(nn.Sequential(*_to_modules(torch, layer.layers))))
        elif isinstance(layer, Dense):
            m = nn.Linear(layer.in_features, layer.out_features)
            m.weight.data = _tensor(torch, layer.weight.T)
            m.bias.data = _tensor(torch, layer.bias)
            modules.append(m)
        elif isinstance(layer, LayerNorm):
            m = nn.LayerNorm(layer.num_features, eps=layer.eps)
            m.weight.data, m.bias.data = _tensor(torch, layer.weight), _tensor(torch, layer.bias)
            modules.append(m)
        elif isinstance(layer, BatchNorm1d):
            m = nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
            m.weight.data, m.bias.data = _tensor(torch, layer.weight), _tensor(torch, layer.bias)
            m.running_mean.data = _tensor(torch, layer.running_mean)
            m.running_var.data = _tensor(torch, layer.running_var)
            modules.append(m)
        else:
            m = _activation_module(nn, layer.get_config())
            if m is None:
                raise TypeError(f"to_torch: no torch module for {type(layer).__name__}")
            modules.append(m)
    return modules


def to_torch(model):
    """The equivalent ``torch.nn.Sequential`` of ``model`` in the model's dtype, with copies of
    its weights, in eval mode (so ``module(x)`` computes ``model.predict(x)``)."""
    torch = require_torch("to_torch")
    if not isinstance(getattr(model, "layers", None), list) or not hasattr(model, "dtype"):
        raise TypeError(f"to_torch: model must be an mlpcore Sequential, "
                        f"got {type(model).__name__}")
    module = torch.nn.Sequential(*_to_modules(torch, model.layers))
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    return module.to(dtype).eval()

"""PyTorch weights both ways, without depending on PyTorch: ``from_torch`` builds an mlpcore
model from an ``nn.Sequential`` (or fills one from a state_dict); ``to_torch`` returns the
equivalent ``nn.Sequential``. torch is imported only inside these functions.

Layers map one to one: Linear <-> Dense (torch's weight is (out, in), mlpcore's (in, out)),
ReLU, LeakyReLU, ELU, SELU, GELU, SiLU, Sigmoid, Tanh, Softplus, Softmax(dim=-1), Identity,
Dropout, LayerNorm (one normalised dimension), BatchNorm1d (with running statistics) and
mlpcore's Residual <-> :func:`torch_residual` (a module computing ``x + body(x)``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import layers as L
from .layers import BatchNorm1d, Dense, has_parameters
from .model import Sequential
from .torch_modules import require_torch, to_torch, torch_residual

__all__ = ["from_torch", "to_torch", "torch_residual"]


# --- from torch ------------------------------------------------------------------------------
def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _from_module(torch, m, path: str, fills: list):
    """The mlpcore layer for torch module ``m``; its arrays are appended to ``fills``."""
    nn = torch.nn
    if isinstance(m, torch_residual()):
        return L.Residual(_from_modules(torch, m.body, f"{path}.body", fills))
    if isinstance(m, nn.Linear):
        layer = L.Dense(m.in_features, m.out_features)
        bias = _numpy(m.bias) if m.bias is not None else np.zeros(m.out_features)
        fills.append((layer, {"weight": _numpy(m.weight).T, "bias": bias}))
        return layer
    if isinstance(m, nn.LayerNorm):
        if len(m.normalized_shape) != 1:
            raise ValueError(f"from_torch: {path} normalises over {tuple(m.normalized_shape)}; "
                             "mlpcore's LayerNorm normalises one feature dimension")
        n = m.normalized_shape[0]
        layer = L.LayerNorm(n, eps=m.eps)
        fills.append((layer, _affine(m, n)))
        return layer
    if isinstance(m, nn.BatchNorm1d):
        if not m.track_running_stats or m.momentum is None:
            raise ValueError(f"from_torch: {path} (BatchNorm1d) needs track_running_stats=True "
                             "and a numeric momentum")
        layer = L.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum)
        arrays = _affine(m, m.num_features)
        arrays.update(running_mean=_numpy(m.running_mean), running_var=_numpy(m.running_var))
        fills.append((layer, arrays))
        return layer
    simple = {nn.ReLU: L.ReLU, nn.SELU: L.SELU, nn.SiLU: L.SiLU, nn.Sigmoid: L.Sigmoid,
              nn.Tanh: L.Tanh, nn.Identity: L.Identity}
    if type(m) in simple:
        return simple[type(m)]()
    if isinstance(m, nn.LeakyReLU):
        return L.LeakyReLU(m.negative_slope)
    if isinstance(m, nn.ELU):
        return L.ELU(m.alpha)
    if isinstance(m, nn.GELU):
        return L.GELU(m.approximate)
    if isinstance(m, nn.Softplus):
        return L.Softplus(m.beta, m.threshold)
    if isinstance(m, nn.Softmax) and m.dim in (-1, 1):
        return L.Softmax()
    if isinstance(m, nn.Dropout):
        return L.Dropout(m.p)
    raise TypeError(f"from_torch: {path} ({type(m).__name__}) has no mlpcore layer; supported: "
                    "Linear, LayerNorm, BatchNorm1d, Dropout, Softmax(dim=-1), the activations "
                    "ReLU/LeakyReLU/ELU/SELU/GELU/SiLU/Sigmoid/Tanh/Softplus/Identity, and "
                    "nested nn.Sequential")


def _affine(m, n: int) -> dict[str, np.ndarray]:
    weight = _numpy(m.weight) if getattr(m, "weight", None) is not None else np.ones(n)
    bias = _numpy(m.bias) if getattr(m, "bias", None) is not None else np.zeros(n)
    return {"weight": weight, "bias": bias}


def _from_modules(torch, seq, path: str, fills: list) -> list:
    layers = []
    for name, child in seq.named_children():
        where = f"{path}.{name}" if path else name
        if type(child) is torch.nn.Sequential:  # nested Sequentials are flattened
            layers.extend(_from_modules(torch, child, where, fills))
        else:
            layers.append(_from_module(torch, child, where, fills))
    return layers


def _fill(fills, dtype) -> None:
    for layer, arrays in fills:
        for name, value in arrays.items():
            getattr(layer, name)[...] = np.asarray(value, dtype=dtype)


def from_torch(module_or_state_dict, *, model=None, dtype=None):
    """An mlpcore model with the weights of a PyTorch model.

    * An ``nn.Sequential`` (of the layers listed in this module's docstring; nested
      Sequentials are flattened): a new :class:`~mlpcore.Sequential` is built, in ``dtype``
      (default: the module's, float32 or float64).
    * A ``state_dict`` (from such a Sequential): it holds no activations, so pass ``model=``,
      an mlpcore model with the same layers; its Dense / LayerNorm / BatchNorm1d arrays are
      filled in order (shapes checked first) and ``model`` is returned.
    """
    torch = require_torch("from_torch")
    if isinstance(module_or_state_dict, torch.nn.Module):
        if model is not None:
            raise ValueError("from_torch: model= is for a state_dict; a module builds its own")
        module = module_or_state_dict
        if not isinstance(module, torch.nn.Sequential):
            raise TypeError(f"from_torch: expected an nn.Sequential (or its state_dict), got "
                            f"{type(module).__name__}")
        if dtype is None:
            param = next(iter(module.parameters()), None)
            dtype = "float64" if param is not None and param.dtype == torch.float64 else "float32"
        fills: list = []
        new = Sequential(_from_modules(torch, module, "", fills), dtype=dtype)
        _fill(fills, new.dtype)
        return new
    if isinstance(module_or_state_dict, dict):
        if not isinstance(model, Sequential):
            raise TypeError("from_torch: a state_dict holds no activations; pass model=, an "
                            "mlpcore Sequential with the same layers, to load it into")
        if dtype is not None:
            raise ValueError("from_torch: dtype= is for a module; a state_dict loads in the "
                             "model's dtype")
        _load_state_dict(module_or_state_dict, model)
        return model
    raise TypeError(f"from_torch: expected an nn.Sequential or a state_dict, got "
                    f"{type(module_or_state_dict).__name__}")


def _load_state_dict(state: dict[str, Any], model) -> None:
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        prefix, _, name = key.rpartition(".")
        if name == "num_batches_tracked":
            continue
        groups.setdefault(prefix, {})[name] = _numpy(value) if hasattr(value, "detach") \
            else np.asarray(value)
    targets = [layer for layer in model.flat_layers if has_parameters(layer)]
    if len(groups) != len(targets):
        raise ValueError(f"from_torch: the state_dict has {len(groups)} parametrised modules "
                         f"({', '.join(groups) or 'none'}), the model {len(targets)} "
                         "(Dense, LayerNorm, BatchNorm1d)")
    plan = []
    for (prefix, arrays), layer in zip(groups.items(), targets):
        want = {"weight", "bias"} | ({"running_mean", "running_var"}
                                     if isinstance(layer, BatchNorm1d) else set())
        if set(arrays) != want:
            raise ValueError(f"from_torch: state_dict entries {prefix}.* are "
                             f"{sorted(arrays)}, expected {sorted(want)} for "
                             f"{type(layer).__name__}")
        for name, value in arrays.items():
            value = value.T if isinstance(layer, Dense) and name == "weight" else value
            view = getattr(layer, name)
            if value.shape != view.shape:
                raise ValueError(f"from_torch: {prefix}.{name} has shape {arrays[name].shape}, "
                                 f"layer {type(layer).__name__} of the model needs "
                                 f"{_torch_shape(layer, name, view)}")
            plan.append((view, value))
    for view, value in plan:  # everything checked before anything is written
        view[...] = value


def _torch_shape(layer, name: str, view: np.ndarray) -> tuple:
    """The shape torch stores for this array: a Linear's weight is (out, in)."""
    return view.T.shape if isinstance(layer, Dense) and name == "weight" else view.shape

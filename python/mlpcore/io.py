"""Save and load models as safetensors files: tensors plus JSON metadata, no code on load.

Layout: ``layers.{i}.weight`` / ``layers.{i}.bias`` for each Dense layer, ``optimizer.{name}``
for each optimizer state buffer; metadata ``mlpcore`` holds the format version, the model
config (dtype and layers), the loss and the optimizer's hyper-parameters and step count.
Writes go to a temporary file in the same folder that is renamed over the target, so a crash
mid-save never leaves a half-written file in place of a good one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import numpy as np

FORMAT_VERSION = 1

__all__ = ["save", "load"]


def _tensors(model) -> Dict[str, np.ndarray]:
    from .layers import Dense
    tensors: Dict[str, np.ndarray] = {}
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Dense):
            tensors[f"layers.{i}.weight"] = np.ascontiguousarray(layer.weight)
            tensors[f"layers.{i}.bias"] = np.ascontiguousarray(layer.bias)
    if model.optimizer is not None:
        for name, buf in model.optimizer.state.items():
            tensors[f"optimizer.{name}"] = np.ascontiguousarray(buf)
    return tensors


def _metadata(model) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"format_version": FORMAT_VERSION, "model": model.get_config(),
                            "seed": model.seed}
    if model.loss is not None:
        meta["loss"] = {"name": model.loss.name, "huber_delta": model.huber_delta,
                        "clip_norm": model.clip_norm, "clip_value": model.clip_value}
        opt = model.optimizer
        meta["optimizer"] = {"name": type(opt).__name__, "param_groups": [dict(opt.param_groups[0])],
                             "step": opt.step_count}
    return meta


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save(model, path) -> None:
    from safetensors.numpy import save as st_save

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.parent.exists():
        raise ValueError(f"save: folder {str(path.parent)!r} does not exist")
    data = st_save(_tensors(model), metadata={"mlpcore": json.dumps(_metadata(model))})
    atomic_write_bytes(path, data)


def _read(path: Path):
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"load: no such file: {str(path)!r}") from None
    not_ours = f"load: {str(path)!r} is not an mlpcore model file"
    try:
        # parse the header ourselves first: safetensors' loader gives no access to metadata
        header_len = int.from_bytes(raw[:8], "little")
        if len(raw) < 8 or header_len <= 0 or 8 + header_len > len(raw):
            raise ValueError("truncated or not a safetensors file")
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("mlpcore", "null"))
        tensors = st_load(raw)
    except (ValueError, SafetensorError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise ValueError(f"{not_ours} (or it is truncated/corrupted): {exc}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{not_ours}: missing or unsupported mlpcore metadata")
    return meta, tensors


def load(path):
    """Rebuild a model saved by :meth:`Sequential.save`: same architecture, weights, loss,
    optimizer and optimizer state; it predicts bit-identically."""
    from .layers import Dense, layer_from_config
    from .model import Sequential
    from .optim import optimizer_from_state

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    meta, tensors = _read(path)
    try:
        config = meta["model"]
        layers = [layer_from_config(c) for c in config["layers"]]
        model = Sequential(layers, dtype=config["dtype"], seed=meta.get("seed"))
        for i, layer in enumerate(layers):
            if isinstance(layer, Dense):
                layer.weight = _tensor(tensors, f"layers.{i}.weight", layer.weight)
                layer.bias = _tensor(tensors, f"layers.{i}.bias", layer.bias)
        if "loss" in meta:
            opt_meta = meta["optimizer"]
            opt = optimizer_from_state({"name": opt_meta["name"],
                                        "param_groups": opt_meta["param_groups"]})
            model.compile(loss=meta["loss"]["name"], optimizer=opt,
                          huber_delta=meta["loss"]["huber_delta"],
                          clip_norm=meta["loss"].get("clip_norm"),
                          clip_value=meta["loss"].get("clip_value"))
            for name, view in opt.state.items():
                view[...] = _tensor(tensors, f"optimizer.{name}", view)
            model._net.optimizer_steps = int(opt_meta["step"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"load: {str(path)!r} has an incomplete mlpcore model description: "
                         f"{exc!r}") from None
    return model


def _tensor(tensors: Dict[str, np.ndarray], key: str, like: np.ndarray) -> np.ndarray:
    if key not in tensors:
        raise ValueError(f"load: tensor {key!r} is missing from the file")
    t = tensors[key]
    if t.shape != like.shape or t.dtype != like.dtype:
        raise ValueError(f"load: tensor {key!r} has shape {t.shape} and dtype {t.dtype}, "
                         f"expected {like.shape} and {like.dtype}")
    return t

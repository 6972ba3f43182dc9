"""Save and load models as safetensors files: tensors plus JSON metadata, no code on load.

The file layout and the writers (:func:`save`, :func:`save_checkpoint`,
:func:`model_to_bytes`) are in :mod:`mlpcore.saving`; this module reads files back into models
(:func:`load`, :func:`load_checkpoint`, :func:`model_from_bytes`), re-exports the writers, and
registers how a Sequential pickles and copies (with :mod:`copyreg`, as the model module sits
below this one).
"""
from __future__ import annotations

import copyreg
import json
import os
from pathlib import Path
from typing import Any, Dict

import numpy as np

from .layers import layer_from_config
from .model import Sequential
from .optim import optimizer_from_state
# the writers are re-exported: mlpcore.io.save, save_checkpoint, FORMAT_VERSION stay
from .saving import (CHECKPOINT_VERSION, FORMAT_VERSION, atomic_write_bytes,  # noqa: F401
                     check_scheduler, layer_arrays, model_to_bytes, save, save_checkpoint)

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "Checkpoint", "model_to_bytes",
           "model_from_bytes"]


def _read(path: Path):
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"load: no such file: {str(path)!r}") from None
    return _parse(raw, f"load: {str(path)!r} is not an mlpcore model file")


def _parse(raw: bytes, not_ours: str):
    """(metadata, tensors) of a model file's bytes; ``not_ours`` starts the error message."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

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
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    meta, tensors = _read(path)
    return _model_from(meta, tensors, path)


def _model_from(meta: Dict[str, Any], tensors: Dict[str, np.ndarray], path: Path,
                detect_anomaly: bool = False):
    try:
        config = meta["model"]
        layers = [layer_from_config(c) for c in config["layers"]]
        model = Sequential(layers, dtype=config["dtype"], seed=meta.get("seed"))
        for name, view in layer_arrays(model).items():
            view[...] = _tensor(tensors, name, view)
        if "dropout_rng_state" in meta:
            model.dropout_rng_state = [int(v) for v in meta["dropout_rng_state"]]
        if "loss" in meta:
            opt_meta = meta["optimizer"]
            opt = optimizer_from_state({"name": opt_meta["name"],
                                        "param_groups": opt_meta["param_groups"]})
            model.compile(loss=meta["loss"]["name"], optimizer=opt,
                          huber_delta=meta["loss"]["huber_delta"],
                          clip_norm=meta["loss"].get("clip_norm"),
                          clip_value=meta["loss"].get("clip_value"),
                          detect_anomaly=detect_anomaly)
            for name, view in opt.state.items():
                view[...] = _tensor(tensors, f"optimizer.{name}", view)
            model.optimizer_steps = int(opt_meta["step"])
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


# --- resumable checkpoints --------------------------------------------------------------------
# A checkpoint is a model file (same layout and metadata, so ``load`` reads it) whose metadata
# also holds a "checkpoint" entry: finished epochs, the model's random generator state, the
# scheduler's state_dict and compile's metrics.


class Checkpoint:
    """What :func:`load_checkpoint` returns: ``model``, ``epoch`` (finished epochs: pass it as
    ``fit(initial_epoch=...)``), ``scheduler`` (restored, or None) and ``scheduler_state``
    (the saved state_dict, or None)."""

    def __init__(self, model, epoch: int, scheduler=None, scheduler_state=None) -> None:
        self.model, self.epoch = model, epoch
        self.scheduler, self.scheduler_state = scheduler, scheduler_state

    def __iter__(self):  # model, epoch, scheduler = load_checkpoint(...)
        return iter((self.model, self.epoch, self.scheduler))

    def __repr__(self) -> str:
        return (f"Checkpoint(epoch={self.epoch}, model={self.model!r}, "
                f"scheduler={self.scheduler!r})")


def _from_json(value):
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _rng_from_state(state) -> np.random.Generator:
    name = state.get("bit_generator") if isinstance(state, dict) else None
    cls = getattr(np.random, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ValueError(f"load_checkpoint: unknown random bit generator {name!r}")
    bit_generator = cls()
    bit_generator.state = _from_json(state)
    return np.random.Generator(bit_generator)


def _architecture(config: Dict[str, Any]):
    # the initialiser is not part of the architecture: a loaded model reports "array"
    return [{k: v for k, v in layer.items() if k != "init"} for layer in config["layers"]]


def _check_same_model(meta: Dict[str, Any], model) -> None:
    saved, own = meta["model"], model.get_config()
    if saved["dtype"] != own["dtype"]:
        raise ValueError(f"load_checkpoint: dtype mismatch: the checkpoint is {saved['dtype']}, "
                         f"the model is {own['dtype']}")
    a, b = _architecture(saved), _architecture(own)
    if len(a) != len(b):
        raise ValueError(f"load_checkpoint: architecture mismatch: the checkpoint has {len(a)} "
                         f"layers, the model has {len(b)}")
    for i, (la, lb) in enumerate(zip(a, b)):
        if la != lb:
            raise ValueError(f"load_checkpoint: architecture mismatch at layers[{i}]: the "
                             f"checkpoint has {la}, the model has {lb}")
    if model.loss is None:
        raise ValueError("load_checkpoint: compile the model (the checkpoint's loss and "
                         "optimizer) before loading into it, or pass model=None to rebuild it "
                         "from the file")
    if meta["loss"]["name"] != model.loss.name:
        raise ValueError(f"load_checkpoint: loss mismatch: the checkpoint has "
                         f"{meta['loss']['name']!r}, the model {model.loss.name!r}")
    if meta["optimizer"]["name"] != type(model.optimizer).__name__:
        raise ValueError(f"load_checkpoint: optimizer mismatch: the checkpoint has "
                         f"{meta['optimizer']['name']}, the model "
                         f"{type(model.optimizer).__name__}")


def _load_into(meta, tensors, model) -> None:
    """Copy weights and optimizer state into a compiled ``model``; everything is checked
    before anything is written, so a failure leaves the model untouched."""
    new = [(view, _tensor(tensors, name, view)) for name, view in layer_arrays(model).items()]
    state = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            if value.shape != (model.num_params,) or value.dtype != model.dtype:
                raise ValueError(f"load_checkpoint: tensor {key!r} has shape {value.shape} and "
                                 f"dtype {value.dtype}, expected ({model.num_params},) and "
                                 f"{model.dtype}")
            state[key[len("optimizer."):]] = value
    opt_meta = meta["optimizer"]
    for view, value in new:
        view[...] = value
    if "dropout_rng_state" in meta:
        model.dropout_rng_state = [int(v) for v in meta["dropout_rng_state"]]
    model.optimizer.load_state_dict({"name": opt_meta["name"],
                                     "param_groups": opt_meta["param_groups"],
                                     "step": opt_meta["step"], "state": state})


def _restore_param_groups(model, meta) -> None:
    group = model.optimizer.param_groups[0]
    for key, value in meta["optimizer"]["param_groups"][0].items():
        group[key] = tuple(value) if key == "betas" else value


def load_checkpoint(path, model=None, *, scheduler=None, scheduler_factory=None) -> Checkpoint:
    """Read a :func:`save_checkpoint` file to resume training exactly.

    * ``model=None``: rebuild the model from the file (architecture, loss, optimizer);
      otherwise load into ``model``, which must be compiled with the same architecture,
      dtype, loss and optimizer type: a mismatch raises ValueError naming it and leaves the
      model untouched.
    * ``scheduler``: an existing scheduler on ``model.optimizer`` whose state is restored, or
      ``scheduler_factory``: a function ``optimizer -> scheduler`` building it (handy with
      ``model=None``). The optimizer's hyper-parameters (its learning rate) are restored after
      the scheduler is built.

    The model's random generator is restored too. Returns a :class:`Checkpoint`; continue with
    ``model.fit(..., initial_epoch=checkpoint.epoch, epochs=...)``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_checkpoint: path must be a str or os.PathLike, "
                        f"got {type(path).__name__}")
    if scheduler is not None and scheduler_factory is not None:
        raise ValueError("load_checkpoint: pass scheduler or scheduler_factory, not both")
    if scheduler_factory is not None and not callable(scheduler_factory):
        raise TypeError("load_checkpoint: scheduler_factory must be a function "
                        "optimizer -> scheduler")
    if model is not None and not isinstance(model, Sequential):
        raise TypeError(f"load_checkpoint: model must be a Sequential, "
                        f"got {type(model).__name__}")
    path = Path(path)
    meta, tensors = _read(path)
    ck = meta.get("checkpoint")
    if not isinstance(ck, dict) or "loss" not in meta:
        raise ValueError(f"load_checkpoint: {str(path)!r} is a model file without training "
                         "state (written by save, not save_checkpoint); use mlpcore.load")
    try:
        epoch = int(ck["epoch"])
        sched_state = _from_json(ck.get("scheduler"))
        rng = _rng_from_state(ck["rng"])
        metrics = list(ck.get("metrics") or [])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"load_checkpoint: {str(path)!r} has an incomplete checkpoint "
                         f"description: {exc!r}") from None
    if (scheduler is not None or scheduler_factory is not None) and sched_state is None:
        raise ValueError("load_checkpoint: a scheduler was given but the checkpoint holds no "
                         "scheduler state (it was saved with scheduler=None)")
    rebuilt = model is None
    if rebuilt:
        model = _model_from(meta, tensors, path)
    else:
        try:
            _check_same_model(meta, model)
        except KeyError as exc:
            raise ValueError(f"load_checkpoint: {str(path)!r} has an incomplete mlpcore model "
                             f"description: {exc!r}") from None
        if scheduler is not None:
            check_scheduler(scheduler, model, "load_checkpoint")
            scheduler._check_state(sched_state)
        _load_into(meta, tensors, model)
    if scheduler_factory is not None:
        scheduler = scheduler_factory(model.optimizer)
        check_scheduler(scheduler, model, "load_checkpoint")
    if scheduler is not None:
        scheduler.load_state_dict(sched_state)
    _restore_param_groups(model, meta)
    model.rng = rng
    if rebuilt:
        model.metrics = metrics
    return Checkpoint(model, epoch, scheduler, sched_state)


# --- pickling and copying ---------------------------------------------------------------------
def model_from_bytes(data: bytes):
    """The model :func:`mlpcore.saving.model_to_bytes` described (what unpickling calls)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"model_from_bytes: data must be bytes, got {type(data).__name__}")
    meta, tensors = _parse(bytes(data), "unpickle: the data is not a pickled mlpcore model")
    model = _model_from(meta, tensors, Path("<pickle>"),
                        detect_anomaly=bool(meta.get("detect_anomaly", False)))
    try:
        model.rng = _rng_from_state(meta["checkpoint"]["rng"])
        if model.loss is not None:
            model.metrics = list(meta["checkpoint"]["metrics"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"unpickle: incomplete mlpcore model state: {exc!r}") from None
    return model


def _reduce_model(model):
    return (model_from_bytes, (model_to_bytes(model),))


# pickle, copy.copy and copy.deepcopy look a class up in copyreg's table before asking the
# object: every copy of a Sequential is a new, independent model that trains on exactly as the
# original would (Sequential.__reduce_ex__ falls back to this entry for other picklers)
copyreg.pickle(Sequential, _reduce_model)

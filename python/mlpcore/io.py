"""Save and load models as safetensors files: tensors plus JSON metadata, no code on load.

Layout: ``layers.{i}.weight`` / ``layers.{i}.bias`` for each Dense layer, ``optimizer.{name}``
for each optimizer state buffer; metadata ``mlpcore`` holds the format version, the model
config (dtype and layers), the loss and the optimizer's hyper-parameters and step count.
Writes go to a temporary file in the same folder that is renamed over the target, so a crash
mid-save never leaves a half-written file in place of a good one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, Dict

import numpy as np

from ._files import (ModelFile, atomic_write_bytes, describe, first_nonfinite, json_field,
                     save_target)

FORMAT_VERSION = 1

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "Checkpoint"]


def _layer_arrays(model) -> Dict[str, np.ndarray]:
    """Live views of every layer array a file stores, by tensor name: weights and biases (gamma
    and beta for norm layers) and BatchNorm running statistics, named by plan index."""
    from .layers import BatchNorm1d, _Parametrised
    arrays: Dict[str, np.ndarray] = {}
    for layer in model.flat_layers:
        i = layer._index
        if isinstance(layer, _Parametrised):
            arrays[f"layers.{i}.weight"] = layer.weight
            arrays[f"layers.{i}.bias"] = layer.bias
        if isinstance(layer, BatchNorm1d):
            arrays[f"layers.{i}.running_mean"] = layer.running_mean
            arrays[f"layers.{i}.running_var"] = layer.running_var
    return arrays


def _tensors(model) -> Dict[str, np.ndarray]:
    tensors = {k: np.ascontiguousarray(v) for k, v in _layer_arrays(model).items()}
    if model.optimizer is not None:
        for name, buf in model.optimizer.state.items():
            tensors[f"optimizer.{name}"] = np.ascontiguousarray(buf)
    return tensors


def _metadata(model) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"format_version": FORMAT_VERSION, "model": model.get_config(),
                            "seed": model.seed,
                            # dropout masks continue exactly where they stopped after a load
                            "dropout_rng_state": [str(v) for v in model._net.dropout_rng_state]}
    # a custom (Python) loss cannot be stored safely: such a model loads uncompiled
    if model.loss is not None and model.loss.custom is None:
        meta["loss"] = {"name": model.loss.name, "huber_delta": model.huber_delta,
                        "clip_norm": model.clip_norm, "clip_value": model.clip_value}
        opt = model.optimizer
        meta["optimizer"] = {"name": type(opt).__name__, "param_groups": [dict(opt.param_groups[0])],
                             "step": opt.step_count}
    return meta


def save(model, path) -> None:
    from safetensors.numpy import save as st_save

    target = save_target(path, "save")
    data = st_save(_tensors(model), metadata={"mlpcore": json.dumps(_metadata(model))})
    atomic_write_bytes(target, data)


def load(path, *, allow_nonfinite: bool = False):
    """Rebuild a model saved by :meth:`Sequential.save`: same architecture, weights, loss,
    optimizer and optimizer state; it predicts bit-identically.

    The file is checked before anything is allocated for it (its metadata against its tensors'
    shapes and dtypes); any problem raises ValueError naming the file and the field (OSError
    for the file system). Weights or optimizer state holding NaN/Inf are refused unless
    ``allow_nonfinite=True``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load: path must be a str or os.PathLike, got {type(path).__name__}")
    with ModelFile(path, "load") as f:
        plan = _plan_of(f)
        tensors = _checked_tensors(f, plan, allow_nonfinite)
    return _model_from(f, plan, tensors)


class _Plan:
    """What a file's metadata describes, checked against its tensor table; nothing native
    is built yet."""

    def __init__(self, layers, dtype: np.dtype, num_params: int) -> None:
        self.layers, self.dtype, self.num_params = layers, dtype, num_params


def _layers_from(configs, f: ModelFile, field: str):
    from .layers import Residual, layer_from_config

    layers = []
    for i, config in enumerate(configs):
        where = f"{field}[{i}]"
        if not isinstance(config, dict):
            raise f.error(where, f"expected a layer object, got {type(config).__name__}")
        try:
            if config.get("type") == "Residual":
                inner = json_field(config, "layers", list, f.func, f.path, f"{where}.layers")
                layers.append(Residual(_layers_from(inner, f, f"{where}.layers")))
            else:
                layers.append(layer_from_config(config))
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(f"{f.func}: "):
                raise  # already names the file and field
            raise f.error(where, f"{exc} (in {config!r:.120})") from None
    return layers


def _plan_of(f: ModelFile) -> _Plan:
    """The model the metadata describes, as layer objects, with every tensor of the file
    checked against it: names, shapes and dtype (so a tiny file saying Dense(20000, 20000)
    fails here, before 1.6 GB are allocated)."""
    from .layers import flatten_layers

    meta = f.metadata
    if meta.get("format_version") != FORMAT_VERSION:
        raise f.error("format_version", f"unsupported mlpcore format version "
                       f"{meta.get('format_version')!r:.40} (this mlpcore reads {FORMAT_VERSION})")
    config = json_field(meta, "model", dict, f.func, f.path, "model")
    dtype_name = json_field(config, "dtype", str, f.func, f.path, "model.dtype")
    if dtype_name not in ("float32", "float64"):
        raise f.error("model.dtype", f"expected 'float32' or 'float64', got {dtype_name!r:.40}")
    dtype = np.dtype(dtype_name)
    configs = json_field(config, "layers", list, f.func, f.path, "model.layers")
    if not configs:
        raise f.error("model.layers", "empty: a model has at least one layer")
    layers = _layers_from(configs, f, "model.layers")
    expected: Dict[str, tuple] = {}
    num_params = 0
    for index, (layer, _) in enumerate(flatten_layers(layers)):
        shapes = layer.array_shapes() if layer is not None else {}
        for name, shape in shapes.items():
            expected[f"layers.{index}.{name}"] = shape
        num_params += sum(math.prod(shapes[k]) for k in ("weight", "bias") if k in shapes)
    for name, entry in f.tensors.items():
        if name.startswith("optimizer."):
            shape = (num_params,)
        elif name in expected:
            shape = expected[name]
        else:
            raise f.error(f"header[{name!r}]", "a tensor the model's metadata has no place for")
        if entry.shape != shape or entry.dtype != dtype:
            raise f.error(f"header[{name!r}]", f"tensor {name!r} has shape {entry.shape} and "
                           f"dtype {entry.dtype}, the metadata's model needs {shape} and {dtype}")
    missing = sorted(set(expected) - set(f.tensors))
    if missing:
        raise f.error(f"header[{missing[0]!r}]", f"tensor {missing[0]!r} is missing from the "
                       "file")
    return _Plan(layers, dtype, num_params)


def _checked_tensors(f: ModelFile, plan, allow_nonfinite: bool) -> Dict[str, np.ndarray]:
    tensors = f.read_tensors()
    if not allow_nonfinite:
        for name, t in tensors.items():
            at = first_nonfinite(t)
            if at is not None:
                raise f.error(f"header[{name!r}]", f"tensor {name!r} holds a non-finite value "
                               f"({t.reshape(-1)[at]} at flat index {at}); pass "
                               "allow_nonfinite=True to load it anyway")
    return tensors


def _dropout_state(meta, f: ModelFile):
    state = json_field(meta, "dropout_rng_state", list, f.func, f.path, "dropout_rng_state")
    try:
        values = [int(v) for v in state]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(0 <= v < 2**64 for v in values) or not any(values):
        raise f.error("dropout_rng_state", f"expected 4 unsigned 64-bit integers, not all "
                       f"zero, got {state!r:.80}")
    return values


def _optimizer_meta(meta, f: ModelFile):
    opt = json_field(meta, "optimizer", dict, f.func, f.path, "optimizer")
    json_field(opt, "name", str, f.func, f.path, "optimizer.name")
    groups = json_field(opt, "param_groups", list, f.func, f.path, "optimizer.param_groups")
    if len(groups) != 1 or not isinstance(groups[0], dict):
        raise f.error("optimizer.param_groups", f"expected a list of one object, got "
                       f"{groups!r:.80}")
    step = json_field(opt, "step", int, f.func, f.path, "optimizer.step")
    if not 0 <= step < 2**63:
        raise f.error("optimizer.step", f"expected an int in [0, 2**63), got {step}")
    return opt


def _loss_meta(meta, f: ModelFile):
    loss = json_field(meta, "loss", dict, f.func, f.path, "loss")
    json_field(loss, "name", str, f.func, f.path, "loss.name")
    for key in ("huber_delta", "clip_norm", "clip_value"):
        if loss.get(key) is not None:
            json_field(loss, key, float, f.func, f.path, f"loss.{key}")
    return loss


@contextlib.contextmanager
def _field(f: ModelFile, field: str):
    """Turn the error of a constructor fed from the file into one naming the file and field."""
    try:
        yield
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(f"{f.func}: "):
            raise
        raise f.error(field, str(exc)) from None


def _model_from(f: ModelFile, plan: _Plan, tensors: Dict[str, np.ndarray]):
    from .model import Sequential
    from .optim import optimizer_from_state

    meta = f.metadata
    seed = meta.get("seed")
    if seed is not None and not (_is_json_int(seed) and seed >= 0):
        raise f.error("seed", f"expected a non-negative int or null, got {seed!r:.40}")
    rng_state = _dropout_state(meta, f) if "dropout_rng_state" in meta else None
    opt_meta = loss = None
    if "loss" in meta:
        loss = _loss_meta(meta, f)
        opt_meta = _optimizer_meta(meta, f)
    with _field(f, "model"):
        model = Sequential(plan.layers, dtype=plan.dtype, seed=seed)
    for name, view in _layer_arrays(model).items():
        view[...] = tensors[name]
    if rng_state is not None:
        model._net.dropout_rng_state = rng_state
    if loss is not None:
        with _field(f, "optimizer"):
            opt = optimizer_from_state({"name": opt_meta["name"],
                                        "param_groups": opt_meta["param_groups"]})
        with _field(f, "loss"):
            model.compile(loss=loss["name"], optimizer=opt,
                          huber_delta=loss.get("huber_delta", 1.0),
                          clip_norm=loss.get("clip_norm"), clip_value=loss.get("clip_value"))
        state = {k[len("optimizer."):]: v for k, v in tensors.items()
                 if k.startswith("optimizer.")}
        own = opt.state
        for name in sorted(set(own) ^ set(state)):
            what = "is missing from the file" if name in own else "is not a state buffer of " \
                f"{opt_meta['name']} with these hyper-parameters"
            raise f.error(f"header['optimizer.{name}']", f"tensor 'optimizer.{name}' {what}")
        for name, view in own.items():
            view[...] = state[name]
        model._net.optimizer_steps = opt_meta["step"]
    return model


def _is_json_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- resumable checkpoints --------------------------------------------------------------------
# A checkpoint is a model file (same layout and metadata, so ``load`` reads it) whose metadata
# also holds a "checkpoint" entry: finished epochs, the model's random generator state, the
# scheduler's state_dict and compile's metrics.
CHECKPOINT_VERSION = 1


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


def _to_json(value):
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    return value


#: how much a checkpoint's JSON array may hold (its text is bounded by the header size anyway)
_MAX_JSON_ARRAY = 1 << 20


def _from_json(value):
    """Inverse of _to_json for data read from a file: arrays only of real numeric dtypes of at
    most 8 bytes (a file naming dtype 'U500000000' could make one entry take gigabytes)."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            try:
                dtype = np.dtype(value.get("dtype"))
            except (TypeError, ValueError):
                dtype = None
            if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8:
                raise ValueError(f"array dtype {value.get('dtype')!r:.40} is not a numeric "
                                 "dtype of at most 8 bytes")
            array = np.asarray(value["__ndarray__"], dtype=dtype)
            if array.size > _MAX_JSON_ARRAY:
                raise ValueError(f"array of {array.size} elements, more than {_MAX_JSON_ARRAY}")
            return array
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _rng_from_state(state) -> np.random.Generator:
    name = state.get("bit_generator") if isinstance(state, dict) else None
    cls = getattr(np.random, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ValueError(f"unknown random bit generator {name!r:.40}")
    bit_generator = cls()
    bit_generator.state = _from_json(state)
    return np.random.Generator(bit_generator)


def _check_scheduler(scheduler, model, func: str) -> None:
    from .schedules import LRScheduler
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(f"{func}: scheduler must be an mlpcore.schedules scheduler, "
                        f"got {type(scheduler).__name__}")
    if scheduler.optimizer is not model.optimizer:
        raise ValueError(f"{func}: the scheduler is built on a different optimizer than the "
                         "model's (model.optimizer)")


def save_checkpoint(model, path, *, epoch: int, scheduler=None) -> None:
    """Write everything needed to resume training exactly: weights, optimizer state and step
    count, ``scheduler.state_dict()``, the model's NumPy random generator state (fit draws
    each epoch's shuffling seed from it) and ``epoch``, the number of finished epochs.

    The file is a regular model file (``mlpcore.load`` reads it) written atomically: a crash
    mid-write leaves the previous file intact. Resume with :func:`load_checkpoint` and
    ``model.fit(..., initial_epoch=checkpoint.epoch)``.
    """
    from safetensors.numpy import save as st_save

    target = save_target(path, "save_checkpoint")
    model._require_compiled("save_checkpoint")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise TypeError(f"save_checkpoint: epoch must be an int, got {type(epoch).__name__}")
    if epoch < 0:
        raise ValueError(f"save_checkpoint: epoch must be >= 0, got {epoch}")
    if scheduler is not None:
        _check_scheduler(scheduler, model, "save_checkpoint")
    meta = _metadata(model)
    meta["checkpoint"] = {
        "version": CHECKPOINT_VERSION, "epoch": int(epoch),
        "rng": _to_json(model.rng.bit_generator.state),
        "scheduler": None if scheduler is None else _to_json(scheduler.state_dict()),
        "metrics": list(getattr(model, "metrics", None) or []),
    }
    data = st_save(_tensors(model), metadata={"mlpcore": json.dumps(meta)})
    atomic_write_bytes(target, data)


def _architecture(config: Dict[str, Any]):
    # the initialiser is not part of the architecture: a loaded model reports "array"
    return [{k: v for k, v in layer.items() if k != "init"} for layer in config["layers"]]


def _check_same_model(f: ModelFile, plan: _Plan, model) -> None:
    saved, own = f.metadata["model"], model.get_config()
    if plan.dtype != model.dtype:
        raise ValueError(f"load_checkpoint: dtype mismatch: the checkpoint is {plan.dtype}, "
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
    loss = f.metadata["loss"]["name"]
    if loss != model.loss.name:
        raise ValueError(f"load_checkpoint: loss mismatch: the checkpoint has {loss!r}, the "
                         f"model {model.loss.name!r}")
    opt_name = f.metadata["optimizer"]["name"]
    if opt_name != type(model.optimizer).__name__:
        raise ValueError(f"load_checkpoint: optimizer mismatch: the checkpoint has "
                         f"{opt_name}, the model {type(model.optimizer).__name__}")


def _load_into(f: ModelFile, tensors, model) -> None:
    """Copy weights and optimizer state into a compiled ``model``; everything is checked
    before anything is written, so a failure leaves the model untouched."""
    meta = f.metadata
    state = {k[len("optimizer."):]: v for k, v in tensors.items() if k.startswith("optimizer.")}
    opt_meta = meta["optimizer"]
    rng_state = _dropout_state(meta, f) if "dropout_rng_state" in meta else None
    with _field(f, "optimizer"):
        model.optimizer.load_state_dict({"name": opt_meta["name"],
                                         "param_groups": opt_meta["param_groups"],
                                         "step": opt_meta["step"], "state": state})
    for name, view in _layer_arrays(model).items():
        view[...] = tensors[name]
    if rng_state is not None:
        model._net.dropout_rng_state = rng_state


def _restore_param_groups(model, meta) -> None:
    group = model.optimizer.param_groups[0]
    for key, value in meta["optimizer"]["param_groups"][0].items():
        group[key] = tuple(value) if key == "betas" else value


def _checkpoint_meta(f: ModelFile):
    ck = f.metadata.get("checkpoint")
    if not isinstance(ck, dict) or "loss" not in f.metadata:
        raise ValueError(f"load_checkpoint: {describe(f.path)} is a model file without training "
                         "state (written by save, not save_checkpoint); use mlpcore.load")
    epoch = json_field(ck, "epoch", int, f.func, f.path, "checkpoint.epoch")
    if epoch < 0:
        raise f.error("checkpoint.epoch", f"expected an int >= 0, got {epoch}")
    with _field(f, "checkpoint.scheduler"):
        sched_state = _from_json(ck.get("scheduler"))
    with _field(f, "checkpoint.rng"):
        rng = _rng_from_state(json_field(ck, "rng", dict, f.func, f.path, "checkpoint.rng"))
    metrics = ck.get("metrics") or []
    if not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
        raise f.error("checkpoint.metrics", f"expected a list of names, got {metrics!r:.80}")
    return epoch, sched_state, rng, metrics


def load_checkpoint(path, model=None, *, scheduler=None, scheduler_factory=None,
                    allow_nonfinite: bool = False) -> Checkpoint:
    """Read a :func:`save_checkpoint` file to resume training exactly.

    * ``model=None``: rebuild the model from the file (architecture, loss, optimizer);
      otherwise load into ``model``, which must be compiled with the same architecture,
      dtype, loss and optimizer type: a mismatch raises ValueError naming it and leaves the
      model untouched.
    * ``scheduler``: an existing scheduler on ``model.optimizer`` whose state is restored, or
      ``scheduler_factory``: a function ``optimizer -> scheduler`` building it (handy with
      ``model=None``). The optimizer's hyper-parameters (its learning rate) are restored after
      the scheduler is built.
    * ``allow_nonfinite``: accept NaN/Inf in the weights or optimizer state (refused by default).

    The file is checked as :func:`load` checks it. The model's random generator is restored
    too. Returns a :class:`Checkpoint`; continue with
    ``model.fit(..., initial_epoch=checkpoint.epoch, epochs=...)``.
    """
    from .model import Sequential

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
    with ModelFile(path, "load_checkpoint") as f:
        plan = _plan_of(f)
        epoch, sched_state, rng, metrics = _checkpoint_meta(f)
        _optimizer_meta(f.metadata, f)
        _loss_meta(f.metadata, f)
        if (scheduler is not None or scheduler_factory is not None) and sched_state is None:
            raise ValueError("load_checkpoint: a scheduler was given but the checkpoint holds "
                             "no scheduler state (it was saved with scheduler=None)")
        if model is not None:
            _check_same_model(f, plan, model)
            if scheduler is not None:
                _check_scheduler(scheduler, model, "load_checkpoint")
                with _field(f, "checkpoint.scheduler"):
                    scheduler._check_state(sched_state)
        tensors = _checked_tensors(f, plan, allow_nonfinite)
    rebuilt = model is None
    if rebuilt:
        model = _model_from(f, plan, tensors)
    else:
        _load_into(f, tensors, model)
    if scheduler_factory is not None:
        scheduler = scheduler_factory(model.optimizer)
        _check_scheduler(scheduler, model, "load_checkpoint")
    if scheduler is not None:
        with _field(f, "checkpoint.scheduler"):
            scheduler.load_state_dict(sched_state)
    _restore_param_groups(model, f.metadata)
    model.rng = rng
    if rebuilt:
        model.metrics = metrics
    return Checkpoint(model, epoch, scheduler, sched_state)

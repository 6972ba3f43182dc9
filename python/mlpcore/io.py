"""Save and load models as safetensors files: tensors plus JSON metadata, no code on load.

The file layout and the writers (:func:`save`, :func:`save_checkpoint`,
:func:`model_to_bytes`) are in :mod:`mlpcore.saving`; this module reads files back into models
(:func:`load`, :func:`load_checkpoint`, :func:`model_from_bytes`), re-exports the writers, and
registers how a Sequential pickles and copies (with :mod:`copyreg`, as the model module sits
below this one). A file is checked before anything is
allocated for it (:class:`mlpcore._files.ModelFile`, then its metadata against its tensors).
"""
from __future__ import annotations

import contextlib
import copyreg
import math
import os
import re
from typing import Any, Dict

import numpy as np

from ._files import ModelFile, describe, first_nonfinite, json_field
from .layers import NONNEGATIVE_BUFFERS, Residual, flatten_layers, layer_from_config
from .metrics import check_metrics
from .model import Sequential
from .optim import MAX_STEPS, NONNEGATIVE_STATE, optimizer_from_state
# the writers are re-exported: mlpcore.io.save, save_checkpoint, FORMAT_VERSION stay
from .saving import (CHECKPOINT_VERSION, FORMAT_VERSION, atomic_write_bytes,  # noqa: F401
                     check_scheduler, layer_arrays, model_to_bytes, save, save_checkpoint)

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "Checkpoint", "model_to_bytes",
           "model_from_bytes"]


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
    meta = f.metadata
    version = meta.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:  # (true == 1 in Python)
        raise f.error("format_version", f"unsupported mlpcore format version "
                       f"{version!r:.40} (this mlpcore reads {FORMAT_VERSION})")
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
    for name, t in tensors.items():
        at = None if allow_nonfinite else first_nonfinite(t)
        if at is not None:
            raise f.error(f"header[{name!r}]", f"tensor {name!r} holds a non-finite value "
                           f"({t.reshape(-1)[at]} at flat index {at}); pass "
                           "allow_nonfinite=True to load it anyway")
        # (variances and sums of squares: a negative one makes NaN, whatever allow_nonfinite)
        kind = name.rsplit(".", 1)[-1]
        if (kind in NONNEGATIVE_BUFFERS and name.startswith("layers.")
                or kind in NONNEGATIVE_STATE and name.startswith("optimizer.")):
            negative = np.flatnonzero(t < 0)
            if negative.size:
                raise f.error(f"header[{name!r}]", f"tensor {name!r} must be >= 0, got "
                               f"{t.reshape(-1)[negative[0]]} at flat index {negative[0]}")
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
    if not 0 <= step <= MAX_STEPS:
        raise f.error("optimizer.step", f"expected an int in [0, 2**62], got {step}")
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


def _model_from(f: ModelFile, plan: _Plan, tensors: Dict[str, np.ndarray],
                detect_anomaly: bool = False):
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
    for name, view in layer_arrays(model).items():
        view[...] = tensors[name]
    if rng_state is not None:
        model.dropout_rng_state = rng_state
    if "rng" in meta:  # fit continues the shuffle sequence where the saved model was
        with _field(f, "rng"):
            model.rng = _rng_from_state(meta["rng"])
    classes = meta.get("classes")
    if classes is not None:  # the class names the CLI trained on (model.classes_)
        if not isinstance(classes, list) or len(classes) > 2**20 or not all(
                isinstance(c, (str, bool, float)) or _is_json_int(c) and -2**63 <= c < 2**64
                for c in classes):
            raise f.error("classes", "expected a list of class names (str, bool or numbers "
                          f"within 64 bits), got {classes!r:.80}")
        model.classes_ = classes
    if loss is not None:
        with _field(f, "optimizer"):
            opt = optimizer_from_state({"name": opt_meta["name"],
                                        "param_groups": opt_meta["param_groups"]})
        with _field(f, "loss"):
            model.compile(loss=loss["name"], optimizer=opt,
                          huber_delta=loss.get("huber_delta", 1.0),
                          clip_norm=loss.get("clip_norm"), clip_value=loss.get("clip_value"),
                          detect_anomaly=detect_anomaly)
        state = {k[len("optimizer."):]: v for k, v in tensors.items()
                 if k.startswith("optimizer.")}
        own = opt.state
        for name in sorted(set(own) ^ set(state)):
            what = "is missing from the file" if name in own else "is not a state buffer of " \
                f"{opt_meta['name']} with these hyper-parameters"
            raise f.error(f"header['optimizer.{name}']", f"tensor 'optimizer.{name}' {what}")
        for name, view in own.items():
            view[...] = state[name]
        model.optimizer_steps = opt_meta["step"]
    return model


def _is_json_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


#: how much a checkpoint's JSON array may hold (its text is bounded by the header size anyway)
_MAX_JSON_ARRAY = 1 << 20


def _json_dtype(name):
    """The dtype a JSON array names, or None. Only a plain name or type code reaches np.dtype:
    numpy evaluates comma-separated and parenthesised specs with a Python parser, whose errors
    (SyntaxError among them) are no ValueError."""
    if not (isinstance(name, str) and re.fullmatch(r"[<>|=]?[A-Za-z]{1,8}[0-9]{0,2}", name)):
        return None
    try:
        return np.dtype(name)
    except (TypeError, ValueError):
        return None


def _from_json(value):
    """Inverse of _to_json for data read from a file: arrays only of real numeric dtypes of at
    most 8 bytes (a file naming dtype 'U500000000' could make one entry take gigabytes)."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            dtype = _json_dtype(value.get("dtype"))
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


# NumPy's bit generators, with the position fields their state setters take unchecked and read
# memory at (a position past the buffer crashes the next draw): (path to the field, its range).
_BIT_GENERATORS = {
    "MT19937": (("state", "pos"), 0, 624),
    "PCG64": None,
    "PCG64DXSM": None,
    "Philox": (("buffer_pos",), 0, 4),
    "SFC64": None,
}


def _rng_from_state(state) -> np.random.Generator:
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS \
            or not isinstance(getattr(np.random, name, None), type):
        raise ValueError(f"unknown random bit generator {name!r:.40}; expected one of "
                         f"{', '.join(_BIT_GENERATORS)}")
    try:
        bit_generator = getattr(np.random, name)()
        bit_generator.state = _from_json(state)
    # numpy indexes what it is given as a dict, and converts its fields
    except (IndexError, AttributeError, TypeError, ValueError, OverflowError,
            NotImplementedError) as exc:
        raise ValueError(f"invalid {name} state: {exc}") from None
    position = _BIT_GENERATORS[name]
    if position is not None:
        path, low, high = position
        value = bit_generator.state  # (as the generator holds it now)
        for key in path:
            value = value[key]
        if not low <= int(value) <= high:
            raise ValueError(f"invalid {name} state: {'.'.join(path)} must be in "
                             f"[{low}, {high}], got {int(value)}")
    return np.random.Generator(bit_generator)


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
    for name, view in layer_arrays(model).items():
        view[...] = tensors[name]
    if rng_state is not None:
        model.dropout_rng_state = rng_state


def _restore_param_groups(model, meta) -> None:
    group = model.optimizer.param_groups[0]
    for key, value in meta["optimizer"]["param_groups"][0].items():
        group[key] = tuple(value) if key == "betas" else value


def _checkpoint_meta(f: ModelFile, training: bool = True):
    ck = f.metadata.get("checkpoint")
    if not isinstance(ck, dict) or (training and "loss" not in f.metadata):
        raise ValueError(f"load_checkpoint: {describe(f.path)} is a model file without training "
                         "state (written by save, not save_checkpoint); use mlpcore.load")
    version = ck.get("version")
    if not (_is_json_int(version) and 1 <= version <= CHECKPOINT_VERSION):
        raise f.error("checkpoint.version", f"expected a version from 1 to {CHECKPOINT_VERSION} "
                       f"(a newer mlpcore writes later ones), got {version!r:.40}")
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
                check_scheduler(scheduler, model, "load_checkpoint")
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
        check_scheduler(scheduler, model, "load_checkpoint")
    if scheduler is not None:
        with _field(f, "checkpoint.scheduler"):
            scheduler.load_state_dict(sched_state)
    _restore_param_groups(model, f.metadata)
    model.rng = rng
    if rebuilt:
        with _field(f, "checkpoint.metrics"):
            model.metrics = check_metrics(metrics, model.loss)
    return Checkpoint(model, epoch, scheduler, sched_state)


# --- pickling and copying ---------------------------------------------------------------------
def model_from_bytes(data: bytes):
    """The model :func:`mlpcore.saving.model_to_bytes` described (what unpickling calls); the
    bytes are checked as :func:`load` checks a file."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"model_from_bytes: data must be bytes, got {type(data).__name__}")
    try:
        with ModelFile("<pickle>", "unpickle", data=bytes(data)) as f:
            plan = _plan_of(f)
            tensors = _checked_tensors(f, plan, allow_nonfinite=True)  # a copy copies NaN too
            _, _, rng, metrics = _checkpoint_meta(f, training=False)
    except ValueError as exc:
        raise ValueError(f"unpickle: the data is not a pickled mlpcore model (or is damaged): "
                         f"{exc}") from None
    model = _model_from(f, plan, tensors,
                        detect_anomaly=bool(f.metadata.get("detect_anomaly", False)))
    model.rng = rng
    if model.loss is not None:
        try:
            model.metrics = check_metrics(metrics, model.loss)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"unpickle: the data is not a pickled mlpcore model (or is "
                             f"damaged): field checkpoint.metrics: {exc}") from None
    return model


def _reduce_model(model):
    return (model_from_bytes, (model_to_bytes(model),))


# pickle, copy.copy and copy.deepcopy look a class up in copyreg's table before asking the
# object: every copy of a Sequential is a new, independent model that trains on exactly as the
# original would (Sequential.__reduce_ex__ falls back to this entry for other picklers)
copyreg.pickle(Sequential, _reduce_model)

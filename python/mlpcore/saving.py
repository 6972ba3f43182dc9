"""Write models and checkpoints as safetensors files: tensors plus JSON metadata, no code.

Layout: ``layers.{i}.weight`` / ``layers.{i}.bias`` for each layer with parameters (gamma and
beta for norm layers) and ``layers.{i}.{buffer}`` for each non-trainable array (``running_mean`` /
``running_var`` for BatchNorm1d, ``mean`` / ``variance`` for Normalization), ``optimizer.{name}``
for each optimizer state buffer; metadata ``mlpcore`` holds the format version, the model
config (dtype and layers), the loss and the optimizer's hyper-parameters and step count.
Writes go to a temporary file beside the target that is renamed over it, so a crash mid-save
never leaves a half-written file in place of a good one (:mod:`mlpcore._files`: symlinks
followed, the umask's mode, temp files of killed saves removed by the next save). Reading is
:mod:`mlpcore.io`'s (it builds models, so it sits above :mod:`mlpcore.model`).
"""
from __future__ import annotations

import json
import numbers
import warnings
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ._files import atomic_write_bytes, save_target
from ._validation import check_instance, check_int
from .layers import has_parameters
from .schedules import LRScheduler

__all__ = ["FORMAT_VERSION", "CHECKPOINT_VERSION", "layer_arrays", "save", "save_checkpoint",
           "model_to_bytes", "atomic_write_bytes", "check_scheduler", "to_json"]

FORMAT_VERSION = 1
# Resumable checkpoints --------------------------------------------------------------------
# A checkpoint is a model file (same layout and metadata, so ``load`` reads it) whose metadata
# also holds a "checkpoint" entry: finished epochs, the model's random generator state, the
# scheduler's state_dict and compile's metrics.
CHECKPOINT_VERSION = 1


def layer_arrays(model) -> Dict[str, np.ndarray]:
    """Live views of every layer array a file stores, by tensor name: weights and biases (gamma
    and beta for norm layers) and the layers' buffers (BatchNorm running statistics,
    Normalization's mean and variance), named by plan index."""
    arrays: Dict[str, np.ndarray] = {}
    for layer in model.flat_layers:
        i = layer.index
        if has_parameters(layer):
            arrays[f"layers.{i}.weight"] = layer.weight
            arrays[f"layers.{i}.bias"] = layer.bias
        for name, view in layer.buffers().items():
            arrays[f"layers.{i}.{name}"] = view
    return arrays


def _snapshot(model, add_meta=None):
    """Copies of every array a file stores and the metadata describing them (step count,
    dropout and shuffle generators; ``add_meta(meta)`` adds to it), all taken with no training
    step of another thread running: a fit there cannot tear them apart."""
    views = dict(layer_arrays(model))
    if model.optimizer is not None:  # (syncs the optimizer: before the lock is taken)
        views.update({f"optimizer.{name}": buf for name, buf in model.optimizer.state.items()})

    def take():
        meta = _metadata(model)
        if add_meta is not None:
            add_meta(meta)
        return {k: np.array(v, order="C") for k, v in views.items()}, meta

    return model._locked(take)


def _metadata(model) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"format_version": FORMAT_VERSION, "model": model.get_config(),
                            "seed": model.seed,
                            # dropout masks continue exactly where they stopped after a load
                            "dropout_rng_state": [str(v) for v in model.dropout_rng_state],
                            # a later fit continues the shuffle sequence as a checkpoint does
                            "rng": to_json(model.rng.bit_generator.state)}
    if model.classes_ is not None:
        meta["classes"] = model.classes_.tolist()
    # a custom (Python) loss cannot be stored safely: such a model loads uncompiled
    if model.loss is not None and model.loss.custom is None:
        meta["loss"] = {"name": model.loss.name, "huber_delta": model.huber_delta,
                        "clip_norm": model.clip_norm, "clip_value": model.clip_value}
        opt = model.optimizer
        meta["optimizer"] = {"name": type(opt).__name__,
                             "param_groups": [to_json(dict(opt.param_groups[0]))],
                             "step": opt.step_count}
    return meta


def check_suffix(path: Path, func: str) -> None:
    """The file is safetensors whatever its name: a name promising another format is refused
    (a Keras or PyTorch loader would fail on it); another suffix gets a warning."""
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".keras", ".pt", ".pth", ".pkl", ".pickle", ".joblib",
                  ".onnx"):
        raise ValueError(f"{func}: mlpcore writes safetensors files, not {suffix}; name the "
                         f"file {path.stem}.safetensors")
    if suffix and suffix != ".safetensors":
        warnings.warn(f"{func}: {path.name!r} will hold a safetensors file; the usual suffix "
                      "is .safetensors", UserWarning, stacklevel=3)


def save(model, path) -> None:
    """Write ``model`` (architecture, weights, loss, optimizer and its state) to ``path``."""
    from safetensors.numpy import save as st_save

    target = save_target(path, "save")
    check_suffix(Path(path), "save")
    tensors, meta = _snapshot(model)
    data = st_save(tensors, metadata={"mlpcore": json.dumps(meta)})
    atomic_write_bytes(target, data)


def to_json(value):
    """``value`` in JSON's types: NumPy arrays as tagged lists, NumPy scalars and other numbers
    (a learning rate set as np.float32 or a Fraction) as Python ints and floats."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        return float(value)
    return value


def check_scheduler(scheduler, model, func: str) -> None:
    """``scheduler`` is an mlpcore scheduler built on ``model``'s optimizer."""
    check_instance(scheduler, LRScheduler, owner=func, name="scheduler",
                   expected="an mlpcore.schedules scheduler")
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
    epoch = check_int(epoch, owner="save_checkpoint", name="epoch", low=0, expected=">= 0")
    if scheduler is not None:
        check_scheduler(scheduler, model, "save_checkpoint")
    tensors, meta = _snapshot(model, lambda meta: meta.update(
        checkpoint=_checkpoint_meta(model, epoch, scheduler)))
    data = st_save(tensors, metadata={"mlpcore": json.dumps(meta)})
    atomic_write_bytes(target, data)


def _checkpoint_meta(model, epoch: int, scheduler) -> Dict[str, Any]:
    return {
        "version": CHECKPOINT_VERSION, "epoch": int(epoch),
        "rng": to_json(model.rng.bit_generator.state),
        "scheduler": None if scheduler is None else to_json(scheduler.state_dict()),
        "metrics": list(getattr(model, "metrics", None) or []),
    }


# --- pickling and copying ---------------------------------------------------------------------
# pickle, copy.copy and copy.deepcopy of a Sequential go through model_to_bytes and
# mlpcore.io.model_from_bytes (io registers the pair with copyreg): the bytes are a checkpoint
# file's (weights, optimizer state and step, the NumPy generator and dropout states, metrics), so
# an unpickled model trains on bit for bit as the original would have.
def model_to_bytes(model) -> bytes:
    """The model as the bytes of a checkpoint file (what pickling a Sequential stores)."""
    from safetensors.numpy import save as st_save

    if model.loss is not None and model.loss.custom is not None:
        raise TypeError("pickle: a model compiled with a custom (Python) loss cannot be pickled "
                        "or copied; compile it with a named loss, or pickle the weights "
                        "(model.save) and the loss function separately")
    tensors, meta = _snapshot(model, lambda meta: meta.update(
        checkpoint=_checkpoint_meta(model, 0, None),
        detect_anomaly=bool(getattr(model, "detect_anomaly", False))))
    return st_save(tensors, metadata={"mlpcore": json.dumps(meta)})

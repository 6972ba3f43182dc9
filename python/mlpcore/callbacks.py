"""Callbacks for :meth:`Sequential.fit`, with Keras' hook names and semantics.

``fit(..., callbacks=[...])`` calls, in order: ``set_model``, ``set_params``,
``on_train_begin``, then per epoch ``on_epoch_begin(epoch)``, the batches, and
``on_epoch_end(epoch, logs)`` with the epoch's logs (``loss``, ``lr``, metrics, ``val_*``),
and finally ``on_train_end``. Setting ``model.stop_training = True`` ends training after the
current epoch.

Per-batch hooks (``on_train_batch_begin/end(batch, logs)``, logs ``{"loss": batch_loss}``)
are only called when some callback overrides them: then fit runs the native loop one batch
at a time. Without such a callback each epoch stays one native call.

Callbacks' own counters (patience, best value ...) live in the callback objects and are not
part of a checkpoint.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "TerminateOnNaN", "CSVLogger",
           "LambdaCallback", "ReduceLROnPlateau", "LearningRateScheduler"]


class Callback:
    """Base class: override the hooks you need. ``self.model`` is the model being trained,
    ``self.params`` a dict with ``epochs``, ``steps`` (batches per epoch) and ``verbose``."""

    def __init__(self) -> None:
        self.model = None
        self.params: Dict[str, Any] = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: Dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def on_train_batch_begin(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def _wants_batch_hooks(self) -> bool:
        """True when a per-batch hook is overridden (fit then steps one batch at a time)."""
        cls = type(self)
        return (cls.on_train_batch_begin is not Callback.on_train_batch_begin
                or cls.on_train_batch_end is not Callback.on_train_batch_end)


# --- helpers -------------------------------------------------------------------------------
def _mode(mode, owner: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode


def _maximise(mode: str, monitor: str) -> bool:
    """'auto' maximises accuracy-like metrics (accuracy, auc, r2) and minimises the rest."""
    if mode != "auto":
        return mode == "max"
    name = monitor[4:] if monitor.startswith("val_") else monitor
    return name.endswith("acc") or "accuracy" in name or name in ("auc", "r2")


def _number(value, owner: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__}")
    return float(value)


def _non_negative_int(value, owner: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{owner}: {name} must be >= 0, got {value}")
    return int(value)


def _monitor(monitor, owner: str) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"{owner}: monitor must be a metric name such as 'val_loss', "
                         f"got {monitor!r}")
    return monitor


class _Monitoring(Callback):
    """Shared by the callbacks that watch one logged value."""

    def __init__(self, monitor: str, mode: str, owner: str) -> None:
        super().__init__()
        self.monitor = _monitor(monitor, owner)
        self.mode = _mode(mode, owner)
        self._max = _maximise(self.mode, self.monitor)
        self._warned = False

    def _current(self, logs) -> Optional[float]:
        logs = logs or {}
        if self.monitor not in logs:
            if not self._warned:
                self._warned = True
                warnings.warn(f"{type(self).__name__} is conditioned on metric "
                              f"{self.monitor!r}, which is not in the logs; available: "
                              f"{', '.join(sorted(logs)) or 'none'}", RuntimeWarning,
                              stacklevel=3)
            return None
        return float(logs[self.monitor])


def _weights(model) -> np.ndarray:
    return model._net.params_view().copy()


def _set_weights(model, flat: np.ndarray) -> None:
    model._net.params_view()[...] = flat


# --- callbacks -----------------------------------------------------------------------------
class EarlyStopping(_Monitoring):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs (Keras semantics). ``baseline``: keep waiting until the value also beats it.
    ``restore_best_weights``: at the end of training, put back the weights of the best epoch
    (bit-exactly). ``start_from_epoch``: epochs to ignore at the start (warm-up).
    After training, ``stopped_epoch`` (0 if not stopped) and ``best_epoch`` tell what happened."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: Optional[float] = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__(monitor, mode, "EarlyStopping")
        self.min_delta = abs(_number(min_delta, "EarlyStopping", "min_delta"))
        self.patience = _non_negative_int(patience, "EarlyStopping", "patience")
        self.verbose = verbose
        self.baseline = None if baseline is None else _number(baseline, "EarlyStopping",
                                                              "baseline")
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = _non_negative_int(start_from_epoch, "EarlyStopping",
                                                  "start_from_epoch")
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best: Optional[float] = None
        self.best_weights: Optional[np.ndarray] = None
        self.best_epoch = 0

    def _is_improvement(self, value: float, reference: Optional[float]) -> bool:
        if reference is None:
            return True
        if self._max:
            return value - self.min_delta > reference
        return value + self.min_delta < reference

    def on_train_begin(self, logs=None) -> None:
        self._reset()

    def on_epoch_end(self, epoch, logs=None) -> None:
        current = self._current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _weights(self.model)
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _weights(self.model)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping", file=sys.stderr)
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring the weights of epoch {self.best_epoch + 1}", file=sys.stderr)
            _set_weights(self.model, self.best_weights)


class ModelCheckpoint(_Monitoring):
    """Save the model at the end of epochs with :meth:`Sequential.save` (atomic writes).

    ``filepath`` may hold format fields: ``{epoch}`` (1-based, as Keras) and any logged value,
    e.g. ``"model-{epoch:02d}-{val_loss:.4f}.safetensors"``. ``save_best_only``: write only
    when ``monitor`` improves (``mode`` as in EarlyStopping).

    ``resumable=True`` (or a ``scheduler``) writes a full checkpoint with
    :func:`mlpcore.save_checkpoint` instead: weights, optimizer state, the scheduler's state,
    the model's random generator and the number of finished epochs, for exact resumption with
    :func:`mlpcore.load_checkpoint` and ``fit(initial_epoch=...)``. fit runs ModelCheckpoint
    after the other callbacks of an epoch, so the file holds the learning rate that the next
    epoch uses.
    """

    _run_last = True

    def __init__(self, filepath, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, mode: str = "auto", *, resumable: bool = False,
                 scheduler=None) -> None:
        super().__init__(monitor, mode, "ModelCheckpoint")
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"ModelCheckpoint: filepath must be a str or os.PathLike, "
                            f"got {type(filepath).__name__}")
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        if scheduler is not None:
            from .schedules import LRScheduler
            if not isinstance(scheduler, LRScheduler):
                raise TypeError("ModelCheckpoint: scheduler must be an mlpcore.schedules "
                                f"scheduler, got {type(scheduler).__name__}")
        self.scheduler = scheduler
        self.resumable = bool(resumable) or scheduler is not None
        self.best = -math.inf if self._max else math.inf
        self.saved: List[str] = []

    def _path(self, epoch: int, logs) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **(logs or {}))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} could not be "
                             f"formatted with epoch and the logs {sorted(logs or {})}: "
                             f"{exc!r}") from None

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.save_best_only:
            current = self._current(logs)
            if current is None:
                return
            better = current > self.best if self._max else current < self.best
            if not better:
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}", file=sys.stderr)
            self.best = current
        path = self._path(epoch, logs)
        if self.resumable:
            from .io import save_checkpoint
            save_checkpoint(self.model, path, epoch=epoch + 1, scheduler=self.scheduler)
        else:
            self.model.save(path)
        self.saved.append(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {path}", file=sys.stderr)


class TerminateOnNaN(Callback):
    """Stop training when a logged value of the epoch (loss, metric, val_*) is NaN or Inf.

    fit's native check is always on regardless: a non-finite training loss or gradient stops
    it with NonFiniteLossError at the failing batch. This callback adds the epoch-end check of
    every logged value (e.g. a validation loss that overflowed) and stops gracefully instead
    of raising. It has no per-batch hooks, so fit keeps its one-call-per-epoch fast path."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped_epoch: Optional[int] = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        bad = [k for k, v in (logs or {}).items() if not math.isfinite(float(v))]
        if bad:
            print(f"Epoch {epoch + 1}: invalid value of {', '.join(bad)}, terminating training",
                  file=sys.stderr)
            self.stopped_epoch = epoch
            self.model.stop_training = True


class CSVLogger(Callback):
    """One CSV row per epoch: ``epoch`` then the logged values (sorted by name), Keras style.
    ``append=True`` continues an existing file (no second header)."""

    def __init__(self, filename, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"CSVLogger: filename must be a str or os.PathLike, "
                            f"got {type(filename).__name__}")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator must be one character, got {separator!r}")
        self.filename = Path(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys: Optional[List[str]] = None
        self._write_header = True

    def on_train_begin(self, logs=None) -> None:
        if not self.filename.parent.exists():
            raise ValueError(f"CSVLogger: folder {str(self.filename.parent)!r} does not exist")
        self.keys = None
        if self.append and self.filename.exists() and self.filename.stat().st_size > 0:
            self._write_header = False
        else:
            self._write_header = True
            self.filename.write_text("")

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        with open(self.filename, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.sep, lineterminator="\n")
            if self._write_header:
                writer.writerow(["epoch", *self.keys])
                self._write_header = False
            writer.writerow([epoch, *(repr(float(logs[k])) if k in logs else "NA"
                                      for k in self.keys)])


class LambdaCallback(Callback):
    """A callback from plain functions: ``on_epoch_begin(epoch, logs)``,
    ``on_epoch_end(epoch, logs)``, ``on_train_batch_begin(batch, logs)``,
    ``on_train_batch_end(batch, logs)``, ``on_train_begin(logs)``, ``on_train_end(logs)``."""

    _HOOKS = ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
              "on_train_begin", "on_train_end")

    def __init__(self, on_epoch_begin: Optional[Callable] = None,
                 on_epoch_end: Optional[Callable] = None,
                 on_train_batch_begin: Optional[Callable] = None,
                 on_train_batch_end: Optional[Callable] = None,
                 on_train_begin: Optional[Callable] = None,
                 on_train_end: Optional[Callable] = None) -> None:
        super().__init__()
        given = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end, on_train_begin=on_train_begin,
                     on_train_end=on_train_end)
        for name, fn in given.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable, "
                                f"got {type(fn).__name__}")
        self._fns = given

    def _wants_batch_hooks(self) -> bool:
        return (self._fns["on_train_batch_begin"] is not None
                or self._fns["on_train_batch_end"] is not None)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        if self._fns["on_epoch_begin"]:
            self._fns["on_epoch_begin"](epoch, logs)

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self._fns["on_epoch_end"]:
            self._fns["on_epoch_end"](epoch, logs)

    def on_train_batch_begin(self, batch, logs=None) -> None:
        if self._fns["on_train_batch_begin"]:
            self._fns["on_train_batch_begin"](batch, logs)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self._fns["on_train_batch_end"]:
            self._fns["on_train_batch_end"](batch, logs)

    def on_train_begin(self, logs=None) -> None:
        if self._fns["on_train_begin"]:
            self._fns["on_train_begin"](logs)

    def on_train_end(self, logs=None) -> None:
        if self._fns["on_train_end"]:
            self._fns["on_train_end"](logs)


class ReduceLROnPlateau(_Monitoring):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by more
    than ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs; never below
    ``min_lr`` (Keras semantics). A LearningRateScheduler that sets the rate from a closed
    form overrides these reductions at its next step."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(monitor, mode, "ReduceLROnPlateau")
        self.factor = _number(factor, "ReduceLROnPlateau", "factor")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must lie in (0, 1) (it multiplies the "
                             f"learning rate), got {self.factor}")
        self.patience = _non_negative_int(patience, "ReduceLROnPlateau", "patience")
        self.verbose = verbose
        self.min_delta = abs(_number(min_delta, "ReduceLROnPlateau", "min_delta"))
        self.cooldown = _non_negative_int(cooldown, "ReduceLROnPlateau", "cooldown")
        self.min_lr = _number(min_lr, "ReduceLROnPlateau", "min_lr")
        if not (self.min_lr >= 0 and math.isfinite(self.min_lr)):
            raise ValueError(f"ReduceLROnPlateau: min_lr must be a non-negative learning rate, "
                             f"got {self.min_lr}")
        self._reset()

    def _reset(self) -> None:
        self.best = -math.inf if self._max else math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _better(self, value: float) -> bool:
        if self._max:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_train_begin(self, logs=None) -> None:
        self._reset()

    def on_epoch_end(self, epoch, logs=None) -> None:
        current = self._current(logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                opt = self.model.optimizer
                old = float(opt.lr)
                if old > self.min_lr:
                    opt.lr = max(old * self.factor, self.min_lr)
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate "
                              f"to {opt.lr:.4g}", file=sys.stderr)
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class LearningRateScheduler(Callback):
    """Step an :mod:`mlpcore.schedules` scheduler during fit: once per epoch (``interval=
    "epoch"``, after the epoch, as in PyTorch's loop) or once per batch (``interval="step"``,
    which makes fit run one native call per batch). The scheduler must be built on the
    model's optimizer."""

    def __init__(self, scheduler, interval: str = "epoch") -> None:
        super().__init__()
        from .schedules import LRScheduler
        if not isinstance(scheduler, LRScheduler):
            raise TypeError("LearningRateScheduler: scheduler must be an mlpcore.schedules "
                            f"scheduler, got {type(scheduler).__name__}")
        if interval not in ("epoch", "step"):
            raise ValueError(f"LearningRateScheduler: interval must be 'epoch' or 'step', "
                             f"got {interval!r}")
        self.scheduler = scheduler
        self.interval = interval

    def _wants_batch_hooks(self) -> bool:
        return self.interval == "step"

    def set_model(self, model) -> None:
        if model.optimizer is not self.scheduler.optimizer:
            raise ValueError("LearningRateScheduler: the scheduler is built on a different "
                             "optimizer than the model's (model.optimizer)")
        super().set_model(model)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.interval == "epoch":
            self.scheduler.step()

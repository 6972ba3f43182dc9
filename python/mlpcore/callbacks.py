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

fit fans every hook out through one :class:`CallbackList`, which also holds fit's own
callbacks: the progress report (:class:`ProgressBar` for ``verbose=1``, :class:`EpochLogger`
for ``verbose=2``) and the :class:`History` that fit returns.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ._validation import check_choice, check_instance, check_int, check_real, require
from .saving import save_checkpoint
from .schedules import LRScheduler

__all__ = ["Callback", "CallbackList", "History", "ProgressBar", "EpochLogger", "EarlyStopping",
           "ModelCheckpoint", "TerminateOnNaN", "CSVLogger", "LambdaCallback",
           "ReduceLROnPlateau", "LearningRateScheduler"]


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

    # Two hooks for the built-in progress reports, called whatever the batch hooks are:
    def _on_progress(self, batches_done: int, logs: Dict[str, float]) -> None:
        """After each native call of an epoch: ``logs["loss"]`` is the epoch's running mean."""

    def _on_epoch_done(self, epoch: int, logs: Optional[Dict[str, float]]) -> None:
        """After the epoch's batches, validation and logs, before ``on_epoch_end``; ``logs`` is
        None when the epoch failed (an exception is on its way)."""


class CallbackList:
    """Fans each hook out to every callback in order (Keras' CallbackList). fit builds one from
    the user's callbacks (those marked ``_run_last``, the checkpoints, after the others, so
    they hold what the others set for the next epoch), then the progress report (``verbose``:
    1 a tqdm bar, opened after the callbacks' ``on_epoch_begin``; 2 one line per epoch; both
    report in ``_on_epoch_done``, before any ``on_epoch_end``), then a :class:`History`, which
    so records what the callbacks added to the logs."""

    def __init__(self, callbacks=(), *, add_history: bool = False, verbose: int = 0,
                 model=None, params: Optional[Dict[str, Any]] = None) -> None:
        callbacks = list(callbacks)
        report = {1: [ProgressBar()], 2: [EpochLogger()]}.get(verbose, [])
        self.history: Optional[History] = History() if add_history else None
        self.callbacks: List[Callback] = [
            *[cb for cb in callbacks if not getattr(cb, "_run_last", False)],
            *[cb for cb in callbacks if getattr(cb, "_run_last", False)],
            *report, *([self.history] if add_history else [])]
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(dict(params or {}))

    def wants_batch_hooks(self) -> bool:
        return any(cb._wants_batch_hooks() for cb in self.callbacks)

    def on_train_begin(self, logs=None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)

    def _on_progress(self, batches_done: int, logs: Dict[str, float]) -> None:
        for cb in self.callbacks:
            cb._on_progress(batches_done, logs)

    def _on_epoch_done(self, epoch: int, logs: Optional[Dict[str, float]]) -> None:
        for cb in self.callbacks:
            cb._on_epoch_done(epoch, logs)


def _format_logs(logs: Dict[str, float]) -> Dict[str, str]:
    return {k: f"{v:.4g}" if k == "lr" else f"{v:.4f}" for k, v in logs.items()}


class ProgressBar(Callback):
    """fit's ``verbose=1``: a tqdm bar per epoch on stderr with the running loss, and the
    epoch's logs when it ends."""

    def __init__(self) -> None:
        super().__init__()
        self._bar = None
        self._shown = 0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        from tqdm.auto import tqdm  # loads in ~0.1 s: only when a bar is shown
        self._bar = tqdm(total=self.params["steps"], desc=f"Epoch {epoch + 1}/"
                         f"{self.params['epochs']}", unit="batch", leave=True, file=sys.stderr,
                         dynamic_ncols=True)
        self._shown = 0

    def _on_progress(self, batches_done, logs) -> None:
        self._bar.update(batches_done - self._shown)
        self._shown = batches_done
        self._bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def _on_epoch_done(self, epoch, logs) -> None:
        if self._bar is None:
            return
        try:
            if logs is not None:
                self._bar.set_postfix(_format_logs(logs))
        finally:
            self._bar.close()
            self._bar = None


class EpochLogger(Callback):
    """fit's ``verbose=2``: one line per epoch on stderr with the epoch's logs."""

    def _on_epoch_done(self, epoch, logs) -> None:
        if logs is not None:
            text = " - ".join(f"{k}: {v}" for k, v in _format_logs(logs).items())
            print(f"Epoch {epoch + 1}/{self.params['epochs']} - {text}", file=sys.stderr)


class History(Callback):
    """Per-epoch records, shaped like Keras' History: ``history.history["loss"]`` is a list.
    fit adds one as the last callback and returns it."""

    def __init__(self) -> None:
        super().__init__()
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._record(epoch, logs or {})

    def _record(self, epoch: int, logs: Dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"

    def plot(self, path=None, keys: Optional[Sequence[str]] = None):
        """Draw the curves with matplotlib (Agg, no window): one subplot per metric family
        (``loss`` with ``val_loss``, ``accuracy`` with ``val_accuracy``, ``lr`` ...) and, when
        the history holds per-layer gradient norms (``grad_norm/<layer>``), one subplot of
        those. ``keys`` limits the families (e.g. ``["loss"]``). Saves a PNG to ``path`` when
        given and returns the matplotlib Figure. Needs ``pip install mlpcore[plot]``."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            raise ImportError("History.plot needs matplotlib, an optional dependency of "
                              "mlpcore: pip install mlpcore[plot]") from None
        if not self.history:
            raise ValueError("History.plot: the history is empty (nothing was trained)")
        families: Dict[str, List[str]] = {}
        grad_keys = []
        for key in self.history:
            if key.startswith("grad_norm/"):
                grad_keys.append(key)
                continue
            families.setdefault(key[4:] if key.startswith("val_") else key, []).append(key)
        if keys is not None:
            if isinstance(keys, str):
                keys = [keys]
            available = [*families, *(["grad_norm"] if grad_keys else [])]
            unknown = [k for k in keys if k not in available]
            if unknown:
                raise ValueError(f"History.plot: keys {unknown} are not in the history; "
                                 f"available: {', '.join(available)}")
            families = {k: v for k, v in families.items() if k in keys}
            if "grad_norm" not in keys:
                grad_keys = []
        panels = len(families) + (1 if grad_keys else 0)
        if panels == 0:
            raise ValueError("History.plot: no keys to plot")
        if path is not None:
            folder = Path(path).parent
            if not folder.exists():
                raise ValueError(f"History.plot: folder {str(folder)!r} does not exist")
        fig = Figure(figsize=(5.0 * panels, 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        epochs = [e + 1 for e in self.epoch]
        for ax, (family, members) in zip(axes, families.items()):
            for key in members:
                ax.plot(epochs, self.history[key], marker="o" if len(epochs) < 30 else None,
                        markersize=3, label="validation" if key.startswith("val_") else "train")
            ax.set_title(family)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if family == "lr" and all(v > 0 for v in self.history[family]):
                ax.set_yscale("log")
            if len(members) > 1:
                ax.legend()
            ax.grid(alpha=0.3)
        if grad_keys:
            ax = axes[-1]
            for key in sorted(grad_keys, key=lambda k: (len(k), k)):
                ax.plot(epochs, self.history[key], label=f"layer {key.split('/', 1)[1]}")
            ax.set_title("gradient norm per layer")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if all(v > 0 for k in grad_keys for v in self.history[k]):
                ax.set_yscale("log")
            ax.legend(fontsize="small")
            ax.grid(alpha=0.3)
        if path is not None:
            fig.savefig(path, format="png", dpi=100)
        return fig


# --- helpers -------------------------------------------------------------------------------
def _maximise(mode: str, monitor: str) -> bool:
    """'auto' maximises accuracy-like metrics (accuracy, auc, r2) and minimises the rest."""
    if mode != "auto":
        return mode == "max"
    name = monitor[4:] if monitor.startswith("val_") else monitor
    return name.endswith("acc") or "accuracy" in name or name in ("auc", "r2")


class _Monitoring(Callback):
    """Shared by the callbacks that watch one logged value."""

    def __init__(self, monitor: str, mode: str, owner: str) -> None:
        super().__init__()
        require(isinstance(monitor, str) and bool(monitor), owner=owner, name="monitor",
                expected="a metric name such as 'val_loss'", value=repr(monitor))
        self.monitor = monitor
        self.mode = check_choice(mode, owner=owner, name="mode", choices=("auto", "min", "max"),
                                 expected="'auto', 'min' or 'max'")
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
        self.min_delta = abs(check_real(min_delta, owner="EarlyStopping", name="min_delta"))
        self.patience = check_int(patience, owner="EarlyStopping", name="patience", low=0,
                                  expected=">= 0")
        self.verbose = verbose
        self.baseline = None if baseline is None else check_real(
            baseline, owner="EarlyStopping", name="baseline")
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = check_int(start_from_epoch, owner="EarlyStopping",
                                          name="start_from_epoch", low=0, expected=">= 0")
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
            self.best_weights = self.model.params_view().copy()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.params_view().copy()
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
            self.model.params_view()[...] = self.best_weights


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
            check_instance(scheduler, LRScheduler, owner="ModelCheckpoint", name="scheduler",
                           expected="an mlpcore.schedules scheduler")
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
        self.factor = check_real(factor, owner="ReduceLROnPlateau", name="factor")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must lie in (0, 1) (it multiplies the "
                             f"learning rate), got {self.factor}")
        self.patience = check_int(patience, owner="ReduceLROnPlateau", name="patience", low=0,
                                  expected=">= 0")
        self.verbose = verbose
        self.min_delta = abs(check_real(min_delta, owner="ReduceLROnPlateau", name="min_delta"))
        self.cooldown = check_int(cooldown, owner="ReduceLROnPlateau", name="cooldown", low=0,
                                  expected=">= 0")
        self.min_lr = check_real(min_lr, owner="ReduceLROnPlateau", name="min_lr")
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
        check_instance(scheduler, LRScheduler, owner="LearningRateScheduler", name="scheduler",
                       expected="an mlpcore.schedules scheduler")
        check_choice(interval, owner="LearningRateScheduler", name="interval",
                     choices=("epoch", "step"), expected="'epoch' or 'step'")
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

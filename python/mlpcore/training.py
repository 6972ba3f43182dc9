"""Trainer: the fit loop over the native epoch call, with Keras' options and callbacks.

:class:`mlpcore.Sequential` inherits it. Each epoch runs natively (one call, or a few for a
progress bar, or one per batch for per-batch callbacks); the callbacks, the progress report
and the history are fanned out by one :class:`~mlpcore.callbacks.CallbackList`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from . import _core
from ._validation import (as_inputs, as_sample_weight, as_targets, check_choice, check_int,
                          check_list_of, check_real, is_int, is_real)
from .callbacks import Callback, CallbackList, History
from .distributed import fit_distributed
from .distributed import init as distributed_world
from .errors import NonFiniteLossError
from .grad_noise import gradient_noise
from .layers import Activation, ReLU, Sigmoid, Tanh, has_parameters
from .metrics import METRICS, accuracy, regression_metrics

__all__ = ["Trainer", "History", "fit", "diagnostic_logs", "regression_metrics", "METRICS"]

_PROGRESS_UPDATES = 20  # native calls per epoch when a progress bar is shown
_NATIVE_EPOCH_RUN = 1024  # epochs per native call of _fit_epochs' one-call path (at most)


@dataclass
class _FitData:
    """fit's validated arrays and loop settings."""
    x: np.ndarray
    y: np.ndarray
    weights: Optional[np.ndarray]  # sample x class weights in the model's dtype, or None
    validation: Optional[Tuple]    # (x_val, y_val, w_val or None)
    batch_size: int
    n_batches: int
    chunk: int                     # batches per native call
    per_batch: bool                # per-batch callback hooks
    train_metrics: Tuple[str, ...]
    diagnostics: bool


class Trainer:
    """fit for a compiled model. The model provides the native side through a few hooks:
    ``_train_batches`` (the native epoch call), ``_sync_optimizer``, ``_predict_array``,
    ``_set_diagnostics`` / ``_take_stats`` and ``_nonfinite_where``, besides ``evaluate``,
    ``dtype``, ``in_features``, ``out_features``, ``loss``, ``optimizer``, ``metrics`` and
    ``rng``."""

    stop_training = False

    def fit(self, x, y, *, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            validation_data=None, verbose: int = 1, callbacks=None,
            validation_split: float = 0.0, initial_epoch: int = 0, sample_weight=None,
            class_weight=None, diagnostics: bool = False, distributed: bool = False) -> History:
        """Train for ``epochs`` passes over (x, y) in batches of ``batch_size``.

        Each epoch runs natively (one call, or a few when a progress bar is shown): batches
        are drawn in a seeded order (``shuffle``), each is a full train_step. ``verbose``: 0
        silent, 1 progress bar, 2 one line per epoch. Stops with NonFiniteLossError, naming the
        epoch and step, if a loss or gradient becomes NaN/Inf (the weights keep the last finite
        step).

        Keras' options:

        * ``validation_data``: ``(x_val, y_val)`` or ``(x_val, y_val, val_sample_weight)``,
          evaluated after every epoch (``val_loss``, ``val_accuracy`` / ``val_mae``,
          ``val_r2``).
        * ``validation_split``: hold out the *last* fraction of (x, y) (before shuffling) for
          validation; ignored when ``validation_data`` is given.
        * ``callbacks``: :mod:`mlpcore.callbacks` objects. Per-batch hooks make each batch its
          own native call; otherwise epochs stay single native calls.
        * ``initial_epoch``: the epoch to start at (to resume; the loop runs
          ``range(initial_epoch, epochs)``).
        * ``sample_weight`` (n,) and ``class_weight`` ({class: weight}): multiplied into one
          weight per sample; the batch loss is the mean over the batch of ``w_i * loss_i``.
          ``class_weight`` is not applied to validation data.

        * ``diagnostics=True``: per-epoch means of natively computed per-layer statistics are
          added to the history (see :func:`diagnostic_logs`), with ``grad_norm_max`` (the
          largest per-step gradient norm of the epoch: spikes) and ``grad_noise`` /
          ``grad_noise_scale`` (:mod:`mlpcore.grad_noise`); costs an extra pass over the
          parameters and activations per step, one native call per batch and one
          full-batch gradient per epoch.
        * ``distributed=True``: data-parallel over the ranks of an MPI job (run under
          ``mpiexec``; see :mod:`mlpcore.distributed`): each global batch of ``batch_size``
          rows is split across the ranks, one allreduce per step; without MPI, plain fit.

        Returns the :class:`~mlpcore.callbacks.History`: each epoch's ``loss``, ``accuracy``
        (classification), the metrics asked for at compile (``mae``/``r2`` for regression: one
        predict over the training data at the end of the epoch), the validation values and
        ``lr``, the learning rate of the epoch's last batch.
        """
        self._require_compiled("fit")
        epochs = check_int(epochs, owner="fit", name="epochs")
        batch_size = check_int(batch_size, owner="fit", name="batch_size")
        check_choice(verbose, owner="fit", name="verbose", choices=(0, 1, 2),
                     expected="0, 1 or 2")
        initial_epoch = check_int(initial_epoch, owner="fit", name="initial_epoch", low=None)
        if not 0 <= initial_epoch < epochs:
            raise ValueError(f"fit: initial_epoch must lie in [0, epochs) = [0, {epochs}), "
                             f"got {initial_epoch}")
        validation_split = check_real(validation_split, owner="fit", name="validation_split")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must lie in [0, 1), got {validation_split}")
        user_callbacks = [] if callbacks is None else check_list_of(
            callbacks, Callback, owner="fit", name="callbacks", expected="a list of callbacks",
            item="an mlpcore.callbacks.Callback")
        data = self._fit_data(x, y, sample_weight, class_weight, validation_data,
                              validation_split, batch_size, verbose, user_callbacks,
                              bool(diagnostics))
        if distributed and distributed_world().size > 1:
            return fit_distributed(self, data, distributed_world(), epochs=epochs,
                                   initial_epoch=initial_epoch, shuffle=shuffle,
                                   callbacks=user_callbacks, verbose=verbose)
        cbs = CallbackList(user_callbacks, add_history=True, verbose=verbose, model=self,
                           params={"epochs": epochs, "steps": data.n_batches,
                                   "verbose": verbose})
        n = data.x.shape[0]
        order = np.empty(n, np.int64) if shuffle else None
        self.stop_training = False
        self._set_diagnostics(data.diagnostics)
        try:
            self._take_stats()  # statistics start with the epoch
            cbs.on_train_begin(None)
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch, None)
                if shuffle:  # one index buffer for all epochs (not two alive at a time)
                    order = _core.shuffled_indices(int(self.rng.integers(2**63)), n, out=order)
                logs = None
                try:
                    logs = self._fit_epoch(data, epoch, order, cbs)
                finally:
                    cbs._on_epoch_done(epoch, logs)
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            self._set_diagnostics(False)
        cbs.on_train_end(None)
        return cbs.history

    def _fit_epochs(self, x, y, *, epochs: int, batch_size: int, shuffle: bool,
                    sample_weight=None, end_epoch, plateau=None, x_finite: bool = False) -> None:
        """fit's training without its callbacks, logs and history, for drivers that keep their
        own per-epoch bookkeeping (the scikit-learn estimators): the same batches, shuffled
        from the same ``rng`` draws, so the weights come out as fit's. ``end_epoch(mean loss)``
        runs after each epoch; True stops.

        ``plateau=(scale, tol, best, patience, count)``, when end_epoch stops by scikit-learn's
        rule on ``loss / scale`` alone (see PlateauRule in network.hpp): the epochs then run in
        one native call, which applies the rule itself, and end_epoch is replayed on their
        losses afterwards (Python between epochs costs about as much as a small epoch).

        ``x_finite``: the caller has checked that x holds no NaN/Inf (a C-contiguous array of
        the model's dtype is then used without a second pass over it)."""
        data = self._fit_data(x, y, sample_weight, None, None, 0.0, batch_size, 0, [], False,
                              x_finite)
        n = data.x.shape[0]
        if plateau is not None and epochs > 0 and self._fit_epochs_natively(
                data, epochs, shuffle, end_epoch, plateau):
            return
        order = np.empty(n, np.int64) if shuffle else None
        for epoch in range(epochs):
            if shuffle:
                order = _core.shuffled_indices(int(self.rng.integers(2**63)), n, out=order)
            self._sync_optimizer()
            loss_sum, _, done, finite, bad_loss = self._train_batches(
                data.x, data.y, order, batch_size, 0, data.n_batches, data.weights)
            if not finite:
                raise self._nonfinite_error(epoch, done, bad_loss)
            if end_epoch(loss_sum / min(n, done * batch_size)):
                break

    def _fit_epochs_natively(self, data: _FitData, epochs: int, shuffle: bool, end_epoch,
                             plateau) -> bool:
        scale, tol, best, patience, count = plateau
        done = 0
        while done < epochs:  # in runs of a bounded size: seeds and losses for each run only
            run = min(epochs - done, _NATIVE_EPOCH_RUN)
            seeds, state = None, None
            if shuffle:  # the seeds the epoch loop would draw, one per epoch, in the same order
                state = self.rng.bit_generator.state
                seeds = self.rng.integers(2**63, size=run).astype(np.uint64)
            self._sync_optimizer()
            result = self._train_epochs(data.x, data.y, seeds, data.batch_size, run,
                                        (scale, tol, best, patience, count), data.weights)
            if result is None:  # a custom loss (known at the first run): the epoch loop
                if state is not None:
                    self.rng.bit_generator.state = state
                return False
            losses, finite, batches, bad_loss, _, interrupt, best, count = result
            if state is not None:  # the rng as if only the epochs begun had drawn their seeds
                ended_early = not finite or interrupt is not None
                self.rng.bit_generator.state = state
                self.rng.integers(2**63, size=min(run, len(losses) + ended_early))
            for loss in losses:
                if end_epoch(float(loss)):
                    return True
            if interrupt is not None:
                raise interrupt
            if not finite:
                raise self._nonfinite_error(done + len(losses), batches, bad_loss)
            done += run
        return True

    def _nonfinite_error(self, epoch: int, done: int, bad_loss: float) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"fit: the loss or a gradient became non-finite (loss={bad_loss}) at epoch "
            f"{epoch + 1}, step {done + 1}{self._nonfinite_where()}; training stopped and the "
            "weights hold the last finite step")

    def _fit_data(self, x, y, sample_weight, class_weight, validation_data, validation_split,
                  batch_size, verbose, callbacks, diagnostics, x_finite=False) -> _FitData:
        x = as_inputs(x, self.dtype, self.in_features, "fit", known_finite=x_finite)
        y = as_targets(y, self.loss, x.shape[0], self.out_features, self.dtype, "fit")
        sw = as_sample_weight(sample_weight, x.shape[0], self.dtype, "fit")
        cw = _class_weights(self, y, class_weight)
        validation = _check_validation(self, validation_data)
        if validation is None and validation_split > 0:
            split = int(x.shape[0] * (1.0 - validation_split))
            if split <= 0 or split >= x.shape[0]:
                raise ValueError(f"fit: validation_split={validation_split} leaves "
                                 f"{split} training and {x.shape[0] - split} validation samples "
                                 f"of {x.shape[0]}; both need at least one")
            validation = (x[split:], y[split:], None if sw is None else sw[split:])
            x, y = x[:split], y[:split]
            sw = None if sw is None else sw[:split]
            cw = None if cw is None else cw[:split]
        weights = None
        if sw is not None or cw is not None:
            combined = np.ones(x.shape[0]) if sw is None else sw.astype(np.float64)
            if cw is not None:
                combined = combined * cw
            weights = np.ascontiguousarray(combined, dtype=self.dtype)
        n_batches = math.ceil(x.shape[0] / batch_size)
        per_batch = any(cb._wants_batch_hooks() for cb in callbacks)
        # With a progress bar, control comes back to Python a few times per epoch; otherwise
        # the whole epoch runs in one native call; per-batch callbacks need one call per batch.
        if per_batch or diagnostics:  # diagnostics: every step's norm, for grad_norm_max
            chunk = 1
        else:
            chunk = max(1, n_batches // _PROGRESS_UPDATES) if verbose == 1 else n_batches
        wanted = [m for m in (getattr(self, "metrics", None) or []) if m in ("mae", "r2")]
        train_metrics = tuple(wanted) if not self.loss.classification else ()
        return _FitData(x, y, weights, validation, batch_size, n_batches, chunk, per_batch,
                        train_metrics, diagnostics)

    def _fit_epoch(self, data: _FitData, epoch: int, order, cbs: CallbackList
                   ) -> Dict[str, float]:
        """The epoch's batches (natively, ``data.chunk`` at a time) and its logs."""
        x, y, batch_size = data.x, data.y, data.batch_size
        n = x.shape[0]
        loss_sum, correct, done, norm_max = 0.0, 0, 0, 0.0
        while done < data.n_batches:
            if data.per_batch:
                cbs.on_train_batch_begin(done, None)
            self._sync_optimizer()
            part_loss, part_correct, part_done, finite, bad_loss = self._train_batches(
                x, y, order, batch_size, done, min(data.chunk, data.n_batches - done),
                data.weights)
            loss_sum += part_loss
            correct += part_correct
            done += part_done
            if data.diagnostics:
                norm_max = max(norm_max, self.last_grad_norm)
            if not finite:
                raise self._nonfinite_error(epoch, done, bad_loss)
            if done:
                cbs._on_progress(done, {"loss": loss_sum / min(n, done * batch_size)})
            if data.per_batch:
                rows = min(batch_size, n - (done - 1) * batch_size)
                cbs.on_train_batch_end(done - 1, {"loss": part_loss / rows})
                if self.stop_training:
                    break
        seen = min(n, done * batch_size)
        logs = {"loss": loss_sum / seen}
        if self.loss.classification:
            logs["accuracy"] = accuracy(correct, seen, self.loss, y)
        if data.train_metrics:
            scores = regression_metrics(self._predict_array(x), y)
            logs.update({k: scores[k] for k in data.train_metrics})
        if data.validation is not None:
            xv, yv, wv = data.validation
            val = self.evaluate(xv, yv, sample_weight=wv)
            logs.update({f"val_{k}": v for k, v in val.items()})
        logs["lr"] = float(self.optimizer.lr)
        if data.diagnostics:
            logs.update(diagnostic_logs(self, self._take_stats()), grad_norm_max=norm_max)
            logs.update(gradient_noise(self, x, y, batch_size, data.weights))
        return logs

    # --- what the model provides --------------------------------------------------------------
    def _train_batches(self, x, y, order, batch_size: int, first_batch: int, n_batches: int,
                       weights=None):
        """Train on batches ``first_batch ..`` of the epoch drawn in ``order`` (None: in
        order); returns (loss sum, correct count, batches done, finite, the bad loss)."""
        raise NotImplementedError

    def _predict_array(self, x: np.ndarray) -> np.ndarray:
        """predict on an array that is already in the model's form (as_inputs)."""
        raise NotImplementedError

    def _set_diagnostics(self, on: bool) -> None:
        raise NotImplementedError

    def _take_stats(self) -> Dict:
        """The per-step statistics accumulated since the last call (and reset them)."""
        raise NotImplementedError


def fit(model, x, y, **options) -> History:
    """``model.fit(x, y, **options)`` (kept for code that called the function)."""
    return model.fit(x, y, **options)


def _check_validation(model, validation_data):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise TypeError("fit: validation_data must be a tuple (x_val, y_val) or "
                        "(x_val, y_val, val_sample_weight)")
    xv = as_inputs(validation_data[0], model.dtype, model.in_features, "fit", "validation_data[0]")
    yv = as_targets(validation_data[1], model.loss, xv.shape[0], model.out_features, model.dtype,
                    "fit", "validation_data[1]")
    wv = None
    if len(validation_data) == 3:
        wv = as_sample_weight(validation_data[2], xv.shape[0], model.dtype, "fit",
                              "validation_data[2]")
    return xv, yv, wv


def _class_weights(model, y: np.ndarray, class_weight) -> Optional[np.ndarray]:
    """Per-sample weights (float64) from a {class: weight} dict, or None. The class of a row is
    its label, the argmax of its one-hot/probability row, or its rounded 0/1 target for a
    single-output binary loss; classes missing from the dict weigh 1 (Keras semantics)."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise TypeError(f"fit: class_weight must be a dict {{class: weight}}, "
                        f"got {type(class_weight).__name__}")
    if not model.loss.classification:
        raise ValueError(f"fit: class_weight needs a classification loss; the model's loss "
                         f"{model.loss.name!r} is a regression loss (use sample_weight)")
    if y.ndim == 1:
        classes, n_classes = y, model.out_features
    elif y.shape[1] > 1:
        classes, n_classes = y.argmax(axis=1), y.shape[1]
    else:
        classes, n_classes = np.rint(y[:, 0]).astype(np.int64), 2
    table = np.ones(n_classes, dtype=np.float64)
    for key, value in class_weight.items():
        if not is_int(key):
            raise ValueError(f"fit: class_weight keys must be class indices (ints), got {key!r}")
        if not 0 <= key < n_classes:
            raise ValueError(f"fit: class_weight names class {key}, outside the model's classes "
                             f"[0, {n_classes - 1}]")
        if not (is_real(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"fit: class_weight[{key}] must be a finite non-negative number, "
                             f"got {value!r}")
        table[int(key)] = float(value)
    return table[classes]


def diagnostic_logs(model, stats) -> Dict[str, float]:
    """Per-epoch means of the native per-step statistics: ``grad_norm`` and ``grad_norm_std``
    (the global pre-clip gradient norm and its spread across the epoch's batches); for each
    layer with parameters (plan index i) ``grad_norm/i``, ``weight_norm/i``, ``update_ratio/i``
    (|update| / |weights|); for each activation layer ``act_mean/i``, ``act_std/i``, and
    ``dead_frac/i`` (ReLU: units at 0 for a whole batch) or ``saturated_frac/i`` (Sigmoid,
    Tanh)."""
    steps, diag = stats["steps"], max(stats["diag_steps"], 1)
    if steps == 0:
        return {}
    mean = stats["grad_norm_sum"] / steps
    logs = {"grad_norm": mean,
            "grad_norm_std": math.sqrt(max(stats["grad_norm_sq_sum"] / steps - mean * mean, 0.0))}
    for layer in model.flat_layers:
        i = layer.index
        if has_parameters(layer):
            logs[f"grad_norm/{i}"] = stats["layer_grad_norm_sum"][i] / steps
            logs[f"weight_norm/{i}"] = stats["weight_norm_sum"][i] / diag
            logs[f"update_ratio/{i}"] = stats["update_ratio_sum"][i] / diag
        elif isinstance(layer, Activation):
            logs[f"act_mean/{i}"] = stats["act_mean_sum"][i] / diag
            logs[f"act_std/{i}"] = stats["act_std_sum"][i] / diag
            if isinstance(layer, ReLU):
                logs[f"dead_frac/{i}"] = stats["dead_frac_sum"][i] / diag
            if isinstance(layer, (Sigmoid, Tanh)):
                logs[f"saturated_frac/{i}"] = stats["saturated_frac_sum"][i] / diag
    return logs

"""The fit loop: epochs of shuffled batches, validation, callbacks, progress bar and history."""
from __future__ import annotations

import math
import numbers
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import _core
from ._validation import as_inputs, as_sample_weight, as_targets, check_positive_int

__all__ = ["History", "fit", "regression_metrics", "METRICS"]

_PROGRESS_UPDATES = 20  # native calls per epoch when a progress bar is shown


class History:
    """Per-epoch records, shaped like Keras' History: ``history.history["loss"]`` is a list."""

    def __init__(self) -> None:
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

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
            from pathlib import Path
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


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    """Mean absolute error and the coefficient of determination R² (averaged over outputs,
    scikit-learn's ``uniform_average``; an output with constant targets scores 1 when fitted
    exactly, else 0), computed in float64."""
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    t = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    err = p - t
    ss_res = np.sum(err * err, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                      np.where(ss_res == 0, 1.0, 0.0))
    return {"mae": float(np.mean(np.abs(err))), "r2": float(np.mean(r2))}


METRICS = ("accuracy", "mae", "r2")


def check_metrics(metrics, loss) -> List[str]:
    """compile's ``metrics``: a list of names from METRICS that apply to ``loss``."""
    if metrics is None:
        return []
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
        raise TypeError(f"compile: metrics must be a list of names, got {type(metrics).__name__}")
    out: List[str] = []
    for name in metrics:
        if not isinstance(name, str) or name.lower() not in METRICS:
            raise ValueError(f"compile: unknown metric {name!r} in metrics; valid names: "
                             f"{', '.join(METRICS)}")
        name = name.lower()
        if (name == "accuracy") != loss.classification:
            kind = "classification" if loss.classification else "regression"
            raise ValueError(f"compile: metric {name!r} does not apply to the {kind} loss "
                             f"{loss.name!r} (accuracy is for classification losses, mae and r2 "
                             "for regression losses)")
        if name not in out:
            out.append(name)
    return out


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
        if isinstance(key, bool) or not isinstance(key, numbers.Integral):
            raise ValueError(f"fit: class_weight keys must be class indices (ints), got {key!r}")
        if not 0 <= key < n_classes:
            raise ValueError(f"fit: class_weight names class {key}, outside the model's classes "
                             f"[0, {n_classes - 1}]")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"fit: class_weight[{key}] must be a finite non-negative number, "
                             f"got {value!r}")
        table[int(key)] = float(value)
    return table[classes]


def _check_split(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"fit: validation_split must be a number, got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"fit: validation_split must lie in [0, 1), got {value}")
    return value


def _check_callbacks(callbacks):
    from .callbacks import Callback
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"fit: callbacks must be a list of callbacks, "
                        f"got {type(callbacks).__name__}")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"fit: callbacks[{i}] must be an mlpcore.callbacks.Callback, "
                            f"got {type(cb).__name__}")
    # checkpoints last, so they hold what the other callbacks set for the next epoch
    return ([cb for cb in callbacks if not getattr(cb, "_run_last", False)]
            + [cb for cb in callbacks if getattr(cb, "_run_last", False)])


def _progress(total: int, epoch: int, epochs: int, verbose: int):
    if verbose != 1:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=True,
                file=sys.stderr, dynamic_ncols=True)


def diagnostic_logs(model, stats) -> Dict[str, float]:
    """Per-epoch means of the native per-step statistics: ``grad_norm`` and ``grad_norm_std``
    (the global pre-clip gradient norm and its spread across the epoch's batches); for each
    layer with parameters (plan index i) ``grad_norm/i``, ``weight_norm/i``, ``update_ratio/i``
    (|update| / |weights|); for each activation layer ``act_mean/i``, ``act_std/i``, and
    ``dead_frac/i`` (ReLU: units at 0 for a whole batch) or ``saturated_frac/i`` (Sigmoid,
    Tanh)."""
    from .layers import Activation, ReLU, Sigmoid, Tanh, _Parametrised

    steps, diag = stats["steps"], max(stats["diag_steps"], 1)
    if steps == 0:
        return {}
    mean = stats["grad_norm_sum"] / steps
    logs = {"grad_norm": mean,
            "grad_norm_std": math.sqrt(max(stats["grad_norm_sq_sum"] / steps - mean * mean, 0.0))}
    for layer in model.flat_layers:
        i = layer._index
        if isinstance(layer, _Parametrised):
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


def fit(model, x, y, *, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
        validation_data=None, verbose: int = 1, callbacks=None, validation_split: float = 0.0,
        initial_epoch: int = 0, sample_weight=None, class_weight=None,
        diagnostics: bool = False) -> History:
    """Train ``model`` for ``epochs`` passes over (x, y) in batches of ``batch_size``.

    Each epoch runs natively (one call, or a few when a progress bar is shown): batches are
    drawn in a seeded order (``shuffle``), each is a full train_step. ``verbose``: 0 silent,
    1 progress bar, 2 one line per epoch. Stops with NonFiniteLossError, naming the epoch and
    step, if a loss or gradient becomes NaN/Inf (the weights keep the last finite step).

    Keras' options:

    * ``validation_data``: ``(x_val, y_val)`` or ``(x_val, y_val, val_sample_weight)``,
      evaluated after every epoch (``val_loss``, ``val_accuracy`` / ``val_mae``, ``val_r2``).
    * ``validation_split``: hold out the *last* fraction of (x, y) (before shuffling) for
      validation; ignored when ``validation_data`` is given.
    * ``callbacks``: :mod:`mlpcore.callbacks` objects. Per-batch hooks make each batch its
      own native call; otherwise epochs stay single native calls.
    * ``initial_epoch``: the epoch to start at (to resume; the loop runs
      ``range(initial_epoch, epochs)``).
    * ``sample_weight`` (n,) and ``class_weight`` ({class: weight}): multiplied into one
      weight per sample; the batch loss is the mean over the batch of ``w_i * loss_i``.
      ``class_weight`` is not applied to validation data.

    * ``diagnostics=True``: per-epoch means of natively computed per-layer statistics are added
      to the history (see :func:`diagnostic_logs`); costs an extra pass over the parameters and
      activations per step.

    The history records each epoch's ``loss``, ``accuracy`` (classification), the metrics asked
    for at compile (``mae``/``r2`` for regression: one predict over the training data at the
    end of the epoch), the validation values and ``lr``, the learning rate of the epoch's last
    batch.
    """
    from .model import NonFiniteLossError

    model._require_compiled("fit")
    epochs = check_positive_int(epochs, "fit", "epochs")
    batch_size = check_positive_int(batch_size, "fit", "batch_size")
    if verbose not in (0, 1, 2):
        raise ValueError(f"fit: verbose must be 0, 1 or 2, got {verbose!r}")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral):
        raise TypeError(f"fit: initial_epoch must be an int, got {type(initial_epoch).__name__}")
    if not 0 <= initial_epoch < epochs:
        raise ValueError(f"fit: initial_epoch must lie in [0, epochs) = [0, {epochs}), "
                         f"got {initial_epoch}")
    initial_epoch = int(initial_epoch)
    validation_split = _check_split(validation_split)
    cbs = _check_callbacks(callbacks)
    x = as_inputs(x, model.dtype, model.in_features, "fit")
    y = as_targets(y, model.loss, x.shape[0], model.out_features, model.dtype, "fit")
    sw = as_sample_weight(sample_weight, x.shape[0], model.dtype, "fit")
    cw = _class_weights(model, y, class_weight)
    validation = _check_validation(model, validation_data)
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
        weights = np.ascontiguousarray(combined, dtype=model.dtype)
    n = x.shape[0]
    per_sample = 1 if (y.ndim == 1 or model.loss.name == "cross_entropy") else y.shape[1]
    n_batches = math.ceil(n / batch_size)
    wanted = [m for m in (getattr(model, "metrics", None) or []) if m in ("mae", "r2")]
    train_metrics = wanted if not model.loss.classification else []
    per_batch = any(cb._wants_batch_hooks() for cb in cbs)
    # With a progress bar, control comes back to Python a few times per epoch; otherwise the
    # whole epoch runs in one native call; per-batch callbacks need one call per batch.
    if per_batch:
        chunk = 1
    else:
        chunk = max(1, n_batches // _PROGRESS_UPDATES) if verbose == 1 else n_batches
    extra = () if weights is None else (weights,)
    history = History()
    order = np.empty(n, np.int64) if shuffle else None
    net = model._net
    if model.loss.custom is not None:
        from .custom_loss import custom_batches

        def run_batches(*args):
            return custom_batches(model, *args)
    else:
        run_batches = net.train_batches
    net.set_diagnostics(bool(diagnostics))
    net.take_stats()  # statistics start with the epoch
    model.stop_training = False
    for cb in cbs:
        cb.set_model(model)
        cb.set_params({"epochs": epochs, "steps": n_batches, "verbose": verbose})
    for cb in cbs:
        cb.on_train_begin(None)
    try:
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch, None)
            if shuffle:  # one index buffer for all epochs (not two alive while the next is drawn)
                order = _core.shuffled_indices(int(model.rng.integers(2**63)), n, out=order)
            bar = _progress(n_batches, epoch, epochs, verbose)
            loss_sum, correct, done = 0.0, 0, 0
            try:
                while done < n_batches:
                    if per_batch:
                        for cb in cbs:
                            cb.on_train_batch_begin(done, None)
                    model._sync_optimizer()
                    part_loss, part_correct, part_done, finite, bad_loss = run_batches(
                        x, y, order, batch_size, done, min(chunk, n_batches - done), *extra)
                    loss_sum += part_loss
                    correct += part_correct
                    done += part_done
                    if not finite:
                        raise NonFiniteLossError(
                            f"fit: the loss or a gradient became non-finite (loss={bad_loss}) at "
                            f"epoch {epoch + 1}, step {done + 1}{model._nonfinite_where()}; training "
                            "stopped and the weights hold the last finite step")
                    if bar is not None:
                        bar.update(part_done)
                        bar.set_postfix(loss=f"{loss_sum / min(n, done * batch_size):.4f}",
                                        refresh=False)
                    if per_batch:
                        rows = min(batch_size, n - (done - 1) * batch_size)
                        batch_logs = {"loss": part_loss / rows}
                        for cb in cbs:
                            cb.on_train_batch_end(done - 1, batch_logs)
                        if model.stop_training:
                            break
                seen = min(n, done * batch_size)
                logs = {"loss": loss_sum / seen}
                if model.loss.classification:
                    logs["accuracy"] = correct / (seen * per_sample)
                if train_metrics:
                    scores = regression_metrics(net.predict(x), y)
                    logs.update({k: scores[k] for k in train_metrics})
                if validation is not None:
                    xv, yv, wv = validation
                    val = model.evaluate(xv, yv, sample_weight=wv)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                logs["lr"] = float(model.optimizer.lr)
                if diagnostics:
                    logs.update(diagnostic_logs(model, net.take_stats()))
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" if k == "lr" else f"{v:.4f}"
                                     for k, v in logs.items()})
            finally:
                if bar is not None:
                    bar.close()
            if verbose == 2:
                text = " - ".join(f"{k}: {v:.4g}" if k == "lr" else f"{k}: {v:.4f}"
                                  for k, v in logs.items())
                print(f"Epoch {epoch + 1}/{epochs} - {text}", file=sys.stderr)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            history._record(epoch, logs)
            if model.stop_training:
                break
    finally:
        net.set_diagnostics(False)
    for cb in cbs:
        cb.on_train_end(None)
    return history

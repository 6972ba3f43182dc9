"""Data-parallel training over MPI (mpi4py): every rank computes the gradients of its shard of
each global batch, one in-place allreduce sums them, every rank applies the same update.

Run a script under a launcher (``mpiexec -n 4 python train.py``, ``srun``, or
``mlpcore train --ranks 4``) and call ``model.fit(..., distributed=True)``. Outside a launcher
(no MPI environment variables) the communicator is a size-1 no-op and mpi4py is never
imported, so single-process code runs unchanged.

Choices (documented in the README):

* Uneven shards: a global batch of B rows is split into contiguous shards of
  ``B * r // size`` rows; each rank scales its mean-loss gradient by ``rows_r / B`` before the
  sum, so the reduced gradient is the single-process one (sample weights and L1/L2 terms
  included) and a rank with an empty shard contributes zeros.
* Failure: a rank whose step raises fills its gradients with NaN instead of skipping the
  allreduce, so no rank blocks; the update then fails on every rank alike and one small
  allgather tells every rank which rank failed and why (:class:`DistributedError`). Outside
  fit, :func:`init` installs an excepthook that aborts the job (``MPI_Abort``) on an uncaught
  exception, as ``python -m mpi4py`` does; a killed rank ends the job through the launcher.
* Callbacks run on rank 0 only; after each hook rank 0 broadcasts ``stop_training`` and the
  optimizer's hyper-parameters (so learning-rate callbacks act on every rank).
* BatchNorm1d normalises with each rank's local batch statistics (as DDP); the running
  statistics are averaged across ranks after every epoch so the replicas stay identical.
  ``BatchNorm1d(synchronized=True)`` uses the global batch's statistics instead: its sums are
  allreduced during the passes (:class:`_StatSync`), so N ranks train like one process.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

import numpy as np

from . import _core
from .callbacks import CallbackList
from .errors import NonFiniteLossError
from .layers import BatchNorm1d
from .metrics import predictions_per_row

__all__ = ["Communicator", "DistributedError", "init", "launched", "broadcast_model",
           "allreduce_gradients", "fit_distributed", "CHUNK_BYTES"]

#: the largest piece one Allreduce/Bcast call moves (25 MiB measured faster than one big call)
CHUNK_BYTES = 25 * 2**20
_PROGRESS_UPDATES = 20  # loss reductions per epoch for rank 0's progress bar
# Variables MPI launchers set in every rank (MPICH/Intel PMI, Open MPI, PMIx, MVAPICH).
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                  "MV2_COMM_WORLD_SIZE")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE",
                    "SLURM_NTASKS_PER_NODE")


class DistributedError(RuntimeError):
    """A rank failed during distributed training; raised on every rank."""


def launched() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, srun)."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


class Communicator:
    """The ranks of a job, wrapping an mpi4py communicator; with ``comm=None`` and no MPI
    launcher (or mpi4py absent outside a launcher), a size-1 no-op.

    Array operations use mpi4py's buffer interface in place, in pieces of at most
    :data:`CHUNK_BYTES`, never the pickling lower-case calls.
    """

    def __init__(self, comm=None) -> None:
        self.mpi = None
        if comm is None and launched():
            try:
                from mpi4py import MPI
            except ImportError:
                raise ImportError("mlpcore.distributed: this process was started by an MPI "
                                  "launcher but mpi4py is not installed: pip install "
                                  "'mlpcore[mpi]'") from None
            comm = MPI.COMM_WORLD
        if comm is not None:
            from mpi4py import MPI
            self.mpi = MPI
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()

    @property
    def local_size(self) -> int:
        """Ranks on this node (from the launcher's variables, else a shared-memory split)."""
        for var in _LOCAL_SIZE_VARS:
            value = os.environ.get(var, "")
            if value.isdigit() and int(value) > 0:
                return int(value)
        if self.comm is None:
            return 1
        node = self.comm.Split_type(self.mpi.COMM_TYPE_SHARED)
        try:
            return node.Get_size()
        finally:
            node.Free()

    def allreduce_(self, array: np.ndarray) -> np.ndarray:
        """Sum ``array`` (contiguous) over the ranks in place."""
        if self.size > 1:
            for piece in _pieces(array):
                self.comm.Allreduce(self.mpi.IN_PLACE, piece, op=self.mpi.SUM)
        return array

    def broadcast_(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite ``array`` (contiguous) with rank ``root``'s values."""
        if self.size > 1:
            for piece in _pieces(array):
                self.comm.Bcast(piece, root=root)
        return array

    def sum(self, values) -> np.ndarray:
        """Sum a few numbers over the ranks (float64)."""
        return self.allreduce_(np.array(values, dtype=np.float64))

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """A small picklable object from ``root`` (settings, not arrays)."""
        return obj if self.size == 1 else self.comm.bcast(obj, root=root)

    def allgather_object(self, obj: Any) -> List[Any]:
        return [obj] if self.size == 1 else self.comm.allgather(obj)

    def barrier(self) -> None:
        if self.size > 1:
            self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        if self.size > 1:
            self.comm.Abort(code)

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size})"


def _pieces(array: np.ndarray):
    if not array.flags.c_contiguous:
        raise ValueError("mlpcore.distributed: arrays must be C-contiguous to be reduced in "
                         "place")
    flat = array.reshape(-1)
    step = max(1, CHUNK_BYTES // max(flat.itemsize, 1))
    for start in range(0, flat.size, step):
        yield flat[start:start + step]


_WORLD: Optional[Communicator] = None


def init(*, abort_on_exception: bool = True, set_threads: bool = True) -> Communicator:
    """The world communicator (created once). Under a launcher with more than one rank:
    ``set_threads`` gives each rank ``cores // ranks on the node`` OpenMP threads unless
    ``OMP_NUM_THREADS`` is set, and ``abort_on_exception`` installs a ``sys.excepthook`` that
    prints the traceback and aborts the whole job, so an exception on one rank never leaves
    the others waiting in a collective."""
    global _WORLD
    if _WORLD is None:
        _WORLD = Communicator()
        if _WORLD.size > 1:
            if set_threads and "OMP_NUM_THREADS" not in os.environ:
                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                    else (os.cpu_count() or 1)
                _core.set_num_threads(max(1, cores // _WORLD.local_size))
            if abort_on_exception:
                _install_abort_hook(_WORLD)
    return _WORLD


def _install_abort_hook(comm: Communicator) -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        sys.stderr.write(f"mlpcore.distributed: uncaught {kind.__name__} on rank {comm.rank}; "
                         "aborting all ranks\n")
        sys.stderr.flush()
        comm.abort(1)

    sys.excepthook = hook


# --- state and gradients ----------------------------------------------------------------------
def broadcast_model(model, comm: Optional[Communicator] = None, root: int = 0, *,
                    training_state: bool = True) -> None:
    """Make every rank's model equal rank ``root``'s: parameters and BatchNorm running
    statistics, and with ``training_state`` the optimizer's state, step count and
    hyper-parameters and the model's random generator. Each rank's dropout generator is
    derived from root's and the rank (masks differ per rank, reproducibly; rank 0 keeps
    root's sequence)."""
    comm = comm or init()
    if comm.size == 1:
        return
    comm.broadcast_(model.params_view(), root)
    for layer in model.flat_layers:
        if isinstance(layer, BatchNorm1d):
            comm.broadcast_(layer.running_mean, root)
            comm.broadcast_(layer.running_var, root)
    if not training_state:
        return
    if model.optimizer is not None:
        for view in model.optimizer_state_views().values():
            comm.broadcast_(view, root)
        _set_hyper(model, comm.broadcast_object(dict(model.optimizer.param_groups[0]), root))
        model.optimizer_steps = comm.broadcast_object(model.optimizer_steps, root)
    model.rng.bit_generator.state = comm.broadcast_object(model.rng.bit_generator.state, root)
    dropout = comm.broadcast_object(model.dropout_rng_state, root)
    if comm.rank != 0:
        words = np.random.SeedSequence([*dropout, comm.rank]).generate_state(4, np.uint64)
        dropout = [int(w) for w in words]
    model.dropout_rng_state = dropout


def allreduce_gradients(model, comm: Optional[Communicator] = None,
                        scale: Optional[float] = None) -> np.ndarray:
    """Sum the whole gradient arena over the ranks in place, after multiplying it by
    ``scale`` (default ``1 / size``: the average of equal shards). Then
    ``model.apply_gradients()`` applies the update (clipping sees the reduced gradient)."""
    comm = comm or init()
    grads = model.grads_view()
    factor = 1.0 / comm.size if scale is None else float(scale)
    if factor != 1.0:
        grads *= factor
    return comm.allreduce_(grads)


def _set_hyper(model, hyper: Dict[str, Any]) -> None:
    group = model.optimizer.param_groups[0]
    for key, value in hyper.items():
        if group.get(key) != value:
            group[key] = value


def _average_batchnorm(model, comm: Communicator) -> None:
    for layer in model.flat_layers:
        if not isinstance(layer, BatchNorm1d):
            continue
        for view in (layer.running_mean, layer.running_var):
            if layer.synchronized:
                # every rank computed the same statistics, except a rank whose shard of a
                # step was empty (it skipped that forward pass); the last rank never has one
                comm.broadcast_(view, comm.size - 1)
            else:
                comm.allreduce_(view)
                view /= comm.size


def _shard(start: int, stop: int, comm: Communicator):
    rows = stop - start
    return start + rows * comm.rank // comm.size, start + rows * (comm.rank + 1) // comm.size


class _StatSync:
    """The reducer fit installs for BatchNorm1d(synchronized=True) layers (see
    ``Sequential.set_batchnorm_reducer``). It counts its calls in a step, so that a rank whose
    step ended early (an exception, a non-finite loss, an empty shard) makes the step's
    remaining calls itself and no rank waits forever in an allreduce."""

    def __init__(self, model, comm: Communicator) -> None:
        widths = [layer.num_features for layer in model.flat_layers
                  if isinstance(layer, BatchNorm1d) and layer.synchronized]
        # a step's calls: (count, kind) per layer forward, then per layer backward in reverse
        self.calls = [c for w in widths for c in ((w + 1, 0), (w, 1))]
        self.calls += [(2 * w + 1, 2) for w in reversed(widths)]
        self.comm, self.scale, self.done = comm, 1.0, 0

    def __bool__(self) -> bool:
        return bool(self.calls)

    def start(self, scale: float) -> None:
        """A new step; scale = this rank's share of the global batch's rows."""
        self.scale, self.done = scale, 0

    def __call__(self, values: np.ndarray, kind: int) -> None:
        self.done += 1
        if kind == 2:
            # dy is this rank's mean-loss gradient, rows_global / rows_local times the global
            # one: bring the sums to the global scale, add them, and take them back.
            values[:-1] *= self.scale
            self.comm.allreduce_(values)
            if self.scale:
                values[:-1] /= self.scale
        else:
            self.comm.allreduce_(values)

    def finish(self, fill: float) -> None:
        """The calls this rank's step did not make, with every value ``fill`` (0: an empty
        shard adds nothing; NaN: a failed step poisons every rank's step)."""
        for count, kind in self.calls[self.done:]:
            self(np.full(count, fill), kind)


# --- fit ----------------------------------------------------------------------------------------
class _Root:
    """Runs callback hooks on rank 0 and shares their outcome (an error, stop_training, the
    optimizer's hyper-parameters) with every rank, so no rank runs ahead."""

    def __init__(self, model, comm: Communicator, cbs: CallbackList) -> None:
        self.model, self.comm, self.cbs = model, comm, cbs

    def run(self, hook, *args) -> None:
        outcome, error = None, None
        if self.comm.rank == 0:
            try:
                hook(*args)
                outcome = (None, bool(self.model.stop_training),
                           dict(self.model.optimizer.param_groups[0]))
            except Exception as exc:  # shared below, re-raised on rank 0
                outcome = (f"{type(exc).__name__}: {exc}", True, None)
                error = exc
        outcome = self.comm.broadcast_object(outcome)
        if self.comm.rank != 0 and outcome[0] is None:
            hook(*args)  # this rank's own list: only its History
        if outcome[0] is not None:
            if self.comm.rank == 0:
                raise error
            raise DistributedError(f"rank 0 failed in a callback: {outcome[0]}")
        self.model.stop_training = outcome[1]
        _set_hyper(self.model, outcome[2])


def fit_distributed(model, data, comm: Communicator, *, epochs: int, initial_epoch: int,
                    shuffle: bool, callbacks, verbose: int):
    """The loop of ``model.fit(..., distributed=True)`` with ``data`` as Trainer._fit_data
    prepared it: every rank passes the whole data set (each reads only its shards); returns
    the History (the same on every rank)."""
    if data.diagnostics:
        raise ValueError("fit: diagnostics=True is not supported with distributed=True")
    sync = _StatSync(model, comm)
    # Every rank must run the same steps (else collectives would pair up wrongly and hang).
    plans = comm.allgather_object((data.x.shape[0], data.batch_size, epochs, initial_epoch,
                                   bool(shuffle), model.num_params, sync.calls))
    if any(plan != plans[0] for plan in plans):
        raise ValueError("fit(distributed=True): every rank must pass the same data and "
                         "settings (rows, batch_size, epochs, initial_epoch, shuffle, model "
                         f"size, synchronised BatchNorm widths); got {plans} by rank")
    if sync and model.detect_anomaly:
        raise ValueError("fit(distributed=True): BatchNorm1d(synchronized=True) cannot be "
                         "combined with detect_anomaly=True (a pass stopped by the sentinel "
                         "would leave the other ranks waiting)")
    rows = data.x.shape[0]
    if sync and (data.batch_size == 1 or rows % data.batch_size == 1):
        raise ValueError(f"fit(distributed=True): {rows} rows in batches of {data.batch_size} "
                         "leave a global batch of 1 sample, and BatchNorm1d needs more than 1 "
                         "sample per batch in training; choose another batch_size")
    broadcast_model(model, comm)
    if sync:
        model.set_batchnorm_reducer(sync)
    try:
        return _fit_loop(model, data, comm, sync, epochs=epochs, initial_epoch=initial_epoch,
                         shuffle=shuffle, callbacks=callbacks, verbose=verbose)
    finally:
        if sync:
            model.set_batchnorm_reducer(None)


def _fit_loop(model, data, comm: Communicator, sync: _StatSync, *, epochs: int,
              initial_epoch: int, shuffle: bool, callbacks, verbose: int):
    root_settings = comm.broadcast_object(
        (verbose, CallbackList(callbacks, model=model).wants_batch_hooks()))
    verbose, per_batch = root_settings
    params = {"epochs": epochs, "steps": data.n_batches, "verbose": verbose}
    cbs = CallbackList(callbacks if comm.rank == 0 else [], add_history=True,
                       verbose=verbose if comm.rank == 0 else 0, model=model, params=params)
    root = _Root(model, comm, cbs)
    n = data.x.shape[0]
    order = np.empty(n, np.int64) if shuffle else None
    model.stop_training = False
    root.run(cbs.on_train_begin, None)
    for epoch in range(initial_epoch, epochs):
        root.run(cbs.on_epoch_begin, epoch, None)
        if shuffle:  # the same generator on every rank: the same order
            order = _core.shuffled_indices(int(model.rng.integers(2**63)), n, out=order)
        logs = None
        try:
            logs = _fit_epoch(model, data, epoch, order, cbs, comm, root, per_batch, sync)
        finally:
            cbs._on_epoch_done(epoch, logs)
        root.run(cbs.on_epoch_end, epoch, logs)
        if model.stop_training:
            break
    root.run(cbs.on_train_end, None)
    broadcast_model(model, comm, training_state=False)  # e.g. restore_best_weights on rank 0
    return cbs.history


def _fit_epoch(model, data, epoch: int, order, cbs: CallbackList, comm: Communicator,
               root: _Root, per_batch: bool, sync: _StatSync) -> Dict[str, float]:
    x, y, w, batch_size = data.x, data.y, data.weights, data.batch_size
    n = x.shape[0]
    grads = model.grads_view()
    classification = model.loss.classification
    every = max(1, data.n_batches // _PROGRESS_UPDATES)
    local = np.zeros(2)  # this rank's weighted loss sum and correct count since the last report
    total = np.zeros(2)
    done = 0
    for batch in range(data.n_batches):
        if per_batch:
            root.run(cbs.on_train_batch_begin, batch, None)
        start, stop = batch * batch_size, min(n, (batch + 1) * batch_size)
        lo, hi = _shard(start, stop, comm)
        error, fill = None, 0.0
        sync.start((hi - lo) / (stop - start))
        try:
            if hi > lo:
                rows = order[lo:hi] if order is not None else slice(lo, hi)
                loss, correct = model.compute_gradients(
                    x[rows], y[rows], sample_weight=None if w is None else w[rows],
                    return_correct=True)
                if np.isfinite(loss):
                    grads *= (hi - lo) / (stop - start)
                else:  # the backward pass did not run: the arena holds the last step's
                    grads[...] = fill = np.nan
                local += (loss * (hi - lo), correct)
            else:  # fewer rows than ranks: this rank adds nothing to the sum
                grads[...] = 0
        except Exception as exc:  # poison the sum so every rank stops after the allreduce
            error = exc
            grads[...] = fill = np.nan
        sync.finish(fill)
        comm.allreduce_(grads)
        try:
            model.apply_gradients()
        except NonFiniteLossError:
            _raise_shared(comm, error, epoch, batch)
        done += 1
        if done % every == 0 or done == data.n_batches or per_batch:
            step_loss = comm.sum(local)
            total += step_loss
            local[:] = 0
            if comm.rank == 0:
                cbs._on_progress(done, {"loss": total[0] / min(n, done * batch_size)})
        if per_batch:
            root.run(cbs.on_train_batch_end, batch, {"loss": step_loss[0] / (stop - start)})
            if model.stop_training:
                break
    seen = min(n, done * batch_size)
    logs = {"loss": float(total[0] / seen)}
    if classification:
        logs["accuracy"] = float(total[1] / (seen * predictions_per_row(model.loss, y)))
    _average_batchnorm(model, comm)
    if data.train_metrics:
        scores = _sharded_scores(model, x, y, None, comm, epoch)
        logs.update({k: scores[k] for k in data.train_metrics})
    if data.validation is not None:
        scores = _sharded_scores(model, *data.validation, comm, epoch)
        logs.update({f"val_{k}": v for k, v in scores.items()})
    logs["lr"] = float(model.optimizer.lr)
    return logs


def _raise_shared(comm: Communicator, error, epoch: int, batch: int) -> None:
    """After a failed update (the same on every rank): say which rank raised, if one did."""
    where = f"epoch {epoch + 1}, step {batch + 1}"
    reports = comm.allgather_object(None if error is None else
                                     f"{type(error).__name__}: {error}")
    failed = [(r, text) for r, text in enumerate(reports) if text is not None]
    if error is not None:
        raise DistributedError(f"rank {comm.rank} failed at {where}: {reports[comm.rank]}; "
                               "every rank stopped") from error
    if failed:
        rank, text = failed[0]
        raise DistributedError(f"rank {rank} failed at {where}: {text}; every rank stopped")
    raise NonFiniteLossError(f"fit: the loss or a gradient became non-finite at {where} (after "
                             "the allreduce, on every rank); training stopped and the weights "
                             "hold the last finite step")


def _sharded_scores(model, x, y, w, comm: Communicator, epoch: int) -> Dict[str, float]:
    """evaluate's numbers over (x, y), each rank taking a contiguous shard: the loss
    and accuracy from sums, MAE and R² from per-output sums of the predictions."""
    n = x.shape[0]
    lo, hi = _shard(0, n, comm)
    classification = model.loss.classification
    k = 1 if y.ndim == 1 else y.shape[1]
    sums = np.zeros(3 + 4 * k)  # error flag, loss sum, accuracy sum | |e|, e², t, t² per output
    error = None
    try:
        if hi > lo:
            part = model.evaluate(x[lo:hi], y[lo:hi],
                                  sample_weight=None if w is None else w[lo:hi])
            sums[1] = part["loss"] * (hi - lo)
            if classification:
                sums[2] = part["accuracy"] * (hi - lo)
            else:
                t = np.asarray(y[lo:hi], np.float64).reshape(hi - lo, -1)
                e = np.asarray(model.predict(x[lo:hi]), np.float64).reshape(hi - lo, -1) - t
                sums[3:] = np.concatenate([np.abs(e).sum(0), (e * e).sum(0), t.sum(0),
                                           (t * t).sum(0)])
    except Exception as exc:
        sums[0] = 1
        error = exc
    sums = comm.sum(sums)
    if sums[0]:
        if error is not None:
            raise DistributedError(f"rank {comm.rank} failed evaluating at epoch {epoch + 1}: "
                                   f"{type(error).__name__}: {error}") from error
        raise DistributedError(f"a rank failed evaluating at epoch {epoch + 1}; every rank "
                               "stopped")
    out = {"loss": float(sums[1] / n)}
    if classification:
        out["accuracy"] = float(sums[2] / n)
        return out
    abs_e, sq_e, t, t2 = sums[3:].reshape(4, k)
    ss_tot = np.maximum(t2 - t * t / n, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - sq_e / np.where(ss_tot > 0, ss_tot, 1.0),
                      np.where(sq_e == 0, 1.0, 0.0))
    out["mae"] = float(abs_e.sum() / (n * k))
    out["r2"] = float(np.mean(r2))
    return out

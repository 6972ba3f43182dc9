"""Run by tests/test_distributed.py under ``mpiexec -n N`` (and, for the single-process
reference, imported): small float64 trainings whose results rank 0 writes to an .npz file.

Usage: python mpi_worker.py train OUT | sync-bn OUT | local-bn OUT | fail-in-fit
       | sync-bn-fail | fail-outside-fit | resume-save CKPT | resume-load CKPT OUT
"""
import os
import signal
import sys

import numpy as np

import mlpcore as mc
from mlpcore import distributed

# 70 rows in batches of 16: 5 steps an epoch, the last of 6 rows (an uneven split over 4 ranks
# and, with 3 ranks, shards of 2); 4 epochs = 20 steps.
N_ROWS, BATCH, EPOCHS = 70, 16, 4
CONFIGS = [("sgd", None), ("sgd", 0.05), ("adam", None), ("adam", 0.05)]


def data():
    rng = np.random.default_rng(42)
    x = rng.normal(size=(N_ROWS, 6))
    y = rng.integers(0, 3, size=N_ROWS)
    w = rng.uniform(0.5, 2.0, size=N_ROWS)
    xv, yv = rng.normal(size=(23, 6)), rng.integers(0, 3, size=23)
    return x, y, w, xv, yv


def build(optimizer: str, clip):
    model = mc.Sequential([mc.Dense(6, 16), mc.Tanh(), mc.Dense(16, 8), mc.ReLU(),
                           mc.Dense(8, 3)], dtype="float64", seed=7)
    opt = mc.optim.SGD(lr=0.1, momentum=0.9) if optimizer == "sgd" else mc.optim.Adam(lr=0.01)
    model.compile(loss="cross_entropy", optimizer=opt, clip_norm=clip)
    return model


def train(optimizer: str, clip, distributed_fit: bool, epochs: int = EPOCHS, model=None,
          initial_epoch: int = 0):
    x, y, w, xv, yv = data()
    model = model or build(optimizer, clip)
    history = model.fit(x, y, epochs=epochs, batch_size=BATCH, sample_weight=w,
                        validation_data=(xv, yv), verbose=0, distributed=distributed_fit,
                        initial_epoch=initial_epoch)
    return model, history.history


def results(model, history, prefix: str):
    out = {f"{prefix}params": model.params_view().copy()}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        out[f"{prefix}{key}"] = np.array(history[key])
    return out


def with_callbacks(folder: str, rank: int):
    """Training whose callbacks change the learning rate every step, stop early and restore
    the best weights, and write checkpoints and a CSV log (named by rank: only rank 0's may
    appear)."""
    x, y, w, xv, yv = data()
    model = build("adam", None)
    cbs = [mc.callbacks.LearningRateScheduler(mc.schedules.StepLR(model.optimizer, 2, 0.7),
                                              interval="step"),
           mc.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0,
                                      restore_best_weights=True),
           mc.callbacks.ModelCheckpoint(f"{folder}/rank{rank}-{{epoch}}.safetensors",
                                        monitor="loss"),
           mc.callbacks.CSVLogger(f"{folder}/rank{rank}.csv")]
    history = model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, validation_data=(xv, yv),
                        verbose=0, callbacks=cbs, distributed=True)
    return model, history.history


def with_dropout_and_batchnorm():
    x, y, w, xv, yv = data()
    model = mc.Sequential([mc.Dense(6, 16), mc.BatchNorm1d(16), mc.ReLU(), mc.Dropout(0.3),
                           mc.Dense(16, 3)], dtype="float64", seed=3)
    model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.1))
    model.fit(x, y, epochs=2, batch_size=BATCH, validation_data=(xv, yv), verbose=0,
              distributed=True)
    return model


# (optimizer, clip_norm, batch size, tolerance against one process). Batch 17 leaves a last
# batch of 2 rows: with 3 ranks one shard is empty. BatchNorm over 2 rows is ill-conditioned
# (xhat = +-1, so its input gradient is a difference of nearly equal terms, ~0) and magnifies
# the rounding of the per-rank partial sums: measured 2e-15 with Adam, 2e-12 with SGD.
SYNC_CONFIGS = [("sgd", None, 16, 1e-12), ("adam", 0.05, 16, 1e-12), ("adam", None, 17, 1e-10)]


def build_sync_bn(optimizer: str, clip, synchronized: bool = True):
    """BatchNorm1d(synchronized=True) on the input (no input gradient wanted there) and after
    a hidden layer."""
    # (BatchNorm after the activation: a Dense bias right before a BatchNorm has a gradient
    # that is zero but for rounding, which Adam would scale up to full steps)
    model = mc.Sequential([mc.BatchNorm1d(6, synchronized=synchronized), mc.Dense(6, 16),
                           mc.ReLU(), mc.BatchNorm1d(16, synchronized=synchronized),
                           mc.Dense(16, 3)],
                          dtype="float64", seed=5)
    opt = mc.optim.SGD(lr=0.1, momentum=0.9) if optimizer == "sgd" else mc.optim.Adam(lr=0.01)
    model.compile(loss="cross_entropy", optimizer=opt, clip_norm=clip)
    return model


def train_sync_bn(optimizer: str, clip, batch: int, distributed_fit: bool, model=None):
    x, y, w, xv, yv = data()
    model = model or build_sync_bn(optimizer, clip)
    history = model.fit(x, y, epochs=EPOCHS, batch_size=batch, sample_weight=w,
                        validation_data=(xv, yv), verbose=0, distributed=distributed_fit)
    return model, history.history


def sync_bn_results(model, history, prefix: str):
    out = {f"{prefix}weights": np.concatenate([a.ravel() for a in model.get_weights()])}
    out[f"{prefix}loss"] = np.array(history["loss"])
    out[f"{prefix}val_loss"] = np.array(history["val_loss"])
    return out


def main(argv):
    comm = distributed.init()
    mode = argv[1]
    if mode == "train":
        out = {}
        for optimizer, clip in CONFIGS:
            model, history = train(optimizer, clip, True)
            prefix = f"{optimizer}-{clip}-"
            out.update(results(model, history, prefix))
            # every rank must hold the same weights, bit for bit
            digests = comm.allgather_object(model.params_view().tobytes())
            out[f"{prefix}replicas_identical"] = np.array(all(d == digests[0] for d in digests))
        if comm.rank == 0:
            np.savez(argv[2], **out)
    elif mode == "callbacks":
        model, history = with_callbacks(argv[2], comm.rank)
        digests = comm.allgather_object((model.params_view().tobytes(), history["lr"]))
        if comm.rank == 0:
            np.savez(argv[3], params=model.params_view().copy(), lr=np.array(history["lr"]),
                     replicas_identical=all(d == digests[0] for d in digests))
    elif mode == "dropout-bn":
        model = with_dropout_and_batchnorm()
        states = comm.allgather_object(model.dropout_rng_state)
        weights = comm.allgather_object([a.tobytes() for a in model.get_weights()])
        if comm.rank == 0:
            np.savez(argv[2], params=model.params_view().copy(),
                     distinct_dropout=len({tuple(s) for s in states}) == comm.size,
                     replicas_identical=all(wt == weights[0] for wt in weights))
    elif mode == "sync-bn":
        out = {}
        for optimizer, clip, batch, _ in SYNC_CONFIGS:
            model, history = train_sync_bn(optimizer, clip, batch, True)
            prefix = f"{optimizer}-{clip}-"
            out.update(sync_bn_results(model, history, prefix))
            digests = comm.allgather_object([a.tobytes() for a in model.get_weights()])
            out[f"{prefix}replicas_identical"] = all(d == digests[0] for d in digests)
        if comm.rank == 0:
            np.savez(argv[2], **out)
    elif mode == "local-bn":
        model, _ = train_sync_bn("sgd", None, SYNC_CONFIGS[0][2], True,
                                 model=build_sync_bn("sgd", None, synchronized=False))
        if comm.rank == 0:
            np.savez(argv[2], weights=np.concatenate([a.ravel() for a in model.get_weights()]))
    elif mode in ("fail-in-fit", "sync-bn-fail"):
        model = build("sgd", None) if mode == "fail-in-fit" else build_sync_bn("sgd", None)
        if comm.rank == 1:
            original, calls = model.compute_gradients, [0]

            def failing(*args, **kwargs):
                calls[0] += 1
                if calls[0] == 3:
                    raise ValueError("injected failure")
                return original(*args, **kwargs)
            model.compute_gradients = failing
        try:
            if mode == "fail-in-fit":
                train("sgd", None, True, model=model)
            else:
                train_sync_bn("sgd", None, BATCH, True, model=model)
        except distributed.DistributedError as exc:
            print(f"rank {comm.rank} stopped: {exc}", flush=True)
            return 3
        print(f"rank {comm.rank} finished without an error", flush=True)
        return 0
    elif mode in ("nan-in-fit", "killed-in-fit", "nan-loss-in-fit"):
        model = build("sgd", None)
        if comm.rank == 1:
            original, calls = model.compute_gradients, [0]

            def failing(x, y, **kwargs):
                calls[0] += 1
                if calls[0] == 3 and mode == "killed-in-fit":
                    os.kill(os.getpid(), signal.SIGKILL)
                if calls[0] == 3 and mode == "nan-loss-in-fit":
                    # a loss that overflowed: the native step returns before its backward
                    # pass, so the gradient arena still holds the previous step's values
                    return float("nan"), 0
                out = original(x, y, **kwargs)
                if calls[0] == 3:  # a gradient overflowed on this rank only
                    model.grads_view()[0] = np.inf
                return out
            model.compute_gradients = failing
        try:
            train("sgd", None, True, model=model)
        except mc.NonFiniteLossError as exc:
            print(f"rank {comm.rank} stopped: {exc}", flush=True)
            return 3
    elif mode == "mismatch":
        x, y, w, xv, yv = data()
        rows = N_ROWS - comm.rank
        try:
            build("sgd", None).fit(x[:rows], y[:rows], batch_size=BATCH, verbose=0,
                                   distributed=True)
        except ValueError as exc:
            print(f"rank {comm.rank} refused: {exc}", flush=True)
            return 3
    elif mode == "fail-outside-fit":
        if comm.rank == 1:
            raise RuntimeError("injected failure outside fit")
        comm.barrier()  # rank 0 would wait here forever without the abort hook
        print(f"rank {comm.rank} passed the barrier", flush=True)
    elif mode == "resume-save":
        model, _ = train("adam", 0.05, True, epochs=2)
        if comm.rank == 0:
            mc.save_checkpoint(model, argv[2], epoch=2)
    elif mode == "resume-load":
        model = mc.load_checkpoint(argv[2]).model
        model, history = train("adam", 0.05, True, epochs=EPOCHS, model=model, initial_epoch=2)
        if comm.rank == 0:
            np.savez(argv[3], params=model.params_view().copy())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

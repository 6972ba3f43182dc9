"""mc.callbacks: Keras semantics of each callback, per-batch hooks, and argument errors."""
import csv
import warnings

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import callbacks as cb


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    return x, y


def model(seed=0, lr=0.05):
    m = mc.Sequential([mc.Dense(4, 8), mc.Tanh(), mc.Dense(8, 2)], dtype="float64", seed=seed)
    m.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=lr))
    return m


class Scripted(cb.Callback):
    """Replaces the logged value of ``key`` by a script, to drive monitoring callbacks."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, list(values)

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class Snapshots(cb.Callback):
    def __init__(self):
        super().__init__()
        self.snaps = []

    def on_epoch_end(self, epoch, logs=None):
        self.snaps.append(self.model.params_view().copy())


def test_early_stopping_stops_at_the_right_epoch_and_restores_best_weights():
    x, y = data()
    m = model()
    script = [1.0, 0.8, 0.9, 0.79, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86]
    snaps = Snapshots()
    stop = cb.EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    history = m.fit(x, y, epochs=10, batch_size=32, verbose=0,
                    callbacks=[Scripted("score", script), snaps, stop])
    # best at epoch 3 (0.79); epochs 4 and 5 do not improve -> stop after epoch 5
    assert history.epoch == list(range(6)) and stop.stopped_epoch == 5
    assert stop.best == 0.79 and stop.best_epoch == 3
    assert not np.array_equal(m.params_view(), snaps.snaps[5])
    assert np.array_equal(m.params_view(), snaps.snaps[3])


def test_early_stopping_min_delta_mode_baseline_and_start_epoch():
    x, y = data()
    # max mode with min_delta: +0.005 is not an improvement
    stop = cb.EarlyStopping(monitor="score", mode="max", min_delta=0.01, patience=1)
    h = model().fit(x, y, epochs=8, verbose=0,
                    callbacks=[Scripted("score", [0.5, 0.505, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7]), stop])
    assert h.epoch == [0, 1]
    # the wait only restarts on values that also beat the baseline
    script = [0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
    stop = cb.EarlyStopping(monitor="score", baseline=0.1, patience=3)
    h = model().fit(x, y, epochs=8, verbose=0, callbacks=[Scripted("score", script), stop])
    assert h.epoch == [0, 1, 2]
    stop = cb.EarlyStopping(monitor="score", patience=3)
    h = model().fit(x, y, epochs=8, verbose=0, callbacks=[Scripted("score", script), stop])
    assert h.epoch == [0, 1, 2, 3]
    # warm-up epochs are ignored
    stop = cb.EarlyStopping(monitor="score", patience=0, start_from_epoch=3)
    h = model().fit(x, y, epochs=8, verbose=0,
                    callbacks=[Scripted("score", [1, 2, 3, 4, 5, 6, 7, 8]), stop])
    assert h.epoch == [0, 1, 2, 3, 4]
    # auto mode maximises accuracy
    assert cb.EarlyStopping(monitor="val_accuracy")._max
    assert not cb.EarlyStopping(monitor="val_loss")._max


def test_early_stopping_on_real_val_loss_warns_once_when_missing():
    x, y = data()
    stop = cb.EarlyStopping(patience=1)  # val_loss, but no validation data
    with pytest.warns(RuntimeWarning, match="'val_loss', which is not in the logs") as record:
        h = model().fit(x, y, epochs=3, verbose=0, callbacks=[stop])
    assert len(record) == 1 and h.epoch == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model().fit(x, y, epochs=2, verbose=0, validation_split=0.25, callbacks=[
            cb.EarlyStopping(patience=1)])


def test_model_checkpoint_saves_only_on_improvement(tmp_path):
    x, y = data()
    m = model()
    script = [1.0, 0.9, 0.95, 0.7, 0.8]
    path = str(tmp_path / "m-{epoch:02d}-{score:.2f}.safetensors")
    snaps = Snapshots()
    ckpt = cb.ModelCheckpoint(path, monitor="score", save_best_only=True)
    m.fit(x, y, epochs=5, verbose=0, callbacks=[ckpt, Scripted("score", script), snaps])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m-01-1.00.safetensors", "m-02-0.90.safetensors", "m-04-0.70.safetensors"]
    loaded = mc.load(tmp_path / "m-04-0.70.safetensors")
    assert np.array_equal(loaded.params_view(), snaps.snaps[3])


def test_model_checkpoint_every_epoch_and_format_errors(tmp_path):
    x, y = data()
    ckpt = cb.ModelCheckpoint(tmp_path / "last.safetensors")
    m = model()
    m.fit(x, y, epochs=2, verbose=0, validation_split=0.25, callbacks=[ckpt])
    assert ckpt.saved == [str(tmp_path / "last.safetensors")] * 2
    assert np.array_equal(mc.load(ckpt.saved[-1]).params_view(), m.params_view())
    bad = cb.ModelCheckpoint(str(tmp_path / "{nope}.safetensors"), monitor="loss")
    with pytest.raises(ValueError, match="could not be formatted"):
        model().fit(x, y, epochs=1, verbose=0, callbacks=[bad])


def test_terminate_on_nan_stops_on_a_non_finite_logged_value(capsys):
    x, y = data()
    term = cb.TerminateOnNaN()
    h = model().fit(x, y, epochs=5, verbose=0,
                    callbacks=[Scripted("val_loss", [1.0, float("nan"), 1, 1, 1]), term])
    assert h.epoch == [0, 1] and term.stopped_epoch == 1
    assert "invalid value of val_loss" in capsys.readouterr().err
    assert not term._wants_batch_hooks()


def test_csv_logger_rows(tmp_path):
    x, y = data()
    path = tmp_path / "log.csv"
    h = model().fit(x, y, epochs=3, verbose=0, validation_split=0.25,
                    callbacks=[cb.CSVLogger(path)])
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == ["epoch", "accuracy", "loss", "lr", "val_accuracy", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert [float(r[2]) for r in rows[1:]] == h.history["loss"]
    # append continues without a second header; a custom separator
    model().fit(x, y, epochs=2, verbose=0, callbacks=[cb.CSVLogger(path, append=True)])
    rows = list(csv.reader(path.read_text().splitlines()))
    assert len(rows) == 6 and rows[4][0] == "0" and rows[0][0] == "epoch"
    model().fit(x, y, epochs=1, verbose=0, callbacks=[cb.CSVLogger(path, separator=";")])
    assert path.read_text().splitlines()[0] == "epoch;accuracy;loss;lr"


def test_reduce_lr_on_plateau_after_patience_with_cooldown_and_floor():
    x, y = data()
    m = model(lr=0.1)
    script = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    reduce = cb.ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=1,
                                  min_lr=0.02)
    h = m.fit(x, y, epochs=11, verbose=0, callbacks=[Scripted("score", script), reduce])
    # lr of each epoch (Keras semantics): reduced after epochs 2, 4 (the cooldown epoch resets
    # the wait and counts again) and 6 (clipped at min_lr); the improvement at 7 resets the
    # wait, and at min_lr there is nothing more to reduce
    assert h.history["lr"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02,
                                             0.02, 0.02, 0.02])
    cooldown = cb.ReduceLROnPlateau(monitor="score", factor=0.5, patience=1, cooldown=2)
    h = model(lr=0.1).fit(x, y, epochs=6, verbose=0,
                          callbacks=[Scripted("score", [1.0] * 6), cooldown])
    # reduced after epoch 1; epoch 2 is in cooldown; epoch 3 counts again
    assert h.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert m.optimizer.lr == 0.02


def test_lambda_callback_and_hook_order():
    x, y = data(64)
    calls = []
    lam = cb.LambdaCallback(
        on_train_begin=lambda logs: calls.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch_begin {epoch}"),
        on_epoch_end=lambda epoch, logs: calls.append(f"epoch_end {epoch} {sorted(logs)}"),
        on_train_end=lambda logs: calls.append("train_end"))
    assert not lam._wants_batch_hooks()
    model().fit(x, y, epochs=2, verbose=0, callbacks=[lam])
    keys = "['accuracy', 'loss', 'lr']"
    assert calls == ["train_begin", "epoch_begin 0", f"epoch_end 0 {keys}", "epoch_begin 1",
                     f"epoch_end 1 {keys}", "train_end"]


def test_per_batch_hooks_once_per_batch_and_results_unchanged():
    x, y = data(100)
    seen = []
    lam = cb.LambdaCallback(on_train_batch_begin=lambda b, logs: seen.append(("begin", b)),
                            on_train_batch_end=lambda b, logs: seen.append(("end", b,
                                                                            logs["loss"])))
    assert lam._wants_batch_hooks()
    a, b = model(seed=5), model(seed=5)
    ha = a.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[lam])
    hb = b.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert [s[:2] for s in seen] == [(k, i) for _ in range(2) for i in range(4)
                                    for k in ("begin", "end")]
    assert np.array_equal(a.params_view(), b.params_view())
    assert ha.history == hb.history
    # the batch losses average (by batch size) to the epoch loss
    losses = [s[2] for s in seen if s[0] == "end"][:4]
    assert np.dot(losses, [32, 32, 32, 4]) / 100 == pytest.approx(ha.history["loss"][0])


def test_subclass_overriding_a_batch_hook_is_detected_and_can_stop():
    class StopAtBatch(cb.Callback):
        def __init__(self):
            super().__init__()
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            if self.batches == 3:
                self.model.stop_training = True

    x, y = data(100)
    stopper = StopAtBatch()
    assert stopper._wants_batch_hooks() and not cb.Callback()._wants_batch_hooks()
    m = model()
    h = m.fit(x, y, epochs=5, batch_size=10, verbose=0, callbacks=[stopper])
    assert stopper.batches == 3 and h.epoch == [0] and m.optimizer.step_count == 3


def test_learning_rate_scheduler_per_step():
    x, y = data(100)
    m = model(lr=0.1)
    sched = mc.schedules.ExponentialLR(m.optimizer, 0.9)
    h = m.fit(x, y, epochs=2, batch_size=25, verbose=0,
              callbacks=[cb.LearningRateScheduler(sched, interval="step")])
    assert sched.last_epoch == 8
    assert h.history["lr"] == pytest.approx([0.1 * 0.9 ** 4, 0.1 * 0.9 ** 8])
    other = model()
    with pytest.raises(ValueError, match="different optimizer"):
        other.fit(x, y, epochs=1, verbose=0, callbacks=[cb.LearningRateScheduler(sched)])


@pytest.mark.parametrize("make,match", [
    (lambda: cb.EarlyStopping(patience=-1), "patience"),
    (lambda: cb.EarlyStopping(mode="up"), "mode"),
    (lambda: cb.EarlyStopping(start_from_epoch=-2), "start_from_epoch"),
    (lambda: cb.ReduceLROnPlateau(factor=1.0), "factor"),
    (lambda: cb.ReduceLROnPlateau(factor=0), "factor"),
    (lambda: cb.ReduceLROnPlateau(patience=-1), "patience"),
    (lambda: cb.ReduceLROnPlateau(cooldown=-1), "cooldown"),
    (lambda: cb.ReduceLROnPlateau(min_lr=-1e-3), "min_lr"),
    (lambda: cb.ReduceLROnPlateau(mode="sideways"), "mode"),
    (lambda: cb.ModelCheckpoint("m.safetensors", mode="best"), "mode"),
    (lambda: cb.ModelCheckpoint("m.safetensors", monitor=""), "monitor"),
    (lambda: cb.CSVLogger("log.csv", separator=",,"), "separator"),
    (lambda: cb.LearningRateScheduler(
        mc.schedules.StepLR(mc.optim.SGD(), 1), interval="batch"), "interval"),
])
def test_bad_arguments_raise_value_error_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_type_errors():
    with pytest.raises(TypeError, match="scheduler"):
        cb.LearningRateScheduler(lambda epoch: 0.1)
    with pytest.raises(TypeError, match="callable"):
        cb.LambdaCallback(on_epoch_end=3)
    x, y = data(32)
    with pytest.raises(TypeError, match=r"callbacks\[0\]"):
        model().fit(x, y, epochs=1, verbose=0, callbacks=["early stopping"])
    with pytest.raises(TypeError, match="list of callbacks"):
        model().fit(x, y, epochs=1, verbose=0, callbacks=cb.TerminateOnNaN())


# --- CallbackList, History and the progress reports ------------------------------------------
class Recorder(cb.Callback):
    def __init__(self, name, calls, batches=False):
        super().__init__()
        self.name, self.calls, self.batches = name, calls, batches

    def _wants_batch_hooks(self):
        return self.batches

    def on_train_begin(self, logs=None):
        self.calls.append((self.name, "train_begin"))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append((self.name, "epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append((self.name, "batch_end", batch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append((self.name, "epoch_end", epoch))
        logs[f"seen_by_{self.name}"] = 1.0

    def on_train_end(self, logs=None):
        self.calls.append((self.name, "train_end"))


def test_callback_list_fans_each_hook_out_in_order_checkpoints_last(tmp_path):
    calls = []

    class Last(Recorder):
        _run_last = True

    first, last, second = Recorder("a", calls), Last("z", calls), Recorder("b", calls)
    m = model()
    cbs = cb.CallbackList([first, last, second], add_history=True, verbose=2, model=m,
                          params={"epochs": 2, "steps": 3, "verbose": 2})
    assert [type(c).__name__ for c in cbs.callbacks] == ["Recorder", "Recorder", "Last",
                                                          "EpochLogger", "History"]
    assert all(c.model is m and c.params["steps"] == 3 for c in cbs.callbacks)
    assert not cbs.wants_batch_hooks()
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    cbs.on_epoch_end(0, {"loss": 1.0})
    cbs.on_train_end()
    assert calls == [("a", "train_begin"), ("b", "train_begin"), ("z", "train_begin"),
                     ("a", "epoch_begin", 0), ("b", "epoch_begin", 0), ("z", "epoch_begin", 0),
                     ("a", "epoch_end", 0), ("b", "epoch_end", 0), ("z", "epoch_end", 0),
                     ("a", "train_end"), ("b", "train_end"), ("z", "train_end")]
    # the History comes last, so it records what the callbacks added to the logs
    assert cbs.history.history == {"loss": [1.0], "seen_by_a": [1.0], "seen_by_b": [1.0],
                                   "seen_by_z": [1.0]}


def test_fit_returns_the_history_callback_and_runs_batch_hooks_once_each():
    x, y = data(n=40)
    calls = []
    h = model().fit(x, y, epochs=2, batch_size=16, verbose=0,
                    callbacks=[Recorder("a", calls, batches=True)])
    assert isinstance(h, cb.History) and isinstance(h, cb.Callback)
    assert h.epoch == [0, 1] and h.history["seen_by_a"] == [1.0, 1.0]
    batch_ends = [c for c in calls if c[1] == "batch_end"]
    assert batch_ends == [("a", "batch_end", b) for _ in range(2) for b in range(3)]


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = data(n=40)
    h = model().fit(x, y, epochs=2, batch_size=16, verbose=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[1] == (f"Epoch 2/2 - loss: {h.history['loss'][1]:.4f} - accuracy: "
                      f"{h.history['accuracy'][1]:.4f} - lr: 0.05")


def test_progress_bar_closes_when_an_epoch_fails(monkeypatch):
    pytest.importorskip("tqdm")
    closed = []
    real_close = cb.ProgressBar._on_epoch_done

    def spy(self, epoch, logs):
        bar = self._bar
        real_close(self, epoch, logs)
        closed.append((logs is None, bar.disable))  # tqdm's close() disables the bar

    monkeypatch.setattr(cb.ProgressBar, "_on_epoch_done", spy)
    x, y = data(n=40)
    m = mc.Sequential([mc.Dense(4, 8), mc.ReLU(), mc.Dense(8, 1)], seed=0, dtype="float64")
    m.compile(loss="mse", optimizer=mc.optim.SGD(lr=1e30))
    with pytest.raises(mc.NonFiniteLossError):
        m.fit(x * 1e10, y.astype(float), epochs=2, batch_size=8, verbose=1)
    assert closed == [(True, True)]  # closed once, on the failed epoch

"""Exact resume: 2K epochs in one run equal K epochs, a checkpoint, and K more epochs in a new
process, bit for bit (weights, optimizer state, history losses), with shuffling and a
learning-rate schedule; plus mismatch errors and atomic checkpoint writes."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlpcore as mc
from helpers import PYTHON_DIR
from mlpcore import schedules

K = 3

# shared by this process and the subprocess (exec'd there)
SETUP = textwrap.dedent("""
    import numpy as np
    import mlpcore as mc
    from mlpcore import callbacks as cb, schedules

    def make_data():
        rng = np.random.default_rng(7)
        x = rng.normal(size=(150, 6))
        y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64) + (x[:, 3] > 0.5)
        return x, y

    def make_model(opt_name):
        model = mc.Sequential([mc.Dense(6, 16), mc.Tanh(), mc.Dense(16, 3)], dtype="float64",
                              seed=11)
        opt = (mc.optim.SGD(lr=0.1, momentum=0.9) if opt_name == "sgd"
               else mc.optim.Adam(lr=3e-2))
        model.compile(loss="cross_entropy", optimizer=opt)
        return model

    def make_scheduler(opt, kind):
        if kind == "step":
            return schedules.SequentialLR(opt, [schedules.LinearWarmup(opt, 2, 0.2),
                                                schedules.CosineAnnealingLR(opt, 8, 1e-3)], [2])
        return schedules.OneCycleLR(opt, max_lr=0.05, total_steps=6 * 10)

    def train(model, sched, interval, epochs, initial_epoch=0, checkpoint=None):
        x, y = make_data()
        callbacks = [cb.LearningRateScheduler(sched, interval=interval)]
        if checkpoint:
            callbacks.insert(0, cb.ModelCheckpoint(checkpoint, monitor="loss", scheduler=sched))
        return model.fit(x, y, epochs=epochs, batch_size=16, shuffle=True, verbose=0,
                         validation_split=0.1, initial_epoch=initial_epoch, callbacks=callbacks)
""")
namespace = {}
exec(SETUP, namespace)
make_model, make_scheduler, train = (namespace[k] for k in ("make_model", "make_scheduler",
                                                             "train"))

RESUME = SETUP + textwrap.dedent("""
    import json, sys
    path, opt_name, kind, interval, k = sys.argv[1:6]
    k = int(k)
    model = make_model(opt_name)
    sched = make_scheduler(model.optimizer, kind)
    ckpt = mc.load_checkpoint(path, model, scheduler=sched)
    assert ckpt.epoch == k, ckpt.epoch
    history = train(model, sched, interval, 2 * k, initial_epoch=k)
    np.save(path + ".params.npy", model.params_view())
    np.save(path + ".state.npy", np.concatenate([v for v in model.optimizer.state.values()]))
    print(json.dumps({"history": history.history, "epochs": history.epoch,
                      "lr": model.optimizer.lr, "last_epoch": sched.last_epoch,
                      "steps": model.optimizer.step_count}))
""")


@pytest.mark.parametrize("opt_name,kind,interval", [("adam", "step", "epoch"),
                                                    ("sgd", "onecycle", "step")])
def test_resume_in_a_new_process_is_bit_exact(tmp_path, opt_name, kind, interval):
    # uninterrupted: 2K epochs
    full = make_model(opt_name)
    full_sched = make_scheduler(full.optimizer, kind)
    full_history = train(full, full_sched, interval, 2 * K)
    # K epochs, checkpoint written by ModelCheckpoint at every epoch (the last one wins)
    path = str(tmp_path / "ckpt.safetensors")
    first = make_model(opt_name)
    first_sched = make_scheduler(first.optimizer, kind)
    train(first, first_sched, interval, K, checkpoint=path)
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    out = subprocess.run([sys.executable, str(script), path, opt_name, kind, interval, str(K)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["epochs"] == list(range(K, 2 * K))
    for key, values in full_history.history.items():
        assert resumed["history"][key] == values[K:], key
    assert np.array_equal(np.load(path + ".params.npy"), full.params_view())
    state = np.concatenate([v for v in full.optimizer.state.values()])
    assert np.array_equal(np.load(path + ".state.npy"), state)
    assert resumed["lr"] == full.optimizer.lr
    assert resumed["last_epoch"] == full_sched.last_epoch
    assert resumed["steps"] == full.optimizer.step_count


def test_checkpoint_rebuilds_the_model_and_scheduler(tmp_path):
    model = make_model("adam")
    sched = make_scheduler(model.optimizer, "step")
    train(model, sched, "epoch", K)
    path = tmp_path / "c.safetensors"
    mc.save_checkpoint(model, path, epoch=K, scheduler=sched)
    ckpt = mc.load_checkpoint(path, scheduler_factory=lambda o: make_scheduler(o, "step"))
    loaded, epoch, loaded_sched = ckpt
    assert epoch == K and isinstance(loaded_sched, schedules.SequentialLR)
    assert loaded_sched.state_dict() == sched.state_dict()
    assert loaded.optimizer.lr == model.optimizer.lr
    assert loaded.rng.bit_generator.state == model.rng.bit_generator.state
    assert np.array_equal(loaded.params_view(), model.params_view())
    # a checkpoint is also a plain model file
    plain = mc.load(path)
    assert np.array_equal(plain.params_view(), model.params_view())
    # and a plain model file is not a checkpoint
    model.save(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="not save_checkpoint"):
        mc.load_checkpoint(tmp_path / "m.safetensors")


def test_checkpoint_mismatches_raise_and_leave_the_model_untouched(tmp_path):
    model = make_model("adam")
    path = tmp_path / "c.safetensors"
    mc.save_checkpoint(model, path, epoch=0)
    other = mc.Sequential([mc.Dense(6, 17), mc.Tanh(), mc.Dense(17, 3)], dtype="float64", seed=1)
    other.compile(loss="cross_entropy", optimizer="adam")
    before = other.params_view().copy()
    with pytest.raises(ValueError, match=r"architecture mismatch at layers\[0\]"):
        mc.load_checkpoint(path, other)
    assert np.array_equal(other.params_view(), before)
    deeper = mc.Sequential([mc.Dense(6, 16), mc.Tanh(), mc.Dense(16, 3), mc.Identity()],
                           dtype="float64")
    deeper.compile(loss="cross_entropy")
    with pytest.raises(ValueError, match="has 3 layers, the model has 4"):
        mc.load_checkpoint(path, deeper)
    f32 = mc.Sequential([mc.Dense(6, 16), mc.Tanh(), mc.Dense(16, 3)], dtype="float32")
    f32.compile(loss="cross_entropy")
    with pytest.raises(ValueError, match="dtype mismatch"):
        mc.load_checkpoint(path, f32)
    sgd = make_model("sgd")
    with pytest.raises(ValueError, match="optimizer mismatch"):
        mc.load_checkpoint(path, sgd)
    mse = mc.Sequential([mc.Dense(6, 16), mc.Tanh(), mc.Dense(16, 3)], dtype="float64")
    mse.compile(loss="mse", optimizer="adam")
    with pytest.raises(ValueError, match="loss mismatch"):
        mc.load_checkpoint(path, mse)
    same = make_model("adam")
    sched = schedules.StepLR(same.optimizer, 2)
    with pytest.raises(ValueError, match="no scheduler state"):
        mc.load_checkpoint(path, same, scheduler=sched)
    # a scheduler of the wrong kind
    mc.save_checkpoint(model, path, epoch=1,
                       scheduler=schedules.ExponentialLR(model.optimizer, 0.9))
    before = same.params_view().copy()
    with pytest.raises(ValueError, match="ExponentialLR"):
        mc.load_checkpoint(path, same, scheduler=sched)
    assert np.array_equal(same.params_view(), before)


def test_checkpoint_argument_errors(tmp_path):
    model = make_model("adam")
    with pytest.raises(ValueError, match="epoch"):
        mc.save_checkpoint(model, tmp_path / "c", epoch=-1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mc.save_checkpoint(model, tmp_path / "missing" / "c", epoch=0)
    other = make_model("adam")
    with pytest.raises(ValueError, match="different optimizer"):
        mc.save_checkpoint(model, tmp_path / "c", epoch=0,
                           scheduler=schedules.StepLR(other.optimizer, 1))
    uncompiled = mc.Sequential([mc.Dense(6, 3)])
    with pytest.raises(RuntimeError, match="compile"):
        mc.save_checkpoint(uncompiled, tmp_path / "c", epoch=0)


def test_failed_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    import mlpcore.io as mc_io
    model = make_model("adam")
    path = tmp_path / "c.safetensors"
    mc.save_checkpoint(model, path, epoch=1)
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mc_io.os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        mc.save_checkpoint(model, path, epoch=2)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]
    assert mc.load_checkpoint(path).epoch == 1


@pytest.mark.parametrize("field, value, match", [
    ("version", 99, "checkpoint.version: expected a version from 1 to"),
    ("version", "1", "checkpoint.version"),
    ("metrics", ["bogus"], "checkpoint.metrics: .*unknown metric 'bogus'"),
    ("metrics", ["mae"], "checkpoint.metrics: .*does not apply to the classification loss"),
])
def test_a_checkpoint_with_an_unknown_version_or_metric_is_refused(tmp_path, field, value,
                                                                   match):
    import json

    from safetensors.numpy import load_file, save_file

    model = make_model("adam")
    path = tmp_path / "c.safetensors"
    mc.save_checkpoint(model, path, epoch=1)
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = json.loads(header["__metadata__"]["mlpcore"])
    meta["checkpoint"][field] = value
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={"mlpcore": json.dumps(meta)})
    with pytest.raises(ValueError, match=match):
        mc.load_checkpoint(bad)

"""pickle, copy and deepcopy of models, layers, optimizers and schedulers (io.model_to_bytes)."""
import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import mlpcore as mc
from helpers import PYTHON_DIR
from mlpcore import schedules


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, rng.integers(0, 3, n)


def _model(optimizer=None, **compile_options):
    model = mc.Sequential([mc.Dense(6, 12), mc.BatchNorm1d(12), mc.ReLU(), mc.Dropout(0.25),
                           mc.Residual([mc.Dense(12, 12), mc.Tanh()]), mc.Dense(12, 3)], seed=4)
    model.compile("cross_entropy", optimizer or mc.optim.Adam(lr=1e-2), **compile_options)
    return model


def _arrays(model):
    return [np.array(layer.weight) for layer in model.flat_layers if hasattr(layer, "bias")]


def _same(a, b) -> None:
    for u, v in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("clone", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy,
                                   copy.copy], ids=["pickle", "deepcopy", "copy"])
@pytest.mark.parametrize("optimizer", [lambda: mc.optim.Adam(lr=1e-2, amsgrad=True),
                                       lambda: mc.optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
                                       lambda: mc.optim.RMSprop(lr=1e-3, centered=True)])
def test_copy_trains_on_bit_for_bit(clone, optimizer):
    x, y = _data()
    model = _model(optimizer(), metrics=None, clip_norm=5.0)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    twin = clone(model)
    assert twin is not model and twin.optimizer is not model.optimizer
    assert twin.optimizer.step_count == model.optimizer.step_count
    assert twin.clip_norm == 5.0 and twin.loss.name == "cross_entropy"
    for m in (model, twin):  # shuffling, dropout masks and optimizer state continue alike
        m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    _same(model, twin)
    np.testing.assert_array_equal(model.predict(x), twin.predict(x))
    # independent: training one leaves the other alone
    before = _arrays(twin)
    model.fit(x, y, epochs=1, verbose=0)
    for u, v in zip(before, _arrays(twin)):
        np.testing.assert_array_equal(u, v)


def test_uncompiled_and_float64_models():
    model = mc.Sequential([mc.Dense(3, 2), mc.GELU(approximate="tanh")], dtype="float64", seed=1)
    twin = pickle.loads(pickle.dumps(model))
    assert twin.loss is None and twin.dtype == np.float64
    def without_init(config):  # the weights travel as values, not as their initialiser
        return [{k: v for k, v in layer.items() if k != "init"} for layer in config["layers"]]
    assert without_init(twin.get_config()) == without_init(model.get_config())
    x = np.ones((2, 3))
    np.testing.assert_array_equal(twin.predict(x), model.predict(x))


def test_metrics_and_anomaly_detection_survive():
    model = mc.Sequential([mc.Dense(2, 1)], seed=0)
    model.compile("mse", "sgd", metrics=["mae", "r2"], detect_anomaly=True, huber_delta=2.0)
    twin = copy.deepcopy(model)
    assert twin.metrics == ["mae", "r2"] and twin.detect_anomaly and twin.huber_delta == 2.0


def test_custom_loss_refuses_clearly():
    model = mc.Sequential([mc.Dense(2, 1)])
    model.compile(lambda p, t: (float(((p - t) ** 2).mean()), 2 * (p - t) / p.size), "sgd")
    with pytest.raises(TypeError, match="custom .*loss cannot be pickled"):
        pickle.dumps(model)


def test_garbage_bytes_raise_value_error():
    with pytest.raises(ValueError, match="not a pickled mlpcore model"):
        mc.io.model_from_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(TypeError, match="must be bytes"):
        mc.io.model_from_bytes("text")


def test_layers_travel_with_their_model():
    model = _model()
    dense = model.layers[0]
    lone = pickle.loads(pickle.dumps(dense))  # the whole model comes along, as torch tensors
    assert isinstance(lone, mc.Dense) and lone is not dense
    np.testing.assert_array_equal(lone.weight, dense.weight)
    twin, layer, inner = pickle.loads(pickle.dumps((model, dense, model.layers[4].layers[0])))
    assert layer is twin.layers[0] and inner is twin.layers[4].layers[0]
    twin_model, twin_layer = copy.deepcopy((model, dense))
    assert twin_layer is twin_model.layers[0]
    with pytest.raises(TypeError, match="copy.copy of a Dense"):
        copy.copy(dense)
    fresh = mc.Dense(4, 5, l2=0.1)  # not in a model yet: a plain description
    assert copy.copy(fresh).get_config() == pickle.loads(pickle.dumps(fresh)).get_config()


def test_optimizers_and_schedulers():
    model = _model()
    x, y = _data()
    scheduler = schedules.StepLR(model.optimizer, step_size=1, gamma=0.5)
    model.fit(x, y, epochs=1, verbose=0)
    scheduler.step()
    opt = pickle.loads(pickle.dumps(model.optimizer))  # bound: comes back with its model
    assert opt._model is not None and opt.step_count == model.optimizer.step_count
    twin_model, twin_sched = pickle.loads(pickle.dumps((model, scheduler)))
    assert twin_sched.optimizer is twin_model.optimizer
    for s in (scheduler, twin_sched):
        s.step()
    assert twin_sched.get_last_lr() == scheduler.get_last_lr()
    assert twin_model.optimizer.lr == model.optimizer.lr
    free = pickle.loads(pickle.dumps(mc.optim.SGD(lr=0.3, momentum=0.5)))
    assert free.lr == 0.3 and free.param_groups[0]["momentum"] == 0.5
    with pytest.raises(RuntimeError, match="not attached"):
        free.step()


_CHILD = """
import pickle, sys
import numpy as np
model, x, y = pickle.load(sys.stdin.buffer)
model.fit(x, y, epochs=2, batch_size=16, verbose=0)
sys.stdout.buffer.write(pickle.dumps(model))
"""


def test_unpickled_in_another_process_trains_on_identically():
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    # the child imports the mlpcore this process runs (an installed one in CI)
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR, OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps((model, x, y)),
                         capture_output=True, check=True, env=env)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    _same(model, pickle.loads(out.stdout))


def test_picklers_with_their_own_table_still_pickle_models():
    # copyreg's table holds mlpcore.io's reducer; a Pickler with a table of its own asks the
    # model, which hands over the same reducer
    import io as stdio

    model = _model()
    buffer = stdio.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.dispatch_table = {}
    pickler.dump(model)
    twin = pickle.loads(buffer.getvalue())
    x, _ = _data(8)
    np.testing.assert_array_equal(twin.predict(x), model.predict(x))


def test_subclasses_refuse_clearly():
    class Mine(mc.Sequential):
        pass

    model = Mine([mc.Dense(2, 1)], seed=0)
    with pytest.raises(TypeError, match="cannot pickle or copy a Mine"):
        pickle.dumps(model)
    with pytest.raises(TypeError, match="cannot pickle or copy a Mine"):
        copy.deepcopy(model)


def test_a_copy_taken_while_another_thread_trains_is_one_state(monkeypatch):
    """The step count, the generators' states and the arrays of a pickle are read under one
    lock: a fit in another thread cannot step between them (the metadata is slowed here so that
    a step would fall between them if it could)."""
    import hashlib
    import threading
    import time

    from mlpcore import saving
    from mlpcore.callbacks import LambdaCallback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    y = rng.integers(0, 4, len(x))

    def build():
        model = mc.Sequential([mc.Dense(16, 32), mc.ReLU(), mc.Dense(32, 4)], seed=0)
        model.compile("cross_entropy", "adam")
        return model

    def digest(model):
        return hashlib.sha1(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()

    reference = build()
    step_of = {digest(reference): 0}
    record = LambdaCallback(on_train_batch_end=lambda batch, logs: step_of.__setitem__(
        digest(reference), reference.optimizer_steps))
    reference.fit(x, y, epochs=20, batch_size=32, verbose=0, callbacks=[record])

    metadata = saving._metadata

    def slow_metadata(model):
        meta = metadata(model)
        time.sleep(0.01)
        return meta

    monkeypatch.setattr(saving, "_metadata", slow_metadata)
    model = build()
    training = threading.Thread(
        target=lambda: model.fit(x, y, epochs=20, batch_size=32, verbose=0))
    training.start()
    snapshots = []
    while training.is_alive() and len(snapshots) < 20:
        snapshots.append(pickle.dumps(model))
    training.join()
    assert snapshots
    for snapshot in snapshots:
        copied = pickle.loads(snapshot)
        assert step_of[digest(copied)] == copied.optimizer_steps

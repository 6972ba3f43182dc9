"""The native training path: fit's C++ epoch loop equals train_step batch by batch, bit for bit;
thread-count independence; threads from Python; stable memory; thread-pool control."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import _core
from helpers import (dense_arrays, epochs_by_train_step, needs_resident_memory, rss_bytes,
                     same_bits)


def make_model(seed=0, dtype="float32", loss="cross_entropy", opt=None):
    model = mc.Sequential([mc.Dense(12, 32), mc.GELU(), mc.Dense(32, 16), mc.ReLU(),
                           mc.Dense(16, 4)], dtype=dtype, seed=seed)
    model.compile(loss=loss, optimizer=opt or mc.optim.Adam(lr=3e-3))
    return model


def make_data(n=203, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(dtype)
    y = (x[:, :4].argmax(axis=1)).astype(np.int64)
    return x, y


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_equals_train_step_on_the_same_batches(shuffle, loss):
    x, labels = make_data()
    y = labels if loss == "cross_entropy" else np.eye(4, dtype=np.float32)[labels]
    fitted, stepped = make_model(loss=loss), make_model(loss=loss)
    history = fitted.fit(x, y, epochs=3, batch_size=16, shuffle=shuffle, verbose=0)
    losses = epochs_by_train_step(stepped, x, y, 3, 16, shuffle)
    assert same_bits(dense_arrays(fitted), dense_arrays(stepped))
    assert history.history["loss"] == losses
    assert fitted.optimizer.step_count == stepped.optimizer.step_count == 3 * 13


def test_progress_bar_chunks_do_not_change_results(capsys):
    x, y = make_data()
    quiet, chatty = make_model(seed=3), make_model(seed=3)
    quiet.fit(x, y, epochs=2, batch_size=8, verbose=0)
    chatty.fit(x, y, epochs=2, batch_size=8, verbose=1)
    assert "Epoch 2/2" in capsys.readouterr().err
    assert same_bits(dense_arrays(quiet), dense_arrays(chatty))


def test_shuffled_indices_is_a_seeded_permutation():
    a = _core.shuffled_indices(42, 1000)
    assert a.dtype == np.int64 and sorted(a) == list(range(1000))
    assert np.array_equal(a, _core.shuffled_indices(42, 1000))
    assert not np.array_equal(a, _core.shuffled_indices(43, 1000))
    assert len(_core.shuffled_indices(1, 0)) == 0


def test_shuffled_indices_into_a_buffer():
    buf = np.full(1000, -1, np.int64)
    got = _core.shuffled_indices(42, 1000, out=buf)
    assert got is buf or np.shares_memory(got, buf)
    assert np.array_equal(buf, _core.shuffled_indices(42, 1000))
    _core.shuffled_indices(43, 1000, out=buf)  # refilled whatever it held
    assert np.array_equal(buf, _core.shuffled_indices(43, 1000))
    with pytest.raises(TypeError, match="out must have dtype int64, got int32"):
        _core.shuffled_indices(1, 10, out=np.empty(10, np.int32))
    with pytest.raises(ValueError, match=r"out must have length n = 10, got shape \(9,\)"):
        _core.shuffled_indices(1, 10, out=np.empty(9, np.int64))
    frozen = np.empty(10, np.int64)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        _core.shuffled_indices(1, 10, out=frozen)


def test_native_loop_guards_its_memory():
    model = make_model()
    x, y = make_data(20)
    net = model._net
    bad_order = np.arange(20, dtype=np.int64)
    bad_order[5] = 20
    with pytest.raises(ValueError, match="index 20 outside"):
        net.train_batches(x, y, bad_order, 4, 0, 5)
    bad_labels = y.copy()
    bad_labels[3] = 7
    with pytest.raises(ValueError, match="label 7 outside"):
        net.train_batches(x, bad_labels, None, 4, 0, 5)
    with pytest.raises(ValueError, match="one index per row"):
        net.train_batches(x, y, bad_order[:10], 4, 0, 5)
    with pytest.raises(TypeError, match="int64"):
        net.train_batches(x, y, bad_order.astype(np.int32), 4, 0, 5)


@pytest.mark.parametrize("bad", [-1, 200, 2**62, -(2**62)])
def test_a_bad_index_in_the_next_batch_is_refused_after_the_batch_before(bad):
    # each step asks for the next batch's labels before the loop has checked its indices: a
    # wild index there is only a prefetch address; the loop refuses it when it gets there
    model = make_model()
    x, y = make_data(200)
    order = np.arange(200, dtype=np.int64)
    order[70] = bad  # in the second 64-row batch (a cut step)
    before = [layer.weight.copy() for layer in model.layers if hasattr(layer, "weight")]
    with pytest.raises(ValueError, match=f"index {bad} outside"):
        model._net.train_batches(x, y, order, 64, 0, 3)
    after = [layer.weight for layer in model.layers if hasattr(layer, "weight")]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # the first batch ran


@pytest.mark.skipif(not mc.has_openmp(), reason="built without OpenMP")
def test_wide_network_bits_do_not_depend_on_thread_count():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 300)).astype(np.float32)
    y = rng.integers(0, 10, size=256)
    results = []
    for threads in (1, 2):
        mc.set_num_threads(threads)
        model = mc.Sequential([mc.Dense(300, 512), mc.ReLU(), mc.Dense(512, 256), mc.Tanh(),
                               mc.Dense(256, 10)], seed=1)
        model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.05, momentum=0.9))
        model.fit(x, y, epochs=2, batch_size=128, verbose=0)
        results.append(dense_arrays(model) + [model.predict(x)])
    assert same_bits(results[0], results[1])


def test_train_step_from_several_python_threads_matches_serial():
    x, y = make_data(128)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 128, 16)]

    def run(model):
        for xb, yb in batches * 3:
            model.train_step(xb, yb)

    serial = [make_model(seed=s) for s in range(4)]
    for model in serial:
        run(model)
    parallel = [make_model(seed=s) for s in range(4)]
    threads = [threading.Thread(target=run, args=(m,)) for m in parallel]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(serial, parallel):
        assert same_bits(dense_arrays(a), dense_arrays(b))


def test_one_model_shared_by_threads_stays_consistent():
    # calls on one model are serialised natively: no torn updates, every step counted
    x, y = make_data(64)
    model = make_model()
    threads = [threading.Thread(target=lambda: [model.train_step(x, y) for _ in range(20)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model.optimizer.step_count == 80
    assert all(np.isfinite(w).all() for w in dense_arrays(model))


@needs_resident_memory
def test_resident_memory_stays_flat_over_many_steps():
    x, y = make_data(512)
    model = make_model()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)  # workspaces sized here
    before = rss_bytes()
    model.fit(x, y, epochs=640, batch_size=32, verbose=0)  # 10,240 steps
    for _ in range(200):
        model.train_step(x[:32], y[:32])
    growth = rss_bytes() - before
    assert growth < 4 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB"


def test_threadpoolctl_sees_and_limits_the_openmp_runtime():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not mc.has_openmp():
        pytest.skip("built without OpenMP")
    mc.set_num_threads(2)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert mc.get_num_threads() == 1
    assert mc.get_num_threads() == 2
    apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
    assert "openmp" in apis


@pytest.mark.skipif(not mc.has_openmp(), reason="built without OpenMP")
def test_parallel_reductions_give_the_same_bits_for_any_thread_count():
    # > 2**18 parameters in one layer: the gradient-norm reduction runs its chunks in parallel
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 600)).astype(np.float32)
    y = rng.integers(0, 4, size=64)
    norms, weights_after = [], []
    for threads in (1, 2):
        mc.set_num_threads(threads)
        model = mc.Sequential([mc.Dense(600, 512), mc.ReLU(), mc.Dense(512, 4)], seed=2)
        model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.1), clip_norm=0.5)
        model.train_step(x, y)
        norms.append(model.last_grad_norm)
        weights_after.append(dense_arrays(model))
    assert norms[0] == norms[1]
    assert same_bits(weights_after[0], weights_after[1])


@pytest.mark.parametrize("batch_size", [10**6, 2**62, 2**63 - 1, 2**63, 2**70])
def test_batch_size_larger_than_the_data_is_one_batch(batch_size):
    """A batch never holds more rows than the data: no buffer sized by batch_size, no overflow of
    batch_size * features, and the result is that of batch_size = n."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 20)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    runs = []
    for size in (64, batch_size):
        model = mc.Sequential([mc.Dense(20, 8), mc.ReLU(), mc.Dense(8, 3)], seed=1)
        model.compile(loss="cross_entropy", optimizer="adam")
        model.fit(x, y, epochs=2, batch_size=size, verbose=0)
        runs.append(model.layers[0].weight.copy())
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("layers", [
    lambda: [mc.LayerNorm(16), mc.Dense(16, 2**63 - 1)],
    lambda: [mc.Dense(2**40, 2**40)],
    lambda: [mc.BatchNorm1d(2**60)],
    lambda: [mc.LayerNorm(2**61)],
])
def test_sizes_no_machine_can_hold_raise_value_error(layers):
    """Size arithmetic is checked before any allocation: it used to wrap to a tiny buffer that
    the initialisation then overran (a crash from a 260-byte model file)."""
    with pytest.raises((ValueError, MemoryError), match="layer 0|layer 1|limit|2\\^48"):
        mc.Sequential(layers(), dtype="float64")


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1") or (os.cpu_count() or 1) < 2,
                    reason="needs POSIX signals and two cores")
def test_a_signal_handler_sees_the_model_between_steps_never_inside_one():
    # The native loop asks Python about signals between batches; a handler (a checkpoint on
    # SIGUSR1) may read the weights there. With two threads, the other one may still be
    # applying its part of the last update when the calling thread reaches the check: the
    # check waits for it, so every snapshot is the state after some whole step.
    rng = np.random.default_rng(0)
    features, batch, steps = 64, 512, 40
    x = rng.normal(size=(batch * steps, features)).astype(np.float32)
    y = rng.integers(0, 10, size=batch * steps)

    def model():
        m = mc.Sequential([mc.Dense(features, 1024), mc.ReLU(), mc.Dense(1024, 1024), mc.Tanh(),
                           mc.Dense(1024, 10)], dtype="float32", seed=3)
        m.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-3))
        return m

    m, snapshots, stop, handled = model(), [], threading.Event(), threading.Event()

    def handler(*_):
        snapshots.append(m._net.params_view().copy())
        handled.set()

    def pinger():  # the next signal once the last was handled (a busy host: no pile-up)
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)
            handled.wait(1.0)
            handled.clear()
            time.sleep(0.005)

    before = signal.signal(signal.SIGUSR1, handler)
    threads = mc.get_num_threads()
    try:
        mc.set_num_threads(2)
        ping = threading.Thread(target=pinger)
        ping.start()
        try:
            m._net.train_batches(x, y, None, batch, 0, steps)
        finally:
            stop.set()
            ping.join()
        # every state the run passes through, one step per call at 1 thread
        mc.set_num_threads(1)
        ref = model()
        states = {ref._net.params_view().tobytes()}
        for j in range(steps):
            ref._net.train_batches(x, y, None, batch, j, 1)
            states.add(ref._net.params_view().tobytes())
    finally:
        signal.signal(signal.SIGUSR1, before)
        mc.set_num_threads(threads)
    assert snapshots, "the handler never ran"
    torn = [i for i, s in enumerate(snapshots) if s.tobytes() not in states]
    assert not torn, f"{len(torn)} of {len(snapshots)} snapshots match no step"
    np.testing.assert_array_equal(m._net.params_view(), ref._net.params_view())

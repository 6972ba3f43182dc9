"""BatchNorm1d(synchronized=True) and Sequential.set_batchnorm_reducer without MPI: replicas
run in threads of one process (the native passes release the GIL) and sum their statistics
through a barrier, so the mechanism is checked wherever the suite runs. Under mpiexec it is
checked against one process in test_distributed.py."""
import threading

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import distributed


class ThreadComm:
    """The part of distributed.Communicator that _StatSync uses, for replicas in threads:
    sums in rank order, the same on every replica."""

    def __init__(self, rank, size, shared):
        self.rank, self.size, self.shared = rank, size, shared

    def allreduce_(self, array):
        slots, barrier = self.shared
        slots[self.rank] = array.copy()
        barrier.wait()
        total = slots[0].copy()
        for other in slots[1:]:
            total += other
        barrier.wait()
        array[...] = total
        return array


def build(dtype="float64", synchronized=True):
    model = mc.Sequential([mc.BatchNorm1d(5, synchronized=synchronized), mc.Dense(5, 12),
                           mc.Tanh(), mc.BatchNorm1d(12, synchronized=synchronized),
                           mc.Dense(12, 3)], dtype=dtype, seed=11)
    model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.1))
    return model


def data(rows=20):
    rng = np.random.default_rng(3)
    return rng.normal(size=(rows, 5)), rng.integers(0, 3, size=rows)


def replica_gradients(cuts, dtype="float64"):
    """Each replica's compute_gradients on its rows, scaled as fit(distributed=True) scales
    them, then summed: the global batch's gradient."""
    x, y = data(cuts[-1])
    size = len(cuts) - 1
    shared = ([None] * size, threading.Barrier(size))
    models = [build(dtype) for _ in range(size)]
    results = [None] * size

    def run(rank):
        lo, hi = cuts[rank], cuts[rank + 1]
        sync = distributed._StatSync(models[rank], ThreadComm(rank, size, shared))
        models[rank].set_batchnorm_reducer(sync)
        sync.start((hi - lo) / cuts[-1])
        _, dx = models[rank].compute_gradients(x[lo:hi], y[lo:hi], return_input_grad=True)
        results[rank] = (models[rank].grads_view() * ((hi - lo) / cuts[-1]),
                         dx * ((hi - lo) / cuts[-1]), sync.done, len(sync.calls))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a replica hung"
    return models, results


@pytest.mark.parametrize("cuts", [(0, 12, 20), (0, 7, 13, 20), (0, 1, 20)])
def test_replicas_give_the_global_batch_gradient(cuts):
    models, results = replica_gradients(cuts)
    x, y = data(cuts[-1])
    whole = build()
    _, dx = whole.compute_gradients(x, y, return_input_grad=True)
    summed = sum(r[0] for r in results)
    np.testing.assert_allclose(summed, whole.grads_view(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), dx, rtol=0,
                               atol=1e-14)
    for _, _, done, expected in results:
        assert done == expected == 6  # 2 layers x (2 forward + 1 backward) reductions
    # the running statistics are the global batch's, the same on every replica
    for layer in (0, 3):
        for m in models:
            np.testing.assert_allclose(m.layers[layer].running_mean,
                                       whole.layers[layer].running_mean, rtol=0, atol=1e-15)
            np.testing.assert_allclose(m.layers[layer].running_var,
                                       whole.layers[layer].running_var, rtol=1e-14)


def test_float32_replicas_agree_with_one_process():
    _, results = replica_gradients((0, 9, 20), "float32")
    x, y = data(20)
    whole = build("float32")
    whole.compute_gradients(x, y)
    np.testing.assert_allclose(sum(r[0] for r in results), whole.grads_view(), rtol=0,
                               atol=2e-6)


def test_without_a_reducer_synchronized_changes_nothing():
    x, y = data()
    a, b = build(synchronized=True), build(synchronized=False)
    for _ in range(3):
        a.train_step(x, y)
        b.train_step(x, y)
    np.testing.assert_array_equal(a.params_view(), b.params_view())


def test_reducer_sees_each_layer_in_order_and_none_turns_it_off():
    x, y = data()
    model, calls = build(), []
    model.set_batchnorm_reducer(lambda values, kind: calls.append((values.size, kind)))
    model.train_step(x, y)
    assert calls == [(6, 0), (5, 1), (13, 0), (12, 1), (25, 2), (11, 2)]
    model.set_batchnorm_reducer(None)
    model.train_step(x, y)
    model.predict(x)  # inference uses the running statistics: no reduction
    assert len(calls) == 6


def test_only_synchronized_layers_reduce():
    x, y = data()
    model = mc.Sequential([mc.BatchNorm1d(5), mc.Dense(5, 4),
                           mc.BatchNorm1d(4, synchronized=True), mc.Dense(4, 3)],
                          dtype="float64", seed=1)
    model.compile(loss="cross_entropy", optimizer="sgd")
    calls = []
    model.set_batchnorm_reducer(lambda values, kind: calls.append((values.size, kind)))
    model.compute_gradients(x, y)
    assert calls == [(5, 0), (4, 1), (9, 2)]


def test_a_failing_reducer_raises_and_changes_nothing():
    x, y = data()
    model = build()
    before = model.get_weights()

    def failing(values, kind):
        if kind == 1:
            raise RuntimeError("allreduce failed")

    model.set_batchnorm_reducer(failing)
    with pytest.raises(RuntimeError, match="allreduce failed"):
        model.train_step(x, y)
    # parameters and running statistics alike (a non-finite statistic is never kept)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    model.set_batchnorm_reducer(None)
    model.train_step(x, y)  # usable again


def test_one_row_batches_are_allowed_only_with_synchronized_statistics():
    x, y = data()
    model = build()
    with pytest.raises(ValueError, match="BatchNorm1d needs more than 1 sample"):
        model.compute_gradients(x[:1], y[:1])
    model.set_batchnorm_reducer(lambda values, kind: None)
    model.compute_gradients(x[:1], y[:1])
    local = mc.Sequential([mc.BatchNorm1d(5), mc.Dense(5, 3)], dtype="float64")
    local.compile(loss="cross_entropy", optimizer="sgd")
    local.set_batchnorm_reducer(lambda values, kind: None)
    with pytest.raises(ValueError, match="BatchNorm1d needs more than 1 sample"):
        local.compute_gradients(x[:1], y[:1])


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="synchronized must be a bool, got str"):
        mc.BatchNorm1d(4, synchronized="yes")
    with pytest.raises(TypeError, match="fn must be a callable or None, got int"):
        build().set_batchnorm_reducer(3)


def test_synchronized_survives_save_and_load(tmp_path):
    model = build()
    model.save(tmp_path / "m.safetensors")
    loaded = mc.load(tmp_path / "m.safetensors")
    assert [getattr(layer, "synchronized", None) for layer in loaded.layers] == \
        [True, None, None, True, None]
    assert build(synchronized=False).layers[0].get_config().get("synchronized") is None

"""predict at more than one thread (cpp/net/network_shards.cpp, predict_sharded): from 128 rows
per thread each thread takes its own chunks through every layer. A row's outputs must not
depend on the chunk or the thread that computed it: the same bits as the serial path, for
every layer kind that inference runs."""
import numpy as np
import pytest

import mlpcore as mc
from helpers import same_bits


def _model(dtype, x):
    norm = mc.Normalization()
    norm.adapt(x)
    k = x.shape[1]
    return mc.Sequential([norm, mc.Dense(k, 96), mc.ReLU(), mc.BatchNorm1d(96),
                          mc.LayerNorm(96), mc.Residual([mc.Dense(96, 96), mc.Tanh()]),
                          mc.Dropout(0.3), mc.Dense(96, 40), mc.GELU(), mc.Dense(40, 7),
                          mc.Softmax()], dtype=dtype, seed=4)


@pytest.fixture
def threads():
    before = mc.get_num_threads()
    yield
    mc.set_num_threads(before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [255, 256, 257, 1000, 1537, 4100])
def test_sharded_predict_gives_the_serial_bits(dtype, n, threads):
    rng = np.random.default_rng(n)
    x = (rng.normal(size=(n, 20)) * 2 + 0.5).astype(dtype)
    model = _model(dtype, x)
    model.compile(loss="mse", optimizer="sgd")  # BatchNorm's running statistics move off 0/1
    model.fit(x[:64], rng.normal(size=(64, 7)), epochs=1, batch_size=32, verbose=0)
    mc.set_num_threads(2)
    sharded = model.predict(x)
    by_rows = model.predict(x, batch_size=100)  # calls of 100 rows: never cut
    mc.set_num_threads(1)
    serial = model.predict(x)
    assert same_bits(sharded, serial) and same_bits(sharded, by_rows)
    assert np.all(np.isfinite(sharded))


def test_out_buffer_and_evaluate_after_a_sharded_predict(threads):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 10)).astype(np.float32)
    model = mc.Sequential([mc.Dense(10, 64), mc.ReLU(), mc.Dense(64, 3)], seed=1)
    model.compile(loss="cross_entropy", optimizer="sgd")
    mc.set_num_threads(2)
    out = np.full((3000, 3), np.nan, np.float32)
    assert model.predict(x, out=out) is out
    mc.set_num_threads(1)
    assert same_bits(out, model.predict(x))
    y = rng.integers(0, 3, size=3000)
    model.fit(x, y, epochs=1, batch_size=500, verbose=0)  # the workspace still serves training
    mc.set_num_threads(2)
    after = model.predict(x)
    mc.set_num_threads(1)
    assert same_bits(after, model.predict(x))

"""Sequential.freeze (python/mlpcore/frozen.py, gemm::prepack_b): a private copy whose Dense
weights are packed once; it predicts the same bits as the model, on every ISA path, at any
batch and thread count, and nothing done to the model afterwards reaches it."""
import pickle

import numpy as np
import pytest

import mlpcore as mc
from helpers import kernel_isa, usable_isas

core = mc._core
K = 1 << 10


@pytest.fixture
def small_l2():
    # a 256 KiB L2 (same L1d, so the same K blocks): weights above 128 KiB are then packed,
    # not read in place, so the frozen copies are what the products read
    before = mc.kernel_info()["cache_sizes"]
    core._set_cache_sizes(before["l1d"], 256 * K, before["l3"])
    yield
    core._set_cache_sizes(before["l1d"], before["l2"], before["l3"])


def every_kind_model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    model = mc.Sequential([
        mc.Normalization(40, mean=rng.normal(size=40), variance=rng.uniform(0.5, 2, 40)),
        mc.Dense(40, 300), mc.ReLU(),
        mc.BatchNorm1d(300), mc.Dropout(0.3),
        mc.Residual([mc.Dense(300, 300), mc.LayerNorm(300), mc.GELU(), mc.Dense(300, 300)]),
        mc.Tanh(), mc.Dense(300, 200), mc.SiLU(), mc.Dense(200, 7),
    ], dtype=dtype, seed=seed)
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-3))
    x = rng.standard_normal((64, 40)).astype(dtype)
    model.fit(x, rng.integers(0, 7, 64), epochs=1, batch_size=16)  # BatchNorm statistics
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("isa", usable_isas())
def test_frozen_predicts_the_models_bits(isa, dtype, small_l2):  # conftest restores threads
    rng = np.random.default_rng(1)
    with kernel_isa(isa):
        model = every_kind_model(dtype)
        frozen = model.freeze()
        assert frozen._model._net.prepacked_bytes > 0
        for threads in (1, 2):
            mc.set_num_threads(threads)
            for rows in (1, 5, 16, 100, 600):  # 600: rows sharded over the threads
                x = rng.standard_normal((rows, 40)).astype(dtype)
                np.testing.assert_array_equal(frozen.predict(x), model.predict(x))
                np.testing.assert_array_equal(frozen(x), model.predict(x))
        np.testing.assert_allclose(frozen.predict_proba(x), model.predict_proba(x), rtol=0)


def test_frozen_after_an_isa_or_blocking_change_packs_as_usual(small_l2):
    model = every_kind_model("float32")
    x = np.random.default_rng(2).standard_normal((32, 40)).astype(np.float32)
    frozen = model.freeze()
    for isa in usable_isas():  # packed for the first ISA; the others pack B themselves
        with kernel_isa(isa):
            np.testing.assert_array_equal(frozen.predict(x), model.predict(x))
    caches = mc.kernel_info()["cache_sizes"]
    core._set_cache_sizes(caches["l1d"] // 2, caches["l2"], caches["l3"])  # another K split
    np.testing.assert_array_equal(frozen.predict(x), model.predict(x))


def test_nothing_done_to_the_model_reaches_the_frozen_copy(small_l2):
    model = every_kind_model("float64")
    x = np.random.default_rng(3).standard_normal((20, 40))
    frozen = model.freeze()
    before = frozen.predict(x).copy()
    model.layers[1].weight[...] = 0.0
    model.fit(x, np.zeros(20, dtype=np.int64), epochs=2, batch_size=10)
    np.testing.assert_array_equal(frozen.predict(x), before)
    assert not np.array_equal(model.predict(x), before)


def test_a_training_step_drops_the_packed_weights(small_l2):
    # the native contract: packed copies are read only while the weights cannot have changed
    model = every_kind_model("float32")
    x = np.random.default_rng(4).standard_normal((16, 40)).astype(np.float32)
    model._net.prepack_weights()
    assert model._net.prepacked_bytes > 0
    model.train_step(x, np.arange(16) % 7)
    assert model._net.prepacked_bytes == 0
    expected = model.freeze().predict(x)
    np.testing.assert_array_equal(model.predict(x), expected)


def test_frozen_pickles_and_packs_again_where_it_is_loaded(small_l2):
    model = every_kind_model("float32")
    model.classes_ = [f"c{i}" for i in range(7)]
    frozen = pickle.loads(pickle.dumps(model.freeze()))
    x = np.random.default_rng(5).standard_normal((50, 40)).astype(np.float32)
    np.testing.assert_array_equal(frozen.predict(x), model.predict(x))
    assert frozen._model._net.prepacked_bytes > 0
    assert list(frozen.classes_) == list(model.classes_)
    assert (frozen.in_features, frozen.out_features, frozen.dtype) == (40, 7, model.dtype)


def test_frozen_checks_its_input_as_predict_does():
    frozen = mc.Sequential([mc.Dense(4, 3)], seed=0).freeze()
    with pytest.raises(ValueError, match="predict"):
        frozen.predict(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="predict"):
        frozen.predict(np.array([["a"] * 4]))
    with pytest.raises(ValueError, match="does not define class probabilities"):
        frozen.predict_proba(np.zeros((2, 4), np.float32))  # never compiled: no loss
    out = np.empty((2, 3), np.float32)
    assert frozen.predict(np.ones((2, 4), np.float32), out=out) is out

"""Property rounds (hypothesis): random model metadata and tensors, mutated files, and batch sizes
give a model or a clean exception (ValueError / TypeError / OSError), never another exception, a
crash or an allocation the file cannot back. The long fuzzing run is fuzz_load.py (.ci/run)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

import make_corpus  # noqa: E402
from mutate import mutate  # noqa: E402

import mlpcore as mc  # noqa: E402

SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

HUGE = [2**31, 2**32 + 1, 2**60, 2**61, 2**63 - 1, 2**63, 2**64, 10**30]
SIZE = st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(-2, 0), st.sampled_from(HUGE),
                 st.sampled_from(["4", 4.0, None, True, [4]]))
REAL = st.one_of(st.sampled_from([1e-5, 0.1, 0.5, 1.0]),
                 st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["0.1", None]))
ACTIVATIONS = ["Identity", "ReLU", "SELU", "SiLU", "Sigmoid", "Tanh", "Softmax", "GELU",
               "LeakyReLU", "ELU", "Softplus"]


def _leaf():
    dense = st.fixed_dictionaries({"type": st.just("Dense"), "in_features": SIZE,
                                   "out_features": SIZE},
                                  optional={"init": st.sampled_from(["glorot_uniform", "array"]),
                                            "l2": REAL})
    layer_norm = st.fixed_dictionaries({"type": st.just("LayerNorm"), "normalized_shape": SIZE,
                                        "eps": REAL})
    batch_norm = st.fixed_dictionaries({"type": st.just("BatchNorm1d"), "num_features": SIZE,
                                        "eps": REAL, "momentum": REAL})
    activation = st.fixed_dictionaries({"type": st.sampled_from(ACTIVATIONS)},
                                       optional={"negative_slope": REAL, "alpha": REAL})
    dropout = st.fixed_dictionaries({"type": st.just("Dropout"), "p": REAL})
    junk = st.one_of(st.integers(), st.text(max_size=3), st.none(),
                     st.fixed_dictionaries({"type": st.sampled_from(["Conv2d", "", "residual"])}))
    return st.one_of(dense, dense, layer_norm, batch_norm, activation, dropout, junk)


LAYERS = st.lists(st.recursive(_leaf(), lambda inner: st.fixed_dictionaries(
    {"type": st.just("Residual"), "layers": st.lists(inner, min_size=0, max_size=3)}),
    max_leaves=6), min_size=0, max_size=5)


def _arrays(configs, index, out):
    """Tensors a file would hold for ``configs`` (sizes taken as they come; only small ones are
    materialised), by plan index as the writer names them; returns the next plan index."""
    for config in configs:
        if not isinstance(config, dict):
            index += 1
            continue
        kind = config.get("type")
        if kind == "Residual" and isinstance(config.get("layers"), list):
            index = _arrays(config["layers"], index + 1, out) + 1
            continue
        if kind == "Dense":
            shapes = {"weight": (config["in_features"], config["out_features"]),
                      "bias": (config["out_features"],)}
        elif kind in ("LayerNorm", "BatchNorm1d"):
            n = config.get("normalized_shape", config.get("num_features"))
            shapes = {"weight": (n,), "bias": (n,)}
            if kind == "BatchNorm1d":
                shapes.update(running_mean=(n,), running_var=(n,))
        else:
            shapes = {}
        for name, shape in shapes.items():
            if all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 8 for d in shape):
                out[f"layers.{index}.{name}"] = shape
            else:  # a size no file of this test could back: a small stand-in
                out[f"layers.{index}.{name}"] = (2,)
        index += 1
    return index


@st.composite
def model_files(draw):
    layers = draw(LAYERS)
    dtype = draw(st.sampled_from(["float32", "float64", "float32", "float16", "int32", 5, None]))
    file_dtype = np.dtype(dtype if dtype in ("float32", "float64") else "float32")
    if draw(st.booleans()):
        file_dtype = np.dtype(draw(st.sampled_from(["float32", "float64"])))
    shapes = {}
    _arrays(layers, 0, shapes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tensors = {name: rng.normal(size=shape).astype(file_dtype) for name, shape in shapes.items()}
    if tensors and draw(st.booleans()):  # spoil one: drop it or change its shape
        name = draw(st.sampled_from(sorted(tensors)))
        if draw(st.booleans()):
            del tensors[name]
        else:
            tensors[name] = np.zeros(tensors[name].size + 1, file_dtype)
    if draw(st.integers(0, 9)) == 0:
        tensors["optimizer.exp_avg"] = np.zeros(3, file_dtype)
    meta = make_corpus.model_meta(layers, dtype)
    return meta, tensors


@SETTINGS
@given(model_files())
def test_random_model_metadata_loads_or_raises_value_error(tmp_path, file):
    meta, tensors = file
    path = make_corpus.tensor_file(tmp_path / "random.safetensors", meta, tensors)
    try:
        model = mc.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    x = np.zeros((2, model.in_features), model.dtype)
    assert model.predict(x).shape == (2, model.out_features)


SEEDS = None


def _seeds(folder: Path):
    global SEEDS
    if SEEDS is None:
        SEEDS = [p.read_bytes() for p in make_corpus.valid_files(folder)]
    return SEEDS


@SETTINGS
@given(st.randoms(use_true_random=False), st.integers(1, 4), st.integers(0, 1))
def test_mutated_files_load_or_raise_clean_errors(tmp_path, rng, rounds, which):
    data = _seeds(tmp_path / "seeds")[which]
    for _ in range(rounds):
        data = mutate(data, rng)
    path = tmp_path / "mutated.safetensors"
    path.write_bytes(data)
    for load in (mc.load, mc.load_checkpoint):
        try:
            load(path)
        except ValueError as exc:
            assert str(path) in str(exc) or not str(exc).startswith(load.__name__), exc


BATCH_SIZES = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**62, 2**63 - 1, 2**63,
                                                              2**64, 10**7, 10**30]),
                        st.sampled_from([True, 2.0, "8", None, np.int64(4), np.uint64(2**63)]))


@SETTINGS
@given(BATCH_SIZES, st.integers(1, 12), st.sampled_from(["float32", "float64"]))
def test_fit_batch_sizes_train_or_raise_clean_errors(batch_size, n, dtype):
    model = mc.Sequential([mc.Dense(3, 4), mc.ReLU(), mc.BatchNorm1d(4), mc.Dense(4, 2)],
                          dtype=dtype, seed=0)
    model.compile(loss="mse", optimizer="sgd")
    x = np.linspace(-1, 1, 3 * n).reshape(n, 3)
    y = np.ones((n, 2))
    try:
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    except (TypeError, ValueError) as exc:
        assert "batch_size" in str(exc) or "BatchNorm" in str(exc) or "batch" in str(exc), exc
        return
    assert all(np.isfinite(layer.weight).all() for layer in model.layers
               if isinstance(layer, mc.Dense))

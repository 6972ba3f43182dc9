"""The training benchmark: the NumPy reference MLP matches mlpcore, and the harness runs."""
import json
import os

import numpy as np
import pytest

import mlpcore as mc
from mlpcore.bench import children, harness
from mlpcore.bench.numpy_mlp import NumpyMLP
from mlpcore.bench.workloads import (
    WORKLOADS,
    initial_params,
    make_data,
    model_flops_per_sample,
    theoretical_bytes,
)

SIZES = (7, 12, 9, 4)


def _params(rng):
    params = []
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        params.append((rng.standard_normal((a, b)) / np.sqrt(a), 0.1 * rng.standard_normal(b)))
    return params


def _pair(rng, optimizer):
    params = _params(rng)
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers += [mc.Dense(a, b)] + ([mc.ReLU()] if i < len(SIZES) - 2 else [])
    model = mc.Sequential(layers, dtype="float64", seed=0)
    dense = [layer for layer in model.layers if isinstance(layer, mc.Dense)]
    for layer, (w, b) in zip(dense, params):
        layer.weight[...] = w
        layer.bias[...] = b
    opt = mc.optim.SGD(lr=0.1) if optimizer == "sgd" else mc.optim.Adam(lr=0.01)
    model.compile(loss="cross_entropy", optimizer=opt)
    ref = NumpyMLP([w for w, _ in params], [b for _, b in params], optimizer=optimizer,
                   lr=0.1 if optimizer == "sgd" else 0.01, dtype=np.float64)
    return model, dense, ref


def _batch(rng, n=10):
    return rng.standard_normal((n, SIZES[0])), rng.integers(0, SIZES[-1], n)


def test_numpy_loss_and_gradients_match_mlpcore(rng):
    model, dense, ref = _pair(rng, "sgd")
    x, y = _batch(rng)
    loss, dW, db = ref.loss_and_grads(x, y)
    assert loss == pytest.approx(model.compute_gradients(x, y), rel=1e-12)
    for layer, gw, gb in zip(dense, dW, db):
        np.testing.assert_allclose(layer.weight_grad, gw, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(layer.bias_grad, gb, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_numpy_steps_match_mlpcore(rng, optimizer):
    model, dense, ref = _pair(rng, optimizer)
    for _ in range(5):
        x, y = _batch(rng)
        assert ref.train_step(x, y) == pytest.approx(model.train_step(x, y), rel=1e-10)
    for layer, w, b in zip(dense, ref.W, ref.b):
        np.testing.assert_allclose(layer.weight, w, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.bias, b, rtol=1e-9, atol=1e-12)


def test_numpy_fit_learns(rng):
    wl = WORKLOADS["tiny"]
    x, y = make_data(wl)
    params = initial_params(wl.sizes)
    ref = NumpyMLP([w for w, _ in params], [b for _, b in params], lr=wl.lr)
    first = ref.fit(x, y, epochs=1, batch_size=wl.batch)
    last = ref.fit(x, y, epochs=3, batch_size=wl.batch)
    assert np.isfinite(last) and last < first


def test_workload_inputs():
    for wl in WORKLOADS.values():
        params = initial_params(wl.sizes)
        assert [w.shape for w, _ in params] == list(zip(wl.sizes[:-1], wl.sizes[1:]))
        th = theoretical_bytes(wl)
        assert th["total"] == sum(v for k, v in th.items() if k != "total")
    x, y = make_data(WORKLOADS["digits"])
    assert x.shape == (1797, 64) and x.dtype == np.float32 and set(np.unique(y)) == set(range(10))


def test_harness_end_to_end(tmp_path):
    report = harness.run(["tiny"], ["mlpcore", "numpy"], repeats=1, threads=1, seconds=0.2,
                         out_dir=str(tmp_path), plot=False)
    data = json.loads((tmp_path / "train.json").read_text())
    assert {"workloads", "scaling", "meta", "errors"} <= set(data)
    assert data["errors"] == []
    tiny = data["workloads"]["tiny"]
    assert {"config", "results", "ratios", "memory"} <= set(tiny)
    for c in ("mlpcore", "numpy"):
        assert tiny["results"][c]["samples_per_s"] > 0
    assert tiny["ratios"]["mlpcore/numpy"] > 0
    assert tiny["memory"]["theoretical_bytes"]["total"] > 0
    # the memory figure is read after fits of at most 10,000 steps, the whole run's after
    per_epoch = -(-WORKLOADS["tiny"].samples // WORKLOADS["tiny"].batch)
    steps = tiny["results"]["mlpcore"]["memory_fit_steps"]
    assert all(per_epoch <= s < 10_000 + per_epoch for s in steps)
    memory = tiny["memory"]
    assert memory["mlpcore_peak_increase_bytes_whole_run"] >= memory["mlpcore_peak_increase_bytes"]
    text = harness.format_report(report)
    assert "mc/numpy" in text and "allowed" in text
    # model GFLOP/s and the share of the FMA peak measured at the children's ISA
    peak = data["fma_peak"]
    assert peak["isa"] == mc.kernel_info()["elementwise_isa"]
    mine = tiny["results"]["mlpcore"]
    assert mine["model_gflops"] == pytest.approx(
        mine["samples_per_s"] * model_flops_per_sample(WORKLOADS["tiny"]) / 1e9)
    if peak["lanes"]:  # an FMA ISA: a peak, and the share of it
        assert peak["gflops"]["1"] > 0
        assert mine["peak_share"] == pytest.approx(mine["model_gflops"] / peak["gflops"]["1"])
        assert "FMA peak" in text and "tiny" in text.split("FMA peak")[1]


def test_model_flops_count_every_product_but_the_first_input_gradient():
    # 2-16-16-2: products 32, 256, 32; forward + weight gradients + input gradients of the
    # two upper layers, 2 flops per multiply-add
    assert model_flops_per_sample(WORKLOADS["tiny"]) == 2 * (2 * 320 + 288)


def test_fma_peak_probe():
    gflops, lanes = mc._core.fma_peak_gflops(1, 0.05)
    assert lanes in (0, 8, 16)
    assert (gflops > 0) == (lanes > 0)
    for bad in (0, 100_000, 2**31 - 1):  # (the two large ones crashed the process)
        with pytest.raises(ValueError, match=r"threads must lie in \[1, 1024\]"):
            mc._core.fma_peak_gflops(bad, 0.01)
    with pytest.raises(ValueError, match="seconds"):
        mc._core.fma_peak_gflops(1, float("nan"))


def test_core_probe_times_every_copy():
    seconds = children.core_probe(2)
    assert 0 < seconds < 30


def test_disturbed_runs_are_redone_and_the_quietest_kept():
    best = 0.10
    calm = {"samples_per_s": 100.0, "others_cpu_share": 0.01, "core_probe_s": 0.105}
    busy = {"samples_per_s": 90.0, "others_cpu_share": 0.60, "core_probe_s": 0.100}
    slow = {"samples_per_s": 70.0, "others_cpu_share": 0.0, "core_probe_s": 0.13}
    assert not children.is_disturbed(calm, best)
    assert children.is_disturbed(busy, best)   # another process took a core
    assert children.is_disturbed(slow, best)   # the cores ran 30% slower than their best
    assert not children.is_disturbed({"samples_per_s": 1.0}, best)  # nothing measured: kept
    assert children.pick_attempt([busy, slow, calm]) is calm
    assert children.pick_attempt([busy, slow]) is slow


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_library_pages_are_faulted_in_before_the_peak_reset():
    # the benchmark child pages in library code before measuring, so that first-use page faults
    # of code do not count as memory the model allocated
    from mlpcore.bench import contenders

    touched = contenders._fault_in_library_pages()
    file_before = contenders._status_kb("RssFile")
    again = contenders._fault_in_library_pages()
    assert touched > 0 and again >= touched * 0.9
    # everything was resident already: a second pass pages in (almost) nothing new
    assert contenders._status_kb("RssFile") - file_before < 1024


def test_child_env_pins_each_contenders_threads(monkeypatch):
    monkeypatch.delenv("MLPCORE_GEMM_ISA", raising=False)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    blas = children.child_env("numpy", 3)
    assert (blas["OMP_NUM_THREADS"], blas["OPENBLAS_NUM_THREADS"], blas["MKL_NUM_THREADS"]) == \
        ("3", "3", "3")
    assert "OPENBLAS_CORETYPE" not in blas  # picks slow kernels on a current NumPy
    mine = children.child_env("mlpcore", 2)
    assert (mine["OMP_NUM_THREADS"], mine["OPENBLAS_NUM_THREADS"], mine["MKL_NUM_THREADS"]) == \
        ("2", "1", "1")
    assert mine["PYTHONPATH"].split(os.pathsep)[0] == children.PKG_ROOT
    assert mine["OPENBLAS_CORETYPE"] == "Haswell"
    torch = children.child_env("torch", 2)
    assert (torch["OMP_NUM_THREADS"], torch["OPENBLAS_NUM_THREADS"], torch["MKL_NUM_THREADS"]) == \
        ("2", "1", "2")
    caller = children.child_env("numpy", None)  # thread counts left as the caller set them
    assert caller["OMP_NUM_THREADS"] == "7" and "OPENBLAS_CORETYPE" not in caller


def test_child_env_keeps_the_blas_core_type_when_mlpcore_is_restricted_too(monkeypatch):
    # MLPCORE_GEMM_ISA=avx2 beside OPENBLAS_CORETYPE=Haswell: both libraries on AVX2
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("MLPCORE_GEMM_ISA", "avx2")
    for contender in ("numpy", "sklearn", "mlpcore"):
        env = children.child_env(contender, 2)
        assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["MLPCORE_GEMM_ISA"] == "avx2"


def test_child_env_restricts_torch_to_the_isa_mlpcore_is_restricted_to(monkeypatch):
    for key in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("MLPCORE_GEMM_ISA", raising=False)
    assert "ATEN_CPU_CAPABILITY" not in children.child_env("torch", 2)  # native: unrestricted
    monkeypatch.setenv("MLPCORE_GEMM_ISA", "avx2")
    env = children.child_env("torch", 2)
    assert (env["ATEN_CPU_CAPABILITY"], env["ONEDNN_MAX_CPU_ISA"],
            env["MKL_ENABLE_INSTRUCTIONS"]) == ("avx2", "AVX2", "AVX2")
    assert "ATEN_CPU_CAPABILITY" not in children.child_env("numpy", 2)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # the caller's own choice stays
    assert children.child_env("torch", 2)["ATEN_CPU_CAPABILITY"] == "default"


def test_run_json_child_reads_the_last_line_and_names_a_failure():
    echo = "import json, sys; print('noise'); print(json.dumps({'got': json.loads(sys.argv[1])}))"
    res = children.run_json_child(["-c", echo], {"a": 1}, dict(os.environ))
    assert res["got"] == {"a": 1}
    with pytest.raises(RuntimeError, match="(?s)the failing child failed.*boom"):
        children.run_json_child(["-c", "raise SystemExit('boom')"], {}, dict(os.environ),
                                what="the failing child")


def test_quiet_runner_redoes_a_disturbed_run_and_keeps_the_quiet_one(monkeypatch):
    monkeypatch.setattr(children, "core_probe", lambda processes: 0.10)
    monkeypatch.setattr(children.time, "sleep", lambda s: None)
    results = iter([{"samples_per_s": 50.0, "others_cpu_share": 0.7},
                    {"samples_per_s": 90.0, "others_cpu_share": 0.0}])
    runner = children.QuietRunner(retries=2, record=("samples_per_s",))
    kept = runner.run(lambda: next(results), probe_processes=2)
    assert kept["samples_per_s"] == 90.0 and runner.redone == 1
    assert kept["noisy_attempts"] == [{"samples_per_s": 50.0, "others_cpu_share": 0.7,
                                       "core_probe_s": 0.10}]
    always_busy = children.QuietRunner(retries=1)
    kept = always_busy.run(lambda: {"others_cpu_share": 0.9}, probe_processes=1)
    assert always_busy.redone == 1 and len(kept["noisy_attempts"]) == 1  # gives up after retries

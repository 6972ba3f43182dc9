"""benchmarks/product_ceiling.py: the products it times are those the training benchmark counts,
its child times them with each library, and its report's ratios are the ceiling over the
measured training speeds."""
import json
import subprocess
import sys

import pytest

from helpers import BENCHMARKS, load_benchmark
from mlpcore.bench.workloads import WORKLOADS, model_flops_per_sample

SCRIPT = BENCHMARKS / "product_ceiling.py"


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_step_products_are_the_flops_the_training_benchmark_counts(name):
    w = WORKLOADS[name]
    shapes = load_benchmark("product_ceiling").step_products(w.sizes, w.batch)
    assert sum(2 * m * k * n for m, k, n, _, _ in shapes) == model_flops_per_sample(w) * w.batch
    # each product's operands chain: a forward product's K is the layer's input width
    assert [(m, k) for m, k, _, ta, tb in shapes[:len(w.sizes) - 1]] == \
        [(w.batch, width) for width in w.sizes[:-1]]


@pytest.mark.parametrize("lib", ["mlpcore", "numpy"])
def test_child_times_the_step_of_a_workload(lib):
    w = WORKLOADS["tiny"]
    payload = {"lib": lib, "sizes": list(w.sizes), "batch": w.batch, "threads": 1}
    out = subprocess.run([sys.executable, str(SCRIPT), "--child", json.dumps(payload)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["step_s"] > 0
    assert res["samples_per_s"] == pytest.approx(w.batch / res["step_s"])


def test_report_gives_the_ceiling_over_each_measured_training_speed(capsys):
    script = load_benchmark("product_ceiling")
    results = {"wide": {"mlpcore": [900.0, 1000.0, 1100.0], "torch": [2000.0, 2000.0, 2000.0]}}
    train = {"meta": {"date": "then"}, "fma_peak": {"isa": "avx2"}, "workloads": {"wide": {
        "results": {"mlpcore": {"samples_per_s": 800.0}, "torch": {"samples_per_s": 500.0},
                    "mlpcore@1t": {"samples_per_s": 450.0}}}}}
    script.report(results, train, threads=2)
    out = capsys.readouterr().out
    flops = model_flops_per_sample(WORKLOADS["wide"])
    assert f"{1000.0 * flops / 1e9:6.1f}" in out  # the median's GFLOP/s
    line = next(x for x in out.splitlines() if x.strip().startswith("wide") and "trains" in x)
    assert "80% of its products' ceiling" in line      # 800 / 1000
    assert "vs torch today 1.60x, at most 2.00x" in line  # 800 / 500, 1000 / 500
    assert "@1t" not in line


def test_report_gives_no_ceiling_where_training_outruns_the_calls(capsys):
    # tiny products cost less than a Python call each: the calls are no ceiling on training
    train = {"meta": {}, "workloads": {"tiny": {"results": {
        "mlpcore": {"samples_per_s": 2000.0}, "torch": {"samples_per_s": 100.0}}}}}
    load_benchmark("product_ceiling").report(
        {"tiny": {"mlpcore": [1000.0], "torch": [800.0]}}, train, threads=2)
    out = capsys.readouterr().out
    assert "no ceiling here" in out and "at most" not in out


def test_help_and_bad_arguments():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--train-json" in out.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "0"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--repeats" in bad.stderr

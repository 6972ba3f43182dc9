"""benchmarks/machine.py on any x86-64 CPU: --help, the choice of ISAs to probe, and its probes
under MLPCORE_GEMM_ISA=avx2 (only the AVX2 peak and the AVX2 micro-kernel, even on an AVX-512
machine)."""
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

import mlpcore as mc
from helpers import BENCHMARKS, load_benchmark

SCRIPT = BENCHMARKS / "machine.py"


def run_script(*args, env_isa=None, timeout=900):
    env = dict(os.environ)
    env.pop("MLPCORE_GEMM_ISA", None)
    if env_isa:
        env["MLPCORE_GEMM_ISA"] = env_isa
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help_runs_no_probe():
    out = run_script("--help", timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--isa" in out.stdout and "--quick" in out.stdout
    assert "GFLOP/s" not in out.stdout


@pytest.mark.parametrize("cap, requested, want", [
    (None, None, ["avx512", "avx2"]), ("avx2", None, ["avx2"]),
    ("avx512", None, ["avx512", "avx2"]), ("portable", None, []), (None, ["avx2"], ["avx2"]),
    ("avx2", ["avx512"], []),
])
def test_only_the_cpus_isas_up_to_mlpcore_gemm_isa_are_probed(monkeypatch, cap, requested, want):
    machine = load_benchmark("machine")
    if cap is None:
        monkeypatch.delenv("MLPCORE_GEMM_ISA", raising=False)
    else:
        monkeypatch.setenv("MLPCORE_GEMM_ISA", cap)
    assert machine.isas_to_probe(["avx512", "avx2"], requested) == want
    # an AVX2-only CPU is never asked for AVX-512
    assert "avx512" not in machine.isas_to_probe(["avx2"], requested)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 probes")
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="needs a C++ compiler")
@pytest.mark.skipif("avx2" not in mc.kernel_info()["available"], reason="needs an AVX2 CPU")
def test_probe_path_under_mlpcore_gemm_isa_avx2():
    out = run_script("--quick", env_isa="avx2")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(r"probed: avx2\b", text), text
    assert "avx512 micro-kernel" not in text
    header = next(line for line in text.splitlines() if line.strip().startswith("threads"))
    assert header.split() == ["threads", "avx2"]
    rate = re.search(r"mlpcore avx2 micro-kernel alone.*float32 ([\d.]+), float64 ([\d.]+)", text)
    assert rate and float(rate.group(1)) > 0 and float(rate.group(2)) > 0, text

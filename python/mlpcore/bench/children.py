"""Benchmark child processes: their thread environment, launching them, and host noise.

Every benchmark (``mlpcore bench``, ``benchmarks/gemm.py``, ``benchmarks/ab_builds.py``) times each
contender in its own fresh process, so that one library's worker threads (OpenBLAS and OpenMP
threads spin for a while after a call) never compete with another's kernels. This module is the
one place that says how such a child is started and judged:

- :func:`child_env`: the environment pinning a contender's thread counts;
- :func:`run_json_child`: run a child, read its last stdout line as JSON, and record the share of
  the machine's CPU that other processes used meanwhile;
- :func:`core_probe` and :class:`QuietRunner`: redo a child run started on slowed cores or
  disturbed by other processes, keeping the quietest attempt.

Standard library only: importing it never loads NumPy or mlpcore's native module.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

# Set in some environments; they pick slower OpenBLAS kernels on a current NumPy, so BLAS children
# run without them, unless MLPCORE_GEMM_ISA restricts mlpcore too: then both libraries are meant
# to run the same ISA (MLPCORE_GEMM_ISA=avx2 beside OPENBLAS_CORETYPE=Haswell).
SLOW_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BLAS_CONTENDERS = ("numpy", "sklearn")
# PyTorch picks its kernels by the CPU alone (its vectorised ops, oneDNN and MKL each dispatch on
# their own), so an ISA-restricted comparison restricts it too, through each one's documented
# variable (unless the caller set it).
TORCH_ISA_VARS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "portable": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
NOISY = 0.25  # a child run is "noisy" when other processes took this share of all CPUs
SLOW_CORES = 1.15  # ... or when the core probe before it ran this much slower than the best one
# The core probe: a fixed pure-Python loop, one copy per thread at once. On a shared host a core
# can run 20-30% slower for minutes (a neighbour on its sibling hyperthread) without any trace
# in /proc/stat, and such a run would be compared with others that ran on a full core.
_PROBE = ("import time\nt = time.perf_counter()\ns = 0\nfor i in range(400000):\n    s += i * i\n"
          "print(time.perf_counter() - t)")
# The directory holding the imported mlpcore package: a child that imports mlpcore gets it on
# PYTHONPATH, so that it runs the same build as its parent (a source checkout included).
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(contender: str, threads: Optional[int]) -> Dict[str, str]:
    """This process's environment with the thread counts of a ``contender`` child.

    ``numpy``/``sklearn``: BLAS and OpenMP at ``threads``, without the slow-kernel variables
    (kept when ``MLPCORE_GEMM_ISA`` is set: an ISA-restricted comparison);
    ``torch``: its OpenMP/MKL pools at ``threads``, OpenBLAS idle, and restricted to the ISA
    ``MLPCORE_GEMM_ISA`` names (TORCH_ISA_VARS); ``mlpcore``: OpenMP at
    ``threads``, NumPy's BLAS idle, mlpcore importable. ``threads=None`` keeps the thread
    variables as they are (the caller set them).
    """
    env = dict(os.environ)
    if contender in BLAS_CONTENDERS and not env.get("MLPCORE_GEMM_ISA"):
        for key in SLOW_BLAS_VARS:
            env.pop(key, None)
    if contender == "torch":
        for key, value in TORCH_ISA_VARS.get(env.get("MLPCORE_GEMM_ISA", ""), {}).items():
            env.setdefault(key, value)
    if contender == "mlpcore":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_ROOT, env.get("PYTHONPATH")) if p)
    if threads is None:
        return env
    many = str(threads)
    blas = many if contender in BLAS_CONTENDERS else "1"
    mkl = "1" if contender == "mlpcore" else many
    env.update(OMP_NUM_THREADS=many, OPENBLAS_NUM_THREADS=blas, MKL_NUM_THREADS=mkl)
    return env


def cpu_ticks():
    """(busy, total) jiffies of the whole machine, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


def run_json_child(args: Sequence[str], payload: Mapping, env: Mapping[str, str],
                   what: str = "benchmark child", timeout: float = 1800.0) -> dict:
    """Run ``python *args '<json payload>'`` and return the JSON of its last stdout line.

    Adds ``others_cpu_share``: the share of the machine's CPU time that other processes used while
    the child ran (Linux). Raises RuntimeError naming ``what`` with the end of the child's stderr
    when it fails; subprocess.TimeoutExpired after ``timeout`` seconds.
    """
    cmd = [sys.executable, *args, json.dumps(dict(payload))]
    before, used = cpu_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=timeout)
    after, used2 = cpu_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"{what} failed (exit {out.returncode}):\n{tail}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if before and after and after[1] > before[1]:
        hz = os.sysconf("SC_CLK_TCK")
        mine = (used2.ru_utime + used2.ru_stime - used.ru_utime - used.ru_stime) * hz
        res["others_cpu_share"] = max(0.0, (after[0] - before[0] - mine) / (after[1] - before[1]))
    return res


def core_probe(processes: int) -> float:
    """Seconds taken by the slowest of ``processes`` simultaneous copies of the probe loop."""
    procs = [subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, text=True)
             for _ in range(max(1, processes))]
    return max(float(p.communicate()[0]) for p in procs)


def is_disturbed(res: dict, best_probe: float) -> bool:
    """Whether a child run should be redone: other processes took a core, or the cores ran slow."""
    if (res.get("others_cpu_share") or 0) > NOISY:
        return True
    probe = res.get("core_probe_s")
    return probe is not None and probe > SLOW_CORES * best_probe


def pick_attempt(attempts: List[dict]) -> dict:
    """The attempt to keep: the quietest by other processes' CPU share, then the fastest probe."""
    return min(attempts, key=lambda r: ((r.get("others_cpu_share") or 0) > NOISY,
                                        r.get("core_probe_s") or 0.0))


class QuietRunner:
    """Runs children after a core probe; redoes a disturbed run up to ``retries`` times.

    The best probe is kept per number of probe processes over the runner's life. The kept result
    carries ``core_probe_s`` and, when runs were redone, ``noisy_attempts`` (each redone run's
    ``record`` fields, its CPU share and its probe).
    """

    def __init__(self, retries: int, record: Sequence[str] = ()):
        self.retries = max(0, retries)
        self.record = tuple(record)
        self.best_probe: Dict[int, float] = {}
        self.redone = 0

    def run(self, child: Callable[[], dict], probe_processes: int) -> dict:
        attempts: List[dict] = []
        while True:
            probe = core_probe(probe_processes)
            best = self.best_probe[probe_processes] = min(
                self.best_probe.get(probe_processes, probe), probe)
            res = child()
            res["core_probe_s"] = probe
            attempts.append(res)
            if not is_disturbed(res, best) or len(attempts) > self.retries:
                break
            time.sleep(1.0)  # let a passing disturbance pass
        keep = pick_attempt(attempts)
        rest = [r for r in attempts if r is not keep]
        self.redone += len(rest)
        if rest:
            keep["noisy_attempts"] = [
                {k: r.get(k) for k in (*self.record, "others_cpu_share", "core_probe_s")}
                for r in rest]
        return keep

"""Run one benchmark contender in its own Python process and collect its JSON report.

Each contender (mlpcore or NumPy/OpenBLAS) runs in a fresh child process so that one library's
worker threads (OpenBLAS threads spin for a while after a call; OpenMP threads likewise) never
compete with the other library's kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Mapping

# Set in some environments; they pick slower OpenBLAS kernels on a current NumPy, so NumPy
# children run without them.
NUMPY_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def run_child(script: str, payload: Mapping[str, Any], env_set: Mapping[str, str] | None = None,
              env_unset: tuple[str, ...] = (), timeout: float = 1800.0) -> dict:
    """Run `python script --child '<json payload>'` and parse the last stdout line as JSON."""
    env = dict(os.environ)
    for key in env_unset:
        env.pop(key, None)
    env.update(env_set or {})
    cmd = [sys.executable, script, "--child", json.dumps(dict(payload))]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def thread_env(threads: int, openblas_threads: int) -> dict[str, str]:
    """Environment pinning the OpenMP and OpenBLAS thread counts of a child."""
    return {
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(openblas_threads),
        "MKL_NUM_THREADS": str(openblas_threads),
    }


def operands(form: str, m: int, n: int, k: int, dtype, rng):
    """Random op(A) (m x k) and op(B) (k x n); an operand marked T in `form` is a transposed view."""
    a = rng.standard_normal((k, m) if form[0] == "T" else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if form[1] == "T" else (k, n)).astype(dtype)
    return (a.T if form[0] == "T" else a), (b.T if form[1] == "T" else b)

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

"""Compare two builds of mlpcore (or one build and NumPy) on one matrix product, in lockstep.

On a shared host the speed of a core moves by 20-30% from one minute to the next, so two builds
timed one after the other differ by more than most changes they are meant to show. Here two
worker processes, one per build, hold the same operands and take turns: the parent asks one for
a short timed batch of products, then the other, alternating the order every round. A slow phase
of the host then hits both alike, and the per-round ratio shows the change.

    python benchmarks/ab_builds.py OLD_DIR NEW_DIR 2048 2048 2048 [--form NN] [--rounds 30]
    python benchmarks/ab_builds.py numpy NEW_DIR 256 1024 784 --form NN

OLD_DIR / NEW_DIR hold an importable `mlpcore` package (for example a copy of python/mlpcore
with its built _core module); `numpy` stands for numpy.matmul. M N K are the sizes of
C (M x N) = op(A) (M x K) op(B) (K x N); the form says which operand is read transposed (TN: A,
NT: B). Threads come from the environment (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS); the NumPy
worker runs without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, as in gemm.py.

With more than one thread the idle worker's threads keep spinning for a while after their batch
(OpenMP and OpenBLAS both spin before they sleep) and would take cores from the other side, so
each turn is then followed by a pause (--settle) and the batches are longer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from gemm import import_mlpcore, operands  # noqa: E402  (neither imports mlpcore)


def worker(where: str, m: int, n: int, k: int, form: str, dtype: str, batch_flop: float) -> None:
    """One side: a timed batch of products per line read from stdin, GFLOP/s printed back."""
    import numpy as np

    if where == "numpy":
        matmul = np.matmul
    else:
        sys.path.insert(0, where)
        import mlpcore

        matmul = mlpcore.matmul
    a, b = operands(form, m, n, k, dtype, np.random.default_rng(0))
    out = np.empty((m, n), dtype)
    reps = max(1, int(batch_flop / (2 * m * n * k)))
    for _ in range(3):
        matmul(a, b, out=out)
    for _ in sys.stdin:
        t = time.perf_counter()
        for _ in range(reps):
            matmul(a, b, out=out)
        print(2 * m * n * k * reps / (time.perf_counter() - t) / 1e9, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("sizes", nargs=3, type=int, metavar="M N K")
    ap.add_argument("--form", default="NN", choices=["NN", "TN", "NT"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds of pause after each turn (default: 0 with one thread, "
                    "0.3 with more)")
    args = ap.parse_args()
    m, n, k = args.sizes
    threads = max(int(os.environ.get(v) or 1) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    settle = args.settle if args.settle is not None else (0.3 if threads > 1 else 0.0)
    batch_flop = 2e10 if settle else 4e7  # about 50 ms, or 0.2 ms, of products per turn
    import_mlpcore()  # only to find mlpcore.bench.children; the workers import their own
    from mlpcore.bench.children import child_env

    numpy_env = child_env("numpy", threads=None)  # the caller's thread counts
    workers = {
        name: subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", where,
                                str(m), str(n), str(k), args.form, args.dtype, str(batch_flop)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env=numpy_env if where == "numpy" else None)
        for name, where in (("old", args.old), ("new", args.new))}
    rates = {"old": [], "new": []}
    try:
        for r in range(args.rounds):
            for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                w = workers[name]
                w.stdin.write("go\n")
                w.stdin.flush()
                line = w.stdout.readline()
                if not line:
                    raise RuntimeError(f"the {name} worker stopped (does {name} import?)")
                rates[name].append(float(line))
                time.sleep(settle)
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()
    ratios = sorted(b / a for a, b in zip(rates["old"], rates["new"]))
    q = len(ratios) // 4
    print(f"{m}x{n}x{k} {args.form} {args.dtype}: old {statistics.median(rates['old']):.1f} "
          f"GFLOP/s, new {statistics.median(rates['new']):.1f}; new/old per round: median "
          f"{statistics.median(ratios):.3f}, middle half {ratios[q]:.3f}-{ratios[-1 - q]:.3f}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        where, m, n, k, form, dtype, batch_flop = sys.argv[2:9]
        worker(where, int(m), int(n), int(k), form, dtype, float(batch_flop))
    else:
        sys.exit(main())

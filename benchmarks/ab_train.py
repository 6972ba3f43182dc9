"""Compare two builds of mlpcore on one training workload, in lockstep.

Like ab_builds.py for a matrix product: two worker processes, one per build, hold the same model
and data and take turns training for a short timed run (whole native epochs, as fit runs them);
the order alternates every round, so a slow phase of the shared host hits both alike and the
per-round ratio NEW / OLD shows the change.

    python benchmarks/ab_train.py OLD_DIR NEW_DIR --workload digits [--rounds 15]
    python benchmarks/ab_train.py OLD_DIR NEW_DIR --workload fit-big --seconds 2   # estimator fits

OLD_DIR / NEW_DIR hold an importable `mlpcore` package (e.g. a checkout's python/ folder with
its built _core module). Threads come from the environment (OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

# layers, batch size, optimizer, samples: the workloads of `mlpcore bench` (smaller data sets)
WORKLOADS = {
    "tiny": ([2, 16, 16, 2], 32, "sgd", 8192),
    "digits": ([64, 128, 64, 10], 32, "adam", 4096),
    "mnist-shape": ([784, 256, 128, 10], 64, "sgd", 4096),
    "wide": ([784, 1024, 1024, 10], 256, "sgd", 4096),
    "big": ([1024, 4096, 4096, 1024], 512, "adam", 2048),  # use --seconds 3 or more
    "mnist-b256": ([784, 256, 128, 10], 256, "sgd", 8192),
    # scikit-learn's MLPClassifier defaults (hidden_layer_sizes=(100,), batch_size=200) on
    # benchmarks/sklearn_fit.py's data sets
    "sk-digits": ([64, 100, 10], 200, "adam", 1347),
    "sk-big": ([100, 100, 4], 200, "adam", 37500),
}
# Whole fits of mlpcore.sklearn.MLPClassifier (setup included), as benchmarks/sklearn_fit.py
# times them: (data set, max_iter).
ESTIMATOR_WORKLOADS = {"fit-digits": ("digits", 200), "fit-big": ("big", 10)}


def estimator_worker(workload: str, seconds: float) -> None:
    """One side for an estimator workload: per line read, fits for about `seconds`, prints
    samples/s (training samples times epochs)."""
    import warnings

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mlpcore.sklearn import MLPClassifier
    from sklearn_fit import _data

    data, max_iter = ESTIMATOR_WORKLOADS[workload]
    Xtr, _, ytr, _ = _data(data)
    warnings.simplefilter("ignore")

    def fit() -> None:
        MLPClassifier(hidden_layer_sizes=(100,), max_iter=max_iter, n_iter_no_change=max_iter,
                      random_state=0).fit(Xtr, ytr)

    fit()  # warm up
    for _ in sys.stdin:
        fits, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fit()
            fits += 1
        print(fits * max_iter * len(Xtr) / (time.perf_counter() - start), flush=True)


def worker(workload: str, seconds: float) -> None:
    """One side: per line read from stdin, trains for about `seconds`, prints samples/s."""
    import numpy as np

    import mlpcore as mc

    widths, batch, optimizer, n = WORKLOADS[workload]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], size=n)
    layers = []
    for i in range(len(widths) - 1):
        layers.append(mc.Dense(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(mc.ReLU())
    model = mc.Sequential(layers, seed=0)
    model.compile(loss="cross_entropy", optimizer=optimizer)
    model.fit(x, y, epochs=2, batch_size=batch, verbose=0)  # warm up
    for _ in sys.stdin:
        epochs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.fit(x, y, epochs=5, batch_size=batch, verbose=0)  # as fit runs: many epochs
            epochs += 5
        print(epochs * n / (time.perf_counter() - start), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--workload", choices=sorted([*WORKLOADS, *ESTIMATOR_WORKLOADS]),
                        default="digits")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.5, help="timed run per turn")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = estimator_worker if args.workload in ESTIMATOR_WORKLOADS else worker
        run(args.workload, args.seconds)
        return
    sides = []
    for where in (args.old, args.new):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(where), OPENBLAS_NUM_THREADS="1")
        sides.append(subprocess.Popen(
            [sys.executable, __file__, args.old, args.new, "--workload", args.workload,
             "--seconds", str(args.seconds), "--worker", "1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
    ratios = []
    try:
        for r in range(args.rounds):
            rates = [0.0, 0.0]
            for side in ((0, 1) if r % 2 == 0 else (1, 0)):
                sides[side].stdin.write("go\n")
                sides[side].stdin.flush()
                rates[side] = float(sides[side].stdout.readline())
            ratios.append(rates[1] / rates[0])
            print(f"round {r:2d}: old {rates[0]:12,.0f}  new {rates[1]:12,.0f} samples/s  "
                  f"new/old {ratios[-1]:.3f}", flush=True)
    finally:
        for side in sides:
            side.kill()
    q = statistics.quantiles(ratios, n=4)
    print(f"{args.workload}: new/old median {statistics.median(ratios):.3f} "
          f"(middle half {q[0]:.3f}-{q[2]:.3f}, {len(ratios)} rounds)")


if __name__ == "__main__":
    main()

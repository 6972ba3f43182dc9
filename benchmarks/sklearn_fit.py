"""fit time of scikit-learn's MLPClassifier against mlpcore.sklearn.MLPClassifier, same arguments.

    PYTHONPATH=python python benchmarks/sklearn_fit.py                 # digits + 50,000 x 100
    PYTHONPATH=python python benchmarks/sklearn_fit.py --repeats 5 --threads 2
    PYTHONPATH=python python benchmarks/sklearn_fit.py --workloads digits --quick

Both estimators get identical constructor arguments (hidden_layer_sizes=(100,), adam, the same
random_state, hence the same initial weights) and run exactly ``max_iter`` epochs
(``n_iter_no_change=max_iter`` so neither stops early). Each fit runs in its own process, the two
libraries alternate, and the table shows medians: fit seconds, held-out accuracy and the ratio
scikit-learn time / mlpcore time. Children are started as every mlpcore benchmark starts them
(mlpcore.bench.children): OMP_NUM_THREADS and OPENBLAS_NUM_THREADS = --threads for scikit-learn
(its matrix products are OpenBLAS's), OMP_NUM_THREADS = --threads and OPENBLAS_NUM_THREADS = 1 for
mlpcore, and a run disturbed by other processes or slowed cores is redone (--noise-retries).
Timings on a shared machine are noisy: read the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

WORKLOADS = {
    # name: (max_iter, quick max_iter)
    "digits": (200, 50),
    "big": (10, 3),  # make_classification(50_000, 100)
}


def _data(workload: str):
    import numpy as np
    from sklearn.datasets import load_digits, make_classification
    from sklearn.model_selection import train_test_split

    if workload == "digits":
        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    else:
        X, y = make_classification(50_000, 100, n_informative=30, n_classes=4,
                                   random_state=0)
    X = X.astype(np.float64)
    return train_test_split(X, y, test_size=0.25, random_state=0)


def child(payload: dict) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    if payload["lib"] == "sklearn":
        from sklearn.neural_network import MLPClassifier
    else:  # the parent's mlpcore (child_env puts it on PYTHONPATH)
        from mlpcore.sklearn import MLPClassifier
    Xtr, Xte, ytr, yte = _data(payload["workload"])
    est = MLPClassifier(hidden_layer_sizes=(100,), max_iter=payload["max_iter"],
                        n_iter_no_change=payload["max_iter"], random_state=payload["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        est.fit(Xtr, ytr)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "accuracy": float(est.score(Xte, yte)), "n_iter": est.n_iter_}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer epochs")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--noise-retries", type=int, default=2,
                        help="redo a run disturbed by other processes up to N times (default 2)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    try:
        import mlpcore  # noqa: F401  (the build the mlpcore children will run)
    except ImportError:
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
    from mlpcore.bench.children import QuietRunner, child_env, run_json_child

    script = os.path.abspath(__file__)
    envs = {lib: child_env(lib, args.threads) for lib in ("sklearn", "mlpcore")}
    runner = QuietRunner(args.noise_retries)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"threads={args.threads}, repeats={args.repeats}")
    print(f"{'workload':<10}{'max_iter':>9}{'sklearn s':>11}{'mlpcore s':>11}{'ratio':>8}"
          f"{'acc sklearn':>13}{'acc mlpcore':>13}")
    results = []
    for workload in args.workloads:
        max_iter = WORKLOADS[workload][1 if args.quick else 0]
        runs = {"sklearn": [], "mlpcore": []}
        for rep in range(args.repeats):
            order = ("sklearn", "mlpcore") if rep % 2 == 0 else ("mlpcore", "sklearn")
            for lib in order:
                payload = {"lib": lib, "workload": workload, "max_iter": max_iter, "seed": rep}
                runs[lib].append(runner.run(
                    lambda payload=payload, lib=lib: run_json_child(
                        [script, "--child"], payload, envs[lib], what=f"{lib} child"),
                    args.threads))
        med = {lib: statistics.median(r["seconds"] for r in rs) for lib, rs in runs.items()}
        acc = {lib: statistics.median(r["accuracy"] for r in rs) for lib, rs in runs.items()}
        ratio = med["sklearn"] / med["mlpcore"]
        print(f"{workload:<10}{max_iter:>9}{med['sklearn']:>11.3f}{med['mlpcore']:>11.3f}"
              f"{ratio:>7.1f}x{acc['sklearn']:>13.4f}{acc['mlpcore']:>13.4f}", flush=True)
        results.append({"workload": workload, "max_iter": max_iter, "runs": runs,
                        "median_seconds": med, "median_accuracy": acc, "ratio": ratio})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

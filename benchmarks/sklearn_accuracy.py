"""Held-out accuracy / R^2 of scikit-learn's MLP against mlpcore.sklearn's, same arguments.

    PYTHONPATH=python python benchmarks/sklearn_accuracy.py            # 5 seeds, max_iter=200
    PYTHONPATH=python python benchmarks/sklearn_accuracy.py --seeds 3 --max-iter 100

For each data set and seed: a 75/25 split (seeded), StandardScaler on the features (and on the
target for regression), then both estimators with default parameters except ``random_state=seed``
and ``max_iter``. Prints mean, standard deviation, min and max over the seeds for each library.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

try:
    import mlpcore.sklearn as mks
except ImportError:  # a source checkout without PYTHONPATH=python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import mlpcore.sklearn as mks


def datasets():
    from sklearn import datasets as d
    return {
        "digits": (d.load_digits(return_X_y=True), "clf"),
        "breast_cancer": (d.load_breast_cancer(return_X_y=True), "clf"),
        "iris": (d.load_iris(return_X_y=True), "clf"),
        "wine": (d.load_wine(return_X_y=True), "clf"),
        "diabetes": (d.load_diabetes(return_X_y=True), "reg"),
        "make_classification": (d.make_classification(2000, 20, n_informative=10, n_classes=3,
                                                       random_state=0), "clf"),
        "make_regression": (d.make_regression(2000, 20, n_informative=10, noise=10.0,
                                              random_state=0), "reg"),
    }


def main() -> int:
    from sklearn import neural_network as skn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=200)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(f"{'data set':<21}{'metric':>7}  {'scikit-learn mean±std [min, max]':<34}"
          f"{'mlpcore mean±std [min, max]':<34}")
    for name, ((X, y), kind) in datasets().items():
        scores = {"sklearn": [], "mlpcore": []}
        for seed in range(args.seeds):
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
            scaler = StandardScaler().fit(Xtr)
            Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
            if kind == "reg":
                mu, sd = ytr.mean(), ytr.std()
                ytr, yte = (ytr - mu) / sd, (yte - mu) / sd
            cls = "MLPClassifier" if kind == "clf" else "MLPRegressor"
            for lib, module in (("sklearn", skn), ("mlpcore", mks)):
                est = getattr(module, cls)(random_state=seed, max_iter=args.max_iter)
                scores[lib].append(est.fit(Xtr, ytr).score(Xte, yte))
        cells = []
        for lib in ("sklearn", "mlpcore"):
            s = np.array(scores[lib])
            cells.append(f"{s.mean():.4f}±{s.std():.4f} [{s.min():.4f}, {s.max():.4f}]")
        metric = "acc" if kind == "clf" else "R^2"
        print(f"{name:<21}{metric:>7}  {cells[0]:<34}{cells[1]:<34}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The four backpropagation equations, checked against what mlpcore computes (model.trace).

    (1) output error   delta_L = dL/da_L * f'(z_L)
    (2) hidden error   delta_l = (delta_{l+1} W_{l+1}^T) * f'(z_l)
    (3) bias gradient  dL/db_l = sum over the batch of delta_l
    (4) weight grad.   dL/dW_l = a_{l-1}^T delta_l

mlpcore stores W as (inputs, outputs) and rows are samples, so z = a_prev @ W + b and the
articles' "W^T delta" reads "delta @ W.T" here. trace's delta comes from the native backward
pass (layer by layer); the right-hand sides below are plain NumPy.

Run:  python examples/02_four_equations.py [--small]
"""
import argparse

import numpy as np

import mlpcore as mc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a smaller batch")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n = 4 if args.small else 32
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    model = mc.Sequential([mc.Dense(3, 4), mc.Sigmoid(), mc.Dense(4, 4), mc.Sigmoid(),
                           mc.Dense(4, 2), mc.Sigmoid()], dtype="float64", seed=0)
    model.compile(loss="mse", optimizer="sgd")
    t = model.trace(x, y)
    print(t)
    print()
    d = t.dense
    L = len(d)
    # dL/da_L for mlpcore's mse (mean over all n*k entries): 2 (a - y) / (n k)
    dL_da = 2 * (d[-1].a - y) / y.size
    sigmoid_prime = [s.a * (1 - s.a) for s in d]  # f'(z) = a (1 - a)
    checks = [("(1) delta_L = dL/da * f'(z_L)", d[-1].delta, dL_da * sigmoid_prime[-1])]
    for i in range(L - 2, -1, -1):  # d[i] is layer l = i + 1
        checks.append((f"(2) delta_{i + 1} = (delta_{i + 2} W_{i + 2}^T) * f'(z_{i + 1})",
                       d[i].delta, (d[i + 1].delta @ d[i + 1].W.T) * sigmoid_prime[i]))
    for s in d:
        n_ = s.number
        checks.append((f"(3) dL/db_{n_} = sum delta_{n_}", s.db, s.delta.sum(axis=0)))
        checks.append((f"(4) dL/dW_{n_} = a_{n_ - 1}^T delta_{n_}", s.dW, s.a_prev.T @ s.delta))
    worst = 0.0
    for name, native, numpy in checks:
        err = float(np.max(np.abs(native - numpy)) / max(np.max(np.abs(numpy)), 1e-300))
        worst = max(worst, err)
        print(f"{name:<45} max relative difference {err:.1e}")
    print(f"f'(z) from the native backward pass vs a(1 - a): "
          f"{max(float(np.max(np.abs(s.fprime - p))) for s, p in zip(d, sigmoid_prime)):.1e}")
    assert worst < 1e-12, worst
    print("all four equations hold to 1e-12")


if __name__ == "__main__":
    main()

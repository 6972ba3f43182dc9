"""One neuron by hand, then by mlpcore: the forward pass, the chain rule, one update w - lr*g.

    z = w . x + b,   a = sigmoid(z),   L = (a - y)^2   (mlpcore's mse on one sample, one output)
    dL/da = 2 (a - y),   da/dz = a (1 - a),   dL/dw = dL/da * da/dz * x,   dL/db = dL/da * da/dz

Run:  python examples/01_single_neuron.py
"""
import argparse

import numpy as np

import mlpcore as mc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="(no effect: already tiny)")
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args(argv)

    x = np.array([[1.0, -2.0, 0.5]])   # one sample, three inputs
    y = np.array([[1.0]])
    w = np.array([0.2, -0.1, 0.4])
    b = 0.1

    # --- by hand ------------------------------------------------------------------------
    z = float(x[0] @ w + b)
    a = 1 / (1 + np.exp(-z))
    loss = (a - y[0, 0]) ** 2
    dL_da = 2 * (a - y[0, 0])
    da_dz = a * (1 - a)
    delta = dL_da * da_dz               # dL/dz
    grad_w, grad_b = delta * x[0], delta
    print(f"forward:  z = w.x + b = {z:.6f}   a = sigmoid(z) = {a:.6f}   "
          f"L = (a - y)^2 = {loss:.6f}")
    print(f"backward: dL/da = 2(a - y) = {dL_da:.6f}   da/dz = a(1 - a) = {da_dz:.6f}   "
          f"delta = dL/dz = {delta:.6f}")
    print(f"          dL/dw = delta * x = {np.round(grad_w, 6)}   dL/db = {grad_b:.6f}")
    new_w, new_b = w - args.lr * grad_w, b - args.lr * grad_b
    print(f"update:   w <- w - {args.lr} * dL/dw = {np.round(new_w, 6)}   b <- {new_b:.6f}")

    # --- by mlpcore ---------------------------------------------------------------------
    model = mc.Sequential([mc.Dense(3, 1, init=w.reshape(3, 1)), mc.Sigmoid()], dtype="float64")
    model.layers[0].bias[...] = b
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=args.lr))
    t = model.trace(x, y)
    step = t.dense[0]
    print(f"mlpcore:  z = {step.z[0, 0]:.6f}   a = {step.a[0, 0]:.6f}   L = {t.loss:.6f}   "
          f"delta = {step.delta[0, 0]:.6f}")
    print(f"          dL/dw = {np.round(step.dW[:, 0], 6)}   dL/db = {step.db[0]:.6f}")
    model.compute_gradients(x, y)
    model.optimizer.step()
    got_w, got_b = model.layers[0].weight[:, 0], model.layers[0].bias[0]
    print(f"          after optimizer.step(): w = {np.round(got_w, 6)}   b = {got_b:.6f}")
    assert np.allclose(step.dW[:, 0], grad_w, rtol=1e-12) and np.isclose(step.db[0], grad_b)
    assert np.allclose(got_w, new_w, rtol=1e-12) and np.isclose(got_b, new_b, rtol=1e-12)
    print("hand and mlpcore agree (to 1e-12)")


if __name__ == "__main__":
    main()

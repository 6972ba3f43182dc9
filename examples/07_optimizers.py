"""Optimizers compared on one problem: the same network, the same initial weights, the same
batches; only the update rule differs.

    SGD           w <- w - lr g
    SGD+momentum  v <- mu v + g;  w <- w - lr v
    RMSprop       s <- a s + (1 - a) g^2;  w <- w - lr g / (sqrt(s) + eps)
    Adam          m, v: moving averages of g and g^2 (bias-corrected);
                  w <- w - lr m / (sqrt(v) + eps)
    AdamW         Adam, with weight decay applied to w directly (decoupled), not added to g

Run:  python examples/07_optimizers.py [--small] [--plot optimizers.png]
"""
import argparse

import numpy as np

import mlpcore as mc
from mlpcore.data import load_digits

OPTIMIZERS = {
    "SGD(lr=0.05)": lambda: mc.optim.SGD(lr=0.05),
    "SGD(lr=0.05, momentum=0.9)": lambda: mc.optim.SGD(lr=0.05, momentum=0.9),
    "RMSprop(lr=1e-3)": lambda: mc.optim.RMSprop(lr=1e-3),
    "Adam(lr=1e-3)": lambda: mc.optim.Adam(lr=1e-3),
    "AdamW(lr=1e-3, weight_decay=1e-2)": lambda: mc.optim.AdamW(lr=1e-3, weight_decay=1e-2),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="few samples and epochs")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--plot", metavar="PNG", help="save the loss curves there")
    args = parser.parse_args(argv)
    digits = load_digits()
    x, y = (digits.x / 16.0).astype(np.float32), digits.y
    if args.small:
        x, y = x[:400], y[:400]
    epochs = 3 if args.small else args.epochs
    split = int(0.8 * len(x))

    curves = {}
    for name, make in OPTIMIZERS.items():
        model = mc.Sequential([mc.Dense(64, 64), mc.ReLU(), mc.Dense(64, 10)], seed=0)
        model.compile(loss="cross_entropy", optimizer=make())
        h = model.fit(x[:split], y[:split], epochs=epochs, batch_size=32, verbose=0,
                      validation_data=(x[split:], y[split:])).history
        curves[name] = h["loss"]
        print(f"{name:<36} loss {h['loss'][0]:.3f} -> {h['loss'][-1]:.3f}   "
              f"val accuracy {h['val_accuracy'][-1]:.3f}")
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib)")
            return curves
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, values in curves.items():
            ax.semilogy(range(1, len(values) + 1), values, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_title("One problem, five update rules")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"saved {args.plot}")
    return curves


if __name__ == "__main__":
    main()

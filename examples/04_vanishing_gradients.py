"""Vanishing gradients in a 10-layer sigmoid network, and three fixes.

Backprop multiplies the error signal by f'(z) at every layer; a sigmoid's slope is at most
0.25, so ten of them shrink it by 0.25^10 ~ 1e-6 before it reaches the first layer -- even
when no unit saturates. diagnose names this cause; model.trace shows it layer by layer.
The fixes: ReLU with He initialisation (slope 1 where active), normalisation (a LayerNorm
after each sigmoid rescales its narrow output to unit spread, which in the backward pass
multiplies the signal by ~1/std and undoes the small slope) and residual connections (the
skip path carries the signal past the sigmoids unchanged). All four train with Adam(1e-3).

Run:  python examples/04_vanishing_gradients.py [--small] [--plot grad_norms.png]
"""
import argparse
import io

import numpy as np

import mlpcore as mc
from mlpcore.data import load_digits

DEPTH, WIDTH = 10, 32


def sigmoid_net():
    layers = [mc.Dense(64, WIDTH), mc.Sigmoid()]
    for _ in range(DEPTH - 1):
        layers += [mc.Dense(WIDTH, WIDTH), mc.Sigmoid()]
    return layers + [mc.Dense(WIDTH, 10)]


def relu_he_net():
    layers = [mc.Dense(64, WIDTH, init="he_normal"), mc.ReLU()]
    for _ in range(DEPTH - 1):
        layers += [mc.Dense(WIDTH, WIDTH, init="he_normal"), mc.ReLU()]
    return layers + [mc.Dense(WIDTH, 10)]


def layernorm_net():
    layers = [mc.Dense(64, WIDTH), mc.Sigmoid(), mc.LayerNorm(WIDTH)]
    for _ in range(DEPTH - 1):
        layers += [mc.Dense(WIDTH, WIDTH), mc.Sigmoid(), mc.LayerNorm(WIDTH)]
    return layers + [mc.Dense(WIDTH, 10)]


def residual_net():
    layers = [mc.Dense(64, WIDTH), mc.Sigmoid()]
    for _ in range(DEPTH - 1):
        layers += [mc.Residual([mc.Dense(WIDTH, WIDTH), mc.Sigmoid()])]
    return layers + [mc.Dense(WIDTH, 10)]


VARIANTS = {"sigmoid (glorot)": sigmoid_net, "ReLU + He init": relu_he_net,
            "sigmoid + LayerNorm": layernorm_net, "sigmoid + residual": residual_net}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="few samples and epochs")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--plot", metavar="PNG", help="save per-layer gradient norms there")
    args = parser.parse_args(argv)
    digits = load_digits()
    x, y = (digits.x / 16.0).astype(np.float32), digits.y
    if args.small:
        x, y = x[:300], y[:300]
    epochs = 1 if args.small else args.epochs
    split = int(0.8 * len(x))

    norms = {}
    for name, build in VARIANTS.items():
        model = mc.Sequential(build(), seed=0)
        model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-3))
        t = model.trace(x[:128], y[:128])
        # RMS of each Dense layer's weight gradient, input side first
        norms[name] = [float(np.linalg.norm(s.dW) / np.sqrt(s.dW.size)) for s in t.dense]
        d = mc.diagnose(model, x, y, file=io.StringIO())
        vanishing = [w for w in d.warnings if w.startswith("vanishing")]
        history = model.fit(x[:split], y[:split], epochs=epochs, batch_size=32, verbose=0,
                            validation_data=(x[split:], y[split:]))
        first, last = norms[name][0], norms[name][-1]
        print(f"{name:<20} RMS dW: first layer {first:.1e}, last {last:.1e} "
              f"(ratio {first / last:.1e});  after {epochs} epoch(s) val accuracy "
              f"{history.history['val_accuracy'][-1]:.3f}")
        if vanishing:
            print(f"  diagnose: {vanishing[0]}")
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib)")
            return norms
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, values in norms.items():
            ax.semilogy(range(1, len(values) + 1), values, marker="o", label=name)
        ax.set_xlabel("Dense layer (1 = next to the input)")
        ax.set_ylabel("RMS weight gradient")
        ax.set_title("Per-layer gradient norms at initialisation")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"saved {args.plot}")
    return norms


if __name__ == "__main__":
    main()

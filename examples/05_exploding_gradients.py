"""Exploding gradients, and gradient clipping.

An 8-layer ReLU network whose weights start 2.5x larger than He initialisation: each layer
multiplies the forward signal by ~2.5 on the way up and the error signal by ~2.5 on the way
down (2.5^8 ~ 1500), so the first loss is ~1e6 and every weight gradient ~1e7. One SGD step
with such a gradient throws the weights far away; within a few steps the loss overflows.
``compile(clip_norm=...)`` rescales the
whole gradient whenever its L2 norm exceeds the limit (torch's clip_grad_norm_), so every step
has a bounded size; ``fit(diagnostics=True)`` shows the per-step norms it tamed
(``grad_norm_max``). Clipping keeps training alive; the cure is the initialisation (He, gain 1).

Run:  python examples/05_exploding_gradients.py [--small]
"""
import argparse
import io

import numpy as np

import mlpcore as mc

DEPTH, WIDTH, GAIN = 8, 32, 2.5


def build(gain=GAIN, seed=0):
    rng = np.random.default_rng(seed)
    layers, fan_in = [], 8
    for _ in range(DEPTH):
        w = rng.normal(scale=gain * np.sqrt(2.0 / fan_in), size=(fan_in, WIDTH))
        layers += [mc.Dense(fan_in, WIDTH, init=w), mc.ReLU()]
        fan_in = WIDTH
    return mc.Sequential(layers + [mc.Dense(WIDTH, 1)], dtype="float64", seed=seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer samples and epochs")
    parser.add_argument("--clip", type=float, default=1.0, help="clip_norm for the second run")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n, epochs = (256, 3) if args.small else (1024, 10)
    x = rng.normal(size=(n, 8))
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:2]

    model = build()
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.01))
    t = model.trace(x[:64], y[:64])
    print("per-layer |dW| at initialisation (input side first):")
    print("  " + "  ".join(f"{np.linalg.norm(s.dW):.1e}" for s in t.dense))
    d = mc.diagnose(model, x, y, file=io.StringIO())
    print("diagnose:", next(w for w in d.warnings if w.startswith("exploding")))

    for gain, clip in ((GAIN, None), (GAIN, args.clip), (1.0, None)):
        model = build(gain)
        model.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.01), clip_norm=clip)
        label = "no clipping" if clip is None else f"clip_norm={clip:g}"
        label = "He init" if gain == 1.0 else label
        try:
            h = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, diagnostics=True)
        except mc.NonFiniteLossError as err:
            print(f"{label:<14} stopped: {str(err).split(';')[0]}")
            continue
        print(f"{label:<14} loss per epoch: " + " ".join(f"{v:.3g}" for v in h.history["loss"]))
        print(f"{'':<14} largest step norm per epoch (before clipping): "
              + " ".join(f"{v:.3g}" for v in h.history["grad_norm_max"]))


if __name__ == "__main__":
    main()

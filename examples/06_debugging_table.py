"""The debugging table, one reproducible case per row, each with the diagnostic that catches it.

    symptom                     cause built here         diagnostic that catches it
    loss flat                   lr far too low           diagnose: "learning rate looks too low"
    loss becomes NaN            lr far too high          NonFiniteLossError (detect_anomaly: layer)
    early layers do not learn   10 sigmoid layers        diagnose: "vanishing gradients. Cause: ..."
    units never fire            ReLU, bias -10           diagnose: "dead units"
    raw inputs                  features ~1e8            diagnose: "unscaled inputs ..."
    gradients noisy             batch size 2             fit(diagnostics=True): grad_noise
    gradient norm spikes        3 outlier targets        fit(diagnostics=True): grad_norm_max
    (checklist) can it learn?   overfit 16 samples       loss -> ~0; every weight array changes

Run:  python examples/06_debugging_table.py [--small]
"""
import argparse
import io

import numpy as np

import mlpcore as mc


def _net(layers, loss="mse", opt=None, **compile_args):
    model = mc.Sequential(layers, seed=0)
    model.compile(loss=loss, optimizer=opt or mc.optim.Adam(lr=1e-3), **compile_args)
    return model


def _warning(model, x, y, start):
    d = mc.diagnose(model, x, y, file=io.StringIO())
    return next((w for w in d.warnings if w.startswith(start)), "(no such warning)")


def _short(text, width=150):
    return text if len(text) <= width else text[:width - 3] + "..."


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer samples and epochs")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n = 256 if args.small else 2048
    epochs = 2 if args.small else 5
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2]).astype(np.float32)
    rows = []

    model = _net([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 1)], opt=mc.optim.SGD(lr=1e-9))
    h = model.fit(x, y, epochs=epochs, verbose=0).history["loss"]
    rows.append(("loss flat", f"loss {h[0]:.4f} -> {h[-1]:.4f}",
                 _warning(model, x, y, "learning rate")))

    model = _net([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 1)], opt=mc.optim.SGD(lr=50.0),
                 detect_anomaly=True)
    try:
        model.fit(x, y, epochs=epochs, verbose=0)
        caught = "(trained without a NaN)"
    except mc.NonFiniteLossError as err:
        caught = f"NonFiniteLossError: {str(err).split(';')[0]}"
    rows.append(("loss becomes NaN", "SGD(lr=50)", caught))

    layers = [mc.Dense(8, 32), mc.Sigmoid()]
    for _ in range(9):
        layers += [mc.Dense(32, 32), mc.Sigmoid()]
    model = _net(layers + [mc.Dense(32, 1)])
    found = _warning(model, x, y, "vanishing")
    rows.append(("early layers do not learn", "10 sigmoid layers",
                 "vanishing gradients. " + found[found.find("Cause:"):]))

    model = _net([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 1)])
    model.layers[0].bias[...] = -10.0
    rows.append(("units never fire", "bias -10 before ReLU", _warning(model, x, y, "dead")))

    model = _net([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 1)])
    rows.append(("raw inputs", "x * 1e8", _warning(model, x * 1e8, y, "unscaled")))

    noise = {}
    for batch in (2, 128):
        model = _net([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 1)])
        h = model.fit(x, y, epochs=1, batch_size=batch, verbose=0, diagnostics=True).history
        noise[batch] = h["grad_noise"][-1]
    rows.append(("gradients noisy", "batch_size 2 vs 128",
                 f"grad_noise {noise[2]:.3g} vs {noise[128]:.3g} "
                 "(|g_batch - g_full|^2 / |g_full|^2)"))

    spiky = y.copy()
    spiky[rng.choice(n, 3, replace=False)] = 1000.0
    model = _net([mc.Dense(8, 32), mc.ReLU(), mc.Dense(32, 1)])
    h = model.fit(x, spiky, epochs=1, batch_size=32, verbose=0, diagnostics=True).history
    rows.append(("gradient norm spikes", "3 targets = 1000",
                 f"grad_norm_max {h['grad_norm_max'][-1]:.3g} vs mean grad_norm "
                 f"{h['grad_norm'][-1]:.3g}"))

    model = _net([mc.Dense(8, 64), mc.ReLU(), mc.Dense(64, 1)], opt=mc.optim.Adam(lr=1e-2))
    before = model.get_weights()
    h = model.fit(x[:16], y[:16], epochs=100 if args.small else 300, batch_size=16,
                  verbose=0).history["loss"]
    moved = [float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), before)]
    rows.append(("(checklist) can it learn?", "overfit 16 samples",
                 f"loss {h[0]:.3g} -> {h[-1]:.2g}; every array changed: "
                 f"{all(m > 0 for m in moved)}"))

    for symptom, case, found in rows:
        print(f"{symptom:<26} | {case:<22} | {_short(found)}")
    return rows


if __name__ == "__main__":
    main()

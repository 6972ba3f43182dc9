"""A complete workflow on an image data set: look at the data, scale it, check the model,
find a learning rate, train with validation and early stopping, test, save and reload.

Data: ``--data mnist.npz`` reads a file with ``x_train, y_train, x_test, y_test`` (the layout of
keras' mnist.npz: uint8 images (n, 28, 28) and integer labels); without it, the 8x8 digits
shipped with scikit-learn stand in (offline).

Run:  python examples/08_mnist_workflow.py [--data mnist.npz] [--small] [--plot lr.png]
"""
import argparse
import io
import os
import tempfile

import numpy as np

import mlpcore as mc
from mlpcore.data import load_digits


def load(path):
    if path is None:
        d = load_digits()
        order = np.random.default_rng(0).permutation(len(d.x))
        x, y = d.x[order], d.y[order]
        cut = int(0.8 * len(x))
        return "digits (8x8, pixels 0..16)", x[:cut], y[:cut], x[cut:], y[cut:]
    try:
        with np.load(path) as f:
            arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except KeyError as err:
        raise SystemExit(
            f"{path}: expected arrays x_train, y_train, x_test, y_test ({err})") from None
    x_tr, y_tr, x_te, y_te = arrays
    flat = [a.reshape(len(a), -1).astype(np.float64) for a in (x_tr, x_te)]
    return (os.path.basename(path), flat[0], y_tr.astype(np.int64), flat[1],
            y_te.astype(np.int64))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="an .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--small", action="store_true", help="a subset and few epochs")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--plot", metavar="PNG", help="save the lr_find curve there")
    args = parser.parse_args(argv)
    name, x_train, y_train, x_test, y_test = load(args.data)
    if args.small:
        x_train, y_train, x_test, y_test = x_train[:600], y_train[:600], x_test[:200], y_test[:200]
    epochs = 3 if args.small else args.epochs
    n_in, n_classes = x_train.shape[1], int(max(y_train.max(), y_test.max())) + 1
    print(f"1. data: {name}: {x_train.shape[0]} training and {x_test.shape[0]} test rows, "
          f"{n_in} features, {n_classes} classes, values {x_train.min():g}..{x_train.max():g}")

    def build():
        model = mc.Sequential([mc.Dense(n_in, 128, init="he_uniform"), mc.ReLU(),
                               mc.Dense(128, n_classes)], seed=0)
        model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-3))
        return model

    model = build()
    d = mc.diagnose(model, x_train, y_train, file=io.StringIO())
    found = [w for w in d.warnings if "inputs" in w or "input scales" in w]
    print("2. diagnose on the raw pixels:", found[0][:110] + "..." if found else "no input warning")
    scale = float(x_train.max())  # pixels: divide by the largest value (255 or 16)
    x_train, x_test = (x_train / scale).astype(np.float32), (x_test / scale).astype(np.float32)
    d = mc.diagnose(model, x_train, y_train, file=io.StringIO())
    print(f"   after x / {scale:g}: {len(d.warnings)} warning(s)")

    found = mc.lr_find(model, x_train, y_train, start_lr=1e-5, end_lr=1.0,
                       num_steps=60 if args.small else 200)
    lr = found.suggestion if found.suggestion is not None else 1e-3
    print(f"3. {found}")
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            found.plot().figure.savefig(args.plot)
            print(f"   saved {args.plot}")
        except ImportError:
            print("   --plot needs matplotlib (pip install matplotlib)")

    model.optimizer.lr = lr
    stop = mc.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0,
                        validation_split=0.1, callbacks=[stop])
    h = history.history
    print(f"4. fit at lr {lr:.2e}: {len(h['loss'])} epochs, loss {h['loss'][0]:.3f} -> "
          f"{h['loss'][-1]:.3f}, val accuracy {max(h['val_accuracy']):.3f} (best)")
    test = model.evaluate(x_test, y_test)
    print(f"5. test: loss {test['loss']:.3f}, accuracy {test['accuracy']:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        model.save(path)
        again = mc.load(path)
        same = np.array_equal(again.predict(x_test), model.predict(x_test))
    print(f"6. saved and reloaded: identical predictions: {same}")
    return test


if __name__ == "__main__":
    main()

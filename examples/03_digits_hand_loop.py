"""A one-hidden-layer network on the 8x8 digits: first a training loop written by hand
(shuffle, batch, compute_gradients, optimizer.step), then the same network trained by fit.

Run:  python examples/03_digits_hand_loop.py [--small] [--epochs 20]
"""
import argparse

import numpy as np

import mlpcore as mc
from mlpcore.data import load_digits


def build(seed):
    model = mc.Sequential([mc.Dense(64, 32, init="he_uniform"), mc.ReLU(), mc.Dense(32, 10)],
                          seed=seed)
    model.compile(loss="cross_entropy", optimizer=mc.optim.SGD(lr=0.1, momentum=0.9))
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="few epochs, for the tests")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    epochs = 2 if args.small else args.epochs

    digits = load_digits()
    x = (digits.x / 16.0).astype(np.float32)  # pixels 0..16 -> 0..1
    y = digits.y
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]

    # --- the loop by hand -------------------------------------------------------------
    model = build(seed=0)
    print("hand-written loop: for each batch, loss = compute_gradients(xb, yb); optimizer.step()")
    for epoch in range(epochs):
        perm = rng.permutation(train)
        losses = []
        for start in range(0, len(perm), args.batch_size):
            idx = perm[start:start + args.batch_size]
            losses.append(model.compute_gradients(x[idx], y[idx]))  # forward + backward
            model.optimizer.step()                                  # w <- w - lr * (momentum) g
        acc = model.evaluate(x[test], y[test])["accuracy"]
        print(f"  epoch {epoch + 1:2d}: mean batch loss {np.mean(losses):.4f}   "
              f"test accuracy {acc:.3f}")

    # --- the same with fit -----------------------------------------------------------
    model = build(seed=0)
    print("fit: the same network, the batches run natively")
    history = model.fit(x[train], y[train], epochs=epochs, batch_size=args.batch_size,
                        validation_data=(x[test], y[test]), verbose=0)
    for epoch, (loss, acc) in enumerate(zip(history.history["loss"],
                                            history.history["val_accuracy"])):
        print(f"  epoch {epoch + 1:2d}: loss {loss:.4f}   test accuracy {acc:.3f}")
    return history


if __name__ == "__main__":
    main()

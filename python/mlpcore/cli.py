"""Command line: ``mlpcore train`` trains an MLP and reports test metrics and throughput."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from typing import List, Optional

import numpy as np

import mlpcore as mc

from . import __version__, distributed
from .data import load_digits, load_file, standardize, train_test_split
from .layers import ACTIVATIONS
from .losses import LOSSES
from .optim import OPTIMIZERS


def _hidden_sizes(text: str) -> List[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 128,64, got {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlpcore", description="Fast multilayer perceptrons on CPUs.")
    p.add_argument("--version", action="version", version=f"mlpcore {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an MLP (default: scikit-learn's handwritten digits)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--data", help="a .npz (arrays x, y) or .csv file; default: digits")
    t.add_argument("--target", help="target column (.csv) or array name (.npz)")
    t.add_argument("--task", choices=["auto", "classification", "regression"], default="auto")
    t.add_argument("--layers", type=_hidden_sizes, default=[128, 64],
                   help="hidden layer sizes, comma separated")
    t.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS))
    t.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS))
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    t.add_argument("--loss", choices=sorted(LOSSES),
                   help="default: cross_entropy for classification, mse for regression")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--test-size", type=float, default=0.25, help="fraction held out for testing")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, help="OpenMP threads (default: all cores)")
    t.add_argument("--ranks", type=int, help="data-parallel MPI ranks: runs itself under the "
                   "installed mpiexec (needs mlpcore[mpi]); threads default to cores / ranks")
    t.add_argument("--save", metavar="PATH", help="write the trained model (.safetensors)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--plot", metavar="PATH",
                   help="write the training curves as a PNG (needs mlpcore[plot])")
    from .bench.harness import add_arguments as _bench_arguments
    b = sub.add_parser("bench", help="training benchmark against NumPy, scikit-learn, PyTorch",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _bench_arguments(b)
    return p


def _launch_ranks(ranks: int, argv: List[str]) -> int:
    """``mlpcore train --ranks N``: the same command in N ranks under mpiexec."""
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    mpiexec = shutil.which("mpiexec", path=search)
    if mpiexec is None:
        raise ValueError("--ranks needs an MPI launcher (mpiexec) and mpi4py: "
                         "pip install 'mlpcore[mpi]'")
    return subprocess.call([mpiexec, "-n", str(ranks), sys.executable, "-m", "mlpcore", *argv])


def _train(args) -> int:
    if args.plot:  # fail before training, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install mlpcore[plot]") from None
        from pathlib import Path
        if not Path(args.plot).parent.exists():
            raise ValueError(f"--plot: folder {str(Path(args.plot).parent)!r} does not exist")
    rank = 0
    if args.ranks is not None:
        if args.ranks < 1:
            raise ValueError(f"--ranks must be at least 1, got {args.ranks}")
        rank = distributed.init().rank
        if rank != 0:  # one report, from rank 0
            sys.stdout = open(os.devnull, "w")
    if args.threads is not None:
        mc.set_num_threads(args.threads)
    ds = load_digits() if args.data is None else load_file(args.data, args.target, args.task)
    if not 0.0 < args.test_size < 1.0:
        raise ValueError(f"--test-size must lie in (0, 1), got {args.test_size}")
    x_tr, y_tr, x_te, y_te = train_test_split(ds, args.test_size, args.seed)
    x_tr, x_te = standardize(x_tr, x_te)
    if ds.is_classification:
        n_out = len(ds.classes)
        loss = args.loss or "cross_entropy"
    else:
        n_out = 1 if y_tr.ndim == 1 else y_tr.shape[1]
        loss = args.loss or "mse"
    sizes = [x_tr.shape[1], *args.layers, n_out]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(mc.Dense(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(mc.get_activation(args.activation))
    model = mc.Sequential(layers, dtype=args.dtype, seed=args.seed)
    model.compile(loss=loss, optimizer=mc.optim.get_optimizer(args.optimizer, lr=args.lr))
    task = f"{n_out} classes" if ds.is_classification else "regression"
    print(f"data: {ds.name}: {len(x_tr)} train / {len(x_te)} test samples, "
          f"{x_tr.shape[1]} features, {task}")
    print(f"model: {'-'.join(map(str, sizes))} {args.activation}, {model.num_params} parameters, "
          f"{args.dtype}, loss {loss}, {args.optimizer} lr={args.lr}, {args.epochs} epochs, "
          f"batch {args.batch_size}, {mc.get_num_threads()} threads")
    start = time.perf_counter()
    history = model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=args.batch_size, shuffle=True,
                        verbose=0 if args.quiet else 1, distributed=args.ranks is not None)
    seconds = time.perf_counter() - start
    result = model.evaluate(x_te, y_te)
    print(f"train loss: {history.history['loss'][-1]:.4f}")
    print(f"test loss: {result['loss']:.4f}")
    if "accuracy" in result:
        print(f"test accuracy: {result['accuracy']:.4f}")
    else:
        pred = model.predict(x_te).reshape(np.shape(y_te))
        print(f"test MAE: {float(np.mean(np.abs(pred - y_te))):.4f}")
    print(f"throughput: {len(x_tr) * args.epochs / seconds:,.0f} samples/s "
          f"({seconds:.2f} s for {args.epochs} epochs, progress display included)")
    if args.save and rank == 0:
        model.save(args.save)
        print(f"saved: {args.save}")
    if args.plot and rank == 0:
        history.plot(args.plot)
        print(f"plot: {args.plot}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            if args.ranks is not None and args.ranks > 1 and not distributed.launched():
                return _launch_ranks(args.ranks, sys.argv[1:] if argv is None else list(argv))
            return _train(args)
        if args.command == "bench":
            from .bench.harness import main_from_args
            return main_from_args(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"mlpcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

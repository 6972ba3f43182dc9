"""mlpcore's thread scaling on a training workload, 1 and 2 threads in lockstep in one process.

`mlpcore bench` times 1 and 2 threads in separate processes a few seconds apart; on a shared host
whose cores change speed from minute to minute that ratio moves by several percent between runs
(and a 2-thread run is slowed whenever either core is). Here one model takes turns: a few
`train_step` calls on 1 thread, then on 2 (the order alternating every round), on the same batch.
Each round gives one ratio; the median and the middle half of the rounds are printed.

    python benchmarks/scaling.py big wide --rounds 15

Same networks, batch sizes and optimizers as `mlpcore bench` (mlpcore.bench.workloads).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

try:
    import mlpcore as mc
except ImportError:  # a source checkout without PYTHONPATH=python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import mlpcore as mc
from mlpcore.bench.workloads import ADAM_BETAS, ADAM_EPS, WORKLOADS, make_data


def build(w):
    layers = []
    for i in range(len(w.sizes) - 1):
        layers.append(mc.Dense(w.sizes[i], w.sizes[i + 1]))
        if i < len(w.sizes) - 2:
            layers.append(mc.ReLU())
    model = mc.Sequential(layers, dtype="float32", seed=0)
    opt = (mc.optim.SGD(lr=w.lr) if w.optimizer == "sgd"
           else mc.optim.Adam(lr=w.lr, betas=ADAM_BETAS, eps=ADAM_EPS))
    model.compile(loss="cross_entropy", optimizer=opt)
    return model


def measure(name: str, rounds: int, threads: int, turn_s: float) -> dict:
    w = WORKLOADS[name]
    model = build(w)
    x, y = make_data(w)
    xb, yb = x[: w.batch], y[: w.batch]
    mc.set_num_threads(threads)
    model.train_step(xb, yb)  # workspaces sized, threads started
    t = time.perf_counter()
    model.train_step(xb, yb)
    steps = max(1, int(turn_s / (time.perf_counter() - t)))
    one, many = [], []
    for r in range(rounds):
        times = {}
        for n in ((1, threads) if r % 2 == 0 else (threads, 1)):
            mc.set_num_threads(n)
            model.train_step(xb, yb)  # wakes the threads
            t = time.perf_counter()
            for _ in range(steps):
                model.train_step(xb, yb)
            times[n] = (time.perf_counter() - t) / steps
        one.append(times[1])
        many.append(times[threads])
    ratios = sorted(a / b for a, b in zip(one, many))
    q = len(ratios) // 4
    return {"step_ms_1t": 1e3 * statistics.median(one), "step_ms_nt": 1e3 * statistics.median(many),
            "median": statistics.median(ratios), "low": ratios[q], "high": ratios[-1 - q]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="+", choices=sorted(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--turn-seconds", type=float, default=0.5,
                    help="time of each turn's steps (default 0.5)")
    args = ap.parse_args(argv)
    for name in args.workloads:
        s = measure(name, args.rounds, args.threads, args.turn_seconds)
        print(f"{name:12s} step {s['step_ms_1t']:8.2f} ms on 1 thread, "
              f"{s['step_ms_nt']:8.2f} ms on {args.threads}: speedup {s['median']:.2f}x "
              f"(middle half of {args.rounds} rounds "
              f"{s['low']:.2f}-{s['high']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

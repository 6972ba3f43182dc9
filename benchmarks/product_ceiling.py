"""The ceiling that a library's matrix products put on a training workload's speed.

A training step of a multilayer perceptron is its matrix products (each Dense layer's forward
product, weight gradient and input gradient, except the first layer's input gradient) plus
element-wise work (activations, loss, optimizer). This benchmark times the products alone, at the
shapes of each workload of ``mlpcore bench``, float32, with each library's own matmul into
preallocated outputs: ``mlpcore.matmul``, ``numpy.matmul`` and ``torch.mm``. The samples per
second of that time is a ceiling no training loop built on those products can pass, however
little its element-wise work costs.

With ``--train-json`` (the train.json that ``mlpcore bench`` wrote), each workload also shows:
- how close mlpcore's training comes to its own products' ceiling (the rest is element-wise work,
  the update and the loop), and
- the largest ratio over each other contender's measured training speed that mlpcore could reach
  with today's products: its ceiling over their samples/s.

Every measurement runs in its own child process (mlpcore.bench.children), contenders alternate and
the set is repeated; medians are reported. ``MLPCORE_GEMM_ISA=avx2`` restricts mlpcore, and
PyTorch and OpenBLAS with it (set ``OPENBLAS_CORETYPE=Haswell`` too), as in the other benchmarks.

    python benchmarks/product_ceiling.py --train-json benchmarks/results/train.json
    python benchmarks/product_ceiling.py --workloads wide big --contenders mlpcore torch
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import mlpcore  # noqa: F401
except ImportError:  # a source checkout without PYTHONPATH=python
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

from mlpcore.bench.children import QuietRunner, child_env, run_json_child  # noqa: E402
from mlpcore.bench.workloads import WORKLOADS, model_flops_per_sample  # noqa: E402

CONTENDERS = ("mlpcore", "numpy", "torch")


def step_products(sizes: Tuple[int, ...], batch: int) -> List[Tuple[int, int, int, bool, bool]]:
    """(M, K, N, trans_a, trans_b) of one step's products: X W forward, X^T dZ for each weight
    gradient, dZ W^T for each input gradient but the first layer's (model_flops_per_sample's
    count)."""
    shapes = [(batch, k, n, False, False) for k, n in zip(sizes[:-1], sizes[1:])]
    for i in reversed(range(len(sizes) - 1)):
        shapes.append((sizes[i], batch, sizes[i + 1], True, False))
        if i > 0:
            shapes.append((batch, sizes[i + 1], sizes[i], False, True))
    return shapes


def child(payload: dict) -> dict:
    """Time one step's products in this process: the best of ``repeats`` whole steps."""
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    operands = []
    for m, k, n, ta, tb in step_products(tuple(payload["sizes"]), payload["batch"]):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        operands.append((a.T if ta else a, b.T if tb else b, np.empty((m, n), np.float32)))
    lib = payload["lib"]
    if lib == "torch":
        import torch
        torch.set_num_threads(payload["threads"])
        tensors = [tuple(torch.from_numpy(x) for x in ops) for ops in operands]

        def step():
            for a, b, c in tensors:
                torch.mm(a, b, out=c)
    else:
        if lib == "mlpcore":
            import mlpcore
            matmul = mlpcore.matmul
        else:
            matmul = np.matmul

        def step():
            for a, b, c in operands:
                matmul(a, b, out=c)
    step()  # warm-up: pages, packing buffers, thread pools
    start = time.perf_counter()
    step()
    # about 2 seconds of timed steps, at least 5
    repeats = max(5, int(2.0 / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return {"step_s": best, "samples_per_s": payload["batch"] / best}


def measure(workloads: List[str], contenders: List[str], repeats: int, threads: int,
            retries: int) -> Dict[str, Dict[str, List[float]]]:
    runner = QuietRunner(retries, record=("samples_per_s",))
    results: Dict[str, Dict[str, List[float]]] = {w: {c: [] for c in contenders}
                                                  for w in workloads}
    for rep in range(repeats):
        for name in workloads:
            w = WORKLOADS[name]
            order = contenders if rep % 2 == 0 else list(reversed(contenders))
            for lib in order:
                payload = {"lib": lib, "sizes": list(w.sizes), "batch": w.batch,
                           "threads": threads}
                res = runner.run(lambda p=payload, lib=lib, name=name: run_json_child(
                    [os.path.abspath(__file__), "--child"], p, child_env(lib, threads),
                    what=f"{lib} products of {name}"), threads)
                results[name][lib].append(res["samples_per_s"])
                print(f"[{rep + 1}/{repeats}] {name:<12} {lib:<8} products "
                      f"{w.batch / res['samples_per_s'] * 1e3:9.3f} ms/step", flush=True)
    return results


def report(results, train: dict, threads: int) -> None:
    contenders = list(next(iter(results.values())))
    isa = os.environ.get("MLPCORE_GEMM_ISA", "native")
    print(f"\nProducts of one training step alone, float32, {threads} threads, ISA {isa} "
          "(median samples/s the products allow; GFLOP/s in brackets)")
    print(f"{'workload':<13}" + "".join(f"{c:>24}" for c in contenders))
    for name, by_lib in results.items():
        flops = model_flops_per_sample(WORKLOADS[name])
        cells = []
        for c in contenders:
            s = statistics.median(by_lib[c])
            cells.append(f"{s:>13,.0f} ({s * flops / 1e9:6.1f})")
        print(f"{name:<13}" + "".join(f"{x:>24}" for x in cells))
    if not train or "mlpcore" not in contenders:
        return
    print(f"\nAgainst the measured training speeds of {train['meta'].get('date', '?')} "
          f"(train.json, ISA {train.get('fma_peak', {}).get('isa', '?')})")
    for name, by_lib in results.items():
        measured = train["workloads"].get(name, {}).get("results", {})
        if "mlpcore" not in measured:
            continue
        ceiling = statistics.median(by_lib["mlpcore"])
        trains = measured["mlpcore"]["samples_per_s"]
        if trains > ceiling:  # tiny products: one Python call each costs more than the product
            print(f"  {name:<12} mlpcore trains faster ({trains:,.0f} samples/s) than its "
                  "products run one call each: no ceiling here")
            continue
        parts = [f"mlpcore trains at {trains / ceiling:.0%} of its products' ceiling"]
        for other, r in measured.items():
            if other in ("mlpcore",) or "@" in other:
                continue
            parts.append(f"vs {other} today {trains / r['samples_per_s']:.2f}x, at most "
                         f"{ceiling / r['samples_per_s']:.2f}x")
        print(f"  {name:<12} " + "; ".join(parts))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    ap.add_argument("--repeats", type=int, default=3, help="child processes per contender and "
                    "workload (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every contender "
                    "(default 2)")
    ap.add_argument("--train-json", help="train.json from `mlpcore bench`, for the ratios")
    ap.add_argument("--noise-retries", type=int, default=2, help="redo a disturbed child run up "
                    "to N times (see mlpcore.bench.children)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be at least 1")
    train = {}
    if args.train_json:
        with open(args.train_json) as f:
            train = json.load(f)
    results = measure(args.workloads, args.contenders, args.repeats, args.threads,
                      args.noise_retries)
    report(results, train, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())

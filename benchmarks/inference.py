"""Inference latency and throughput: model.predict vs ONNX Runtime vs PyTorch vs NumPy.

The same float32 network (the bench workloads' widths, ReLU between Dense layers, the same
weights) answers batches of 1, 16, 256 and 4096 rows in each contender:

* mlpcore    ``model.predict(x)``
* mlpcore-frozen ``model.freeze().predict(x)`` (Dense weights packed once)
* onnxruntime ``InferenceSession.run`` on the file ``mlpcore.onnx.export`` writes, with
  ``intra_op_num_threads`` set to the thread count (inter-op 1, sequential execution)
* torch      ``net(torch.from_numpy(x))`` under ``torch.inference_mode()``, ``set_num_threads``
* numpy      ``np.maximum(x @ W + b, 0)`` per layer, OpenBLAS threads set by environment

Each (workload, threads, contender) runs in its own process; contenders alternate inside each
round and the rounds repeat, and the table reports, per cell, the median over rounds of: the
median and the 99th percentile of single-call latency, and the throughput (rows/s over all the
timed calls). Ratios are against ONNX Runtime in the same round. The machine is shared and
noisy: read the ratios, not the absolute times.

    PYTHONPATH=python python benchmarks/inference.py                 # digits, mnist-shape, wide
    PYTHONPATH=python python benchmarks/inference.py --quick         # digits only, 1 round
    PYTHONPATH=python python benchmarks/inference.py --workloads digits --threads 1 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import mlpcore  # noqa: F401
except ImportError:  # a source checkout without PYTHONPATH=python
    sys.path.insert(0, os.path.join(HERE, "..", "python"))

from mlpcore.bench.children import child_env, run_json_child  # noqa: E402

BATCHES = (1, 16, 256, 4096)
CONTENDERS = ("mlpcore", "mlpcore-frozen", "onnxruntime", "torch", "numpy")


# --- child: one contender, one thread count, every batch size -------------------------------
def _predictor(contender: str, files: dict, threads: int):
    weights = np.load(files["weights"])
    params = [(weights[f"W{i}"], weights[f"b{i}"]) for i in range(len(weights.files) // 2)]
    if contender in ("mlpcore", "mlpcore-frozen"):
        import mlpcore as mc
        mc.set_num_threads(threads)
        layers = []
        for i, (w, _) in enumerate(params):
            layers += [mc.Dense(*w.shape)] + ([mc.ReLU()] if i < len(params) - 1 else [])
        model = mc.Sequential(layers, dtype="float32")
        dense = [layer for layer in model.layers if isinstance(layer, mc.Dense)]
        for layer, (w, b) in zip(dense, params):
            layer.weight, layer.bias = w, b
        return model.freeze().predict if contender == "mlpcore-frozen" else model.predict
    if contender == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(files["onnx"], options, providers=["CPUExecutionProvider"])
        run = session.run
        return lambda x: run(None, {"input": x})[0]
    if contender == "torch":
        import torch
        torch.set_num_threads(threads)
        modules = []
        for i, (w, b) in enumerate(params):
            linear = torch.nn.Linear(*w.shape)
            linear.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
            linear.bias.data = torch.from_numpy(b)
            modules += [linear] + ([torch.nn.ReLU()] if i < len(params) - 1 else [])
        net = torch.nn.Sequential(*modules).eval()

        def predict(x):
            with torch.inference_mode():
                return net(torch.from_numpy(x)).numpy()
        return predict
    if contender == "numpy":
        def predict(x):
            for i, (w, b) in enumerate(params):
                x = x @ w + b
                if i < len(params) - 1:
                    np.maximum(x, 0, out=x)
            return x
        return predict
    raise ValueError(f"unknown contender {contender!r}")


def _time_calls(predict, x, budget: float):
    for _ in range(5):
        predict(x)
    start = time.perf_counter()
    while time.perf_counter() - start < budget / 5:  # warm up for a fifth of the budget
        predict(x)
    times = []
    total_start = time.perf_counter()
    while (time.perf_counter() - total_start < budget and len(times) < 200_000) or len(times) < 20:
        t0 = time.perf_counter_ns()
        predict(x)
        times.append(time.perf_counter_ns() - t0)
    times = np.array(times, dtype=np.float64) / 1e3  # us
    return {"median_us": float(np.median(times)), "p99_us": float(np.percentile(times, 99)),
            "rows_per_s": float(x.shape[0] * len(times) / (times.sum() / 1e6)), "calls": len(times)}


def child(payload: dict) -> dict:
    predict = _predictor(payload["contender"], payload["files"], payload["threads"])
    x_all = np.load(payload["files"]["inputs"])["x"]
    result = {}
    for batch in payload["batches"]:
        x = np.ascontiguousarray(x_all[:batch])
        out = np.asarray(predict(x))
        result[str(batch)] = _time_calls(predict, x, payload["budget"])
        result[str(batch)]["checksum"] = float(np.abs(out.astype(np.float64)).sum())
    return result


# --- parent -----------------------------------------------------------------------------------
def _prepare(name: str, sizes, folder: str) -> dict:
    import mlpcore as mc
    layers = []
    for i in range(len(sizes) - 1):
        layers += [mc.Dense(sizes[i], sizes[i + 1])] + ([mc.ReLU()] if i < len(sizes) - 2 else [])
    model = mc.Sequential(layers, dtype="float32", seed=0)
    dense = [layer for layer in model.layers if isinstance(layer, mc.Dense)]
    files = {k: os.path.join(folder, f"{name}.{ext}") for k, ext in
             (("weights", "weights.npz"), ("onnx", "onnx"), ("inputs", "inputs.npz"))}
    np.savez(files["weights"], **{f"W{i}": d.weight for i, d in enumerate(dense)},
             **{f"b{i}": d.bias for i, d in enumerate(dense)})
    mc.onnx.export(model, files["onnx"])
    x = np.random.default_rng(1).standard_normal((max(BATCHES), sizes[0])).astype(np.float32)
    np.savez(files["inputs"], x=x)
    return files


def _available(contenders):
    import importlib.util
    need = {"onnxruntime": "onnxruntime", "torch": "torch"}
    return [c for c in contenders if c not in need or importlib.util.find_spec(need[c])]


def main(argv=None) -> int:
    from mlpcore.bench.workloads import WORKLOADS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workloads", nargs="+", default=["digits", "mnist-shape", "wide"],
                   choices=list(WORKLOADS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    p.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--budget", type=float, default=0.4, help="seconds of timed calls per batch")
    p.add_argument("--quick", action="store_true", help="digits only, one round")
    p.add_argument("--json", help="also write the raw results here")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.quick:
        args.workloads, args.repeats = ["digits"], 1
    if max(args.batches) > max(BATCHES):
        p.error(f"--batches: at most {max(BATCHES)}")
    contenders = _available(args.contenders)
    raw = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads:
            files = _prepare(name, WORKLOADS[name].sizes, tmp)
            for threads in args.threads:
                for r in range(args.repeats):
                    order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
                    for contender in order:
                        payload = {"contender": contender, "files": files, "threads": threads,
                                   "batches": args.batches, "budget": args.budget}
                        res = run_json_child([__file__, "--child"], payload,
                                             child_env(contender, threads),
                                             what=f"{contender} child ({name})")
                        raw.setdefault((name, threads, contender), []).append(res)
                        print(f"  done: {name}, {threads} thread(s), round {r + 1}, {contender}",
                              file=sys.stderr, flush=True)
    _report(raw, args, contenders)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"|".join(map(str, k)): v for k, v in raw.items()}, f, indent=1)
    return 0


def _median(rounds, batch, key):
    return statistics.median(r[str(batch)][key] for r in rounds)


def _report(raw, args, contenders) -> None:
    import platform
    print(f"# inference, float32, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.repeats} round(s); medians over rounds. Shared, noisy "
          "machine: compare within a row.")
    for name in args.workloads:
        for threads in args.threads:
            print(f"\n## {name} {'-'.join(map(str, _sizes(name)))}, {threads} thread(s)")
            others = 0.0
            head = "batch | " + " | ".join(f"{c} median/p99 us" for c in contenders) + \
                " | " + " | ".join(f"{c} rows/s" for c in contenders) + \
                " | mlpcore/ort median | mlpcore/ort rows/s" + \
                (" | frozen/ort median | frozen/ort rows/s" if "mlpcore-frozen" in contenders
                 else "")
            print(head)
            for batch in args.batches:
                cells = {c: raw[(name, threads, c)] for c in contenders}
                lat = [f"{_median(cells[c], batch, 'median_us'):.1f} / "
                       f"{_median(cells[c], batch, 'p99_us'):.1f}" for c in contenders]
                thr = [f"{_median(cells[c], batch, 'rows_per_s'):.3g}" for c in contenders]
                ratio = ""
                for mine in ("mlpcore", "mlpcore-frozen"):
                    if mine in cells and "onnxruntime" in cells:
                        lat_r = statistics.median(
                            a[str(batch)]["median_us"] / b[str(batch)]["median_us"]
                            for a, b in zip(cells[mine], cells["onnxruntime"]))
                        thr_r = statistics.median(
                            a[str(batch)]["rows_per_s"] / b[str(batch)]["rows_per_s"]
                            for a, b in zip(cells[mine], cells["onnxruntime"]))
                        ratio += f" | {lat_r:.2f}x | {thr_r:.2f}x"
                sums = {round(cells[c][0][str(batch)]["checksum"], 1) for c in contenders}
                flag = "" if len(sums) == 1 or _close(sums) else "  (outputs differ!)"
                others = max([others] + [r.get("others_cpu_share", 0.0) for c in contenders
                                          for r in cells[c]])
                print(f"{batch} | " + " | ".join(lat) + " | " + " | ".join(thr) + ratio + flag)
            print(f"(other processes used up to {others:.0%} of the CPUs during these runs)")


def _close(sums) -> bool:
    values = sorted(sums)
    return values[-1] - values[0] <= 1e-4 * max(abs(values[-1]), 1.0)


def _sizes(name):
    from mlpcore.bench.workloads import WORKLOADS
    return WORKLOADS[name].sizes


if __name__ == "__main__":
    sys.exit(main())

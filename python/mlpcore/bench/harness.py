"""Training benchmark harness: runs every (workload, contender) in its own child process,
alternating contenders across repeats, and reports median samples/s, ratios, thread scaling
and memory; writes JSON and a PNG bar chart.

    mlpcore bench [--quick] [--workloads tiny digits] [--contenders mlpcore numpy] ...
    python benchmarks/train.py --quick
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

from .._core import fma_peak_gflops, kernel_info
from .children import NOISY, SLOW_CORES, QuietRunner, child_env, run_json_child
from .workloads import WORKLOADS, model_flops_per_sample, theoretical_bytes, write_inputs

CONTENDERS = ["mlpcore", "numpy", "sklearn", "torch"]
SCALING_WORKLOADS = ("wide", "big")   # mlpcore at 1 thread vs --threads
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "contenders.py")
_MODULES = {"sklearn": "sklearn", "torch": "torch"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS),
                   metavar="NAME", help=f"subset of: {' '.join(WORKLOADS)}")
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=CONTENDERS,
                   metavar="NAME", help=f"subset of: {' '.join(CONTENDERS)}")
    p.add_argument("--repeats", type=int, help="fresh processes per contender and workload "
                   "(default 5, --quick 1)")
    p.add_argument("--threads", type=int, default=2, help="threads for every contender")
    p.add_argument("--seconds", type=float, help="target timed duration per child "
                   "(default 2.0, --quick 0.5)")
    p.add_argument("--quick", action="store_true", help="1 repeat, shorter timed runs")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"), metavar="DIR",
                   help="output directory for train.json and train.png")
    p.add_argument("--noise-retries", type=int, help="redo a child run up to N times when "
                   f"other processes used more than {NOISY:.0%}% of the CPUs during it or the "
                   f"cores ran {SLOW_CORES - 1:.0%}% slower than their best before it, keeping "
                   "the quietest (default 2, --quick 0)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")


def _run_child(payload: dict, threads: int, timeout: float = 900.0) -> dict:
    return run_json_child([CHILD], payload, child_env(payload["contender"], threads),
                          what=f"child {payload['contender']}/{payload['workload']['name']}",
                          timeout=timeout)


def _run_with_retry(payload: dict, threads: int, tries: int = 3) -> dict:
    for attempt in range(tries):
        try:
            return _run_child(payload, threads)
        except RuntimeError:  # e.g. the native extension was being rebuilt
            if attempt == tries - 1:
                raise
            time.sleep(20)
    raise AssertionError("unreachable")


def _available(contenders: List[str]) -> List[str]:
    keep = []
    for c in contenders:
        mod = _MODULES.get(c)
        if mod and importlib.util.find_spec(mod) is None:
            print(f"note: {c} is not importable; skipped", file=sys.stderr)
            continue
        keep.append(c)
    return keep


def run(workloads: List[str], contenders: List[str], repeats: int, threads: int,
        seconds: float, out_dir: str, plot: bool = True, noise_retries: int = 0,
        log=sys.stderr) -> dict:
    """Every (workload, contender) ``repeats`` times, each in a fresh child process; a run
    during which other processes used more than NOISY of the CPUs, or before which the core probe
    ran SLOW_CORES times slower than its best, is redone up to ``noise_retries`` times, keeping
    the quietest attempt."""
    contenders = _available(contenders)
    samples: Dict[str, Dict[str, List[dict]]] = {w: {} for w in workloads}
    peak = measure_fma_peak(sorted({1, threads}), seconds=min(0.5, seconds))
    runner = QuietRunner(noise_retries, record=("samples_per_s",))
    errors: List[str] = []
    with tempfile.TemporaryDirectory(prefix="mlpcore-bench-") as tmp:
        data_info = {}
        for name in workloads:
            data_info[name] = write_inputs(WORKLOADS[name], os.path.join(tmp, f"{name}.npz"))
        for rep in range(repeats):
            for name in workloads:
                jobs = [(c, threads) for c in contenders]
                if "mlpcore" in contenders and name in SCALING_WORKLOADS and threads != 1:
                    jobs.append(("mlpcore", 1))
                k = rep % len(jobs)
                for contender, t in jobs[k:] + jobs[:k]:  # rotate the order every repeat
                    key = contender if t == threads else f"{contender}@{t}t"
                    payload = {"contender": contender, "workload": WORKLOADS[name].as_dict(),
                               "npz": os.path.join(tmp, f"{name}.npz"), "threads": t,
                               "target_seconds": seconds}
                    try:  # the core probe runs one copy per thread of --threads
                        res = runner.run(functools.partial(_run_with_retry, payload, t), threads)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        errors.append(str(exc))
                        print(f"[{rep + 1}/{repeats}] {name:<12} {key:<12} FAILED: {exc}",
                              file=log)
                        continue
                    samples[name].setdefault(key, []).append(res)
                    busy = res.get("others_cpu_share")
                    redo = f" [{len(res.get('noisy_attempts', []))} noisy attempt(s) redone]" \
                        if res.get("noisy_attempts") else ""
                    print(f"[{rep + 1}/{repeats}] {name:<12} {key:<12} "
                          f"{res['samples_per_s']:>12,.0f} samples/s" +
                          (f"   (CPU used by other processes: {busy:.0%})"
                           if busy is not None else "") + redo, file=log)
    report = _summarize(workloads, contenders, samples, data_info, threads)
    report["fma_peak"] = peak
    add_peak_shares(report, threads)
    report["meta"] = _meta(repeats, threads, seconds)
    report["meta"]["noise_retries"] = noise_retries
    report["errors"] = errors
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "train.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    report["json_path"] = path
    if plot:
        report["png_path"] = _plot(report, os.path.join(out_dir, "train.png"), log)
    return report


def _size(n) -> str:
    """Bytes as KiB below 1 MiB, else MiB."""
    if n is None:
        return "-"
    return f"{n / 1024:.0f} KiB" if abs(n) < 2**20 else f"{n / 2**20:.1f} MiB"


def _summarize(workloads, contenders, samples, data_info, threads) -> dict:
    out = {"workloads": {}, "scaling": {}}
    for name in workloads:
        wl = WORKLOADS[name]
        results = {}
        for key, runs in samples[name].items():
            rates = [r["samples_per_s"] for r in runs]
            results[key] = {
                "samples_per_s": statistics.median(rates), "all_samples_per_s": rates,
                "peak_increase_bytes": statistics.median(r["peak_increase_bytes"] for r in runs),
                "peak_increase_bytes_whole_run": statistics.median(
                    r.get("peak_increase_bytes_whole_run", r["peak_increase_bytes"]) for r in runs),
                "memory_fit_steps": [r.get("memory_fit_steps") for r in runs],
                "others_cpu_share": [r.get("others_cpu_share") for r in runs],
                "noisy_attempts": [a for r in runs for a in r.get("noisy_attempts", [])],
                "info": runs[-1]["info"]}
        mc = results.get("mlpcore", {}).get("samples_per_s")
        ratios = {f"mlpcore/{c}": mc / results[c]["samples_per_s"]
                  for c in contenders if c != "mlpcore" and c in results and mc}
        out["workloads"][name] = {
            "config": wl.as_dict(), "results": results, "ratios": ratios,
            "memory": {"mlpcore_peak_increase_bytes":
                       results.get("mlpcore", {}).get("peak_increase_bytes"),
                       "mlpcore_peak_increase_bytes_whole_run":
                       results.get("mlpcore", {}).get("peak_increase_bytes_whole_run"),
                       "theoretical_bytes": theoretical_bytes(wl), **data_info[name]}}
        one = results.get("mlpcore@1t", {}).get("samples_per_s")
        if one and mc:
            out["scaling"][name] = {"threads": threads, "samples_per_s_1t": one,
                                    f"samples_per_s_{threads}t": mc, "speedup": mc / one}
    return out


def measure_fma_peak(thread_counts, seconds: float = 0.5) -> dict:
    """The float32 FMA peak (GFLOP/s) at each thread count, at the ISA mlpcore's children run
    (independent FMA chains in the native module, as benchmarks/machine.py measures them)."""
    rates, lanes = {}, 0
    for t in thread_counts:
        rates[str(t)], lanes = fma_peak_gflops(t, seconds)
    return {"isa": kernel_info()["elementwise_isa"], "lanes": lanes, "gflops": rates}


def add_peak_shares(report: dict, threads: int) -> None:
    """mlpcore's model GFLOP/s per workload (model_flops_per_sample x samples/s) and its share
    of the FMA peak at the same thread count."""
    peaks = report.get("fma_peak", {}).get("gflops", {})
    for name, w in report["workloads"].items():
        flops = model_flops_per_sample(WORKLOADS[name])
        w["model_flops_per_sample"] = flops
        for key, t in (("mlpcore", threads), ("mlpcore@1t", 1)):
            r = w["results"].get(key)
            peak = peaks.get(str(t))
            if not r:
                continue
            r["model_gflops"] = r["samples_per_s"] * flops / 1e9
            if peak:
                r["peak_share"] = r["model_gflops"] / peak


def _meta(repeats, threads, seconds) -> dict:
    import numpy as np
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "python": platform.python_version(),
            "numpy": np.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "processor": _cpu_name(), "repeats": repeats, "threads": threads,
            "target_seconds": seconds, "statistic": "median samples/s over repeats",
            "parent_env": {k: os.environ.get(k) for k in
                           ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                            "MLPCORE_GEMM_ISA", "MLPCORE_CACHE_SIZES")},
            "mlpcore_kernels": _kernels()}


def _kernels() -> dict:
    """The ISA and caches mlpcore's children run with (they inherit this environment)."""
    info = kernel_info()
    return {"gemm_isa": info["isa"], "elementwise_isa": info["elementwise_isa"],
            "cache_sizes": info["cache_sizes"]}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_report(report: dict) -> str:
    contenders = [c for c in CONTENDERS
                  if any(c in w["results"] for w in report["workloads"].values())]
    others = [c for c in contenders if c != "mlpcore"]
    head = f"{'workload':<12}" + "".join(f"{c:>12}" for c in contenders) + \
        "".join(f"{'mc/' + c:>12}" for c in others)
    meta = report["meta"]
    lines = [f"Training throughput, samples/s (median of {meta['repeats']} fresh processes, "
             f"{meta['threads']} threads, float32)"]
    kernels = meta.get("mlpcore_kernels")
    if kernels:
        lines.append(f"mlpcore kernels: GEMM ISA {kernels['gemm_isa']}, element-wise "
                     f"{kernels['elementwise_isa']}, caches L1d "
                     f"{kernels['cache_sizes']['l1d'] >> 10} KiB / L2 "
                     f"{kernels['cache_sizes']['l2'] >> 10} KiB")
    lines += [head, "-" * len(head)]
    notes = []
    for name, w in report["workloads"].items():
        row = f"{name:<12}"
        for c in contenders:
            r = w["results"].get(c)
            row += f"{r['samples_per_s']:>12,.0f}" if r else f"{'-':>12}"
            if r and r["info"].get("note"):
                notes.append(f"{name}/{c}: {r['info']['note']}")
            if r and c == "sklearn" and r["info"].get("dtype") != "float32":
                notes.append(f"{name}/sklearn ran in {r['info'].get('dtype')}")
        for c in others:
            v = w["ratios"].get(f"mlpcore/{c}")
            row += f"{v:>11.2f}x" if v else f"{'-':>12}"
        lines.append(row)
    lines += [f"note: {n}" for n in notes]
    shares = [x for w in report["workloads"].values() for r in w["results"].values()
              for x in r.get("others_cpu_share", []) if x is not None]
    noisy = sum(x > NOISY for x in shares)
    if noisy:
        lines.append(f"note: in {noisy} of {len(shares)} child runs other processes used more "
                     f"than {NOISY:.0%} of the machine's CPU (others_cpu_share in the JSON); "
                     "medians damp, but do not remove, that noise")
    if report["scaling"]:
        lines.append("")
        lines.append("mlpcore thread scaling (median samples/s)")
        for name, s in report["scaling"].items():
            t = s["threads"]
            lines.append(f"  {name:<10} 1 thread {s['samples_per_s_1t']:>10,.0f}   {t} threads "
                         f"{s[f'samples_per_s_{t}t']:>10,.0f}   speedup {s['speedup']:.2f}x")
    peak = report.get("fma_peak")
    if peak and any(p > 0 for p in peak["gflops"].values()):
        rates = ", ".join(f"{v:.0f} GFLOP/s on {t} thread{'s' if t != '1' else ''}"
                          for t, v in peak["gflops"].items())
        lines.append("")
        lines.append(f"mlpcore model GFLOP/s (matrix products of forward + backward) against the "
                     f"float32 FMA peak ({peak['isa']}: {rates})")
        for name, w in report["workloads"].items():
            parts = []
            for key in ("mlpcore", "mlpcore@1t"):
                r = w["results"].get(key)
                if r and "peak_share" in r:
                    t = meta["threads"] if key == "mlpcore" else 1
                    parts.append(f"{t} thread{'s' if t != 1 else ''} {r['model_gflops']:>7.1f} "
                                 f"GFLOP/s = {r['peak_share']:>4.0%}")
            if parts:
                lines.append(f"  {name:<12} " + "   ".join(parts))
    lines.append("")
    lines.append("mlpcore memory: peak RSS increase over building the model, warm-up and "
                 "calibration fits (~0.1 s) and a fit of up to 10,000 steps (library code paged "
                 "in beforehand, like the import), against the "
                 "allowance: data + 1.2 x (params + grads + optimizer state + one batch of "
                 "activations); in brackets, the increase after the whole timed run too")
    for name, w in report["workloads"].items():
        m = w["memory"]
        th = m["theoretical_bytes"]
        meas = m["mlpcore_peak_increase_bytes"]
        allowed = m["data_bytes"] + 1.2 * th["total"]
        meas_txt = (f"{_size(meas):>10} of {_size(allowed):>10} allowed "
                    f"({'within' if meas <= allowed else 'OVER'})" if meas is not None else "-")
        whole = m.get("mlpcore_peak_increase_bytes_whole_run")
        parts = ", ".join(f"{k} {_size(th[k])}" for k in
                          ("params", "grads", "optimizer_state", "activations"))
        others_txt = "".join(
            f"; {c} {_size(w['results'][c]['peak_increase_bytes'])}"
            for c in others if c in w["results"])
        others_txt = f"   [others{others_txt}]" if others_txt else ""
        lines.append(f"  {name:<12} {meas_txt}   [whole run {_size(whole)}]   ({parts}; data "
                     f"{_size(m['data_bytes'])})" + others_txt)
    if report.get("errors"):
        lines.append("")
        lines.append(f"{len(report['errors'])} child run(s) failed; see 'errors' in the JSON")
    return "\n".join(lines)


def _plot(report: dict, path: str, log) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; skipping the PNG chart "
              "(pip install matplotlib)", file=log)
        return None
    names = list(report["workloads"])
    keys = [c for c in CONTENDERS if any(c in w["results"] for w in report["workloads"].values())]
    width = 0.8 / max(1, len(keys))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4.2))
    for i, c in enumerate(keys):
        vals = [report["workloads"][n]["results"].get(c, {}).get("samples_per_s", 0)
                for n in names]
        ax.bar([j + (i - (len(keys) - 1) / 2) * width for j in range(len(names))], vals, width,
               label=c)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_yscale("log")
    ax.set_ylabel("samples / s (log scale)")
    meta = report["meta"]
    ax.set_title(f"MLP training throughput, float32, {meta['threads']} threads "
                 f"(median of {meta['repeats']})")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main_from_args(args: argparse.Namespace) -> int:
    repeats = args.repeats or (1 if args.quick else 5)
    seconds = args.seconds or (0.5 if args.quick else 2.0)
    if repeats < 1 or args.threads < 1 or seconds <= 0:
        print("bench: --repeats, --threads and --seconds must be positive", file=sys.stderr)
        return 2
    retries = args.noise_retries if args.noise_retries is not None else (0 if args.quick else 2)
    report = run(args.workloads, args.contenders, repeats, args.threads, seconds, args.out,
                 plot=not args.no_plot, noise_retries=max(0, retries))
    print(format_report(report))
    print(f"\nwrote {report['json_path']}" +
          (f" and {report['png_path']}" if report.get("png_path") else ""))
    return 1 if report["errors"] and not any(
        w["results"] for w in report["workloads"].values()) else 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return main_from_args(p.parse_args(argv))

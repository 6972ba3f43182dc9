"""GEMM benchmark: mlpcore.matmul against numpy.matmul (OpenBLAS), side by side.

Every measurement runs in its own child process, started as the training benchmark starts its
own (mlpcore.bench.children); contenders alternate, the whole set is repeated and medians are
reported. Threads are set through the environment of the child: OMP_NUM_THREADS for mlpcore,
OPENBLAS_NUM_THREADS for NumPy. In the NumPy child OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are
unset (they pick slower kernels on a current NumPy) unless MLPCORE_GEMM_ISA is set, so that
`MLPCORE_GEMM_ISA=avx2 OPENBLAS_CORETYPE=Haswell` compares both on AVX2; the OpenBLAS kernel
actually used is reported from threadpoolctl when it is installed.

Host noise: before every child a core probe runs one copy per thread; a child started while the
cores ran 15% slower than their best probe, or during which other processes took a quarter of the
CPUs, is redone (up to --noise-retries times) and the quietest attempt is kept.

    python benchmarks/gemm.py            # full run
    python benchmarks/gemm.py --quick    # fewer sizes and repeats

Ceiling: before and after each block of one dtype and thread count, machine.py's FMA-peak probe
(compiled once with $CXX or g++, at the vector width of the ISA mlpcore dispatches to; skipped
where that fails or for the portable kernels) measures the cores' peak, and each row
shows both contenders as a share of it (float64: half the float32 peak). Large products run close
to it in both libraries, so their ratio cannot move far from 1.

Writes benchmarks/results/gemm.json and (if matplotlib is installed) benchmarks/results/gemm.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from machine import build_peak_probe, peak_gflops  # noqa: E402

# Nothing above imports mlpcore: the NumPy child (this script with --child) must not load its
# OpenMP runtime. The parent imports it in main().

SQUARE = [64, 128, 256, 512, 1024, 2048]
# (batch M, in K, out N) of an MLP layer: forward NN y = x W, backward TN dW = x^T dy and
# NT dx = dy W^T.
MLP = [(32, 784, 256), (64, 784, 256), (256, 784, 256), (256, 1024, 1024)]


def cases(quick: bool) -> list[dict]:
    out = []
    for n in SQUARE[:-1] if quick else SQUARE:
        out.append({"name": f"square {n}", "form": "NN", "M": n, "N": n, "K": n})
    for m, k, n in MLP:
        tag = f"mlp {m}x{k}x{n}"
        out.append({"name": tag + " fwd", "form": "NN", "M": m, "N": n, "K": k})
        out.append({"name": tag + " dW", "form": "TN", "M": k, "N": n, "K": m})
        out.append({"name": tag + " dX", "form": "NT", "M": m, "N": k, "K": n})
    return out


def operands(form: str, m: int, n: int, k: int, dtype, rng):
    """Random op(A) (m x k) and op(B) (k x n); an operand marked T in `form` is read transposed."""
    a = rng.standard_normal((k, m) if form[0] == "T" else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if form[1] == "T" else (k, n)).astype(dtype)
    return (a.T if form[0] == "T" else a), (b.T if form[1] == "T" else b)


def import_mlpcore():
    """The mlpcore package: installed, or this checkout's python/ (with its built _core)."""
    try:
        import mlpcore
    except ImportError:
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
        import mlpcore
    return mlpcore


# ------------------------------------------------------------------------------------ child
def child(payload: dict) -> None:
    import numpy as np

    contender = payload["contender"]
    dtype = np.dtype(payload["dtype"])
    info = {}
    if contender == "mlpcore":
        import mlpcore as mc

        fn = mc.matmul
        keep = ("isa", "elementwise_isa", "cache_sizes", "openmp", "num_threads")
        info = {k: v for k, v in mc.kernel_info().items() if k in keep}
    else:
        fn = np.matmul
        try:
            from threadpoolctl import threadpool_info

            info = {"threadpools": [
                {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for p in threadpool_info()]}
        except ImportError:
            info = {"threadpools": "threadpoolctl not installed"}
    rng = np.random.default_rng(0)
    target = payload["target_s"]
    results = {}
    for case in payload["cases"]:
        M, N, K, form = case["M"], case["N"], case["K"], case["form"]
        a, b = operands(form, M, N, K, dtype, rng)
        out = np.empty((M, N), dtype)
        fn(a, b, out=out)  # warm up (threads, packing buffers, page faults)
        t0 = time.perf_counter()
        fn(a, b, out=out)
        once = max(time.perf_counter() - t0, 1e-7)
        iters = max(1, int(target / once))
        samples = []
        for _ in range(payload["batches"]):
            t0 = time.perf_counter()
            for _ in range(iters):
                fn(a, b, out=out)
            samples.append((time.perf_counter() - t0) / iters)
        results[case["name"]] = statistics.median(samples)
    print(json.dumps({"info": info, "times": results}))


# ------------------------------------------------------------------------------------ parent
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--repeats", type=int, default=None, help="rounds of both contenders")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--noise-retries", type=int, default=2,
                    help="redo a child started on slowed cores up to N times (default 2)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    repeats = args.repeats or (2 if args.quick else 3)
    case_list = cases(args.quick)
    payload_base = {"cases": case_list, "target_s": 0.03 if args.quick else 0.06,
                    "batches": 3 if args.quick else 5}
    mlpcore = import_mlpcore()  # in the parent only
    from mlpcore.bench.children import SLOW_BLAS_VARS, QuietRunner, child_env, run_json_child

    kinfo = mlpcore.kernel_info()
    isa = kinfo["isa"]  # the kernels the mlpcore children will run (same environment)
    cache = kinfo["cache_sizes"]
    print(f"mlpcore GEMM ISA {isa} (element-wise {kinfo['elementwise_isa']}; MLPCORE_GEMM_ISA="
          f"{kinfo['env_isa']}), caches L1d {cache['l1d'] >> 10} KiB, L2 {cache['l2'] >> 10} KiB "
          f"({cache['source']}), float32 blocking {kinfo['float32']}")
    script = os.path.abspath(__file__)
    env_note = {k: os.environ.get(k) for k in SLOW_BLAS_VARS}
    rows, infos = [], {}
    runner = QuietRunner(args.noise_retries)

    def measure(payload: dict, threads: int) -> dict:
        """One child run, redone while the cores ran slow or other processes were busy."""
        env = child_env(payload["contender"], threads)
        return runner.run(lambda: run_json_child([script, "--child"], payload, env,
                                                 what=f"{payload['contender']} child"), threads)

    # the FMA peak at the vector width of mlpcore's kernels (none for the portable ones)
    lanes = {"avx512": 16, "avx2": 8}.get(isa)
    probe_dir = tempfile.TemporaryDirectory()
    peak_exe = None
    if lanes:
        try:
            peak_exe = build_peak_probe(os.environ.get("CXX", "g++"), probe_dir.name)
        except (OSError, subprocess.CalledProcessError) as exc:
            print("no FMA-peak probe (could not compile it):", exc)

    def peak(threads: int, dtype: str) -> float | None:
        if peak_exe is None:
            return None
        return peak_gflops(peak_exe, threads, lanes) / (2 if dtype == "float64" else 1)

    for dtype in args.dtypes:
        for threads in args.threads:
            peak_before = peak(threads, dtype)
            times = {"mlpcore": [], "numpy": []}
            for r in range(repeats):
                order = ["mlpcore", "numpy"] if r % 2 == 0 else ["numpy", "mlpcore"]
                for who in order:
                    rep = measure(dict(payload_base, contender=who, dtype=dtype), threads)
                    times[who].append(rep["times"])
                    infos[f"{who} {dtype} {threads}t"] = rep["info"]
            # the cores' best of the two probes: the ceiling the whole block ran under
            peak_after = peak(threads, dtype)
            ceiling = max(peak_before, peak_after) if peak_after is not None else None
            for case in case_list:
                name = case["name"]
                flop = 2.0 * case["M"] * case["N"] * case["K"]
                t_mc = statistics.median(t[name] for t in times["mlpcore"])
                t_np = statistics.median(t[name] for t in times["numpy"])
                rows.append({"dtype": dtype, "threads": threads, **case,
                             "mlpcore_gflops": flop / t_mc / 1e9, "numpy_gflops": flop / t_np / 1e9,
                             "ratio": t_np / t_mc, "peak_gflops": ceiling})
            print_rows([r for r in rows if r["dtype"] == dtype and r["threads"] == threads])
            sys.stdout.flush()

    print("\nOpenBLAS (NumPy child):", json.dumps(infos.get(f"numpy {args.dtypes[0]} "
                                                              f"{args.threads[-1]}t")))
    print("mlpcore:", json.dumps(infos.get(f"mlpcore {args.dtypes[0]} {args.threads[-1]}t")))
    print("unset in the NumPy child (parent values):", env_note)
    print("child runs redone because the cores ran slow or other processes were busy:",
          runner.redone)
    probe_dir.cleanup()
    os.makedirs(args.out, exist_ok=True)
    meta = {"machine": platform.machine(), "processor": platform.processor(),
            "python": sys.version.split()[0], "quick": args.quick, "repeats": repeats,
            "infos": infos, "unset_in_numpy_child": env_note,
            "core_probe_best_s": runner.best_probe, "runs_redone": runner.redone}
    with open(os.path.join(args.out, "gemm.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    plot(rows, os.path.join(args.out, "gemm.png"))


def print_rows(rows: list[dict]) -> None:
    if not rows:
        return
    peak = rows[0].get("peak_gflops")
    title = f"\n{rows[0]['dtype']}, {rows[0]['threads']} thread(s)"
    print(title + (f"; FMA peak {peak:.1f} GFLOP/s" if peak else ""))
    print(f"{'case':<26}{'form':>5}{'M':>6}{'N':>6}{'K':>6}{'mlpcore GF/s':>14}{'numpy GF/s':>12}"
          f"{'mc/np':>8}" + (f"{'mc %pk':>8}{'np %pk':>8}" if peak else ""))
    for r in rows:
        share = (f"{100 * r['mlpcore_gflops'] / peak:>8.0f}{100 * r['numpy_gflops'] / peak:>8.0f}"
                 if peak else "")
        print(f"{r['name']:<26}{r['form']:>5}{r['M']:>6}{r['N']:>6}{r['K']:>6}"
              f"{r['mlpcore_gflops']:>14.1f}{r['numpy_gflops']:>12.1f}{r['ratio']:>8.2f}" + share)


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written")
        return
    groups = sorted({(r["dtype"], r["threads"]) for r in rows})
    fig, axes = plt.subplots(len(groups), 1, figsize=(12, 3.2 * len(groups)), squeeze=False)
    for ax, (dtype, threads) in zip(axes[:, 0], groups):
        sel = [r for r in rows if r["dtype"] == dtype and r["threads"] == threads]
        x = range(len(sel))
        ax.bar([i - 0.2 for i in x], [r["mlpcore_gflops"] for r in sel], 0.4, label="mlpcore")
        ax.bar([i + 0.2 for i in x], [r["numpy_gflops"] for r in sel], 0.4, label="numpy")
        ax.set_xticks(list(x))
        ax.set_xticklabels([r["name"].replace("mlp ", "") for r in sel], rotation=30, ha="right",
                           fontsize=7)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{dtype}, {threads} thread(s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("plot written to", path)


if __name__ == "__main__":
    main()

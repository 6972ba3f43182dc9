"""Data-parallel scaling of mlpcore.distributed on this machine, and a projection to clusters.

    python benchmarks/distributed.py wide big --steps 6

For each workload it launches ``mpiexec -n R`` (R = 1, 2, 4; one OpenMP thread per rank) and
times the step ``fit(..., distributed=True)`` runs (compute_gradients on the rank's shard,
scale, in-place chunked Allreduce of the gradient arena, apply_gradients):

* weak scaling: every rank holds the workload's batch (the global batch grows with R);
* strong scaling: the workload's batch is split across the R ranks;
* the time a rank waits for the slowest one (a barrier before the allreduce, timed apart);
* plus one process with 2 threads on the workload's batch (what 2 ranks x 1 thread compete
  with at equal global batch).

It prints samples/s, the share of each step spent in the allreduce and the efficiencies
(samples/s at R over R x samples/s at 1), and fits ``t = latency + bytes / bandwidth`` to
allreduces of 8 B .. 25 MiB between 2 ranks. Then it *projects* (on paper, not measured) the
weak and strong scaling for 8-64 nodes at 10 and 100 Gbit/s: a ring allreduce moves
2 (P-1)/P of the gradient bytes through each node's link and pays 2 (P-1) latencies; compute
per node is the measured 1-thread compute time. The host is shared and has few cores, so
every figure is noisy; 4 ranks on 2 cores are oversubscribed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

try:
    import mlpcore as mc
except ImportError:  # a source checkout without PYTHONPATH=python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import mlpcore as mc
from mlpcore import distributed
from mlpcore.bench.workloads import ADAM_BETAS, ADAM_EPS, WORKLOADS, make_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mc.__file__)))  # for the ranks' path

SIZES = [8, 2**16, 2**20, 25 * 2**20]  # allreduce probe sizes in bytes


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


# --- inside mpiexec ----------------------------------------------------------------------------
def worker(name: str, mode: str, steps: int, probe: bool, measure_wait: bool = True) -> None:
    comm = distributed.init()
    w = WORKLOADS[name]
    model = build(w)
    distributed.broadcast_model(model, comm)
    x, y = make_data(w)
    global_batch = w.batch * comm.size if mode == "weak" else w.batch
    lo, hi = global_batch * comm.rank // comm.size, global_batch * (comm.rank + 1) // comm.size
    xs, ys = x[lo % len(x):][: hi - lo], y[lo % len(x):][: hi - lo]
    scale = (hi - lo) / global_batch
    compute = wait = reduce = update = 0.0
    comm.barrier()
    for step in range(steps + 1):  # step 0 warms up (workspaces, threads)
        t0 = time.perf_counter()
        model.compute_gradients(xs, ys)
        t1 = time.perf_counter()
        if measure_wait:  # separates waiting for the slowest rank from moving the bytes
            comm.barrier()
        tw = time.perf_counter()
        distributed.allreduce_gradients(model, comm, scale=scale)
        t2 = time.perf_counter()
        model.apply_gradients()
        t3 = time.perf_counter()
        if step == 0:
            comm.barrier()
            start = time.perf_counter()
        else:
            compute, wait = compute + t1 - t0, wait + tw - t1
            reduce, update = reduce + t2 - tw, update + t3 - t2
    wall = (time.perf_counter() - start) / steps
    times = comm.allgather_object((compute / steps, reduce / steps, update / steps,
                                   wait / steps))
    result = {"workload": name, "mode": mode, "ranks": comm.size,
              "threads": mc.get_num_threads(), "global_batch": global_batch,
              "step_s": wall, "samples_per_s": global_batch / wall,
              "compute_s": max(t[0] for t in times), "allreduce_s": max(t[1] for t in times),
              "update_s": max(t[2] for t in times), "wait_s": max(t[3] for t in times),
              "gradient_bytes": int(model.grads_view().nbytes)}
    if probe:
        result["probe"] = allreduce_probe(comm)
    if comm.rank == 0:
        print(json.dumps(result), flush=True)


def allreduce_probe(comm):
    """(bytes, fastest of several allreduces) per size: the fastest is the operation's own
    cost, the others include the host descheduling a rank."""
    out = []
    for size in SIZES:
        buf = np.ones(max(1, size // 4), np.float32)
        best = float("inf")
        for _ in range(40 if size <= 2**20 else 6):
            comm.barrier()
            t = time.perf_counter()
            comm.allreduce_(buf)
            best = min(best, time.perf_counter() - t)
        out.append((size, best))
    return out


# --- the driver ---------------------------------------------------------------------------------
def launch(name: str, mode: str, ranks: int, steps: int, threads: int = 1,
           probe: bool = False) -> dict:
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    mpiexec = shutil.which("mpiexec", path=search)
    if mpiexec is None:
        sys.exit("benchmarks/distributed.py needs mpiexec and mpi4py: pip install mpi4py mpich")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    cmd = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker",
           name, "--mode", mode, "--steps", str(steps)] + (["--probe"] if probe else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ring_allreduce_s(nbytes: int, nodes: int, latency: float, bits_per_s: float) -> float:
    return 2 * (nodes - 1) * latency + 2 * (nodes - 1) / nodes * nbytes * 8 / bits_per_s


def fit_latency_bandwidth(probe):
    """latency: the smallest allreduce; bandwidth: the largest one, latency taken off."""
    (_, latency), (nbytes, t) = probe[0], probe[-1]
    return latency, nbytes / max(t - latency, 1e-12)  # s, bytes/s


def report(name: str, steps: int) -> None:
    runs = {}
    for mode in ("weak", "strong"):
        for ranks in (1, 2, 4):
            if mode == "strong" and ranks == 1:
                runs[(mode, ranks)] = runs[("weak", 1)]
                continue
            runs[(mode, ranks)] = launch(name, mode, ranks, steps, probe=(mode, ranks) ==
                                         ("weak", 2))
    two_threads = launch(name, "weak", 1, steps, threads=2)
    base = runs[("weak", 1)]["samples_per_s"]
    w, mib = WORKLOADS[name], runs[("weak", 1)]["gradient_bytes"] / 2**20
    print(f"\n{name}: {w.sizes} batch {w.batch} {w.optimizer}, gradients {mib:.1f} MiB, "
          f"{steps} timed steps per run")
    print("| scaling | ranks x threads | global batch | samples/s | allreduce share | "
          "waiting share | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for (mode, ranks), r in runs.items():
        eff = r["samples_per_s"] / (ranks * base)
        print(f"| {mode} | {ranks} x 1 | {r['global_batch']} | {r['samples_per_s']:.0f} | "
              f"{r['allreduce_s'] / r['step_s']:.1%} | {r['wait_s'] / r['step_s']:.1%} | "
              f"{eff:.2f} |")
    print(f"| (1 process) | 1 x 2 | {two_threads['global_batch']} | "
          f"{two_threads['samples_per_s']:.0f} | - | - | - |")
    print(f"2 ranks x 1 thread / 1 x 1 thread, weak: "
          f"{runs[('weak', 2)]['samples_per_s'] / base:.2f}x; "
          f"2 ranks x 1 thread / 1 process x 2 threads, equal global batch: "
          f"{runs[('strong', 2)]['samples_per_s'] / two_threads['samples_per_s']:.2f}x")
    latency, bandwidth = fit_latency_bandwidth(runs[("weak", 2)]["probe"])
    print(f"allreduce on this host (2 ranks, shared memory): latency {latency * 1e6:.0f} us, "
          f"bandwidth {bandwidth / 1e9:.2f} GB/s")
    parts(runs[("strong", 2)], two_threads, latency, bandwidth)
    project(name, runs[("weak", 1)], latency)


def parts(ranks2: dict, threads2: dict, latency: float, bandwidth: float) -> None:
    """Where a step goes at equal global batch, 2 ranks x 1 thread against 1 process x 2
    threads, and the best ratio the parts allow on a machine whose cores are all computing:
    the ranks' compute and update (each rank updates the whole arena) plus the probe's fastest
    allreduce of the gradients, none of which a busy core can overlap with another."""
    ms = {k: ranks2[k] * 1e3 for k in ("compute_s", "update_s", "allreduce_s", "wait_s")}
    fastest_reduce = (latency + ranks2["gradient_bytes"] / bandwidth) * 1e3
    floor = ms["compute_s"] + ms["update_s"] + fastest_reduce
    print(f"step parts, 2 ranks x 1 thread (slowest rank): compute {ms['compute_s']:.1f} ms, "
          f"update {ms['update_s']:.1f} ms, allreduce {ms['allreduce_s']:.1f} ms (fastest "
          f"probe: {fastest_reduce:.1f} ms), waiting {ms['wait_s']:.1f} ms; 1 process x 2 "
          f"threads: compute {threads2['compute_s'] * 1e3:.1f} ms, update "
          f"{threads2['update_s'] * 1e3:.1f} ms, step {threads2['step_s'] * 1e3:.1f} ms")
    print(f"ceiling of 2 ranks / 1 process at equal global batch without overlap: "
          f"{threads2['step_s'] * 1e3:.1f} / {floor:.1f} ms = "
          f"{threads2['step_s'] * 1e3 / floor:.2f}x")


def project(name: str, one: dict, latency: float) -> None:
    """On paper: P nodes, each computing like one measured rank (1 thread), a ring allreduce
    over a link of 10 or 100 Gbit/s with the measured per-message latency."""
    nbytes, compute = one["gradient_bytes"], one["compute_s"] + one["update_s"]
    batch = one["global_batch"]
    print(f"projection for {name} (not measured): weak = {batch} samples per node; strong = "
          f"global batch {8 * batch} split over the nodes")
    print("| nodes | link | allreduce ms | weak samples/s | weak eff. | strong samples/s | "
          "strong eff. |")
    print("|---|---|---|---|---|---|---|")
    for gbit in (10, 100):
        for nodes in (8, 16, 32, 64):
            ar = ring_allreduce_s(nbytes, nodes, latency, gbit * 1e9)
            weak = nodes * batch / (compute + ar)
            strong_compute = one["compute_s"] * 8 / nodes + one["update_s"]
            strong = 8 * batch / (strong_compute + ar)
            strong_ideal = nodes * batch / compute  # 1-node rate x nodes
            print(f"| {nodes} | {gbit} Gbit/s | {ar * 1e3:.1f} | {weak:.0f} | "
                  f"{compute / (compute + ar):.2f} | {strong:.0f} | "
                  f"{strong / strong_ideal:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workloads", nargs="*", help="default: wide big; any of "
                   + ", ".join(sorted(WORKLOADS)))
    p.add_argument("--steps", type=int, default=6, help="timed steps per run")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="weak", help=argparse.SUPPRESS)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.mode, args.steps, args.probe)
        return
    for name in args.workloads or ["wide", "big"]:
        if name not in WORKLOADS:
            p.error(f"unknown workload {name!r}")
        report(name, args.steps)


if __name__ == "__main__":
    main()

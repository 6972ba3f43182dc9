"""Benchmark child: train one contender on one workload and print one JSON line.

    python path/to/mlpcore/bench/contenders.py '<json payload>'

Run by path (not ``-m``) so that a NumPy, scikit-learn or PyTorch child never imports mlpcore
(and its OpenMP runtime). The payload names the contender, the workload, the .npz holding the
data and the shared initial weights, the thread count and the target timed duration. Thread
environment variables are set by the parent before this process starts.

Timing: one untimed warm-up pass over one batch, then a calibration that doubles the amount of
work (batches, then epochs) until a pass takes >= 0.1 s, then one timed run sized to take about
``target_seconds``: whole epochs over the data, or for slow workloads a single pass over the
first k batches.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import resource
import stat
import sys
import time

import numpy as np


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _rss_now_kb() -> int:
    return _status_kb("VmRSS")


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _fault_in_library_pages() -> int:
    """Read one byte of every page of every file-backed mapping (library code and read-only data).

    Run after the imports and before the peak is reset, for every contender alike: the first call
    of a code path pages in the library's code from its file (shared, reclaimable memory, a cost
    of loading the library like the import itself), and without this those pages would count as
    memory that building the model and fitting it used. Returns the pages touched.
    """
    import ctypes
    page = resource.getpagesize()
    touched = 0
    try:
        with open("/proc/self/maps") as f:
            maps = f.read().splitlines()
    except OSError:
        return 0
    for line in maps:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith("/") or not parts[1].startswith("r"):
            continue
        path = parts[5]
        if path.endswith((".npz", ".npy")):  # data, not library
            continue
        try:
            st = os.stat(path)
        except OSError:  # deleted or inaccessible
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        start, end = (int(v, 16) for v in parts[0].split("-"))
        # pages past the end of the file would raise SIGBUS when read
        end = min(end, start + max(0, st.st_size - int(parts[2], 16)))
        for addr in range(start, end, page):
            ctypes.string_at(addr, 1)
            touched += 1
    return touched


def _reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux: VmHWM and ru_maxrss) so earlier temporaries don't count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --- contenders: each returns (train(x, y, epochs), info) ------------------------------------
def _mlpcore(wl, params, threads):
    import mlpcore as mc
    mc.set_num_threads(threads)
    layers = []
    for i, (w, _) in enumerate(params):
        layers.append(mc.Dense(w.shape[0], w.shape[1]))
        if i < len(params) - 1:
            layers.append(mc.ReLU())
    model = mc.Sequential(layers, dtype="float32", seed=0)
    dense = [layer for layer in model.layers if isinstance(layer, mc.Dense)]
    for layer, (w, b) in zip(dense, params):
        layer.weight[...] = w
        layer.bias[...] = b
    opt = (mc.optim.SGD(lr=wl["lr"]) if wl["optimizer"] == "sgd"
           else mc.optim.Adam(lr=wl["lr"], betas=(0.9, 0.999), eps=1e-8))
    model.compile(loss="cross_entropy", optimizer=opt)

    def train(x, y, epochs):
        model.fit(x, y, epochs=epochs, batch_size=wl["batch"], shuffle=True, verbose=0)

    return train, {"dtype": "float32", "threads": mc.get_num_threads()}


def _numpy(wl, params, threads):
    try:
        from . import numpy_mlp
    except ImportError:  # run as a script
        import numpy_mlp
    model = numpy_mlp.NumpyMLP([w for w, _ in params], [b for _, b in params],
                               optimizer=wl["optimizer"], lr=wl["lr"], dtype=np.float32, seed=0)

    def train(x, y, epochs):
        model.fit(x, y, epochs=epochs, batch_size=wl["batch"], shuffle=True)

    return train, {"dtype": "float32", "blas": _blas_info()}


def _sklearn(wl, params, threads):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*batch_size.*clipped")
    sizes = [w.shape[0] for w, _ in params] + [params[-1][0].shape[1]]
    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu",
                        solver=wl["optimizer"], alpha=0.0, batch_size=wl["batch"],
                        learning_rate="constant", learning_rate_init=wl["lr"], momentum=0.0,
                        nesterovs_momentum=False, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                        shuffle=True, tol=0.0, early_stopping=False, n_iter_no_change=10**9,
                        max_iter=1, random_state=0)
    classes = np.arange(sizes[-1])
    x0 = np.zeros((1, sizes[0]), dtype=np.float32)
    clf.partial_fit(x0, classes[:1], classes=classes)  # builds the layers; weights replaced below
    dtype = clf.coefs_[0].dtype
    n_out = clf.coefs_[-1].shape[1]
    coefs = [w.astype(dtype) for w, _ in params]
    intercepts = [b.astype(dtype) for _, b in params]
    note = ""
    if n_out != sizes[-1]:  # binary problems: one logistic output unit instead of a softmax
        coefs[-1] = (coefs[-1][:, 1:] - coefs[-1][:, :1]).copy()
        intercepts[-1] = (intercepts[-1][1:] - intercepts[-1][:1]).copy()
        note = f"binary task: sklearn uses 1 logistic output instead of {sizes[-1]} softmax"
    clf.coefs_, clf.intercepts_ = coefs, intercepts
    del clf._optimizer  # fresh SGD/Adam state on the shared weights

    def train(x, y, epochs):
        for _ in range(epochs):
            clf.partial_fit(x, y)

    info = {"dtype": str(dtype), "blas": _blas_info()}
    if note:
        info["note"] = note
    return train, info


def _torch(wl, params, threads):
    import torch
    torch.set_num_threads(threads)
    mods = []
    for i, (w, b) in enumerate(params):
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if i < len(params) - 1:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    opt = (torch.optim.SGD(model.parameters(), lr=wl["lr"]) if wl["optimizer"] == "sgd"
           else torch.optim.Adam(model.parameters(), lr=wl["lr"], betas=(0.9, 0.999), eps=1e-8))
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    batch = wl["batch"]

    def train(x, y, epochs):
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)  # shares memory, no copy
        n = xt.shape[0]
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for lo in range(0, n, batch):
                idx = perm[lo:lo + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()

    return train, {"dtype": "float32", "threads": torch.get_num_threads(),
                   "torch": torch.__version__}


CONTENDERS = {"mlpcore": _mlpcore, "numpy": _numpy, "sklearn": _sklearn, "torch": _torch}
_IMPORTS = {"mlpcore": "mlpcore", "sklearn": "sklearn.neural_network", "torch": "torch"}


def _blas_info() -> dict:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return {k: pool.get(k) for k in ("internal_api", "num_threads", "architecture")}
    return {}


MEMORY_STEPS = 10_000  # steps of the fit after which the memory figure is read
MEMORY_SECONDS = 1.0   # ... or fewer, where that many would take longer


def _timed(train, x, y, batches: int, epochs: int, batch: int):
    m = min(x.shape[0], batches * batch)
    xs, ys = x[:m], y[:m]
    start = time.perf_counter()
    train(xs, ys, epochs)
    return time.perf_counter() - start, m * epochs


def run(payload: dict) -> dict:
    wl = payload["workload"]
    batch = wl["batch"]
    threads = int(payload["threads"])
    target = float(payload["target_seconds"])
    with np.load(payload["npz"]) as f:
        x, y = f["x"], f["y"]
        params = [(f[f"W{i}"], f[f"b{i}"]) for i in range(len(wl["sizes"]) - 1)]
    if payload["contender"] in _IMPORTS:  # library import is not part of the memory measured
        importlib.import_module(_IMPORTS[payload["contender"]])
    _fault_in_library_pages()
    reset = _reset_peak()
    rss_before, peak_before = _rss_now_kb(), _peak_kb()
    train, info = CONTENDERS[payload["contender"]](wl, params, threads)
    per_epoch = math.ceil(x.shape[0] / batch)
    _timed(train, x, y, 1, 1, batch)  # warm-up
    batches, epochs = 1, 1
    while True:  # calibration
        seconds, samples = _timed(train, x, y, batches, epochs, batch)
        if seconds >= 0.1:
            break
        grow = max(2, min(8, int(0.12 / max(seconds, 1e-6))))
        if batches < per_epoch:
            batches = min(per_epoch, batches * grow)
        else:
            epochs *= grow
    rate = samples / seconds
    m_all = x.shape[0]
    # The memory figure: the peak after the calibration fits and a fit of about MEMORY_STEPS
    # steps (the horizon over which memory must stay flat), not after the timed run, whose length
    # follows the machine's speed (fit's History keeps a few floats per epoch: thousands of
    # epochs of tiny add ~200 KiB).
    mem_epochs = max(1, min(math.ceil(MEMORY_STEPS / per_epoch),
                            int(MEMORY_SECONDS * rate / m_all)))
    _timed(train, x, y, per_epoch, mem_epochs, batch)
    peak_fit_kb = _status_kb("VmHWM") if reset else _peak_kb()
    want = rate * target  # samples for the timed run
    if want >= m_all:
        batches, epochs = per_epoch, max(1, round(want / m_all))
    else:
        batches, epochs = max(1, round(want / batch)), 1
    seconds, samples = _timed(train, x, y, batches, epochs, batch)
    peak_after = _peak_kb()
    if payload.get("debug"):
        print(f"calibration rate {rate:.0f}/s -> {batches} batches x {epochs} epochs",
              file=sys.stderr)
    return {"contender": payload["contender"], "workload": wl["name"], "threads": threads,
            "samples_per_s": samples / seconds, "seconds": seconds, "samples": samples,
            "epochs": epochs, "batches_per_epoch": min(batches, per_epoch),
            "rss_before_kb": rss_before, "maxrss_before_kb": peak_before,
            "maxrss_after_kb": peak_after, "peak_reset": reset,
            "peak_increase_bytes": (peak_fit_kb - rss_before) * 1024,
            "memory_fit_steps": mem_epochs * per_epoch,
            "peak_increase_bytes_whole_run": ((_status_kb("VmHWM") if reset else peak_after)
                                              - rss_before) * 1024,
            "info": info}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    result = run(json.loads(argv[0]))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

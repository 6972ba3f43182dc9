"""A process forked after mlpcore ran threaded kernels (multiprocessing's "fork" method, joblib,
pre-fork servers) computes on one thread instead of hanging in the OpenMP runtime."""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

CHILD = textwrap.dedent("""
    import multiprocessing as mp
    import warnings
    import numpy as np
    import mlpcore as mc

    def work(queue):
        a = np.random.default_rng(1).random((300, 300)).astype(np.float32)
        model = mc.Sequential([mc.Dense(64, 256), mc.ReLU(), mc.Dense(256, 4)], seed=0)
        model.compile(loss="cross_entropy", optimizer="adam")
        x = np.random.default_rng(2).random((1024, 64)).astype(np.float32)
        model.fit(x, np.arange(1024) % 4, epochs=2, batch_size=512, verbose=0)
        mc.set_num_threads(2)  # refused with a warning: the pool is gone
        queue.put((mc.get_num_threads(), float(mc.matmul(a, a)[0, 0]),
                   float(model.predict(x[:1])[0, 0])))

    if __name__ == "__main__":
        mc.set_num_threads(2)
        a = np.random.default_rng(1).random((300, 300)).astype(np.float32)
        expected = float(mc.matmul(a, a)[0, 0])  # a threaded product in the parent
        mode = __import__("sys").argv[1]
        if mode == "multiprocessing":
            ctx = mp.get_context("fork")
            queue = ctx.Queue()
            worker = ctx.Process(target=work, args=(queue,))
            worker.start()
            threads, product, _ = queue.get(timeout=60)
            worker.join(60)
        else:
            import joblib
            class Queue(list):
                put = list.append
            def job():
                q = Queue()
                work(q)
                return q[0]
            threads, product, _ = joblib.Parallel(n_jobs=2, backend="multiprocessing")(
                joblib.delayed(job)() for _ in range(2))[0]
        print(threads, product == expected, mc.get_num_threads())
""")


@pytest.mark.parametrize("mode", ["multiprocessing", "joblib"])
def test_forked_child_runs_on_one_thread(mode, tmp_path):
    if mode == "joblib":
        pytest.importorskip("joblib")
    script = tmp_path / "fork_child.py"
    script.write_text(CHILD)
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                          timeout=120)  # a hang guard: before the fix the child never returned
    assert done.returncode == 0, done.stderr
    # the child ran on 1 thread with the same bits; the parent keeps its 2 threads
    assert done.stdout.split() == ["1", "True", "2"], (done.stdout, done.stderr)
    assert "cannot be used after fork" in done.stderr


# A fork while another thread is inside a model's native call: the child has no such thread, so
# the model's call lock is never released there.
FORK_DURING_CALL = textwrap.dedent("""
    import os, sys, threading, time
    import numpy as np
    import mlpcore as mc
    what = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.random((50_000, 64)).astype(np.float32)
    y = np.arange(len(x)) % 4
    if what == "fit":  # (one native call for the whole run: the lock is held throughout)
        model = mc.Sequential([mc.Dense(64, 256), mc.ReLU(), mc.Dense(256, 4)], seed=0)
        model.compile(loss="cross_entropy", optimizer="adam")
        call = lambda: model.fit(x, y, epochs=1000, batch_size=64, verbose=0)
    else:  # one call of seconds: between short calls the lock is free, and the child may use it
        model = mc.Sequential([mc.Dense(64, 4096), mc.ReLU(), mc.Dense(4096, 4096), mc.ReLU(),
                               mc.Dense(4096, 4)], seed=0)
        call = lambda: model.predict(x[:20_000])
    calls = {what: call}
    inside = threading.Event()

    def run():
        inside.set()
        calls[what]()

    threading.Thread(target=run, daemon=True).start()
    inside.wait()
    time.sleep(0.3)  # inside the native call
    pid = os.fork()
    if pid == 0:
        try:
            model.predict(x[:1])
            print("answered", flush=True)
        except RuntimeError as exc:
            print("refused", "forked" in str(exc), flush=True)
        fresh = mc.Sequential([mc.Dense(64, 4)], seed=0)  # a model of the child works
        print("fresh", fresh.predict(x[:2]).shape, flush=True)
        os._exit(0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child", os.waitstatus_to_exitcode(status), flush=True)
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        print("child hung", flush=True)
""")


@pytest.mark.parametrize("what", ["fit", "predict"])
def test_a_model_busy_in_another_thread_at_fork_raises_in_the_child(what, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(FORK_DURING_CALL)
    done = subprocess.run([sys.executable, "-W", "ignore", str(script), what],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[:3] == ["refused True", "fresh (2, 4)", "child 0"], \
        (done.stdout, done.stderr)

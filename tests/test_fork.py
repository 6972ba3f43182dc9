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

"""Ctrl-C (and a Python SIGTERM handler) reach a long native call between batches or inference
chunks: the call raises KeyboardInterrupt with the model at its last completed step."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# A child that starts a long native call, says so, and reports how it ended.
CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import mlpcore as mc
    what = sys.argv[1]
    rng = np.random.default_rng(0)
    model = mc.Sequential([mc.Dense(256, 512), mc.ReLU(), mc.Dense(512, 512), mc.ReLU(),
                           mc.Dense(512, 10)], seed=0)
    model.compile(loss="cross_entropy", optimizer="sgd")
    x = rng.normal(size=(200_000, 256)).astype(np.float32)
    y = rng.integers(0, 10, size=len(x))
    model.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)  # warm
    print("started", flush=True)
    try:
        if what == "fit":
            model.fit(x, y, epochs=1000, batch_size=64, verbose=0)
        else:
            for _ in range(1000):
                model.predict(x)
        print("finished", flush=True)
    except KeyboardInterrupt:
        ok = all(np.all(np.isfinite(l.weight)) for l in model.layers if isinstance(l, mc.Dense))
        out = model.predict(x[:4])  # the model still works
        print("interrupted", ok, out.shape, flush=True)
""")


# (at 2 threads predict cuts the rows between the threads; the caller's thread asks for signals)
@pytest.mark.parametrize("what, threads", [("fit", 1), ("predict", 1), ("predict", 2)])
def test_ctrl_c_stops_a_long_native_call(what, threads, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    child = subprocess.Popen([sys.executable, str(script), what], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "started"
        time.sleep(0.5)  # inside the long call
        child.send_signal(signal.SIGINT)
        sent = time.monotonic()
        # a hang guard, not a speed test: without the check the call runs for many minutes
        out, err = child.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        child.kill()
    assert out.split() == ["interrupted", "True", "(4,", "10)"], (out, err)
    print(f"{what}: returned {waited:.3f} s after SIGINT")


# The scikit-learn estimator runs all its epochs in one native call (epochs of about a
# millisecond, far shorter than the poll period): Ctrl-C still stops it, and the epochs done
# before are recorded as scikit-learn's would be.
SK_CHILD = textwrap.dedent("""
    import warnings
    import numpy as np
    from mlpcore.sklearn import MLPClassifier
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 20))
    y = (X[:, 0] > 0).astype(int)
    est = MLPClassifier(hidden_layer_sizes=(32,), max_iter=10**7, tol=0.0,
                        n_iter_no_change=10**9, random_state=0)
    print("started", flush=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)
        print("finished", flush=True)
    except KeyboardInterrupt:
        ok = all(np.all(np.isfinite(c)) for c in est.coefs_)
        print("interrupted", ok, est.n_iter_ > 10, len(est.loss_curve_) == est.n_iter_,
              est.t_ == 2000 * est.n_iter_, flush=True)
""")


def test_ctrl_c_stops_the_estimators_native_epoch_loop(tmp_path):
    pytest.importorskip("sklearn")
    script = tmp_path / "sk_child.py"
    script.write_text(SK_CHILD)
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        time.sleep(1.5)  # inside the long call
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)  # a hang guard, not a speed test
    finally:
        child.kill()
    assert out.split() == ["interrupted", "True", "True", "True", "True"], (out, err)


# A handler that calls into the model whose fit is running (the fit holds the network's lock on
# the same thread): the call raises RuntimeError instead of waiting for itself forever.
REENTRY = textwrap.dedent("""
    import signal, sys
    import numpy as np
    import mlpcore as mc
    what = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.random((100_000, 64)).astype(np.float32)  # epochs of a good part of a second,
    y = (x[:, 0] > 0.5).astype(np.int64)                 # polled for signals inside
    model = mc.Sequential([mc.Dense(64, 512), mc.ReLU(), mc.Dense(512, 2)], seed=0)
    model.compile(loss="cross_entropy")
    calls = {"predict": lambda: model.predict(x[:2]), "evaluate": lambda: model.evaluate(x, y)}
    def handler(*args):  # every 50 ms until a call lands inside the fit's native loop
        try:
            calls[what]()
        except RuntimeError:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            raise
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    try:
        model.fit(x, y, epochs=5, batch_size=32, verbose=0)
        print("finished", flush=True)
    except RuntimeError as e:
        print("busy" if "busy with a call on this thread" in str(e) else repr(e), flush=True)
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    print(bool(np.isfinite(model.evaluate(x, y)["loss"])), flush=True)  # usable afterwards
""")


@pytest.mark.parametrize("what", ["predict", "evaluate"])
def test_a_handler_calling_into_the_running_model_raises(what, tmp_path):
    script = tmp_path / "reentry.py"
    script.write_text(REENTRY)
    child = subprocess.Popen([sys.executable, str(script), what], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=120)  # a hang guard: it used to wait forever
    finally:
        child.kill()
    assert out.split() == ["busy", "True"], (out, err)


# A child whose main thread ends while a daemon thread is inside a long native call.
DAEMON_CHILD = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    import mlpcore as mc
    what = sys.argv[1]
    rng = np.random.default_rng(0)
    model = mc.Sequential([mc.Dense(256, 512), mc.ReLU(), mc.Dense(512, 10)], seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    x = rng.normal(size=(50_000, 256)).astype(np.float32)
    y = rng.integers(0, 10, size=len(x))
    calls = {"fit": lambda: model.fit(x, y, epochs=1000, batch_size=64, verbose=0),
             "predict": lambda: [model.predict(x) for _ in range(1000)],
             "evaluate": lambda: [model.evaluate(x, y) for _ in range(1000)]}
    inside = threading.Event()

    def run():
        inside.set()
        calls[what]()

    threading.Thread(target=run, daemon=True).start()
    inside.wait()
    time.sleep(0.3)  # inside the native call
    print("exiting", flush=True)
""")


# Python ends a daemon thread that asks for the GIL during shutdown with a forced unwind, which
# aborted the process when it crossed the native call's frames ("terminate called without an
# active exception"): the thread is parked until the process exits instead.
@pytest.mark.parametrize("what, threads", [("fit", 2), ("predict", 1), ("evaluate", 2)])
def test_the_interpreter_exits_cleanly_during_a_daemon_threads_native_call(what, threads,
                                                                           tmp_path):
    script = tmp_path / "child.py"
    script.write_text(DAEMON_CHILD)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, str(script), what], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.stdout.strip() == "exiting"
    assert done.returncode == 0, done.stderr
    assert "terminate" not in done.stderr


# The main thread runs the interpreter's shutdown: its native calls then (an atexit function, an
# object's __del__ during the final collection) take the GIL back and return as usual.
AT_EXIT_CHILD = textwrap.dedent("""
    import atexit
    import numpy as np
    import mlpcore as mc
    model = mc.Sequential([mc.Dense(4, 8), mc.ReLU(), mc.Dense(8, 2)], seed=0)
    x = np.random.default_rng(0).random((5000, 4)).astype(np.float32)

    class Late:
        def __del__(self):
            print("del", model.predict(x).shape, flush=True)

    keep = Late()
    atexit.register(lambda: print("atexit", model.predict(x).shape, flush=True))
""")


def test_native_calls_of_the_main_thread_at_exit_return(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(AT_EXIT_CHILD)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["atexit (5000, 2)", "del (5000, 2)"]

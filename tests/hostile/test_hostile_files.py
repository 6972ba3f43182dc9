"""The hostile corpus (make_corpus.py): every file is refused with the right exception, whose
message names the file and the field at fault. Files that once allocated without bound, crashed
or blocked are loaded in a child process under an address-space limit and a timeout."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import make_corpus  # noqa: E402
from make_corpus import CASES  # noqa: E402

import mlpcore as mc  # noqa: E402

PYTHON_DIR = str(Path(mc.__file__).resolve().parent.parent)
SAFE = [c for c in CASES if not c.dangerous]
DANGEROUS = [c for c in CASES if c.dangerous]


def _call(case, path):
    if case.func == "load":
        return mc.load(path, **case.options)
    return mc.load_checkpoint(path, **case.options)


@pytest.mark.parametrize("case", SAFE, ids=[c.name for c in SAFE])
def test_hostile_file_is_refused_naming_file_and_field(tmp_path, case):
    path = case.make(tmp_path)
    with pytest.raises(case.error) as excinfo:
        _call(case, path)
    message = str(excinfo.value)
    assert repr(str(path)) in message or str(path) in message, message
    assert case.fragment in message, message
    assert excinfo.value.__cause__ is None or isinstance(excinfo.value.__cause__, OSError)


# --- the dangerous ones, in a child under RLIMIT_AS ----------------------------------------------
_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    import make_corpus
    import mlpcore as mc

    # room for the interpreter, NumPy and OpenMP's threads, not for any model the files describe
    # (Dense(20000, 20000) alone needs 1.6 GB, the others exabytes)
    size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    limit = size + 768 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def timeout(*args):
        raise TimeoutError("blocked for 20 s")

    signal.signal(signal.SIGALRM, timeout)
    folder = Path(sys.argv[1])
    for case in make_corpus.CASES:
        if not case.dangerous:
            continue
        path = case.make(folder)
        signal.alarm(20)
        try:
            load = mc.load if case.func == "load" else mc.load_checkpoint
            load(path, **case.options)
            outcome = {"type": None, "message": "loaded"}
        except BaseException as exc:
            outcome = {"type": type(exc).__name__, "message": str(exc)}
        finally:
            signal.alarm(0)
        outcome.update(name=case.name, path=str(path))
        print(json.dumps(outcome), flush=True)
""")


@pytest.fixture(scope="module")
def dangerous_outcomes(tmp_path_factory):
    if not hasattr(os, "mkfifo") or not Path("/proc/self/statm").exists():
        pytest.skip("needs Linux (/proc, FIFOs, RLIMIT_AS)")
    folder = tmp_path_factory.mktemp("dangerous")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [PYTHON_DIR, env.get("PYTHONPATH")] if p)
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(folder), os.path.dirname(__file__)],
                          env=env, capture_output=True, text=True, timeout=600)
    outcomes = {}
    for line in proc.stdout.splitlines():
        item = json.loads(line)
        outcomes[item["name"]] = item
    return outcomes, proc


@pytest.mark.parametrize("case", DANGEROUS, ids=[c.name for c in DANGEROUS])
def test_dangerous_file_fails_fast_within_a_memory_limit(dangerous_outcomes, case):
    outcomes, proc = dangerous_outcomes
    assert case.name in outcomes, (f"the child died before or at this case "
                                   f"(exit {proc.returncode}): {proc.stderr[-2000:]}")
    got = outcomes[case.name]
    assert got["type"] == case.error.__name__, got
    assert got["path"] in got["message"] and case.fragment in got["message"], got


# --- explicit opt-in for non-finite values -----------------------------------------------------
def test_nonfinite_weights_load_with_allow_nonfinite(tmp_path):
    case = next(c for c in CASES if c.name == "nan-weight")
    path = case.make(tmp_path)
    with pytest.raises(ValueError, match="allow_nonfinite=True"):
        mc.load(path)
    model = mc.load(path, allow_nonfinite=True)
    assert np.isnan(model.layers[0].weight[1, 1])
    assert np.isfinite(np.delete(model.layers[0].weight.ravel(), 3)).all()

    ck = next(c for c in CASES if c.name == "nan-weight-checkpoint").make(tmp_path)
    restored = mc.load_checkpoint(ck, allow_nonfinite=True)
    assert np.isnan(restored.model.layers[0].weight[1, 1])


def test_corpus_base_file_is_valid(tmp_path):
    """The cases spoil one field each of files that load: the unspoiled ones load."""
    model_path, checkpoint_path = make_corpus.valid_files(tmp_path)
    model = mc.load(model_path)
    np.testing.assert_array_equal(model.layers[0].weight,
                                  (np.arange(6, dtype=np.float32).reshape(3, 2) / 10))
    ck = mc.load_checkpoint(checkpoint_path)
    assert ck.epoch == 1 and ck.model.optimizer.step_count == 3


# --- loading into an existing model: refused values leave it untouched -------------------------
def _compiled_small_model():
    model = mc.Sequential([mc.Dense(3, 2)], seed=5)
    model.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.05))
    return model


@pytest.mark.parametrize("override, field", [
    ({"optimizer.step": -1}, "optimizer.step"),
    ({"optimizer.step": "3"}, "optimizer.step"),
    ({"optimizer.param_groups.0.lr": float("nan")}, "learning rate"),
    ({"optimizer.param_groups.0.lr": -10.0}, "learning rate"),
    ({"optimizer.param_groups.0.momentum": float("inf")}, "momentum"),
], ids=["step-negative", "step-str", "lr-nan", "lr-negative", "momentum-inf"])
def test_checkpoint_with_bad_optimizer_values_leaves_the_model_untouched(tmp_path, override,
                                                                         field):
    path = make_corpus.small_model(tmp_path / "ck.safetensors", training=True, **override)
    model = _compiled_small_model()
    weight, lr, step = model.layers[0].weight.copy(), model.optimizer.lr, \
        model.optimizer.step_count
    with pytest.raises(ValueError) as excinfo:
        mc.load_checkpoint(path, model=model)
    assert str(path) in str(excinfo.value) and field in str(excinfo.value)
    np.testing.assert_array_equal(model.layers[0].weight, weight)
    assert model.optimizer.lr == lr and model.optimizer.step_count == step

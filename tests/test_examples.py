"""Every script in examples/ runs on its small settings and shows what it claims."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NEEDS_SKLEARN = {"03_digits_hand_loop", "04_vanishing_gradients", "07_optimizers",
                 "08_mnist_workflow"}


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, capsys, *args):
    if name in NEEDS_SKLEARN:
        pytest.importorskip("sklearn")
    result = _load(name).main(["--small", *args])
    return result, capsys.readouterr().out


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("[0-9]*.py")}
    tested = {"01_single_neuron", "02_four_equations", "03_digits_hand_loop",
              "04_vanishing_gradients", "05_exploding_gradients", "06_debugging_table",
              "07_optimizers", "08_mnist_workflow"}
    assert scripts == tested


def test_single_neuron(capsys):
    _, out = _run("01_single_neuron", capsys)
    assert "hand and mlpcore agree" in out


def test_four_equations(capsys):
    _, out = _run("02_four_equations", capsys)
    assert "all four equations hold" in out and out.count("max relative difference") == 9


def test_digits_hand_loop(capsys):
    history, out = _run("03_digits_hand_loop", capsys)
    assert "hand-written loop" in out and "fit:" in out
    assert history.history["val_accuracy"][-1] > 0.5


def test_vanishing_gradients(capsys, tmp_path):
    args = []
    try:
        import matplotlib  # noqa: F401
        args = ["--plot", str(tmp_path / "norms.png")]
    except ImportError:
        pass
    norms, out = _run("04_vanishing_gradients", capsys, *args)
    ratio = {name: v[0] / v[-1] for name, v in norms.items()}
    assert ratio["sigmoid (glorot)"] < 1e-4  # the first layer's gradient has vanished
    assert ratio["ReLU + He init"] > 1e-2 and ratio["sigmoid + LayerNorm"] > 1e-2
    assert ratio["sigmoid + residual"] > 1e-3
    assert "slope compounding" in out
    if args:
        assert (tmp_path / "norms.png").stat().st_size > 0


def test_exploding_gradients(capsys):
    _, out = _run("05_exploding_gradients", capsys)
    assert "exploding gradients" in out
    assert "no clipping    stopped" in out and "clip_norm=1    loss per epoch" in out


def test_debugging_table(capsys):
    rows, _ = _run("06_debugging_table", capsys)
    found = {symptom: text for symptom, _, text in rows}
    assert found["loss flat"].startswith("learning rate looks too low")
    assert "NonFiniteLossError" in found["loss becomes NaN"]
    assert "slope compounding" in found["early layers do not learn"]
    assert found["units never fire"].startswith("dead units")
    assert found["raw inputs"].startswith("unscaled inputs")
    assert "every array changed: True" in found["(checklist) can it learn?"]


def test_optimizers(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    curves, out = _run("07_optimizers", capsys, "--plot", str(tmp_path / "opt.png"))
    assert len(curves) == 5 and all(np.isfinite(v).all() and v[-1] < v[0]
                                     for v in curves.values())
    assert (tmp_path / "opt.png").exists()


def test_mnist_workflow_on_a_file(capsys, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    images = (rng.integers(0, 40, size=(300, 6, 6)) + 60 * labels[:, None, None]).astype(np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=images[:240], y_train=labels[:240], x_test=images[240:],
             y_test=labels[240:])
    test, out = _load("08_mnist_workflow").main(["--small", "--data", str(path)]), \
        capsys.readouterr().out
    assert "tiny.npz: 240 training and 60 test rows, 36 features, 3 classes" in out
    assert "unscaled inputs" in out and "identical predictions: True" in out
    assert test["accuracy"] > 0.5


def test_mnist_workflow_default_digits(capsys):
    test, out = _run("08_mnist_workflow", capsys)
    assert "digits" in out and test["accuracy"] > 0.5

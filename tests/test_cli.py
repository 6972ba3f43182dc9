"""The command line: `mlpcore train` on the digits and on the user's .npz / .csv files, in-process
through mlpcore.cli.main and once as `python -m mlpcore`; errors exit with code 2 and a message."""
import csv
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mlpcore as mc
from helpers import PYTHON_DIR
from mlpcore.cli import main

FAST = ["--quiet", "--threads", "1"]


def parse(stdout):
    """The report lines as {key: text}, e.g. {"test accuracy": "0.9556", ...}."""
    report = {}
    for line in stdout.splitlines():
        key, sep, rest = line.partition(": ")
        if sep:
            report[key.strip()] = rest.strip()
    return report


def number(text):
    value = float(text)
    assert math.isfinite(value)
    return value


def throughput(report):
    m = re.fullmatch(r"([\d,]+) samples/s \(([\d.]+) s for (\d+) epochs.*\)", report["throughput"])
    assert m, report["throughput"]
    return float(m.group(1).replace(",", "")), int(m.group(3))


def run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def blobs(n_per_class=60, n_features=4, seed=0):
    """Three well separated Gaussian blobs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, n_features)) * 6.0
    x = np.concatenate([c + rng.normal(size=(n_per_class, n_features)) for c in centers])
    y = np.repeat(np.arange(3), n_per_class)
    order = rng.permutation(len(y))
    return x[order], y[order]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# --- the digits -----------------------------------------------------------------------------
def test_digits_quick_run_reports_accuracy_and_throughput(capsys):
    code, out, err = run(capsys, ["train", "--epochs", "3", *FAST])
    assert code == 0, err
    report = parse(out)
    assert report["data"].startswith(
        "digits: 1347 train / 450 test samples, 64 features, 10 classes")
    assert report["model"].startswith("64-128-64-10 relu")
    acc = number(report["test accuracy"])
    assert 0.8 <= acc <= 1.0  # 10 classes: chance is 0.1
    assert number(report["test loss"]) > 0 and number(report["train loss"]) > 0
    rate, epochs = throughput(report)
    assert rate > 0 and epochs == 3
    assert "test MAE" not in report
    assert mc.get_num_threads() == 1  # --threads was applied


def test_save_writes_a_loadable_model_with_the_reported_accuracy(capsys, tmp_path):
    from mlpcore.data import load_digits, standardize, train_test_split

    path = tmp_path / "digits.safetensors"
    code, out, err = run(capsys, ["train", "--epochs", "2", "--layers", "32", "--dtype", "float64",
                                  "--optimizer", "sgd", "--lr", "0.05", "--seed", "3",
                                  "--save", str(path), *FAST])
    assert code == 0, err
    report = parse(out)
    assert report["saved"] == str(path)
    model = mc.load(path)
    assert model.dtype == np.float64
    assert [layer.get_config()["type"] for layer in model.layers] == ["Dense", "ReLU", "Dense"]
    assert (model.in_features, model.out_features) == (64, 10)
    assert model.loss.name == "cross_entropy"
    assert isinstance(model.optimizer, mc.optim.SGD) and model.optimizer.lr == 0.05
    assert model.optimizer.step_count == 2 * math.ceil(1347 / 32)
    # the same split and scaling as the command: the saved model has the printed accuracy
    x_tr, y_tr, x_te, y_te = train_test_split(load_digits(), 0.25, 3)
    x_tr, x_te = standardize(x_tr, x_te)
    assert f"{model.evaluate(x_te, y_te)['accuracy']:.4f}" == report["test accuracy"]


def test_python_dash_m_mlpcore_in_a_subprocess(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [PYTHON_DIR, env.get("PYTHONPATH")] if p)
    proc = subprocess.run([sys.executable, "-m", "mlpcore", "train", "--epochs", "2",
                           "--layers", "32", *FAST], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = parse(proc.stdout)
    assert 0.5 <= number(report["test accuracy"]) <= 1.0
    assert throughput(report)[0] > 0

    bad = subprocess.run([sys.executable, "-m", "mlpcore", "train", "--data", "missing.npz"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "mlpcore train: error:" in bad.stderr and "missing.npz" in bad.stderr
    assert "test accuracy" not in bad.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.strip() == f"mlpcore {mc.__version__}"


def test_progress_bars_go_to_stderr_not_stdout(capsys, tmp_path):
    x, y = blobs(20)
    np.savez(tmp_path / "small.npz", x=x, y=y)
    code, out, err = run(capsys, ["train", "--data", str(tmp_path / "small.npz"), "--epochs", "2",
                                  "--threads", "1"])
    assert code == 0, err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err
    assert "Epoch" not in out
    assert "test accuracy" in parse(out)


# --- the user's files -----------------------------------------------------------------------
def test_custom_npz_classification(capsys, tmp_path):
    x, y = blobs()
    labels = np.array([3, 7, 11])[y]  # class values need not be 0..k-1
    path = tmp_path / "blobs.npz"
    np.savez(path, x=x, y=labels)
    code, out, err = run(capsys, ["train", "--data", str(path), "--epochs", "20", "--layers", "16",
                                  "--lr", "0.01", "--batch-size", "16", *FAST])
    assert code == 0, err
    report = parse(out)
    assert report["data"] == "blobs: 135 train / 45 test samples, 4 features, 3 classes"
    assert report["model"].startswith("4-16-3 relu")
    assert number(report["test accuracy"]) >= 0.9


def test_npz_with_a_named_target_array(capsys, tmp_path):
    x, y = blobs()
    path = tmp_path / "named.npz"
    np.savez(path, X=x, label=y, y=np.zeros(len(y)))  # --target picks 'label', not 'y'
    code, out, err = run(capsys, ["train", "--data", str(path), "--target", "label",
                                  "--epochs", "20", "--layers", "16", "--lr", "0.01", *FAST])
    assert code == 0, err
    assert "3 classes" in parse(out)["data"]
    assert number(parse(out)["test accuracy"]) >= 0.9


def test_csv_with_text_class_labels(capsys, tmp_path):
    x, y = blobs()
    names = np.array(["red", "green", "blue"])[y]
    rows = [[f"{a:.6f}", f"{b:.6f}", name, f"{c:.6f}", f"{d:.6f}"]
            for (a, b, c, d), name in zip(x, names)]
    path = write_csv(tmp_path / "colours.csv", ["f1", "f2", "colour", "f3", "f4"], rows)
    code, out, err = run(capsys, ["train", "--data", str(path), "--target", "colour",
                                  "--epochs", "20", "--layers", "16", "--lr", "0.01", *FAST])
    assert code == 0, err
    report = parse(out)
    assert report["data"] == "colours: 135 train / 45 test samples, 4 features, 3 classes"
    assert number(report["test accuracy"]) >= 0.9


def test_csv_with_numeric_class_labels(capsys, tmp_path):
    x, y = blobs(n_features=2)
    rows = [[int(label), f"{a:.6f}", f"{b:.6f}"] for (a, b), label in zip(x, y)]
    path = write_csv(tmp_path / "ints.csv", ["class", "u", "v"], rows)
    code, out, err = run(capsys, ["train", "--data", str(path), "--target", "class",
                                  "--epochs", "20", "--layers", "16", "--lr", "0.01", *FAST])
    assert code == 0, err
    report = parse(out)
    assert "2 features, 3 classes" in report["data"]
    assert number(report["test accuracy"]) >= 0.9


def _regression_rows(n=240, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 3))
    y = 2.0 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] + 3.0 + 0.01 * rng.normal(size=n)
    return x, y


@pytest.mark.parametrize("task", [["--task", "regression"], []], ids=["explicit", "auto"])
def test_regression_csv_reports_mae(capsys, tmp_path, task):
    x, y = _regression_rows()
    rows = [[f"{a:.6f}", f"{t:.6f}", f"{b:.6f}", f"{c:.6f}"] for (a, b, c), t in zip(x, y)]
    path = write_csv(tmp_path / "linear.csv", ["x1", "target", "x2", "x3"], rows)
    code, out, err = run(capsys, ["train", "--data", str(path), "--target", "target", *task,
                                  "--epochs", "40", "--layers", "16", "--lr", "0.01",
                                  "--batch-size", "16", *FAST])
    assert code == 0, err
    report = parse(out)
    assert report["data"] == "linear: 180 train / 60 test samples, 3 features, regression"
    assert "loss mse" in report["model"]
    assert "test accuracy" not in report
    mae = number(report["test MAE"])
    baseline = np.mean(np.abs(y - y.mean()))  # predicting the mean
    assert 0 <= mae < 0.25 * baseline


def test_regression_npz_with_two_targets(capsys, tmp_path):
    x, y = _regression_rows()
    targets = np.stack([y, -0.5 * y], axis=1)
    path = tmp_path / "two.npz"
    np.savez(path, x=x, y=targets)
    code, out, err = run(capsys, ["train", "--data", str(path), "--task", "regression",
                                  "--loss", "huber", "--epochs", "40", "--layers", "16",
                                  "--lr", "0.01", "--batch-size", "16", *FAST])
    assert code == 0, err
    report = parse(out)
    assert report["model"].startswith("3-16-2 relu") and "loss huber" in report["model"]
    assert number(report["test MAE"]) < 0.25 * np.mean(np.abs(targets - targets.mean(axis=0)))


# --- errors: exit code 2 and a message on stderr --------------------------------------------
def _error_case(tmp_path, case):
    x, y = blobs(10)
    rows = [[f"{a:.3f}", f"{b:.3f}", str(label)] for (a, b, *_), label in zip(x, y)]
    good_csv = write_csv(tmp_path / "good.csv", ["a", "b", "y"], rows)
    if case == "missing file":
        missing = str(tmp_path / "missing.csv")
        return ["--data", missing, "--target", "y"], ["not found", "missing.csv"]
    if case == "csv without target":
        return ["--data", str(good_csv)], ["--target"]
    if case == "unknown target column":
        return (["--data", str(good_csv), "--target", "nope"],
                ["no column named 'nope'", "'a', 'b', 'y'"])
    if case == "unsupported extension":
        path = tmp_path / "data.txt"
        path.write_text("a,b,y\n1,2,0\n")
        return ["--data", str(path), "--target", "y"], ["unsupported", "data.txt"]
    if case == "npz without arrays":
        path = tmp_path / "odd.npz"
        np.savez(path, features=x)
        return ["--data", str(path)], ["expected arrays", "features"]
    if case == "text target for regression":
        path = write_csv(tmp_path / "text.csv", ["a", "kind"], [["1.0", "cat"], ["2.0", "dog"]])
        return ["--data", str(path), "--target", "kind", "--task", "regression"], ["text"]
    if case == "non-numeric feature":
        path = write_csv(tmp_path / "feat.csv", ["a", "y"], [["1.0", "0"], ["oops", "1"]])
        return ["--data", str(path), "--target", "y"], ["non-numeric", "line 3"]
    if case == "ragged csv":
        path = write_csv(tmp_path / "ragged.csv", ["a", "b", "y"], [["1", "2", "0"], ["1", "1"]])
        return ["--data", str(path), "--target", "y"], ["line 3"]
    if case == "bad test size":
        return ["--data", str(good_csv), "--target", "y", "--test-size", "1.5"], ["--test-size"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing file", "csv without target", "unknown target column",
                                  "unsupported extension", "npz without arrays",
                                  "text target for regression", "non-numeric feature",
                                  "ragged csv", "bad test size"])
def test_data_errors_exit_2_with_a_message(capsys, tmp_path, case):
    argv, needles = _error_case(tmp_path, case)
    code, out, err = run(capsys, ["train", *argv, "--epochs", "1", *FAST])
    assert code == 2
    assert err.startswith("mlpcore train: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err
    assert "test accuracy" not in out and "test MAE" not in out


@pytest.mark.parametrize("argv, needle", [
    (["train", "--layers", "0,5"], "--layers"),
    (["train", "--layers", "64,-1"], "--layers"),
    (["train", "--layers", "a,b"], "--layers"),
    (["train", "--activation", "nope"], "--activation"),
    (["train", "--optimizer", "nope"], "--optimizer"),
    (["train", "--loss", "nope"], "--loss"),
    (["train", "--task", "nope"], "--task"),
    (["train", "--dtype", "float16"], "--dtype"),
    (["train", "--epochs", "three"], "--epochs"),
    (["train", "--lr", "fast"], "--lr"),
    (["train", "--no-such-option"], "unrecognized arguments"),
    (["predict"], "invalid choice"),
    ([], "required"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_options_exit_with_argparse_error(capsys, argv, needle):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    out, err = capsys.readouterr()
    assert "error:" in err and needle in err
    assert "Traceback" not in err and "test accuracy" not in out

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
    from mlpcore.data import load_digits, train_test_split

    path = tmp_path / "digits.safetensors"
    code, out, err = run(capsys, ["train", "--epochs", "2", "--layers", "32", "--dtype", "float64",
                                  "--optimizer", "sgd", "--lr", "0.05", "--seed", "3",
                                  "--save", str(path), *FAST])
    assert code == 0, err
    report = parse(out)
    assert report["saved"] == str(path)
    model = mc.load(path)
    assert model.dtype == np.float64
    assert [layer.get_config()["type"] for layer in model.layers] == [
        "Normalization", "Dense", "ReLU", "Dense"]
    assert (model.in_features, model.out_features) == (64, 10)
    assert model.loss.name == "cross_entropy"
    assert isinstance(model.optimizer, mc.optim.SGD) and model.optimizer.lr == 0.05
    assert model.optimizer.step_count == 2 * math.ceil(1347 / 32)
    # the same split as the command, raw features: the saved model carries its scaling
    x_tr, y_tr, x_te, y_te = train_test_split(load_digits(), 0.25, 3)
    assert f"{model.evaluate(x_te, y_te)['accuracy']:.4f}" == report["test accuracy"]
    np.testing.assert_allclose(model.layers[0].mean, x_tr.mean(axis=0), rtol=1e-12)
    assert model.classes_.tolist() == list(range(10))


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
        return ["--data", str(path), "--target", "y"], ["non-numeric", "line 3", "column 'a'",
                                                        "'oops'"]
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


# --- issue 17: the saved model carries its preprocessing, and the CLI's defects ---------------
def _split_like_the_cli(path, target, seed=0, test_size=0.25):
    from mlpcore.data import load_file, train_test_split
    ds = load_file(path, target)
    return ds, train_test_split(ds, test_size, seed)


def test_saved_model_predicts_raw_features_with_the_printed_accuracy(capsys, tmp_path):
    x, y = blobs(n_features=3)
    x = x * np.array([1000.0, 0.001, 1.0]) + np.array([5e4, -3.0, 0.0])  # far from standard
    names = np.array(["red", "green", "blue"])[y]
    rows = [[repr(float(v)) for v in row] + [name] for row, name in zip(x, names)]
    path = write_csv(tmp_path / "colours.csv", ["a", "b", "c", "colour"], rows)
    model_path = tmp_path / "colours.safetensors"
    code, out, err = run(capsys, ["train", "--data", str(path), "--target", "colour",
                                  "--epochs", "15", "--layers", "16", "--lr", "0.01",
                                  "--save", str(model_path), *FAST])
    assert code == 0, err
    printed = parse(out)["test accuracy"]
    model = mc.load(model_path)
    assert isinstance(model.layers[0], mc.Normalization)
    assert sorted(model.classes_.tolist()) == ["blue", "green", "red"]
    ds, (_, _, x_te, y_te) = _split_like_the_cli(path, "colour")
    predicted = model.classes_[model.predict(x_te).argmax(axis=1)]  # raw features in
    assert f"{np.mean(predicted == ds.classes[y_te]):.4f}" == printed
    assert float(printed) >= 0.9
    proba = model.predict_proba(x_te)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_npz_with_named_feature_arrays_and_target(capsys, tmp_path):
    x, y = blobs()
    np.savez(tmp_path / "one.npz", features=x, label=y)  # neither 'x' nor 'y'
    columns = {f"f{j}": x[:, j] for j in range(x.shape[1])}
    np.savez(tmp_path / "columns.npz", label=y, **columns)  # np.savez(path, **columns)
    for name in ("one", "columns"):
        code, out, err = run(capsys, ["train", "--data", str(tmp_path / f"{name}.npz"),
                                      "--target", "label", "--epochs", "20", "--layers", "16",
                                      "--lr", "0.01", *FAST])
        assert code == 0, err
        assert parse(out)["data"] == f"{name}: 135 train / 45 test samples, 4 features, 3 classes"
        assert number(parse(out)["test accuracy"]) >= 0.9
    code, _, err = run(capsys, ["train", "--data", str(tmp_path / "one.npz"), "--target", "nope",
                                *FAST])
    assert code == 2 and "--target 'nope' is not an array" in err and "'label'" in err


@pytest.mark.parametrize("loss", ["bce_with_logits", "bce", "mse", "cross_entropy"])
def test_every_loss_trains_on_a_binary_set(capsys, tmp_path, loss):
    x, y = blobs()
    keep = y < 2
    path = tmp_path / "binary.npz"
    np.savez(path, x=x[keep], y=np.array(["no", "yes"])[y[keep]])
    model_path = tmp_path / "binary.safetensors"
    code, out, err = run(capsys, ["train", "--data", str(path), "--loss", loss, "--epochs", "20",
                                  "--layers", "8", "--lr", "0.01", "--save", str(model_path),
                                  *FAST])
    assert code == 0, err
    report = parse(out)
    assert f"loss {loss}" in report["model"] and "2 classes" in report["data"]
    assert number(report["test accuracy"]) >= 0.9
    model = mc.load(model_path)
    assert model.out_features == (2 if loss == "cross_entropy" else 1)
    assert model.classes_.tolist() == ["no", "yes"]


def test_save_to_a_missing_folder_fails_before_training(capsys, tmp_path):
    code, out, err = run(capsys, ["train", "--epochs", "50", "--save",
                                  str(tmp_path / "nope" / "m.safetensors"), *FAST])
    assert code == 2 and "--save: folder" in err and "does not exist" in err
    assert "train loss" not in out and "data:" not in out  # nothing was loaded or trained


def test_save_under_another_format_name_fails_before_training(capsys, tmp_path):
    code, out, err = run(capsys, ["train", "--epochs", "50", "--save", str(tmp_path / "m.h5"),
                                  *FAST])
    assert code == 2 and "--save: mlpcore writes safetensors files, not .h5" in err
    assert "train loss" not in out


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`mlpcore train | head -1`: the reader goes away; here it never reads, so the first
    write already fails (deterministic), and the command ends without a traceback."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [PYTHON_DIR, env.get("PYTHONPATH")] if p)
    env["PYTHONUNBUFFERED"] = "1"  # each line is written at once: the pipe breaks mid-report
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "mlpcore", "train", "--epochs", "1",
                               "--layers", "8", *FAST], env=env, cwd=tmp_path,
                              stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


def test_pandas_index_column_is_dropped_with_a_warning(capsys, tmp_path):
    x, y = blobs(n_features=2)
    rows = [[i, f"{a:.6f}", f"{b:.6f}", int(label)] for i, ((a, b), label) in enumerate(zip(x, y))]
    path = write_csv(tmp_path / "frame.csv", ["", "u", "v", "class"], rows)  # to_csv's layout
    with pytest.warns(UserWarning, match="pandas index"):
        code, out, err = run(capsys, ["train", "--data", str(path), "--target", "class",
                                      "--epochs", "2", "--layers", "8", *FAST])
    assert code == 0, err
    assert "2 features, 3 classes" in parse(out)["data"]


def test_pandas_written_csv(capsys, tmp_path):
    pd = pytest.importorskip("pandas")
    x, y = blobs(n_features=2)
    path = tmp_path / "pandas.csv"
    pd.DataFrame({"u": x[:, 0], "v": x[:, 1], "class": y}).to_csv(path)
    with pytest.warns(UserWarning, match="first column .* dropped"):
        code, out, err = run(capsys, ["train", "--data", str(path), "--target", "class",
                                      "--epochs", "2", "--layers", "8", *FAST])
    assert code == 0, err
    assert "2 features" in parse(out)["data"]


@pytest.mark.parametrize("values, needle", [
    (lambda rng, n: rng.normal(size=n) * 50, "non-integer values"),
    (lambda rng, n: rng.integers(25, 350, size=n).astype(float), "fewer than 5 samples per class"),
], ids=["fractional", "many whole numbers"])
def test_classification_of_a_regression_target_is_refused(capsys, tmp_path, values, needle):
    rng = np.random.default_rng(0)
    n = 200
    np.savez(tmp_path / "reg.npz", x=rng.normal(size=(n, 3)), y=values(rng, n))
    code, out, err = run(capsys, ["train", "--data", str(tmp_path / "reg.npz"), "--task",
                                  "classification", *FAST])
    assert code == 2 and needle in err and "--task regression" in err
    assert "train loss" not in out


def test_every_train_option_has_help_and_no_none_default(capsys):
    from mlpcore.cli import _parser
    parser = _parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help text"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text
    assert text.count("(default: all cores)") == 1
    assert "(default: 30)" in text  # the real defaults are still shown


def test_report_wording_one_thread_and_quiet(capsys):
    code, out, err = run(capsys, ["train", "--epochs", "1", "--layers", "8", *FAST])
    assert code == 0, err
    report = parse(out)
    assert report["model"].endswith("batch 32, 1 thread")
    assert "progress display" not in report["throughput"]

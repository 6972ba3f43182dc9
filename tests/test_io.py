"""Save / load: bit-identical round trips (weights, config, loss, optimizer state), the file
format, atomic writes (failures and a killed writer leave the old file) and clear errors."""
import json
import math
import re
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import mlpcore as mc
import mlpcore.io as mc_io
import mlpcore.saving as mc_saving
from mlpcore import optim
from helpers import PYTHON_DIR, dense_layers


OPTIMIZERS = {
    "adam-amsgrad": lambda: optim.Adam(lr=1e-2, amsgrad=True),
    "adamw": lambda: optim.AdamW(lr=5e-3, betas=(0.8, 0.99), weight_decay=0.05),
    "sgd-nesterov": lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop-centered": lambda: optim.RMSprop(lr=1e-3, momentum=0.5, centered=True),
    "adagrad": lambda: optim.Adagrad(lr=0.05, lr_decay=0.01),
}


def build(dtype="float32", seed=0):
    return mc.Sequential([mc.Dense(5, 12), mc.LeakyReLU(0.2), mc.Dense(12, 8),
                          mc.GELU(approximate="tanh"), mc.Dense(8, 3)], dtype=dtype, seed=seed)


def batch(rng, n=32, loss="cross_entropy"):
    x = rng.normal(size=(n, 5))
    if loss == "cross_entropy":
        return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.3)
    return x, rng.normal(size=(n, 3))


def trained(dtype="float32", opt="adam-amsgrad", loss="cross_entropy", steps=5):
    rng = np.random.default_rng(42)
    model = build(dtype)
    if loss == "huber":
        model.compile(loss="huber", optimizer=OPTIMIZERS[opt](), huber_delta=0.5)
    else:
        model.compile(loss=loss, optimizer=OPTIMIZERS[opt]())
    for _ in range(steps):
        model.train_step(*batch(rng, loss=loss))
    return model


def assert_same_weights(a, b):
    for la, lb in zip(dense_layers(a), dense_layers(b)):
        np.testing.assert_array_equal(la.weight, lb.weight)
        np.testing.assert_array_equal(la.bias, lb.bias)
        assert la.weight.dtype == lb.weight.dtype


def assert_same_optimizer(a, b):
    assert type(a.optimizer) is type(b.optimizer)
    assert dict(a.optimizer.param_groups[0]) == dict(b.optimizer.param_groups[0])
    assert a.optimizer.step_count == b.optimizer.step_count
    sa, sb = a.optimizer.state, b.optimizer.state
    assert set(sa) == set(sb)
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name])


def header_of(path):
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw


# --- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["cross_entropy", "huber"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_of_a_trained_model(tmp_path, dtype, opt, loss):
    model = trained(dtype, opt, loss)
    model.optimizer.lr = 0.5 * model.optimizer.lr  # a changed hyper-parameter is saved too
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = mc.load(path)

    assert loaded.dtype == model.dtype
    assert loaded.get_config() == model.get_config()
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert loaded.layers[1].negative_slope == 0.2
    assert loaded.layers[3].approximate == "tanh"
    assert loaded.loss == model.loss
    assert loaded.huber_delta == model.huber_delta
    assert loaded.seed == model.seed
    assert_same_weights(model, loaded)
    assert_same_optimizer(model, loaded)

    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 5))
    p_orig, p_load = model.predict(x), loaded.predict(x)
    assert p_load.dtype == np.dtype(dtype)
    assert np.array_equal(p_orig, p_load)
    xe, ye = batch(rng, loss=loss)
    assert model.evaluate(xe, ye) == loaded.evaluate(xe, ye)

    # both continue identically: same optimizer state, step count and hyper-parameters
    for _ in range(4):
        xb, yb = batch(rng, loss=loss)
        assert model.train_step(xb, yb) == loaded.train_step(xb, yb)
    assert_same_weights(model, loaded)
    assert_same_optimizer(model, loaded)


def test_load_accepts_str_and_pathlike_and_resave_is_byte_identical(tmp_path):
    model = trained("float64", "adamw")
    first = tmp_path / "first.safetensors"
    model.save(str(first))
    loaded = mc.load(str(first))
    second = tmp_path / "second.safetensors"
    loaded.save(second)
    assert first.read_bytes() == second.read_bytes()


def test_uncompiled_model_round_trip(tmp_path):
    model = build("float64", seed=3)
    path = tmp_path / "fresh.safetensors"
    model.save(path)
    loaded = mc.load(path)
    assert loaded.loss is None and loaded.optimizer is None
    assert loaded.get_config() == model.get_config()
    assert_same_weights(model, loaded)
    x = np.random.default_rng(0).normal(size=(10, 5))
    assert np.array_equal(model.predict(x), loaded.predict(x))
    header, _ = header_of(path)
    assert not any(name.startswith("optimizer.") for name in header if name != "__metadata__")
    # the loaded model can be compiled and trained like the original
    for m in (model, loaded):
        m.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1))
    rng = np.random.default_rng(1)
    for _ in range(3):
        xb, yb = batch(rng)
        assert model.train_step(xb, yb) == loaded.train_step(xb, yb)
    assert_same_weights(model, loaded)


def test_loaded_model_owns_its_memory(tmp_path):
    model = trained("float32")
    path = tmp_path / "m.safetensors"
    model.save(path)
    a, b = mc.load(path), mc.load(path)
    a.layers[0].weight[...] = 0.0
    np.testing.assert_array_equal(b.layers[0].weight, model.layers[0].weight)
    assert not np.array_equal(a.layers[0].weight, model.layers[0].weight)


# --- the file format ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, st_dtype", [("float32", "F32"), ("float64", "F64")])
def test_file_is_safetensors_with_mlpcore_metadata(tmp_path, dtype, st_dtype):
    from safetensors.numpy import load_file

    model = trained(dtype, "adam-amsgrad")
    path = tmp_path / "m.safetensors"
    model.save(path)
    header, raw = header_of(path)
    assert "__metadata__" in header
    meta = json.loads(header["__metadata__"]["mlpcore"])
    assert meta["format_version"] == mc_io.FORMAT_VERSION
    assert meta["model"] == model.get_config()
    assert meta["loss"]["name"] == "cross_entropy"
    assert meta["optimizer"]["name"] == "Adam" and meta["optimizer"]["step"] == 5
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert set(tensors) == {"layers.0.weight", "layers.0.bias", "layers.2.weight",
                            "layers.2.bias", "layers.4.weight", "layers.4.bias",
                            "optimizer.exp_avg", "optimizer.exp_avg_sq",
                            "optimizer.max_exp_avg_sq"}
    assert all(t["dtype"] == st_dtype for t in tensors.values())
    assert tensors["layers.2.weight"]["shape"] == [12, 8]
    # any safetensors reader gets the weights
    plain = load_file(str(path))
    for i, layer in enumerate(model.layers):
        if isinstance(layer, mc.Dense):
            np.testing.assert_array_equal(plain[f"layers.{i}.weight"], layer.weight)
            np.testing.assert_array_equal(plain[f"layers.{i}.bias"], layer.bias)
    np.testing.assert_array_equal(plain["optimizer.exp_avg"], model.optimizer.state["exp_avg"])


# --- atomic writes --------------------------------------------------------------------------
class _Boom(OSError):
    pass


def _raise(*args, **kwargs):
    raise _Boom(28, "No space left on device")


class _HalfWriter:
    """A file whose write stores half of the bytes, then fails (a full disk)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise _Boom(28, "No space left on device")

    def flush(self):
        self.f.flush()

    def fileno(self):
        return self.f.fileno()


@pytest.mark.parametrize("failure", ["write", "fsync", "replace", "interrupt"])
def test_failed_save_keeps_the_old_file_and_leaves_no_temp_files(tmp_path, monkeypatch, failure):
    good = trained("float32", "adam-amsgrad")
    path = tmp_path / "model.safetensors"
    good.save(path)
    good_bytes = path.read_bytes()

    other = build("float32", seed=99)  # a different model, different size of file
    other.compile(loss="mse", optimizer=optim.SGD(lr=0.1, momentum=0.5))
    expected = (KeyboardInterrupt,) if failure == "interrupt" else (_Boom,)
    if failure == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(mc_io.os, "fdopen", lambda fd, *a, **k: _HalfWriter(real_fdopen(fd, *a, **k)))
    elif failure == "fsync":
        monkeypatch.setattr(mc_io.os, "fsync", _raise)
    elif failure == "replace":
        monkeypatch.setattr(mc_io.os, "replace", _raise)
    else:
        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(mc_io.os, "fsync", interrupt)
    with pytest.raises(expected) as excinfo:
        other.save(path)
    monkeypatch.undo()
    if failure != "interrupt":  # the error names the user's file, not the temporary one
        message = str(excinfo.value)
        assert repr(str(path)) in message and "previous file is unchanged" in message
        assert ".tmp" not in message and excinfo.value.errno == 28

    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    assert path.read_bytes() == good_bytes
    loaded = mc.load(path)
    assert_same_weights(good, loaded)
    assert_same_optimizer(good, loaded)
    # and a later save works normally
    other.save(path)
    assert_same_weights(other, mc.load(path))
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_first_save_that_fails_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(mc_io.os, "replace", _raise)
    with pytest.raises(_Boom, match="nothing was written"):
        build().save(tmp_path / "new.safetensors")
    assert os.listdir(tmp_path) == []


def test_a_save_that_cannot_create_its_temporary_file_names_the_target(tmp_path, monkeypatch):
    import mlpcore._files as files

    path = tmp_path / "model.safetensors"
    build().save(path)
    before = path.read_bytes()

    def refuse(target):  # a folder the user may not write to
        raise PermissionError(13, "Permission denied", str(target.parent / ".model.x.tmp"))

    monkeypatch.setattr(files, "_create_temp", refuse)
    with pytest.raises(PermissionError) as excinfo:
        build(seed=1).save(path)
    message = str(excinfo.value)
    assert repr(str(path)) in message and "Permission denied" in message
    assert "previous file is unchanged" in message and ".tmp" not in message
    assert excinfo.value.filename == str(path)
    assert path.read_bytes() == before


_KILL_SCRIPT = textwrap.dedent("""
    import sys
    import mlpcore as mc
    model = mc.Sequential([mc.Dense(256, 512), mc.ReLU(), mc.Dense(512, 256)],
                          dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=mc.optim.Adam(amsgrad=True))
    k = 0
    while True:
        k += 1
        model.layers[2].bias[0] = k
        model.save(sys.argv[1])
        print(k, flush=True)
""")


def test_writer_killed_mid_save_leaves_a_loadable_file(tmp_path):
    path = tmp_path / "big.safetensors"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [PYTHON_DIR, env.get("PYTHONPATH")] if p)
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # three complete saves ...
        assert all(line.strip().isdigit() for line in lines), proc.stderr.read()
        time.sleep(0.015)  # about half a save: usually lands while the bytes are being written
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    model = mc.load(path)
    k = model.layers[2].bias[0]
    assert k == int(k) and k >= 3  # one of the saves, complete
    assert model.layers[0].weight.shape == (256, 512)
    assert set(model.optimizer.state) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    # a write cut short can only leave a hidden temporary file next to the intact model
    others = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(n.startswith(f".{path.name}.") and n.endswith(".tmp") for n in others), others


# --- errors ---------------------------------------------------------------------------------
def _saved_bytes(tmp_path):
    path = tmp_path / "good.safetensors"
    trained("float32", "adam-amsgrad").save(path)
    return path.read_bytes()


@pytest.mark.parametrize("cut", ["empty", "4", "header-half", "header-only", "minus-1", "half"])
def test_truncated_file_raises_value_error_naming_it(tmp_path, cut):
    raw = _saved_bytes(tmp_path)
    header_len = int.from_bytes(raw[:8], "little")
    keep = {"empty": 0, "4": 4, "header-half": 8 + header_len // 2,
            "header-only": 8 + header_len, "minus-1": len(raw) - 1, "half": len(raw) // 2}[cut]
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(raw[:keep])
    with pytest.raises(ValueError) as excinfo:
        mc.load(bad)
    assert str(bad) in str(excinfo.value)


def _foreign(tmp_path, kind):
    from safetensors.numpy import save_file

    path = tmp_path / f"{kind}.safetensors"
    arrays = {"weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("this is not a model\nbut a text file\n" * 20)
    elif kind == "json":
        path.write_text(json.dumps({"format_version": 1}))
    elif kind == "safetensors-plain":
        save_file(arrays, str(path))
    elif kind == "safetensors-other-metadata":
        save_file(arrays, str(path), metadata={"framework": "other"})
    elif kind == "safetensors-future-version":
        save_file(arrays, str(path), metadata={"mlpcore": json.dumps({"format_version": 999})})
    elif kind == "safetensors-bad-json":
        save_file(arrays, str(path), metadata={"mlpcore": "{not json"})
    elif kind == "header-not-an-object":
        header = b"[1, 2, 3]"
        path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


@pytest.mark.parametrize("kind", ["random", "text", "json", "safetensors-plain",
                                  "safetensors-other-metadata", "safetensors-future-version",
                                  "safetensors-bad-json", "header-not-an-object"])
def test_foreign_file_raises_value_error_naming_it(tmp_path, kind):
    path = _foreign(tmp_path, kind)
    with pytest.raises(ValueError) as excinfo:
        mc.load(path)
    assert str(path) in str(excinfo.value)


def _with_metadata(tmp_path, edit):
    """A saved model whose mlpcore metadata went through ``edit`` (a function of the dict)."""
    from safetensors.numpy import load_file, save_file

    good = tmp_path / "good.safetensors"
    build().save(good)
    header, _ = header_of(good)
    meta = json.loads(header["__metadata__"]["mlpcore"])
    edit(meta)
    bad = tmp_path / "edited.safetensors"
    save_file(load_file(str(good)), str(bad), metadata={"mlpcore": json.dumps(meta)})
    return bad


def test_a_format_version_of_true_is_refused(tmp_path):
    bad = _with_metadata(tmp_path, lambda meta: meta.update(format_version=True))
    with pytest.raises(ValueError, match="format_version.*True"):
        mc.load(bad)


@pytest.mark.parametrize("state", [
    {"bit_generator": "BitGenerator"},  # the abstract base
    {"bit_generator": "PCG64", "state": {"state": "not a number", "inc": 1},
     "has_uint32": 0, "uinteger": 0},
    {"bit_generator": "PCG64", "state": {"state": 1, "inc": 1}, "has_uint32": [],
     "uinteger": 0},
])
def test_a_bad_random_state_is_a_value_error(tmp_path, state):
    def edit(meta):
        meta["rng"] = state

    bad = _with_metadata(tmp_path, edit)
    with pytest.raises(ValueError, match="bit generator|state"):
        mc.load(bad)


def _mt19937_state(pos):
    return {"bit_generator": "MT19937",
            "state": {"key": {"__ndarray__": [1] * 624, "dtype": "<u4"}, "pos": pos}}


def _philox_state(buffer_pos):
    state = mc_saving.to_json(np.random.Philox(0).state)
    state["buffer_pos"] = buffer_pos
    return state


# NumPy takes these positions unchecked and a draw then reads outside the generator's buffer
# (a segfault at -2**31): load must refuse them
@pytest.mark.parametrize("state, field", [
    (_mt19937_state(-2**31), "pos"), (_mt19937_state(-1), "pos"), (_mt19937_state(625), "pos"),
    (_philox_state(-2**31), "buffer_pos"), (_philox_state(5), "buffer_pos"),
])
def test_a_random_position_outside_the_buffer_is_a_value_error(tmp_path, state, field):
    def edit(meta):
        meta["rng"] = state

    bad = _with_metadata(tmp_path, edit)
    with pytest.raises(ValueError, match=f"rng.*{field} must be in"):
        mc.load(bad)


@pytest.mark.parametrize("name", ["MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64"])
def test_every_numpy_bit_generator_round_trips(tmp_path, name):
    model = build()
    model.rng = np.random.Generator(getattr(np.random, name)(7))
    model.rng.random(3)  # (a position inside the buffer, not at its start)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = mc.load(path)
    assert type(loaded.rng.bit_generator).__name__ == name
    np.testing.assert_array_equal(loaded.rng.random(5), model.rng.random(5))


def test_incomplete_mlpcore_description_raises_value_error(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "incomplete.safetensors"
    save_file({"layers.0.weight": np.zeros((2, 3), np.float32)}, str(path),
              metadata={"mlpcore": json.dumps({"format_version": mc_io.FORMAT_VERSION})})
    with pytest.raises(ValueError) as excinfo:
        mc.load(path)
    assert str(path) in str(excinfo.value)


def test_tensor_with_wrong_shape_or_missing_raises_value_error(tmp_path):
    from safetensors.numpy import load_file, save_file

    good = tmp_path / "good.safetensors"
    trained("float32", "adam-amsgrad").save(good)
    header, _ = header_of(good)
    meta = header["__metadata__"]
    tensors = load_file(str(good))

    wrong = dict(tensors)
    wrong["layers.2.weight"] = np.zeros((8, 12), np.float32)
    save_file(wrong, str(tmp_path / "wrong.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="layers.2.weight"):
        mc.load(tmp_path / "wrong.safetensors")

    wrong_dtype = dict(tensors)
    wrong_dtype["layers.0.bias"] = tensors["layers.0.bias"].astype(np.float64)
    save_file(wrong_dtype, str(tmp_path / "dtype.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="layers.0.bias"):
        mc.load(tmp_path / "dtype.safetensors")

    missing = {k: v for k, v in tensors.items() if k != "optimizer.exp_avg_sq"}
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="optimizer.exp_avg_sq"):
        mc.load(tmp_path / "missing.safetensors")


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "nothing-here.safetensors"
    with pytest.raises(FileNotFoundError) as excinfo:
        mc.load(path)
    assert str(path) in str(excinfo.value)
    with pytest.raises(FileNotFoundError):
        mc.load(str(path))


@pytest.mark.parametrize("bad", [None, 123, 1.5, ["m.safetensors"], object()],
                         ids=["None", "int", "float", "list", "object"])
def test_non_path_arguments_raise_type_error(tmp_path, bad):
    with pytest.raises(TypeError):
        mc.load(bad)
    with pytest.raises(TypeError):
        build().save(bad)


def test_save_into_missing_folder_raises_file_not_found(tmp_path):
    target = tmp_path / "no" / "such" / "folder" / "m.safetensors"
    with pytest.raises(FileNotFoundError, match="folder .*folder' does not exist"):
        build().save(target)
    assert not (tmp_path / "no").exists()
    assert os.listdir(tmp_path) == []


def test_save_below_a_file_raises_not_a_directory(tmp_path):
    (tmp_path / "afile").write_bytes(b"kept")
    with pytest.raises(NotADirectoryError, match="afile' is not a folder"):
        build().save(tmp_path / "afile" / "m.safetensors")
    assert (tmp_path / "afile").read_bytes() == b"kept"


# --- file names, class names and the shuffle sequence -------------------------------------------
def test_save_refuses_other_formats_names_and_warns_on_unusual_suffixes(tmp_path):
    model = trained()
    with pytest.raises(ValueError, match=r"not \.h5.*m\.safetensors"):
        model.save(tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
    with pytest.warns(UserWarning, match="usual suffix is .safetensors"):
        model.save(tmp_path / "m.bin")
    assert mc.load(tmp_path / "m.bin").num_params == model.num_params


def test_class_names_travel_in_the_metadata(tmp_path):
    model = trained()
    model.classes_ = ["setosa", "versicolor", "virginica"]
    model.save(tmp_path / "m.safetensors")
    assert json.loads(header_of(tmp_path / "m.safetensors")[0]["__metadata__"]["mlpcore"])[
        "classes"] == ["setosa", "versicolor", "virginica"]
    assert mc.load(tmp_path / "m.safetensors").classes_.tolist() == model.classes_.tolist()
    numeric = trained()
    numeric.classes_ = [3, 7, 11]
    numeric.save(tmp_path / "n.safetensors")
    assert mc.load(tmp_path / "n.safetensors").classes_.tolist() == [3, 7, 11]
    trained().save(tmp_path / "none.safetensors")
    assert mc.load(tmp_path / "none.safetensors").classes_ is None


def test_every_class_name_the_setter_takes_loads_back(tmp_path):
    model = trained()
    for names in ([False, True], [0.5, 1.5], [-3, 2**40]):
        model.classes_ = np.asarray(names)
        model.save(tmp_path / "m.safetensors")
        loaded = mc.load(tmp_path / "m.safetensors").classes_
        assert loaded.tolist() == names and loaded.dtype == model.classes_.dtype


def test_class_names_past_64_bits_are_a_value_error_naming_the_field(tmp_path):
    def edit(meta):
        meta["classes"] = [2**100, 1, 2]

    with pytest.raises(ValueError, match="classes.*within 64 bits"):
        mc.load(_with_metadata(tmp_path, edit))


def test_numpy_and_fraction_numbers_given_to_the_model_save(tmp_path):
    """A seed, clipping thresholds or a learning rate given as NumPy scalars or a Fraction
    (the README's param_groups path included) save, load and pickle as Python numbers."""
    import pickle
    from fractions import Fraction

    model = mc.Sequential([mc.Dense(4, 3)], seed=np.int64(3))
    model.compile("mse", optim.Adam(lr=np.float32(1e-3)), clip_norm=np.float32(1.0),
                  clip_value=Fraction(1, 2))
    model.optimizer.param_groups[0]["lr"] = np.float32(2e-3)
    model.save(tmp_path / "m.safetensors")
    mc.save_checkpoint(model, tmp_path / "c.safetensors", epoch=np.int64(1))
    for loaded in (mc.load(tmp_path / "m.safetensors"), pickle.loads(pickle.dumps(model)),
                   mc.load_checkpoint(tmp_path / "c.safetensors").model):
        assert loaded.seed == 3 and type(loaded.seed) is int
        assert (loaded.clip_norm, loaded.clip_value) == (1.0, 0.5)
        assert loaded.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)


def test_fit_after_save_and_load_continues_the_shuffle_sequence(tmp_path):
    rng = np.random.default_rng(0)
    x, y = batch(rng, n=64)
    model = build("float64", seed=5)
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-2))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = mc.load(tmp_path / "m.safetensors")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(loaded.params_view(), model.params_view())


# --- where and how saves write (issue 15 defect 11, issue 17's file mode) ---------------------
def test_save_to_an_empty_path_or_a_folder_is_refused(tmp_path):
    model = build()
    with pytest.raises(ValueError, match="path is empty"):
        model.save("")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        model.save(tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_save_onto_a_device_is_refused_and_leaves_it_alone():
    before = os.stat("/dev/null")
    with pytest.raises(ValueError, match="character device"):
        build().save("/dev/null")
    after = os.stat("/dev/null")
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_save_onto_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path, relative):
    real_dir = tmp_path / "store"
    real_dir.mkdir()
    target = real_dir / "model.safetensors"
    build(seed=1).save(target)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(os.path.relpath(target, tmp_path) if relative else target)
    model = build(seed=2)
    model.save(link)
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert_same_weights(model, mc.load(target))
    assert sorted(os.listdir(real_dir)) == ["model.safetensors"]  # the temp file was beside it
    assert sorted(os.listdir(tmp_path)) == ["latest.safetensors", "store"]


def test_save_through_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.safetensors"
    link.symlink_to(tmp_path / "new.safetensors")
    build().save(link)
    assert link.is_symlink() and (tmp_path / "new.safetensors").is_file()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        build().save(tmp_path / "m.safetensors")
        mc.save_checkpoint(trained(), tmp_path / "ck.safetensors", epoch=1)
    finally:
        os.umask(old)
    for name in ("m.safetensors", "ck.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_resave_keeps_the_replaced_files_mode(tmp_path):
    path = tmp_path / "m.safetensors"
    build().save(path)
    path.chmod(0o640)
    build(seed=3).save(path)
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_write_protected_model_file_is_not_replaced(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    build().save(path)
    before = path.read_bytes()
    path.chmod(0o444)
    if os.geteuid() == 0:  # root writes anywhere: the access check answers as for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if (
            mode & os.W_OK and Path(p) == path.resolve()) else real(p, mode, **kw))
    with pytest.raises(PermissionError, match="m.safetensors' is write-protected"):
        build(seed=3).save(path)
    assert path.read_bytes() == before


def _temp_name(path, pid, tag=None):
    from mlpcore import _files
    tag = _files.HOST_TAG if tag is None else tag
    return path.parent / f".{path.name}.mlpcore-tmp-{tag}-{pid}-0123abcd.tmp"


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_save_removes_temp_files_of_killed_writers(tmp_path):
    path = tmp_path / "m.safetensors"
    dead = _temp_name(path, _dead_pid())
    dead.write_bytes(b"x" * 1000)
    old = _temp_name(path, 1, tag="ffffff")  # another host's writer, untouched for an hour
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = _temp_name(path, sleeper.pid)  # a writer still running: its file stays
        live.write_bytes(b"x")
        remote = _temp_name(path, _dead_pid(), tag="eeeeee")  # another host's fresh file
        remote.write_bytes(b"x")
        other = tmp_path / ".other.safetensors.mlpcore-tmp-x-1-0.tmp"  # another target's
        other.write_bytes(b"x")
        build().save(path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [path.name, live.name, remote.name, other.name])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_killed_writers_leave_no_temp_files_after_the_next_save(tmp_path):
    path = tmp_path / "big.safetensors"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [PYTHON_DIR, env.get("PYTHONPATH")] if p)
    for delay in (0.005, 0.01, 0.02):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout.readline().strip().isdigit()
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
    build().save(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def _with_tensor(tmp_path, model, name, edit):
    """``model`` saved, then one tensor rewritten by ``edit`` (a function of a copy of it)."""
    from safetensors.numpy import load_file, save_file

    good = tmp_path / "good.safetensors"
    model.save(good)
    header, _ = header_of(good)
    tensors = load_file(str(good))
    tensors[name] = edit(tensors[name].copy())
    bad = tmp_path / "edited.safetensors"
    save_file(tensors, str(bad), metadata=header["__metadata__"])
    return bad


def _negative_first(t):
    t.reshape(-1)[0] = -1.0
    return t


def _with_norms():
    model = mc.Sequential([mc.Normalization(5), mc.Dense(5, 4), mc.BatchNorm1d(4), mc.ReLU(),
                           mc.Dense(4, 3)], seed=0)
    model.compile("cross_entropy", "sgd")
    return model


# each divides by a square root: negative, it made NaN weights or outputs after a clean load
@pytest.mark.parametrize("make, name", [
    (lambda: trained(opt="adam-amsgrad"), "optimizer.exp_avg_sq"),
    (lambda: trained(opt="adam-amsgrad"), "optimizer.max_exp_avg_sq"),
    (lambda: trained(opt="rmsprop-centered"), "optimizer.square_avg"),
    (lambda: trained(opt="adagrad"), "optimizer.sum"),
    (_with_norms, "layers.2.running_var"),
    (_with_norms, "layers.0.variance"),
])
@pytest.mark.parametrize("allow_nonfinite", [False, True])
def test_a_negative_variance_or_square_sum_is_a_value_error(tmp_path, make, name,
                                                            allow_nonfinite):
    bad = _with_tensor(tmp_path, make(), name, _negative_first)
    with pytest.raises(ValueError, match=rf"{re.escape(name)}' must be >= 0, got -1\.0 at flat"):
        mc.load(bad, allow_nonfinite=allow_nonfinite)


def test_load_state_dict_refuses_a_negative_square_sum():
    model = trained(opt="adam-amsgrad")
    state = model.optimizer.state_dict()
    state["state"]["exp_avg_sq"][3] = -1.0
    before = model.optimizer.state["exp_avg_sq"].copy()
    with pytest.raises(ValueError, match="'exp_avg_sq' must be >= 0"):
        model.optimizer.load_state_dict(state)
    np.testing.assert_array_equal(model.optimizer.state["exp_avg_sq"], before)


def test_a_file_whose_tensors_exceed_the_memory_is_refused_before_reading(tmp_path):
    """A consistent header over a data section twice the machine's RAM (a sparse file: no
    disk used): a MemoryError naming the file and the sizes, before anything is allocated."""
    from mlpcore._validation import physical_memory

    total = physical_memory()
    if total is None:
        pytest.skip("the machine's memory is unknown here")
    n = math.isqrt(2 * total // 4) + 1  # Dense(n, n) float32: 4 n^2 bytes > 2 x RAM
    sizes = {"bias": 4 * n, "weight": 4 * n * n}
    header = {"layers.0.bias": {"dtype": "F32", "shape": [n], "data_offsets": [0, sizes["bias"]]},
              "layers.0.weight": {"dtype": "F32", "shape": [n, n],
                                  "data_offsets": [sizes["bias"], sum(sizes.values())]},
              "__metadata__": {"mlpcore": json.dumps({
                  "format_version": 1, "seed": None, "model": {
                      "dtype": "float32",
                      "layers": [{"type": "Dense", "in_features": n, "out_features": n}]}})}}
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + sum(sizes.values()))
    with pytest.raises(MemoryError, match=r"huge\.safetensors'.*GiB, more than this machine"):
        mc.load(path)

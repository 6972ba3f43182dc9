"""Generate the hostile model files of issue 15 (nothing binary is stored in the repository).

Each case writes one file (or file system entry) into a folder and says how mlpcore must refuse
it: the exception type, a fragment the message must contain (the field at fault) and whether the
case is *dangerous* (before the fix it allocated without bound, crashed or blocked: the tests run
those in a child process under an address-space limit and a timeout).

    python tests/hostile/make_corpus.py OUTDIR     # write the corpus and list it
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}


# --- writers ---------------------------------------------------------------------------------
def raw_file(path: Path, header: Dict[str, Any], data: bytes = b"", *, pad: bool = True) -> Path:
    """A safetensors file from an explicit header (which may lie) and data bytes."""
    text = json.dumps(header).encode()
    if pad:  # safetensors aligns the data section to 8 bytes with spaces
        text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def tensor_file(path: Path, meta: Dict[str, Any], tensors: Dict[str, np.ndarray]) -> Path:
    """A well-formed safetensors file holding ``tensors`` with ``meta`` as mlpcore metadata."""
    header: Dict[str, Any] = {"__metadata__": {"mlpcore": json.dumps(meta)}}
    data, at = b"", 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": ST_DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [at, at + len(raw)]}
        data += raw
        at += len(raw)
    return raw_file(path, header, data)


def model_meta(layers: List[Dict[str, Any]], dtype: str = "float32", **extra) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"format_version": 1, "model": {"dtype": dtype, "layers": layers},
                            "seed": 0}
    meta.update(extra)
    return meta


def dense(i: int, o: int) -> Dict[str, Any]:
    return {"type": "Dense", "in_features": i, "out_features": o, "init": "glorot_uniform"}


TRAINING = {  # a compiled model's metadata: loss, optimizer, checkpoint entry
    "loss": {"name": "mse", "huber_delta": 1.0, "clip_norm": None, "clip_value": None},
    "optimizer": {"name": "SGD", "step": 3, "param_groups": [
        {"lr": 0.01, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
         "weight_decay": 0.0}]},
    "checkpoint": {"version": 1, "epoch": 1, "metrics": [], "scheduler": None,
                   "rng": {"bit_generator": "PCG64", "state": {"state": 1, "inc": 3},
                           "has_uint32": 0, "uinteger": 0}},
}


def small_model(path: Path, dtype: str = "float32", weight=None, training: bool = False,
                **overrides) -> Path:
    """Dense(3, 2): a valid file unless ``weight`` or ``overrides`` (metadata entries) spoil it."""
    dt = np.dtype(dtype)
    w = np.arange(6, dtype=dt).reshape(3, 2) / 10 if weight is None else np.asarray(weight, dt)
    tensors = {"layers.0.weight": w, "layers.0.bias": np.zeros(2, dt)}
    meta = model_meta([dense(3, 2)], dtype)
    if training:
        meta.update(json.loads(json.dumps(TRAINING)))
    for key, value in overrides.items():  # "a.b.c": set a nested entry
        node, keys = meta, key.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    return tensor_file(path, meta, tensors)


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- the cases -------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    make: Callable[[Path], Path]  # folder -> the entry to load
    error: type
    fragment: str  # the message names this (the field at fault); the file name is checked too
    dangerous: bool = False  # run in a child under RLIMIT_AS and a timeout
    func: str = "load"  # or "load_checkpoint"
    options: Dict[str, Any] = field(default_factory=dict)


def _fifo(folder: Path) -> Path:
    path = folder / "fifo.safetensors"
    os.mkfifo(path)
    return path


def _huge_shape_claim(folder: Path) -> Path:
    # the header claims a 2**61-element tensor whose bytes are "there": offsets past the file
    n = 2**61
    return raw_file(folder / "claims-2p61.safetensors", {
        "__metadata__": {"mlpcore": json.dumps(model_meta(
            [{"type": "LayerNorm", "normalized_shape": n, "eps": 1e-5}]))},
        "layers.0.weight": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
        "layers.0.bias": {"dtype": "F32", "shape": [n], "data_offsets": [4 * n, 8 * n]}})


def _norm(kind: str, n: int, dtype: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        key = "normalized_shape" if kind == "LayerNorm" else "num_features"
        layer = {"type": kind, key: n, "eps": 1e-5}
        tensors = {"layers.0.weight": np.ones(4, dtype), "layers.0.bias": np.zeros(4, dtype)}
        if kind == "BatchNorm1d":
            layer["momentum"] = 0.1
            tensors.update({"layers.0.running_mean": np.zeros(4, dtype),
                            "layers.0.running_var": np.ones(4, dtype)})
        return tensor_file(folder / f"{kind}-{n}.safetensors", model_meta([layer], dtype),
                           tensors)
    return make


def _tiny_dense(folder: Path) -> Path:  # 244 bytes saying Dense(20000, 20000): 1.6 GB if built
    return tensor_file(folder / "dense-20000.safetensors", model_meta([dense(20000, 20000)]),
                       {"layers.0.weight": np.zeros((1, 1), np.float32),
                        "layers.0.bias": np.zeros(1, np.float32)})


def _overflowing_plan(folder: Path) -> Path:  # [LayerNorm(16), Dense(16, 2**63 - 1)]
    return tensor_file(folder / "overflow.safetensors", model_meta(
        [{"type": "LayerNorm", "normalized_shape": 16, "eps": 1e-5}, dense(16, 2**63 - 1)]),
        {"layers.0.weight": np.ones(16, np.float32), "layers.0.bias": np.zeros(16, np.float32),
         "layers.1.weight": np.zeros((16, 1), np.float32),
         "layers.1.bias": np.zeros(1, np.float32)})


def _checkpoint_with(where: str, entry) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = small_model(folder / f"ck-{where}.safetensors", training=True)
        header_len = int.from_bytes(path.read_bytes()[:8], "little")
        raw = path.read_bytes()
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header["__metadata__"]["mlpcore"])
        if where == "scheduler":
            meta["checkpoint"]["scheduler"] = {"type": "StepLR", "base_lrs": entry}
        elif where == "rng-inner":  # the {"state", "inc"} dict of PCG64
            meta["checkpoint"]["rng"]["state"] = entry
        else:
            meta["checkpoint"]["rng"]["state"]["state"] = entry
        header["__metadata__"]["mlpcore"] = json.dumps(meta)
        return raw_file(path, header, raw[8 + header_len:])
    return make


def _meta_text(name: str, text: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        return raw_file(folder / f"{name}.safetensors", {"__metadata__": {"mlpcore": text}})
    return make


def _header_bytes(name: str, blob: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / f"{name}.safetensors"
        path.write_bytes(blob)
        return path
    return make


def _spoiled(name: str, **overrides) -> Callable[[Path], Path]:
    training = any(k.split(".")[0] in TRAINING for k in overrides)
    return lambda folder: small_model(folder / f"{name}.safetensors", training=training,
                                      **overrides)


def _valid_header_then(name: str, change: Callable[[Dict[str, Any]], None],
                       tail: bytes = b"") -> Callable[[Path], Path]:
    """A valid small model file whose tensor table is then edited by ``change``."""
    def make(folder: Path) -> Path:
        path = small_model(folder / f"{name}.safetensors")
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        change(header)
        return raw_file(path, header, raw[8 + n:] + tail)
    return make


def _set(entry: str, key: str, value) -> Callable[[Dict[str, Any]], None]:
    def change(header):
        header[entry][key] = value
    return change


def _non_finite(name: str, where: str, value: float, training: bool = False):
    def make(folder: Path) -> Path:
        w = np.arange(6, dtype=np.float32).reshape(3, 2)
        if where == "weight":
            w[1, 1] = value
            return small_model(folder / f"{name}.safetensors", weight=w, training=training)
        path = small_model(folder / f"{name}.safetensors", training=True)
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["mlpcore"])
        meta["optimizer"]["param_groups"][0]["momentum"] = 0.9  # has a momentum_buffer
        state = np.zeros(8, np.float32)
        state[5] = value
        return tensor_file(path, meta, {"layers.0.weight": w,
                                        "layers.0.bias": np.zeros(2, np.float32),
                                        "optimizer.momentum_buffer": state})
    return make


CASES: List[Case] = [
    # defect 1 / 4: sizes no machine can hold, or far more than the file holds
    Case("layernorm-2p61-f32", _norm("LayerNorm", 2**61, "float32"), ValueError,
         "layers.0.weight", dangerous=True),
    Case("batchnorm-2p60-f64", _norm("BatchNorm1d", 2**60, "float64"), ValueError,
         "layers.0.", dangerous=True),
    Case("layernorm-2p61-claimed-bytes", _huge_shape_claim, ValueError, "data_offsets",
         dangerous=True),
    Case("dense-20000-tiny-tensors", _tiny_dense, ValueError, "layers.0.", dangerous=True),
    Case("dense-2p63-overflow", _overflowing_plan, ValueError, "layers.1.", dangerous=True),
    Case("checkpoint-U500000000-scheduler",
         _checkpoint_with("scheduler", {"__ndarray__": [0], "dtype": "U500000000"}),
         ValueError, "checkpoint.scheduler", dangerous=True, func="load_checkpoint"),
    Case("checkpoint-U500000000-rng",
         _checkpoint_with("rng", {"__ndarray__": [0], "dtype": "U500000000"}),
         ValueError, "checkpoint.rng", dangerous=True, func="load_checkpoint"),
    Case("checkpoint-rng-state-array",  # numpy's state setter indexes it: IndexError
         _checkpoint_with("rng-inner", {"__ndarray__": [1, 2], "dtype": "int64"}),
         ValueError, "checkpoint.rng", func="load_checkpoint"),
    Case("checkpoint-rng-state-list", _checkpoint_with("rng-inner", [1, 2]),
         ValueError, "checkpoint.rng", func="load_checkpoint"),
    Case("checkpoint-dtype-unclosed-paren-rng",  # numpy parses "i4,(" with ast: SyntaxError
         _checkpoint_with("rng-inner", {"a": {"__ndarray__": [0], "dtype": "i4,("}}),
         ValueError, "checkpoint.rng", func="load_checkpoint"),
    Case("checkpoint-dtype-unclosed-paren-scheduler",
         _checkpoint_with("scheduler", {"__ndarray__": [0], "dtype": "f8,(1,"}),
         ValueError, "checkpoint.scheduler", func="load_checkpoint"),
    Case("checkpoint-object-dtype",
         _checkpoint_with("scheduler", {"__ndarray__": [0], "dtype": "O"}),
         ValueError, "checkpoint.scheduler", func="load_checkpoint"),
    Case("dev-zero", lambda folder: Path("/dev/zero"), ValueError, "character device",
         dangerous=True),
    Case("fifo", _fifo, ValueError, "FIFO", dangerous=True),
    Case("directory", lambda folder: folder, IsADirectoryError, "directory"),
    Case("missing", lambda folder: folder / "absent.safetensors", FileNotFoundError,
         "no such file"),
    # defect 10: deep JSON and wrong types
    Case("deep-json-metadata", _meta_text("deep-meta", deep_json(100_000)), ValueError,
         "__metadata__.mlpcore"),
    Case("deep-json-header", _header_bytes("deep-header", (200_000).to_bytes(8, "little")
                                           + deep_json(100_000).encode()), ValueError, "header"),
    Case("deep-json-just-over-the-limit", _meta_text("deep-70", deep_json(70)), ValueError,
         "nested deeper"),
    Case("layers-abc", _spoiled("layers-abc", **{"model.layers": "abc"}), ValueError,
         "model.layers"),
    Case("layers-empty", _spoiled("layers-empty", **{"model.layers": []}), ValueError,
         "model.layers"),
    Case("layer-not-object", _spoiled("layer-int", **{"model.layers": [5]}), ValueError,
         "model.layers[0]"),
    Case("layer-unknown-type", _spoiled("layer-unknown", **{"model.layers.0.type": "Conv2d"}),
         ValueError, "model.layers[0]"),
    Case("layer-str-size", _spoiled("layer-str", **{"model.layers.0.in_features": "3"}),
         ValueError, "model.layers[0]"),
    Case("layer-extra-argument", _spoiled("layer-extra", **{"model.layers.0.evil": 1}),
         ValueError, "model.layers[0]"),
    Case("layer-negative-size", _spoiled("layer-neg", **{"model.layers.0.in_features": -3}),
         ValueError, "model.layers[0]"),
    Case("model-not-object", _spoiled("model-list", **{"model": [1, 2]}), ValueError, "model"),
    Case("dtype-int", _spoiled("dtype-int", **{"model.dtype": 5}), ValueError, "model.dtype"),
    Case("dtype-float16", _spoiled("dtype-f16", **{"model.dtype": "float16"}), ValueError,
         "model.dtype"),
    Case("format-version-str", _spoiled("fv-str", format_version="1"), ValueError,
         "format_version"),
    Case("seed-str", _spoiled("seed-str", seed="zero"), ValueError, "seed"),
    Case("seed-negative", _spoiled("seed-neg", seed=-1), ValueError, "seed"),
    Case("dropout-state-abc", _spoiled("drop-abc", dropout_rng_state="abc"), ValueError,
         "dropout_rng_state"),
    Case("dropout-state-2p64", _spoiled("drop-big", dropout_rng_state=[2**64, 1, 2, 3]),
         ValueError, "dropout_rng_state"),
    Case("dropout-state-short", _spoiled("drop-short", dropout_rng_state=["1", "2"]),
         ValueError, "dropout_rng_state"),
    Case("optimizer-step-negative", _spoiled("step-neg", **{"optimizer.step": -1}), ValueError,
         "optimizer.step"),
    Case("optimizer-step-float", _spoiled("step-float", **{"optimizer.step": 1.5}), ValueError,
         "optimizer.step"),
    Case("optimizer-step-2p64", _spoiled("step-big", **{"optimizer.step": 2**64}), ValueError,
         "optimizer.step"),
    Case("optimizer-lr-nan", _spoiled("lr-nan", **{"optimizer.param_groups.0.lr": float("nan")}),
         ValueError, "optimizer"),
    Case("optimizer-lr-negative", _spoiled("lr-neg", **{"optimizer.param_groups.0.lr": -10}),
         ValueError, "optimizer"),
    Case("optimizer-unknown-hyper", _spoiled("hyper", **{"optimizer.param_groups.0.evil": 1}),
         ValueError, "optimizer"),
    Case("optimizer-param-groups-str", _spoiled("pg-str", **{"optimizer.param_groups": "x"}),
         ValueError, "optimizer.param_groups"),
    Case("optimizer-unknown", _spoiled("opt-unknown", **{"optimizer.name": "Lion"}), ValueError,
         "optimizer"),
    Case("loss-unknown", _spoiled("loss-unknown", **{"loss.name": "hinge^2"}), ValueError,
         "loss"),
    Case("loss-huber-delta-str", _spoiled("loss-hd", **{"loss.huber_delta": "1"}), ValueError,
         "loss"),
    Case("checkpoint-epoch-negative", _spoiled("epoch-neg", **{"checkpoint.epoch": -1}),
         ValueError, "checkpoint.epoch", func="load_checkpoint"),
    Case("checkpoint-epoch-str", _spoiled("epoch-str", **{"checkpoint.epoch": "1"}),
         ValueError, "checkpoint.epoch", func="load_checkpoint"),
    Case("checkpoint-step-negative", _spoiled("ck-step-neg", **{"optimizer.step": -1}),
         ValueError, "optimizer.step", func="load_checkpoint"),
    Case("checkpoint-rng-unknown",
         _spoiled("ck-rng", **{"checkpoint.rng.bit_generator": "os.system"}), ValueError,
         "checkpoint.rng", func="load_checkpoint"),
    Case("checkpoint-metrics-int", _spoiled("ck-metrics", **{"checkpoint.metrics": 3}),
         ValueError, "checkpoint.metrics", func="load_checkpoint"),
    # truncated and corrupt headers and tensor tables
    Case("empty", _header_bytes("empty", b""), ValueError, "shorter than"),
    Case("four-bytes", _header_bytes("four", b"\x10\x00\x00\x00"), ValueError, "shorter than"),
    Case("header-length-2p63", _header_bytes("len-huge", (2**63).to_bytes(8, "little") + b"{}"),
         ValueError, "header length"),
    Case("header-length-zero", _header_bytes("len-zero", bytes(8) + b"{}"), ValueError,
         "header length"),
    Case("header-over-limit", _header_bytes("len-limit", (20 * 2**20).to_bytes(8, "little")
                                            + b" " * (20 * 2**20)), ValueError, "header length"),
    Case("header-not-utf8", _header_bytes("not-utf8", (4).to_bytes(8, "little") + b"\xff\xfe{}"),
         ValueError, "header"),
    Case("header-not-object", _header_bytes("hdr-list", (9).to_bytes(8, "little") + b"[1, 2, 3]"),
         ValueError, "header"),
    Case("no-metadata", lambda folder: raw_file(folder / "no-meta.safetensors", {}), ValueError,
         "__metadata__.mlpcore"),
    Case("metadata-not-object", _meta_text("meta-list", "[1]"), ValueError,
         "__metadata__.mlpcore"),
    Case("metadata-bad-json", _meta_text("meta-bad", "{not json"), ValueError,
         "__metadata__.mlpcore"),
    Case("tensor-dtype-U8", _valid_header_then("dtype-u8", _set("layers.0.bias", "dtype", "U8")),
         ValueError, "dtype"),
    Case("tensor-dtype-I64",
         _valid_header_then("dtype-i64", _set("layers.0.bias", "dtype", "I64")), ValueError,
         "dtype"),
    Case("tensor-shape-negative",
         _valid_header_then("shape-neg", _set("layers.0.bias", "shape", [-2])), ValueError,
         "shape"),
    Case("tensor-shape-str",
         _valid_header_then("shape-str", _set("layers.0.bias", "shape", "2")), ValueError,
         "shape"),
    Case("tensor-offsets-overlap",
         _valid_header_then("overlap", _set("layers.0.bias", "data_offsets", [0, 8])),
         ValueError, "data_offsets"),
    Case("tensor-offsets-reversed",
         _valid_header_then("reversed", _set("layers.0.bias", "data_offsets", [8, 0])),
         ValueError, "data_offsets"),
    Case("tensor-entry-str", _valid_header_then("entry-str", lambda h: h.update(
        {"layers.0.bias": "F32"})), ValueError, "layers.0.bias"),
    Case("trailing-bytes", _valid_header_then("trailing", lambda h: None, tail=b"\0" * 4096),
         ValueError, "trailing"),
    Case("unexpected-tensor", _valid_header_then("unexpected", lambda h: h.update(
        {"layers.9.weight": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})),
        ValueError, "layers.9.weight"),
    # defect 8: non-finite weights
    Case("nan-weight", _non_finite("nan-weight", "weight", float("nan")), ValueError,
         "layers.0.weight"),
    Case("inf-weight", _non_finite("inf-weight", "weight", float("-inf")), ValueError,
         "layers.0.weight"),
    Case("inf-optimizer-state", _non_finite("inf-state", "state", float("inf")), ValueError,
         "optimizer.momentum_buffer"),
    Case("nan-weight-checkpoint", _non_finite("nan-ck", "weight", float("nan"), training=True),
         ValueError, "layers.0.weight", func="load_checkpoint"),
]


def write_corpus(folder: Path) -> Dict[str, Path]:
    """Every case's file in ``folder``; name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    return {case.name: case.make(folder) for case in CASES}


def valid_files(folder: Path) -> List[Path]:
    """Well-formed files (seeds for the fuzzer): a small model and a small checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    return [small_model(folder / "seed-model.safetensors"),
            small_model(folder / "seed-checkpoint.safetensors", training=True)]


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: make_corpus.py OUTDIR")
    for name, path in write_corpus(Path(argv[0])).items():
        print(f"{name:40s} {path}")


if __name__ == "__main__":
    main()

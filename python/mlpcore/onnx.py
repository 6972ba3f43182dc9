"""ONNX export and import: run an mlpcore model in ONNX Runtime (or any ONNX runtime), and load
the ONNX files of simple MLPs written by mlpcore, ``torch.onnx.export`` or skl2onnx.

Needs the ``onnx`` package (``pip install mlpcore[onnx]``); mlpcore itself never imports it
unless these functions are called.

The exported graph has one input, ``input`` (shape ``(batch, in_features)``, the batch
dimension dynamic) and one output, ``output`` (``(batch, out_features)``), both in the model's
dtype; the default opset is 17 (13 up to the installed onnx's newest are accepted).
How each layer is written (``f32``/``f64``: the model's dtype):

==============  =====================================================================
Dense           Gemm (weight stored (in, out), transB=0)
ReLU/Sigmoid/   Relu / Sigmoid / Tanh / Identity; Softmax(axis=-1)
Tanh/Identity
LeakyReLU       f32: LeakyRelu(alpha); f64: Where(x > 0, x, slope * x)
ELU             f32: Elu(alpha); f64: Where(x > 0, x, alpha * expm1(x)), where
                expm1(x) = 2t / (1 - t), t = Tanh(x / 2) (exact near 0, unlike Exp(x) - 1)
SELU            f32: Selu; f64: scale * Where(x > 0, x, alpha * expm1(x))
GELU            f32: Gelu (opset >= 20), else 0.5 x (1 + Erf(x / sqrt 2)) or the tanh form;
                f64 "none": 0.5 x (1 + erf(x / sqrt 2)) with erf from erfc(t) =
                exp(-t^2) erfcx(t), erfcx a degree-30 Chebyshev series on [0, 6]
                (Clenshaw): within 3e-14 relative for |x| < 8.5, 1e-16 |x| absolute beyond
                (erfcx(6) stands in for erfcx(t > 6)); f64 "tanh": its formula in basic ops
SiLU            x * Sigmoid(x)
Softplus        Where(beta x > threshold, x, softplus(beta x) / beta); softplus is the
                Softplus op in f32, Log(Exp(z) + 1) in f64
Dropout         Dropout(x, ratio) without training_mode: the identity at inference
LayerNorm       f32 and opset >= 17: LayerNormalization; else mean/variance in basic ops
BatchNorm1d     f32: BatchNormalization (running statistics, training_mode 0); f64:
                (x - mean) / sqrt(var + eps) * gamma + beta
Residual        Add(x, f(x))
==============  =====================================================================

Float64 models avoid ops onnxruntime's CPU provider lacks in float64 (Elu, Selu, Softplus, Erf,
Gelu) and ops whose float parameters ONNX stores as 32-bit attributes: their constants are
float64 tensors instead.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .layers import BatchNorm1d, Residual, has_parameters, layer_from_config
from .model import Sequential
from .saving import atomic_write_bytes

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "export", "load"]

DEFAULT_OPSET = 17
MIN_OPSET = 13


def _require_onnx(func: str):
    try:
        import onnx
    except ImportError:
        raise ImportError(f"mlpcore.onnx.{func} needs the 'onnx' package: "
                          "pip install 'mlpcore[onnx]' (or pip install onnx)") from None
    return onnx


# --- constants of the float64 GELU: erfc(t) = exp(-t^2) * erfcx(t), erfcx on [0, 6] ----------
_ERF_CLAMP = 6.0   # erfc(6) = 2e-17: beyond it, exp(-t^2) * erfcx(6) is as good as exact
_ERFCX_DEGREE = 30
_erfcx_coefficients: np.ndarray | None = None


def _erfcx_chebyshev() -> np.ndarray:
    """Chebyshev coefficients of erfcx(t) = exp(t^2) erfc(t) on t in [0, 6] (u = t / 3 - 1)."""
    global _erfcx_coefficients
    if _erfcx_coefficients is None:
        from numpy.polynomial import chebyshev

        def erfcx(u):
            t = (np.asarray(u) + 1.0) * (_ERF_CLAMP / 2)
            return np.array([math.erfc(v) * math.exp(v * v) for v in t])
        _erfcx_coefficients = chebyshev.chebinterpolate(erfcx, _ERFCX_DEGREE)
    return _erfcx_coefficients


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


# --- graph writing -------------------------------------------------------------------------
class _Builder:
    """Collects nodes and constants; ``const(..., tag=)`` marks a constant that carries a layer
    parameter (so the importer can read it back)."""

    def __init__(self, onnx, dtype: np.dtype, opset: int, prefix: str = "") -> None:
        self.onnx, self.dtype, self.opset, self.prefix = onnx, dtype, opset, prefix
        self.nodes: list[Any] = []
        self.consts: dict[str, np.ndarray] = {}
        self.tags: dict[str, str] = {}
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value, hint: str = "c", tag: str | None = None, dtype=None) -> str:
        name = self._name(tag or hint)
        self.consts[name] = np.array(value, dtype=dtype or self.dtype)
        if tag is not None:
            self.tags[name] = tag
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = self._name(op_type)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=out,
                                                     **attrs))
        return out

    @property
    def f64(self) -> bool:
        return self.dtype == np.float64


def _expm1(b: _Builder, x: str) -> str:
    """exp(x) - 1 to full relative precision near 0 (ONNX has no Expm1): with t = tanh(x / 2),
    exp(x) - 1 = 2t / (1 - t). Used where x <= 0 (for large x, 1 - t reaches 0)."""
    t = b.op("Tanh", b.op("Mul", x, b.const(0.5)))
    return b.op("Div", b.op("Add", t, t), b.op("Sub", b.const(1.0), t))


def _gelu_erf_f64(b: _Builder, x: str) -> str:
    t = b.op("Mul", b.op("Abs", x), b.const(1.0 / math.sqrt(2.0)))
    u = b.op("Sub", b.op("Mul", b.op("Min", t, b.const(_ERF_CLAMP)), b.const(2.0 / _ERF_CLAMP)),
             b.const(1.0))
    two_u = b.op("Mul", u, b.const(2.0))
    a = _erfcx_chebyshev()
    # Clenshaw: b_k = a_k + 2u b_{k+1} - b_{k+2}; result a_0 + u b_1 - b_2
    b1, b2 = b.const(a[-1]), None
    for k in range(len(a) - 2, 0, -1):
        nxt = b.op("Add", b.op("Mul", two_u, b1), b.const(a[k]))
        if b2 is not None:
            nxt = b.op("Sub", nxt, b2)
        b1, b2 = nxt, b1
    erfcx = b.op("Sub", b.op("Add", b.op("Mul", u, b1), b.const(a[0])), b2)
    erfc = b.op("Mul", b.op("Exp", b.op("Neg", b.op("Mul", t, t))), erfcx)  # erfc(|x|/sqrt 2)
    one_plus_erf = b.op("Where", b.op("Less", x, b.const(0.0)), erfc,
                        b.op("Sub", b.const(2.0), erfc))
    return b.op("Mul", b.op("Mul", x, b.const(0.5)), one_plus_erf)


def _gelu_basic(b: _Builder, x: str, approximate: str) -> str:
    if approximate == "tanh":
        cube = b.op("Mul", b.op("Mul", x, x), x)
        inner = b.op("Mul", b.op("Add", x, b.op("Mul", cube, b.const(0.044715))),
                     b.const(math.sqrt(2.0 / math.pi)))
        one_plus = b.op("Add", b.op("Tanh", inner), b.const(1.0))
    elif b.f64:
        return _gelu_erf_f64(b, x)
    else:
        one_plus = b.op("Add", b.op("Erf", b.op("Mul", x, b.const(1.0 / math.sqrt(2.0)))),
                        b.const(1.0))
    return b.op("Mul", b.op("Mul", x, b.const(0.5)), one_plus)


def _emit(b: _Builder, cfg: dict[str, Any], arr: dict[str, np.ndarray], x: str) -> str:
    """Write one (non-Residual) layer described by its get_config() and arrays; returns its
    output tensor."""
    kind = cfg["type"]
    if kind == "Dense":
        return b.op("Gemm", x, b.const(arr["weight"], tag="weight"),
                    b.const(arr["bias"], tag="bias"))
    simple = {"ReLU": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Identity": "Identity"}
    if kind in simple:
        return b.op(simple[kind], x)
    if kind == "Softmax":
        return b.op("Softmax", x, axis=-1)
    if kind == "SiLU":
        return b.op("Mul", x, b.op("Sigmoid", x))
    if kind in ("LeakyReLU", "ELU", "SELU") and not b.f64:
        if kind == "LeakyReLU":
            return b.op("LeakyRelu", x, alpha=cfg["negative_slope"])
        if kind == "ELU":
            return b.op("Elu", x, alpha=cfg["alpha"])
        return b.op("Selu", x, alpha=_SELU_ALPHA, gamma=_SELU_SCALE)
    if kind in ("LeakyReLU", "ELU", "SELU"):
        positive = b.op("Greater", x, b.const(0.0))
        if kind == "LeakyReLU":
            negative = b.op("Mul", x, b.const(cfg["negative_slope"], tag="negative_slope"))
        else:
            alpha = (b.const(cfg["alpha"], tag="alpha") if kind == "ELU"
                     else b.const(_SELU_ALPHA))
            negative = b.op("Mul", _expm1(b, x), alpha)
        y = b.op("Where", positive, x, negative)
        return y if kind != "SELU" else b.op("Mul", y, b.const(_SELU_SCALE))
    if kind == "GELU":
        if not b.f64 and b.opset >= 20:
            return b.op("Gelu", x, approximate=cfg["approximate"])
        return _gelu_basic(b, x, cfg["approximate"])
    if kind == "Softplus":
        beta = b.const(cfg["beta"], tag="beta")
        bx = b.op("Mul", x, beta)
        soft = (b.op("Log", b.op("Add", b.op("Exp", bx), b.const(1.0))) if b.f64
                else b.op("Softplus", bx))
        linear = b.op("Greater", bx, b.const(cfg["threshold"], tag="threshold"))
        return b.op("Where", linear, x, b.op("Div", soft, beta))
    if kind == "Dropout":
        return b.op("Dropout", x, b.const(cfg["p"], tag="p"))
    if kind == "LayerNorm":
        gamma, beta = b.const(arr["weight"], tag="weight"), b.const(arr["bias"], tag="bias")
        if not b.f64 and b.opset >= 17:
            return b.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=cfg["eps"])
        mean = _reduce_mean(b, x)
        centered = b.op("Sub", x, mean)
        var = _reduce_mean(b, b.op("Mul", centered, centered))
        std = b.op("Sqrt", b.op("Add", var, b.const(cfg["eps"], tag="eps")))
        return b.op("Add", b.op("Mul", b.op("Div", centered, std), gamma), beta)
    if kind == "BatchNorm1d":
        gamma, beta = b.const(arr["weight"], tag="weight"), b.const(arr["bias"], tag="bias")
        mean = b.const(arr["running_mean"], tag="running_mean")
        var = b.const(arr["running_var"], tag="running_var")
        if not b.f64:
            return b.op("BatchNormalization", x, gamma, beta, mean, var,
                        epsilon=cfg["eps"], momentum=1.0 - cfg["momentum"])
        std = b.op("Sqrt", b.op("Add", var, b.const(cfg["eps"], tag="eps")))
        return b.op("Add", b.op("Mul", b.op("Div", b.op("Sub", x, mean), std), gamma), beta)
    raise TypeError(f"mlpcore.onnx.export: no ONNX form for layer type {kind!r}")


def _reduce_mean(b: _Builder, x: str) -> str:
    if b.opset >= 18:  # axes became an input in opset 18
        return b.op("ReduceMean", x, b.const([-1], hint="axes", dtype=np.int64), keepdims=1)
    return b.op("ReduceMean", x, axes=[-1], keepdims=1)


def _layer_arrays(layer) -> dict[str, np.ndarray]:
    arr = {}
    if has_parameters(layer):
        arr["weight"], arr["bias"] = layer.weight, layer.bias
    if isinstance(layer, BatchNorm1d):
        arr["running_mean"], arr["running_var"] = layer.running_mean, layer.running_var
    return arr


def _emit_layers(b: _Builder, layers, x: str, counter: list[int]) -> str:
    for layer in layers:
        if isinstance(layer, Residual):
            inner = _emit_layers(b, layer.layers, x, counter)
            b.prefix = f"residual.{counter[0] - 1}."
            x = b.op("Add", x, inner)
            continue
        b.prefix = f"layers.{counter[0]}."
        counter[0] += 1
        x = _emit(b, layer.get_config(), _layer_arrays(layer), x)
    return x


def _max_opset(onnx) -> int:
    return onnx.defs.onnx_opset_version()


def export(model, path, *, opset: int | None = None, output_activation: bool = False,
           input_name: str = "input", output_name: str = "output") -> None:
    """Write ``model`` as an ONNX file at ``path``.

    ``opset``: the ONNX opset (default 17; 13 up to the newest the installed onnx knows).
    ``output_activation=True`` appends what the compiled loss implies, so the file returns
    probabilities: Softmax for ``cross_entropy``, Sigmoid for ``bce_with_logits``.
    The input (``input_name``) is ``(batch, in_features)`` with a dynamic batch dimension;
    the output (``output_name``) ``(batch, out_features)``; both in the model's dtype.
    The file is checked with ``onnx.checker`` before it is written.
    """
    onnx = _require_onnx("export")
    if not isinstance(model, Sequential):
        raise TypeError(f"export: model must be an mlpcore Sequential, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"export: path must be a str or os.PathLike, got {type(path).__name__}")
    max_opset = _max_opset(onnx)
    if opset is None:
        opset = min(DEFAULT_OPSET, max_opset)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"export: opset must be an int or None, got {type(opset).__name__}")
    if not MIN_OPSET <= opset <= max_opset:
        raise ValueError(f"export: opset must lie in [{MIN_OPSET}, {max_opset}] (the installed "
                         f"onnx {onnx.__version__} knows up to {max_opset}), got {opset}")
    for arg, name in ((input_name, "input_name"), (output_name, "output_name")):
        if not isinstance(arg, str) or not arg:
            raise TypeError(f"export: {name} must be a non-empty str, got {arg!r}")
    if input_name == output_name:
        raise ValueError(f"export: input_name and output_name must differ, both are {input_name!r}")
    tail = _output_activation(model) if output_activation else None

    b = _Builder(onnx, model.dtype, int(opset))
    y = _emit_layers(b, model.layers, input_name, [0])
    if tail is not None:
        b.prefix = "output_activation."
        y = _emit(b, {"type": tail}, {}, y)
    b.nodes.append(onnx.helper.make_node("Identity", [y], [output_name], name=output_name))
    elem = onnx.helper.np_dtype_to_tensor_dtype(model.dtype)
    graph = onnx.helper.make_graph(
        b.nodes, "mlpcore_sequential",
        [onnx.helper.make_tensor_value_info(input_name, elem, ["batch", model.in_features])],
        [onnx.helper.make_tensor_value_info(output_name, elem, ["batch", model.out_features])],
        initializer=[onnx.numpy_helper.from_array(v, k) for k, v in b.consts.items()])
    opsets = [onnx.helper.make_opsetid("", int(opset))]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="mlpcore",
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(Path(path), proto.SerializeToString())


def _output_activation(model) -> str:
    loss = getattr(model.loss, "name", None)
    tails = {"cross_entropy": "Softmax", "bce_with_logits": "Sigmoid"}
    if loss not in tails:
        raise ValueError("export: output_activation=True needs a model compiled with "
                         f"loss 'cross_entropy' or 'bce_with_logits', got {loss!r}")
    return tails[loss]


# --- reading -------------------------------------------------------------------------------
class _Graph:
    """Constants (initializers, Constant nodes, Identity of a constant) and, for every other
    tensor, the nodes that consume it."""

    def __init__(self, onnx, graph) -> None:
        self.onnx = onnx
        self.consts: dict[str, np.ndarray] = {
            t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant" and not node.input:
                attr = node.attribute[0] if len(node.attribute) == 1 else None
                if attr is not None and attr.name == "value":
                    self.consts[node.output[0]] = onnx.numpy_helper.to_array(attr.t)
                    continue
            if node.op_type == "Identity" and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
                continue
            self.nodes.append(node)
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                if name and name not in self.consts:
                    self.consumers.setdefault(name, []).append(node)
        self.used: set = set()

    def free_consumers(self, tensor: str) -> list:
        return [n for n in self.consumers.get(tensor, []) if id(n) not in self.used]

    def attrs(self, node) -> dict[str, Any]:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}


def _describe(node) -> str:
    return f"{node.op_type} node {node.name or node.output[0]!r}"


class _Unmappable(ValueError):
    pass


def _short_float(value) -> float:
    """A parameter read from a 32-bit float: the shortest decimal that rounds to it (1e-05,
    not 9.99999974738e-06), so the loaded layer's parameter is the one that was written."""
    value = np.asarray(value).reshape(-1)[0]
    if value.dtype == np.float32:
        return float(np.format_float_positional(value, unique=True, trim="-"))
    return float(value)


_COMMUTATIVE = {"Add", "Mul"}


def _match(g: _Graph, tmpl: _Builder, x_name: str, cur: str, wildcard: bool):
    """Match the template ``tmpl`` (input ``x_name``) at tensor ``cur``: returns (output tensor,
    matched nodes, {tag: value}) or None. Constants must be equal unless ``wildcard`` and tagged;
    tensors inside the match may feed nothing outside it."""
    mapping = {x_name: cur}
    matched, bound = [], {}
    for tnode in tmpl.nodes:
        anchor = next((mapping[i] for i in tnode.input if i in mapping), None)
        pool = (g.free_consumers(anchor) if anchor is not None  # else on constants only
                else [n for n in g.nodes if id(n) not in g.used])
        for cand in pool:
            if cand.op_type != tnode.op_type or id(cand) in {id(m) for m in matched}:
                continue
            if g.attrs(cand) != g.attrs(tnode) or len(cand.input) != len(tnode.input):
                continue
            orders = [list(cand.input)]
            if tnode.op_type in _COMMUTATIVE:
                orders.append(list(reversed(cand.input)))
            got = next((b for b in (_bind(g, tmpl, tnode, o, mapping, wildcard) for o in orders)
                        if b is not None), None)
            if got is not None:
                bound.update(got)
                matched.append(cand)
                mapping[tnode.output[0]] = cand.output[0]
                break
        else:
            return None
    out = mapping[tmpl.nodes[-1].output[0]]
    inside = {id(n) for n in matched}
    for n in matched:
        outside = [c for c in g.consumers.get(n.output[0], []) if id(c) not in inside]
        if n.output[0] != out and outside:
            return None
    return out, matched, bound


def _bind(g, tmpl, tnode, inputs, mapping, wildcard):
    bound = {}
    for t_in, g_in in zip(tnode.input, inputs):
        if t_in in mapping:
            if mapping[t_in] != g_in:
                return None
        elif t_in in tmpl.consts:
            if g_in not in g.consts:
                return None
            value, want = g.consts[g_in], tmpl.consts[t_in]
            tag = tmpl.tags.get(t_in)
            if wildcard and tag is not None:
                if value.dtype != want.dtype:
                    return None
                bound[tag] = value
            elif value.dtype != want.dtype or value.shape != want.shape or \
                    not np.array_equal(value, want):
                return None
        else:
            return None
    return bound


# prototypes of the layers whose ONNX form may span several nodes, longest forms first
_PROTOTYPES = [
    {"type": "GELU", "approximate": "none"}, {"type": "GELU", "approximate": "tanh"},
    {"type": "LayerNorm", "normalized_shape": 1, "eps": 1e-5},
    {"type": "BatchNorm1d", "num_features": 1, "eps": 1e-5, "momentum": 0.1},
    {"type": "Softplus", "beta": 1.0, "threshold": 20.0},
    {"type": "SELU"}, {"type": "ELU", "alpha": 1.0}, {"type": "LeakyReLU", "negative_slope": 0.01},
    {"type": "SiLU"},
]
_PROTO_ARRAYS = {"LayerNorm": ("weight", "bias"),
                 "BatchNorm1d": ("weight", "bias", "running_mean", "running_var")}


def _template(onnx, cfg, arr, dtype, opset) -> _Builder:
    t = _Builder(onnx, dtype, opset, prefix="t.")
    _emit(t, cfg, arr, "X")
    return t


def _match_lowered(g: _Graph, cur: str, dtype, opset):
    """A multi-node form mlpcore writes (see the table above), read back by matching the same
    writer's output: parameters are read from the tagged constants, then the layer is written
    again with them and must match exactly."""
    for proto in _PROTOTYPES:
        kind = proto["type"]
        arr0 = {k: np.zeros(1, dtype) for k in _PROTO_ARRAYS.get(kind, ())}
        tmpl = _template(g.onnx, proto, arr0, dtype, opset)
        if len(tmpl.nodes) < 2:
            continue
        hit = _match(g, tmpl, "X", cur, wildcard=True)
        if hit is None:
            continue
        bound = hit[2]
        cfg, arr = dict(proto), {}
        for tag, value in bound.items():
            if tag in _PROTO_ARRAYS.get(kind, ()):
                arr[tag] = value.reshape(-1)
            else:
                cfg[tag] = _short_float(value)
        if kind == "LayerNorm":
            cfg["normalized_shape"] = arr["weight"].size
        if kind == "BatchNorm1d":
            cfg["num_features"] = arr["weight"].size
        exact = _match(g, _template(g.onnx, cfg, arr, dtype, opset), "X", cur, wildcard=False)
        if exact is not None:
            return cfg, arr, exact[0], exact[1]
    return None


def _const_input(g: _Graph, node, i: int) -> np.ndarray | None:
    if len(node.input) <= i or not node.input[i]:
        return None
    if node.input[i] not in g.consts:
        raise _Unmappable(f"{_describe(node)}: input {i} must be a constant")
    return g.consts[node.input[i]]


def _match_single(g: _Graph, node, cur: str, dtype):
    """One standard node (or MatMul + Add) at ``cur``: (config, arrays, output, nodes) or None."""
    op, a = node.op_type, g.attrs(node)
    if node.input[0] != cur:
        return None
    out, nodes = node.output[0], [node]
    simple = {"Relu": "ReLU", "Sigmoid": "Sigmoid", "Tanh": "Tanh"}
    if op in simple:
        return {"type": simple[op]}, {}, out, nodes
    if op == "Identity":
        return None, {}, out, nodes  # no layer
    if op == "Softmax" and a.get("axis", -1) in (-1, 1):
        return {"type": "Softmax"}, {}, out, nodes
    if op == "LeakyRelu":
        slope = _short_float(np.float32(a.get("alpha", 0.01)))
        return {"type": "LeakyReLU", "negative_slope": slope}, {}, out, nodes
    if op == "Elu":
        alpha = _short_float(np.float32(a.get("alpha", 1.0)))
        return {"type": "ELU", "alpha": alpha}, {}, out, nodes
    if op == "Selu" and np.float32(a.get("alpha", _SELU_ALPHA)) == np.float32(_SELU_ALPHA) \
            and np.float32(a.get("gamma", _SELU_SCALE)) == np.float32(_SELU_SCALE):
        return {"type": "SELU"}, {}, out, nodes
    if op == "Gelu":
        approximate = a.get("approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
        return {"type": "GELU", "approximate": approximate}, {}, out, nodes
    if op == "Softplus":  # ONNX Softplus has no threshold: torch's default 20 is taken
        return {"type": "Softplus", "beta": 1.0, "threshold": 20.0}, {}, out, nodes
    if op == "Dropout":
        if len(node.input) > 2 and node.input[2]:
            mode = _const_input(g, node, 2)
            if bool(mode.reshape(-1)[0]):
                raise _Unmappable(f"{_describe(node)}: training_mode is on")
        ratio = _const_input(g, node, 1)
        p = _short_float(ratio) if ratio is not None else float(a.get("ratio", 0.5))
        return {"type": "Dropout", "p": p}, {}, out, nodes
    if op == "Gemm":
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise _Unmappable(f"{_describe(node)}: only transA=0, alpha=1, beta=1 map to Dense")
        w = _const_input(g, node, 1)
        w = w.T if a.get("transB", 0) else w
        bias = _const_input(g, node, 2)
        return _dense(node, w, bias, dtype, out, nodes)
    if op == "MatMul":
        w = _const_input(g, node, 1)
        bias, after = None, g.free_consumers(out)
        if len(after) == 1 and after[0].op_type == "Add":
            add = after[0]
            other = [i for i in add.input if i != out]
            if len(other) == 1 and other[0] in g.consts:
                bias, out, nodes = g.consts[other[0]], add.output[0], [node, add]
        return _dense(node, w, bias, dtype, out, nodes)
    if op == "LayerNormalization":
        if a.get("axis", -1) not in (-1, 1):
            raise _Unmappable(f"{_describe(node)}: only axis=-1 maps to LayerNorm")
        gamma = _const_input(g, node, 1).reshape(-1)
        beta = _const_input(g, node, 2)
        beta = np.zeros_like(gamma) if beta is None else beta.reshape(-1)
        return ({"type": "LayerNorm", "normalized_shape": gamma.size,
                 "eps": _short_float(np.float32(a.get("epsilon", 1e-5)))},
                {"weight": gamma, "bias": beta}, out, nodes)
    if op == "BatchNormalization":
        if a.get("training_mode", 0):
            raise _Unmappable(f"{_describe(node)}: training_mode is on")
        gamma, beta, mean, var = (_const_input(g, node, i).reshape(-1) for i in range(1, 5))
        momentum = 1.0 - _short_float(np.float32(a.get("momentum", 0.9)))
        return ({"type": "BatchNorm1d", "num_features": gamma.size,
                 "eps": _short_float(np.float32(a.get("epsilon", 1e-5))),
                 "momentum": float(f"{momentum:.7g}")},
                {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var},
                out, nodes)
    return None


def _dense(node, w, bias, dtype, out, nodes):
    if w is None or w.ndim != 2:
        raise _Unmappable(f"{_describe(node)}: the weight must be a 2-D constant")
    n_out = w.shape[1]
    bias = np.zeros(n_out, dtype) if bias is None else np.asarray(bias)
    if bias.size != n_out:
        raise _Unmappable(f"{_describe(node)}: bias of shape {bias.shape} does not match "
                          f"{n_out} outputs")
    return ({"type": "Dense", "in_features": int(w.shape[0]), "out_features": int(n_out)},
            {"weight": w, "bias": bias.reshape(-1)}, out, nodes)


def _match_torch_softplus(g: _Graph, node, cur: str):
    """torch.onnx's nn.Softplus(beta != 1): Div(Softplus(Mul(x, beta)), beta)."""
    if node.op_type != "Mul" or node.input[0] != cur or node.input[1] not in g.consts:
        return None
    beta = g.consts[node.input[1]]
    nxt = g.free_consumers(node.output[0])
    if len(nxt) != 1 or nxt[0].op_type != "Softplus":
        return None
    div = g.free_consumers(nxt[0].output[0])
    if len(div) != 1 or div[0].op_type != "Div" or div[0].input[1] not in g.consts or \
            not np.array_equal(g.consts[div[0].input[1]], beta) or beta.size != 1:
        return None
    return ({"type": "Softplus", "beta": _short_float(beta), "threshold": 20.0}, {},
            div[0].output[0], [node, nxt[0], div[0]])


def _is_sklearn_binary_tail(g: _Graph, cur: str, target: str) -> bool:
    """skl2onnx's binary classifier: probabilities = Concat(1 - p, p)."""
    nodes = g.free_consumers(cur)
    concat = [n for n in nodes if n.op_type == "Concat" and n.output[0] == target]
    sub = [n for n in nodes if n.op_type == "Sub" and n.input[1] == cur and n.input[0] in g.consts]
    return bool(concat and sub and list(concat[0].input) == [sub[0].output[0], cur])


class _Walker:
    def __init__(self, g: _Graph, dtype, opset: int, target: str) -> None:
        self.g, self.dtype, self.opset, self.target = g, dtype, opset, target
        self.width: int | None = None  # features after the last Dense so far

    def step(self, cur: str) -> tuple[list, str]:
        """The layers at ``cur`` (none for an Identity), and the tensor after them."""
        g = self.g
        free = g.free_consumers(cur)
        inner_error = None
        for add in [n for n in free if n.op_type == "Add"]:  # a Residual block ends here?
            other = [i for i in add.input if i != cur]
            if len(other) != 1 or other[0] in g.consts:
                continue
            saved = set(g.used)
            g.used.add(id(add))
            try:
                inner = self.walk(cur, stop=other[0])
            except _Unmappable as exc:
                g.used, inner_error = saved, exc
                continue
            return [("Residual", inner)], add.output[0]
        hit = _match_lowered(g, cur, self.dtype, self.opset)
        if hit is not None:
            return self._take(hit)
        if len(free) != 1:
            if inner_error is not None:  # what stopped the block's inside is the better clue
                raise inner_error
            names = ", ".join(_describe(n) for n in free) or "nothing"
            raise _Unmappable(f"tensor {cur!r} feeds {names}; mlpcore maps a single chain of "
                              "layers")
        node = free[0]
        if self._is_noop_reshape(node):
            return self._take((None, {}, node.output[0], [node]))
        hit = _match_single(g, node, cur, self.dtype) or _match_torch_softplus(g, node, cur)
        if hit is None:
            raise _Unmappable(f"{_describe(node)} has no mlpcore layer (first node that "
                              "cannot be mapped)")
        return self._take(hit)

    def _is_noop_reshape(self, node) -> bool:
        """skl2onnx's regressor ends in Reshape(-1, n_outputs): nothing to do for 2-D rows."""
        shape = self.g.consts.get(node.input[1]) if node.op_type == "Reshape" else None
        return shape is not None and self.width is not None and \
            shape.tolist() in ([-1, self.width], [0, self.width])

    def _take(self, hit):
        cfg, arr, out, nodes = hit
        if cfg is not None and cfg["type"] == "Dense":
            self.width = cfg["out_features"]
        self.g.used.update(id(n) for n in nodes)
        return ([] if cfg is None else [(cfg, arr)]), out

    def walk(self, cur: str, stop: str) -> list:
        layers = []
        while cur != stop:
            if stop == self.target and _is_sklearn_binary_tail(self.g, cur, stop):
                break
            if not self.g.free_consumers(cur):
                raise _Unmappable(f"tensor {cur!r} does not lead to {stop!r}")
            new, cur = self.step(cur)
            layers.extend(new)
        return layers


def load(path, *, output: str | None = None):
    """Rebuild a :class:`~mlpcore.Sequential` from an ONNX file written by :func:`export`, or by
    ``torch.onnx.export`` of an ``nn.Sequential`` of Linear / activations / LayerNorm /
    BatchNorm1d / Dropout, or by skl2onnx for ``MLPClassifier`` / ``MLPRegressor``.

    The chain from the graph's input to ``output`` (default: the first floating-point output,
    e.g. skl2onnx's ``probabilities``) becomes the layers; a leading Cast to float32/float64
    sets the dtype. Identity nodes and a Reshape to (-1, features) add no layer; ONNX's
    Softplus (no threshold) loads as ``Softplus(beta, threshold=20)``, torch's default; a
    binary skl2onnx classifier loads as its positive-class probability (one column). Anything
    else raises ValueError naming the first node that cannot be mapped. The model is not
    compiled. A float64 BatchNorm1d written by
    :func:`export` comes back with momentum 0.1 (basic ops have no place for it; it only
    matters in training).
    """
    onnx = _require_onnx("load")
    from google.protobuf.message import DecodeError  # onnx depends on protobuf
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load: path must be a str or os.PathLike, got {type(path).__name__}")
    try:
        proto = onnx.load(os.fspath(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"load: no such file: {str(path)!r}") from None
    except DecodeError as exc:
        raise ValueError(f"load: {str(path)!r} is not an ONNX model: {exc}") from None
    return _from_proto(onnx, proto, output)


def _from_proto(onnx, proto, output: str | None):
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    g = _Graph(onnx, graph)
    inputs = [i for i in graph.input if i.name not in g.consts]
    if len(inputs) != 1:
        raise ValueError(f"load: expected one graph input, got {[i.name for i in inputs]}")
    floats = {onnx.TensorProto.FLOAT: np.dtype(np.float32),
              onnx.TensorProto.DOUBLE: np.dtype(np.float64)}
    if output is None:
        output = next((o.name for o in graph.output
                       if o.type.tensor_type.elem_type in floats), None)
        if output is None:
            raise ValueError("load: the graph has no float32/float64 output")
    elif output not in {o.name for o in graph.output}:
        raise ValueError(f"load: output {output!r} is not a graph output; outputs: "
                         f"{[o.name for o in graph.output]}")
    cur = inputs[0].name
    dtype = floats.get(inputs[0].type.tensor_type.elem_type)
    first = g.free_consumers(cur)
    if len(first) == 1 and first[0].op_type == "Cast":
        dtype = floats.get(g.attrs(first[0]).get("to"))
        g.used.add(id(first[0]))
        cur = first[0].output[0]
    if dtype is None:
        raise TypeError(f"load: the input {inputs[0].name!r} must be float32 or float64 "
                        "(or be cast to one first)")
    try:
        plan = _Walker(g, dtype, opset, output).walk(cur, stop=output)
    except _Unmappable as exc:
        raise ValueError(f"load: {exc}") from None
    layers, fills = _build_layers(plan, dtype)
    if not layers:
        raise ValueError("load: the graph holds no layer mlpcore can build")
    try:
        model = Sequential(layers, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"load: the layers read from the graph do not form a model: {exc}") \
            from None
    for layer, arr in fills:
        for name, value in arr.items():
            getattr(layer, name)[...] = np.asarray(value).reshape(getattr(layer, name).shape)
    return model


def _build_layers(plan, dtype):
    layers, fills = [], []
    for cfg, arr in plan:
        if cfg == "Residual":
            inner, inner_fills = _build_layers(arr, dtype)
            layers.append(Residual(inner))
            fills.extend(inner_fills)
            continue
        layer = layer_from_config(cfg)
        layers.append(layer)
        if arr:
            fills.append((layer, {k: np.asarray(v, dtype=dtype) for k, v in arr.items()}))
    return layers, fills

"""mlpcore.onnx: exported files run in ONNX Runtime as model.predict does, pass the checker, and
load back bit for bit; torch.onnx and skl2onnx graphs load; anything else is refused clearly."""
import sys
import warnings

import numpy as np
import pytest

import mlpcore as mc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# relative to the largest output: float64 to 1e-12, float32 to 1e-5 (issue 18)
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}

LAYERS = {
    "Dense": lambda: [],
    "ReLU": lambda: [mc.ReLU()],
    "LeakyReLU": lambda: [mc.LeakyReLU(0.2)],
    "ELU": lambda: [mc.ELU(0.7)],
    "SELU": lambda: [mc.SELU()],
    "GELU": lambda: [mc.GELU()],
    "GELUTanh": lambda: [mc.GELU(approximate="tanh")],
    "SiLU": lambda: [mc.SiLU()],
    "Sigmoid": lambda: [mc.Sigmoid()],
    "Tanh": lambda: [mc.Tanh()],
    "Softplus": lambda: [mc.Softplus(beta=1.5, threshold=4.0)],
    "Softmax": lambda: [mc.Softmax()],
    "Identity": lambda: [mc.Identity()],
    "Dropout": lambda: [mc.Dropout(0.3)],
    "LayerNorm": lambda: [mc.LayerNorm(8, eps=1e-3)],
    "BatchNorm1d": lambda: [mc.BatchNorm1d(8, eps=1e-4, momentum=0.2)],
    "Residual": lambda: [mc.Residual([mc.Dense(8, 8), mc.GELU(), mc.Dense(8, 8)])],
}


def build(kind, dtype, seed=0):
    """Dense(6, 8) -> the layer -> Dense(8, 4), with non-trivial norm parameters."""
    model = mc.Sequential([mc.Dense(6, 8), *LAYERS[kind](), mc.Dense(8, 4)], dtype=dtype,
                          seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.flat_layers:
        if isinstance(layer, (mc.LayerNorm, mc.BatchNorm1d)):
            layer.weight = rng.uniform(0.5, 1.5, 8)
            layer.bias = rng.uniform(-0.5, 0.5, 8)
        if isinstance(layer, mc.BatchNorm1d):
            layer.running_mean[...] = rng.uniform(-1, 1, 8)
            layer.running_var[...] = rng.uniform(0.2, 2, 8)
    return model


def inputs(dtype, n=257, seed=1):
    # wide enough to cross every branch: Softplus' threshold, GELU's tails, ELU's negative side
    return (np.random.default_rng(seed).normal(size=(n, 6)) * 3).astype(dtype)


def run_ort(path, x, input_name="input"):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: x})[0]


def relative_error(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def configs(model):
    """Layer configs as a file keeps them: no initialiser, no Identity; a float64 BatchNorm1d
    is written in basic ops, where its (training-only) momentum has no place."""
    out = []
    for layer in model.flat_layers:
        cfg = layer.get_config()
        cfg.pop("init", None)
        if cfg["type"] == "BatchNorm1d" and model.dtype == np.float64:
            cfg.pop("momentum")
        if cfg["type"] != "Identity":
            out.append(cfg)
    return out


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_export_matches_predict_and_loads_bit_for_bit(tmp_path, kind, dtype, opset):
    model = build(kind, dtype)
    path = tmp_path / "model.onnx"
    mc.onnx.export(model, path, opset=opset)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import] == [opset]
    x = inputs(dtype)
    want = model.predict(x)
    got = run_ort(path, x)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    assert relative_error(got, want) <= TOLERANCE[dtype]

    loaded = mc.onnx.load(path)
    assert loaded.dtype == model.dtype
    assert configs(loaded) == configs(model)
    np.testing.assert_array_equal(loaded.predict(x), want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float64_files_use_no_op_without_a_float64_kernel(tmp_path, dtype):
    model = mc.Sequential([mc.Dense(6, 8), mc.LeakyReLU(0.3), mc.ELU(0.5), mc.SELU(), mc.GELU(),
                           mc.Softplus(2.0), mc.LayerNorm(8), mc.BatchNorm1d(8),
                           mc.Dense(8, 2)], dtype=dtype)
    path = tmp_path / "m.onnx"
    mc.onnx.export(model, path, opset=20)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    no_f64 = {"LeakyRelu", "Elu", "Selu", "Softplus", "Erf", "Gelu", "LayerNormalization",
              "BatchNormalization"}
    if dtype == "float64":
        assert not ops & no_f64
        for init in onnx.load(str(path)).graph.initializer:  # float constants are 64-bit
            assert init.data_type in (onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64)
    else:
        assert {"LeakyRelu", "Elu", "Selu", "Gelu", "LayerNormalization",
                "BatchNormalization"} <= ops


def test_a_deep_model_with_every_layer_round_trips(tmp_path):
    for dtype in ("float32", "float64"):
        layers = [mc.Dense(6, 8)]
        for kind in sorted(LAYERS):
            layers += LAYERS[kind]()
        model = mc.Sequential(layers + [mc.Dense(8, 3)], dtype=dtype, seed=3)
        path = tmp_path / f"deep-{dtype}.onnx"
        mc.onnx.export(model, path)
        x = inputs(dtype)
        assert relative_error(run_ort(path, x), model.predict(x)) <= TOLERANCE[dtype]
        np.testing.assert_array_equal(mc.onnx.load(path).predict(x), model.predict(x))


def test_batch_dimension_is_dynamic_and_names_are_chosen(tmp_path):
    model = build("ReLU", "float32")
    path = tmp_path / "m.onnx"
    mc.onnx.export(model, path, input_name="features", output_name="scores")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["features"]
    assert [o.name for o in graph.output] == ["scores"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 6
    for n in (1, 5, 300):
        x = inputs("float32", n)
        got = run_ort(path, x, "features")
        assert got.shape == (n, 4)
        assert relative_error(got, model.predict(x)) <= 1e-5


@pytest.mark.parametrize("loss,tail",
                         [("cross_entropy", "Softmax"), ("bce_with_logits", "Sigmoid")])
def test_output_activation_returns_probabilities(tmp_path, loss, tail):
    model = build("ReLU", "float64")
    model.compile(loss=loss)
    path = tmp_path / "m.onnx"
    mc.onnx.export(model, path, output_activation=True)
    x = inputs("float64")
    logits = model.predict(x)
    if tail == "Softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        want = e / e.sum(axis=1, keepdims=True)
    else:
        want = 1 / (1 + np.exp(-logits))
    assert relative_error(run_ort(path, x), want) <= 1e-12
    assert type(mc.onnx.load(path).layers[-1]).__name__ == tail


def test_output_activation_needs_a_classification_loss(tmp_path):
    model = build("ReLU", "float32")
    with pytest.raises(ValueError, match="output_activation=True needs a model compiled"):
        mc.onnx.export(model, tmp_path / "m.onnx", output_activation=True)
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="got 'mse'"):
        mc.onnx.export(model, tmp_path / "m.onnx", output_activation=True)


def test_export_rejects_bad_arguments(tmp_path):
    model = build("ReLU", "float32")
    with pytest.raises(TypeError, match="model must be an mlpcore Sequential"):
        mc.onnx.export("model", tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        mc.onnx.export(model, 3)
    with pytest.raises(TypeError, match="opset must be an int"):
        mc.onnx.export(model, tmp_path / "m.onnx", opset=17.0)
    with pytest.raises(ValueError, match=r"opset must lie in \[13, "):
        mc.onnx.export(model, tmp_path / "m.onnx", opset=12)
    with pytest.raises(TypeError, match="input_name must be a non-empty str"):
        mc.onnx.export(model, tmp_path / "m.onnx", input_name="")
    with pytest.raises(ValueError, match="must differ"):
        mc.onnx.export(model, tmp_path / "m.onnx", input_name="x", output_name="x")
    with pytest.raises(OSError):
        mc.onnx.export(model, tmp_path / "missing-folder" / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        mc.onnx.load(tmp_path / "nothing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 definitely not protobuf" * 10)
    with pytest.raises(ValueError, match="is not an ONNX model"):
        mc.onnx.load(junk)
    with pytest.raises(TypeError, match="path must be a str"):
        mc.onnx.load(None)


def _graph(nodes, inits, n_in=3, n_out=2, elem=None):
    h = onnx.helper
    elem = elem or onnx.TensorProto.FLOAT
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", elem, ["N", n_in])],
                         [h.make_tensor_value_info("y", elem, ["N", n_out])],
                         initializer=[onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_load_refuses_the_first_node_it_cannot_map(tmp_path):
    h = onnx.helper
    w = np.ones((3, 2), np.float32)
    proto = _graph([h.make_node("Gemm", ["x", "w"], ["z"], name="dense"),
                    h.make_node("Cos", ["z"], ["c"], name="the_cosine"),
                    h.make_node("Relu", ["c"], ["y"], name="relu")], {"w": w})
    path = tmp_path / "cos.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match="Cos node 'the_cosine' has no mlpcore layer"):
        mc.onnx.load(path)


def test_load_refuses_a_tampered_lowering(tmp_path):
    # a float64 SELU whose alpha was changed is no SELU: the scale Mul after it is refused
    model = build("SELU", "float64")
    path = tmp_path / "m.onnx"
    mc.onnx.export(model, path)
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:
        value = onnx.numpy_helper.to_array(init)
        if value.shape == () and abs(float(value) - 1.6732632423543772) < 1e-12:
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(1.5), init.name))
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match="Mul node"):
        mc.onnx.load(path)


def test_gemm_with_transposed_weight_and_matmul_add_load_as_dense(tmp_path):
    h = onnx.helper
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    w2, b2 = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    proto = _graph([h.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1),
                    h.make_node("Tanh", ["z"], ["a"]),
                    h.make_node("MatMul", ["a", "w2"], ["m"]),
                    h.make_node("Add", ["b2", "m"], ["y"])],
                   {"w1": w1, "b1": b1, "w2": w2, "b2": b2})
    path = tmp_path / "g.onnx"
    onnx.save(proto, str(path))
    model = mc.onnx.load(path)
    x = inputs("float32", 9)[:, :3].copy()
    want = np.tanh(x @ w1.T + b1) @ w2 + b2
    assert relative_error(model.predict(x), want) <= 1e-5
    assert relative_error(run_ort(path, x, "x"), want) <= 1e-5


def test_torch_onnx_export_loads(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.BatchNorm1d(16),
                        nn.Dropout(0.2), nn.LeakyReLU(0.1), nn.ELU(0.5), nn.SELU(), nn.SiLU(),
                        nn.Softplus(beta=2.0), nn.Tanh(), nn.Linear(16, 8), nn.Sigmoid(),
                        nn.GELU(approximate="tanh"), nn.Linear(8, 3), nn.Softmax(dim=-1))
    with torch.no_grad():
        net[3].running_mean.uniform_(-1, 1)
        net[3].running_var.uniform_(0.5, 2)
    net.eval()
    path = tmp_path / "torch.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its retirement
        torch.onnx.export(net, (torch.zeros(2, 6),), str(path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    model = mc.onnx.load(path)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Dense", "LayerNorm", "GELU", "BatchNorm1d", "LeakyReLU", "ELU", "SELU", "SiLU",
        "Softplus", "Tanh", "Dense", "Sigmoid", "GELU", "Dense", "Softmax"]
    x = inputs("float32")
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert relative_error(model.predict(x), want) <= 1e-5


def test_skl2onnx_mlps_load(tmp_path):
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    cases = [
        (MLPClassifier(hidden_layer_sizes=(7,), max_iter=30, random_state=0),
         np.arange(120) % 3, "predict_proba"),
        (MLPClassifier(hidden_layer_sizes=(7, 6), activation="tanh", max_iter=30, random_state=0),
         np.arange(120) % 2, "predict_proba"),
        (MLPRegressor(hidden_layer_sizes=(7,), activation="logistic", max_iter=30,
                      random_state=0), x[:, 0] - x[:, 1],
         "predict"),
    ]
    for i, (est, y, method) in enumerate(cases):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of a short fit
            est.fit(x, y)
        options = {id(est): {"zipmap": False}} if method == "predict_proba" else None
        proto = to_onnx(est, x[:1], options=options)
        path = tmp_path / f"sk{i}.onnx"
        onnx.save(proto, str(path))
        model = mc.onnx.load(path)
        want = getattr(est, method)(x.astype(np.float64))
        got = model.predict(x)
        if want.ndim == 2 and want.shape[1] == 2 and got.shape[1] == 1:
            want = want[:, 1:]  # a binary classifier loads as its positive-class probability
        assert relative_error(got, want.reshape(got.shape)) <= 1e-5


def test_without_the_onnx_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'mlpcore\[onnx\]'"):
        mc.onnx.export(build("ReLU", "float32"), tmp_path / "m.onnx")
    with pytest.raises(ImportError, match="needs the 'onnx' package"):
        mc.onnx.load(tmp_path / "m.onnx")


def test_float64_lowerings_are_accurate_element_by_element(tmp_path):
    # ELU and SELU through expm1 = 2t / (1 - t): relative accuracy even next to zero;
    # GELU through erfc: relative accuracy where erfc(|x| / sqrt 2) is fitted (|x| < 8.5)
    import math
    x = np.concatenate([np.linspace(-8.4, 30, 4001), -np.logspace(-300, 0.9, 400),
                        np.logspace(-300, 1.4, 400)]).reshape(-1, 1)
    references = {
        "ELU": lambda v: v if v > 0 else 0.7 * math.expm1(v),
        "SELU": lambda v: 1.0507009873554805 * (v if v > 0 else
                                               1.6732632423543772 * math.expm1(v)),
        "GELU": lambda v: 0.5 * v * math.erfc(-v / math.sqrt(2)),
    }
    for kind, ref in references.items():
        act = {"ELU": mc.ELU(0.7), "SELU": mc.SELU(), "GELU": mc.GELU()}[kind]
        model = mc.Sequential([mc.Dense(1, 1), act], dtype="float64")
        model.layers[0].weight, model.layers[0].bias = [[1.0]], [0.0]
        path = tmp_path / f"{kind}.onnx"
        mc.onnx.export(model, path)
        got = run_ort(path, x)[:, 0]
        want = np.array([ref(v) for v in x[:, 0]])
        assert np.all(np.abs(got - want) <= 1e-13 * np.abs(want)), kind


def test_an_unmappable_node_inside_a_residual_block_is_named(tmp_path):
    h = onnx.helper
    w = np.eye(3, dtype=np.float32)
    proto = _graph([h.make_node("Gemm", ["x", "w"], ["a"]),
                    h.make_node("Cos", ["a"], ["c"], name="inner_cosine"),
                    h.make_node("Add", ["x", "c"], ["y"])], {"w": w}, n_out=3)
    path = tmp_path / "res.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match="Cos node 'inner_cosine' has no mlpcore layer"):
        mc.onnx.load(path)

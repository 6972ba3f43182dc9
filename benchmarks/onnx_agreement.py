"""How closely ONNX Runtime reproduces model.predict on files written by mlpcore.onnx.export.

For each layer kind (between Dense(6, 8) and Dense(8, 4)), dtype and opset: the largest absolute
difference, and that difference over the largest |output| (the measure the tests bound by 1e-5
for float32 and 1e-12 for float64), on 4096 rows of N(0, 3^2) inputs.

    python benchmarks/onnx_agreement.py [--opsets 17 20]
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort

import mlpcore as mc

LAYERS = {
    "Dense": lambda: [], "ReLU": lambda: [mc.ReLU()], "LeakyReLU(0.2)": lambda: [mc.LeakyReLU(0.2)],
    "ELU(0.7)": lambda: [mc.ELU(0.7)], "SELU": lambda: [mc.SELU()], "GELU": lambda: [mc.GELU()],
    "GELU(tanh)": lambda: [mc.GELU("tanh")], "SiLU": lambda: [mc.SiLU()],
    "Sigmoid": lambda: [mc.Sigmoid()], "Tanh": lambda: [mc.Tanh()],
    "Softplus(1.5, 4)": lambda: [mc.Softplus(1.5, 4.0)], "Softmax": lambda: [mc.Softmax()],
    "Dropout": lambda: [mc.Dropout(0.3)], "LayerNorm": lambda: [mc.LayerNorm(8)],
    "BatchNorm1d": lambda: [mc.BatchNorm1d(8)],
    "Residual": lambda: [mc.Residual([mc.Dense(8, 8), mc.GELU(), mc.Dense(8, 8)])],
}


def build(kind, dtype):
    model = mc.Sequential([mc.Dense(6, 8), *LAYERS[kind](), mc.Dense(8, 4)], dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    for layer in model.flat_layers:
        if isinstance(layer, (mc.LayerNorm, mc.BatchNorm1d)):
            layer.weight, layer.bias = rng.uniform(0.5, 1.5, 8), rng.uniform(-0.5, 0.5, 8)
        if isinstance(layer, mc.BatchNorm1d):
            layer.running_mean[...] = rng.uniform(-1, 1, 8)
            layer.running_var[...] = rng.uniform(0.2, 2, 8)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opsets", type=int, nargs="+", default=[17, 20])
    args = parser.parse_args(argv)
    print(f"onnxruntime {ort.__version__}; max |ort - predict| and that / max |predict|")
    header = "".join(f"  {d} opset {o:<2} abs / rel       " for d in ("float32", "float64")
                     for o in args.opsets)
    print(f"{'layer':<18}{header}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        for kind in LAYERS:
            cells = []
            for dtype in ("float32", "float64"):
                x = (np.random.default_rng(1).normal(size=(4096, 6)) * 3).astype(dtype)
                for opset in args.opsets:
                    model = build(kind, dtype)
                    mc.onnx.export(model, path, opset=opset)
                    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                    got, want = sess.run(None, {"input": x})[0], model.predict(x)
                    err = float(np.max(np.abs(got.astype(np.float64) - want)))
                    cells.append(f"  {err:9.2e} / {err / float(np.max(np.abs(want))):9.2e}     ")
            print(f"{kind:<18}{''.join(cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

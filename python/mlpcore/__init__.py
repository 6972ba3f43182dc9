"""mlpcore: fast multilayer perceptrons on CPUs.

A C++ core (dense layers, activations, losses, backpropagation, optimizers, OpenMP GEMM)
behind a small Keras/PyTorch-like API::

    import mlpcore as mc
    model = mc.Sequential([mc.Dense(64, 128), mc.ReLU(), mc.Dense(128, 10)], seed=0)
    model.compile(loss="cross_entropy", optimizer=mc.optim.Adam(lr=1e-3))
    history = model.fit(X, y, epochs=30, batch_size=32)
"""
from . import _core, _fork, initializers, losses, optim  # noqa: F401  (_fork: at-fork hook)
from ._core import (get_flush_denormal, get_num_threads, has_openmp, kernel_info, matmul,
                    set_flush_denormal, set_num_threads)
from . import callbacks, schedules
from .io import Checkpoint, load, load_checkpoint, save_checkpoint
from .layers import (ELU, GELU, SELU, Activation, BatchNorm1d, Dense, Dropout, Identity, Layer,
                     LayerNorm, LeakyReLU, Normalization, ReLU, Residual, SiLU, Sigmoid, Softmax,
                     Softplus, Tanh, get_activation)
from .errors import NonFiniteLossError
from .frozen import FrozenModel
from .model import Sequential
from .callbacks import History
from .gradcheck import gradcheck
from .diagnostics import diagnose
from . import onnx  # imports the onnx package only when export/load are called
from .torch_interop import from_torch
from .trace import trace
from .lr_find import lr_find

__version__ = "0.1.0"

__all__ = [
    "Sequential", "FrozenModel", "Dense", "Layer", "Activation", "ReLU", "LeakyReLU", "ELU",
    "SELU", "GELU",
    "SiLU", "Sigmoid", "Tanh", "Softplus", "Softmax", "Identity", "Dropout", "LayerNorm",
    "BatchNorm1d", "Normalization", "Residual", "get_activation", "History",
    "NonFiniteLossError", "load", "optim", "losses", "initializers", "set_num_threads",
    "get_num_threads", "has_openmp", "matmul", "kernel_info", "set_flush_denormal",
    "get_flush_denormal",
    "callbacks", "schedules", "save_checkpoint", "load_checkpoint", "Checkpoint",
    "gradcheck", "diagnose", "onnx", "from_torch", "trace", "lr_find",
]

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py

import mlpcore as mc  # noqa: E402

ACTIVATION_FACTORIES = {
    "Identity": mc.Identity, "ReLU": mc.ReLU, "LeakyReLU": lambda: mc.LeakyReLU(0.2),
    "ELU": lambda: mc.ELU(0.7), "SELU": mc.SELU, "GELU": mc.GELU,
    "GELUTanh": lambda: mc.GELU(approximate="tanh"), "SiLU": mc.SiLU, "Sigmoid": mc.Sigmoid,
    "Tanh": mc.Tanh, "Softplus": lambda: mc.Softplus(beta=1.5), "Softmax": mc.Softmax,
}
ACTIVATION_PARAMS = {"LeakyReLU": {"negative_slope": 0.2}, "ELU": {"alpha": 0.7},
                     "Softplus": {"beta": 1.5}}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = mc.get_num_threads()
    yield
    mc.set_num_threads(before)

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py, tests/reference.py

import mlpcore as mc  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = mc.get_num_threads()
    yield
    mc.set_num_threads(before)

"""Dense initialisers: each named scheme draws from its documented distribution; arrays and
zeros are used as given; the seed makes them reproducible."""
import numpy as np
import pytest

import mlpcore as mc
from mlpcore.initializers import INITIALIZERS

FAN_IN, FAN_OUT = 400, 300
EXPECTED_STD = {
    "glorot_uniform": np.sqrt(2.0 / (FAN_IN + FAN_OUT)),
    "glorot_normal": np.sqrt(2.0 / (FAN_IN + FAN_OUT)),
    "he_uniform": np.sqrt(2.0 / FAN_IN),
    "he_normal": np.sqrt(2.0 / FAN_IN),
    "lecun_normal": np.sqrt(1.0 / FAN_IN),
    "torch": np.sqrt(1.0 / (3 * FAN_IN)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STD))
def test_named_initialisers_have_the_documented_spread(name):
    model = mc.Sequential([mc.Dense(FAN_IN, FAN_OUT, init=name)], dtype="float64", seed=0)
    w = model.layers[0].weight
    assert abs(w.mean()) < 0.05 * EXPECTED_STD[name]
    assert w.std() == pytest.approx(EXPECTED_STD[name], rel=0.02)
    np.testing.assert_array_equal(model.layers[0].bias, 0.0)
    if "uniform" in name or name == "torch":
        assert np.abs(w).max() <= EXPECTED_STD[name] * np.sqrt(3) * (1 + 1e-12)


def test_aliases_zeros_and_arrays():
    assert INITIALIZERS["xavier_uniform"] is INITIALIZERS["glorot_uniform"]
    assert INITIALIZERS["kaiming_normal"] is INITIALIZERS["he_normal"]
    zeros = mc.Sequential([mc.Dense(3, 2, init="zeros")], seed=0)
    np.testing.assert_array_equal(zeros.layers[0].weight, 0.0)
    given = np.arange(6.0).reshape(3, 2)
    model = mc.Sequential([mc.Dense(3, 2, init=given)], dtype="float64")
    np.testing.assert_array_equal(model.layers[0].weight, given)


def test_default_is_glorot_uniform_and_seeded():
    a = mc.Sequential([mc.Dense(50, 40)], seed=3).layers[0].weight
    b = mc.Sequential([mc.Dense(50, 40, init="glorot_uniform")], seed=3).layers[0].weight
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, mc.Sequential([mc.Dense(50, 40)], seed=4).layers[0].weight)


def test_bad_init_arguments():
    with pytest.raises(ValueError, match="unknown init 'orthogonal'; valid names: .*he_normal"):
        mc.Dense(3, 2, init="orthogonal")
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        mc.Dense(3, 2, init=np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        mc.Dense(3, 2, init=np.full((3, 2), np.nan))
    with pytest.raises(TypeError, match="real numeric array"):
        mc.Dense(3, 2, init=np.array([["a", "b"]] * 3))


def test_transposed_array_gets_a_hint_about_the_torch_layout():
    with pytest.raises(ValueError, match=r"shape \(3, 2\).*torch.nn.Linear.*init=weight\.T"):
        mc.Dense(3, 2, init=np.zeros((2, 3)))


def test_torch_tensor_init_warns_about_the_layout():
    torch = pytest.importorskip("torch")
    linear = torch.nn.Linear(4, 4)
    with pytest.warns(UserWarning, match=r"torch.nn.Linear.weight is \(out_features"):
        dense = mc.Dense(4, 4, init=linear.weight)
    model = mc.Sequential([dense], dtype="float32")
    np.testing.assert_array_equal(dense.weight, linear.weight.detach().numpy())
    assert model.in_features == 4
    wide = torch.nn.Linear(4, 3)
    right = mc.Dense(4, 3, init=wide.weight.T)  # unambiguous: no warning
    mc.Sequential([right])
    np.testing.assert_array_equal(right.weight, wide.weight.detach().numpy().T)

"""mc.from_torch / model.to_torch: the same network both ways, in float32 and float64."""
import sys

import numpy as np
import pytest

import mlpcore as mc

torch = pytest.importorskip("torch")
nn = torch.nn

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def torch_net(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 16), nn.LeakyReLU(0.2), nn.ELU(0.5), nn.SELU(), nn.GELU(),
        nn.GELU(approximate="tanh"), nn.SiLU(), nn.Softplus(beta=2.0, threshold=3.0),
        nn.Dropout(0.3), nn.LayerNorm(16, eps=1e-3), nn.BatchNorm1d(16, momentum=0.2),
        nn.Sequential(nn.Tanh(), nn.Linear(16, 16)), nn.Sigmoid(), nn.ReLU(), nn.Identity(),
        nn.Linear(16, 3), nn.Softmax(dim=-1)).to(dtype)
    with torch.no_grad():
        net[9].weight.uniform_(0.5, 1.5)
        net[9].bias.uniform_(-0.5, 0.5)
        net[10].running_mean.uniform_(-1, 1)
        net[10].running_var.uniform_(0.2, 2)
        net[10].weight.uniform_(0.5, 1.5)
    return net.eval()


def mlpcore_layers():
    return [mc.Dense(6, 16), mc.LeakyReLU(0.2), mc.ELU(0.5), mc.SELU(), mc.GELU(),
            mc.GELU(approximate="tanh"), mc.SiLU(), mc.Softplus(beta=2.0, threshold=3.0),
            mc.Dropout(0.3), mc.LayerNorm(16, eps=1e-3), mc.BatchNorm1d(16, momentum=0.2),
            mc.Tanh(), mc.Dense(16, 16), mc.Sigmoid(), mc.ReLU(), mc.Identity(),
            mc.Dense(16, 3), mc.Softmax()]


def inputs(dtype, n=200):
    return (np.random.default_rng(1).normal(size=(n, 6)) * 3).astype(dtype)


def forward(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def relative_error(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_from_torch_computes_what_torch_computes(dtype):
    net = torch_net(dtype)
    model = mc.from_torch(net)
    assert model.dtype.name == str(dtype).replace("torch.", "")
    assert [type(layer).__name__ for layer in model.layers] == \
        [type(layer).__name__ for layer in mlpcore_layers()]
    assert model.layers[0].weight.shape == (6, 16)  # (in, out): torch's weight transposed
    np.testing.assert_array_equal(model.layers[0].weight, net[0].weight.detach().numpy().T)
    np.testing.assert_array_equal(model.layers[10].running_var, net[10].running_var.numpy())
    assert model.layers[10].momentum == pytest.approx(0.2)
    x = inputs(model.dtype)
    assert relative_error(model.predict(x), forward(net, x)) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_torch_and_back_is_exact(dtype):
    model = mc.Sequential(mlpcore_layers()[:-2] + [
        mc.Residual([mc.Dense(16, 16), mc.GELU(), mc.Dense(16, 16)]), mc.Dense(16, 3)],
        dtype=dtype, seed=0)
    for layer in model.flat_layers:
        if isinstance(layer, mc.BatchNorm1d):
            layer.running_mean[...] = np.linspace(-1, 1, 16)
            layer.running_var[...] = np.linspace(0.3, 2, 16)
    net = model.to_torch()
    assert not net.training
    assert next(net.parameters()).dtype == getattr(torch, dtype)
    x = inputs(dtype)
    tol = TOLERANCE[getattr(torch, dtype)]
    assert relative_error(forward(net, x), model.predict(x)) <= tol
    back = mc.from_torch(net)
    assert isinstance(back.layers[-2], mc.Residual)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    # the torch module owns copies: changing it leaves the model alone
    with torch.no_grad():
        net[0].weight.zero_()
    assert np.any(model.layers[0].weight != 0)


def test_a_state_dict_fills_a_model_with_the_same_layers():
    net = torch_net(torch.float64)
    model = mc.Sequential(mlpcore_layers(), dtype="float64")
    assert mc.from_torch(net.state_dict(), model=model) is model
    x = inputs("float64")
    assert relative_error(model.predict(x), forward(net, x)) <= 1e-12


def test_a_state_dict_that_does_not_fit_changes_nothing():
    net = torch_net(torch.float32)
    layers = mlpcore_layers()
    layers[-2] = mc.Dense(16, 4)
    model = mc.Sequential(layers, seed=0)
    before = [layer.weight.copy() for layer in model.flat_layers if hasattr(layer, "weight")]
    with pytest.raises(ValueError, match=r"15.weight has shape \(3, 16\), layer Dense of the "
                                         r"model needs \(4, 16\)"):
        mc.from_torch(net.state_dict(), model=model)
    after = [layer.weight for layer in model.flat_layers if hasattr(layer, "weight")]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="the state_dict has 5 parametrised modules"):
        mc.from_torch(net.state_dict(), model=mc.Sequential([mc.Dense(6, 3)]))
    with pytest.raises(TypeError, match="pass model="):
        mc.from_torch(net.state_dict())


def test_unsupported_modules_and_objects_are_refused():
    with pytest.raises(TypeError, match=r"1 \(Conv1d\) has no mlpcore layer"):
        mc.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 1)))
    with pytest.raises(TypeError, match="expected an nn.Sequential"):
        mc.from_torch(nn.Linear(4, 4))
    with pytest.raises(TypeError, match="expected an nn.Sequential or a state_dict"):
        mc.from_torch([1, 2])
    with pytest.raises(ValueError, match="normalises one feature dimension"):
        mc.from_torch(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm((2, 2))))
    with pytest.raises(TypeError, match="model must be an mlpcore Sequential"):
        mc.torch_interop.to_torch(nn.Linear(2, 2))


def test_norm_layers_without_affine_parameters_load_as_ones_and_zeros():
    net = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5, elementwise_affine=False),
                        nn.BatchNorm1d(5, affine=False)).eval()
    model = mc.from_torch(net)
    np.testing.assert_array_equal(model.layers[1].weight, np.ones(5, np.float32))
    np.testing.assert_array_equal(model.layers[2].bias, np.zeros(5, np.float32))
    x = inputs("float32")[:, :4].copy()
    assert relative_error(model.predict(x), forward(net, x)) <= 1e-5


def test_without_torch_the_error_says_so(monkeypatch):
    model = mc.Sequential([mc.Dense(2, 2)])
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs PyTorch"):
        model.to_torch()
    with pytest.raises(ImportError, match="needs PyTorch"):
        mc.from_torch({})

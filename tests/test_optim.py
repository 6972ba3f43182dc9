"""Optimizers: every update rule against a NumPy transcription of torch.optim's documented
single-tensor algorithm, defaults, hyper-parameter changes between steps, argument checking,
state_dict round trips, and train_step == compute_gradients + optimizer.step()."""
import math

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import optim
from helpers import (dense_arrays, dense_layers, kernel_isa, needs_resident_memory, rss_bytes,
                     usable_isas)

N_STEPS = 6
TOL = {"float64": dict(rtol=1e-12, atol=1e-14), "float32": dict(rtol=2e-5, atol=2e-6)}


# --- NumPy transcriptions of torch.optim (single-tensor, maximize=False) -------------------
class RefSGD:
    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay
        self.momentum_buffer = None  # torch: no buffer until the first step

    def step(self, params, grads):
        if self.momentum_buffer is None:
            self.momentum_buffer = [None] * len(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            d_p = g + self.weight_decay * p if self.weight_decay != 0 else g.copy()
            if self.momentum != 0:
                buf = self.momentum_buffer[i]
                if buf is None:
                    buf = d_p.copy()
                else:
                    buf = self.momentum * buf + (1 - self.dampening) * d_p
                self.momentum_buffer[i] = buf
                d_p = d_p + self.momentum * buf if self.nesterov else buf
            p -= self.lr * d_p

    def state(self):
        if self.momentum_buffer is None or self.momentum_buffer[0] is None:
            return {}
        return {"momentum_buffer": self.momentum_buffer}


class RefAdam:
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 eps_before_correction=False):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.amsgrad = weight_decay, amsgrad
        self.eps_before_correction = eps_before_correction
        self.t = 0
        self.exp_avg = self.exp_avg_sq = self.max_exp_avg_sq = None

    def step(self, params, grads):
        if self.exp_avg is None:
            self.exp_avg = [np.zeros_like(p) for p in params]
            self.exp_avg_sq = [np.zeros_like(p) for p in params]
            self.max_exp_avg_sq = [np.zeros_like(p) for p in params]
        beta1, beta2 = self.betas
        self.t += 1
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.weight_decay != 0:
                if self.decoupled:
                    p *= 1 - self.lr * self.weight_decay
                else:
                    g = g + self.weight_decay * p
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            m += (g - m) * (1 - beta1)                      # exp_avg.lerp_(grad, 1 - beta1)
            v *= beta2
            v += (1 - beta2) * g * g
            bias_correction1 = 1 - beta1 ** self.t
            bias_correction2_sqrt = math.sqrt(1 - beta2 ** self.t)
            step_size = self.lr / bias_correction1
            second = v
            if self.amsgrad:
                np.maximum(self.max_exp_avg_sq[i], v, out=self.max_exp_avg_sq[i])
                second = self.max_exp_avg_sq[i]
            if self.eps_before_correction:  # Keras' and scikit-learn's placement of eps
                p -= self.lr * bias_correction2_sqrt / bias_correction1 * m / (np.sqrt(second)
                                                                             + self.eps)
            else:
                p -= step_size * (m / (np.sqrt(second) / bias_correction2_sqrt + self.eps))

    def state(self):
        st = {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}
        if self.amsgrad:
            st["max_exp_avg_sq"] = self.max_exp_avg_sq
        return st


class RefAdamW(RefAdam):
    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 eps_before_correction=False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, eps_before_correction)


class RefRMSprop:
    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        self.lr, self.alpha, self.eps = lr, alpha, eps
        self.weight_decay, self.momentum, self.centered = weight_decay, momentum, centered
        self.square_avg = self.grad_avg = self.momentum_buffer = None

    def step(self, params, grads):
        if self.square_avg is None:
            self.square_avg = [np.zeros_like(p) for p in params]
            self.grad_avg = [np.zeros_like(p) for p in params]
            self.momentum_buffer = [np.zeros_like(p) for p in params]
        a = self.alpha
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.weight_decay != 0:
                g = g + self.weight_decay * p
            sq = self.square_avg[i]
            sq *= a
            sq += (1 - a) * g * g
            if self.centered:
                ga = self.grad_avg[i]
                ga += (g - ga) * (1 - a)                     # grad_avg.lerp_(grad, 1 - alpha)
                avg = np.sqrt(sq - ga * ga)
            else:
                avg = np.sqrt(sq)
            avg = avg + self.eps
            if self.momentum > 0:
                buf = self.momentum_buffer[i]
                buf *= self.momentum
                buf += g / avg
                p -= self.lr * buf
            else:
                p -= self.lr * (g / avg)

    def state(self):
        st = {"square_avg": self.square_avg}
        if self.centered:
            st["grad_avg"] = self.grad_avg
        if self.momentum > 0:
            st["momentum_buffer"] = self.momentum_buffer
        return st


class RefAdagrad:
    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
        self.lr, self.lr_decay, self.weight_decay, self.eps = lr, lr_decay, weight_decay, eps
        self.t = 0
        self.sum = None  # initial_accumulator_value = 0

    def step(self, params, grads):
        if self.sum is None:
            self.sum = [np.zeros_like(p) for p in params]
        self.t += 1
        clr = self.lr / (1 + (self.t - 1) * self.lr_decay)
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.weight_decay != 0:
                g = g + self.weight_decay * p
            self.sum[i] += g * g
            std = np.sqrt(self.sum[i]) + self.eps
            p -= clr * (g / std)

    def state(self):
        return {"sum": self.sum}


REFS = {optim.SGD: RefSGD, optim.Adam: RefAdam, optim.AdamW: RefAdamW,
        optim.RMSprop: RefRMSprop, optim.Adagrad: RefAdagrad}

CASES = {
    "sgd-plain": (optim.SGD, dict(lr=0.1)),
    "sgd-momentum-dampening": (optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    "sgd-nesterov": (optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True)),
    "sgd-weight-decay": (optim.SGD, dict(lr=0.05, weight_decay=0.1)),
    "sgd-all": (optim.SGD, dict(lr=0.03, momentum=0.7, nesterov=True, weight_decay=0.05)),
    "adam-default": (optim.Adam, dict()),
    "adam-lr": (optim.Adam, dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6)),
    "adam-weight-decay": (optim.Adam, dict(lr=0.01, weight_decay=0.2)),
    "adam-amsgrad": (optim.Adam, dict(lr=0.01, amsgrad=True)),
    # an eps large enough to matter, where it is added
    "adam-eps-before": (optim.Adam, dict(lr=0.01, eps=0.05, weight_decay=0.1,
                                         eps_before_correction=True)),
    "adamw-eps-before-amsgrad": (optim.AdamW, dict(lr=0.01, eps=0.05, amsgrad=True,
                                                   eps_before_correction=True)),
    "adamw-default": (optim.AdamW, dict()),
    "adamw-decay": (optim.AdamW, dict(lr=0.02, weight_decay=0.3)),
    "adamw-amsgrad": (optim.AdamW, dict(lr=0.01, amsgrad=True)),
    "rmsprop-plain": (optim.RMSprop, dict()),
    "rmsprop-centered": (optim.RMSprop, dict(lr=0.005, centered=True)),
    "rmsprop-momentum": (optim.RMSprop, dict(lr=0.005, momentum=0.9)),
    "rmsprop-weight-decay": (optim.RMSprop, dict(lr=0.005, alpha=0.9, weight_decay=0.1)),
    "rmsprop-all": (optim.RMSprop, dict(lr=0.003, centered=True, momentum=0.5, weight_decay=0.05)),
    "adagrad-default": (optim.Adagrad, dict()),
    "adagrad-lr-decay": (optim.Adagrad, dict(lr=0.1, lr_decay=0.5)),
    "adagrad-weight-decay": (optim.Adagrad, dict(lr=0.05, weight_decay=0.2)),
    "adagrad-eps": (optim.Adagrad, dict(lr=0.05, eps=0.1)),
}


# --- helpers --------------------------------------------------------------------------------
def make_model(opt, dtype="float64", seed=0):
    model = mc.Sequential([mc.Dense(3, 4), mc.Tanh(), mc.Dense(4, 2)], dtype=dtype, seed=seed)
    model.compile(loss="mse", optimizer=opt)
    return model


def write_random_grads(model, rng, scale=1.0):
    """Fresh gradients into the views; returns them as the model's dtype rounds them."""
    grads = []
    for layer in dense_layers(model):
        layer.weight_grad[...] = scale * rng.normal(size=layer.weight_grad.shape)
        layer.bias_grad[...] = scale * rng.normal(size=layer.bias_grad.shape)
        grads += [np.array(layer.weight_grad, dtype=np.float64),
                  np.array(layer.bias_grad, dtype=np.float64)]
    return grads


def assert_params_close(model, ref_params, dtype, msg=""):
    for k, (got, want) in enumerate(zip(dense_arrays(model, np.float64), ref_params)):
        np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=f"{msg} parameter {k}")


def assert_state_close(model, ref, dtype, msg=""):
    state = model.optimizer.state
    for name, bufs in ref.state().items():
        flat = np.concatenate([b.ravel() for b in bufs])
        np.testing.assert_allclose(state[name].astype(np.float64), flat, **TOL[dtype],
                                   err_msg=f"{msg} state {name}")


# --- update rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_update_matches_numpy_transcription_of_torch(case, dtype):
    cls, hyper = CASES[case]
    model = make_model(cls(**hyper), dtype=dtype)
    ref = REFS[cls](**hyper)
    ref_params = dense_arrays(model, np.float64)
    start = [p.copy() for p in ref_params]
    rng = np.random.default_rng(sum(map(ord, case)))
    for step in range(1, N_STEPS + 1):
        grads = write_random_grads(model, rng, scale=0.5 * step)  # varying magnitudes
        model.optimizer.step()
        ref.step(ref_params, grads)
        assert model.optimizer.step_count == step
        assert_params_close(model, ref_params, dtype, f"{case} step {step}")
        assert_state_close(model, ref, dtype, f"{case} step {step}")
    # the parameters really moved (the comparison is not vacuous)
    moved = max(np.max(np.abs(p - s)) for p, s in zip(dense_arrays(model, np.float64), start))
    assert moved > 1e-3


def test_step_uses_gradients_written_into_the_views():
    model = make_model(optim.SGD(lr=0.5))
    w0 = model.layers[0].weight.copy()
    for layer in dense_layers(model):
        layer.weight_grad[...] = 0.0
        layer.bias_grad[...] = 0.0
    model.layers[0].weight_grad[1, 2] = 2.0
    model.optimizer.step()
    expected = w0.copy()
    expected[1, 2] -= 1.0
    np.testing.assert_array_equal(model.layers[0].weight, expected)


def test_zero_grad_clears_every_gradient_view():
    model = make_model(optim.SGD(lr=0.1))
    write_random_grads(model, np.random.default_rng(0))
    before = dense_arrays(model, np.float64)
    model.optimizer.zero_grad()
    for layer in dense_layers(model):
        assert not layer.weight_grad.any() and not layer.bias_grad.any()
    model.optimizer.step()  # plain SGD on zero gradients: nothing moves
    for got, want in zip(dense_arrays(model, np.float64), before):
        np.testing.assert_array_equal(got, want)


# --- defaults -------------------------------------------------------------------------------
TORCH_DEFAULTS = {
    optim.SGD: dict(lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0),
    optim.Adam: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False),
    optim.AdamW: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False),
    optim.RMSprop: dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                        centered=False),
    optim.Adagrad: dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10),
}
# mlpcore's own hyper-parameters beyond torch's, with defaults that keep torch's rule
EXTENSIONS = {
    optim.Adam: dict(eps_before_correction=False),
    optim.AdamW: dict(eps_before_correction=False),
}


@pytest.mark.parametrize("cls", list(TORCH_DEFAULTS), ids=lambda c: c.__name__)
def test_defaults_are_torch_defaults(cls):
    expected = {**TORCH_DEFAULTS[cls], **EXTENSIONS.get(cls, {})}
    for opt in (cls(), optim.get_optimizer(cls.__name__.lower()),
                optim.get_optimizer(cls.__name__.upper())):
        assert type(opt) is cls
        group = opt.param_groups[0]
        assert dict(group) == expected
        assert tuple(group.get("betas", ())) == tuple(expected.get("betas", ()))
        assert opt.lr == expected["lr"]
        assert opt.defaults == expected


def test_get_optimizer_with_lr_and_instances():
    opt = optim.get_optimizer("rmsprop", lr=0.25)
    assert isinstance(opt, optim.RMSprop) and opt.lr == 0.25
    assert opt.param_groups[0]["alpha"] == 0.99
    same = optim.Adam(lr=0.1)
    assert optim.get_optimizer(same) is same
    model = mc.Sequential([mc.Dense(3, 2)], seed=0)
    model.compile(loss="mse", optimizer="adamw")
    assert isinstance(model.optimizer, optim.AdamW)
    assert model.optimizer.param_groups[0]["weight_decay"] == 1e-2


# --- hyper-parameters changed between steps ------------------------------------------------
@pytest.mark.parametrize("how", ["attribute", "param_groups"])
@pytest.mark.parametrize("case", ["sgd-momentum-dampening", "adam-amsgrad", "adamw-decay",
                                  "rmsprop-all", "adagrad-lr-decay"])
def test_lr_change_between_steps_takes_effect(case, how):
    cls, hyper = CASES[case]
    model = make_model(cls(**hyper))
    ref = REFS[cls](**hyper)
    ref_params = dense_arrays(model, np.float64)
    rng = np.random.default_rng(7)
    schedule = [None, None, 0.5 * hyper.get("lr", cls().lr), None, 3e-2, 0.0, None]
    for step, new_lr in enumerate(schedule, start=1):
        if new_lr is not None:
            if how == "attribute":
                model.optimizer.lr = new_lr
            else:
                model.optimizer.param_groups[0]["lr"] = new_lr
            ref.lr = new_lr
            assert model.optimizer.lr == new_lr
            assert model.optimizer.param_groups[0]["lr"] == new_lr
        before = dense_arrays(model, np.float64)
        grads = write_random_grads(model, rng)
        model.optimizer.step()
        ref.step(ref_params, grads)
        assert_params_close(model, ref_params, "float64", f"{case} step {step}")
        if new_lr == 0.0 and cls is not optim.AdamW:
            # lr 0: no movement at all (AdamW's decoupled decay is scaled by lr too)
            for got, want in zip(dense_arrays(model, np.float64), before):
                np.testing.assert_array_equal(got, want)


def test_lr_change_between_train_steps_takes_effect():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
    a = make_model(optim.SGD(lr=0.1, momentum=0.5))
    b = make_model(optim.SGD(lr=0.1, momentum=0.5))
    a.train_step(x, y)
    b.train_step(x, y)
    a.optimizer.lr = 0.01
    b.optimizer.param_groups[0]["lr"] = 0.01
    c = make_model(optim.SGD(lr=0.1, momentum=0.5))
    c.train_step(x, y)  # c keeps lr=0.1
    for m in (a, b, c):
        m.train_step(x, y)
    for pa, pb, pc in zip(dense_arrays(a, np.float64), dense_arrays(b, np.float64), dense_arrays(c, np.float64)):
        np.testing.assert_array_equal(pa, pb)
        assert not np.allclose(pa, pc)


def test_other_hyper_parameters_changed_through_param_groups_take_effect():
    hyper = dict(lr=0.05, momentum=0.9)
    model = make_model(optim.SGD(**hyper))
    ref = RefSGD(**hyper)
    ref_params = dense_arrays(model, np.float64)
    rng = np.random.default_rng(11)
    for step in range(4):
        if step == 2:
            model.optimizer.param_groups[0]["weight_decay"] = 0.2
            model.optimizer.param_groups[0]["dampening"] = 0.5
            ref.weight_decay, ref.dampening = 0.2, 0.5
        grads = write_random_grads(model, rng)
        model.optimizer.step()
        ref.step(ref_params, grads)
        assert_params_close(model, ref_params, "float64", f"step {step}")
    assert model.optimizer.step_count == 4  # a changed hyper-parameter keeps state and count


# --- argument checking ----------------------------------------------------------------------
@pytest.mark.parametrize("factory, match", [
    (lambda: optim.SGD(lr=-0.1), "Invalid learning rate"),
    (lambda: optim.Adam(lr=-1e-3), "Invalid learning rate"),
    (lambda: optim.AdamW(lr=-1.0), "Invalid learning rate"),
    (lambda: optim.RMSprop(lr=-0.5), "Invalid learning rate"),
    (lambda: optim.Adagrad(lr=-0.5), "Invalid learning rate"),
    (lambda: optim.Adam(lr=float("nan")), "Invalid learning rate"),
    (lambda: optim.SGD(lr=float("inf")), "Invalid learning rate"),
    (lambda: optim.Adam(betas=(1.0, 0.999)), "Invalid beta parameter at index 0"),
    (lambda: optim.Adam(betas=(-0.1, 0.999)), "Invalid beta parameter at index 0"),
    (lambda: optim.Adam(betas=(0.9, 1.0)), "Invalid beta parameter at index 1"),
    (lambda: optim.AdamW(betas=(0.9, 1.5)), "Invalid beta parameter at index 1"),
    (lambda: optim.SGD(nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: optim.SGD(momentum=0.9, dampening=0.1, nesterov=True),
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: optim.SGD(momentum=-0.9), "Invalid momentum value"),
    (lambda: optim.RMSprop(momentum=-0.9), "Invalid momentum value"),
    (lambda: optim.SGD(weight_decay=-1e-4), "Invalid weight_decay value"),
    (lambda: optim.Adam(weight_decay=-1e-4), "Invalid weight_decay value"),
    (lambda: optim.Adam(eps=-1e-8), "Invalid epsilon value"),
    (lambda: optim.RMSprop(eps=-1e-8), "Invalid epsilon value"),
    (lambda: optim.Adagrad(eps=-1e-8), "Invalid epsilon value"),
    (lambda: optim.RMSprop(alpha=-0.1), "Invalid alpha value"),
    (lambda: optim.Adagrad(lr_decay=-0.1), "Invalid lr_decay value"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_hyper_parameters_raise_value_error(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize("factory", [
    lambda: optim.SGD(lr="0.1"),
    lambda: optim.Adam(lr=None),
    lambda: optim.AdamW(lr=[1e-3]),
    lambda: optim.RMSprop(lr=True),
    lambda: optim.Adagrad(lr_decay="fast"),
    lambda: optim.SGD(momentum="0.9"),
    lambda: optim.Adam(eps=None),
    lambda: optim.Adam(betas=0.9),
    lambda: optim.Adam(betas=("a", "b")),
    lambda: optim.AdamW(betas=(0.9,)),
])
def test_non_numbers_raise_type_error(factory):
    with pytest.raises(TypeError):
        factory()


def test_lr_setter_validates():
    opt = optim.Adam(lr=0.01)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.lr = -0.01
    with pytest.raises(TypeError):
        opt.lr = "0.1"
    assert opt.lr == 0.01  # unchanged by the failed assignments
    opt.lr = 2  # an int is a number
    assert opt.lr == 2.0 and isinstance(opt.lr, float)


def test_numpy_scalars_are_accepted():
    opt = optim.SGD(lr=np.float32(0.5), momentum=np.float64(0.25), weight_decay=np.int64(0))
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["momentum"] == 0.25


def test_unknown_optimizer_name_lists_valid_names():
    with pytest.raises(ValueError, match="nope") as excinfo:
        optim.get_optimizer("nope")
    for name in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
        assert name in str(excinfo.value)
    model = mc.Sequential([mc.Dense(3, 2)], seed=0)
    with pytest.raises(ValueError, match="nope"):
        model.compile(loss="mse", optimizer="nope")
    with pytest.raises(TypeError):
        optim.get_optimizer(3)
    with pytest.raises(TypeError):
        model.compile(loss="mse", optimizer=optim.Adam)  # the class, not an instance


@pytest.mark.parametrize("cls", list(TORCH_DEFAULTS), ids=lambda c: c.__name__)
def test_optimizer_use_before_compile_raises_runtime_error(cls):
    opt = cls()
    with pytest.raises(RuntimeError, match="compile"):
        opt.step()
    with pytest.raises(RuntimeError):
        opt.zero_grad()
    with pytest.raises(RuntimeError):
        opt.state
    with pytest.raises(RuntimeError):
        opt.state_dict()
    with pytest.raises(RuntimeError):
        opt.step_count


def test_one_optimizer_cannot_drive_two_models():
    opt = optim.Adam()
    make_model(opt)
    other = mc.Sequential([mc.Dense(3, 4), mc.Tanh(), mc.Dense(4, 2)], dtype="float64", seed=1)
    with pytest.raises(ValueError, match="another model"):
        other.compile(loss="mse", optimizer=opt)


# --- state_dict -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["sgd-all", "adam-amsgrad", "adamw-decay", "rmsprop-all",
                                  "adagrad-lr-decay"])
def test_state_dict_round_trip_continues_identically(case, dtype):
    cls, hyper = CASES[case]
    a = make_model(cls(**hyper), dtype=dtype, seed=0)
    rng = np.random.default_rng(5)
    for _ in range(3):
        write_random_grads(a, rng)
        a.optimizer.step()
    a.optimizer.lr = 0.004  # a changed hyper-parameter travels with the state
    sd = a.optimizer.state_dict()
    assert sd["name"] == cls.__name__ and sd["step"] == 3
    assert sd["param_groups"][0]["lr"] == 0.004
    assert set(sd["state"]) == set(a.optimizer.state)
    # copies, not views: later steps do not change the saved state
    saved = {k: v.copy() for k, v in sd["state"].items()}

    b = make_model(cls(), dtype=dtype, seed=1)  # different weights and hyper-parameters
    for layer_a, layer_b in zip(dense_layers(a), dense_layers(b)):
        layer_b.weight = layer_a.weight
        layer_b.bias = layer_a.bias
    b.optimizer.load_state_dict(sd)
    assert b.optimizer.step_count == 3
    assert b.optimizer.param_groups[0] == a.optimizer.param_groups[0]
    for name, value in a.optimizer.state.items():
        np.testing.assert_array_equal(b.optimizer.state[name], value)

    for _ in range(N_STEPS):
        grads = [rng.normal(size=g.shape) for layer in dense_layers(a)
                 for g in (layer.weight_grad, layer.bias_grad)]
        for model in (a, b):
            it = iter(grads)
            for layer in dense_layers(model):
                layer.weight_grad[...] = next(it)
                layer.bias_grad[...] = next(it)
            model.optimizer.step()
        for pa, pb in zip(dense_arrays(a, np.float64), dense_arrays(b, np.float64)):
            np.testing.assert_array_equal(pa, pb)
    assert a.optimizer.step_count == b.optimizer.step_count == 3 + N_STEPS
    for name, value in a.optimizer.state.items():
        np.testing.assert_array_equal(b.optimizer.state[name], value)
    for name, value in sd["state"].items():
        np.testing.assert_array_equal(value, saved[name])


def test_load_state_dict_rejects_other_optimizers_and_shapes():
    a = make_model(optim.Adam())
    sd = a.optimizer.state_dict()
    b = make_model(optim.SGD())
    with pytest.raises(ValueError, match="Adam"):
        b.optimizer.load_state_dict(sd)
    small = mc.Sequential([mc.Dense(3, 2)], dtype="float64", seed=0)
    small.compile(loss="mse", optimizer=optim.Adam())
    with pytest.raises(ValueError, match="exp_avg"):
        small.optimizer.load_state_dict(sd)


@pytest.mark.parametrize("case, expected", [
    ("sgd-plain", set()),
    ("sgd-momentum-dampening", {"momentum_buffer"}),
    ("adam-default", {"exp_avg", "exp_avg_sq"}),
    ("adam-amsgrad", {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    ("adamw-default", {"exp_avg", "exp_avg_sq"}),
    ("adamw-amsgrad", {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    ("rmsprop-plain", {"square_avg"}),
    ("rmsprop-centered", {"square_avg", "grad_avg"}),
    ("rmsprop-momentum", {"square_avg", "momentum_buffer"}),
    ("rmsprop-all", {"square_avg", "momentum_buffer", "grad_avg"}),
    ("adagrad-default", {"sum"}),
])
def test_state_buffers_are_torchs_state_keys(case, expected):
    """The buffers are those torch.optim keeps for the configuration (its keys minus "step")."""
    cls, hyper = CASES[case]
    model = make_model(cls(**hyper))
    state = model.optimizer.state
    assert set(state) == expected
    for buf in state.values():
        assert buf.shape == (model.num_params,) and buf.dtype == np.float64
        assert not buf.any()  # fresh state is zero
    assert set(model.optimizer.state_dict()["state"]) == expected


def test_sgd_momentum_switched_on_between_steps_starts_its_buffer_like_torch():
    """torch.optim.SGD creates the momentum buffer as a copy of the first gradient it sees with
    momentum on (no dampening), also when momentum is switched on after some steps."""
    model = make_model(optim.SGD(lr=0.05))
    ref = RefSGD(lr=0.05)
    ref_params = dense_arrays(model, np.float64)
    rng = np.random.default_rng(13)
    for step in range(1, 6):
        if step == 3:
            model.optimizer.param_groups[0]["momentum"] = 0.9
            model.optimizer.param_groups[0]["dampening"] = 0.5
            ref.momentum, ref.dampening = 0.9, 0.5
        grads = write_random_grads(model, rng)
        model.optimizer.step()
        ref.step(ref_params, grads)
        assert_params_close(model, ref_params, "float64", f"step {step}")
        assert_state_close(model, ref, "float64", f"step {step}")
    assert model.optimizer.step_count == 5


# --- train_step == compute_gradients + step -------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["sgd-all", "adam-default", "adamw-amsgrad", "rmsprop-all",
                                  "adagrad-lr-decay"])
def test_train_step_equals_compute_gradients_plus_step(case, dtype):
    cls, hyper = CASES[case]
    fused = make_model(cls(**hyper), dtype=dtype, seed=3)
    split = make_model(cls(**hyper), dtype=dtype, seed=3)
    rng = np.random.default_rng(21)
    for step in range(N_STEPS):
        x = rng.normal(size=(8 + step, 3))
        y = rng.normal(size=(8 + step, 2))
        if step == 3:
            fused.optimizer.lr = split.optimizer.lr = 0.5 * fused.optimizer.lr
        loss_fused = fused.train_step(x, y)
        loss_split = split.compute_gradients(x, y)
        split.optimizer.step()
        assert loss_fused == loss_split
        for lf, ls in zip(dense_layers(fused), dense_layers(split)):
            np.testing.assert_array_equal(lf.weight, ls.weight)
            np.testing.assert_array_equal(lf.bias, ls.bias)
            np.testing.assert_array_equal(lf.weight_grad, ls.weight_grad)
            np.testing.assert_array_equal(lf.bias_grad, ls.bias_grad)
    assert fused.optimizer.step_count == split.optimizer.step_count == N_STEPS
    for name, value in fused.optimizer.state.items():
        np.testing.assert_array_equal(split.optimizer.state[name], value)


# --- optional oracle: torch.optim itself ----------------------------------------------------
ORACLE_CASES = ["sgd-nesterov", "sgd-momentum-dampening", "sgd-all", "adam-default",
                "adam-weight-decay", "adam-amsgrad", "adamw-default", "adamw-amsgrad",
                "rmsprop-centered", "rmsprop-all", "adagrad-lr-decay", "adagrad-weight-decay"]


def test_against_torch_optim():
    torch = pytest.importorskip("torch")
    for case in ORACLE_CASES:
        cls, hyper = CASES[case]
        model = make_model(cls(**hyper))
        tparams = [torch.tensor(p, dtype=torch.float64) for p in dense_arrays(model, np.float64)]
        topt = getattr(torch.optim, cls.__name__)(tparams, foreach=False, **hyper)
        rng = np.random.default_rng(sum(map(ord, case)))
        for step in range(1, N_STEPS + 1):
            if step == 4:  # an lr change mid-run, both ways
                model.optimizer.param_groups[0]["lr"] = topt.param_groups[0]["lr"] = 0.02
            grads = write_random_grads(model, rng, scale=step)
            for t, g in zip(tparams, grads):
                t.grad = torch.tensor(g, dtype=torch.float64)
            model.optimizer.step()
            with torch.no_grad():
                topt.step()
            for k, (got, t) in enumerate(zip(dense_arrays(model, np.float64), tparams)):
                np.testing.assert_allclose(got, t.detach().numpy(), rtol=1e-12, atol=1e-14,
                                           err_msg=f"{case} step {step} parameter {k}")
            torch_keys = {k for k, v in topt.state[tparams[0]].items()
                          if k != "step" and v is not None}
            assert set(model.optimizer.state) == torch_keys, case
        # torch's defaults for the other hyper-parameters are ours
        fresh = getattr(torch.optim, cls.__name__)([torch.zeros(1)])
        for key, value in cls().param_groups[0].items():
            if key in EXTENSIONS.get(cls, {}):
                continue
            assert fresh.defaults[key] == (tuple(value) if key == "betas" else value), (case, key)


def test_eps_before_correction_is_scikit_learns_adam():
    """Adam(eps_before_correction=True) against scikit-learn's own Adam (what the sklearn
    estimators train with), float64, an eps large enough to matter."""
    sk_optim = pytest.importorskip("sklearn.neural_network._stochastic_optimizers")
    model = make_model(optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=0.05,
                                  eps_before_correction=True))
    sk_params = dense_arrays(model, np.float64)
    sk = sk_optim.AdamOptimizer(sk_params, learning_rate_init=0.01, beta_1=0.8, beta_2=0.99,
                                epsilon=0.05)
    torch_rule = make_model(optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=0.05))
    rng = np.random.default_rng(5)
    for step in range(1, N_STEPS + 1):
        grads = write_random_grads(model, rng, scale=step)
        for layer, mine in zip(dense_layers(torch_rule), dense_layers(model)):
            layer.weight_grad[...], layer.bias_grad[...] = mine.weight_grad, mine.bias_grad
        model.optimizer.step()
        torch_rule.optimizer.step()
        sk.update_params(sk_params, grads)
        for k, (got, want) in enumerate(zip(dense_arrays(model, np.float64), sk_params)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14,
                                       err_msg=f"step {step} parameter {k}")
    # and the placement of eps changes the result (the comparison is not torch's rule again)
    assert max(np.max(np.abs(a - b)) for a, b in zip(dense_arrays(torch_rule, np.float64),
                                                    sk_params)) > 1e-4


# --- ISA copies ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("widths", [(200, 170, 3), (3, 4, 3)], ids=["34683", "31"])
def test_every_isa_copy_of_the_update_gives_the_same_bits(case, dtype, widths):
    """The optimizer kernels run as an AVX-512, AVX2 or baseline copy depending on the CPU (and
    the ISA switch); all must produce identical parameters and state."""
    isas = usable_isas()
    if len(isas) < 2:
        pytest.skip("only one ISA usable here")
    cls, hyper = CASES[case]
    runs = {}
    for isa in isas:
        # 34,683 parameters: full vectors, a tail and the threads' chunked path; 31: tails only
        model = mc.Sequential([mc.Dense(widths[0], widths[1]), mc.Tanh(),
                               mc.Dense(widths[1], widths[2])], dtype=dtype, seed=0)
        model.compile(loss="mse", optimizer=cls(**hyper))
        rng = np.random.default_rng(11)
        with kernel_isa(isa):
            assert mc.kernel_info()["elementwise_isa"] == {"portable": "baseline"}.get(isa, isa)
            for step in range(1, 4):
                write_random_grads(model, rng, scale=0.5 * step)
                model.optimizer.step()
        runs[isa] = (dense_arrays(model, np.float64), {k: v.copy() for k, v in model.optimizer.state.items()})
    first_params, first_state = runs[isas[0]]
    for isa in isas[1:]:
        params, state = runs[isa]
        for a, b in zip(first_params, params):
            np.testing.assert_array_equal(a, b, err_msg=f"{case} {isa}")
        for name in first_state:
            np.testing.assert_array_equal(first_state[name], state[name], err_msg=f"{case} {isa}")


@needs_resident_memory
def test_replaced_optimizer_state_is_freed_but_old_views_stay_valid():
    """compile() with another rule replaces the state arena; the old one used to stay allocated
    for the model's lifetime (+156 MiB after 200 compiles). A view taken before keeps its own."""
    model = mc.Sequential([mc.Dense(256, 256), mc.ReLU(), mc.Dense(256, 256)], seed=0)
    x = np.ones((4, 256), np.float32)
    model.compile(loss="mse", optimizer=optim.Adam(lr=1e-3))
    model.train_step(x, x)
    old_view = model.optimizer.state["exp_avg"]
    saved = old_view.copy()
    model.compile(loss="mse", optimizer=optim.SGD(lr=0.1, momentum=0.9))
    model.train_step(x, x)
    np.testing.assert_array_equal(old_view, saved)  # still readable, untouched by SGD
    del old_view
    before = rss_bytes()
    for i in range(100):  # ~0.5 MiB per arena: 100 MiB if each stayed allocated
        model.compile(loss="mse", optimizer=optim.Adam() if i % 2 else optim.SGD(momentum=0.9))
        model.train_step(x, x)
    assert rss_bytes() - before < 16 * 2**20


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop,
                                 optim.Adagrad])
def test_keras_learning_rate_keyword(cls):
    opt = cls(learning_rate=0.123)
    assert opt.lr == 0.123 and opt.learning_rate == 0.123
    opt.learning_rate = 0.5
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(TypeError, match="both lr=0.2 and learning_rate=0.1"):
        cls(lr=0.2, learning_rate=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        cls(learning_rate=-1.0)


@pytest.mark.parametrize("change, error, match", [
    ({"step": -1}, ValueError, r"step must be in \[0, 2\*\*62\]"),
    ({"step": 2**64}, ValueError, r"step must be in \[0, 2\*\*62\]"),
    # (the count could not take one more update: 2**63 - 1 wrapped to a negative step)
    ({"step": 2**63 - 1}, ValueError, r"step must be in \[0, 2\*\*62\]"),
    ({"step": "3"}, TypeError, "step must be an int"),
    ({"step": True}, TypeError, "step must be an int"),
    ({"step": 2.0}, TypeError, "step must be an int"),
    ({"lr": float("nan")}, ValueError, "learning rate"),
    ({"lr": -10.0}, ValueError, "learning rate"),
    ({"betas": (2.0, float("nan"))}, ValueError, "beta"),
    ({"eps": float("inf")}, ValueError, "eps"),
    ({"lion": 1.0}, ValueError, "unknown hyper-parameter"),
], ids=["step-negative", "step-2p64", "step-2p63-1", "step-str", "step-bool", "step-float", "lr-nan",
        "lr-negative", "betas", "eps-inf", "unknown-key"])
def test_load_state_dict_refuses_bad_values_and_changes_nothing(change, error, match):
    model = make_model(optim.Adam(lr=0.01))
    model.optimizer.step()
    sd = model.optimizer.state_dict()
    before = model.optimizer.state_dict()
    if "step" in change:
        sd["step"] = change["step"]
    else:
        sd["param_groups"][0].update(change)
    with pytest.raises(error, match=match):
        model.optimizer.load_state_dict(sd)
    after = model.optimizer.state_dict()
    assert after["param_groups"] == before["param_groups"] and after["step"] == before["step"]
    for name, value in before["state"].items():
        np.testing.assert_array_equal(after["state"][name], value)


@pytest.mark.parametrize("steps, error", [(-1, ValueError), (2**62 + 1, ValueError),
                                          (1.7, TypeError), ("3", TypeError)])
def test_the_step_count_setter_checks_its_value(steps, error):
    model = make_model(optim.Adam(lr=0.01))
    with pytest.raises(error, match="optimizer_steps: steps must"):
        model.optimizer_steps = steps
    assert model.optimizer_steps == 0
    model.optimizer_steps = np.int64(2**62)  # the largest: every later update still counts
    model.optimizer.step()
    assert model.optimizer_steps == 2**62 + 1

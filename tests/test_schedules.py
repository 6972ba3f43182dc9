"""mc.schedules: closed forms, agreement with torch.optim.lr_scheduler, composition, state,
effect on training, and argument errors."""
import json
import math

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import schedules as S


def optimizer(lr=0.5, compiled=True):
    opt = mc.optim.SGD(lr=lr)
    if compiled:
        model = mc.Sequential([mc.Dense(2, 1)], seed=0)
        model.compile(loss="mse", optimizer=opt)
    return opt


def run(sched, steps):
    lrs = [sched.get_last_lr()[0]]
    for _ in range(steps):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[-1] == sched.optimizer.lr == sched.optimizer.param_groups[0]["lr"]
    return lrs


def test_closed_forms_exactly():
    base = 0.5
    assert run(S.StepLR(optimizer(), 3, gamma=0.5), 10) == [base * 0.5 ** (t // 3)
                                                             for t in range(11)]
    assert run(S.ExponentialLR(optimizer(), 0.9), 10) == [base * 0.9 ** t for t in range(11)]
    assert run(S.CosineAnnealingLR(optimizer(), 7, eta_min=0.01), 14) == [
        0.01 + (base - 0.01) * (1 + math.cos(math.pi * t / 7)) / 2 for t in range(15)]
    assert run(S.LinearWarmup(optimizer(), 4, start_factor=0.25), 8) == [
        base * (0.25 + 0.75 * min(t, 4) / 4) for t in range(9)]
    one = run(S.OneCycleLR(optimizer(), max_lr=2.0, total_steps=20, pct_start=0.25), 19)
    assert one[0] == pytest.approx(2.0 / 25, rel=1e-14) and one[4] == 2.0
    assert one[19] == pytest.approx(2.0 / 25 / 1e4)
    assert np.argmax(one) == 4 and np.all(np.diff(one[4:]) < 0) and np.all(np.diff(one[:5]) > 0)


def test_base_lr_is_recorded_and_step_zero_applies():
    opt = optimizer(0.3)
    sched = S.LinearWarmup(opt, 3, start_factor=0.5)
    assert sched.base_lrs == [0.3] and sched.last_epoch == 0
    assert opt.lr == 0.15 == sched.get_last_lr()[0]
    sched.step()
    assert sched.last_epoch == 1


TORCH_CASES = {
    "step": (lambda o: S.StepLR(o, 3, 0.5), lambda T, o: T.StepLR(o, 3, 0.5), 15),
    "exp": (lambda o: S.ExponentialLR(o, 0.9), lambda T, o: T.ExponentialLR(o, 0.9), 15),
    "cosine": (lambda o: S.CosineAnnealingLR(o, 7, 0.01),
               lambda T, o: T.CosineAnnealingLR(o, 7, 0.01), 20),
    "warmup": (lambda o: S.LinearWarmup(o, 5, 0.1), lambda T, o: T.LinearLR(o, 0.1, 1.0, 5), 9),
    "onecycle-cos": (lambda o: S.OneCycleLR(o, 2.0, 20),
                     lambda T, o: T.OneCycleLR(o, 2.0, total_steps=20, cycle_momentum=False), 20),
    "onecycle-linear": (
        lambda o: S.OneCycleLR(o, 1.0, 30, pct_start=0.4, anneal_strategy="linear",
                               div_factor=10, final_div_factor=100),
        lambda T, o: T.OneCycleLR(o, 1.0, total_steps=30, pct_start=0.4, cycle_momentum=False,
                                  anneal_strategy="linear", div_factor=10, final_div_factor=100),
        29),
    "sequential": (
        lambda o: S.SequentialLR(o, [S.LinearWarmup(o, 3, 0.2), S.CosineAnnealingLR(o, 6),
                                     S.ExponentialLR(o, 0.8)], [3, 9]),
        lambda T, o: T.SequentialLR(o, [T.LinearLR(o, 0.2, 1.0, 3), T.CosineAnnealingLR(o, 6),
                                        T.ExponentialLR(o, 0.8)], [3, 9]), 14),
    "chained": (
        lambda o: S.ChainedScheduler([S.LinearWarmup(o, 4, 0.25), S.ExponentialLR(o, 0.9),
                                      S.StepLR(o, 2, 0.5)]),
        lambda T, o: T.ChainedScheduler([T.LinearLR(o, 0.25, 1.0, 4), T.ExponentialLR(o, 0.9),
                                         T.StepLR(o, 2, 0.5)]), 12),
    "chained-cosine": (
        lambda o: S.ChainedScheduler([S.CosineAnnealingLR(o, 5, 0.05), S.ExponentialLR(o, 0.95)]),
        lambda T, o: T.ChainedScheduler([T.CosineAnnealingLR(o, 5, 0.05),
                                         T.ExponentialLR(o, 0.95)]), 12),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    ours, theirs, steps = TORCH_CASES[case]
    param = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([param], lr=0.5)
    tsched = theirs(torch.optim.lr_scheduler, topt)
    expected = [tsched.get_last_lr()[0]]
    for _ in range(steps):
        topt.step()
        tsched.step()
        expected.append(tsched.get_last_lr()[0])
    got = run(ours(optimizer(0.5)), steps)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-300)


def test_onecycle_refuses_to_run_past_its_steps():
    sched = S.OneCycleLR(optimizer(), max_lr=1.0, total_steps=5)
    run(sched, 5)
    with pytest.raises(ValueError, match="total_steps is 5"):
        sched.step()


@pytest.mark.parametrize("make", [
    lambda o: S.StepLR(o, 2, 0.3),
    lambda o: S.CosineAnnealingLR(o, 5, 1e-3),
    lambda o: S.OneCycleLR(o, 1.0, 30),
    lambda o: S.SequentialLR(o, [S.LinearWarmup(o, 2), S.ExponentialLR(o, 0.9)], [2]),
    lambda o: S.ChainedScheduler([S.LinearWarmup(o, 3), S.ExponentialLR(o, 0.9)]),
])
def test_state_dict_round_trip_continues_identically(make):
    opt = optimizer()
    sched = make(opt)
    run(sched, 4)
    state = json.loads(json.dumps(sched.state_dict()))  # JSON-serialisable
    expected = run(sched, 6)[1:]
    other_opt = optimizer()
    other = make(other_opt)
    other.load_state_dict(state)
    other_opt.lr = state["last_lr"][0]
    assert other.last_epoch == 4 and other.base_lrs == sched.base_lrs
    assert run(other, 6)[1:] == expected


def test_load_state_dict_rejects_another_kind():
    state = S.StepLR(optimizer(), 2).state_dict()
    with pytest.raises(ValueError, match="'StepLR' scheduler, not ExponentialLR"):
        S.ExponentialLR(optimizer(), 0.9).load_state_dict(state)
    opt = optimizer()
    seq = S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(opt, 3)], [4])
    bad = seq.state_dict()
    bad["schedulers"] = bad["schedulers"][:1]
    with pytest.raises(ValueError, match="member schedulers"):
        seq.load_state_dict(bad)


def test_schedule_drives_training():
    # fit with a per-epoch schedule equals train steps with the same learning rates
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    y = x @ np.array([1.0, -1.0, 0.5])

    def model():
        m = mc.Sequential([mc.Dense(3, 8), mc.Tanh(), mc.Dense(8, 1)], dtype="float64", seed=3)
        m.compile(loss="mse", optimizer=mc.optim.SGD(lr=0.1))
        return m

    a, b = model(), model()
    sched = S.StepLR(a.optimizer, 1, gamma=0.5)
    history = a.fit(x, y, epochs=3, batch_size=64, shuffle=False, verbose=0,
                    callbacks=[mc.callbacks.LearningRateScheduler(sched)])
    assert history.history["lr"] == [0.1, 0.05, 0.025]
    for lr in (0.1, 0.05, 0.025):
        b.optimizer.lr = lr
        b.train_step(x, y)
    assert np.array_equal(a.params_view(), b.params_view())


@pytest.mark.parametrize("make,match", [
    (lambda o: S.StepLR(o, 0), "step_size"),
    (lambda o: S.StepLR(o, 2, gamma=0), "gamma"),
    (lambda o: S.ExponentialLR(o, -0.5), "gamma"),
    (lambda o: S.CosineAnnealingLR(o, 0), "T_max"),
    (lambda o: S.CosineAnnealingLR(o, 5, eta_min=-1e-3), "eta_min"),
    (lambda o: S.LinearWarmup(o, 0), "warmup_steps.*no steps"),
    (lambda o: S.LinearWarmup(o, 3, start_factor=0), "start_factor"),
    (lambda o: S.OneCycleLR(o, 1.0, 0), "total_steps.*no steps"),
    (lambda o: S.OneCycleLR(o, -1.0, 10), "max_lr"),
    (lambda o: S.OneCycleLR(o, 1.0, 10, pct_start=1.5), "pct_start"),
    (lambda o: S.OneCycleLR(o, 1.0, 10, anneal_strategy="exp"), "anneal_strategy"),
    (lambda o: S.OneCycleLR(o, 1.0, 10, div_factor=0), "div_factor"),
    (lambda o: S.SequentialLR(o, [], []), "empty"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 1), S.StepLR(o, 2)], []), "milestones"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 1), S.StepLR(o, 2), S.StepLR(o, 3)], [3, 2]),
     "milestones"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 1), S.StepLR(optimizer(), 2)], [2]),
     "different optimizer"),
    (lambda o: S.ChainedScheduler([]), "empty"),
])
def test_invalid_arguments_raise_value_error_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make(optimizer())


def test_type_errors():
    with pytest.raises(TypeError, match="mlpcore.optim.Optimizer"):
        S.StepLR("adam", 2)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="mlpcore.optim.Optimizer"):
        S.ExponentialLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 0.9)
    with pytest.raises(TypeError, match="step_size must be an int"):
        S.StepLR(optimizer(), 2.5)
    with pytest.raises(TypeError, match=r"schedulers\[0\]"):
        S.ChainedScheduler(["not a scheduler"])


def test_works_on_an_optimizer_before_compile():
    opt = optimizer(0.2, compiled=False)
    sched = S.ExponentialLR(opt, 0.5)
    sched.step()
    assert opt.lr == 0.1
    model = mc.Sequential([mc.Dense(2, 1)])
    model.compile(loss="mse", optimizer=opt)
    assert model.optimizer.lr == 0.1


# each value is checked when the state is loaded (they failed at the next fit's first step)
@pytest.mark.parametrize("change, error, match", [
    ({"base_lrs": []}, ValueError, "base_lrs must be a list of one learning rate"),
    ({"base_lrs": [float("nan")]}, ValueError, r"base_lrs\[0\] must be finite"),
    ({"last_lr": [-1.0]}, ValueError, r"last_lr\[0\] must be a non-negative learning rate"),
    ({"last_epoch": 10**20}, ValueError, "last_epoch must be at most"),
    ({"last_epoch": "3"}, TypeError, "last_epoch must be an int"),
    ({"gamma": "x"}, TypeError, "gamma must be a number"),
    ({"gamma": -5}, ValueError, "gamma must be positive"),
    ({"step_size": 0}, ValueError, "step_size must be a positive int"),
])
def test_load_state_dict_checks_every_value_and_changes_nothing(change, error, match):
    sched = S.StepLR(optimizer(), step_size=2, gamma=0.5)
    sched.step()
    before = sched.state_dict()
    with pytest.raises(error, match=r"load_state_dict \(StepLR state\): .*" + match):
        sched.load_state_dict({**before, **change})
    assert sched.state_dict() == before

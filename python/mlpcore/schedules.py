"""Learning-rate schedules in the style of ``torch.optim.lr_scheduler``, on mlpcore optimizers.

A scheduler is built on an optimizer, records its base learning rate and, like PyTorch, sets
the learning rate of step 0 at construction; each :meth:`~LRScheduler.step` advances one step
(an epoch or a batch: see :class:`mlpcore.callbacks.LearningRateScheduler`) and writes the new
rate to ``optimizer.param_groups[0]["lr"]``, which the model sends to the native optimizer
before its next native call.

A scheduler on its own sets the rate from its closed form (the formulas below, as PyTorch
documents them), so ``get_last_lr()`` equals the formula at ``last_epoch`` exactly. Inside a
:class:`ChainedScheduler` the members switch to PyTorch's chainable (multiplicative) updates
so that their effects compose. Schedulers hold only plain numbers: ``state_dict()`` is
JSON-serialisable and is stored by :func:`mlpcore.save_checkpoint`.

==================  ===========================================================================
StepLR              ``base * gamma ** (t // step_size)``
ExponentialLR       ``base * gamma ** t``
CosineAnnealingLR   ``eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2``
LinearWarmup        ``base * (f + (1 - f) * min(t, warmup_steps) / warmup_steps)``,
                    ``f = start_factor``
OneCycleLR          warm-up from ``max_lr / div_factor`` to ``max_lr`` then anneal to
                    ``max_lr / (div_factor * final_div_factor)`` (PyTorch's two-phase form)
SequentialLR        one scheduler after another, switching at ``milestones``
ChainedScheduler    all members step together; their factors multiply
==================  ===========================================================================
"""
from __future__ import annotations

import bisect
import math
import weakref
from typing import Any, Dict, List, Sequence

from ._validation import check_above, check_finite, check_instance, check_int, check_list_of
from .optim import MAX_STEPS, Optimizer

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearWarmup",
           "OneCycleLR", "SequentialLR", "ChainedScheduler"]

# The learning rate an optimizer had when its first scheduler was built (PyTorch keeps it as
# param_groups[0]["initial_lr"]; here it stays out of the hyper-parameters that get saved).
_INITIAL_LR: "weakref.WeakKeyDictionary[Any, float]" = weakref.WeakKeyDictionary()


def _check_optimizer(optimizer, owner: str):
    return check_instance(optimizer, Optimizer, owner=owner, name="optimizer",
                          expected="an mlpcore.optim.Optimizer")


class LRScheduler:
    """Base class. Subclasses define ``_closed_form(t)`` (the rate at step ``t``) and
    ``_chainable(lr, t)`` (PyTorch's recursive update from the current rate ``lr``)."""

    _hyper: Sequence[str] = ()

    def __init__(self, optimizer) -> None:
        self.optimizer = _check_optimizer(optimizer, type(self).__name__)
        if optimizer not in _INITIAL_LR:
            _INITIAL_LR[optimizer] = float(optimizer.lr)
        self.base_lrs: List[float] = [self._initial_lr()]
        self.last_epoch = -1
        self._chained = False
        self._last_lr: List[float] = [float(optimizer.lr)]
        self._initial_step()

    def __setstate__(self, state) -> None:
        # an unpickled optimizer has no recorded initial rate yet: it is this base rate
        self.__dict__.update(state)
        _INITIAL_LR.setdefault(self.optimizer, self.base_lrs[0])

    def _initial_lr(self) -> float:
        return _INITIAL_LR[self.optimizer]

    @property
    def base_lr(self) -> float:
        return self.base_lrs[0]

    def _initial_step(self) -> None:
        # Step 0 uses the chainable form, as PyTorch's construction does: with no other
        # scheduler on the optimizer it equals the closed form, and built after one it composes.
        self.last_epoch = 0
        self._set(self._chainable(float(self.optimizer.lr), 0))

    def _set(self, lr: float) -> None:
        self.optimizer.lr = lr
        self._last_lr = [float(self.optimizer.lr)]

    def step(self) -> None:
        """Advance one step (an epoch or a batch) and set the optimizer's learning rate."""
        self.last_epoch += 1
        t = self.last_epoch
        self._set(self._chainable(float(self.optimizer.lr), t) if self._chained
                  else self._closed_form(t))

    def _step_to(self, t: int) -> None:
        """Jump to step ``t`` with the closed form (SequentialLR's switch, torch's step(0))."""
        self.last_epoch = t
        self._set(self._closed_form(t))

    def get_last_lr(self) -> List[float]:
        """The learning rate set by the last step, as a one-element list (PyTorch's shape)."""
        return list(self._last_lr)

    def _closed_form(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _chainable(self, lr: float, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_chained(self, chained: bool) -> None:
        self._chained = chained

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Counters, base rate and hyper-parameters: plain numbers, JSON-serialisable."""
        return {"type": type(self).__name__, "last_epoch": self.last_epoch,
                "base_lrs": list(self.base_lrs), "last_lr": list(self._last_lr),
                **{k: getattr(self, k) for k in self._hyper}}

    def _check_state(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            found = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"load_state_dict: the state is for a {found!r} scheduler, "
                             f"not {type(self).__name__}")
        missing = [k for k in ("last_epoch", "base_lrs", "last_lr", *self._hyper) if k not in state]
        if missing:
            raise ValueError(f"load_state_dict: the {type(self).__name__} state lacks {missing}")
        # every value checked here, not at the first step of a later fit
        owner = f"load_state_dict ({type(self).__name__} state)"
        check_int(state["last_epoch"], owner=owner, name="last_epoch", low=-1,
                  expected=">= -1", high=MAX_STEPS)
        for key in ("base_lrs", "last_lr"):
            rates = state[key]
            if not isinstance(rates, (list, tuple)) or len(rates) != 1:
                raise ValueError(f"{owner}: {key} must be a list of one learning rate, "
                                 f"got {rates!r:.60}")
            check_above(rates[0], owner=owner, name=f"{key}[0]", low=0.0, strict=False,
                        expected="a non-negative learning rate")
        if self._hyper:  # checked by the constructor itself, on a throwaway optimizer
            hyper = {k: tuple(v) if isinstance(v, list) else v
                     for k, v in ((k, state[k]) for k in self._hyper)}
            try:
                type(self)(Optimizer(lr=float(state["base_lrs"][0])), **hyper)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{owner}: {exc}") from None

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore counters and hyper-parameters (the optimizer's rate is not touched, as in
        PyTorch; :func:`mlpcore.load_checkpoint` restores it from the checkpoint)."""
        self._check_state(state)
        self._load(state)

    def _load(self, state: Dict[str, Any]) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._last_lr = [float(v) for v in state["last_lr"]]
        for k in self._hyper:
            value = state[k]
            setattr(self, k, tuple(value) if isinstance(value, list) else value)
        _INITIAL_LR[self.optimizer] = self.base_lrs[0]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({args}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` steps:
    ``base * gamma ** (t // step_size)``."""

    _hyper = ("step_size", "gamma")

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1) -> None:
        _check_optimizer(optimizer, "StepLR")
        self.step_size = check_int(step_size, owner="StepLR", name="step_size")
        self.gamma = check_above(gamma, owner="StepLR", name="gamma", low=0.0,
                                 expected="positive")
        super().__init__(optimizer)

    def _closed_form(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)

    def _chainable(self, lr: float, t: int) -> float:
        return lr * self.gamma if t > 0 and t % self.step_size == 0 else lr


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every step: ``base * gamma ** t``."""

    _hyper = ("gamma",)

    def __init__(self, optimizer, gamma: float) -> None:
        _check_optimizer(optimizer, "ExponentialLR")
        self.gamma = check_above(gamma, owner="ExponentialLR", name="gamma", low=0.0,
                                 expected="positive")
        super().__init__(optimizer)

    def _closed_form(self, t: int) -> float:
        return self.base_lr * self.gamma ** t

    def _chainable(self, lr: float, t: int) -> float:
        return lr * self.gamma if t > 0 else lr


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing without restarts (SGDR's curve, PyTorch's closed form):
    ``eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2``; past ``T_max`` the curve
    rises again, as in PyTorch."""

    _hyper = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0) -> None:
        _check_optimizer(optimizer, "CosineAnnealingLR")
        self.T_max = check_int(T_max, owner="CosineAnnealingLR", name="T_max")
        self.eta_min = check_above(eta_min, owner="CosineAnnealingLR", name="eta_min", low=0.0,
                                   strict=False, expected="a non-negative learning rate")
        super().__init__(optimizer)

    def _closed_form(self, t: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * t / self.T_max)) / 2

    def _chainable(self, lr: float, t: int) -> float:
        T, eta = self.T_max, self.eta_min
        if t == 0:
            return lr
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - eta) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (lr - eta) + eta)


class LinearWarmup(LRScheduler):
    """Linear warm-up to the base rate over ``warmup_steps`` steps, then constant (PyTorch's
    ``LinearLR(start_factor, end_factor=1.0, total_iters=warmup_steps)``):
    ``base * (start_factor + (1 - start_factor) * min(t, warmup_steps) / warmup_steps)``."""

    _hyper = ("warmup_steps", "start_factor")

    def __init__(self, optimizer, warmup_steps: int, start_factor: float = 1.0 / 3) -> None:
        _check_optimizer(optimizer, "LinearWarmup")
        self.warmup_steps = check_int(
            warmup_steps, owner="LinearWarmup", name="warmup_steps",
            expected="a positive int (a schedule with no steps has nothing to warm up)")
        start_factor = check_finite(start_factor, owner="LinearWarmup", name="start_factor",
                                    expected="finite")
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearWarmup: start_factor must lie in (0, 1], got {start_factor}")
        self.start_factor = start_factor
        super().__init__(optimizer)

    def _closed_form(self, t: int) -> float:
        sf = self.start_factor
        return self.base_lr * (sf + (1.0 - sf) * min(self.warmup_steps, t) / self.warmup_steps)

    def _chainable(self, lr: float, t: int) -> float:
        sf, n = self.start_factor, self.warmup_steps
        if t == 0:
            return lr * sf
        if t > n:
            return lr
        return lr * (1.0 + (1.0 - sf) / (n * sf + (t - 1) * (1.0 - sf)))


class OneCycleLR(LRScheduler):
    """The 1cycle policy's learning rate (PyTorch's two-phase ``OneCycleLR``): from
    ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of ``total_steps``,
    then down to ``max_lr / (div_factor * final_div_factor)``, by cosine or linear annealing.

    Only the learning rate cycles: unlike PyTorch there is no momentum / beta1 cycling
    (``cycle_momentum``). Step it once per batch; like PyTorch it raises ValueError when
    stepped more than ``total_steps`` times. It sets the optimizer's rate absolutely (its base
    rate is ``max_lr / div_factor``), also inside a ChainedScheduler.
    """

    _hyper = ("max_lr", "total_steps", "pct_start", "anneal_strategy", "div_factor",
              "final_div_factor")

    def __init__(self, optimizer, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> None:
        _check_optimizer(optimizer, "OneCycleLR")
        self.max_lr = check_above(max_lr, owner="OneCycleLR", name="max_lr", low=0.0,
                                  strict=False, expected="a non-negative learning rate")
        self.total_steps = check_int(total_steps, owner="OneCycleLR", name="total_steps",
                                     expected="a positive int (a schedule with no steps)")
        pct_start = check_finite(pct_start, owner="OneCycleLR", name="pct_start",
                                 expected="finite")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must lie in [0, 1], got {pct_start}")
        self.pct_start = pct_start
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError("OneCycleLR: anneal_strategy must be 'cos' or 'linear', "
                             f"got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.div_factor = check_above(div_factor, owner="OneCycleLR", name="div_factor",
                                      low=0.0, expected="positive")
        self.final_div_factor = check_above(final_div_factor, owner="OneCycleLR",
                                            name="final_div_factor", low=0.0,
                                            expected="positive")
        super().__init__(optimizer)

    def __setstate__(self, state) -> None:
        # an unpickled optimizer has no recorded initial rate yet: it is this base rate
        self.__dict__.update(state)
        _INITIAL_LR.setdefault(self.optimizer, self.base_lrs[0])

    def _initial_lr(self) -> float:
        return self.max_lr / self.div_factor

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return max(0.0, (end - start) * pct + start)  # past the end PyTorch could go negative

    def _closed_form(self, t: int) -> float:
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {t} times; total_steps is "
                             f"{self.total_steps}")
        initial = self.max_lr / self.div_factor
        min_lr = initial / self.final_div_factor
        phases = [(float(self.pct_start * self.total_steps) - 1, initial, self.max_lr),
                  (float(self.total_steps - 1), self.max_lr, min_lr)]
        start_step = 0.0
        for i, (end_step, lo, hi) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                span = end_step - start_step
                pct = (t - start_step) / span if span != 0 else 1.0
                return self._anneal(lo, hi, pct)
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover

    def _chainable(self, lr: float, t: int) -> float:
        return self._closed_form(t)


def _check_members(schedulers, owner: str, optimizer=None) -> List[LRScheduler]:
    schedulers = check_list_of(schedulers, LRScheduler, owner=owner, name="schedulers",
                               expected="a list of schedulers", item="an mlpcore scheduler")
    if len(schedulers) == 0:
        raise ValueError(f"{owner}: schedulers is empty (a schedule with no steps)")
    opt = schedulers[0].optimizer if optimizer is None else optimizer
    for i, s in enumerate(schedulers):
        if s.optimizer is not opt:
            raise ValueError(f"{owner}: schedulers[{i}] is bound to a different optimizer "
                             "than the others; all must share one")
    return list(schedulers)


def _check_composite_state(sched, state: Dict[str, Any]) -> None:
    LRScheduler._check_state(sched, state)
    subs = state.get("schedulers")
    if not isinstance(subs, list) or len(subs) != len(sched._schedulers):
        raise ValueError(f"load_state_dict: the state holds "
                         f"{len(subs) if isinstance(subs, list) else 'no'} member schedulers, "
                         f"this {type(sched).__name__} has {len(sched._schedulers)}")
    for s, sub in zip(sched._schedulers, subs):
        s._check_state(sub)


class SequentialLR(LRScheduler):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` from its step 0,
    and so on (PyTorch's ``SequentialLR``): ``len(milestones) == len(schedulers) - 1``."""

    def __init__(self, optimizer, schedulers, milestones) -> None:
        self.optimizer = _check_optimizer(optimizer, "SequentialLR")
        self._schedulers = _check_members(schedulers, "SequentialLR", optimizer)
        try:
            milestones = list(milestones)
        except TypeError:
            raise TypeError("SequentialLR: milestones must be a list of ints") from None
        if len(milestones) != len(self._schedulers) - 1:
            raise ValueError(f"SequentialLR: milestones must have len(schedulers) - 1 = "
                             f"{len(self._schedulers) - 1} entries, got {len(milestones)}")
        for m in milestones:
            check_int(m, owner="SequentialLR", name="milestones")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"SequentialLR: milestones must increase strictly, got {milestones}")
        self._milestones = [int(m) for m in milestones]
        self._chained = False
        self.base_lrs = [_INITIAL_LR.get(optimizer, float(optimizer.lr))]
        # as PyTorch: back to the initial rate, undo the members' initial steps, and take the
        # first member's step 0 again
        optimizer.lr = self.base_lrs[0]
        for s in self._schedulers:
            s.last_epoch -= 1
        self._schedulers[0]._initial_step()
        self.last_epoch = 0
        self._last_lr = self._schedulers[0].get_last_lr()

    @property
    def schedulers(self) -> List[LRScheduler]:
        return list(self._schedulers)

    @property
    def milestones(self) -> List[int]:
        return list(self._milestones)

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect.bisect_right(self._milestones, self.last_epoch)
        sched = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            sched._step_to(0)
        else:
            sched.step()
        self._last_lr = sched.get_last_lr()

    def _step_to(self, t: int) -> None:
        if t != 0:
            raise ValueError("SequentialLR can only restart at step 0")
        self.last_epoch = 0
        self.optimizer.lr = self.base_lrs[0]
        for s in self._schedulers:
            s.last_epoch = -1
        self._schedulers[0]._step_to(0)
        self._last_lr = self._schedulers[0].get_last_lr()

    def _set_chained(self, chained: bool) -> None:
        self._chained = chained
        for s in self._schedulers:
            s._set_chained(chained)

    def state_dict(self) -> Dict[str, Any]:
        return {"type": "SequentialLR", "last_epoch": self.last_epoch,
                "base_lrs": list(self.base_lrs), "last_lr": list(self._last_lr),
                "milestones": list(self._milestones),
                "schedulers": [s.state_dict() for s in self._schedulers]}

    def _check_state(self, state: Dict[str, Any]) -> None:
        _check_composite_state(self, state)
        if not isinstance(state.get("milestones"), list):
            raise ValueError("load_state_dict: the SequentialLR state lacks its milestones")

    def _load(self, state: Dict[str, Any]) -> None:
        super()._load(state)
        self._milestones = [int(m) for m in state["milestones"]]
        for s, sub in zip(self._schedulers, state["schedulers"]):
            s._load(sub)

    def __repr__(self) -> str:
        return (f"SequentialLR({self._schedulers!r}, milestones={self._milestones}, "
                f"last_epoch={self.last_epoch})")


class ChainedScheduler(LRScheduler):
    """Step every member at each step, in order (PyTorch's ``ChainedScheduler``): their
    multiplicative factors compose, e.g. a warm-up times an exponential decay. Members use
    PyTorch's chainable (recursive) updates while chained."""

    def __init__(self, schedulers, optimizer=None) -> None:
        if optimizer is not None:
            _check_optimizer(optimizer, "ChainedScheduler")
        self._schedulers = _check_members(schedulers, "ChainedScheduler", optimizer)
        self.optimizer = self._schedulers[0].optimizer
        self._chained = True
        for s in self._schedulers:
            s._set_chained(True)
        self.base_lrs = [_INITIAL_LR.get(self.optimizer, float(self.optimizer.lr))]
        self.last_epoch = 0
        self._last_lr = [float(self.optimizer.lr)]

    @property
    def schedulers(self) -> List[LRScheduler]:
        return list(self._schedulers)

    def step(self) -> None:
        self.last_epoch += 1
        for s in self._schedulers:
            s.step()
        self._last_lr = [float(self.optimizer.lr)]

    def _step_to(self, t: int) -> None:
        raise ValueError("a ChainedScheduler cannot be a member of a SequentialLR")

    def _set_chained(self, chained: bool) -> None:
        for s in self._schedulers:
            s._set_chained(True)

    def state_dict(self) -> Dict[str, Any]:
        return {"type": "ChainedScheduler", "last_epoch": self.last_epoch,
                "base_lrs": list(self.base_lrs), "last_lr": list(self._last_lr),
                "schedulers": [s.state_dict() for s in self._schedulers]}

    def _check_state(self, state: Dict[str, Any]) -> None:
        _check_composite_state(self, state)

    def _load(self, state: Dict[str, Any]) -> None:
        LRScheduler._load(self, state)
        for s, sub in zip(self._schedulers, state["schedulers"]):
            s._load(sub)

    def __repr__(self) -> str:
        return f"ChainedScheduler({self._schedulers!r}, last_epoch={self.last_epoch})"

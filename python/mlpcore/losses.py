"""Losses by name: mean reduction, PyTorch semantics, computed natively.

=================  ==============================  =====================================
name               prediction                      target
=================  ==============================  =====================================
mse                any                             same shape as the output
mae (alias l1)     any                             same shape as the output
huber              any                             same shape; ``huber_delta`` (1.0)
bce                probabilities in [0, 1]         values in [0, 1], same shape
bce_with_logits    logits (sigmoid fused in)       values in [0, 1], same shape
cross_entropy      logits (softmax fused in)       class labels (n,) or probabilities (n, k)
=================  ==============================  =====================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

__all__ = ["LossInfo", "LOSSES", "get_loss"]


@dataclass(frozen=True)
class LossInfo:
    name: str
    code: int                 # native loss kind, see cpp/kernels/losses.hpp
    classification: bool      # evaluate() reports accuracy
    takes_labels: bool        # accepts integer class labels of shape (n,)
    targets_in_unit_range: bool


LOSSES: Dict[str, LossInfo] = {
    "mse": LossInfo("mse", 0, False, False, False),
    "mae": LossInfo("mae", 1, False, False, False),
    "huber": LossInfo("huber", 2, False, False, False),
    "bce": LossInfo("bce", 3, True, False, True),
    "bce_with_logits": LossInfo("bce_with_logits", 4, True, False, True),
    "cross_entropy": LossInfo("cross_entropy", 5, True, True, False),
}
_ALIASES = {"l1": "mae", "mean_squared_error": "mse", "mean_absolute_error": "mae"}


def get_loss(name: str) -> LossInfo:
    """The loss called ``name``; raises ValueError listing the valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"compile: loss must be a str, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in LOSSES:
        valid = ", ".join(sorted([*LOSSES, *_ALIASES]))
        raise ValueError(f"Unknown loss {name!r}; valid names: {valid}")
    return LOSSES[key]

"""mlpcore's own exceptions (the other errors are Python's TypeError, ValueError, OSError)."""
from __future__ import annotations

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf loss or gradient; the weights hold the last finite step."""

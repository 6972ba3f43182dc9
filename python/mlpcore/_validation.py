"""Every check of user input, in one place: arrays are normalised once at the boundary (dtype,
shape, order, finiteness, label range), scalars and options are checked by keyword-only helpers.

Errors name the owner (the function or class called) and the argument: TypeError for types and
dtypes, ValueError for shapes and values, with what was expected and what came.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Optional

import numpy as np

from . import _core


# --- memory ----------------------------------------------------------------------------------
def physical_memory() -> Optional[int]:
    """Bytes of RAM of this machine (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


def beyond_memory(n_bytes: int) -> Optional[int]:
    """The machine's RAM in bytes if an allocation of ``n_bytes`` is larger, else None.
    Overcommit grants such a request, and the first touch of its pages has the kernel kill the
    process (or a neighbour): it must be refused before it is made."""
    total = physical_memory()
    return total if total is not None and n_bytes > total else None


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"


# --- scalars ---------------------------------------------------------------------------------
def is_int(value) -> bool:
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """True for Python and NumPy real numbers (ints included), False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def require(ok: bool, *, owner: str, name: str, expected: str, value: Any) -> None:
    """ValueError ``"{owner}: {name} must be {expected}, got {value}"`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{owner}: {name} must be {expected}, got {value}")


def check_int(value, *, owner: str, name: str, low: Optional[int] = 1,
              expected: str = "a positive int", kind: str = "an int",
              high: Optional[int] = None) -> int:
    """``value`` as an int; TypeError ``"... must be {kind}, got <type>"`` unless it is an
    integer, ValueError ``"... must be {expected}, got {value}"`` when it is below ``low``
    (None: no bound), ``"... must be at most {high}, got {value}"`` above ``high``."""
    if not is_int(value):
        raise TypeError(f"{owner}: {name} must be {kind}, got {type(value).__name__}")
    require(low is None or value >= low, owner=owner, name=name, expected=expected, value=value)
    require(high is None or value <= high, owner=owner, name=name, expected=f"at most {high}",
            value=value)
    return int(value)


def check_real(value, *, owner: str, name: str, kind: str = "a number") -> float:
    """``value`` as a float; TypeError ``"... must be {kind}, got <type>"`` unless it is a real
    number."""
    if not is_real(value):
        raise TypeError(f"{owner}: {name} must be {kind}, got {type(value).__name__}")
    return float(value)


def check_finite(value, *, owner: str, name: str, positive: bool = False,
                 non_negative: bool = False, expected: Optional[str] = None) -> float:
    """A finite real number (optionally > 0 or >= 0) as a float; ``expected`` overrides the
    phrase of the ValueError."""
    value = check_real(value, owner=owner, name=name)
    ok = math.isfinite(value) and not (positive and value <= 0) \
        and not (non_negative and value < 0)
    if expected is None:
        expected = ("a positive finite number" if positive else
                    "a non-negative finite number" if non_negative else "a finite number")
    require(ok, owner=owner, name=name, expected=expected, value=value)
    return value


def check_above(value, *, owner: str, name: str, low: float, strict: bool = True,
                expected: str) -> float:
    """A real number that is finite (ValueError ``"... must be finite"``) and above ``low``
    (``> low`` when ``strict``, else ``>= low``; ValueError ``expected``)."""
    value = check_finite(value, owner=owner, name=name, expected="finite")
    require(value > low if strict else value >= low, owner=owner, name=name, expected=expected,
            value=value)
    return value


def check_positive_finite_or_none(value, *, owner: str, name: str) -> float:
    """An optional positive finite threshold as a float, 0.0 for None (off)."""
    if value is None:
        return 0.0
    check_real(value, owner=owner, name=name, kind="a number or None")
    require(float(value) > 0 and math.isfinite(value), owner=owner, name=name,
            expected="positive and finite", value=value)
    return float(value)


def check_hyper(value, *, what: str) -> float:
    """A non-negative finite optimizer hyper-parameter, with torch.optim's messages
    (``"Invalid learning rate: -1.0"``)."""
    if not is_real(value):
        raise TypeError(f"Invalid {what}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not (value >= 0.0) or math.isinf(value):
        raise ValueError(f"Invalid {what}: {value}")
    return value


def check_betas(betas) -> tuple:
    """Adam's pair of coefficients, each in [0, 1), with torch.optim's messages."""
    try:
        b1, b2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise TypeError(f"Invalid betas: expected a pair of numbers, got {betas!r}") from None
    if not 0.0 <= b1 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {b1}")
    if not 0.0 <= b2 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {b2}")
    return (b1, b2)


def check_choice(value, *, owner: str, name: str, choices, expected: str) -> Any:
    """``value`` if it is one of ``choices``; ValueError ``"... must be {expected}, got
    {value!r}"`` otherwise."""
    require(value in choices, owner=owner, name=name, expected=expected, value=repr(value))
    return value


def check_instance(value, cls, *, owner: str, name: str, expected: str) -> Any:
    """``value`` if it is a ``cls``; TypeError ``"... must be {expected}, got <type>"``."""
    if not isinstance(value, cls):
        raise TypeError(f"{owner}: {name} must be {expected}, got {type(value).__name__}")
    return value


def check_list_of(values, cls, *, owner: str, name: str, expected: str, item: str) -> list:
    """A list or tuple whose every item is a ``cls`` (a single ``cls`` is refused too)."""
    if isinstance(values, cls) or not isinstance(values, (list, tuple)):
        raise TypeError(f"{owner}: {name} must be {expected}, got {type(values).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, cls):
            raise TypeError(f"{owner}: {name}[{i}] must be {item}, got {type(value).__name__}")
    return list(values)


# --- arrays ----------------------------------------------------------------------------------


def _as_numeric_array(value, func: str, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise ValueError(f"{func}: {name} could not be converted to an array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{func}: {name} must hold real numbers (bool, int or float), "
                        f"got dtype {arr.dtype}")
    return arr


def cast_checked(arr, dtype, name: str, func: Optional[str] = None) -> np.ndarray:
    """``arr`` as a C-contiguous array of ``dtype``; a finite value beyond that dtype's range
    (float64 data for a float32 model) is a ValueError naming ``name``, not an infinity."""
    with np.errstate(over="raise"):
        try:
            return np.ascontiguousarray(arr, dtype=dtype)
        except FloatingPointError:
            where = f"{func}: " if func else ""
            raise ValueError(f"{where}{name} holds values beyond the range of "
                             f"{np.dtype(dtype).name} (largest magnitude "
                             f"{np.abs(arr).max():.3g}): scale the data or use "
                             "dtype='float64'") from None


def cast_finite(arr: np.ndarray, dtype, name: str, func: Optional[str] = None) -> np.ndarray:
    """``arr`` as a C-contiguous array of ``dtype`` holding only finite values, else a
    ValueError naming ``name``: for a NaN or Inf, where the first one is; for a finite value
    beyond ``dtype``'s range, as :func:`cast_checked`. Float data that needs a copy is cast
    and checked in one native pass; an array already in that form is only checked."""
    dtype = np.dtype(dtype)
    if arr.dtype == dtype and arr.flags.c_contiguous:
        out, finite = arr, _core._all_finite(arr)
    elif arr.dtype in (np.float32, np.float64) and dtype in (np.float32, np.float64):
        out, finite = _core._to_float(arr, dtype == np.float64)
    else:  # integers and bools are finite; other floats take NumPy's cast and the check
        out = cast_checked(arr, dtype, name, func)
        finite = _core._all_finite(out)
    if not finite:
        if arr.dtype.kind == "f" and np.isfinite(arr).all():  # finite, beyond the range
            cast_checked(arr, dtype, name, func)
        where = f"{func}: " if func else ""
        raise ValueError(f"{where}{name} contains NaN or Inf (first at index "
                         f"[{_first_non_finite(arr)}])")
    return out


def _first_non_finite(arr: np.ndarray) -> str:
    bad = np.argwhere(~np.isfinite(arr))[0]
    return ", ".join(str(int(i)) for i in bad)


def check_values(value, *, shape, owner: str, name: str) -> np.ndarray:
    """An array assigned to a layer's ``owner.name``: real numbers, exactly ``shape``, finite."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{owner}.{name}: expected a real numeric array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{owner}.{name}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner}.{name}: values must be finite (no NaN or Inf)")
    return arr


def as_inputs(x, dtype: np.dtype, n_features: int, func: str, name: str = "x",
              known_finite: bool = False) -> np.ndarray:
    """``x`` as a C-contiguous (n, n_features) array of ``dtype``; copies only when needed.
    ``known_finite``: the caller checked x for NaN/Inf, and an x already in that form is
    not read again."""
    arr = _as_numeric_array(x, func, name)
    if arr.ndim != 2:
        hint = ""
        if arr.ndim == 1:  # one sample of n features, or n samples of one feature
            hint = (" (use x.reshape(-1, 1) for samples of a single feature)" if n_features == 1
                    else f" (use {name}.reshape(1, -1) for a single sample)")
        raise ValueError(f"{func}: {name} must be 2-D (n_samples, {n_features}), "
                         f"got shape {arr.shape}{hint}")
    if arr.shape[1] != n_features:
        raise ValueError(f"{func}: {name} must have {n_features} features (columns) as the "
                         f"model's first layer expects, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{func}: {name} is empty (0 samples)")
    if known_finite and arr.dtype == dtype and arr.flags.c_contiguous:
        return arr
    return cast_finite(arr, dtype, name, func)  # (native: no temporary the size of x)


def as_targets(y, loss, n_rows: int, n_outputs: int, dtype: np.dtype, func: str,
               name: str = "y") -> np.ndarray:
    """Targets in the form the native loss reads (``loss`` a :class:`mlpcore.losses.LossInfo`):
    int64 labels (n,) for cross_entropy with class labels, otherwise a C-contiguous
    (n, n_outputs) array of ``dtype``."""
    arr = _as_numeric_array(y, func, name)
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(f"{func}: {name} must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{func}: {name} has {arr.shape[0]} rows but x has {n_rows}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{func}: {name} contains NaN or Inf (first at index "
                         f"[{_first_non_finite(arr)}])")
    if loss.custom is not None:  # a custom loss receives the targets as given, in float
        return cast_checked(arr, dtype, name, func)
    if loss.takes_labels and arr.ndim == 1:
        return _as_labels(arr, n_outputs, func, name)
    if arr.ndim == 1:
        if n_outputs != 1:
            raise ValueError(f"{func}: {name} must have shape ({n_rows}, {n_outputs}) for loss "
                             f"{loss.name!r} (the model has {n_outputs} outputs), got {arr.shape}")
        arr = arr.reshape(-1, 1)
    if arr.shape[1] != n_outputs:
        raise ValueError(f"{func}: {name} must have shape ({n_rows}, {n_outputs}) to match the "
                         f"model's {n_outputs} outputs, got {arr.shape}")
    if loss.targets_in_unit_range and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{func}: {name} must lie in [0, 1] for loss {loss.name!r}, got values "
                         f"in [{arr.min()}, {arr.max()}]")
    if loss.takes_labels and ((arr < 0).any()):
        raise ValueError(f"{func}: class probabilities in {name} must be non-negative")
    return cast_checked(arr, dtype, name, func)


def _as_labels(arr: np.ndarray, n_classes: int, func: str, name: str) -> np.ndarray:
    if arr.dtype.kind == "f" and not np.all(arr == np.floor(arr)):
        raise ValueError(f"{func}: class labels in {name} must be whole numbers, "
                         f"got e.g. {arr[arr != np.floor(arr)][0]}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    low, high = arr.min(), arr.max()
    if low < 0 or high >= n_classes:
        bad = (low if low < 0 else high).item()
        raise ValueError(f"{func}: {name} holds class label {bad} outside the valid range "
                         f"[0, {n_classes - 1}] (the model has {n_classes} outputs)")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_sample_weight(w, n_rows: int, dtype: np.dtype, func: str,
                     name: str = "sample_weight"):
    """Per-sample weights as a C-contiguous (n,) array of ``dtype``, or None."""
    if w is None:
        return None
    arr = _as_numeric_array(w, func, name)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"{func}: {name} must have shape ({n_rows},) (one weight per sample), "
                         f"got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{func}: {name} must be finite and non-negative")
    return cast_checked(arr, dtype, name, func)

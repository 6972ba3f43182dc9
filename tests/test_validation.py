"""mlpcore._validation: the keyword-only checks every module uses, and their messages."""
import math

import numpy as np
import pytest

import mlpcore as mc
from mlpcore import _validation as v


def test_helpers_are_keyword_only():
    with pytest.raises(TypeError):
        v.check_int(3, "owner", "name")
    with pytest.raises(TypeError):
        v.check_finite(1.0, "owner", "name")


@pytest.mark.parametrize("value", [3, np.int32(3), np.int64(3)])
def test_check_int_accepts_python_and_numpy_ints(value):
    got = v.check_int(value, owner="f", name="n")
    assert got == 3 and type(got) is int


@pytest.mark.parametrize("value", [True, 3.0, "3", None, np.float64(3)])
def test_check_int_rejects_bools_and_non_ints(value):
    with pytest.raises(TypeError, match=rf"^f: n must be an int, got {type(value).__name__}$"):
        v.check_int(value, owner="f", name="n")


def test_check_int_bounds_and_messages():
    with pytest.raises(ValueError, match=r"^f: n must be a positive int, got 0$"):
        v.check_int(0, owner="f", name="n")
    with pytest.raises(ValueError, match=r"^Dense: in_features must be positive, got -1$"):
        v.check_int(-1, owner="Dense", name="in_features", expected="positive")
    with pytest.raises(ValueError, match=r"^cb: patience must be >= 0, got -1$"):
        v.check_int(-1, owner="cb", name="patience", low=0, expected=">= 0")
    assert v.check_int(-5, owner="f", name="n", low=None) == -5
    with pytest.raises(TypeError, match=r"^S: seed must be an int or None, got str$"):
        v.check_int("1", owner="S", name="seed", kind="an int or None")


def test_check_finite_messages():
    assert v.check_finite(np.float32(0.5), owner="L", name="p") == 0.5
    with pytest.raises(TypeError, match=r"^L: p must be a number, got bool$"):
        v.check_finite(True, owner="L", name="p")
    with pytest.raises(ValueError, match=r"^L: p must be a finite number, got inf$"):
        v.check_finite(math.inf, owner="L", name="p")
    with pytest.raises(ValueError, match=r"^L: eps must be a positive finite number, got 0.0$"):
        v.check_finite(0, owner="L", name="eps", positive=True)
    with pytest.raises(ValueError, match=r"^L: l2 must be a non-negative finite number, got -1"):
        v.check_finite(-1, owner="L", name="l2", non_negative=True)
    with pytest.raises(ValueError, match=r"^S: gamma must be finite, got nan$"):
        v.check_finite(math.nan, owner="S", name="gamma", expected="finite")


def test_check_above_checks_finiteness_first():
    with pytest.raises(ValueError, match=r"^S: gamma must be finite, got inf$"):
        v.check_above(math.inf, owner="S", name="gamma", low=0.0, expected="positive")
    with pytest.raises(ValueError, match=r"^S: gamma must be positive, got 0.0$"):
        v.check_above(0.0, owner="S", name="gamma", low=0.0, expected="positive")
    assert v.check_above(0, owner="S", name="lr", low=0.0, strict=False, expected="x") == 0.0


def test_optional_threshold_and_torch_style_hyper_parameters():
    assert v.check_positive_finite_or_none(None, owner="compile", name="clip_norm") == 0.0
    assert v.check_positive_finite_or_none(2, owner="compile", name="clip_norm") == 2.0
    with pytest.raises(TypeError, match=r"^compile: clip_norm must be a number or None, got str"):
        v.check_positive_finite_or_none("1", owner="compile", name="clip_norm")
    with pytest.raises(ValueError, match=r"^compile: clip_norm must be positive and finite"):
        v.check_positive_finite_or_none(-1, owner="compile", name="clip_norm")
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1.0$"):
        v.check_hyper(-1, what="learning rate")
    with pytest.raises(TypeError, match=r"^Invalid learning rate: expected a number, got str$"):
        v.check_hyper("x", what="learning rate")
    assert v.check_betas([0.5, 0.9]) == (0.5, 0.9)
    with pytest.raises(ValueError, match=r"^Invalid beta parameter at index 1: 1.0$"):
        v.check_betas((0.5, 1.0))


def test_choices_instances_and_lists():
    assert v.check_choice("min", owner="E", name="mode", choices=("min", "max"),
                          expected="'min' or 'max'") == "min"
    with pytest.raises(ValueError, match=r"^E: mode must be 'min' or 'max', got 'mid'$"):
        v.check_choice("mid", owner="E", name="mode", choices=("min", "max"),
                       expected="'min' or 'max'")
    with pytest.raises(TypeError, match=r"^f: x must be a list, got int$"):
        v.check_instance(3, list, owner="f", name="x", expected="a list")
    assert v.check_list_of((1, 2), int, owner="f", name="xs", expected="ints",
                           item="an int") == [1, 2]
    with pytest.raises(TypeError, match=r"^f: xs must be a list of ints, got int$"):
        v.check_list_of(1, int, owner="f", name="xs", expected="a list of ints", item="an int")
    with pytest.raises(TypeError, match=r"^f: xs\[1\] must be an int, got str$"):
        v.check_list_of([1, "2"], int, owner="f", name="xs", expected="ints", item="an int")


@pytest.mark.parametrize("name", ["x", "y", "sample_weight"])
def test_finite_values_beyond_float32_are_named_not_reported_as_inf(name):
    # a float32 model: finite float64 data past 3.4e38 used to become Inf in the cast, and was
    # reported as "NaN or Inf" (x) or as a non-finite loss (y, sample_weight)
    model = mc.Sequential([mc.Dense(3, 4), mc.ReLU(), mc.Dense(4, 1)], seed=0)
    model.compile(loss="mse")
    args = {"x": np.ones((10, 3)), "y": np.ones(10), "sample_weight": np.ones(10)}
    args[name] = args[name] * 1e39
    with pytest.raises(ValueError, match=rf"fit: {name} holds values beyond the range of "
                                         r"float32 \(largest magnitude 1e\+39\)"):
        model.fit(args["x"], args["y"], sample_weight=args["sample_weight"], epochs=1, verbose=0)


def test_as_inputs_known_finite_skips_only_the_check_of_an_array_in_final_form():
    # the estimators check X while casting it, then hand it to the model: not read twice
    x = np.ones((4, 3), np.float32)
    assert v.as_inputs(x, np.dtype(np.float32), 3, "fit", known_finite=True) is x
    x[1, 2] = np.nan  # (the caller's promise: the check is skipped, nothing copied)
    assert v.as_inputs(x, np.dtype(np.float32), 3, "fit", known_finite=True) is x
    with pytest.raises(ValueError, match="NaN or Inf"):
        v.as_inputs(x, np.dtype(np.float32), 3, "fit")
    # an array that still needs a cast or a copy is converted and checked as always
    with pytest.raises(ValueError, match="NaN or Inf"):
        v.as_inputs(x.astype(np.float64), np.dtype(np.float32), 3, "fit", known_finite=True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        v.as_inputs(np.asfortranarray(x), np.dtype(np.float32), 3, "fit", known_finite=True)
    with pytest.raises(ValueError, match="3 features"):
        v.as_inputs(np.ones((4, 2), np.float32), np.dtype(np.float32), 3, "fit",
                    known_finite=True)

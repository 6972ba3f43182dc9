"""The reductions of cpp/kernels/reductions.cpp (through the mc._core test hooks): the sum of
squares behind the gradient norm and the bias-gradient column sums, on every ISA copy."""
import numpy as np
import pytest

import mlpcore as mc
from helpers import kernel_isa, usable_isas

core = mc._core
# around the chunk (4096), lane (16) and parallel (2**16) boundaries of the implementation
SIZES = [0, 1, 15, 16, 17, 4095, 4096, 4097, 2**16 - 1, 2**16 + 5, 2**18 + 5]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_of_squares_matches_numpy_and_every_isa_copy_gives_the_same_bits(dtype):
    rng = np.random.default_rng(7)
    for n in SIZES:
        x = rng.normal(size=n).astype(dtype)
        want = float(np.sum(x.astype(np.float64) ** 2))
        results = {}
        for isa in usable_isas():
            with kernel_isa(isa):
                results[isa] = core._sum_of_squares(x)
        for isa, got in results.items():
            assert got == pytest.approx(want, rel=1e-12, abs=0.0), (n, isa)
        assert len(set(results.values())) == 1, (n, results)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_of_squares_is_thread_count_independent(dtype):
    x = np.random.default_rng(3).normal(size=2**19 + 3).astype(dtype)
    mc.set_num_threads(1)
    one = core._sum_of_squares(x)
    mc.set_num_threads(2)
    assert core._sum_of_squares(x) == one


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_sum_of_squares_of_non_finite_values_is_non_finite(bad):
    for isa in usable_isas():
        x = np.ones(5000, dtype=np.float32)
        x[4097] = bad
        with kernel_isa(isa):
            assert not np.isfinite(core._sum_of_squares(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (32, 16), (7, 300), (300, 513)])
def test_column_sums_match_numpy_and_every_isa_copy(dtype, shape):
    x = np.random.default_rng(5).normal(size=shape).astype(dtype)
    results = []
    for isa in usable_isas():
        with kernel_isa(isa):
            results.append(core._column_sums(x))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(results[0], x.astype(np.float64).sum(axis=0), rtol=tol, atol=tol)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_hooks_reject_other_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        core._sum_of_squares(np.ones(3, dtype=np.int64))

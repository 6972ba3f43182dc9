"""The reductions of cpp/kernels/reductions.cpp (through the mc._core test hooks): the sum of
squares behind the gradient norm, the bias-gradient column sums and the finiteness scan, on every
ISA copy (baseline, AVX2, AVX-512: kernels/isa_regions.hpp)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlpcore as mc
from helpers import kernel_isa, same_bits, usable_isas

core = mc._core
# around the chunk (4096), lane (16) and parallel (2**16) boundaries of the implementation
SIZES = [0, 1, 15, 16, 17, 4095, 4096, 4097, 2**16 - 1, 2**16 + 5, 2**18 + 5]


# The element-wise copy each GEMM ISA selects.
ELEMENTWISE_COPY = {"avx512": "avx512", "avx2": "avx2", "portable": "baseline"}


def test_the_isa_switch_selects_the_matching_elementwise_copy():
    for isa in usable_isas():
        with kernel_isa(isa):
            assert core._get_elementwise_isa() == ELEMENTWISE_COPY[isa]
            assert mc.kernel_info()["elementwise_isa"] == ELEMENTWISE_COPY[isa]


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_into_squares_is_the_sum_the_l2_term_and_sum_of_squares_on_every_isa_copy(dtype):
    # the sharded step's one pass over a layer's part of the gradients: the same bits as the
    # three passes it replaces (NumPy's element-wise add and product round as the kernel does)
    rng = np.random.default_rng(11)
    two_l2 = dtype(2 * 1e-3)
    for n in SIZES[:-1]:
        g, h, w = (rng.normal(size=n).astype(dtype) for _ in range(3))
        for n_w in sorted({0, n // 3, n - 1 if n else 0, n}):
            want = g + h
            want[:n_w] = want[:n_w] + two_l2 * w[:n_w]
            for isa in usable_isas():
                with kernel_isa(isa):
                    got, sq = core._add_into_squares(g, h, w, float(two_l2), n_w)
                    assert same_bits([got], [want]), (n, n_w, isa)
                    assert sq == core._sum_of_squares(want), (n, n_w, isa)
    with pytest.raises(ValueError, match="n_w"):
        core._add_into_squares(g, h, w, 1.0, n + 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_sum_of_squares_of_non_finite_values_is_non_finite(bad):
    for isa in usable_isas():
        x = np.ones(5000, dtype=np.float32)
        x[4097] = bad
        with kernel_isa(isa):
            assert not np.isfinite(core._sum_of_squares(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (32, 16), (7, 300), (3, 17), (300, 513), (1001, 37)])
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_is_right_on_every_isa_copy(dtype):
    for n in [1, 7, 15, 17, 33, 1001, 4097]:
        for where in sorted({0, n // 2, n - 1}):
            for bad in [None, np.nan, np.inf, -np.inf]:
                x = np.random.default_rng(n).normal(size=n).astype(dtype)
                if bad is not None:
                    x[where] = bad
                for isa in usable_isas():
                    with kernel_isa(isa):
                        assert core._all_finite(x) is (bad is None), (n, where, bad, isa)


FLOATS = [(np.float64, np.float32), (np.float32, np.float32), (np.float64, np.float64),
          (np.float32, np.float64)]


@pytest.mark.parametrize("src, dst", FLOATS, ids=lambda t: np.dtype(t).name)
def test_to_float_is_numpys_cast_on_every_isa_copy_and_thread_count(src, dst):
    # the threaded path starts at 8 chunks of 2**16; denormals and huge finite values included
    for n in [1, 17, 4097, 8 * 2**16 + 3]:
        x = np.random.default_rng(n).normal(size=n) * 10.0 ** np.random.default_rng(1).integers(
            -44, 37, size=n)
        x = x.astype(src)
        want = x.astype(dst)
        for isa in usable_isas():
            for threads in (1, 2):
                mc.set_num_threads(threads)
                with kernel_isa(isa):
                    got, finite = core._to_float(x.reshape(-1, 1), np.dtype(dst) == np.float64)
                assert finite is True and got.dtype == dst and got.shape == (n, 1)
                np.testing.assert_array_equal(got.ravel(), want, err_msg=f"{n} {isa} {threads}")
    mc.set_num_threads(2)


def test_to_float_keeps_subnormals_in_threads_started_inside_a_flushing_step():
    """OpenMP's worker threads start in the floating-point mode of the thread that creates
    them: a first parallel region inside a training step (subnormals flushed there) leaves them
    flushing. A cast of the user's data must keep subnormals in every thread anyway."""
    code = textwrap.dedent("""
        import numpy as np, mlpcore as mc
        mc.set_num_threads(2)
        model = mc.Sequential([mc.Dense(64, 64), mc.ReLU(), mc.Dense(64, 2)], seed=0)
        model.compile(loss="cross_entropy")
        x = np.ones((256, 64), np.float32)
        model.fit(x, np.zeros(256, np.int64), epochs=1, batch_size=256, verbose=0)  # 2 halves
        tiny = np.full(8 * 2**16 + 3, 1e-41)  # subnormal as float32
        got, finite = mc._core._to_float(tiny, False)
        print(finite, bool(np.array_equal(got, tiny.astype(np.float32))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert out.stdout.split() == ["True", "True"], out.stderr


@pytest.mark.parametrize("src, dst", FLOATS, ids=lambda t: np.dtype(t).name)
def test_to_float_reports_nan_inf_and_values_beyond_the_range(src, dst):
    n = 8 * 2**16 + 3
    bads = [np.nan, np.inf, -np.inf] + ([1e39, -3.5e38] if (src, dst) == (np.float64, np.float32)
                                        else [])
    for bad in bads:
        for where in (0, 2**16 + 1, n - 1):  # in the first, a middle and the last chunk
            x = np.ones(n, dtype=src)
            x[where] = bad
            for isa in usable_isas():
                with kernel_isa(isa):
                    assert core._to_float(x, np.dtype(dst) == np.float64)[1] is False, \
                        (bad, where, isa)


def test_float_hooks_take_equivalent_dtypes():
    """A memory-mapped array's dtype is NumPy's float64 in all but identity (it was unpickled);
    the hooks take it like any float64 array."""
    import pickle
    f64 = pickle.loads(pickle.dumps(np.dtype(np.float64)))
    x = np.frombuffer(np.arange(6.0).tobytes(), dtype=f64)
    assert core._all_finite(x) is True
    got, finite = core._to_float(x, False)
    assert finite and got.dtype == np.float32 and got.tolist() == list(range(6))


def test_hooks_reject_other_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        core._sum_of_squares(np.ones(3, dtype=np.int64))
    with pytest.raises(TypeError, match="_all_finite: x must be float32 or float64"):
        core._all_finite(np.ones(3, dtype=np.int32))

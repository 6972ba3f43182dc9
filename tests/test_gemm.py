"""Tests of the packed GEMM kernels (mc.matmul, mc.kernel_info and the mc._core GEMM hooks)."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlpcore as mc
from helpers import kernel_isa

core = mc._core
INFO = mc.kernel_info()
NARROW = INFO["narrow_max_columns"]  # A not transposed, at most this many columns: lane sums
ISAS = list(INFO["available"])
DTYPES = [np.float32, np.float64]
LAYOUTS = ["NN", "TN", "NT", "TT"]

# The element-wise activations, from the native list (MLPCORE_ACTIVATIONS).
ACTS = {name: act for name, act in core.Act.__members__.items() if act.elementwise}


# ----------------------------------------------------------------------------- helpers
def _lanes(isa_name, dtype):
    """Elements in one vector of the ISA's kernels."""
    return (64 if isa_name == "avx512" else 32) // np.dtype(dtype).itemsize


@pytest.fixture(params=ISAS)
def isa(request):
    """Run a test on one ISA path, restoring the previous choice afterwards."""
    before = core._get_gemm_isa()
    core._set_gemm_isa(request.param)
    yield request.param
    core._set_gemm_isa(before)


def set_threads(n):
    if hasattr(mc, "set_num_threads"):
        mc.set_num_threads(n)
    else:
        core._set_num_threads(n)


def get_threads():
    if hasattr(mc, "get_num_threads"):
        return mc.get_num_threads()
    return core._get_num_threads()


@pytest.fixture
def restore_threads():
    before = get_threads()
    yield
    set_threads(before)


def operands(rng, M, N, K, layout, dtype):
    """op(A) (M x K) and op(B) (K x N) as views of the stored matrices for `layout`."""
    a = rng.standard_normal((K, M) if layout[0] == "T" else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if layout[1] == "T" else (K, N)).astype(dtype)
    return (a.T if layout[0] == "T" else a), (b.T if layout[1] == "T" else b)


def assert_close_gemm(c, a, b, dtype=None):
    """c == a @ b within the standard error bound of a length-K dot product (scaled by K)."""
    dtype = dtype or c.dtype
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = a64 @ b64
    K = a.shape[1]
    eps = np.finfo(dtype).eps
    bound = (2.0 * K + 4.0) * eps * (np.abs(a64) @ np.abs(b64)) + np.finfo(dtype).tiny
    assert c.shape == ref.shape
    err = np.abs(c.astype(np.float64) - ref)
    bad = err > bound
    assert not bad.any(), f"{bad.sum()} elements out of tolerance, max err {err.max()}"


# Shapes covering every edge remainder of MR (12/6/4) and NR (32/16/8) with K below, at and
# above the KC blocks (384 / 256).
EDGE_SHAPES = [(m, n, k) for m, n, k in zip(range(1, 25), range(1, 65, 1), [1, 3, 7, 16, 33, 64] * 4)]
EDGE_SHAPES += [(m, n, 5) for m, n in zip(range(1, 13), range(33, 65, 1))]
EDGE_SHAPES += [
    (12, 32, 384), (13, 33, 385), (24, 64, 257), (97, 200, 300), (300, 31, 401), (130, 257, 513),
    (1, 300, 200), (300, 1, 200), (64, 96, 784), (100, 100, 1), (250, 300, 260),
]


# ----------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matmul_all_paths(isa, dtype, layout):
    rng = np.random.default_rng(hash((isa, layout, np.dtype(dtype).name)) % 2**32)
    for M, N, K in EDGE_SHAPES:
        a, b = operands(rng, M, N, K, layout, dtype)
        c = mc.matmul(a, b)
        assert c.dtype == dtype and c.flags.c_contiguous
        assert_close_gemm(c, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hooks_and_reference(isa, dtype):
    rng = np.random.default_rng(1)
    for M, N, K in [(1, 1, 1), (13, 35, 70), (40, 70, 400), (101, 33, 260)]:
        for ta in (False, True):
            for tb in (False, True):
                a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
                b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
                opa, opb = (a.T if ta else a), (b.T if tb else b)
                assert_close_gemm(core._gemm(a, b, ta, tb), opa, opb)
                assert_close_gemm(core._gemm_reference(a, b, ta, tb), opa, opb)
                # accumulate: C = op(A) op(B) + C0
                c0 = rng.standard_normal((M, N)).astype(dtype)
                got = core._gemm(a, b, ta, tb, c=c0.copy(), accumulate=True)
                want = opa.astype(np.float64) @ opb.astype(np.float64) + c0
                tol = 1e-4 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(got, want, rtol=tol * math.sqrt(K), atol=tol * K)


def test_simd_paths_agree_with_portable():
    rng = np.random.default_rng(2)
    before = core._get_gemm_isa()
    try:
        for dtype in DTYPES:
            a = rng.standard_normal((77, 301)).astype(dtype)
            b = rng.standard_normal((301, 45)).astype(dtype)
            results = {}
            for name in ISAS:
                core._set_gemm_isa(name)
                results[name] = mc.matmul(a, b)
            tol = 2e-5 if dtype == np.float32 else 1e-13
            for name, c in results.items():
                np.testing.assert_allclose(c, results["portable"], rtol=tol, atol=tol * 30,
                                           err_msg=name)
    finally:
        core._set_gemm_isa(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_views_leading_dimension_and_strides(isa, dtype):
    rng = np.random.default_rng(3)
    big_a = rng.standard_normal((120, 150)).astype(dtype)
    big_b = rng.standard_normal((140, 130)).astype(dtype)
    cases = [
        (big_a[3:40, 5:75], big_b[7:77, 2:49]),           # NN, lda/ldb > width
        (big_a[5:75, 2:39].T, big_b[7:77, 2:49]),         # TN through a transposed sub-view
        (big_a[3:40, 5:75], big_b[2:49, 7:77].T),         # NT
        (big_a[5:75, 2:39].T, big_b[2:49, 7:77].T),       # TT
        (big_a[::2, ::3][:30, :40], big_b[::3, ::2][:40, :33]),  # no unit stride: copied
        (big_a[::-1, :][:20, :50], big_b[:50, ::-1]),     # negative strides
        (np.asfortranarray(big_a[:33, :66]), big_b[:66, :17]),
        (big_a[:1, :70], big_b[:70, :1]),                 # single row / column
        (big_a[:, 4:5], big_b[4:5, :]),                   # K = 1 outer product, odd strides
        (big_a[4:5, :].T[:, :1], big_b[4:5, :]),           # 120 x 1 column view of a row
    ]
    for a, b in cases:
        c = mc.matmul(a, b)
        assert_close_gemm(c, a, b)
    # an input view must not be modified nor copied into (it is read only)
    ro = big_a[:10, :20].copy()
    ro.flags.writeable = False
    assert_close_gemm(mc.matmul(ro, big_b[:20, :9]), ro, big_b[:20, :9])


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_sizes(dtype):
    a = np.ones((4, 0), dtype)
    b = np.ones((0, 5), dtype)
    c = mc.matmul(a, b)
    assert c.shape == (4, 5) and c.dtype == dtype and not c.any()
    out = np.full((4, 5), 7.0, dtype)
    assert mc.matmul(a, b, out=out) is out and not out.any()
    assert mc.matmul(np.ones((0, 3), dtype), np.ones((3, 5), dtype)).shape == (0, 5)
    assert mc.matmul(np.ones((4, 3), dtype), np.ones((3, 0), dtype)).shape == (4, 0)
    assert mc.matmul(np.ones((0, 0), dtype), np.ones((0, 0), dtype)).shape == (0, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_propagate_like_numpy(isa, dtype):
    rng = np.random.default_rng(4)
    for M, N, K in [(5, 7, 9), (29, 70, 400), (100, 40, 30)]:
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, N)).astype(dtype)
        a[1, 2] = np.nan
        a[M - 1, K - 1] = np.inf
        b[0, N - 1] = -np.inf
        b[K // 2, 0] = np.nan
        a[2 % M, 0] = 0.0  # 0 * inf = nan
        c = mc.matmul(a, b)
        with np.errstate(invalid="ignore", over="ignore"):
            ref = a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(c), np.isnan(ref))
        np.testing.assert_array_equal(np.isposinf(c), np.isposinf(ref))
        np.testing.assert_array_equal(np.isneginf(c), np.isneginf(ref))


# ----------------------------------------------------------------------------- fused epilogues
def np_act(name, z, negative_slope=0.01, alpha=1.0, beta=1.0, threshold=20.0):
    z = z.astype(np.float64)
    erf = np.vectorize(math.erf)
    sig = lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))  # noqa: E731  overflow-free logistic
    sa, ss = 1.6732632423543772, 1.0507009873554805
    if name == "Identity":
        return z
    if name == "ReLU":
        return np.maximum(z, 0)
    if name == "LeakyReLU":
        return np.where(z > 0, z, negative_slope * z)
    if name == "ELU":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    if name == "SELU":
        return ss * np.where(z > 0, z, sa * np.expm1(np.minimum(z, 0)))
    if name == "GELU":
        return 0.5 * z * (1 + erf(z / math.sqrt(2)))
    if name == "GELUTanh":
        return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    if name == "SiLU":
        return z * sig(z)
    if name == "Sigmoid":
        return sig(z)
    if name == "Tanh":
        return np.tanh(z)
    if name == "Softplus":
        bz = beta * z
        return np.where(bz > threshold, z, np.log1p(np.exp(np.minimum(bz, threshold))) / beta)
    raise KeyError(name)


def np_act_deriv(name, z):
    z = z.astype(np.float64)
    h = 1e-6
    if name in ("ReLU", "LeakyReLU", "ELU", "SELU"):  # kinks at 0: one-sided is exact enough
        zp = np.where(z > 0, z + h, z - h)
        return (np_act(name, zp) - np_act(name, z)) / (zp - z)
    return (np_act(name, z + h) - np_act(name, z - h)) / (2 * h)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTS))
def test_fused_forward_bias_activation(isa, dtype, act):
    rng = np.random.default_rng(5)
    for M, N, K, ta, tb in [(13, 37, 50, False, False), (70, 100, 400, False, False),
                            (33, 20, 300, True, False), (40, 65, 90, False, True)]:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype) / math.sqrt(K)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
        bias = rng.standard_normal(N).astype(dtype)
        z, y = core._gemm_fused(a, b, ta, tb, bias=bias, act=ACTS[act], act_out=True)
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        tol = 1e-4 if dtype == np.float32 else 1e-12
        ref_z = opa.astype(np.float64) @ opb.astype(np.float64) + bias
        np.testing.assert_allclose(z, ref_z, rtol=tol, atol=tol * math.sqrt(K))
        # the activation is applied to exactly the z that was stored
        np.testing.assert_allclose(y, np_act(act, z), rtol=tol, atol=tol)
        # and the separate reference epilogue agrees
        z_ref, y_ref = core._gemm_fused(a, b, ta, tb, bias=bias, act=ACTS[act], act_out=True,
                                        reference=True)
        np.testing.assert_allclose(z, z_ref, rtol=tol, atol=tol * math.sqrt(K))
        np.testing.assert_allclose(y, y_ref, rtol=10 * tol, atol=10 * tol)
    # without act_out C receives z only; without bias it is the plain product
    c, none = core._gemm_fused(a, b, ta, tb)
    assert none is None
    assert_close_gemm(c, opa, opb)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["ReLU", "LeakyReLU", "ELU", "SELU", "GELU", "GELUTanh", "SiLU",
                                 "Sigmoid", "Tanh", "Softplus", "Identity"])
def test_fused_derivative_multiply(isa, dtype, act):
    rng = np.random.default_rng(6)
    for M, N, K, ta, tb in [(13, 37, 50, False, True), (64, 100, 256, False, True),
                            (29, 41, 77, True, False)]:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
        zsave = (rng.standard_normal((M, N)) * 2).astype(dtype)
        zsave[0, : min(N, 3)] = [0.5, -0.5, 1.5][: min(N, 3)]
        ysave = np_act(act, zsave).astype(dtype)
        dx, _ = core._gemm_fused(a, b, ta, tb, deriv_z=zsave, deriv_y=ysave, deriv_act=ACTS[act])
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        g = opa.astype(np.float64) @ opb.astype(np.float64)
        want = g * np_act_deriv(act, zsave)
        tol = 2e-4 if dtype == np.float32 else 1e-6  # finite-difference derivative
        np.testing.assert_allclose(dx, want, rtol=tol, atol=tol * math.sqrt(K))
        ref, _ = core._gemm_fused(a, b, ta, tb, deriv_z=zsave, deriv_y=ysave,
                                  deriv_act=ACTS[act], reference=True)
        np.testing.assert_allclose(dx, ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                                   atol=1e-4 * math.sqrt(K))


def test_fused_rejects_softmax_and_bad_ids():
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match="element-wise"):
        core._gemm_fused(a, a.T, act=core.Act.Softmax, act_out=True)
    with pytest.raises(TypeError):  # integer codes are not kinds
        core._gemm_fused(a, a.T, deriv_z=np.ones((2, 2)), deriv_act=1)


# ----------------------------------------------------------------------------- threads
DET_SHAPES = [(256, 256, 784, "NN"), (64, 256, 784, "TN"), (32, 784, 256, "NT"),
              (130, 1000, 500, "NN"), (97, 300, 1000, "TT"), (500, 70, 900, "NT")]


@pytest.mark.skipif(not INFO["openmp"], reason="built without OpenMP")
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_1_and_2_threads(isa, dtype, restore_threads):
    rng = np.random.default_rng(7)
    for M, N, K, layout in DET_SHAPES:
        assert M * N * K >= INFO["parallel_min_work"]  # really runs on 2 threads
        a, b = operands(rng, M, N, K, layout, dtype)
        bias = rng.standard_normal(N).astype(dtype)
        results = []
        for n in (1, 2, 1):
            set_threads(n)
            c = mc.matmul(a, b)
            z, y = core._gemm_fused(np.ascontiguousarray(a), np.ascontiguousarray(b), False,
                                    False, bias=bias, act=ACTS["GELU"], act_out=True)
            results.append((c.tobytes(), z.tobytes(), y.tobytes()))
        assert results[0] == results[1] == results[2]
        assert_close_gemm(np.frombuffer(results[1][0], dtype).reshape(M, N), a, b)


# Large enough for the threads to pack a shared operand together: A on a 1 x 2 grid (with B
# packed or read in place; columns handed out in chunks, the last one partial for N = 600), B on
# a 2 x 1 grid (one or, past 2 * MC rows, two row blocks each).
# (K sets the size: from 2^29 multiply-adds, with M and N what the grids and chunks need.)
SHARED_PACK_SHAPES = [(64, 2048, 4200, "NN"), (300, 600, 3000, "NT"), (2048, 64, 4200, "NN"),
                      (8200, 16, 4100, "TN"), (700, 130, 6000, "TT")]


@pytest.mark.skipif(not INFO["openmp"], reason="built without OpenMP")
@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_packing_bitwise_identical_1_and_2_threads(isa, dtype, restore_threads):
    rng = np.random.default_rng(11)
    for M, N, K, layout in SHARED_PACK_SHAPES:
        assert M * N * K >= INFO["shared_pack_min_work"]
        a, b = operands(rng, M, N, K, layout, dtype)
        ta, tb = layout[0] == "T", layout[1] == "T"
        stored_a, stored_b = (a.T if ta else a), (b.T if tb else b)
        deriv_z = rng.standard_normal((M, N)).astype(dtype)
        results = []
        for n in (1, 2):
            set_threads(n)
            c = mc.matmul(a, b)
            d, _ = core._gemm_fused(stored_a, stored_b, ta, tb, deriv_z=deriv_z,
                                    deriv_act=ACTS["ReLU"])  # in the micro-kernel's registers
            results.append((c.tobytes(), d.tobytes()))
        assert results[0] == results[1]
        c = np.frombuffer(results[1][0], dtype).reshape(M, N)
        assert_close_gemm(c, a, b)
        d = np.frombuffer(results[1][1], dtype).reshape(M, N)
        np.testing.assert_array_equal(d, c * (deriv_z > 0))


# In BLIS's order a thread done with its own rectangle takes units (an A block's rows times a
# few column micro-panels) of another's; the test hook pauses one thread after it publishes each
# block, so that the other surely does. Shapes: both grids, B packed and read in place, several
# column blocks (N past NC) and K blocks, partial tiles.
HELP_SHAPES = DET_SHAPES + [(30, 9000, 200, "NT"), (12, 9000, 300, "NN"), (1000, 200, 300, "TN")]
HELP_CASES = [(isa, dtype) for isa in ISAS for dtype in DTYPES
              if INFO["blocking"][isa][np.dtype(dtype).name]["loop_order"] == "b_panel_in_l1"]


@pytest.mark.skipif(not INFO["openmp"], reason="built without OpenMP")
@pytest.mark.skipif(not HELP_CASES, reason="no ISA here uses BLIS's loop order")
@pytest.mark.parametrize("slowed", [0, 1])
@pytest.mark.parametrize("isa_name, dtype", HELP_CASES)
def test_units_taken_over_from_a_slowed_thread_give_the_same_bits(isa_name, dtype, slowed,
                                                                  restore_threads):
    before = core._get_gemm_isa()
    core._set_gemm_isa(isa_name)
    rng = np.random.default_rng(13)
    try:
        for M, N, K, layout in HELP_SHAPES:
            a, b = operands(rng, M, N, K, layout, dtype)
            bias = rng.standard_normal(N).astype(dtype)
            results = []
            for n in (1, 2):
                set_threads(n)
                core._set_gemm_help_delay(slowed if n == 2 else -1, 3000)
                helped = core._gemm_units_helped()
                c = mc.matmul(a, b)
                z, y = core._gemm_fused(np.ascontiguousarray(a), np.ascontiguousarray(b), False,
                                        False, bias=bias, act=ACTS["GELU"], act_out=True)
                if n == 2:
                    assert core._gemm_units_helped() > helped, (M, N, K, layout)
                results.append((c.tobytes(), z.tobytes(), y.tobytes()))
            assert results[0] == results[1], (M, N, K, layout)
            assert_close_gemm(np.frombuffer(results[1][0], dtype).reshape(M, N), a, b)
    finally:
        core._set_gemm_help_delay(-1, 0)
        core._set_gemm_isa(before)


@pytest.mark.skipif(not INFO["openmp"], reason="built without OpenMP")
@pytest.mark.parametrize("limit", [{"OMP_THREAD_LIMIT": "1"}, {"OMP_DYNAMIC": "true"}])
def test_fewer_threads_than_asked_still_compute_all_of_c(limit):
    # The OpenMP runtime may start fewer threads than a region asks for; every rectangle of the
    # thread grid must still be computed (by the threads that did start).
    code = textwrap.dedent("""
        import numpy as np, mlpcore as mc
        mc.set_num_threads(2)
        rng = np.random.default_rng(3)
        for m, n, k in [(300, 301, 900), (64, 2048, 600), (2048, 64, 600), (130, 1000, 500)]:
            a = rng.standard_normal((m, k)); b = rng.standard_normal((k, n))
            np.testing.assert_allclose(mc.matmul(a, b), a @ b, rtol=1e-10, atol=1e-10 * k)
        print("ok")
        """)
    env = dict(os.environ, OMP_NUM_THREADS="2", **limit)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ----------------------------------------------------------------------------- ISA selection
def run_child(code, isa_env):
    env = dict(os.environ)
    env.pop("MLPCORE_GEMM_ISA", None)
    if isa_env is not None:
        env["MLPCORE_GEMM_ISA"] = isa_env
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_env_override_in_subprocess():
    code = ("import numpy as np, mlpcore as mc; "
            "a = np.arange(12.0).reshape(3, 4); "
            "assert (mc.matmul(a, a.T) == a @ a.T).all(); "
            "print(mc.kernel_info()['isa'])")
    for name in ISAS:
        assert run_child(code, name) == name
    # no override: the best ISA (avx512 on an AVX-512 machine)
    default = run_child(code, None)
    assert default == INFO["best"] == ISAS[0]
    # an unknown name is ignored rather than crashing the import
    assert run_child(code, "sse9") == INFO["best"]


def test_kernel_info_contents():
    info = mc.kernel_info()
    assert info["isa"] in info["available"]
    assert "portable" in info["available"]
    assert set(info["available"]) <= {"avx512", "avx2", "portable"}
    for dt in ("float32", "float64"):
        blk = info[dt]
        assert set(blk) >= {"mr", "nr", "mc", "kc", "nc"}
        assert blk["mc"] % blk["mr"] == 0 and blk["nc"] % blk["nr"] == 0
    assert isinstance(info["openmp"], bool)
    assert info["num_threads"] >= 1


def test_set_gemm_isa_validation():
    with pytest.raises(ValueError, match="avx512, avx2, portable"):
        core._set_gemm_isa("sse9")
    before = core._get_gemm_isa()
    for name in ISAS:
        core._set_gemm_isa(name)
        assert mc.kernel_info()["isa"] == name == core._get_gemm_isa()
    core._set_gemm_isa(before)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_helpful_errors():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 5\)"):
        mc.matmul(a, np.ones((5, 5), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        mc.matmul(np.ones(4, np.float32), b)
    with pytest.raises(ValueError, match="b must be 2-D"):
        mc.matmul(a, np.ones((4, 5, 1), np.float32))
    with pytest.raises(TypeError, match="b must have dtype float32 like a, got float64"):
        mc.matmul(a, b.astype(np.float64))
    with pytest.raises(TypeError, match="a must have dtype float32 or float64, got int64"):
        mc.matmul(np.ones((3, 4), np.int64), np.ones((4, 5), np.int64))
    with pytest.raises(TypeError, match="float16"):
        mc.matmul(a.astype(np.float16), b.astype(np.float16))
    with pytest.raises(TypeError, match="a must be a numpy.ndarray, got list"):
        mc.matmul([[1.0]], b)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        mc.matmul(a, b, out=[0.0])
    with pytest.raises(ValueError, match=r"out must have shape \(3, 5\), got \(5, 3\)"):
        mc.matmul(a, b, out=np.empty((5, 3), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        mc.matmul(a, b, out=np.empty(15, np.float32))
    with pytest.raises(TypeError, match="out must have dtype float32"):
        mc.matmul(a, b, out=np.empty((3, 5), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        mc.matmul(a, b, out=np.empty((5, 3), np.float32).T)
    with pytest.raises(ValueError, match="C-contiguous"):
        mc.matmul(a, b, out=np.empty((3, 10), np.float32)[:, ::2])
    ro = np.empty((3, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        mc.matmul(a, b, out=ro)
    sq = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        mc.matmul(sq, np.ones((4, 4), np.float32), out=sq)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_writes_in_bounds_only(isa, dtype):
    rng = np.random.default_rng(8)
    guard = 64
    for M, N, K in [(1, 1, 1), (13, 33, 17), (25, 67, 300), (97, 31, 50)]:
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, N)).astype(dtype)
        buf = np.full(M * N + 2 * guard, -12345.0, dtype)
        out = buf[guard:guard + M * N].reshape(M, N)
        assert mc.matmul(a, b, out=out) is out
        assert (buf[:guard] == -12345.0).all() and (buf[-guard:] == -12345.0).all()
        assert_close_gemm(out, a, b)
        # a row-major window of a bigger array is C-contiguous only for full rows: use one
        big = np.full((M + 2, N), 99.0, dtype)
        window = big[1:M + 1]
        mc.matmul(a.T.copy().T, b, out=window)
        assert (big[0] == 99.0).all() and (big[-1] == 99.0).all()
        assert_close_gemm(window, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["NN", "TN", "NT"])
def test_partial_vectors_write_only_their_lanes(isa, dtype, form):
    # Every width left over after whole vectors (1 .. 15 columns past a multiple of 16): the
    # partial last vector of a row is stored lane group by lane group on AVX2, so the last row
    # must end exactly at the buffer's end, and each element must be the product's.
    rng = np.random.default_rng(11)
    guard = 40
    # direct path, narrow direct path (TN), packed path (K beyond one K block)
    for M, K in [(3, 21), (37, 21), (40, 700)]:
        for N in range(1, 18):
            a = rng.standard_normal((K, M) if form[0] == "T" else (M, K)).astype(dtype)
            b = rng.standard_normal((N, K) if form[1] == "T" else (K, N)).astype(dtype)
            a = a.T if form[0] == "T" else a
            b = b.T if form[1] == "T" else b
            buf = np.full(M * N + guard, -12345.0, dtype)
            out = buf[:M * N].reshape(M, N)
            mc.matmul(a, b, out=out)
            assert (buf[M * N:] == -12345.0).all(), (M, N)
            assert_close_gemm(out, a, b)


DIRECT_ISAS = [name for name in ("avx512", "avx2") if name in ISAS]  # ISAs with a direct path


@pytest.mark.skipif(not DIRECT_ISAS, reason="needs AVX-512 or AVX2")
@pytest.mark.parametrize("direct_isa", DIRECT_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["NN", "TN", "NT"])
@pytest.mark.parametrize("k, n", [(3, 70), (24, 40), (60, 130), (50, 128), (40, 64)])
def test_direct_small_path_matches_the_packed_path_bitwise(direct_isa, dtype, form, k, n):
    # A 32-row product takes the direct (unpacked) path; the same rows inside a 4096-row product
    # take the packed path. Both sum each element from zero with one FMA per k step, so the
    # rows must agree bit for bit. The direct path copies B^T into plain rows for K below a
    # vector's width (3) and into micro-panels otherwise, and B into longer rows when its rows
    # are a multiple of 512 bytes (128 floats, 64 doubles); N covers several column blocks, full
    # and partial.
    assert 32 * n * k <= INFO["direct_max_work"]
    with kernel_isa(direct_isa):
        rng = np.random.default_rng(3)
        big = rng.standard_normal((4096, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        a_small, a_big = big[:32], big
        if form[0] == "T":
            a_small, a_big = np.ascontiguousarray(a_small.T).T, np.ascontiguousarray(a_big.T).T
        if form[1] == "T":
            b = np.ascontiguousarray(b.T).T
        small = mc.matmul(a_small, b)
        large = mc.matmul(a_big, b)
        np.testing.assert_array_equal(small, large[:32])


@pytest.mark.skipif(not DIRECT_ISAS, reason="needs AVX-512 or AVX2")
@pytest.mark.parametrize("direct_isa", DIRECT_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["NN", "TN"])
@pytest.mark.parametrize("n", [5, 8, 20, 40, 68])
def test_direct_path_row_tails_match_the_packed_path_bitwise(direct_isa, dtype, form, n):
    # Every row count up to 30: the direct path's row tiles of every height (a short last
    # tile is merged with the full one before it and split in two), for one vector of
    # columns (taller tiles) and several, and for a last column block of one vector, full or
    # partial (taller tiles too: 68 columns on every ISA and dtype, 20 on AVX2, 40 on AVX2
    # float32 and AVX-512 float64). All rows, nothing beyond them, the packed path's bits.
    k = 24
    with kernel_isa(direct_isa):
        rng = np.random.default_rng(7)
        big = rng.standard_normal((4096, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        large = mc.matmul(big, b)
        for m in range(1, 31):
            a = big[:m] if form == "NN" else np.ascontiguousarray(big[:m].T).T
            out = np.full((m + 1, n), 7.0, dtype)
            mc.matmul(a, b, out=out[:m])
            np.testing.assert_array_equal(out[:m], large[:m], err_msg=f"{m} rows")
            assert (out[m] == 7.0).all(), f"{m} rows: the row after C was written"


@pytest.mark.skipif(not DIRECT_ISAS, reason="needs AVX-512 or AVX2")
@pytest.mark.parametrize("direct_isa", DIRECT_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_path_epilogue_in_registers_matches_the_packed_path_bitwise(direct_isa, dtype):
    # The direct path applies bias, ReLU and ReLU's derivative in registers; the packed path in
    # a separate pass over each tile. Same rows, same bits, NaN, +-0 and Inf included.
    with kernel_isa(direct_isa):
        rng = np.random.default_rng(4)
        big = rng.standard_normal((4096, 24)).astype(dtype)
        b = rng.standard_normal((24, 40)).astype(dtype)
        bias = rng.standard_normal(40).astype(dtype)
        bias[:4] = [np.nan, -0.0, np.inf, -np.inf]
        small_z, small_y = core._gemm_fused(big[:32], b, bias=bias, act=ACTS["ReLU"],
                                            act_out=True)
        large_z, large_y = core._gemm_fused(big, b, bias=bias, act=ACTS["ReLU"], act_out=True)
        np.testing.assert_array_equal(small_z, large_z[:32])
        np.testing.assert_array_equal(small_y, large_y[:32])
        assert np.all(np.isnan(small_y[:, 0]))  # ReLU(NaN) is NaN, as torch.relu, on every path
        zsave = rng.standard_normal((4096, 40)).astype(dtype)
        zsave[0, :3] = [np.nan, -0.0, 0.0]
        small_dx, _ = core._gemm_fused(big[:32], b, deriv_z=zsave[:32], deriv_act=ACTS["ReLU"])
        large_dx, _ = core._gemm_fused(big, b, deriv_z=zsave, deriv_act=ACTS["ReLU"])
        np.testing.assert_array_equal(small_dx, large_dx[:32])
        want = (big[:32].astype(np.float64) @ b) * (zsave[:32] > 0)
        np.testing.assert_allclose(small_dx, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 20, 16), (37, 70, 50), (150, 300, 90)])
def test_register_epilogue_is_exactly_the_separate_pass(isa, dtype, shape):
    # Bias, ReLU and ReLU's derivative are applied by the micro-kernels (and the direct path) in
    # registers. They must give exactly what the plain product followed by the element-wise
    # operations gives, on every ISA path, from the small direct shape to the threaded one.
    M, N, K = shape
    rng = np.random.default_rng(8)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    bias[:3] = [np.nan, -0.0, np.inf]
    plain, _ = core._gemm_fused(a, b)
    z, y = core._gemm_fused(a, b, bias=bias, act=ACTS["ReLU"], act_out=True)
    np.testing.assert_array_equal(z, plain + bias)
    np.testing.assert_array_equal(y, np.where((z > 0) | np.isnan(z), z, dtype(0)))  # NaN kept
    zsave = rng.standard_normal((M, N)).astype(dtype)
    zsave[0, :3] = [np.nan, -0.0, 0.0]
    dx, _ = core._gemm_fused(a, b, deriv_z=zsave, deriv_act=ACTS["ReLU"])
    np.testing.assert_array_equal(dx, plain * (zsave > 0).astype(dtype))
    # an activation the kernels do not apply in registers still gets the bias first
    z2, y2 = core._gemm_fused(a, b, bias=bias, act=ACTS["Tanh"], act_out=True)
    np.testing.assert_array_equal(z2, plain + bias)


@pytest.mark.parametrize("dtype", DTYPES)
def test_narrow_tiles_give_the_same_bits_as_full_tiles(isa, dtype):
    # Products at most one vector wide run a one-vector micro-kernel; each element is still
    # summed in the same order, so its columns equal the same columns of a wider product
    # (down to NARROW + 1 columns: fewer have an order of their own, tested below).
    rng = np.random.default_rng(12)
    for M, K in [(50, 70), (300, 900)]:
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, 48)).astype(dtype)
        wide = mc.matmul(a, b)
        for n in (NARROW + 1, 7, 10, 16):
            np.testing.assert_array_equal(mc.matmul(a, np.ascontiguousarray(b[:, :n])),
                                          wide[:, :n], err_msg=f"M={M} K={K} n={n}")


@pytest.mark.skipif(not DIRECT_ISAS, reason="needs AVX-512 or AVX2")
@pytest.mark.parametrize("direct_isa", DIRECT_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
def test_narrow_direct_products_are_the_columns_of_wide_ones(direct_isa, dtype, ta, tb):
    # Fewer columns than a vector's lanes (an output layer), or one vector and a few more, are
    # computed transposed when A is given transposed (a weight gradient), C's rows becoming the
    # lanes, and with taller row tiles otherwise (from NARROW + 1 columns: fewer sum across the
    # lanes, tested below); each element keeps its order of FMAs, so the narrow product equals
    # the same columns of a wide one bit for bit. M crosses the 256-row blocks of the
    # transposed form; K below and above a vector (copies of B^T in plain rows or
    # micro-panels). The widths: below a vector, one vector and a few more (the last of them
    # computed transposed, then the first that is not).
    lanes = _lanes(direct_isa, dtype)
    extra = min(lanes // 2, 4)
    widths = (1, 3, lanes - 1, lanes + 1, lanes + extra, lanes + extra + 1)
    rng = np.random.default_rng(21)
    for M, K in [(lanes, 3), (100, 37), (300, 20)]:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
        wide_b = rng.standard_normal((3 * lanes, K) if tb else (K, 3 * lanes)).astype(dtype)
        with kernel_isa(direct_isa):
            wide = core._gemm(a, wide_b, ta, tb)
            for n in [n for n in widths if ta or n > NARROW]:
                b = np.ascontiguousarray(wide_b[:n] if tb else wide_b[:, :n])
                c = core._gemm(a, b, ta, tb)
                np.testing.assert_array_equal(c, wide[:, :n], err_msg=f"M={M} K={K} n={n}")
                acc = rng.standard_normal((M, n)).astype(dtype)
                got = core._gemm(a, b, ta, tb, acc.copy(), True)
                np.testing.assert_array_equal(got, acc + wide[:, :n])


@pytest.mark.skipif(not DIRECT_ISAS, reason="needs AVX-512 or AVX2")
@pytest.mark.parametrize("direct_isa", DIRECT_ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
def test_narrow_direct_products_apply_the_epilogue_exactly(direct_isa, dtype, ta):
    # The transposed form writes C back element by element with the row tiles' operations:
    # bias, ReLU (NaN kept) and ReLU's derivative give what the separate pass gives, below a
    # vector's lanes and beyond them.
    rng = np.random.default_rng(22)
    M, K = 130, 24
    for n in (3, _lanes(direct_isa, dtype) + 2):
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
        b = rng.standard_normal((K, n)).astype(dtype)
        bias = rng.standard_normal(n).astype(dtype)
        bias[:3] = [np.nan, -0.0, 0.5]
        with kernel_isa(direct_isa):
            plain, _ = core._gemm_fused(a, b, ta)
            z, y = core._gemm_fused(a, b, ta, bias=bias, act=ACTS["ReLU"], act_out=True)
            np.testing.assert_array_equal(z, plain + bias)
            np.testing.assert_array_equal(y, np.where((z > 0) | np.isnan(z), z, dtype(0)))
            zsave = rng.standard_normal((M, n)).astype(dtype)
            zsave[0, :3] = [np.nan, -0.0, 0.0]
            dx, _ = core._gemm_fused(a, b, ta, deriv_z=zsave, deriv_act=ACTS["ReLU"])
            np.testing.assert_array_equal(dx, plain * (zsave > 0).astype(dtype))


def _lane_sums(a, b, lanes):
    """The narrow form's float32 result, emulated: element (i, j) summed in `lanes` partial
    sums, lane l taking p = l, l + lanes, ... by fused multiply-adds (a float32 product is exact
    in long double, and rounding the sum twice, to long double then to float32, is the single
    rounding of an FMA but for ties no random test meets), the lanes then added pairwise:
    l + lanes/2, then l + lanes/4, ..."""
    prods = a.astype(np.longdouble)[:, :, None] * b.astype(np.longdouble)[None, :, :]
    acc = np.zeros((a.shape[0], b.shape[1], lanes), np.float32)
    for p in range(a.shape[1]):
        acc[:, :, p % lanes] = (prods[:, p] + acc[:, :, p % lanes]).astype(np.float32)
    width = lanes // 2
    while width >= 1:
        acc[:, :, :width] += acc[:, :, width:2 * width]
        width //= 2
    return acc[:, :, 0]


@pytest.mark.skipif(not DIRECT_ISAS, reason="needs AVX-512 or AVX2")
@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63, reason="needs an 80-bit long double")
@pytest.mark.parametrize("direct_isa", DIRECT_ISAS)
@pytest.mark.parametrize("tb", [False, True])
def test_narrow_nn_products_sum_each_element_across_the_lanes(direct_isa, tb):
    # At most NARROW columns with A not transposed (an output layer's forward pass): each
    # element is a dot product vectorised over K, in the lanes of one vector and a fixed tree,
    # whatever M and K (K below one vector, with a partial last vector, beyond a K block).
    lanes = _lanes(direct_isa, np.float32)
    rng = np.random.default_rng(31)
    for M, n, K in [(7, 1, 3), (13, 4, 37), (100, 3, 100), (9, 2, 1000), (30, 4, 16)]:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, n)).astype(np.float32)
        want = _lane_sums(a, b, lanes)
        op_b = np.ascontiguousarray(b.T).T if tb else b
        with kernel_isa(direct_isa):
            np.testing.assert_array_equal(mc.matmul(a, op_b), want, err_msg=f"{M}x{n}x{K}")
            acc = rng.standard_normal((M, n)).astype(np.float32)
            got = core._gemm(a, np.ascontiguousarray(b.T) if tb else b, False, tb, acc.copy(),
                             True)
            np.testing.assert_array_equal(got, acc + want)


@pytest.mark.skipif(not DIRECT_ISAS, reason="needs AVX-512 or AVX2")
@pytest.mark.parametrize("direct_isa", DIRECT_ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_narrow_nn_rows_do_not_depend_on_the_batch_or_the_threads(direct_isa, dtype,
                                                                    restore_threads):
    # The narrow form takes every product of its shape: a row alone, in a batch of a few, and
    # in a product large enough for the threads to share its row blocks all give the same bits,
    # at 1 and 2 threads; with the epilogue's bias and ReLU, in registers, the same.
    rng = np.random.default_rng(32)
    M, K = 3000, 300
    a = rng.standard_normal((M, K)).astype(dtype)
    for n in range(1, min(NARROW, _lanes(direct_isa, dtype) - 1) + 1):
        b = rng.standard_normal((K, n)).astype(dtype)
        bias = rng.standard_normal(n).astype(dtype)
        with kernel_isa(direct_isa):
            results = []
            for threads in (1, 2):
                set_threads(threads)
                results.append(mc.matmul(a, b))
                z, y = core._gemm_fused(a, b, False, bias=bias, act=ACTS["ReLU"], act_out=True)
                np.testing.assert_array_equal(z, results[-1] + bias)
                np.testing.assert_array_equal(y, np.maximum(z, dtype(0)))
            np.testing.assert_array_equal(results[0], results[1])
            for rows in (slice(0, 1), slice(5, 12), slice(2990, 3000)):
                np.testing.assert_array_equal(mc.matmul(a[rows], b), results[0][rows])

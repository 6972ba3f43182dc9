"""The GEMM blocking derived from the cache sizes (cpp/kernels/gemm/cache_blocking.cpp): the
caches mc.kernel_info() reports, the MLPCORE_CACHE_SIZES override and the _set_cache_sizes test
hook, and correct, thread-count independent products for emulated small and large caches."""

import os
import subprocess
import sys

import numpy as np
import pytest

import mlpcore as mc
from helpers import kernel_isa, usable_isas

core = mc._core
K, M = 1 << 10, 1 << 20
# (L1d, L2, L3) from a small client core to a large server core; L3 0 is "unknown".
EMULATED = [(16 * K, 256 * K, 256 * K), (32 * K, 512 * K, 32 * M), (48 * K, M, 0),
            (48 * K, 2 * M, 0), (64 * K, 2 * M, 0)]


@pytest.fixture
def restore_caches():
    before = mc.kernel_info()["cache_sizes"]
    yield
    core._set_cache_sizes(before["l1d"], before["l2"], before["l3"])


@pytest.fixture
def restore_threads():
    before = mc.get_num_threads()
    yield
    mc.set_num_threads(before)


def blocking_for(l1d, l2, l3=0):
    core._set_cache_sizes(l1d, l2, l3)
    return mc.kernel_info()["blocking"]


def assert_close(c, a, b):
    """c == a @ b within the error bound of a length-K dot product."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    eps = np.finfo(c.dtype).eps
    bound = (2.0 * a.shape[1] + 4.0) * eps * (np.abs(a64) @ np.abs(b64))
    err = np.abs(c.astype(np.float64) - a64 @ b64)
    assert (err <= bound).all(), f"max err {err.max()}"


def test_kernel_info_reports_the_caches_and_their_source():
    cache = mc.kernel_info()["cache_sizes"]
    assert set(cache) == {"l1d", "l2", "l3", "source", "env", "env_ignored"}
    assert cache["l1d"] >= 4 * K and cache["l2"] >= 32 * K and cache["l3"] >= 0
    assert cache["source"] in {"cpuid", "sysconf", "sysfs", "default", "MLPCORE_CACHE_SIZES",
                               "set by _set_cache_sizes"}


def cache_blocks(blocking, order="a_panel_in_l1"):
    """The cache blocks of every ISA and dtype in one loop order, without the L2-derived
    in-place limit."""
    return {isa: {dtype: {k: v for k, v in blk.items() if k != "b_in_place_bytes"}
                  for dtype, blk in per_dtype.items() if blk["loop_order"] == order}
            for isa, per_dtype in blocking.items()}


def test_tuning_machine_caches_keep_the_tuned_blocking(restore_caches):
    # 48 KiB L1d with 1 or 2 MiB of L2 is what the constants were tuned on; larger caches
    # do not grow the blocks past them (that was measured no better)
    tuned = cache_blocks(blocking_for(48 * K, M))
    assert cache_blocks(blocking_for(48 * K, 2 * M)) == tuned
    assert cache_blocks(blocking_for(64 * K, 8 * M)) == tuned
    # in BLIS's order the A block grows with L2 up to the tuned MC, and KC stays the tuned one
    small, large = (cache_blocks(blocking_for(48 * K, l2), "b_panel_in_l1") for l2 in (M, 8 * M))
    for isa, per_dtype in small.items():
        for dtype, blk in per_dtype.items():
            assert large[isa][dtype]["kc"] == blk["kc"]
            assert blk["mc"] <= large[isa][dtype]["mc"] <= 1008


def test_each_isa_reports_its_loop_order():
    orders = {isa: {blk["loop_order"] for blk in per_dtype.values()}
              for isa, per_dtype in mc.kernel_info()["blocking"].items()}
    assert orders["avx2"] == {"b_panel_in_l1"} and orders["portable"] == {"a_panel_in_l1"}


def test_b_read_in_place_only_while_it_fits_half_of_l2(restore_caches):
    for l2 in (256 * K, 2 * M):
        for per_dtype in blocking_for(48 * K, l2).values():
            assert all(blk["b_in_place_bytes"] == l2 // 2 for blk in per_dtype.values())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("isa", usable_isas())
def test_b_in_place_or_packed_gives_the_same_bits(isa, dtype, restore_caches):
    # 16 rows x (512 x 512) B: read in place under an 8 MiB L2, packed under 256 KiB (same L1d,
    # so the same K blocks); both must sum every element alike, with the fused bias + ReLU too
    rng = np.random.default_rng(5)
    a = rng.standard_normal((16, 512)).astype(dtype)
    b = rng.standard_normal((512, 512)).astype(dtype)
    model = mc.Sequential([mc.Dense(512, 512), mc.ReLU(), mc.Dense(512, 8)], dtype=dtype, seed=3)
    with kernel_isa(isa):
        results = []
        for l2 in (8 * M, 256 * K):
            core._set_cache_sizes(48 * K, l2, 0)
            results.append((mc.matmul(a, b), model.predict(a)))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, want)
    assert_close(results[0][0], a, b)


def test_smaller_caches_shrink_the_blocks_in_whole_tiles(restore_caches):
    previous = None
    for l1d, l2, l3 in EMULATED:
        blocking = blocking_for(l1d, l2, l3)
        for isa, per_dtype in blocking.items():
            for dtype, blk in per_dtype.items():
                assert blk["kc"] % 16 == 0 and blk["nc"] % blk["nr"] == 0, (isa, dtype)
                assert blk["mc"] % blk["mr"] == 0, (isa, dtype)
                item = np.dtype(dtype).itemsize
                if blk["loop_order"] == "b_panel_in_l1":  # A block in L2, B block in L3
                    assert blk["mc"] * blk["kc"] * item <= l2 * 9 // 32, (isa, dtype, l2)
                    if l3:
                        assert blk["kc"] * blk["nc"] * item <= l3 // 4, (isa, dtype, l3)
                else:
                    if l3:
                        assert blk["mc"] * blk["kc"] * item <= l3 // 2, (isa, dtype, l3)
                    if l2 < M:  # below the tuning machine's L2: the B block in 5/8 of it
                        assert blk["kc"] * blk["nc"] * item <= l2 * 5 // 8, (isa, dtype, l2)
                if previous is not None:
                    before = previous[isa][dtype]
                    assert blk["kc"] >= before["kc"] and blk["mr"] == before["mr"], (isa, dtype)
        previous = blocking
    # the Zen 3 case of issue 14: the AVX2 float32 A and B micro-panels fit its 32 KiB L1d,
    # and the A block its 512 KiB L2 with room for the B block's stream and C
    avx2 = blocking_for(32 * K, 512 * K, 32 * M)["avx2"]["float32"]
    assert (avx2["mr"] + avx2["nr"]) * avx2["kc"] * 4 <= 32 * K
    assert avx2["mc"] * avx2["kc"] * 4 <= 512 * K * 9 // 32
    tuned = blocking_for(48 * K, M)["avx2"]["float32"]
    assert avx2["kc"] < tuned["kc"]


@pytest.mark.parametrize("args", [(2 * K, M, 0), (48 * K, 16 * K, 0), (48 * K, M, 1),
                                  (-1, M, 0), (48 * K, M, 1 << 40)])
def test_set_cache_sizes_rejects_implausible_sizes(args, restore_caches):
    before = mc.kernel_info()["blocking"]
    with pytest.raises(ValueError, match="_set_cache_sizes: expected l1d"):
        core._set_cache_sizes(*args)
    assert mc.kernel_info()["blocking"] == before


# Shapes crossing the derived K, N and M blocks of the small caches (KC 64-384, NC 288-768,
# MC down to 4 * MR with the 256 KiB L3) in every layout, and a small direct-path product.
SHAPES = [(300, 700, 520, "NN"), (97, 300, 1000, "TT"), (130, 1000, 500, "NT"),
          (700, 60, 400, "TN"), (20, 30, 40, "NN")]


@pytest.mark.parametrize("caches", EMULATED, ids=lambda c: f"{c[0] >> 10}K-{c[1] >> 10}K")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_correct_and_thread_independent_for_emulated_caches(caches, dtype,
                                                                     restore_caches,
                                                                     restore_threads):
    core._set_cache_sizes(*caches)
    rng = np.random.default_rng(5)
    for isa in usable_isas():
        with kernel_isa(isa):
            for m, n, k, layout in SHAPES:
                a = rng.standard_normal((k, m) if layout[0] == "T" else (m, k)).astype(dtype)
                b = rng.standard_normal((n, k) if layout[1] == "T" else (k, n)).astype(dtype)
                a = a.T if layout[0] == "T" else a
                b = b.T if layout[1] == "T" else b
                results = []
                for threads in (1, 2):
                    mc.set_num_threads(threads)
                    results.append(mc.matmul(a, b))
                assert results[0].tobytes() == results[1].tobytes(), (isa, m, n, k, layout)
                assert_close(results[0], a, b)


def run_child(code, cache_env, isa_env=None):
    env = dict(os.environ)
    env.pop("MLPCORE_CACHE_SIZES", None)
    env.pop("MLPCORE_GEMM_ISA", None)
    if cache_env is not None:
        env["MLPCORE_CACHE_SIZES"] = cache_env
    if isa_env is not None:
        env["MLPCORE_GEMM_ISA"] = isa_env
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


CHILD = ("import numpy as np, mlpcore as mc; rng = np.random.default_rng(0); "
         "a = rng.standard_normal((200, 700)); b = rng.standard_normal((700, 300)); "
         "c = mc.matmul(a, b); assert np.allclose(c, a @ b, rtol=1e-10, atol=1e-10); "
         "i = mc.kernel_info(); cs = i['cache_sizes']; "
         "print(cs['l1d'], cs['l2'], cs['l3'], cs['source'], cs['env_ignored'], "
         "i['float64']['kc'])")


def test_env_override_sets_the_caches_at_start_up(restore_caches):
    isa = "avx2" if "avx2" in usable_isas() else "portable"
    out = run_child(CHILD, "32K,512k,32M", isa).split()
    assert out[:5] == [str(32 * K), str(512 * K), str(32 * M), "MLPCORE_CACHE_SIZES", "False"]
    # the same blocking as the in-process hook derives for those caches
    assert int(out[5]) == blocking_for(32 * K, 512 * K, 32 * M)[isa]["float64"]["kc"]
    l1d, l2 = run_child(CHILD, f"{48 * K},{M}").split()[:2]
    assert (int(l1d), int(l2)) == (48 * K, M)


@pytest.mark.parametrize("bad", ["32K", "32X,512K", "1K,512K", "32K,512K,1M,2M", ",,"])
def test_invalid_env_override_is_ignored_and_reported(bad):
    out = run_child(CHILD, bad).split()
    assert out[3] != "MLPCORE_CACHE_SIZES" and out[4] == "True"

// matmul(a, b, out=None), kernel_info() and the GEMM test hooks.
#include "matmul.hpp"

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "bindings/checks.hpp"
#include "bindings/gil.hpp"
#include "kernels/activations.hpp"
#include "kernels/denormals.hpp"
#include "kernels/fma_probe.hpp"
#include "kernels/gemm/gemm.hpp"
#include "kernels/gemm/ukernel.hpp"
#include "kernels/isa_regions.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using mlpcore::bindings::GilAcquire;
using mlpcore::bindings::GilRelease;
using mlpcore::index_t;
namespace gm = mlpcore::gemm;

namespace {

std::string type_name(py::handle h) {
  return py::str(py::type::handle_of(h).attr("__name__")).cast<std::string>();
}

using mlpcore::bindings::dtype_string;
using mlpcore::bindings::shape_string;

bool is_f32(const py::array& a) { return a.dtype().equal(py::dtype::of<float>()); }
bool is_f64(const py::array& a) { return a.dtype().equal(py::dtype::of<double>()); }

py::array require_array(py::handle obj, const char* fn, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(fn) + ": " + name + " must be a numpy.ndarray, got " +
                         type_name(obj));
  return py::reinterpret_borrow<py::array>(obj);
}

void require_2d(const py::array& a, const char* fn, const char* name) {
  if (a.ndim() != 2)
    throw py::value_error(std::string(fn) + ": " + name + " must be 2-D, got a " +
                          std::to_string(a.ndim()) + "-D array of shape " + shape_string(a));
}

// Address range [lo, hi) touched by an array (empty arrays touch nothing).
void byte_extent(const py::array& a, std::uintptr_t* lo, std::uintptr_t* hi) {
  auto base = reinterpret_cast<std::uintptr_t>(a.data());
  std::intptr_t neg = 0, pos = 0;
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    const std::intptr_t span = static_cast<std::intptr_t>(a.shape(d) - 1) * a.strides(d);
    if (span < 0) neg += span; else pos += span;
  }
  *lo = base + neg;
  *hi = base + pos + a.itemsize();
}

bool overlaps(const py::array& x, const py::array& y) {
  if (x.size() == 0 || y.size() == 0) return false;
  std::uintptr_t xl, xh, yl, yh;
  byte_extent(x, &xl, &xh);
  byte_extent(y, &yl, &yh);
  return xl < yh && yl < xh;
}

// A 2-D operand as the kernel sees it: stored row-major matrix, transposed or not, with its
// leading dimension. Arrays with one unit stride are used in place; others are copied once.
template <typename T>
struct Operand {
  const T* ptr;
  bool trans;
  index_t ld;
  py::object keep;  // owns a copy when one was needed
};

template <typename T>
Operand<T> operand(const py::array& a) {
  const index_t rows = a.shape(0), cols = a.shape(1);
  const auto* p = static_cast<const T*>(a.data());
  if (rows == 0 || cols == 0) return {p, false, std::max<index_t>(cols, 1), py::object()};
  const py::ssize_t s0 = a.strides(0), s1 = a.strides(1);
  const auto item = static_cast<py::ssize_t>(sizeof(T));
  if (s0 % item == 0 && s1 % item == 0) {
    const index_t e0 = s0 / item, e1 = s1 / item;
    if (cols == 1 || e1 == 1) return {p, false, rows == 1 ? cols : e0, py::object()};
    if (rows == 1 || e0 == 1) return {p, true, cols == 1 ? rows : e1, py::object()};
  }
  py::array copy = py::module_::import("numpy").attr("ascontiguousarray")(a);
  return {static_cast<const T*>(copy.data()), false, cols, copy};
}

template <typename T>
py::array matmul_t(const py::array& a, const py::array& b, py::object out_obj) {
  const index_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
  py::array out;
  if (out_obj.is_none()) {
    out = py::array_t<T>({static_cast<py::ssize_t>(M), static_cast<py::ssize_t>(N)});
  } else {
    out = require_array(out_obj, "matmul", "out");
    if (!out.dtype().equal(a.dtype()))
      throw py::type_error("matmul: out must have dtype " + dtype_string(a) + " like a, got " +
                           dtype_string(out));
    if (out.ndim() != 2 || out.shape(0) != M || out.shape(1) != N)
      throw py::value_error("matmul: out must have shape (" + std::to_string(M) + ", " +
                            std::to_string(N) + "), got " + shape_string(out));
    if (!(out.flags() & py::array::c_style))
      throw py::value_error("matmul: out must be C-contiguous");
    if (!out.writeable()) throw py::value_error("matmul: out must be writable (it is read-only)");
    if (overlaps(out, a) || overlaps(out, b))
      throw py::value_error("matmul: out must not overlap a or b");
  }
  if (M == 0 || N == 0) return out;
  const Operand<T> oa = operand<T>(a), ob = operand<T>(b);
  T* c = static_cast<T*>(out.mutable_data());
  {
    GilRelease nogil;
    const mlpcore::DenormalsAsZero denormals;
    gm::gemm<T>(oa.trans, ob.trans, M, N, K, oa.ptr, oa.ld, ob.ptr, ob.ld, c, N, false);
  }
  return out;
}

py::array matmul(py::handle a_obj, py::handle b_obj, py::object out) {
  const py::array a = require_array(a_obj, "matmul", "a");
  const py::array b = require_array(b_obj, "matmul", "b");
  if (!is_f32(a) && !is_f64(a))
    throw py::type_error("matmul: a must have dtype float32 or float64, got " + dtype_string(a));
  if (!b.dtype().equal(a.dtype()))
    throw py::type_error("matmul: b must have dtype " + dtype_string(a) + " like a, got " +
                         dtype_string(b));
  require_2d(a, "matmul", "a");
  require_2d(b, "matmul", "b");
  if (a.shape(1) != b.shape(0))
    throw py::value_error("matmul: inner dimensions do not match: a has shape " + shape_string(a) +
                          " and b has shape " + shape_string(b) + " (" + std::to_string(a.shape(1)) +
                          " != " + std::to_string(b.shape(0)) + ")");
  return is_f32(a) ? matmul_t<float>(a, b, std::move(out)) : matmul_t<double>(a, b, std::move(out));
}

// ------------------------------------------------------------------ kernel_info
py::dict blocking_dict(const gm::Blocking& blk) {
  py::dict d;
  d["mr"] = blk.mr;
  d["nr"] = blk.nr;
  d["mc"] = blk.mc;
  d["kc"] = blk.kc;
  d["nc"] = blk.nc;
  d["b_in_place_bytes"] = blk.b_in_place_bytes;
  d["loop_order"] = blk.b_panel_in_l1 ? "b_panel_in_l1" : "a_panel_in_l1";
  return d;
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

py::dict kernel_info() {
  py::dict info;
  const gm::Isa active = gm::isa_active();
  info["isa"] = gm::isa_name(active);
  py::list avail;
  py::dict all;
  for (const gm::IsaEntry& e : gm::isa_table()) {
    if (e.usable()) avail.append(e.name);
    py::dict per;
    per["float32"] = blocking_dict(e.f32.blk);
    per["float64"] = blocking_dict(e.f64.blk);
    all[e.name] = per;
  }
  info["available"] = avail;
  info["best"] = gm::isa_name(gm::isa_best());
  info["float32"] = blocking_dict(gm::kernel_set<float>(active).blk);
  info["float64"] = blocking_dict(gm::kernel_set<double>(active).blk);
  info["blocking"] = all;
  const char* env = std::getenv("MLPCORE_GEMM_ISA");
  info["env_isa"] = env ? py::object(py::str(env)) : py::object(py::none());
  const gm::CacheSizes& caches = gm::cache_sizes();
  py::dict cache;
  cache["l1d"] = caches.l1d;
  cache["l2"] = caches.l2;
  cache["l3"] = caches.l3;  // 0: unknown
  cache["source"] = caches.source;
  const char* cache_env = std::getenv("MLPCORE_CACHE_SIZES");
  cache["env"] = cache_env ? py::object(py::str(cache_env)) : py::object(py::none());
  cache["env_ignored"] = caches.env_invalid;
  info["cache_sizes"] = cache;
  info["elementwise_isa"] = mlpcore::elementwise_isa_name(mlpcore::elementwise_isa());
  info["small_m"] = gm::cfg::kSmallM;
  info["direct_max_work"] = gm::cfg::kDirectMaxWork;
  info["narrow_max_columns"] = gm::cfg::kNarrowMaxColumns;
  info["parallel_min_work"] = gm::cfg::kParallelMinWork;
  info["shared_pack_min_work"] = gm::cfg::kSharedPackMinWork;
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["num_threads"] = max_threads();
  return info;
}

void set_gemm_isa(const std::string& name) {
  gm::Isa isa;
  std::string supported;
  for (const gm::IsaEntry& e : gm::isa_table())
    if (e.usable()) supported += std::string(supported.empty() ? "" : ", ") + e.name;
  if (!gm::isa_from_name(name.c_str(), &isa))
    throw py::value_error("_set_gemm_isa: unknown ISA '" + name +
                          "'; valid names: avx512, avx2, portable (usable here: " + supported +
                          ")");
  if (!gm::set_isa(isa))
    throw py::value_error("_set_gemm_isa: ISA '" + name + "' is not supported on this CPU; usable: " +
                          supported);
}

// ------------------------------------------------------------------ test hooks
// Stored operand of a hook: any 2-D array of the hook's dtype, converted to C order.
template <typename T>
py::array_t<T, py::array::c_style> stored(py::handle obj, const char* name) {
  py::array a = require_array(obj, "_gemm", name);
  require_2d(a, "_gemm", name);
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
}

template <typename T>
py::array_t<T, py::array::c_style> optional_same(py::handle obj, const char* name, index_t rows,
                                                 index_t cols) {
  auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!a) throw py::type_error(std::string("_gemm: bad ") + name);
  if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
    throw py::value_error(std::string("_gemm: ") + name + " has the wrong shape");
  return a;
}

struct Dims {
  index_t M, N, K;
};

template <typename T>
Dims dims(const py::array& a, const py::array& b, bool ta, bool tb) {
  const index_t M = ta ? a.shape(1) : a.shape(0), K = ta ? a.shape(0) : a.shape(1);
  const index_t K2 = tb ? b.shape(1) : b.shape(0), N = tb ? b.shape(0) : b.shape(1);
  if (K != K2) throw py::value_error("_gemm: inner dimensions do not match");
  return {M, N, K};
}

mlpcore::Act elementwise_act(mlpcore::Act act, const char* name) {
  if (!mlpcore::is_elementwise(act))
    throw py::value_error(std::string("_gemm_fused: ") + name +
                          " must be an element-wise activation, got " +
                          std::string(py::str(py::cast(act))));
  return act;
}

// C = op(A) op(B) (+ C): the optimised kernel (reference=false) or the oracle.
template <typename T>
py::array gemm_hook_t(py::handle a_obj, py::handle b_obj, bool ta, bool tb, py::object c_obj,
                      bool accumulate, bool reference) {
  auto a = stored<T>(a_obj, "a");
  auto b = stored<T>(b_obj, "b");
  const Dims d = dims<T>(a, b, ta, tb);
  py::array_t<T, py::array::c_style> c =
      c_obj.is_none() ? py::array_t<T, py::array::c_style>({d.M, d.N})
                      : optional_same<T>(c_obj, "c", d.M, d.N);
  if (c_obj.is_none() && accumulate) std::fill(c.mutable_data(), c.mutable_data() + d.M * d.N, T(0));
  const index_t lda = std::max<index_t>(1, a.shape(1)), ldb = std::max<index_t>(1, b.shape(1));
  T* cp = c.mutable_data();
  {
    GilRelease nogil;
    const mlpcore::DenormalsAsZero denormals;
    if (reference)
      gm::gemm_reference<T>(ta, tb, d.M, d.N, d.K, a.data(), lda, b.data(), ldb, cp, d.N,
                            accumulate);
    else
      gm::gemm<T>(ta, tb, d.M, d.N, d.K, a.data(), lda, b.data(), ldb, cp, d.N, accumulate);
  }
  return c;
}

template <typename T>
py::tuple gemm_fused_t(py::handle a_obj, py::handle b_obj, bool ta, bool tb, py::object bias_obj,
                       mlpcore::Act act, bool act_out, py::object dz_obj, py::object dy_obj,
                       mlpcore::Act deriv_act,
                       bool reference, const mlpcore::ActParams& params) {
  auto a = stored<T>(a_obj, "a");
  auto b = stored<T>(b_obj, "b");
  const Dims d = dims<T>(a, b, ta, tb);
  gm::Epilogue<T> ep;
  ep.params = params;
  ep.act = elementwise_act(act, "act");
  ep.deriv_act = elementwise_act(deriv_act, "deriv_act");
  py::array_t<T, py::array::c_style> bias, y, dz, dy;
  if (!bias_obj.is_none()) {
    bias = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(bias_obj);
    if (!bias || bias.ndim() != 1 || bias.shape(0) != d.N)
      throw py::value_error("_gemm_fused: bias must be 1-D of length N");
    ep.bias = bias.data();
  }
  if (act_out) {
    y = py::array_t<T, py::array::c_style>({d.M, d.N});
    ep.act_out = y.mutable_data();
  }
  if (!dz_obj.is_none()) {
    dz = optional_same<T>(dz_obj, "deriv_z", d.M, d.N);
    ep.deriv_z = dz.data();
    if (!dy_obj.is_none()) {
      dy = optional_same<T>(dy_obj, "deriv_y", d.M, d.N);
      ep.deriv_y = dy.data();
    }
  }
  py::array_t<T, py::array::c_style> c({d.M, d.N});
  const index_t lda = std::max<index_t>(1, a.shape(1)), ldb = std::max<index_t>(1, b.shape(1));
  T* cp = c.mutable_data();
  {
    GilRelease nogil;
    const mlpcore::DenormalsAsZero denormals;
    if (reference) {
      gm::gemm_reference<T>(ta, tb, d.M, d.N, d.K, a.data(), lda, b.data(), ldb, cp, d.N, false);
      gm::epilogue_reference<T>(d.M, d.N, cp, d.N, ep);
    } else {
      gm::gemm_fused<T>(ta, tb, d.M, d.N, d.K, a.data(), lda, b.data(), ldb, cp, d.N, ep);
    }
  }
  return py::make_tuple(c, act_out ? py::object(y) : py::object(py::none()));
}

bool hook_is_f64(py::handle a_obj) {
  py::array a = require_array(a_obj, "_gemm", "a");
  if (is_f64(a)) return true;
  if (is_f32(a)) return false;
  throw py::type_error("_gemm: a must have dtype float32 or float64, got " + dtype_string(a));
}

}  // namespace

void bind_matmul(py::module_& m) {
  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out") = py::none(),
        R"doc(Matrix product a @ b of two 2-D float32 or float64 arrays (same dtype).

Transposed views (e.g. ``x.T``) and views with one unit stride are used without copying.
If ``out`` is given it must be a C-contiguous, writable array of shape (M, N) and the same dtype,
not overlapping ``a`` or ``b``; the result is written there and ``out`` is returned.
Results are bitwise identical for any number of threads.)doc");
  m.def("kernel_info", &kernel_info,
        "GEMM kernel details: chosen ISA, usable ISAs, blocking constants, OpenMP and threads.");
  m.def("_set_gemm_isa", &set_gemm_isa, py::arg("name"),
        "Test hook: switch the GEMM micro-kernels ('avx512', 'avx2' or 'portable').");
  m.def("_get_gemm_isa", [] { return std::string(gm::isa_name(gm::isa_active())); });
  m.def(
      "_set_gemm_help_delay",
      [](int thread, int microseconds) {
        if (microseconds < 0 || microseconds > 1000000)
          throw py::value_error(
              "_set_gemm_help_delay: microseconds must lie in [0, 1000000], got " +
              std::to_string(microseconds));
        gm::set_help_test_delay(thread, microseconds);
      },
      py::arg("thread"), py::arg("microseconds"),
      "Test hook: the GEMM thread numbered `thread` pauses after publishing each block of its "
      "rectangle, so that the others help with it (a negative thread: none).");
  m.def("_gemm_units_helped", &gm::units_helped,
        "GEMM work units computed by a thread other than their owner, since the process started.");
  m.def(
      "fma_peak_gflops",
      [](int threads, double seconds) {
        mlpcore::bindings::check_threads(threads, "fma_peak_gflops", "threads");
        if (mlpcore::bindings::in_forked_child()) threads = 1;  // (its pool is gone)
        if (!(seconds > 0.0 && seconds <= 60.0))
          throw py::value_error("fma_peak_gflops: seconds must lie in (0, 60], got " +
                                std::to_string(seconds));
        int lanes = 0;
        double gflops;
        {
          GilRelease release;
          gflops = mlpcore::fma_peak_gflops(threads, seconds, &lanes);
        }
        return py::make_tuple(gflops, lanes);
      },
      py::arg("threads"), py::arg("seconds") = 0.2,
      "float32 FMA peak of `threads` threads at the element-wise ISA in use: (GFLOP/s, lanes); "
      "(0.0, 0) for the baseline kernels. Independent FMA chains, no memory traffic.");
  m.def("_get_elementwise_isa",
        [] { return std::string(mlpcore::elementwise_isa_name(mlpcore::elementwise_isa())); },
        "Test hook: the ISA copy of the element-wise kernels in use ('avx512', 'avx2', 'baseline').");
  m.def(
      "_set_cache_sizes",
      [](std::int64_t l1d, std::int64_t l2, std::int64_t l3) {
        if (!gm::set_cache_sizes(l1d, l2, l3))
          throw py::value_error(
              "_set_cache_sizes: expected l1d in [4 KiB, 4 MiB], l2 in [32 KiB, 1 GiB] and l3 0 "
              "(unknown) or in [64 KiB, 64 GiB] bytes, got l1d=" + std::to_string(l1d) +
              ", l2=" + std::to_string(l2) + ", l3=" + std::to_string(l3));
      },
      py::arg("l1d"), py::arg("l2"), py::arg("l3") = 0,
      "Test hook: derive every ISA's blocking from these cache sizes (bytes) from now on, as "
      "MLPCORE_CACHE_SIZES does at start-up. Not while a product runs.");
  m.def(
      "_gemm",
      [](py::handle a, py::handle b, bool ta, bool tb, py::object c, bool accumulate) {
        return hook_is_f64(a) ? gemm_hook_t<double>(a, b, ta, tb, c, accumulate, false)
                              : gemm_hook_t<float>(a, b, ta, tb, c, accumulate, false);
      },
      py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      py::arg("c") = py::none(), py::arg("accumulate") = false,
      "Test hook: C (+)= op(a) op(b) with the optimised kernel; a, b are the stored matrices.");
  m.def(
      "_gemm_reference",
      [](py::handle a, py::handle b, bool ta, bool tb, py::object c, bool accumulate) {
        return hook_is_f64(a) ? gemm_hook_t<double>(a, b, ta, tb, c, accumulate, true)
                              : gemm_hook_t<float>(a, b, ta, tb, c, accumulate, true);
      },
      py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      py::arg("c") = py::none(), py::arg("accumulate") = false,
      "Test hook: the triple-loop oracle gemm_reference.");
  m.def(
      "_gemm_fused",
      [](py::handle a, py::handle b, bool ta, bool tb, py::object bias, mlpcore::Act act,
         bool act_out, py::object deriv_z, py::object deriv_y, mlpcore::Act deriv_act,
         bool reference,
         double negative_slope, double alpha, double beta, double threshold) {
        mlpcore::ActParams p;
        p.negative_slope = negative_slope;
        p.alpha = alpha;
        p.beta = beta;
        p.threshold = threshold;
        return hook_is_f64(a) ? gemm_fused_t<double>(a, b, ta, tb, bias, act, act_out, deriv_z,
                                                     deriv_y, deriv_act, reference, p)
                              : gemm_fused_t<float>(a, b, ta, tb, bias, act, act_out, deriv_z,
                                                    deriv_y, deriv_act, reference, p);
      },
      py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      py::arg("bias") = py::none(), py::arg("act") = mlpcore::Act::Identity, py::arg("act_out") = false,
      py::arg("deriv_z") = py::none(), py::arg("deriv_y") = py::none(), py::arg("deriv_act") = mlpcore::Act::Identity,
      py::arg("reference") = false, py::arg("negative_slope") = 0.01, py::arg("alpha") = 1.0,
      py::arg("beta") = 1.0, py::arg("threshold") = 20.0,
      "Test hook: gemm_fused (or with reference=True, gemm_reference + epilogue_reference).\n"
      "Returns (c, act_out or None).");
}

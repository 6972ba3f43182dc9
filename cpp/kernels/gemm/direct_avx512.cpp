// Compiled with AVX-512 flags (gemm.cmake); called only when the AVX-512 path is active.
// Everything here has internal linkage or is a plain function: no templates from the standard
// library are instantiated in this file, so no AVX-512 copy of a shared (weak) symbol can be
// picked by the linker for code that runs on other CPUs.
#include "direct.hpp"

#include <cstddef>
#include <new>

#include "ukernel.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mlpcore::gemm {

template <typename T>
bool direct_applies(index_t M, index_t N, index_t K) noexcept {
  return M * N * K <= cfg::kDirectMaxWork && K <= blocking_for<T>(Isa::Avx512).kc;
}

#if defined(__AVX512F__)
namespace {

inline index_t min_index(index_t a, index_t b) noexcept { return a < b ? a : b; }

// A per-thread scratch buffer that only grows (no allocation once it is large enough).
struct Scratch {
  void* data = nullptr;
  std::size_t bytes = 0;
  void* get(std::size_t want) noexcept {
    if (want <= bytes) return data;
    ::operator delete(data, std::nothrow);
    data = ::operator new(want, std::nothrow);
    bytes = data ? want : 0;
    return data;
  }
  ~Scratch() { ::operator delete(data, std::nothrow); }
};
thread_local Scratch copied_b;

struct F32 {
  using T = float;
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int L = 16;
  static constexpr index_t NR = cfg::kAvx512F32.nr;  // of the packed B micro-panels
  static void pack_b(const T* B, index_t ldb, index_t K, index_t N, T* dst) noexcept {
    pack_b_f32_avx512(true, B, ldb, 0, 0, K, N, dst);
  }
  static V zero() noexcept { return _mm512_setzero_ps(); }
  static V set1(T x) noexcept { return _mm512_set1_ps(x); }
  static V load(const T* p, Mask m) noexcept { return _mm512_maskz_loadu_ps(m, p); }
  static void store(T* p, V v, Mask m) noexcept { _mm512_mask_storeu_ps(p, m, v); }
  static V fma(V a, V b, V c) noexcept { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) noexcept { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) noexcept { return _mm512_mul_ps(a, b); }
  // (x > 0 ? x : 0) and (x > 0 ? 1 : 0): an ordered compare, so NaN gives 0 as in the scalar code
  static V relu(V x) noexcept {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, zero(), _CMP_GT_OQ), x);
  }
  static V step(V x) noexcept {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, zero(), _CMP_GT_OQ), set1(1.0f));
  }
  static Mask mask(index_t n) noexcept {
    return n >= L ? Mask(0xFFFF) : n <= 0 ? Mask(0) : Mask((1u << n) - 1);
  }
};

struct F64 {
  using T = double;
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr int L = 8;
  static constexpr index_t NR = cfg::kAvx512F64.nr;
  static void pack_b(const T* B, index_t ldb, index_t K, index_t N, T* dst) noexcept {
    pack_b_f64_avx512(true, B, ldb, 0, 0, K, N, dst);
  }
  static V zero() noexcept { return _mm512_setzero_pd(); }
  static V set1(T x) noexcept { return _mm512_set1_pd(x); }
  static V load(const T* p, Mask m) noexcept { return _mm512_maskz_loadu_pd(m, p); }
  static void store(T* p, V v, Mask m) noexcept { _mm512_mask_storeu_pd(p, m, v); }
  static V fma(V a, V b, V c) noexcept { return _mm512_fmadd_pd(a, b, c); }
  static V add(V a, V b) noexcept { return _mm512_add_pd(a, b); }
  static V mul(V a, V b) noexcept { return _mm512_mul_pd(a, b); }
  static V relu(V x) noexcept {
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, zero(), _CMP_GT_OQ), x);
  }
  static V step(V x) noexcept {
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, zero(), _CMP_GT_OQ), set1(1.0));
  }
  static Mask mask(index_t n) noexcept {
    return n >= L ? Mask(0xFF) : n <= 0 ? Mask(0) : Mask((1u << n) - 1);
  }
};

// Rows i0 .. i0 + RB - 1 of C[:, 0 : w] for NV vectors of columns (w <= NV * L); row p of
// vector v of op(B) at col[v] + p * rs. Each loaded vector of B serves RB rows (RB * NV
// accumulators in registers).
template <class S, int RB, int NV>
void row_tile(bool trans_a, index_t i0, index_t K, const typename S::T* A, index_t lda,
              const typename S::T* const* col, index_t rs, typename S::T* C, index_t ldc,
              const typename S::Mask* mask, bool accumulate,
              const RegisterEpilogue<typename S::T>& ep) noexcept {
  using V = typename S::V;
  // Every loop over r and v is unrolled, so the accumulators live in registers (left to GCC,
  // they were kept on the stack: a store per FMA). Rows of op(A) are walked with one stride.
  const typename S::T* a_row[RB];
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r) a_row[r] = trans_a ? A + (i0 + r) : A + (i0 + r) * lda;
  const index_t a_step = trans_a ? lda : 1;
  V acc[RB][NV];
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = S::zero();
  const typename S::T* b_col[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) b_col[v] = col[v];
  for (index_t p = 0; p < K; ++p) {
    V bv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) bv[v] = S::load(b_col[v] + p * rs, mask[v]);
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r) {
      const V a = S::set1(a_row[r][p * a_step]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = S::fma(a, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r) {
    const index_t row = (i0 + r) * ldc;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const index_t at = row + v * S::L;
      V out = accumulate ? S::add(S::load(C + at, mask[v]), acc[r][v]) : acc[r][v];
      if (ep.bias) out = S::add(out, S::load(ep.bias + v * S::L, mask[v]));
      if (ep.relu_deriv_z) out = S::mul(out, S::step(S::load(ep.relu_deriv_z + at, mask[v])));
      S::store(C + at, out, mask[v]);
      if (ep.relu_out) S::store(ep.relu_out + at, S::relu(out), mask[v]);
    }
  }
}

// C[:, 0 : w] (w <= NV * L): row tiles of 4, then the remaining rows one by one.
template <class S, int NV>
void rows_block(bool trans_a, index_t M, index_t w, index_t K, const typename S::T* A,
                index_t lda, const typename S::T* const* col, index_t rs, typename S::T* C,
                index_t ldc, bool accumulate, const RegisterEpilogue<typename S::T>& ep) noexcept {
  typename S::Mask mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = S::mask(w - index_t(v) * S::L);
  constexpr int RB = 4;
  index_t i = 0;
  for (; i + RB <= M; i += RB)
    row_tile<S, RB, NV>(trans_a, i, K, A, lda, col, rs, C, ldc, mask, accumulate, ep);
  for (; i < M; ++i)
    row_tile<S, 1, NV>(trans_a, i, K, A, lda, col, rs, C, ldc, mask, accumulate, ep);
}

template <class S>
bool direct(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const typename S::T* A,
            index_t lda, const typename S::T* B, index_t ldb, typename S::T* C, index_t ldc,
            bool accumulate, const RegisterEpilogue<typename S::T>& ep) noexcept {
  using T = typename S::T;
  // op(B) = B^T is copied once. From K = L on, into the packed path's K x NR micro-panels by its
  // AVX-512 packer (which transposes L x L blocks; a scalar transpose cost more than the product
  // itself at 32 x 32 x 32); for smaller K, where those blocks would be mostly padding, into
  // plain K x N rows.
  static_assert(S::NR % S::L == 0, "a vector of columns must not straddle two micro-panels");
  const T* panels = nullptr;
  index_t rs = ldb;
  if (trans_b) {
    const bool pack = K >= S::L;
    const index_t width = pack ? (N + S::NR - 1) / S::NR * S::NR : N;
    T* buf = static_cast<T*>(copied_b.get(std::size_t(width * K) * sizeof(T)));
    if (!buf) return false;  // out of memory: the caller takes the packed path
    if (pack) {
      S::pack_b(B, ldb, K, N, buf);
      panels = buf;
      rs = S::NR;
    } else {
      for (index_t j = 0; j < N; ++j)
        for (index_t p = 0; p < K; ++p) buf[p * N + j] = B[j * ldb + p];
      B = buf;
      rs = N;
    }
  }
  constexpr index_t chunk = 4 * S::L;
  for (index_t j0 = 0; j0 < N; j0 += chunk) {
    const index_t w = min_index(chunk, N - j0);
    const int nv = int((w + S::L - 1) / S::L);
    const T* col[4];  // where each vector of columns starts (unused ones repeat the first)
    for (int v = 0; v < 4; ++v) {
      const index_t j = j0 + (v < nv ? v : 0) * S::L;
      col[v] = panels ? panels + j / S::NR * S::NR * K + j % S::NR : B + j;
    }
    T* c = C + j0;
    const RegisterEpilogue<T> e = ep.at(0, j0, ldc);  // shifted to the column block
    switch (nv) {
      case 1: rows_block<S, 1>(trans_a, M, w, K, A, lda, col, rs, c, ldc, accumulate, e); break;
      case 2: rows_block<S, 2>(trans_a, M, w, K, A, lda, col, rs, c, ldc, accumulate, e); break;
      case 3: rows_block<S, 3>(trans_a, M, w, K, A, lda, col, rs, c, ldc, accumulate, e); break;
      default: rows_block<S, 4>(trans_a, M, w, K, A, lda, col, rs, c, ldc, accumulate, e); break;
    }
  }
  return true;
}

}  // namespace

template <>
bool gemm_direct_avx512<float>(bool ta, bool tb, index_t M, index_t N, index_t K, const float* A,
                               index_t lda, const float* B, index_t ldb, float* C, index_t ldc,
                               bool accumulate, const RegisterEpilogue<float>& ep) noexcept {
  return direct<F32>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, ep);
}

template <>
bool gemm_direct_avx512<double>(bool ta, bool tb, index_t M, index_t N, index_t K,
                                const double* A, index_t lda, const double* B, index_t ldb,
                                double* C, index_t ldc, bool accumulate,
                                const RegisterEpilogue<double>& ep) noexcept {
  return direct<F64>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, ep);
}

bool direct_avx512_compiled() noexcept { return pack_avx512_compiled(); }  // B^T is packed there

#else  // built without AVX-512 flags: never dispatched to

template <typename T>
bool gemm_direct_avx512(bool, bool, index_t, index_t, index_t, const T*, index_t, const T*,
                        index_t, T*, index_t, bool, const RegisterEpilogue<T>&) noexcept {
  return false;
}
template bool gemm_direct_avx512<float>(bool, bool, index_t, index_t, index_t, const float*,
                                        index_t, const float*, index_t, float*, index_t, bool,
                                        const RegisterEpilogue<float>&) noexcept;
template bool gemm_direct_avx512<double>(bool, bool, index_t, index_t, index_t, const double*,
                                         index_t, const double*, index_t, double*, index_t, bool,
                                         const RegisterEpilogue<double>&) noexcept;
bool direct_avx512_compiled() noexcept { return false; }

#endif

template bool direct_applies<float>(index_t, index_t, index_t) noexcept;
template bool direct_applies<double>(index_t, index_t, index_t) noexcept;

}  // namespace mlpcore::gemm

// AVX-512 packing of GEMM operands into the micro-kernels' panel formats (the layout is the one
// pack.hpp documents: A micro-panels MR x kc k-major, B micro-panels kc x NR k-major, zeros past
// the edge). Contiguous runs are copied with masked full-width loads and stores; row gathers
// (op(A) = A, op(B) = B^T) go through 16x16 (float) or 8x8 (double) in-register transposes
// instead of the baseline build's 4x4 SSE ones.
//
// Compiled with AVX-512 flags (gemm.cmake) and only called after isa_supported(Isa::Avx512).
// Like ukernel_avx512.cpp it instantiates no standard-library template, so the linker can never
// pick an AVX-512 copy of a shared inline function for code that runs on other CPUs.
#include "ukernel.hpp"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>

#include <cstdint>

namespace mlpcore::gemm {

bool pack_avx512_compiled() noexcept { return true; }

namespace {

inline index_t min_index(index_t a, index_t b) noexcept { return a < b ? a : b; }

// r[i] = row i in, r[j] = column j out.
inline void transpose16(__m512 r[16]) noexcept {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + c], 128-bit lane l: rows 4g .. 4g+3 of column 4l + c
  __m512 u[16];
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // gather lane l of the four row groups into column 4l + c
  for (int c = 0; c < 4; ++c) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    const __m512 x1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
    const __m512 y0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 y1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    r[c] = _mm512_shuffle_f32x4(x0, y0, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(x1, y1, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
    r[12 + c] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
  }
}

inline void transpose8(__m512d r[8]) noexcept {
  // t[2g + c], 128-bit lane l: rows 2g, 2g+1 of column 2l + c
  __m512d t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
  }
  for (int c = 0; c < 2; ++c) {
    const __m512d x0 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x88);
    const __m512d x1 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xDD);
    const __m512d y0 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x88);
    const __m512d y1 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xDD);
    r[c] = _mm512_shuffle_f64x2(x0, y0, 0x88);
    r[2 + c] = _mm512_shuffle_f64x2(x1, y1, 0x88);
    r[4 + c] = _mm512_shuffle_f64x2(x0, y0, 0xDD);
    r[6 + c] = _mm512_shuffle_f64x2(x1, y1, 0xDD);
  }
}

// Vector traits: W lanes, masked loads and stores, the W x W transpose.
struct F32 {
  using T = float;
  using V = __m512;
  using M = __mmask16;
  static constexpr int W = 16;
  static M mask(index_t n) noexcept {
    return n >= W ? M(0xFFFF) : n <= 0 ? M(0) : M((1u << n) - 1u);
  }
  static V zero() noexcept { return _mm512_setzero_ps(); }
  static V load(M m, const T* p) noexcept { return _mm512_maskz_loadu_ps(m, p); }
  static void store(T* p, M m, V v) noexcept { _mm512_mask_storeu_ps(p, m, v); }
  static void transpose(V* r) noexcept { transpose16(r); }
};

struct F64 {
  using T = double;
  using V = __m512d;
  using M = __mmask8;
  static constexpr int W = 8;
  static M mask(index_t n) noexcept {
    return n >= W ? M(0xFF) : n <= 0 ? M(0) : M((1u << n) - 1u);
  }
  static V zero() noexcept { return _mm512_setzero_pd(); }
  static V load(M m, const T* p) noexcept { return _mm512_maskz_loadu_pd(m, p); }
  static void store(T* p, M m, V v) noexcept { _mm512_mask_storeu_pd(p, m, v); }
  static void transpose(V* r) noexcept { transpose8(r); }
};

// Software prefetch distance of the row gathers: 4 lines (2 and 8 measured no better or worse).
constexpr std::uintptr_t kAheadBytes = 4 * 64;

// dst[p * R + r] = src[r * ld + p] for r < rows (zero for rows <= r < R), p < kc.
template <class S, int R>
void gather_rows(const typename S::T* src, index_t ld, int rows, index_t kc,
                 typename S::T* dst) noexcept {
  constexpr int W = S::W;
  for (index_t p = 0; p < kc; p += W) {
    const index_t kv = min_index(W, kc - p);
    const typename S::M km = S::mask(kv);
    for (int g = 0; g < R; g += W) {
      typename S::V v[W];
      // The rows are `ld` apart, so the hardware sees `rows` short streams at once and fetches
      // each barely in time: request the lines a few steps ahead. The address is computed as an
      // integer: past kc it lies outside the array, which a prefetch may touch (it never faults)
      // but pointer arithmetic may not.
      for (int i = 0; i < W && g + i < rows; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(
                         reinterpret_cast<std::uintptr_t>(src + (g + i) * ld + p) + kAheadBytes),
                     _MM_HINT_T0);
      for (int i = 0; i < W; ++i)
        v[i] = g + i < rows ? S::load(km, src + (g + i) * ld + p) : S::zero();
      S::transpose(v);
      const typename S::M sm = S::mask(R - g);
      typename S::T* d = dst + p * R + g;
      if (kv == W) {
        for (int q = 0; q < W; ++q) S::store(d + q * R, sm, v[q]);
      } else {
        for (int q = 0; q < kv; ++q) S::store(d + q * R, sm, v[q]);
      }
    }
  }
}

// Copies `n` (<= C) contiguous values to a C-wide destination row, zeros past n.
template <class S, int C>
void copy_run(const typename S::T* src, int n, typename S::T* dst) noexcept {
  for (int v = 0; v < C; v += S::W)
    S::store(dst + v, S::mask(C - v), S::load(S::mask(n - v), src + v));
}

constexpr int kMR = 12;  // both dtypes (config.hpp: kAvx512F32 / kAvx512F64)
static_assert(cfg::kAvx512F32.mr == kMR && cfg::kAvx512F64.mr == kMR, "MR of the AVX-512 kernels");

template <class S>
void pack_a(bool trans_a, const typename S::T* A, index_t lda, index_t i0, index_t p0, index_t mc,
            index_t kc, typename S::T* dst) noexcept {
  for (index_t ir = 0; ir < mc; ir += kMR) {
    const int m = int(min_index(kMR, mc - ir));
    typename S::T* d = dst + ir * kc;
    if (trans_a) {  // op(A)(i, p) = A[p, i]: each k step is a contiguous run of m values
      const typename S::T* s = A + p0 * lda + i0 + ir;
      for (index_t p = 0; p < kc; ++p) copy_run<S, kMR>(s + p * lda, m, d + p * kMR);
    } else {
      gather_rows<S, kMR>(A + (i0 + ir) * lda + p0, lda, m, kc, d);
    }
  }
}

template <class S, int NR>
void pack_b(bool trans_b, const typename S::T* B, index_t ldb, index_t p0, index_t j0, index_t kc,
            index_t nc, typename S::T* dst) noexcept {
  if (!trans_b) {  // op(B)(p, j) = B[p, j]: each k step is a contiguous run of n values
    // Row by row across all micro-panels: each row of the block is read as one contiguous run
    // (a micro-panel at a time would read kc rows `ldb` apart per panel, a pattern the hardware
    // prefetchers follow badly).
    for (index_t p = 0; p < kc; ++p) {
      const typename S::T* s = B + (p0 + p) * ldb + j0;
      for (index_t jr = 0; jr < nc; jr += NR)
        copy_run<S, NR>(s + jr, int(min_index(NR, nc - jr)), dst + jr * kc + p * NR);
    }
    return;
  }
  for (index_t jr = 0; jr < nc; jr += NR)
    gather_rows<S, NR>(B + (j0 + jr) * ldb + p0, ldb, int(min_index(NR, nc - jr)), kc,
                       dst + jr * kc);
}

}  // namespace

void pack_a_f32_avx512(bool trans_a, const float* A, index_t lda, index_t i0, index_t p0,
                       index_t mc, index_t kc, float* dst) noexcept {
  pack_a<F32>(trans_a, A, lda, i0, p0, mc, kc, dst);
}

void pack_b_f32_avx512(bool trans_b, const float* B, index_t ldb, index_t p0, index_t j0,
                       index_t kc, index_t nc, float* dst) noexcept {
  pack_b<F32, cfg::kAvx512F32.nr>(trans_b, B, ldb, p0, j0, kc, nc, dst);
}

void pack_a_f64_avx512(bool trans_a, const double* A, index_t lda, index_t i0, index_t p0,
                       index_t mc, index_t kc, double* dst) noexcept {
  pack_a<F64>(trans_a, A, lda, i0, p0, mc, kc, dst);
}

void pack_b_f64_avx512(bool trans_b, const double* B, index_t ldb, index_t p0, index_t j0,
                       index_t kc, index_t nc, double* dst) noexcept {
  pack_b<F64, cfg::kAvx512F64.nr>(trans_b, B, ldb, p0, j0, kc, nc, dst);
}

}  // namespace mlpcore::gemm

#else  // built without the ISA flags: never dispatched to

namespace mlpcore::gemm {
bool pack_avx512_compiled() noexcept { return false; }
void pack_a_f32_avx512(bool, const float*, index_t, index_t, index_t, index_t, index_t,
                       float*) noexcept {}
void pack_b_f32_avx512(bool, const float*, index_t, index_t, index_t, index_t, index_t,
                       float*) noexcept {}
void pack_a_f64_avx512(bool, const double*, index_t, index_t, index_t, index_t, index_t,
                       double*) noexcept {}
void pack_b_f64_avx512(bool, const double*, index_t, index_t, index_t, index_t, index_t,
                       double*) noexcept {}
}  // namespace mlpcore::gemm
#endif

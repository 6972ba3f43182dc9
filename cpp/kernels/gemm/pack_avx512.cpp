// AVX-512 packing of GEMM operands into the micro-kernels' panel formats (the layout is the one
// pack.hpp documents: A micro-panels MR x kc k-major, B micro-panels kc x NR k-major, zeros past
// the edge). Contiguous runs are copied with masked full-width loads and stores; row gathers
// (op(A) = A, op(B) = B^T) go through 16x16 (float) or 8x8 (double) in-register transposes
// instead of the baseline build's 4x4 SSE ones.
//
// Compiled with AVX-512 flags (gemm.cmake) and only called after isa_supported(Isa::Avx512).
// Like direct_avx512.cpp it instantiates no standard-library template, so the linker can never
// pick an AVX-512 copy of a shared inline function for code that runs on other CPUs.
#include "ukernel.hpp"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>

namespace mlpcore::gemm {

bool pack_avx512_compiled() noexcept { return true; }

namespace {

inline index_t min_index(index_t a, index_t b) noexcept { return a < b ? a : b; }
inline __mmask16 mask16(index_t n) noexcept {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}
inline __mmask8 mask8(index_t n) noexcept {
  return n >= 8 ? __mmask8(0xFF) : n <= 0 ? __mmask8(0) : __mmask8((1u << n) - 1u);
}

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

// dst[p * R + r] = src[r * ld + p] for r < rows (zero for rows <= r < R), p < kc.
template <int R>
void gather_rows_f32(const float* src, index_t ld, int rows, index_t kc, float* dst) noexcept {
  for (index_t p = 0; p < kc; p += 16) {
    const index_t kv = min_index(16, kc - p);
    const __mmask16 km = mask16(kv);
    for (int g = 0; g < R; g += 16) {
      __m512 v[16];
      for (int i = 0; i < 16; ++i)
        v[i] = g + i < rows ? _mm512_maskz_loadu_ps(km, src + (g + i) * ld + p)
                            : _mm512_setzero_ps();
      transpose16(v);
      const __mmask16 sm = mask16(R - g);
      float* d = dst + p * R + g;
      if (kv == 16) {
        for (int q = 0; q < 16; ++q) _mm512_mask_storeu_ps(d + q * R, sm, v[q]);
      } else {
        for (int q = 0; q < kv; ++q) _mm512_mask_storeu_ps(d + q * R, sm, v[q]);
      }
    }
  }
}

template <int R>
void gather_rows_f64(const double* src, index_t ld, int rows, index_t kc, double* dst) noexcept {
  for (index_t p = 0; p < kc; p += 8) {
    const index_t kv = min_index(8, kc - p);
    const __mmask8 km = mask8(kv);
    for (int g = 0; g < R; g += 8) {
      __m512d v[8];
      for (int i = 0; i < 8; ++i)
        v[i] = g + i < rows ? _mm512_maskz_loadu_pd(km, src + (g + i) * ld + p)
                            : _mm512_setzero_pd();
      transpose8(v);
      const __mmask8 sm = mask8(R - g);
      double* d = dst + p * R + g;
      if (kv == 8) {
        for (int q = 0; q < 8; ++q) _mm512_mask_storeu_pd(d + q * R, sm, v[q]);
      } else {
        for (int q = 0; q < kv; ++q) _mm512_mask_storeu_pd(d + q * R, sm, v[q]);
      }
    }
  }
}

constexpr int kMR = 12;     // both dtypes (config.hpp: kAvx512F32 / kAvx512F64)
constexpr int kNR32 = 32;
constexpr int kNR64 = 16;
static_assert(cfg::kAvx512F32.mr == kMR && cfg::kAvx512F64.mr == kMR, "MR of the AVX-512 kernels");
static_assert(cfg::kAvx512F32.nr == kNR32 && cfg::kAvx512F64.nr == kNR64, "NR of the AVX-512 kernels");

}  // namespace

void pack_a_f32_avx512(bool trans_a, const float* A, index_t lda, index_t i0, index_t p0,
                       index_t mc, index_t kc, float* dst) noexcept {
  for (index_t ir = 0; ir < mc; ir += kMR) {
    const int m = int(min_index(kMR, mc - ir));
    float* d = dst + ir * kc;
    if (trans_a) {  // op(A)(i, p) = A[p, i]: each k step is a contiguous run of m values
      const float* s = A + p0 * lda + i0 + ir;
      const __mmask16 lm = mask16(m), sm = mask16(kMR);
      for (index_t p = 0; p < kc; ++p)
        _mm512_mask_storeu_ps(d + p * kMR, sm, _mm512_maskz_loadu_ps(lm, s + p * lda));
    } else {
      gather_rows_f32<kMR>(A + (i0 + ir) * lda + p0, lda, m, kc, d);
    }
  }
}

void pack_b_f32_avx512(bool trans_b, const float* B, index_t ldb, index_t p0, index_t j0,
                       index_t kc, index_t nc, float* dst) noexcept {
  for (index_t jr = 0; jr < nc; jr += kNR32) {
    const int n = int(min_index(kNR32, nc - jr));
    float* d = dst + jr * kc;
    if (!trans_b) {  // op(B)(p, j) = B[p, j]: each k step is a contiguous run of n values
      const float* s = B + p0 * ldb + j0 + jr;
      const __mmask16 m0 = mask16(n), m1 = mask16(n - 16);
      for (index_t p = 0; p < kc; ++p) {
        _mm512_storeu_ps(d + p * kNR32, _mm512_maskz_loadu_ps(m0, s + p * ldb));
        _mm512_storeu_ps(d + p * kNR32 + 16, _mm512_maskz_loadu_ps(m1, s + p * ldb + 16));
      }
    } else {
      gather_rows_f32<kNR32>(B + (j0 + jr) * ldb + p0, ldb, n, kc, d);
    }
  }
}

void pack_a_f64_avx512(bool trans_a, const double* A, index_t lda, index_t i0, index_t p0,
                       index_t mc, index_t kc, double* dst) noexcept {
  for (index_t ir = 0; ir < mc; ir += kMR) {
    const int m = int(min_index(kMR, mc - ir));
    double* d = dst + ir * kc;
    if (trans_a) {
      const double* s = A + p0 * lda + i0 + ir;
      const __mmask8 m0 = mask8(m), m1 = mask8(m - 8), tail = mask8(kMR - 8);
      for (index_t p = 0; p < kc; ++p) {
        _mm512_storeu_pd(d + p * kMR, _mm512_maskz_loadu_pd(m0, s + p * lda));
        _mm512_mask_storeu_pd(d + p * kMR + 8, tail, _mm512_maskz_loadu_pd(m1, s + p * lda + 8));
      }
    } else {
      gather_rows_f64<kMR>(A + (i0 + ir) * lda + p0, lda, m, kc, d);
    }
  }
}

void pack_b_f64_avx512(bool trans_b, const double* B, index_t ldb, index_t p0, index_t j0,
                       index_t kc, index_t nc, double* dst) noexcept {
  for (index_t jr = 0; jr < nc; jr += kNR64) {
    const int n = int(min_index(kNR64, nc - jr));
    double* d = dst + jr * kc;
    if (!trans_b) {
      const double* s = B + p0 * ldb + j0 + jr;
      const __mmask8 m0 = mask8(n), m1 = mask8(n - 8);
      for (index_t p = 0; p < kc; ++p) {
        _mm512_storeu_pd(d + p * kNR64, _mm512_maskz_loadu_pd(m0, s + p * ldb));
        _mm512_storeu_pd(d + p * kNR64 + 8, _mm512_maskz_loadu_pd(m1, s + p * ldb + 8));
      }
    } else {
      gather_rows_f64<kNR64>(B + (j0 + jr) * ldb + p0, ldb, n, kc, d);
    }
  }
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

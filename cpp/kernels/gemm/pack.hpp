// Packing of GEMM operands into the micro-kernels' panel formats (no transpose is materialised:
// the four layouts are handled while packing).
//
// A block (mc x kc of op(A), starting at row i0, column p0) -> ceil(mc / MR) micro-panels, each
//   MR x kc stored k-major: panel[p * MR + r] = op(A)(i0 + r, p0 + p); rows past mc are zero.
// B block (kc x nc of op(B), starting at row p0, column j0) -> ceil(nc / NR) micro-panels, each
//   kc x NR stored k-major: panel[p * NR + c] = op(B)(p0 + p, j0 + c); columns past nc are zero.
#pragma once
#include <algorithm>
#include <cstring>

#include "../common.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace mlpcore::gemm {

// dst[p * S + r] = src[r * ld + p] for r < rows, p < kc: interleaves `rows` rows of a row-major
// matrix into k-major micro-panel order. SSE2 (x86-64 baseline) 4x4 / 2x2 transposes (and 2x4
// for a float pair of rows left) for the full blocks, scalar loops for the rest.
template <typename T>
inline void gather_rows(const T* src, index_t ld, int rows, index_t kc, T* dst, int S) noexcept {
  int r = 0;
#if defined(__SSE2__)
  if constexpr (sizeof(T) == 4) {
    const index_t kc4 = kc / 4 * 4;
    for (; r + 4 <= rows; r += 4) {
      const float* s0 = reinterpret_cast<const float*>(src) + r * ld;
      float* d = reinterpret_cast<float*>(dst) + r;
      for (index_t p = 0; p < kc4; p += 4) {
        __m128 x0 = _mm_loadu_ps(s0 + p), x1 = _mm_loadu_ps(s0 + ld + p);
        __m128 x2 = _mm_loadu_ps(s0 + 2 * ld + p), x3 = _mm_loadu_ps(s0 + 3 * ld + p);
        _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
        _mm_storeu_ps(d + p * S, x0);
        _mm_storeu_ps(d + (p + 1) * S, x1);
        _mm_storeu_ps(d + (p + 2) * S, x2);
        _mm_storeu_ps(d + (p + 3) * S, x3);
      }
      for (index_t p = kc4; p < kc; ++p)
        for (int q = 0; q < 4; ++q) d[p * S + q] = s0[q * ld + p];
    }
    // A pair of rows left (rows 4-5 of AVX2's 6-row A panels): 2x4 interleaves, not scalars.
    if (r + 2 <= rows) {
      const float* s0 = reinterpret_cast<const float*>(src) + r * ld;
      float* d = reinterpret_cast<float*>(dst) + r;
      for (index_t p = 0; p < kc4; p += 4) {
        const __m128 x0 = _mm_loadu_ps(s0 + p), x1 = _mm_loadu_ps(s0 + ld + p);
        const __m128 lo = _mm_unpacklo_ps(x0, x1), hi = _mm_unpackhi_ps(x0, x1);
        _mm_storel_pi(reinterpret_cast<__m64*>(d + p * S), lo);
        _mm_storeh_pi(reinterpret_cast<__m64*>(d + (p + 1) * S), lo);
        _mm_storel_pi(reinterpret_cast<__m64*>(d + (p + 2) * S), hi);
        _mm_storeh_pi(reinterpret_cast<__m64*>(d + (p + 3) * S), hi);
      }
      for (index_t p = kc4; p < kc; ++p)
        for (int q = 0; q < 2; ++q) d[p * S + q] = s0[q * ld + p];
      r += 2;
    }
  } else {
    const index_t kc2 = kc / 2 * 2;
    for (; r + 2 <= rows; r += 2) {
      const double* s0 = reinterpret_cast<const double*>(src) + r * ld;
      double* d = reinterpret_cast<double*>(dst) + r;
      for (index_t p = 0; p < kc2; p += 2) {
        const __m128d x0 = _mm_loadu_pd(s0 + p), x1 = _mm_loadu_pd(s0 + ld + p);
        _mm_storeu_pd(d + p * S, _mm_unpacklo_pd(x0, x1));
        _mm_storeu_pd(d + (p + 1) * S, _mm_unpackhi_pd(x0, x1));
      }
      for (index_t p = kc2; p < kc; ++p)
        for (int q = 0; q < 2; ++q) d[p * S + q] = s0[q * ld + p];
    }
  }
#endif
  for (; r < rows; ++r) {
    const T* s = src + r * ld;
    for (index_t p = 0; p < kc; ++p) dst[p * S + r] = s[p];
  }
}

// Rows of the source per band of copy_full_panels.
constexpr index_t kPackBandRows = 8;

// The full micro-panels (W wide, `full` a multiple of W) of a source whose k steps are its rows,
// each a contiguous run (B not transposed, A transposed), copied band by band: kPackBandRows
// rows, each read left to right (a few sequential streams the hardware prefetcher follows), land
// as a contiguous run in every panel. Panel by panel, each row of a panel came from its own page,
// a cache miss the prefetcher never sees coming when the source is not in cache (half the time
// of a 16-row product on AVX2). The same copy either way.
template <typename T>
inline void copy_full_panels(const T* src, index_t ld, index_t kc, index_t full, int W,
                             T* dst) noexcept {
  for (index_t pb = 0; pb < kc; pb += kPackBandRows) {
    const index_t pe = std::min(kc, pb + kPackBandRows);
    for (index_t j = 0; j < full; j += W) {
      const T* s = src + pb * ld + j;
      T* d = dst + j * kc + pb * W;
      for (index_t p = pb; p < pe; ++p, s += ld, d += W) std::memcpy(d, s, sizeof(T) * W);
    }
  }
}

template <typename T>
inline void pack_a_panel(bool trans_a, const T* A, index_t lda, index_t i0, index_t p0, int m,
                         index_t kc, int MR, T* dst) noexcept {
  if (trans_a) {
    // op(A)(i, p) = A[p, i]: each k step is a contiguous run of m values.
    const T* src = A + p0 * lda + i0;
    for (index_t p = 0; p < kc; ++p) {
      T* d = dst + p * MR;
      const T* s = src + p * lda;
      for (int r = 0; r < m; ++r) d[r] = s[r];
      for (int r = m; r < MR; ++r) d[r] = T(0);
    }
  } else {
    // op(A)(i, p) = A[i, p]: interleave m rows (transposing small blocks).
    gather_rows(A + i0 * lda + p0, lda, m, kc, dst, MR);
    if (m < MR)
      for (index_t p = 0; p < kc; ++p)
        for (int r = m; r < MR; ++r) dst[p * MR + r] = T(0);
  }
}

template <typename T>
inline void pack_a(bool trans_a, const T* A, index_t lda, index_t i0, index_t p0, index_t mc,
                   index_t kc, int MR, T* dst) noexcept {
  // A transposed: its k steps are rows, copied band by band like B's (784 x 256 x 256 TN
  // float32 on a Zen 3: packing 9% -> 4% of the product, 0.91x -> 0.96x OpenBLAS)
  if (trans_a) {
    const index_t full = mc / MR * MR;
    copy_full_panels(A + p0 * lda + i0, lda, kc, full, MR, dst);
    if (full < mc)
      pack_a_panel(true, A, lda, i0 + full, p0, int(mc - full), kc, MR, dst + full * kc);
    return;
  }
  for (index_t ir = 0; ir < mc; ir += MR) {
    const int m = static_cast<int>(std::min<index_t>(MR, mc - ir));
    pack_a_panel(trans_a, A, lda, i0 + ir, p0, m, kc, MR, dst + ir * kc);
  }
}

template <typename T>
inline void pack_b_panel(bool trans_b, const T* B, index_t ldb, index_t p0, index_t j0, int n,
                         index_t kc, int NR, T* dst) noexcept {
  if (!trans_b) {
    // op(B)(p, j) = B[p, j]: each k step is a contiguous run of n values.
    const T* src = B + p0 * ldb + j0;
    if (n == NR) {
      for (index_t p = 0; p < kc; ++p) std::memcpy(dst + p * NR, src + p * ldb, sizeof(T) * NR);
    } else {
      for (index_t p = 0; p < kc; ++p) {
        T* d = dst + p * NR;
        const T* s = src + p * ldb;
        for (int c = 0; c < n; ++c) d[c] = s[c];
        for (int c = n; c < NR; ++c) d[c] = T(0);
      }
    }
  } else {
    // op(B)(p, j) = B[j, p]: interleave n rows of B (transposing small blocks).
    gather_rows(B + j0 * ldb + p0, ldb, n, kc, dst, NR);
    if (n < NR)
      for (index_t p = 0; p < kc; ++p)
        for (int c = n; c < NR; ++c) dst[p * NR + c] = T(0);
  }
}

template <typename T>
inline void pack_b(bool trans_b, const T* B, index_t ldb, index_t p0, index_t j0, index_t kc,
                   index_t nc, int NR, T* dst) noexcept {
  if (!trans_b) {
    const index_t full = nc / NR * NR;
    copy_full_panels(B + p0 * ldb + j0, ldb, kc, full, NR, dst);
    if (full < nc)
      pack_b_panel(false, B, ldb, p0, j0 + full, int(nc - full), kc, NR, dst + full * kc);
    return;
  }
  for (index_t jr = 0; jr < nc; jr += NR) {
    const int n = static_cast<int>(std::min<index_t>(NR, nc - jr));
    pack_b_panel(trans_b, B, ldb, p0, j0 + jr, n, kc, NR, dst + jr * kc);
  }
}

}  // namespace mlpcore::gemm

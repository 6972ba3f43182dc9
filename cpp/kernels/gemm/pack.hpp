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

namespace mlpcore::gemm {

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
    // op(A)(i, p) = A[i, p]: interleave m rows; go through k in chunks so each row is read in
    // cache-line sized runs.
    const T* src = A + i0 * lda + p0;
    constexpr index_t kChunk = 64 / sizeof(T);
    for (index_t pb = 0; pb < kc; pb += kChunk) {
      const index_t pe = std::min(kc, pb + kChunk);
      for (int r = 0; r < m; ++r) {
        const T* s = src + r * lda;
        for (index_t p = pb; p < pe; ++p) dst[p * MR + r] = s[p];
      }
      for (int r = m; r < MR; ++r)
        for (index_t p = pb; p < pe; ++p) dst[p * MR + r] = T(0);
    }
  }
}

template <typename T>
inline void pack_a(bool trans_a, const T* A, index_t lda, index_t i0, index_t p0, index_t mc,
                   index_t kc, int MR, T* dst) noexcept {
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
    // op(B)(p, j) = B[j, p]: interleave n rows of B, k in cache-line sized chunks.
    const T* src = B + j0 * ldb + p0;
    constexpr index_t kChunk = 64 / sizeof(T);
    for (index_t pb = 0; pb < kc; pb += kChunk) {
      const index_t pe = std::min(kc, pb + kChunk);
      for (int c = 0; c < n; ++c) {
        const T* s = src + c * ldb;
        for (index_t p = pb; p < pe; ++p) dst[p * NR + c] = s[p];
      }
      for (int c = n; c < NR; ++c)
        for (index_t p = pb; p < pe; ++p) dst[p * NR + c] = T(0);
    }
  }
}

template <typename T>
inline void pack_b(bool trans_b, const T* B, index_t ldb, index_t p0, index_t j0, index_t kc,
                   index_t nc, int NR, T* dst) noexcept {
  for (index_t jr = 0; jr < nc; jr += NR) {
    const int n = static_cast<int>(std::min<index_t>(NR, nc - jr));
    pack_b_panel(trans_b, B, ldb, p0, j0 + jr, n, kc, NR, dst + jr * kc);
  }
}

}  // namespace mlpcore::gemm

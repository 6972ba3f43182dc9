// Portable micro-kernels: plain C++ loops over an MR x NR tile (the compiler vectorises them for
// the baseline ISA). Also used as a test oracle for the SIMD kernels.
#include "ukernel.hpp"

namespace mlpcore::gemm {

namespace {

template <typename T, int MR, int NR>
inline void ukernel_portable(index_t kc, const T* a, const T* b, index_t rsb, T* c, index_t ldc,
                             int m, int n, bool accumulate, const RegisterEpilogue<T>* ep) noexcept {
  T t[MR][NR] = {};
  if (n == NR) {
    for (index_t p = 0; p < kc; ++p) {
      const T* bp = b + p * rsb;
      for (int i = 0; i < MR; ++i) {
        const T ai = a[p * MR + i];
        for (int j = 0; j < NR; ++j) t[i][j] += ai * bp[j];
      }
    }
  } else {
    for (index_t p = 0; p < kc; ++p) {
      const T* bp = b + p * rsb;
      for (int i = 0; i < MR; ++i) {
        const T ai = a[p * MR + i];
        for (int j = 0; j < n; ++j) t[i][j] += ai * bp[j];
      }
    }
  }
  for (int i = 0; i < m; ++i) {
    T* ci = c + i * ldc;
    if (accumulate) {
      for (int j = 0; j < n; ++j) ci[j] += t[i][j];
    } else {
      for (int j = 0; j < n; ++j) ci[j] = t[i][j];
    }
    if (!ep) continue;
    if (ep->bias)
      for (int j = 0; j < n; ++j) ci[j] += ep->bias[j];
    if (ep->relu_deriv_z)
      for (int j = 0; j < n; ++j) ci[j] *= ep->relu_deriv_z[i * ldc + j] > T(0) ? T(1) : T(0);
    if (ep->relu_out)
      for (int j = 0; j < n; ++j) ep->relu_out[i * ldc + j] = !(ci[j] <= T(0)) ? ci[j] : T(0);
  }
}

}  // namespace

void ukernel_f32_4x16_portable(index_t kc, const float* a, const float* b, index_t rsb, float* c,
                               index_t ldc, int m, int n, bool accumulate,
                               const RegisterEpilogue<float>* ep) noexcept {
  constexpr Blocking blk = cfg::kPortableF32;
  static_assert(blk.mr == 4 && blk.nr == 16, "name and shape must agree");
  ukernel_portable<float, blk.mr, blk.nr>(kc, a, b, rsb, c, ldc, m, n, accumulate, ep);
}

void ukernel_f64_4x8_portable(index_t kc, const double* a, const double* b, index_t rsb, double* c,
                              index_t ldc, int m, int n, bool accumulate,
                              const RegisterEpilogue<double>* ep) noexcept {
  constexpr Blocking blk = cfg::kPortableF64;
  static_assert(blk.mr == 4 && blk.nr == 8, "name and shape must agree");
  ukernel_portable<double, blk.mr, blk.nr>(kc, a, b, rsb, c, ldc, m, n, accumulate, ep);
}

}  // namespace mlpcore::gemm

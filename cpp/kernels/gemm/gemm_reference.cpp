#include "gemm.hpp"

namespace mlpcore::gemm {

template <typename T>
void gemm_reference(bool trans_a, bool trans_b, index_t M, index_t N, index_t K,
                    const T* A, index_t lda, const T* B, index_t ldb,
                    T* C, index_t ldc, bool accumulate) noexcept {
  for (index_t i = 0; i < M; ++i) {
    for (index_t j = 0; j < N; ++j) {
      T sum = 0;
      for (index_t p = 0; p < K; ++p) {
        const T a = trans_a ? A[p * lda + i] : A[i * lda + p];
        const T b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
        sum += a * b;
      }
      C[i * ldc + j] = accumulate ? C[i * ldc + j] + sum : sum;
    }
  }
}

template void gemm_reference<float>(bool, bool, index_t, index_t, index_t, const float*, index_t,
                                    const float*, index_t, float*, index_t, bool) noexcept;
template void gemm_reference<double>(bool, bool, index_t, index_t, index_t, const double*, index_t,
                                     const double*, index_t, double*, index_t, bool) noexcept;

}  // namespace mlpcore::gemm

#include "../activations.hpp"

namespace mlpcore::gemm {

template <typename T>
void epilogue_reference(index_t M, index_t N, T* C, index_t ldc, const Epilogue<T>& ep) noexcept {
  for (index_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    for (index_t j = 0; j < N; ++j) {
      T v = c[j];
      if (ep.bias) v += ep.bias[j];
      if (ep.act_out) ep.act_out[i * ldc + j] = act_forward(ep.act, v, ep.params);
      if (ep.deriv_z) {
        const T z = ep.deriv_z[i * ldc + j];
        const T y = ep.deriv_y ? ep.deriv_y[i * ldc + j] : act_forward(ep.deriv_act, z, ep.params);
        v *= act_derivative(ep.deriv_act, z, y, ep.params);
      }
      c[j] = v;
    }
  }
}

template void epilogue_reference<float>(index_t, index_t, float*, index_t,
                                        const Epilogue<float>&) noexcept;
template void epilogue_reference<double>(index_t, index_t, double*, index_t,
                                         const Epilogue<double>&) noexcept;

}  // namespace mlpcore::gemm

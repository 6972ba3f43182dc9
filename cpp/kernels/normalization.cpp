#include "normalization.hpp"

#include <algorithm>
#include <cmath>

#include "isa_regions.hpp"

namespace mlpcore {

namespace normalization_baseline {
#include "normalization_rules.inl"
}  // namespace normalization_baseline

// The AVX2 and AVX-512 copies (elementwise_copy.inl, compiled in their own files).
#define MLPCORE_DECLARE_NORMALIZATION_COPY(ns)                                                  \
  namespace ns {                                                                              \
  template <typename T>                                                                       \
  void layernorm_forward(const T*, const T*, const T*, T*, T*, T*, index_t, index_t,          \
                         double) noexcept;                                                    \
  template <typename T>                                                                       \
  void layernorm_backward(const T*, const T*, const T*, const T*, const T*, T*, T*, T*,       \
                          index_t, index_t) noexcept;                                         \
  template <typename T>                                                                       \
  void batchnorm_forward_train(const T*, const T*, const T*, T*, T*, T*, T*, T*, index_t,     \
                               index_t, double, double, const StatReducer*, double*) noexcept; \
  template <typename T>                                                                       \
  void batchnorm_forward_eval(const T*, const T*, const T*, T*, const T*, const T*, index_t,  \
                              index_t, double) noexcept;                                      \
  template <typename T>                                                                       \
  void batchnorm_backward(const T*, const T*, const T*, const T*, const T*, T*, T*, T*,       \
                          index_t, index_t, const StatReducer*, double*) noexcept;            \
  }
MLPCORE_DECLARE_NORMALIZATION_COPY(normalization_avx2)
MLPCORE_DECLARE_NORMALIZATION_COPY(normalization_avx512)
#undef MLPCORE_DECLARE_NORMALIZATION_COPY

// Each entry point runs the copy of the active ISA.
#define MLPCORE_DISPATCH(call)                                                                  \
  switch (elementwise_isa()) {                                                                \
    case ElementwiseIsa::Avx512: return normalization_avx512::call;                           \
    case ElementwiseIsa::Avx2: return normalization_avx2::call;                               \
    case ElementwiseIsa::Baseline: return normalization_baseline::call;                       \
  }

template <typename T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd,
                       index_t rows, index_t cols, double eps) noexcept {
  MLPCORE_DISPATCH(layernorm_forward(x, gamma, beta, y, mean, rstd, rows, cols, eps))
}

template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                        T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols) noexcept {
  MLPCORE_DISPATCH(layernorm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols))
}

template <typename T>
void batchnorm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd,
                             T* running_mean, T* running_var, index_t rows, index_t cols,
                             double eps, double momentum, const StatReducer* sync,
                             double* scratch) noexcept {
  MLPCORE_DISPATCH(batchnorm_forward_train(x, gamma, beta, y, mean, rstd, running_mean,
                                           running_var, rows, cols, eps, momentum, sync,
                                           scratch))
}

template <typename T>
void batchnorm_forward_eval(const T* x, const T* gamma, const T* beta, T* y,
                            const T* running_mean, const T* running_var, index_t rows,
                            index_t cols, double eps) noexcept {
  MLPCORE_DISPATCH(batchnorm_forward_eval(x, gamma, beta, y, running_mean, running_var, rows,
                                          cols, eps))
}

template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                        T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols,
                        const StatReducer* sync, double* scratch) noexcept {
  MLPCORE_DISPATCH(batchnorm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols,
                                      sync, scratch))
}
#undef MLPCORE_DISPATCH

#define MLPCORE_INSTANTIATE(T)                                                                  \
  template void layernorm_forward<T>(const T*, const T*, const T*, T*, T*, T*, index_t,       \
                                     index_t, double) noexcept;                               \
  template void layernorm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*,   \
                                      T*, T*, index_t, index_t) noexcept;                     \
  template void batchnorm_forward_train<T>(const T*, const T*, const T*, T*, T*, T*, T*, T*,  \
                                           index_t, index_t, double, double,                  \
                                           const StatReducer*, double*) noexcept;             \
  template void batchnorm_forward_eval<T>(const T*, const T*, const T*, T*, const T*,         \
                                          const T*, index_t, index_t, double) noexcept;       \
  template void batchnorm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*,   \
                                      T*, T*, index_t, index_t, const StatReducer*,           \
                                      double*) noexcept;
MLPCORE_INSTANTIATE(float)
MLPCORE_INSTANTIATE(double)
#undef MLPCORE_INSTANTIATE

}  // namespace mlpcore

#include "activations.hpp"

#include "isa_regions.hpp"

namespace mlpcore {

namespace activations_baseline {
#include "activations_rules.inl"
}  // namespace activations_baseline

// The AVX2 and AVX-512 copies (elementwise_copy.inl, compiled in their own files).
#define MLPCORE_DECLARE_ACTIVATIONS_COPY(ns)                                                    \
  namespace ns {                                                                              \
  template <typename T>                                                                       \
  void forward(Act, const ActParams&, const T*, T*, index_t, index_t) noexcept;               \
  template <typename T>                                                                       \
  void backward(Act, const ActParams&, const T*, const T*, const T*, T*, index_t, index_t) noexcept; \
  }
MLPCORE_DECLARE_ACTIVATIONS_COPY(activations_avx2)
MLPCORE_DECLARE_ACTIVATIONS_COPY(activations_avx512)
#undef MLPCORE_DECLARE_ACTIVATIONS_COPY

template <typename T>
void activation_forward(Act act, const ActParams& p, const T* z, T* y, index_t rows,
                        index_t cols) noexcept {
  switch (elementwise_isa()) {
    case ElementwiseIsa::Avx512: return activations_avx512::forward(act, p, z, y, rows, cols);
    case ElementwiseIsa::Avx2: return activations_avx2::forward(act, p, z, y, rows, cols);
    case ElementwiseIsa::Baseline: return activations_baseline::forward(act, p, z, y, rows, cols);
  }
}

template <typename T>
void activation_backward(Act act, const ActParams& p, const T* dy, const T* z, const T* y, T* dz,
                         index_t rows, index_t cols) noexcept {
  switch (elementwise_isa()) {
    case ElementwiseIsa::Avx512:
      return activations_avx512::backward(act, p, dy, z, y, dz, rows, cols);
    case ElementwiseIsa::Avx2: return activations_avx2::backward(act, p, dy, z, y, dz, rows, cols);
    case ElementwiseIsa::Baseline:
      return activations_baseline::backward(act, p, dy, z, y, dz, rows, cols);
  }
}

template void activation_forward<float>(Act, const ActParams&, const float*, float*, index_t,
                                        index_t) noexcept;
template void activation_forward<double>(Act, const ActParams&, const double*, double*, index_t,
                                         index_t) noexcept;
template void activation_backward<float>(Act, const ActParams&, const float*, const float*,
                                         const float*, float*, index_t, index_t) noexcept;
template void activation_backward<double>(Act, const ActParams&, const double*, const double*,
                                          const double*, double*, index_t, index_t) noexcept;

}  // namespace mlpcore

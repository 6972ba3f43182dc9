#include "losses.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "isa_regions.hpp"

namespace mlpcore {

namespace losses_baseline {
#include "losses_rules.inl"
}  // namespace losses_baseline

// The AVX2 and AVX-512 copies (elementwise_copy.inl, compiled in their own files).
#define MLPCORE_DECLARE_LOSSES_COPY(ns)                                                          \
  namespace ns {                                                                               \
  template <typename T>                                                                        \
  double forward_backward(Loss, const LossParams&, const T*, index_t, index_t,                 \
                          const Targets<T>&, T*, index_t, std::int64_t*) noexcept;             \
  template <typename T>                                                                        \
  std::int64_t correct(Loss, const T*, index_t, index_t, const Targets<T>&) noexcept;          \
  }
MLPCORE_DECLARE_LOSSES_COPY(losses_avx2)  // (which AVX-512 CPUs run too: elementwise_avx512.cpp)
#undef MLPCORE_DECLARE_LOSSES_COPY

template <typename T>
double loss_forward_backward(Loss loss, const LossParams& lp, const T* out, index_t n, index_t k,
                             const Targets<T>& targets, T* dout, index_t batch_rows,
                             std::int64_t* n_correct) noexcept {
  switch (elementwise_isa()) {
    case ElementwiseIsa::Avx512:
    case ElementwiseIsa::Avx2:
      return losses_avx2::forward_backward(loss, lp, out, n, k, targets, dout, batch_rows,
                                           n_correct);
    case ElementwiseIsa::Baseline:
      return losses_baseline::forward_backward(loss, lp, out, n, k, targets, dout, batch_rows,
                                               n_correct);
  }
  return 0.0;
}

template <typename T>
std::int64_t count_correct(Loss loss, const T* out, index_t n, index_t k,
                           const Targets<T>& targets) noexcept {
  switch (elementwise_isa()) {
    case ElementwiseIsa::Avx512:
    case ElementwiseIsa::Avx2: return losses_avx2::correct(loss, out, n, k, targets);
    case ElementwiseIsa::Baseline: return losses_baseline::correct(loss, out, n, k, targets);
  }
  return 0;
}

template double loss_forward_backward<float>(Loss, const LossParams&, const float*, index_t,
                                             index_t, const Targets<float>&, float*, index_t,
                                             std::int64_t*) noexcept;
template double loss_forward_backward<double>(Loss, const LossParams&, const double*, index_t,
                                              index_t, const Targets<double>&, double*, index_t,
                                              std::int64_t*) noexcept;
template std::int64_t count_correct<float>(Loss, const float*, index_t, index_t,
                                           const Targets<float>&) noexcept;
template std::int64_t count_correct<double>(Loss, const double*, index_t, index_t,
                                            const Targets<double>&) noexcept;

}  // namespace mlpcore

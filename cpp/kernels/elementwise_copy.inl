// One ISA copy of every element-wise family (activations' array forms, optimizer rules,
// reductions, losses, normalisation layers; isa_regions.hpp): included once by
// elementwise_avx2.cpp and once by elementwise_avx512.cpp, each compiled with its ISA's flags,
// with MLPCORE_COPY(family) naming the copy's namespace (e.g. optim_avx2). The baseline copies
// are in the families' own files (optim.cpp, reductions.cpp, ...), which dispatch. Not a
// stand-alone header.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "activations.hpp"
#include "denormals.hpp"
#include "losses.hpp"
#include "normalization.hpp"
#include "optim.hpp"
#include "reductions.hpp"

namespace mlpcore {

namespace MLPCORE_COPY(activations) {
#include "activations_rules.inl"

template void forward<float>(Act, const ActParams&, const float*, float*, index_t,
                             index_t) noexcept;
template void forward<double>(Act, const ActParams&, const double*, double*, index_t,
                              index_t) noexcept;
template void backward<float>(Act, const ActParams&, const float*, const float*, const float*,
                              float*, index_t, index_t) noexcept;
template void backward<double>(Act, const ActParams&, const double*, const double*,
                               const double*, double*, index_t, index_t) noexcept;
}  // namespace MLPCORE_COPY(activations)

namespace MLPCORE_COPY(optim) {
#include "optim_rules.inl"

template void step<float>(const OptConfig&, std::int64_t, bool, float*, const float*,
                          float* const*, index_t) noexcept;
template void step<double>(const OptConfig&, std::int64_t, bool, double*, const double*,
                           double* const*, index_t) noexcept;
}  // namespace MLPCORE_COPY(optim)

namespace MLPCORE_COPY(reductions) {
#include "reductions_rules.inl"

template void column_sums<float>(const float*, index_t, index_t, index_t, float*, bool) noexcept;
template void column_sums<double>(const double*, index_t, index_t, index_t, double*,
                                  bool) noexcept;
template double sum_of_squares<float>(const float*, index_t) noexcept;
template double sum_of_squares<double>(const double*, index_t) noexcept;
template double add_into_squares<float>(float*, const float*, const float*, float, index_t,
                                        index_t) noexcept;
template double add_into_squares<double>(double*, const double*, const double*, double, index_t,
                                         index_t) noexcept;
template bool all_finite<float>(const float*, index_t) noexcept;
template bool all_finite<double>(const double*, index_t) noexcept;
template bool convert_finite<double, float>(const double*, index_t, float*) noexcept;
template bool convert_finite<float, float>(const float*, index_t, float*) noexcept;
template bool convert_finite<double, double>(const double*, index_t, double*) noexcept;
template bool convert_finite<float, double>(const float*, index_t, double*) noexcept;
}  // namespace MLPCORE_COPY(reductions)

#ifndef MLPCORE_COPY_WITHOUT_LOSSES
namespace MLPCORE_COPY(losses) {
#include "losses_rules.inl"

template double forward_backward<float>(Loss, const LossParams&, const float*, index_t, index_t,
                                        const Targets<float>&, float*, index_t,
                                        std::int64_t*) noexcept;
template double forward_backward<double>(Loss, const LossParams&, const double*, index_t,
                                         index_t, const Targets<double>&, double*, index_t,
                                         std::int64_t*) noexcept;
template std::int64_t correct<float>(Loss, const float*, index_t, index_t,
                                     const Targets<float>&) noexcept;
template std::int64_t correct<double>(Loss, const double*, index_t, index_t,
                                      const Targets<double>&) noexcept;
}  // namespace MLPCORE_COPY(losses)
#endif

namespace MLPCORE_COPY(normalization) {
#include "normalization_rules.inl"

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
}  // namespace MLPCORE_COPY(normalization)

}  // namespace mlpcore

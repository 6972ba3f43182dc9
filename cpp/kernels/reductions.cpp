#include "reductions.hpp"

#include "denormals.hpp"
#include "isa_regions.hpp"

#include <algorithm>
#include <cmath>

namespace mlpcore {

namespace reductions_baseline {
#include "reductions_rules.inl"
}  // namespace reductions_baseline

// The AVX2 and AVX-512 copies (elementwise_copy.inl, compiled in their own files).
#define MLPCORE_DECLARE_REDUCTIONS_COPY(ns)                                                  \
  namespace ns {                                                                             \
  template <typename T>                                                                      \
  void column_sums(const T*, index_t, index_t, index_t, T*, bool) noexcept;                  \
  template <typename T>                                                                      \
  double sum_of_squares(const T*, index_t) noexcept;                                         \
  template <typename T>                                                                      \
  bool all_finite(const T*, index_t) noexcept;                                               \
  }
MLPCORE_DECLARE_REDUCTIONS_COPY(reductions_avx2)
MLPCORE_DECLARE_REDUCTIONS_COPY(reductions_avx512)
#undef MLPCORE_DECLARE_REDUCTIONS_COPY

// The copy of fn that elementwise_isa() picks.
#define MLPCORE_PICK(fn)                                                    \
  (elementwise_isa() == ElementwiseIsa::Avx512 ? reductions_avx512::fn      \
   : elementwise_isa() == ElementwiseIsa::Avx2 ? reductions_avx2::fn        \
                                               : reductions_baseline::fn)

template <typename T>
void column_sums(const T* dz, index_t rows, index_t cols, index_t ld, T* db,
                 bool accumulate) noexcept {
  MLPCORE_PICK(column_sums<T>)(dz, rows, cols, ld, db, accumulate);
}

template <typename T>
double sum_of_squares(const T* x, index_t n) noexcept {
  return MLPCORE_PICK(sum_of_squares<T>)(x, n);
}

template <typename T>
bool all_finite(const T* x, index_t n) noexcept {
  return MLPCORE_PICK(all_finite<T>)(x, n);
}
#undef MLPCORE_PICK

template void column_sums<float>(const float*, index_t, index_t, index_t, float*, bool) noexcept;
template void column_sums<double>(const double*, index_t, index_t, index_t, double*,
                                  bool) noexcept;
template double sum_of_squares<float>(const float*, index_t) noexcept;
template double sum_of_squares<double>(const double*, index_t) noexcept;
template bool all_finite<float>(const float*, index_t) noexcept;
template bool all_finite<double>(const double*, index_t) noexcept;

}  // namespace mlpcore

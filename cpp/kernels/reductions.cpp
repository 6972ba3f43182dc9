#include "reductions.hpp"

#include "denormals.hpp"
#include "isa_regions.hpp"

#include <algorithm>
#include <cmath>

namespace mlpcore {

namespace reductions_baseline {
#include "reductions_rules.inl"
}  // namespace reductions_baseline

#if MLPCORE_AVX512_REGIONS
MLPCORE_AVX512_BEGIN
namespace reductions_avx512 {
#include "reductions_rules.inl"
}  // namespace reductions_avx512
MLPCORE_AVX512_END
#define MLPCORE_PICK(fn) (use_avx512_elementwise() ? reductions_avx512::fn : reductions_baseline::fn)
#else
#define MLPCORE_PICK(fn) reductions_baseline::fn
#endif

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

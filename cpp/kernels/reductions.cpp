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
  double add_into_squares(T*, const T*, const T*, T, index_t, index_t) noexcept;             \
  template <typename T>                                                                      \
  bool all_finite(const T*, index_t) noexcept;                                               \
  template <typename Src, typename Dst>                                                      \
  bool convert_finite(const Src*, index_t, Dst*) noexcept;                                   \
  }
MLPCORE_DECLARE_REDUCTIONS_COPY(reductions_avx2)
MLPCORE_DECLARE_REDUCTIONS_COPY(reductions_avx512)
#undef MLPCORE_DECLARE_REDUCTIONS_COPY

// The copy of fn that elementwise_isa() picks (variadic: a template's arguments hold commas).
#define MLPCORE_PICK(...)                                                            \
  (elementwise_isa() == ElementwiseIsa::Avx512 ? reductions_avx512::__VA_ARGS__      \
   : elementwise_isa() == ElementwiseIsa::Avx2 ? reductions_avx2::__VA_ARGS__        \
                                               : reductions_baseline::__VA_ARGS__)

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
double add_into_squares(T* g, const T* h, const T* w, T two_l2, index_t n_w, index_t n) noexcept {
  return MLPCORE_PICK(add_into_squares<T>)(g, h, w, two_l2, n_w, n);
}

template <typename T>
bool all_finite(const T* x, index_t n) noexcept {
  return MLPCORE_PICK(all_finite<T>)(x, n);
}
template <typename Src, typename Dst>
bool convert_finite(const Src* x, index_t n, Dst* out) noexcept {
  // Memory-bound: large arrays in fixed chunks over the threads (a data set cast for training).
  constexpr index_t kChunk = index_t(1) << 16;
  const auto convert = MLPCORE_PICK(convert_finite<Src, Dst>);
  // (subnormal values are converted, not flushed, in every thread: the data is the user's)
  if (n < 8 * kChunk) {
    const DenormalsKept exact;
    return convert(x, n, out);
  }
  const index_t chunks = (n + kChunk - 1) / kChunk;
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (index_t c = 0; c < chunks; ++c) {
    const DenormalsKept exact;
    const index_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
    finite = convert(x + lo, hi - lo, out + lo) && finite;
  }
  return finite;
}
#undef MLPCORE_PICK

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

}  // namespace mlpcore

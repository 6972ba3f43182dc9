#include "reductions.hpp"

#include <cmath>

namespace mlpcore {

template <typename T>
void column_sums(const T* dz, index_t rows, index_t cols, index_t ld, T* db,
                 bool accumulate) noexcept {
  if (!accumulate)
    for (index_t j = 0; j < cols; ++j) db[j] = T(0);
  // Row-order accumulation into db keeps each column's sum order fixed and vectorises over j.
  for (index_t i = 0; i < rows; ++i) {
    const T* row = dz + i * ld;
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) db[j] += row[j];
  }
}

template <typename T>
double sum_of_squares(const T* x, index_t n) noexcept {
  constexpr index_t kChunk = 4096;
  double total = 0.0;
  for (index_t start = 0; start < n; start += kChunk) {
    const index_t end = start + kChunk < n ? start + kChunk : n;
    double chunk = 0.0;
#pragma omp simd reduction(+ : chunk)
    for (index_t i = start; i < end; ++i) chunk += double(x[i]) * double(x[i]);
    total += chunk;
  }
  return total;
}

template <typename T>
bool all_finite(const T* x, index_t n) noexcept {
  // x - x is 0 for finite values and NaN for NaN/Inf; summing keeps the loop branch-free.
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (index_t i = 0; i < n; ++i) acc += x[i] - x[i];
  return acc == T(0);
}

template void column_sums<float>(const float*, index_t, index_t, index_t, float*, bool) noexcept;
template void column_sums<double>(const double*, index_t, index_t, index_t, double*,
                                  bool) noexcept;
template double sum_of_squares<float>(const float*, index_t) noexcept;
template double sum_of_squares<double>(const double*, index_t) noexcept;
template bool all_finite<float>(const float*, index_t) noexcept;
template bool all_finite<double>(const double*, index_t) noexcept;

}  // namespace mlpcore

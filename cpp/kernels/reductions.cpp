#include "reductions.hpp"

#include "denormals.hpp"

#include <algorithm>
#include <cmath>

namespace mlpcore {

template <typename T>
void column_sums(const T* dz, index_t rows, index_t cols, index_t ld, T* db,
                 bool accumulate) noexcept {
  // Columns are split into fixed blocks shared by the threads; within a block the rows are
  // added in order (vectorised over columns), so each column's sum has one fixed order.
  constexpr index_t kBlock = 256;
  const index_t blocks = (cols + kBlock - 1) / kBlock;
  auto block = [&](index_t b) {
    const index_t j0 = b * kBlock, j1 = std::min(cols, j0 + kBlock);
    if (!accumulate)
      for (index_t j = j0; j < j1; ++j) db[j] = T(0);
    for (index_t i = 0; i < rows; ++i) {
      const T* row = dz + i * ld;
#pragma omp simd
      for (index_t j = j0; j < j1; ++j) db[j] += row[j];
    }
  };
  if (rows * cols < (1 << 16) || blocks == 1) {  // no OpenMP region for small work
    for (index_t b = 0; b < blocks; ++b) block(b);
    return;
  }
#pragma omp parallel for schedule(static)
  for (index_t b = 0; b < blocks; ++b) {
    const DenormalsAsZero denormals;  // same arithmetic mode in every thread
    block(b);
  }
}

namespace {
constexpr index_t kSquaresChunk = 4096;        // elements per partial sum
constexpr index_t kSquaresGroup = 1024;        // partial sums computed per parallel pass
constexpr index_t kSquaresParallelMin = 1 << 18;

template <typename T>
double chunk_squares(const T* x, index_t begin, index_t end) noexcept {
  double chunk = 0.0;
#pragma omp simd reduction(+ : chunk)
  for (index_t i = begin; i < end; ++i) chunk += double(x[i]) * double(x[i]);
  return chunk;
}
}  // namespace

template <typename T>
double sum_of_squares(const T* x, index_t n) noexcept {
  // Chunk sums are added in chunk order whether they were computed by one thread or several,
  // so the result is the same bits for any thread count.
  double total = 0.0;
  const index_t chunks = (n + kSquaresChunk - 1) / kSquaresChunk;
  double partial[kSquaresGroup];
  if (n < kSquaresParallelMin) {  // no OpenMP region for small work
    for (index_t c = 0; c < chunks; ++c)
      total += chunk_squares(x, c * kSquaresChunk, std::min(n, (c + 1) * kSquaresChunk));
    return total;
  }
  for (index_t g0 = 0; g0 < chunks; g0 += kSquaresGroup) {
    const index_t g1 = std::min(chunks, g0 + kSquaresGroup);
#pragma omp parallel for schedule(static)
    for (index_t c = g0; c < g1; ++c) {
      const DenormalsAsZero denormals;  // same arithmetic mode in every thread
      partial[c - g0] =
          chunk_squares(x, c * kSquaresChunk, std::min(n, (c + 1) * kSquaresChunk));
    }
    for (index_t c = g0; c < g1; ++c) total += partial[c - g0];
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

// Reductions whose result does not depend on the thread count.
#pragma once
#include "common.hpp"

namespace mlpcore {

// db[j] = sum_i dz[i, j] (+ db[j] when accumulate) over a (rows x cols) block with leading
// dimension ld. Columns are split across threads; each column is summed in row order.
template <typename T>
void column_sums(const T* dz, index_t rows, index_t cols, index_t ld, T* db,
                 bool accumulate) noexcept;

// Sum of x[i]^2 in double, in fixed-size chunks combined in order: the same bits for any thread
// count. NaN/Inf anywhere make the result non-finite.
template <typename T>
double sum_of_squares(const T* x, index_t n) noexcept;

// g[i] = g[i] + h[i] for i < n, then g[i] = g[i] + two_l2 * w[i] for i < n_w; returns
// sum_of_squares of the new g, with its bits: one pass for three. w holds n values when n_w > 0
// (a chunk holding position n_w reads past it, masked) and may be null when n_w is 0.
template <typename T>
double add_into_squares(T* g, const T* h, const T* w, T two_l2, index_t n_w, index_t n) noexcept;

// True when none of the n values is NaN or +-Inf.
template <typename T>
bool all_finite(const T* x, index_t n) noexcept;

// out[i] = Dst(x[i]) for i < n, rounded to nearest; true when every result is finite (no
// NaN/Inf in x and no value beyond Dst's range). Large inputs are split across threads; the
// results do not depend on the split.
template <typename Src, typename Dst>
bool convert_finite(const Src* x, index_t n, Dst* out) noexcept;

}  // namespace mlpcore

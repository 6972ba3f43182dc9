// The reductions, included twice by reductions.cpp (baseline and AVX-512 copies, see
// isa_regions.hpp). Not a stand-alone header: no include guard on purpose.

template <typename T>
void column_sums(const T* dz, index_t rows, index_t cols, index_t ld, T* db,
                 bool accumulate) noexcept {
  // Columns are split into fixed blocks shared by the threads; within a block the rows are
  // added in order (vectorised over columns), so each column's sum has one fixed order.
  constexpr index_t kBlock = 256;
  const index_t blocks = (cols + kBlock - 1) / kBlock;
  // 16 columns at a time are summed down all rows in registers (a running sum kept in db would
  // wait on its own store every row)
  constexpr int kLanes = 16;
  auto block = [&](index_t b) {
    const index_t j1 = std::min(cols, (b + 1) * kBlock);
    for (index_t j = b * kBlock; j < j1; j += kLanes) {
      const int w = int(std::min<index_t>(kLanes, j1 - j));
      T acc[kLanes] = {};
      if (accumulate)
        for (int l = 0; l < w; ++l) acc[l] = db[j + l];
      if (w == kLanes) {
        for (index_t i = 0; i < rows; ++i) {
          const T* row = dz + i * ld + j;
#pragma omp simd
          for (int l = 0; l < kLanes; ++l) acc[l] += row[l];
        }
      } else {
        for (index_t i = 0; i < rows; ++i)
          for (int l = 0; l < w; ++l) acc[l] += dz[i * ld + j + l];
      }
      for (int l = 0; l < w; ++l) db[j + l] = acc[l];
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

constexpr index_t kSquaresChunk = 4096;        // elements per partial sum
constexpr index_t kSquaresGroup = 1024;        // partial sums computed per parallel pass
constexpr index_t kSquaresParallelMin = 1 << 16;

// The sum of value(i)^2 for i in begin .. end - 1, in double: 16 running sums, sum l taking the
// elements l, l + 16, l + 32, ... of the chunk, combined in a fixed tree (the order is set here,
// not by the vector width the compiler picks). value(i) may compute and store the element.
template <typename Value>
double chunk_squares_of(index_t begin, index_t end, Value value) noexcept {
  constexpr int kLanes = 16;
  double lanes[kLanes] = {};
  index_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const double v = double(value(i + l));
      lanes[l] += v * v;
    }
  }
  for (int l = 0; i < end; ++i, ++l) {
    const double v = double(value(i));
    lanes[l] += v * v;
  }
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

template <typename T>
double chunk_squares(const T* x, index_t begin, index_t end) noexcept {
  return chunk_squares_of(begin, end, [x](index_t i) { return x[i]; });
}

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

// g[i] = g[i] + h[i], then + two_l2 * w[i] for i < n_w, and the sum of the new g[i]^2 as
// sum_of_squares takes it (its chunks, lanes and tree, chunk sums added in order): the bits of
// those three passes in one. A chunk reads w only if it holds positions below n_w (masked
// loads from a null w, masked off, took a microcode assist each: 6.8 against 1.1 us).
template <typename T>
double add_into_squares(T* g, const T* h, const T* w, T two_l2, index_t n_w,
                        index_t n) noexcept {
  auto plain = [=](index_t i) {
    const T v = g[i] + h[i];
    g[i] = v;
    return v;
  };
  auto weights = [=](index_t i) {
    const T v = (g[i] + h[i]) + two_l2 * w[i];
    g[i] = v;
    return v;
  };
  auto straddling = [=](index_t i) {  // (the chunk where the weights end)
    T v = g[i] + h[i];
    if (i < n_w) v = v + two_l2 * w[i];
    g[i] = v;
    return v;
  };
  double total = 0.0;
  for (index_t c = 0; c < n; c += kSquaresChunk) {
    const index_t end = std::min(n, c + kSquaresChunk);
    total += end <= n_w ? chunk_squares_of(c, end, weights)
             : c >= n_w ? chunk_squares_of(c, end, plain)
                        : chunk_squares_of(c, end, straddling);
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

// out[i] = Dst(x[i]) (rounded to nearest, as NumPy's cast); true when every converted value is
// finite: a NaN or Inf in x, or a value beyond Dst's range, makes it false. One pass over the
// data for what a cast and a finiteness check would read twice.
template <typename Src, typename Dst>
bool convert_finite(const Src* __restrict x, index_t n, Dst* __restrict out) noexcept {
  Dst acc = 0;
#pragma omp simd reduction(+ : acc)
  for (index_t i = 0; i < n; ++i) {
    const Dst v = Dst(x[i]);
    out[i] = v;
    acc += v - v;
  }
  return acc == Dst(0);
}

// The normalisation layers' rules (normalization.hpp), one copy per ISA (isa_regions.hpp):
// included in namespace normalization_baseline by normalization.cpp, which dispatches, and in
// normalization_avx2 / normalization_avx512 by elementwise_copy.inl. Sums in double in a fixed
// order and no contraction, so every copy gives the same bits. Not a stand-alone header.

// LayerNorm's per-row sums are chains of additions in column order; four rows are taken side
// by side so that their chains overlap (each row's sums keep their order).
constexpr index_t kRowsTogether = 4;

// Sums over columns of f(b, c) for the rows b = 0 .. 3 of a block into out[0..4), each in
// column order (written out: a loop over b would be vectorised into gathers).
template <typename F>
inline void row_sums4(index_t cols, F f, double* out) noexcept {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  for (index_t c = 0; c < cols; ++c) {
    s0 += f(0, c);
    s1 += f(1, c);
    s2 += f(2, c);
    s3 += f(3, c);
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// The same for one row.
template <typename F>
inline double row_sum(index_t cols, F f) noexcept {
  double s = 0.0;
  for (index_t c = 0; c < cols; ++c) s += f(c);
  return s;
}

template <typename T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd,
                       index_t rows, index_t cols, double eps) noexcept {
  auto value = [&](index_t r, index_t c) { return double(x[r * cols + c]); };
  auto square_dev = [&](index_t r, index_t c, double mu) {
    return (value(r, c) - mu) * (value(r, c) - mu);
  };
  auto finish_row = [&](index_t r, double mu, double sq) {
    const T* xr = x + r * cols;
    const double rs = 1.0 / std::sqrt(sq / double(cols) + eps);
    mean[r] = T(mu);
    rstd[r] = T(rs);
    T* yr = y + r * cols;
    for (index_t c = 0; c < cols; ++c) yr[c] = T((double(xr[c]) - mu) * rs) * gamma[c] + beta[c];
  };
  index_t r = 0;
  for (; r + kRowsTogether <= rows; r += kRowsTogether) {
    double sum[kRowsTogether], mu[kRowsTogether], sq[kRowsTogether];
    row_sums4(cols, [&](index_t b, index_t c) { return value(r + b, c); }, sum);
    for (index_t b = 0; b < kRowsTogether; ++b) mu[b] = sum[b] / double(cols);
    row_sums4(cols, [&](index_t b, index_t c) { return square_dev(r + b, c, mu[b]); }, sq);
    for (index_t b = 0; b < kRowsTogether; ++b) finish_row(r + b, mu[b], sq[b]);
  }
  for (; r < rows; ++r) {
    const double mu = row_sum(cols, [&](index_t c) { return value(r, c); }) / double(cols);
    finish_row(r, mu, row_sum(cols, [&](index_t c) { return square_dev(r, c, mu); }));
  }
}

template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                        T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols) noexcept {
  for (index_t c = 0; c < cols; ++c) dgamma[c] = dbeta[c] = T(0);
  // dgamma and dbeta add the rows in row order; each row's two sums are in column order
  auto xhat_of = [&](index_t r, index_t c) {
    return (double(x[r * cols + c]) - double(mean[r])) * double(rstd[r]);
  };
  auto dxhat_of = [&](index_t r, index_t c) { return double(dy[r * cols + c]) * double(gamma[c]); };
  auto finish_row = [&](index_t r, double sum_dxhat, double sum_dxhat_xhat) {
    const T* dyr = dy + r * cols;
    for (index_t c = 0; c < cols; ++c) {
      dgamma[c] += T(double(dyr[c]) * xhat_of(r, c));
      dbeta[c] += dyr[c];
    }
    if (!dx) return;
    T* dxr = dx + r * cols;
    const double n = double(cols), rs = double(rstd[r]);
    for (index_t c = 0; c < cols; ++c)
      dxr[c] = T(rs / n * (n * dxhat_of(r, c) - sum_dxhat - xhat_of(r, c) * sum_dxhat_xhat));
  };
  index_t r = 0;
  for (; r + kRowsTogether <= rows; r += kRowsTogether) {
    double sum_dxhat[kRowsTogether], sum_dxhat_xhat[kRowsTogether];
    row_sums4(cols, [&](index_t b, index_t c) { return dxhat_of(r + b, c); }, sum_dxhat);
    row_sums4(cols, [&](index_t b, index_t c) {
      return dxhat_of(r + b, c) * xhat_of(r + b, c);
    }, sum_dxhat_xhat);
    for (index_t b = 0; b < kRowsTogether; ++b) finish_row(r + b, sum_dxhat[b], sum_dxhat_xhat[b]);
  }
  for (; r < rows; ++r)
    finish_row(r, row_sum(cols, [&](index_t c) { return dxhat_of(r, c); }),
               row_sum(cols, [&](index_t c) { return dxhat_of(r, c) * xhat_of(r, c); }));
}

// BatchNorm's per-feature sums run down the rows; they are taken kColumnChunk features at a
// time, row by row, so that the features of a row are read together (vectors across features)
// while each feature's sum keeps its row order.
constexpr index_t kColumnChunk = 64;

template <typename T>
void batchnorm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd,
                             T* running_mean, T* running_var, index_t rows, index_t cols,
                             double eps, double momentum, const StatReducer* sync,
                             double* scratch) noexcept {
  // Per feature: the sum in row order, the mean, the squared deviations in row order. With a
  // reducer each of the two sums is first added over the replicas (the two-pass variance of
  // the whole global batch, as one process would compute it).
  double* sums = scratch;
  double* squares = scratch ? scratch + cols + 1 : nullptr;
  double total = double(rows);
  if (sync) {
    for (index_t c = 0; c < cols; ++c) sums[c] = 0.0;
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) sums[c] += double(x[r * cols + c]);
    sums[cols] = double(rows);
    sync->reduce(sync->ctx, sums, cols + 1, 0);
    total = sums[cols];
    for (index_t c = 0; c < cols; ++c) squares[c] = 0.0;
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) {
        const double d = double(x[r * cols + c]) - sums[c] / total;
        squares[c] += d * d;
      }
    sync->reduce(sync->ctx, squares, cols, 1);
  }
  for (index_t c0 = 0; c0 < cols; c0 += kColumnChunk) {
    const index_t m = std::min(kColumnChunk, cols - c0);
    double mu[kColumnChunk], sq[kColumnChunk], rs[kColumnChunk];
    if (sync) {
      for (index_t j = 0; j < m; ++j) {
        mu[j] = sums[c0 + j] / total;
        sq[j] = squares[c0 + j];
      }
    } else {
      for (index_t j = 0; j < m; ++j) mu[j] = sq[j] = 0.0;
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < m; ++j) mu[j] += double(x[r * cols + c0 + j]);
      for (index_t j = 0; j < m; ++j) mu[j] /= total;
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < m; ++j) {
          const double d = double(x[r * cols + c0 + j]) - mu[j];
          sq[j] += d * d;
        }
    }
    for (index_t j = 0; j < m; ++j) {
      const index_t c = c0 + j;
      const double var = sq[j] / total;
      rs[j] = 1.0 / std::sqrt(var + eps);
      mean[c] = T(mu[j]);
      rstd[c] = T(rs[j]);
      const double unbiased = total > 1.0 ? sq[j] / (total - 1.0) : var;
      // a failed step leaves them as they were
      if (std::isfinite(mu[j]) && std::isfinite(unbiased)) {
        running_mean[c] = T((1.0 - momentum) * double(running_mean[c]) + momentum * mu[j]);
        running_var[c] = T((1.0 - momentum) * double(running_var[c]) + momentum * unbiased);
      }
    }
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < m; ++j) {
        const index_t c = c0 + j;
        y[r * cols + c] = T((double(x[r * cols + c]) - mu[j]) * rs[j]) * gamma[c] + beta[c];
      }
  }
}

template <typename T>
void batchnorm_forward_eval(const T* x, const T* gamma, const T* beta, T* y,
                            const T* running_mean, const T* running_var, index_t rows,
                            index_t cols, double eps) noexcept {
  for (index_t c0 = 0; c0 < cols; c0 += kColumnChunk) {
    const index_t m = std::min(kColumnChunk, cols - c0);
    double mu[kColumnChunk], rs[kColumnChunk];
    for (index_t j = 0; j < m; ++j) {
      mu[j] = double(running_mean[c0 + j]);
      rs[j] = 1.0 / std::sqrt(double(running_var[c0 + j]) + eps);
    }
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < m; ++j) {
        const index_t c = c0 + j;
        y[r * cols + c] = T((double(x[r * cols + c]) - mu[j]) * rs[j]) * gamma[c] + beta[c];
      }
  }
}

// dx of features c0 .. c0 + m from the sums of dy and dy * xhat over n rows (with dxhat = dy *
// gamma: sum(dxhat) = g * sum_dy, sum(dxhat * xhat) = g * sum_dy_xhat).
template <typename T>
void batchnorm_dx_columns(const T* dy, const T* x, T* dx, index_t rows, index_t cols, index_t c0,
                          index_t m, const T* mean, const T* rstd, const T* gamma, double n,
                          const double* sum_dy, const double* sum_dy_xhat) noexcept {
  for (index_t r = 0; r < rows; ++r)
    for (index_t j = 0; j < m; ++j) {
      const index_t c = c0 + j;
      const double mu = double(mean[c]), rs = double(rstd[c]), g = double(gamma[c]);
      const double xhat = (double(x[r * cols + c]) - mu) * rs;
      dx[r * cols + c] =
          T(rs / n * g * (n * double(dy[r * cols + c]) - sum_dy[j] - xhat * sum_dy_xhat[j]));
    }
}

template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                        T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols,
                        const StatReducer* sync, double* scratch) noexcept {
  // This replica's sums are dbeta and dgamma. With a reducer they are then added over the
  // replicas for dx, which needs the sums of the whole global batch.
  for (index_t c0 = 0; c0 < cols; c0 += kColumnChunk) {
    const index_t m = std::min(kColumnChunk, cols - c0);
    double sum_dy[kColumnChunk], sum_dy_xhat[kColumnChunk];
    for (index_t j = 0; j < m; ++j) sum_dy[j] = sum_dy_xhat[j] = 0.0;
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < m; ++j) {
        const index_t c = c0 + j;
        const double xhat = (double(x[r * cols + c]) - double(mean[c])) * double(rstd[c]);
        sum_dy[j] += double(dy[r * cols + c]);
        sum_dy_xhat[j] += double(dy[r * cols + c]) * xhat;
      }
    for (index_t j = 0; j < m; ++j) {
      dgamma[c0 + j] = T(sum_dy_xhat[j]);
      dbeta[c0 + j] = T(sum_dy[j]);
    }
    if (sync) {
      for (index_t j = 0; j < m; ++j) {
        scratch[c0 + j] = sum_dy[j];
        scratch[cols + c0 + j] = sum_dy_xhat[j];
      }
    } else if (dx) {
      batchnorm_dx_columns(dy, x, dx, rows, cols, c0, m, mean, rstd, gamma, double(rows), sum_dy,
                           sum_dy_xhat);
    }
  }
  if (!sync) return;
  scratch[2 * cols] = double(rows);
  sync->reduce(sync->ctx, scratch, 2 * cols + 1, 2);
  if (!dx) return;
  batchnorm_dx_columns(dy, x, dx, rows, cols, 0, cols, mean, rstd, gamma, scratch[2 * cols],
                       scratch, scratch + cols);
}

// The normalisation layers' rules (normalization.hpp), one copy per ISA (isa_regions.hpp):
// included in namespace normalization_baseline by normalization.cpp, which dispatches, and in
// normalization_avx2 / normalization_avx512 by elementwise_copy.inl. Sums in double in a fixed
// order and no contraction, so every copy gives the same bits. Not a stand-alone header.

template <typename T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd,
                       index_t rows, index_t cols, double eps) noexcept {
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    double sum = 0.0;
    for (index_t c = 0; c < cols; ++c) sum += double(xr[c]);
    const double mu = sum / double(cols);
    double sq = 0.0;
    for (index_t c = 0; c < cols; ++c) sq += (double(xr[c]) - mu) * (double(xr[c]) - mu);
    const double rs = 1.0 / std::sqrt(sq / double(cols) + eps);
    mean[r] = T(mu);
    rstd[r] = T(rs);
    T* yr = y + r * cols;
    for (index_t c = 0; c < cols; ++c) yr[c] = T((double(xr[c]) - mu) * rs) * gamma[c] + beta[c];
  }
}

template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                        T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols) noexcept {
  for (index_t c = 0; c < cols; ++c) dgamma[c] = dbeta[c] = T(0);
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    const T* dyr = dy + r * cols;
    const double mu = double(mean[r]), rs = double(rstd[r]);
    double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
    for (index_t c = 0; c < cols; ++c) {
      const double xhat = (double(xr[c]) - mu) * rs;
      const double dxhat = double(dyr[c]) * double(gamma[c]);
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
      dgamma[c] += T(double(dyr[c]) * xhat);
      dbeta[c] += dyr[c];
    }
    if (!dx) continue;
    T* dxr = dx + r * cols;
    const double n = double(cols);
    for (index_t c = 0; c < cols; ++c) {
      const double xhat = (double(xr[c]) - mu) * rs;
      const double dxhat = double(dyr[c]) * double(gamma[c]);
      dxr[c] = T(rs / n * (n * dxhat - sum_dxhat - xhat * sum_dxhat_xhat));
    }
  }
}

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
    for (index_t c = 0; c < cols; ++c) {
      double sum = 0.0;
      for (index_t r = 0; r < rows; ++r) sum += double(x[r * cols + c]);
      sums[c] = sum;
    }
    sums[cols] = double(rows);
    sync->reduce(sync->ctx, sums, cols + 1, 0);
    total = sums[cols];
    for (index_t c = 0; c < cols; ++c) {
      const double mu = sums[c] / total;
      double sq = 0.0;
      for (index_t r = 0; r < rows; ++r) {
        const double d = double(x[r * cols + c]) - mu;
        sq += d * d;
      }
      squares[c] = sq;
    }
    sync->reduce(sync->ctx, squares, cols, 1);
  }
  for (index_t c = 0; c < cols; ++c) {
    double mu, sq;
    if (sync) {
      mu = sums[c] / total;
      sq = squares[c];
    } else {
      double sum = 0.0;
      for (index_t r = 0; r < rows; ++r) sum += double(x[r * cols + c]);
      mu = sum / total;
      sq = 0.0;
      for (index_t r = 0; r < rows; ++r) {
        const double d = double(x[r * cols + c]) - mu;
        sq += d * d;
      }
    }
    const double var = sq / total;
    const double rs = 1.0 / std::sqrt(var + eps);
    mean[c] = T(mu);
    rstd[c] = T(rs);
    const double unbiased = total > 1.0 ? sq / (total - 1.0) : var;
    if (std::isfinite(mu) && std::isfinite(unbiased)) {  // a failed step leaves them as they were
      running_mean[c] = T((1.0 - momentum) * double(running_mean[c]) + momentum * mu);
      running_var[c] = T((1.0 - momentum) * double(running_var[c]) + momentum * unbiased);
    }
    for (index_t r = 0; r < rows; ++r)
      y[r * cols + c] = T((double(x[r * cols + c]) - mu) * rs) * gamma[c] + beta[c];
  }
}

template <typename T>
void batchnorm_forward_eval(const T* x, const T* gamma, const T* beta, T* y,
                            const T* running_mean, const T* running_var, index_t rows,
                            index_t cols, double eps) noexcept {
  for (index_t c = 0; c < cols; ++c) {
    const double mu = double(running_mean[c]);
    const double rs = 1.0 / std::sqrt(double(running_var[c]) + eps);
    for (index_t r = 0; r < rows; ++r)
      y[r * cols + c] = T((double(x[r * cols + c]) - mu) * rs) * gamma[c] + beta[c];
  }
}

namespace {
// dx of one feature from the sums of dy and dy * xhat over n rows (with dxhat = dy * gamma:
// sum(dxhat) = g * sum_dy, sum(dxhat * xhat) = g * sum_dy_xhat).
template <typename T>
void batchnorm_dx_column(const T* dy, const T* x, T* dx, index_t rows, index_t cols, index_t c,
                         double mu, double rs, double g, double n, double sum_dy,
                         double sum_dy_xhat) noexcept {
  for (index_t r = 0; r < rows; ++r) {
    const double xhat = (double(x[r * cols + c]) - mu) * rs;
    dx[r * cols + c] = T(rs / n * g * (n * double(dy[r * cols + c]) - sum_dy - xhat * sum_dy_xhat));
  }
}
}  // namespace

template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                        T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols,
                        const StatReducer* sync, double* scratch) noexcept {
  // This replica's sums are dbeta and dgamma. With a reducer they are then added over the
  // replicas for dx, which needs the sums of the whole global batch.
  for (index_t c = 0; c < cols; ++c) {
    const double mu = double(mean[c]), rs = double(rstd[c]);
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (index_t r = 0; r < rows; ++r) {
      const double xhat = (double(x[r * cols + c]) - mu) * rs;
      sum_dy += double(dy[r * cols + c]);
      sum_dy_xhat += double(dy[r * cols + c]) * xhat;
    }
    dgamma[c] = T(sum_dy_xhat);
    dbeta[c] = T(sum_dy);
    if (sync) {
      scratch[c] = sum_dy;
      scratch[cols + c] = sum_dy_xhat;
    } else if (dx) {
      batchnorm_dx_column(dy, x, dx, rows, cols, c, mu, rs, double(gamma[c]), double(rows),
                          sum_dy, sum_dy_xhat);
    }
  }
  if (!sync) return;
  scratch[2 * cols] = double(rows);
  sync->reduce(sync->ctx, scratch, 2 * cols + 1, 2);
  if (!dx) return;
  for (index_t c = 0; c < cols; ++c)
    batchnorm_dx_column(dy, x, dx, rows, cols, c, double(mean[c]), double(rstd[c]),
                        double(gamma[c]), scratch[2 * cols], scratch[c], scratch[cols + c]);
}

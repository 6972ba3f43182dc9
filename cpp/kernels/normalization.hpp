// LayerNorm and BatchNorm1d with torch.nn semantics (biased variance for normalising; BatchNorm's
// running variance is updated with the unbiased batch variance). Statistics are accumulated in
// double, in row order, so results do not depend on the thread count.
//
// Backward of y = xhat * gamma + beta with xhat = (x - mean) * rstd, over a group of N values:
//   dxhat = dy * gamma
//   dx    = rstd / N * (N * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
#pragma once
#include "common.hpp"

namespace mlpcore {

// Synchronised BatchNorm: sums per-feature statistics over the data-parallel replicas, in place,
// in the middle of a pass (the bindings answer with an MPI allreduce). Every replica calls it the
// same number of times with the same counts. kind 0: sums of x per feature, then the local row
// count (cols + 1 values); kind 1: sums of squared deviations from the global mean (cols);
// kind 2: backward sums of dy and of dy * xhat per feature, then the row count (2 * cols + 1).
struct StatReducer {
  void (*reduce)(void* ctx, double* values, index_t count, int kind) = nullptr;
  void* ctx = nullptr;
};

// x, y: (rows, cols); gamma, beta: (cols,); mean, rstd: (rows,) saved for the backward pass.
template <typename T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd,
                       index_t rows, index_t cols, double eps) noexcept;

// dx may be null (no input gradient wanted); dgamma and dbeta are overwritten.
template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                        T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols) noexcept;

// Training: normalise with the batch statistics (mean, rstd: (cols,), saved) and update the
// running statistics: running = (1 - momentum) * running + momentum * batch (unbiased var).
// With `sync` the batch is the union of every replica's rows (scratch: 2 * cols + 1 doubles).
template <typename T>
void batchnorm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd,
                             T* running_mean, T* running_var, index_t rows, index_t cols,
                             double eps, double momentum, const StatReducer* sync = nullptr,
                             double* scratch = nullptr) noexcept;

// Evaluation: normalise with the running statistics.
template <typename T>
void batchnorm_forward_eval(const T* x, const T* gamma, const T* beta, T* y,
                            const T* running_mean, const T* running_var, index_t rows,
                            index_t cols, double eps) noexcept;

// dgamma and dbeta are this replica's own sums (the gradient allreduce adds them); with `sync`
// dx uses the sums over every replica's rows.
template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                        T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols,
                        const StatReducer* sync = nullptr, double* scratch = nullptr) noexcept;

}  // namespace mlpcore

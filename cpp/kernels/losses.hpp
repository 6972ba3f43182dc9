// Losses with mean reduction as PyTorch's defaults, value and gradient in one pass.
//
// The output deltas are fused and numerically stable:
//  - cross_entropy takes logits: d/dlogits = (softmax(logits) * sum(t) - t) / n, computed with the
//    row maximum subtracted, so logits of +-1e4 neither overflow nor lose the softmax.
//  - bce_with_logits: loss = max(x,0) - x t + log1p(exp(-|x|)), d/dx = (sigmoid(x) - t) / N.
//  - bce takes probabilities; like torch, log terms are clamped at -100 and the gradient's
//    denominator p(1-p) at 1e-12, so p of exactly 0 or 1 gives finite values, never NaN.
#pragma once
#include <cstdint>

#include "common.hpp"

namespace mlpcore {

// Every loss, one row each. The list generates the enum and the Python enum mlpcore._core.Loss
// (bindings/kinds.cpp); losses.cpp's switches have no default. Python's table (losses.py) adds
// what the Python side needs to know of each (labels, classification, target range).
#define MLPCORE_LOSSES(X) X(MSE) X(MAE) X(Huber) X(BCE) X(BCEWithLogits) X(CrossEntropy)

enum class Loss : int {
#define MLPCORE_ENUM_ROW(name) name,
  MLPCORE_LOSSES(MLPCORE_ENUM_ROW)
#undef MLPCORE_ENUM_ROW
};

struct LossParams {
  double huber_delta = 1.0;
};

// A batch's targets: either values shaped like the output (n x k; class probabilities for
// cross_entropy), or integer class labels (n) for cross_entropy.
template <typename T>
struct Targets {
  const T* values = nullptr;             // (n, k) row-major, or null
  const std::int64_t* labels = nullptr;  // (n,), or null
  // Optional per-sample weights (n,): the loss becomes the batch mean of w_i times sample i's
  // loss (Keras' sample_weight semantics; a sample's loss is the mean over its outputs).
  const T* weights = nullptr;
};

// Mean loss over the batch `out` (n x k). Writes dloss/dout into dout when it is not null.
// When the n rows are a part of a batch of batch_rows rows (a shard of a training step), the
// mean and the gradients are those of the whole batch: the parts' results add up to it. With
// n_correct, also count_correct's count (in the same pass for cross_entropy with labels).
template <typename T>
double loss_forward_backward(Loss loss, const LossParams& lp, const T* out, index_t n, index_t k,
                             const Targets<T>& targets, T* dout, index_t batch_rows = -1,
                             std::int64_t* n_correct = nullptr) noexcept;

// Number of correct predictions for classification losses: argmax for cross_entropy (per row),
// threshold 0.5 on probabilities (bce) or 0 on logits (bce_with_logits) per element.
template <typename T>
std::int64_t count_correct(Loss loss, const T* out, index_t n, index_t k,
                           const Targets<T>& targets) noexcept;

}  // namespace mlpcore

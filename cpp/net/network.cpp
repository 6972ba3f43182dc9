#include "net/network.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/gemm/gemm.hpp"
#include "kernels/denormals.hpp"
#include "kernels/reductions.hpp"

namespace mlpcore {
namespace {
// Rows per chunk for predict/evaluate when the training batch is smaller.
constexpr index_t kInferenceChunk = 512;

const char* kind_name(LayerKind kind) {
  switch (kind) {
    case LayerKind::Dense: return "Dense";
    case LayerKind::Activation: return "activation";
    case LayerKind::Dropout: return "Dropout";
    case LayerKind::LayerNorm: return "LayerNorm";
    case LayerKind::BatchNorm: return "BatchNorm1d";
    case LayerKind::ResidualBegin: return "Residual";
    case LayerKind::ResidualEnd: return "Residual (end)";
  }
  return "layer";
}
}  // namespace

template <typename T>
Network<T>::Network(std::vector<LayerSpec> specs) : specs_(std::move(specs)) {
  if (specs_.empty()) throw std::invalid_argument("Sequential: expected at least one layer, got 0");
  const std::size_t L = specs_.size();
  weight_offsets_.assign(L, -1);
  bias_offsets_.assign(L, -1);
  param_counts_.assign(L, 0);
  buffer_offsets_.assign(L, -1);
  aux_offsets_.assign(L, 0);
  feat_aux_offsets_.assign(L, -1);
  partner_.assign(L, 0);
  first_param_ = L;
  index_t width = -1, n_params = 0, n_buffers = 0, n_aux = 0, n_feat_aux = 0;
  std::vector<std::size_t> open_blocks;
  auto fail = [](const std::string& msg) { throw std::invalid_argument("Sequential: " + msg); };
  for (std::size_t i = 0; i < L; ++i) {
    const LayerSpec& s = specs_[i];
    const bool sized = s.kind == LayerKind::Dense || s.kind == LayerKind::LayerNorm ||
                       s.kind == LayerKind::BatchNorm;
    if (width < 0 && !sized)
      fail("the first layer must be Dense, LayerNorm or BatchNorm1d (it fixes the number of "
           "input features), got " + std::string(kind_name(s.kind)));
    if (sized) {
      if (s.in_features <= 0 || (s.kind == LayerKind::Dense && s.out_features <= 0))
        fail(std::string(kind_name(s.kind)) + " sizes must be positive");
      if (width >= 0 && s.in_features != width)
        fail("layer " + std::to_string(i) + " (" + kind_name(s.kind) + ") expects " +
             std::to_string(s.in_features) + " input features, but the previous layer gives " +
             std::to_string(width));
      if (widths_.empty()) widths_.push_back(s.in_features);
      first_param_ = std::min(first_param_, i);
    }
    switch (s.kind) {
      case LayerKind::Dense:
        param_counts_[i] = s.in_features * s.out_features + s.out_features;
        weight_offsets_[i] = n_params;
        bias_offsets_[i] = n_params + s.in_features * s.out_features;
        width = s.out_features;
        break;
      case LayerKind::LayerNorm:
      case LayerKind::BatchNorm:
        param_counts_[i] = 2 * s.in_features;
        width = s.in_features;
        weight_offsets_[i] = n_params;
        bias_offsets_[i] = n_params + s.in_features;
        if (s.kind == LayerKind::LayerNorm) {
          aux_offsets_[i] = n_aux;  // per row: mean, rstd
          n_aux += 2;
        } else {
          buffer_offsets_[i] = n_buffers;  // running_mean, running_var
          n_buffers += 2 * s.in_features;
          feat_aux_offsets_[i] = n_feat_aux;  // batch mean, rstd
          n_feat_aux += 2 * s.in_features;
          has_batchnorm_ = true;
        }
        break;
      case LayerKind::Dropout:
        aux_offsets_[i] = n_aux;  // per row: the mask
        n_aux += width;
        break;
      case LayerKind::ResidualBegin:
        open_blocks.push_back(i);
        break;
      case LayerKind::ResidualEnd: {
        if (open_blocks.empty()) fail("a Residual block ends without a beginning");
        const std::size_t begin = open_blocks.back();
        open_blocks.pop_back();
        if (widths_[begin] != width)
          fail("a Residual block must keep the feature count: its input has " +
               std::to_string(widths_[begin]) + " features but its layers output " +
               std::to_string(width));
        partner_[begin] = i;
        partner_[i] = begin;
        break;
      }
      case LayerKind::Activation: break;
    }
    n_params += param_counts_[i];
    widths_.push_back(width);
  }
  if (!open_blocks.empty()) fail("a Residual block is not closed");
  act_offsets_.resize(widths_.size());
  index_t offset = 0;
  for (std::size_t j = 0; j < widths_.size(); ++j) {
    act_offsets_[j] = offset;
    offset += widths_[j];
  }
  params_.reset(n_params);
  grads_.reset(n_params);
  buffers_.reset(n_buffers);
  feat_aux_.reset(n_feat_aux);
  aux_per_row_ = n_aux;
  // normalisation layers start as the identity: gamma = 1, beta = 0; running variance 1
  for (std::size_t i = 0; i < L; ++i) {
    if (specs_[i].kind == LayerKind::LayerNorm || specs_[i].kind == LayerKind::BatchNorm)
      std::fill(params_.data() + weight_offsets_[i],
                params_.data() + weight_offsets_[i] + specs_[i].in_features, T(1));
    if (specs_[i].kind == LayerKind::BatchNorm)
      std::fill(buffers_.data() + buffer_offsets_[i] + specs_[i].in_features,
                buffers_.data() + buffer_offsets_[i] + 2 * specs_[i].in_features, T(1));
  }
  layer_grad_sq_.assign(L, 0.0);
  stats_.resize(L);
}

template <typename T>
void Network<T>::reserve_rows(index_t rows) {
  if (rows <= rows_cap_) return;
  const index_t per_row = act_offsets_.back() + widths_.back();
  acts_.reset(per_row * rows);
  dacts_.reset(per_row * rows);
  aux_.reset(aux_per_row_ * rows);
  rows_cap_ = rows;
}

template <typename T>
void Network<T>::set_loss(Loss loss, const LossParams& params) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  loss_ = loss;
  loss_params_ = params;
}

template <typename T>
void Network<T>::set_optimizer(const OptConfig& cfg) {
  std::lock_guard<std::mutex> lock(mutex_);
  const char* old_names[kMaxOptimizerState];
  const char* new_names[kMaxOptimizerState];
  const int old_count = has_optimizer_ ? mlpcore::optimizer_state_names(opt_, old_names) : 0;
  const int new_count = mlpcore::optimizer_state_names(cfg, new_names);
  const bool same_rule = has_optimizer_ && cfg.kind == opt_.kind;
  bool same_buffers = same_rule && old_count == new_count;
  for (int k = 0; same_buffers && k < new_count; ++k)
    same_buffers = std::string(old_names[k]) == new_names[k];
  if (!same_buffers) {
    // New buffers start at zero; a rule that only gains or loses a buffer (amsgrad switched on,
    // say) keeps the ones it shares, as torch does when an option changes between steps.
    AlignedBuffer<T> fresh(index_t(new_count) * num_params());
    fresh_momentum_ = true;
    for (int k = 0; same_rule && k < new_count; ++k)
      for (int j = 0; j < old_count; ++j)
        if (std::string(old_names[j]) == new_names[k]) {
          std::copy(state_.data() + j * num_params(), state_.data() + (j + 1) * num_params(),
                    fresh.data() + k * num_params());
          if (std::string(new_names[k]) == "momentum_buffer") fresh_momentum_ = false;
        }
    if (state_.size() > 0) retired_state_.push_back(std::move(state_));
    state_ = std::move(fresh);
    if (!same_rule) opt_steps_ = 0;
  }
  opt_ = cfg;
  has_optimizer_ = true;
}

template <typename T>
std::vector<std::string> Network<T>::optimizer_state_names() const {
  const char* names[kMaxOptimizerState];
  const int count = mlpcore::optimizer_state_names(opt_, names);
  return std::vector<std::string>(names, names + count);
}

template <typename T>
void Network<T>::predict(const T* x, index_t n, T* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  const DenormalsAsZero denormals;
  const index_t chunk = std::max(rows_cap_, std::min(n, kInferenceChunk));
  reserve_rows(chunk);
  const index_t in_w = in_features(), out_w = out_features();
  for (index_t start = 0; start < n; start += chunk) {
    const index_t rows = std::min(chunk, n - start);
    const T* y = forward(x + start * in_w, rows, false);
    std::copy(y, y + rows * out_w, out + start * out_w);
  }
}

template <typename T>
void Network<T>::forward_collect(const T* x, index_t n, const std::vector<T*>& outs) {
  std::lock_guard<std::mutex> lock(mutex_);
  const DenormalsAsZero denormals;
  reserve_rows(n);
  forward(x, n, false);
  for (std::size_t j = 0; j < specs_.size() && j < outs.size(); ++j) {
    const T* src = act(j + 1);
    std::copy(src, src + n * widths_[j + 1], outs[j]);
  }
}

template <typename T>
StepResult Network<T>::evaluate(const T* x, index_t n, const Targets<T>& targets) {
  std::lock_guard<std::mutex> lock(mutex_);
  const DenormalsAsZero denormals;
  const index_t chunk = std::max(rows_cap_, std::min(n, kInferenceChunk));
  reserve_rows(chunk);
  const index_t in_w = in_features(), out_w = out_features();
  StepResult total;
  double weighted_loss = 0.0;
  for (index_t start = 0; start < n; start += chunk) {
    const index_t rows = std::min(chunk, n - start);
    Targets<T> t;
    if (targets.values) t.values = targets.values + start * out_w;
    if (targets.labels) t.labels = targets.labels + start;
    if (targets.weights) t.weights = targets.weights + start;
    const T* y = forward(x + start * in_w, rows, false);
    // every loss is a mean over rows times a constant, so chunk means combine by row counts
    weighted_loss += loss_forward_backward<T>(loss_, loss_params_, y, rows, out_w, t, nullptr) *
                     double(rows);
    total.correct += count_correct<T>(loss_, y, rows, out_w, t);
  }
  total.loss = (n > 0 ? weighted_loss / double(n) : 0.0) + penalties(false);
  total.finite = std::isfinite(total.loss);
  return total;
}

void shuffled_indices(std::uint64_t seed, std::int64_t* order, index_t n) noexcept {
  Rng rng(seed);
  for (index_t i = 0; i < n; ++i) order[i] = i;
  for (index_t i = n - 1; i > 0; --i) std::swap(order[i], order[index_t(rng.below(std::uint64_t(i) + 1))]);
}

template class Network<float>;
template class Network<double>;

}  // namespace mlpcore

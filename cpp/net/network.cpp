#include "net/network.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/gemm/gemm.hpp"
#include "kernels/reductions.hpp"

namespace mlpcore {

namespace {
// Rows per chunk for predict/evaluate when the training batch is smaller.
constexpr index_t kInferenceChunk = 512;
}  // namespace

template <typename T>
Network<T>::Network(std::vector<LayerSpec> specs) : specs_(std::move(specs)) {
  if (specs_.empty()) throw std::invalid_argument("Sequential: expected at least one layer, got 0");
  std::size_t first_dense = specs_.size();
  index_t width = -1;
  index_t n_params = 0;
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const LayerSpec& s = specs_[i];
    if (s.kind == LayerKind::Dense) {
      if (s.in_features <= 0 || s.out_features <= 0)
        throw std::invalid_argument("Dense: in_features and out_features must be positive");
      if (width >= 0 && s.in_features != width)
        throw std::invalid_argument(
            "Sequential: layer " + std::to_string(i) + " (Dense) expects " +
            std::to_string(s.in_features) + " input features, but the previous layer gives " +
            std::to_string(width));
      if (widths_.empty()) widths_.push_back(s.in_features);
      weight_offsets_.push_back(n_params);
      bias_offsets_.push_back(n_params + s.in_features * s.out_features);
      n_params += s.in_features * s.out_features + s.out_features;
      width = s.out_features;
      first_dense = std::min(first_dense, i);
    } else {
      if (width < 0)
        throw std::invalid_argument("Sequential: the first layer must be Dense (it fixes the "
                                    "number of input features)");
      weight_offsets_.push_back(-1);
      bias_offsets_.push_back(-1);
    }
    widths_.push_back(width);
  }
  first_dense_ = first_dense;
  act_offsets_.resize(widths_.size());
  index_t offset = 0;
  for (std::size_t j = 0; j < widths_.size(); ++j) {
    act_offsets_[j] = offset;
    offset += widths_[j];
  }
  params_.reset(n_params);
  grads_.reset(n_params);
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
  const bool same_rule = has_optimizer_ && cfg.kind == opt_.kind;
  opt_ = cfg;
  if (!same_rule) {
    if (state_.size() > 0) retired_state_.push_back(std::move(state_));
    state_.reset(index_t(optimizer_state_count(cfg)) * num_params());
    opt_steps_ = 0;
  }
  has_optimizer_ = true;
}

template <typename T>
void Network<T>::reserve_rows(index_t rows) {
  if (rows <= rows_cap_) return;
  const index_t per_row = act_offsets_.back() + widths_.back();
  acts_.reset(per_row * rows);
  dacts_.reset(per_row * rows);
  rows_cap_ = rows;
}

template <typename T>
bool Network<T>::is_fusable_activation(std::size_t layer) const noexcept {
  return layer < specs_.size() && specs_[layer].kind == LayerKind::Activation &&
         is_elementwise(specs_[layer].act);
}

template <typename T>
const T* Network<T>::forward(const T* x, index_t n) noexcept {
  const T* in = x;
  std::size_t i = 0;
  while (i < specs_.size()) {
    const LayerSpec& s = specs_[i];
    if (s.kind == LayerKind::Dense) {
      // z = in @ W + b, and when an element-wise activation follows, y = f(z) in the same pass
      gemm::Epilogue<T> ep;
      ep.bias = params_.data() + bias_offsets_[i];
      T* z = act(i + 1);
      std::size_t consumed = 1;
      if (is_fusable_activation(i + 1)) {
        ep.act = specs_[i + 1].act;
        ep.params = specs_[i + 1].params;
        ep.act_out = act(i + 2);
        consumed = 2;
      }
      gemm::gemm_fused<T>(false, false, n, s.out_features, s.in_features, in, s.in_features,
                          params_.data() + weight_offsets_[i], s.out_features, z, s.out_features,
                          ep);
      in = consumed == 2 ? ep.act_out : z;
      i += consumed;
    } else {
      activation_forward<T>(s.act, s.params, in, act(i + 1), n, widths_[i + 1]);
      in = act(i + 1);
      i += 1;
    }
  }
  return in;
}

template <typename T>
void Network<T>::backward(const T* x, index_t n, T* dx) noexcept {
  // dact(j) holds dL/d(act(j)); dact(L) was written by the loss. act(0) is x, dact(0) is dx.
  auto input_of = [&](std::size_t j) -> const T* { return j == 0 ? x : act(j); };
  auto grad_of = [&](std::size_t j) -> T* { return j == 0 ? dx : dact(j); };
  // Gradients flow into act(j) only if a parameter lies before it or the caller wants dx.
  auto needs_grad = [&](std::size_t j) { return dx != nullptr || j > first_dense_; };
  std::size_t i = specs_.size();
  while (i > 0) {
    const std::size_t l = i - 1;  // layer being differentiated
    const LayerSpec& s = specs_[l];
    if (s.kind == LayerKind::Dense) {
      const T* dz = dact(l + 1);
      const T* in = input_of(l);
      // dW = in^T dz, db = column sums of dz
      gemm::gemm<T>(true, false, s.in_features, s.out_features, n, in, s.in_features, dz,
                    s.out_features, grads_.data() + weight_offsets_[l], s.out_features, false);
      column_sums<T>(dz, n, s.out_features, s.out_features, grads_.data() + bias_offsets_[l],
                     false);
      if (!needs_grad(l)) break;
      const T* w = params_.data() + weight_offsets_[l];
      if (l >= 1 && is_fusable_activation(l - 1)) {
        // dx = dz W^T times the previous activation's derivative, written in one pass
        gemm::Epilogue<T> ep;
        ep.deriv_act = specs_[l - 1].act;
        ep.params = specs_[l - 1].params;
        ep.deriv_z = input_of(l - 1);
        ep.deriv_y = act(l);
        gemm::gemm_fused<T>(false, true, n, s.in_features, s.out_features, dz, s.out_features, w,
                            s.out_features, grad_of(l - 1), s.in_features, ep);
        i -= 2;
      } else {
        gemm::gemm<T>(false, true, n, s.in_features, s.out_features, dz, s.out_features, w,
                      s.out_features, grad_of(l), s.in_features, false);
        i -= 1;
      }
    } else {
      if (!needs_grad(l)) break;
      activation_backward<T>(s.act, s.params, dact(l + 1), input_of(l), act(l + 1), grad_of(l), n,
                             widths_[l + 1]);
      i -= 1;
    }
  }
}

template <typename T>
StepResult Network<T>::gradients_locked(const T* x, index_t n, const Targets<T>& targets, T* dx) {
  reserve_rows(n);
  const T* out = forward(x, n);
  const std::size_t last = specs_.size();
  StepResult r;
  r.loss = loss_forward_backward<T>(loss_, loss_params_, out, n, widths_[last], targets,
                                    dact(last));
  r.correct = count_correct<T>(loss_, out, n, widths_[last], targets);
  r.finite = std::isfinite(r.loss);
  if (!r.finite) return r;
  backward(x, n, dx);
  return r;
}

template <typename T>
StepResult Network<T>::compute_gradients(const T* x, index_t n, const Targets<T>& targets, T* dx) {
  std::lock_guard<std::mutex> lock(mutex_);
  return gradients_locked(x, n, targets, dx);
}

template <typename T>
StepResult Network<T>::train_step(const T* x, index_t n, const Targets<T>& targets) {
  std::lock_guard<std::mutex> lock(mutex_);
  StepResult r = gradients_locked(x, n, targets, nullptr);
  if (!r.finite) return r;
  if (!all_finite(grads_.data(), num_params())) {
    r.finite = false;
    return r;
  }
  ++opt_steps_;
  T* state[3] = {nullptr, nullptr, nullptr};
  for (int k = 0; k < optimizer_state_count(opt_); ++k) state[k] = optimizer_state(k);
  optimizer_step<T>(opt_, opt_steps_, params_.data(), grads_.data(), state, num_params());
  return r;
}

template <typename T>
void Network<T>::apply_optimizer() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++opt_steps_;
  T* state[3] = {nullptr, nullptr, nullptr};
  for (int k = 0; k < optimizer_state_count(opt_); ++k) state[k] = optimizer_state(k);
  optimizer_step<T>(opt_, opt_steps_, params_.data(), grads_.data(), state, num_params());
}

template <typename T>
void Network<T>::predict(const T* x, index_t n, T* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  const index_t chunk = std::max(rows_cap_, std::min(n, kInferenceChunk));
  reserve_rows(chunk);
  const index_t in_w = in_features(), out_w = out_features();
  for (index_t start = 0; start < n; start += chunk) {
    const index_t rows = std::min(chunk, n - start);
    const T* y = forward(x + start * in_w, rows);
    std::copy(y, y + rows * out_w, out + start * out_w);
  }
}

template <typename T>
StepResult Network<T>::evaluate(const T* x, index_t n, const Targets<T>& targets) {
  std::lock_guard<std::mutex> lock(mutex_);
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
    const T* y = forward(x + start * in_w, rows);
    // every loss is a mean over rows times a constant, so chunk means combine by row counts
    weighted_loss += loss_forward_backward<T>(loss_, loss_params_, y, rows, out_w, t, nullptr) *
                     double(rows);
    total.correct += count_correct<T>(loss_, y, rows, out_w, t);
  }
  total.loss = n > 0 ? weighted_loss / double(n) : 0.0;
  total.finite = std::isfinite(total.loss);
  return total;
}

template class Network<float>;
template class Network<double>;

}  // namespace mlpcore

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
  layer_grad_sq_.assign(specs_.size(), 0.0);
  stats_.layer_grad_norm_sum.assign(specs_.size(), 0.0);
}

template <typename T>
void Network<T>::set_clipping(const ClipConfig& clip) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  clip_ = clip;
}

template <typename T>
TrainStats Network<T>::take_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  TrainStats out = stats_;
  stats_ = TrainStats();
  stats_.layer_grad_norm_sum.assign(specs_.size(), 0.0);
  return out;
}

template <typename T>
double Network<T>::penalties(bool add_grad) noexcept {
  double total = 0.0;
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const LayerSpec& s = specs_[i];
    if (s.kind != LayerKind::Dense || (s.l1 == 0.0 && s.l2 == 0.0)) continue;
    const T* w = params_.data() + weight_offsets_[i];
    T* dw = grads_.data() + weight_offsets_[i];
    const T l1 = T(s.l1), two_l2 = T(2.0 * s.l2);
    double abs_sum = 0.0, sq_sum = 0.0;
    for (index_t k = 0; k < s.in_features * s.out_features; ++k) {
      abs_sum += std::abs(double(w[k]));
      sq_sum += double(w[k]) * double(w[k]);
      if (add_grad) {
        const T sign = w[k] > T(0) ? T(1) : (w[k] < T(0) ? T(-1) : T(0));
        dw[k] += l1 * sign + two_l2 * w[k];
      }
    }
    total += s.l1 * abs_sum + s.l2 * sq_sum;
  }
  return total;
}

template <typename T>
bool Network<T>::measure_gradients() noexcept {
  double total = 0.0;
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const LayerSpec& s = specs_[i];
    if (s.kind != LayerKind::Dense) continue;
    // weight and bias are adjacent in the arena
    const index_t count = s.in_features * s.out_features + s.out_features;
    layer_grad_sq_[i] = sum_of_squares(grads_.data() + weight_offsets_[i], count);
    total += layer_grad_sq_[i];
  }
  last_grad_norm_ = std::sqrt(total);
  return std::isfinite(total);
}

template <typename T>
void Network<T>::clip_gradients() noexcept {
  T* g = grads_.data();
  const index_t n = num_params();
  if (clip_.max_norm > 0.0) {
    const double coef = clip_.max_norm / (last_grad_norm_ + 1e-6);
    if (coef < 1.0) {
      const T c = T(coef);
      for (index_t i = 0; i < n; ++i) g[i] *= c;
    }
  }
  if (clip_.max_value > 0.0) {
    const T v = T(clip_.max_value);
    for (index_t i = 0; i < n; ++i) g[i] = std::min(std::max(g[i], -v), v);
  }
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
  r.loss += penalties(true);
  r.finite = std::isfinite(r.loss) && measure_gradients();
  return r;
}

template <typename T>
StepResult Network<T>::compute_gradients(const T* x, index_t n, const Targets<T>& targets, T* dx) {
  std::lock_guard<std::mutex> lock(mutex_);
  return gradients_locked(x, n, targets, dx);
}

template <typename T>
void Network<T>::optimizer_update_locked() noexcept {
  ++opt_steps_;
  T* state[kMaxOptimizerState] = {nullptr, nullptr, nullptr};
  for (int k = 0; k < optimizer_state_count(opt_); ++k) state[k] = optimizer_state(k);
  optimizer_step<T>(opt_, opt_steps_, fresh_momentum_, params_.data(), grads_.data(), state,
                    num_params());
  if (opt_.kind == OptKind::SGD && opt_.momentum != 0.0) fresh_momentum_ = false;
}

template <typename T>
StepResult Network<T>::step_locked(const T* x, index_t n, const Targets<T>& targets) {
  StepResult r = gradients_locked(x, n, targets, nullptr);
  if (!r.finite) return r;  // the loss or a gradient is NaN/Inf: the parameters stay as they are
  ++stats_.steps;
  stats_.grad_norm_sum += last_grad_norm_;
  stats_.grad_norm_sq_sum += last_grad_norm_ * last_grad_norm_;
  for (std::size_t i = 0; i < specs_.size(); ++i)
    stats_.layer_grad_norm_sum[i] += std::sqrt(layer_grad_sq_[i]);
  clip_gradients();
  optimizer_update_locked();
  return r;
}

template <typename T>
StepResult Network<T>::train_step(const T* x, index_t n, const Targets<T>& targets) {
  std::lock_guard<std::mutex> lock(mutex_);
  return step_locked(x, n, targets);
}

template <typename T>
void Network<T>::apply_optimizer() {
  std::lock_guard<std::mutex> lock(mutex_);
  optimizer_update_locked();
}

template <typename T>
BatchRunResult Network<T>::train_batches(const T* x, index_t n_rows, const Targets<T>& targets,
                                         const std::int64_t* order, index_t batch_size,
                                         index_t first_batch, index_t n_batches) {
  std::lock_guard<std::mutex> lock(mutex_);
  BatchRunResult result;
  const index_t in_w = in_features(), out_w = out_features();
  if (order) {
    // sized once per batch size; later runs with the same batch size allocate nothing
    if (batch_x_.size() < batch_size * in_w) batch_x_.reset(batch_size * in_w);
    if (targets.values && batch_values_.size() < batch_size * out_w)
      batch_values_.reset(batch_size * out_w);
    if (targets.labels && index_t(batch_labels_.size()) < batch_size)
      batch_labels_.assign(std::size_t(batch_size), 0);
    if (targets.weights && batch_weights_.size() < batch_size) batch_weights_.reset(batch_size);
  }
  for (index_t b = first_batch; b < first_batch + n_batches; ++b) {
    const index_t lo = b * batch_size;
    if (lo >= n_rows) break;
    const index_t rows = std::min(batch_size, n_rows - lo);
    Targets<T> t;
    const T* xb;
    if (order) {
      for (index_t r = 0; r < rows; ++r) {
        const std::int64_t src = order[lo + r];
        if (src < 0 || src >= n_rows) {
          result.status = BatchStatus::BadIndex;
          result.bad_value = src;
          return result;
        }
        std::copy(x + src * in_w, x + (src + 1) * in_w, batch_x_.data() + r * in_w);
        if (targets.values)
          std::copy(targets.values + src * out_w, targets.values + (src + 1) * out_w,
                    batch_values_.data() + r * out_w);
        if (targets.labels) batch_labels_[std::size_t(r)] = targets.labels[src];
        if (targets.weights) batch_weights_.data()[r] = targets.weights[src];
      }
      if (targets.weights) t.weights = batch_weights_.data();
      xb = batch_x_.data();
      if (targets.values) t.values = batch_values_.data();
      if (targets.labels) t.labels = batch_labels_.data();
    } else {
      xb = x + lo * in_w;
      if (targets.values) t.values = targets.values + lo * out_w;
      if (targets.labels) t.labels = targets.labels + lo;
      if (targets.weights) t.weights = targets.weights + lo;
    }
    if (t.labels) {
      for (index_t r = 0; r < rows; ++r) {
        if (t.labels[r] < 0 || t.labels[r] >= out_w) {
          result.status = BatchStatus::BadLabel;
          result.bad_value = t.labels[r];
          return result;
        }
      }
    }
    const StepResult r = step_locked(xb, rows, t);
    if (!r.finite) {
      result.status = BatchStatus::NonFinite;
      result.failed_loss = r.loss;
      return result;
    }
    result.loss_sum += r.loss * double(rows);
    result.correct += r.correct;
    ++result.batches_done;
  }
  return result;
}

namespace {
inline std::uint64_t splitmix64(std::uint64_t& s) noexcept {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
inline std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
}  // namespace

void shuffled_indices(std::uint64_t seed, std::int64_t* order, index_t n) noexcept {
  std::uint64_t s[4];
  for (auto& word : s) word = splitmix64(seed);
  auto next = [&s]() noexcept {  // xoshiro256**
    const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
    const std::uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  };
  for (index_t i = 0; i < n; ++i) order[i] = i;
  for (index_t i = n - 1; i > 0; --i) {
    // unbiased bounded draw (Lemire): multiply-high, reject the short remainder
    const std::uint64_t bound = std::uint64_t(i) + 1;
    unsigned __int128 m = (unsigned __int128)next() * bound;
    std::uint64_t low = std::uint64_t(m);
    if (low < bound) {
      const std::uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = (unsigned __int128)next() * bound;
        low = std::uint64_t(m);
      }
    }
    std::swap(order[i], order[index_t(m >> 64)]);
  }
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
void Network<T>::forward_collect(const T* x, index_t n, const std::vector<T*>& outs) {
  std::lock_guard<std::mutex> lock(mutex_);
  reserve_rows(n);
  forward(x, n);
  for (std::size_t j = 0; j < specs_.size() && j < outs.size(); ++j) {
    const T* src = act(j + 1);
    std::copy(src, src + n * widths_[j + 1], outs[j]);
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
    if (targets.weights) t.weights = targets.weights + start;
    const T* y = forward(x + start * in_w, rows);
    // every loss is a mean over rows times a constant, so chunk means combine by row counts
    weighted_loss += loss_forward_backward<T>(loss_, loss_params_, y, rows, out_w, t, nullptr) *
                     double(rows);
    total.correct += count_correct<T>(loss_, y, rows, out_w, t);
  }
  total.loss = (n > 0 ? weighted_loss / double(n) : 0.0) + penalties(false);
  total.finite = std::isfinite(total.loss);
  return total;
}

template class Network<float>;
template class Network<double>;

}  // namespace mlpcore

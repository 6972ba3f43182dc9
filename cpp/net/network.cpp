#include "net/network.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <cstdio>

#include <unistd.h>

#include "kernels/gemm/gemm.hpp"
#include "kernels/denormals.hpp"
#include "kernels/reductions.hpp"

namespace mlpcore {

double physical_memory_bytes() noexcept {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
}

void check_fits_in_memory(double bytes, const std::string& what, const char* advice) {
  const double total = physical_memory_bytes();
  if (total <= 0.0 || bytes <= total) return;
  char sizes[96];
  std::snprintf(sizes, sizeof sizes, "%.1f GiB, more than this machine's %.1f GiB of memory",
                bytes / 1073741824.0, total / 1073741824.0);
  throw OutOfMemory(what + " needs " + sizes + "; " + advice);
}
namespace {
// Rows per chunk for predict/evaluate when the training batch is smaller.
constexpr index_t kInferenceChunk = 512;
}  // namespace

template <typename T>
Network<T>::Network(std::vector<LayerSpec> specs) : specs_(std::move(specs)) {
  if (specs_.empty()) throw std::invalid_argument("Sequential: expected at least one layer, got 0");
  const std::size_t L = specs_.size();
  slots_.assign(L, LayerSlots());
  first_param_ = L;
  index_t width = -1, n_params = 0, n_buffers = 0, n_aux = 0, n_feat_aux = 0;
  std::vector<std::size_t> open_blocks;
  auto fail = [](const std::string& msg) { throw std::invalid_argument("Sequential: " + msg); };
  for (std::size_t i = 0; i < L; ++i) {
    const LayerSpec& s = specs_[i];
    const std::string where = "layer " + std::to_string(i) + " (" + layer_kind_name(s.kind) + ")";
    if (layer_fixes_width(s.kind)) {
      if (s.in_features <= 0 || (s.kind == LayerKind::Dense && s.out_features <= 0))
        fail(std::string(layer_kind_name(s.kind)) + " sizes must be positive");
      if (s.in_features > kMaxElements || s.out_features > kMaxElements)
        fail(where + ": sizes above 2^48 features cannot be allocated");
      if (width >= 0 && s.in_features != width)
        fail(where + " expects " + std::to_string(s.in_features) +
             " input features, but the previous layer gives " + std::to_string(width));
      if (widths_.empty()) widths_.push_back(s.in_features);
      first_param_ = std::min(first_param_, i);
    } else if (width < 0) {
      fail("the first layer must be Dense, LayerNorm, BatchNorm1d or Normalization (it fixes "
           "the number of input features), got " + std::string(layer_kind_name(s.kind)));
    }
    LayerNeeds needs;
    try {
      needs = plan_layer(i, layer_fixes_width(s.kind) ? s.in_features : width);
    } catch (const std::invalid_argument& e) {
      fail(where + ": " + e.what());
    }
    LayerSlots& slot = slots_[i];
    slot.param_count = needs.weights + needs.biases;
    if (slot.param_count > 0) {
      slot.weight = n_params;
      slot.bias = n_params + needs.weights;
    }
    if (needs.buffers > 0) slot.buffer = n_buffers;
    if (needs.aux_per_row > 0) slot.aux = n_aux;
    if (needs.feat_aux > 0) slot.feat_aux = n_feat_aux;
    try {
      n_params = checked_add(n_params, slot.param_count, "the parameters");
      n_buffers = checked_add(n_buffers, needs.buffers, "the buffers");
      n_aux = checked_add(n_aux, needs.aux_per_row, "the per-row scratch");
      n_feat_aux = checked_add(n_feat_aux, needs.feat_aux, "the per-feature scratch");
    } catch (const std::invalid_argument& e) {
      fail(where + ": " + e.what());
    }
    has_batchnorm_ = has_batchnorm_ || s.kind == LayerKind::BatchNorm;
    if (s.kind == LayerKind::ResidualBegin) open_blocks.push_back(i);
    if (s.kind == LayerKind::ResidualEnd) {
      if (open_blocks.empty()) fail("a Residual block ends without a beginning");
      const std::size_t begin = open_blocks.back();
      open_blocks.pop_back();
      if (widths_[begin] != width)
        fail("a Residual block must keep the feature count: its input has " +
             std::to_string(widths_[begin]) + " features but its layers output " +
             std::to_string(width));
      slots_[begin].partner = i;
      slot.partner = begin;
    }
    width = needs.out_width;
    widths_.push_back(width);
  }
  if (!open_blocks.empty()) fail("a Residual block is not closed");
  act_offsets_.resize(widths_.size());
  index_t offset = 0;
  for (std::size_t j = 0; j < widths_.size(); ++j) {
    act_offsets_[j] = offset;
    offset = checked_add(offset, widths_[j], "the layer outputs");
  }
  params_.reset(n_params);
  grads_.reset(n_params);
  buffers_.reset(n_buffers);
  feat_aux_.reset(n_feat_aux);
  aux_per_row_ = n_aux;
  for (std::size_t i = 0; i < L; ++i) init_layer(i);
  layer_grad_sq_.assign(L, 0.0);
  part_grad_sq_.assign(2 * L, 0.0);
  stats_.resize(L);
  plan_shards();
}

template <typename T>
void Network<T>::reserve_rows(index_t rows) {
  if (rows <= rows_cap_) return;
  const index_t per_row = act_offsets_.back() + widths_.back();
  // (wide layers times a large batch: the check names the batch, which the caller can shrink)
  check_fits_in_memory(
      (2.0 * double(per_row) + double(aux_per_row_)) * double(rows) * sizeof(T),
      "a batch of " + std::to_string(rows) + " rows (each layer's outputs and their "
      "gradients, " + std::to_string(per_row) + " values a row)",
      "use a smaller batch_size (or fewer rows a call)");
  acts_.reset(checked_mul(per_row, rows, "the batch's layer outputs"));
  dacts_.reset(per_row * rows);
  aux_.reset(checked_mul(aux_per_row_, rows, "the batch's scratch"));
  rows_cap_ = rows;
}

template <typename T>
void Network<T>::set_loss(Loss loss, const LossParams& params) {
  const CallLock lock(*this);
  loss_ = loss;
  loss_params_ = params;
}

template <typename T>
void Network<T>::set_optimizer(const OptConfig& cfg) {
  const std::string invalid = invalid_optimizer_config(cfg);
  if (!invalid.empty()) throw std::invalid_argument(invalid);
  const CallLock lock(*this);
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
    auto fresh = std::make_shared<AlignedBuffer<T>>(index_t(new_count) * num_params());
    fresh_momentum_ = true;
    for (int k = 0; same_rule && k < new_count; ++k)
      for (int j = 0; j < old_count; ++j)
        if (std::string(old_names[j]) == new_names[k]) {
          std::copy(state_->data() + j * num_params(), state_->data() + (j + 1) * num_params(),
                    fresh->data() + k * num_params());
          if (std::string(new_names[k]) == "momentum_buffer") fresh_momentum_ = false;
        }
    state_ = std::move(fresh);  // the old arena lives on only in NumPy views that hold it
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

StopPoller::StopPoller(const StopCheck* check) noexcept
    : check_(check && check->requested ? check : nullptr) {}

bool StopPoller::stop() noexcept {
  if (!check_ || ++calls_ < stride_) return false;
  calls_ = 0;
  const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
  // Read the clock about once a millisecond whatever a step costs (microsecond steps of tiny
  // networks would otherwise pay for it).
  const std::int64_t since = now - last_read_ns_;
  last_read_ns_ = now;
  if (since < 1000000 && stride_ < 4096) stride_ *= 2;
  else if (since > 4000000 && stride_ > 1) stride_ /= 2;
  const bool first = next_ns_ == 0;  // a call shorter than one poll period never asks
  if (now < next_ns_) return false;
  next_ns_ = now + std::int64_t(kStopPollMs) * 1000000;
  if (first) return false;
  if (before_ask_) before_ask_(before_ask_ctx_);
  return check_->requested(check_->ctx);
}

template <typename T>
bool Network<T>::predict(const T* x, index_t n, T* out, const StopCheck* stop) {
  const CallLock lock(*this);
  return predict_locked(x, n, out, stop);
}

template <typename T>
bool Network<T>::predict_if_free(const T* x, index_t n, T* out) {
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  return lock.owns_lock() && predict_locked(x, n, out, nullptr);
}

template <typename T>
bool Network<T>::predict_locked(const T* x, index_t n, T* out, const StopCheck* stop) {
  const DenormalsAsZero denormals;
  if (const int nt = predict_threads(n); nt > 1) return predict_sharded(x, n, out, stop, nt);
  const index_t chunk = std::max(rows_cap_, std::min(n, kInferenceChunk));
  reserve_rows(chunk);
  StopPoller poller(stop);
  const index_t in_w = in_features(), out_w = out_features();
  for (index_t start = 0; start < n; start += chunk) {
    if (poller.stop()) return false;
    const index_t rows = std::min(chunk, n - start);
    const T* y = forward(x + start * in_w, rows, false);
    std::copy(y, y + rows * out_w, out + start * out_w);
  }
  return true;
}

template <typename T>
void Network<T>::forward_collect(const T* x, index_t n, const std::vector<T*>& outs) {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  reserve_rows(n);
  forward(x, n, false);
  for (std::size_t j = 0; j < specs_.size() && j < outs.size(); ++j) {
    const T* src = act(j + 1);
    std::copy(src, src + n * widths_[j + 1], outs[j]);
  }
}

template <typename T>
StepResult Network<T>::evaluate(const T* x, index_t n, const Targets<T>& targets,
                                const StopCheck* stop, bool* stopped) {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  const index_t chunk = std::max(rows_cap_, std::min(n, kInferenceChunk));
  reserve_rows(chunk);
  StopPoller poller(stop);
  const index_t in_w = in_features(), out_w = out_features();
  StepResult total;
  double weighted_loss = 0.0;
  for (index_t start = 0; start < n; start += chunk) {
    if (poller.stop()) {
      if (stopped) *stopped = true;
      total.finite = false;
      return total;
    }
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

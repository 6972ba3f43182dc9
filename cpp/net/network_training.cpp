#include "net/network.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/denormals.hpp"
#include "kernels/prefetch.hpp"
#include "kernels/reductions.hpp"
#include "net/arena_threads.hpp"

namespace mlpcore {

namespace {
// Fewer parameters are measured and updated by the calling thread alone (a parallel region's
// meeting costs more than half of the work).
constexpr index_t kParallelUpdateMin = index_t(1) << 15;

// One row of the batch gather. Short rows are copied inline: a library call per sample costs
// more than the copy for narrow inputs.
template <typename T>
void copy_row(const T* src, index_t n, T* dst) noexcept {
  if (n <= 16) {
    for (index_t k = 0; k < n; ++k) dst[k] = src[k];
  } else {
    std::memcpy(dst, src, sizeof(T) * std::size_t(n));
  }
}
}  // namespace

template <typename T>
void Network<T>::set_clipping(const ClipConfig& clip) {
  const CallLock lock(*this);
  clip_ = clip;
}

template <typename T>
TrainStats Network<T>::take_stats() {
  const CallLock lock(*this);
  TrainStats out = stats_;
  stats_ = TrainStats();
  stats_.resize(specs_.size());
  return out;
}

void TrainStats::resize(std::size_t layers) {
  for (auto* v : {&layer_grad_norm_sum, &weight_norm_sum, &update_ratio_sum, &act_mean_sum,
                  &act_std_sum, &dead_frac_sum, &saturated_frac_sum})
    v->assign(layers, 0.0);
}

template <typename T>
void Network<T>::set_diagnostics(bool on) {
  const CallLock lock(*this);
  diagnostics_on_ = on;
  if (on && params_before_.size() != num_params()) params_before_.reset(num_params());
}

template <typename T>
void Network<T>::set_stat_reducer(const StatReducer& reducer, const std::vector<bool>& layers,
                                  std::shared_ptr<void> owner) {
  if (reducer.reduce && layers.size() != specs_.size())
    throw std::invalid_argument("set_stat_reducer: one flag per layer expected");
  const CallLock lock(*this);
  index_t widest = 0;
  stat_sync_.assign(specs_.size(), 0);
  for (std::size_t i = 0; reducer.reduce && i < specs_.size(); ++i) {
    stat_sync_[i] = layers[i] && specs_[i].kind == LayerKind::BatchNorm;
    if (stat_sync_[i]) widest = std::max(widest, widths_[i + 1]);
  }
  all_batchnorm_synced_ = reducer.reduce != nullptr;
  for (std::size_t i = 0; i < specs_.size(); ++i)
    if (specs_[i].kind == LayerKind::BatchNorm && !stat_sync_[i]) all_batchnorm_synced_ = false;
  stat_scratch_.assign(std::size_t(2 * widest + 1), 0.0);
  stat_reducer_ = reducer;
  stat_owner_ = std::move(owner);
}

template <typename T>
void Network<T>::accumulate_activation_stats(index_t n) noexcept {
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const LayerSpec& s = specs_[i];
    if (s.kind != LayerKind::Activation) continue;
    const T* y = act(i + 1);
    const index_t w = widths_[i + 1], count = n * w;
    const double sum = [&] {
      double acc = 0.0;
      for (index_t k = 0; k < count; ++k) acc += double(y[k]);
      return acc;
    }();
    const double mean = sum / double(count);
    double sq = 0.0;
    index_t saturated = 0;
    for (index_t k = 0; k < count; ++k) {
      sq += (double(y[k]) - mean) * (double(y[k]) - mean);
      if (s.act == Act::Sigmoid) saturated += y[k] < T(0.01) || y[k] > T(0.99);
      if (s.act == Act::Tanh) saturated += std::abs(y[k]) > T(0.99);
    }
    stats_.act_mean_sum[i] += mean;
    stats_.act_std_sum[i] += std::sqrt(sq / double(count));
    stats_.saturated_frac_sum[i] += double(saturated) / double(count);
    if (s.act == Act::ReLU) {
      index_t dead = 0;
      for (index_t c = 0; c < w; ++c) {
        bool all_zero = true;
        for (index_t r = 0; r < n && all_zero; ++r) all_zero = y[r * w + c] == T(0);
        dead += all_zero;
      }
      stats_.dead_frac_sum[i] += double(dead) / double(w);
    }
  }
}

namespace {
// A Dense layer's penalty gradient on its weights k0 .. k1 - 1.
template <typename T>
void add_layer_penalty_grads(const LayerSpec& s, const T* w, T* dw, index_t k0,
                             index_t k1) noexcept {
  const T l1 = T(s.l1), two_l2 = T(2.0 * s.l2);
  if (s.l1 == 0.0) {
#pragma omp simd
    for (index_t k = k0; k < k1; ++k) dw[k] += two_l2 * w[k];
  } else {
#pragma omp simd
    for (index_t k = k0; k < k1; ++k) {
      const T sign = w[k] > T(0) ? T(1) : (w[k] < T(0) ? T(-1) : T(0));
      dw[k] += l1 * sign + two_l2 * w[k];
    }
  }
}
}  // namespace

template <typename T>
double Network<T>::penalties(bool add_grad) noexcept {
  double total = 0.0;
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const LayerSpec& s = specs_[i];
    if (s.kind != LayerKind::Dense || (s.l1 == 0.0 && s.l2 == 0.0)) continue;
    const T* w = weight(i);
    T* dw = dweight(i);
    const index_t n = s.in_features * s.out_features;
    // Separate passes, each a vectorised loop: the usual L2-only case never computes signs,
    // and the squares are summed by the ISA-dispatched reduction.
    double abs_sum = 0.0;
    const double sq_sum = s.l2 != 0.0 ? sum_of_squares(w, n) : 0.0;
    if (s.l1 != 0.0) {
      for (index_t k = 0; k < n; ++k) abs_sum += std::abs(double(w[k]));
    }
    if (add_grad) add_layer_penalty_grads(s, w, dw, 0, n);
    total += s.l1 * abs_sum + s.l2 * sq_sum;
  }
  return total;
}

template <typename T>
void Network<T>::add_penalty_grads(index_t lo, index_t hi) noexcept {
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const LayerSpec& s = specs_[i];
    if (s.kind != LayerKind::Dense || (s.l1 == 0.0 && s.l2 == 0.0)) continue;
    // the layer's weights are arena positions first .. first + n - 1
    const index_t first = slots_[i].weight, n = s.in_features * s.out_features;
    const index_t a = std::max(lo, first), b = std::min(hi, first + n);
    if (a < b) add_layer_penalty_grads(s, weight(i), dweight(i), a - first, b - first);
  }
}

template <typename T>
void Network<T>::measure_part(int part) noexcept {
  index_t lo, hi;
  arena_part(part, &lo, &hi);
  const std::size_t layers = specs_.size();
  for (std::size_t i = 0; i < layers; ++i) {
    // a layer's parameters (weight then bias) are adjacent in the arena
    const index_t a = std::max(lo, slots_[i].weight);
    const index_t b = std::min(hi, slots_[i].weight + slots_[i].param_count);
    part_grad_sq_[2 * i + part] =
        slots_[i].param_count > 0 && a < b ? sum_of_squares(grads_.data() + a, b - a) : 0.0;
  }
}

template <typename T>
void Network<T>::add_halves_part(int part) noexcept {
  index_t lo, hi;
  arena_part(part, &lo, &hi);
  T* g = grads_.data();
  const T* h = shard_grads_.data();
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const LayerSlots& slot = slots_[i];
    const index_t a = std::max(lo, slot.weight), b = std::min(hi, slot.weight + slot.param_count);
    double& sq = part_grad_sq_[2 * i + part];
    sq = 0.0;
    if (slot.param_count == 0 || a >= b) continue;
    const LayerSpec& s = specs_[i];
    const bool penalized = s.kind == LayerKind::Dense && (s.l1 != 0.0 || s.l2 != 0.0);
    if (penalized && s.l1 != 0.0) {  // the three passes
#pragma omp simd
      for (index_t k = a; k < b; ++k) g[k] += h[k];
      add_penalty_grads(a, b);
      sq = sum_of_squares(g + a, b - a);
      continue;
    }
    // (the layer's weights come first in its slot: positions a .. weights_end - 1 get the term)
    const index_t weights_end = slot.weight + s.in_features * s.out_features;
    const index_t n_w = penalized ? std::max<index_t>(0, std::min(b, weights_end) - a) : 0;
    sq = add_into_squares<T>(g + a, h + a, penalized ? params_.data() + a : nullptr,
                             T(2.0 * s.l2), n_w, b - a);
  }
}

template <typename T>
bool Network<T>::measure_gradients() noexcept {
  measure_part(0);
  measure_part(1);
  return measured_gradients();
}

template <typename T>
double Network<T>::measured_grad_sq() const noexcept {
  double total = 0.0;
  for (std::size_t i = 0; i < specs_.size(); ++i)
    if (slots_[i].param_count != 0) total += part_grad_sq_[2 * i] + part_grad_sq_[2 * i + 1];
  return total;
}

template <typename T>
bool Network<T>::measured_gradients() noexcept {
  for (std::size_t i = 0; i < specs_.size(); ++i)
    layer_grad_sq_[i] = part_grad_sq_[2 * i] + part_grad_sq_[2 * i + 1];
  const double total = measured_grad_sq();
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
void Network<T>::gather_rows(const RowGather& g, index_t r0, index_t n) noexcept {
  const index_t w = in_features();
  // Shuffled rows of a large data set come from memory one by one: ask for the lines of the
  // row kPrefetchAhead rows on while this one is copied (no effect on results).
  constexpr index_t kPrefetchAhead = 8;
  const index_t line = 64 / index_t(sizeof(T)), end = r0 + n;
  const bool prefetch = w >= line;  // rows of a cache line or more (narrow data sets are small)
  const index_t next_end = g.labels ? std::min(end, g.next_rows) : 0;
  for (index_t r = r0; r < end; ++r) {
    if (prefetch && r + kPrefetchAhead < end) {
      const T* next = g.src + g.order[r + kPrefetchAhead] * w;
      for (index_t k = 0; k < w; k += line) __builtin_prefetch(next + k);
    }
    if (r < next_end) __builtin_prefetch(g.labels + g.next_order[r]);
    copy_row(g.src + g.order[r] * w, w, g.dst + r * w);
  }
}

template <typename T>
StepResult Network<T>::gradients_locked(const T* x, index_t n, const Targets<T>& targets, T* dx,
                                        const RowGather* gather, bool* updated) {
  reserve_rows(n);
  sentinel_ = SentinelReport();
  last_step_shards_ = shard_step(n) ? 2 : 1;
  if (last_step_shards_ == 2) return gradients_sharded(x, n, targets, dx, gather, updated);
  if (gather) gather_rows(*gather, 0, n);
  StepResult r;
  const T* out = forward(x, n, true);
  if (!out) {
    r.finite = false;
    r.loss = std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  const std::size_t last = specs_.size();
  r.loss = loss_forward_backward<T>(loss_, loss_params_, out, n, widths_[last], targets,
                                    dact(last), -1, &r.correct);
  r.finite = std::isfinite(r.loss);
  if (!r.finite) {
    sentinel_.pass = Pass::Loss;
    return r;
  }
  if (!backward(x, n, dx)) {
    r.finite = false;
    return r;
  }
  r.loss += penalties(true);
  r.finite = std::isfinite(r.loss);
  if (r.finite && diagnostics_on_) accumulate_activation_stats(n);
  return r;
}

template <typename T>
StepResult Network<T>::compute_gradients(const T* x, index_t n, const Targets<T>& targets, T* dx) {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  StepResult r = gradients_locked(x, n, targets, dx);
  if (r.finite) r.finite = measure_gradients();  // last_grad_norm for callers that read it now
  return r;
}

template <typename T>
void Network<T>::apply_rule(index_t lo, index_t hi, std::int64_t step) noexcept {
  T* state[kMaxOptimizerState] = {nullptr, nullptr, nullptr};
  for (int k = 0; k < optimizer_state_count(opt_); ++k) state[k] = optimizer_state(k) + lo;
  optimizer_step<T>(opt_, step, fresh_momentum_, params_.data() + lo, grads_.data() + lo,
                    state, hi - lo);
}

template <typename T>
void Network<T>::apply_rule_part(int part, std::int64_t step) noexcept {
  index_t lo, hi;
  arena_part(part, &lo, &hi);
  apply_rule(lo, hi, step);
}

template <typename T>
bool Network<T>::update_begin() noexcept {
  // Measured here, on the gradients the rule will read: after an allreduce or a user's edit
  // the norm (statistics, clipping) is that of what is applied.
  if (!measure_gradients()) return false;
  update_begin_measured();
  return true;
}

template <typename T>
void Network<T>::update_begin_measured() noexcept {
  prepacked_.clear();  // the weights change from here on
  ++stats_.steps;
  stats_.grad_norm_sum += last_grad_norm_;
  stats_.grad_norm_sq_sum += last_grad_norm_ * last_grad_norm_;
  for (std::size_t i = 0; i < specs_.size(); ++i)
    stats_.layer_grad_norm_sum[i] += std::sqrt(layer_grad_sq_[i]);
  clip_gradients();
  if (diagnostics_on_) std::copy(params_.data(), params_.data() + num_params(), params_before_.data());
  ++opt_steps_;
}

template <typename T>
void Network<T>::update_end() noexcept {
  if (opt_.kind == OptKind::SGD && opt_.momentum != 0.0) fresh_momentum_ = false;
  if (!diagnostics_on_) return;
  ++stats_.diag_steps;
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const index_t count = slots_[i].param_count;
    if (count == 0) continue;
    const T* now = weight(i);
    const T* before = params_before_.data() + slots_[i].weight;
    double change = 0.0;
    for (index_t k = 0; k < count; ++k)
      change += (double(now[k]) - double(before[k])) * (double(now[k]) - double(before[k]));
    const double weight_sq = sum_of_squares(now, count);
    const double old = sum_of_squares(before, count);
    stats_.weight_norm_sum[i] += std::sqrt(weight_sq);
    stats_.update_ratio_sum[i] += old > 0.0 ? std::sqrt(change / old) : 0.0;
  }
}

template <typename T>
bool Network<T>::update_locked() noexcept {
  const int nt = num_params() >= kParallelUpdateMin ? arena_threads() : 1;
  if (nt <= 1) {
    if (!update_begin()) return false;
    apply_rule(0, num_params(), opt_steps_);
    update_end();
    return true;
  }
  // As in a sharded step: each thread measures its part of the arena, then (after one thread
  // has checked and recorded the norms) applies the rule to the same part, in one region.
  bool ok = false;
#pragma omp parallel num_threads(nt)
  {
    const DenormalsAsZero denormals;  // same arithmetic mode in every thread
    const Seat me = seat();
    for (int s = me.t; s < 2; s += me.team) {
      index_t lo, hi;  // (see gradients_sharded: the other core read these in the products)
      arena_part(s, &lo, &hi);
      prefetch_for_write(params_.data() + lo, std::size_t(hi - lo) * sizeof(T));
      measure_part(s);
    }
#pragma omp barrier
    if (me.t == 0) {
      ok = measured_gradients();
      if (ok) update_begin_measured();
    }
#pragma omp barrier
    if (ok)
      for (int s = me.t; s < 2; s += me.team) apply_rule_part(s, opt_steps_);
  }
  if (!ok) return false;
  update_end();
  return true;
}

template <typename T>
bool Network<T>::update() {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  return update_locked();
}

template <typename T>
StepResult Network<T>::train_step(const T* x, index_t n, const Targets<T>& targets) {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  bool updated = false;
  StepResult r = gradients_locked(x, n, targets, nullptr, nullptr, &updated);
  // the loss or a gradient is NaN/Inf: the parameters stay as they are
  if (r.finite && !updated) r.finite = update_locked();
  return r;
}

template <typename T>
bool Network<T>::forward_for_custom(const T* x, index_t n, T* out) {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  reserve_rows(n);
  sentinel_ = SentinelReport();
  const T* y = forward(x, n, true);
  if (!y) return false;
  std::copy(y, y + n * out_features(), out);
  return true;
}

template <typename T>
StepResult Network<T>::backward_from(const T* x, index_t n, const T* dout, T* dx) {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  StepResult r;
  if (n > rows_cap_) {  // forward_for_custom was not called with this batch
    r.finite = false;
    return r;
  }
  std::copy(dout, dout + n * out_features(), dact(specs_.size()));
  if (!backward(x, n, dx)) {
    r.finite = false;
    return r;
  }
  r.loss = penalties(true);
  r.finite = std::isfinite(r.loss) && measure_gradients();
  if (r.finite && diagnostics_on_) accumulate_activation_stats(n);
  return r;
}

template <typename T>
BatchRunResult Network<T>::train_batches(const T* x, index_t n_rows, const Targets<T>& targets,
                                         const std::int64_t* order, index_t batch_size,
                                         index_t first_batch, index_t n_batches,
                                         const StopCheck* stop) {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  StopPoller poller(stop);
  return run_batches(x, n_rows, targets, order, batch_size, first_batch, n_batches, poller);
}

template <typename T>
EpochRunResult Network<T>::train_epochs(const T* x, index_t n_rows, const Targets<T>& targets,
                                        const std::uint64_t* seeds, std::int64_t* order,
                                        index_t batch_size, index_t epochs, PlateauRule* rule,
                                        double* losses, const StopCheck* stop) {
  const CallLock lock(*this);
  const DenormalsAsZero denormals;
  StopPoller poller(stop);  // one for the whole run: a stop is noticed across epochs
  EpochRunResult result;
  const index_t batch_rows = std::min(batch_size, n_rows);
  const index_t n_batches = (n_rows + batch_rows - 1) / batch_rows;
  for (index_t e = 0; e < epochs; ++e) {
    if (seeds) shuffled_indices(seeds[e], order, n_rows);
    const BatchRunResult r =
        run_batches(x, n_rows, targets, seeds ? order : nullptr, batch_size, 0, n_batches, poller);
    if (r.status != BatchStatus::Ok) {
      result.failed = r;
      return result;
    }
    // (the division Python's epoch loop makes: the rows of the batches done)
    const double loss = r.loss_sum / double(std::min(n_rows, r.batches_done * batch_rows));
    losses[e] = loss;
    result.epochs_done = e + 1;
    if (!rule) continue;
    const double scaled = loss / rule->scale;
    if (scaled > rule->best - rule->tol) ++rule->count;
    else rule->count = 0;
    if (scaled < rule->best) rule->best = scaled;
    if (rule->count > rule->patience) {
      result.plateaued = true;
      return result;
    }
  }
  return result;
}

template <typename T>
typename Network<T>::BatchPlan Network<T>::plan_batch(
    const T* x, index_t n_rows, const Targets<T>& targets, const std::int64_t* order,
    index_t batch_size, index_t first_batch, index_t k, index_t n_batches,
    StopPoller& poller) noexcept {
  BatchPlan p;
  if (poller.stop()) {
    p.status = BatchStatus::Stopped;
    return p;
  }
  const index_t in_w = in_features(), out_w = out_features();
  // b * batch_size without overflow: a batch starting past the data ends the epoch
  p.past_data = k > std::numeric_limits<index_t>::max() - first_batch;
  const index_t b = first_batch + (p.past_data ? 0 : k);
  p.past_data = p.past_data || (b > 0 && batch_size > (n_rows - 1) / b);
  if (p.past_data) return p;
  const index_t lo = b * batch_size;
  const index_t rows = std::min(batch_size, n_rows - lo);
  p.rows = rows;
  Targets<T>& t = p.targets;
  if (order) {
    for (index_t r = 0; r < rows; ++r) {
      const std::int64_t src = order[lo + r];
      if (src < 0 || src >= n_rows) {
        p.status = BatchStatus::BadIndex;
        p.bad_value = src;
        return p;
      }
      if (targets.values)
        copy_row(targets.values + src * out_w, out_w, batch_values_.data() + r * out_w);
      if (targets.labels) batch_labels_[std::size_t(r)] = targets.labels[src];
      if (targets.weights) batch_weights_.data()[r] = targets.weights[src];
    }
    if (targets.weights) t.weights = batch_weights_.data();
    p.xb = batch_x_.data();
    p.gather = RowGather{x, order + lo, batch_x_.data()};  // the input rows, by the step itself
    p.gathers = true;
    const index_t next_lo = lo + rows;  // (the next batch of this run, if any)
    if (targets.labels && k + 1 < n_batches && next_lo < n_rows) {
      p.gather.labels = targets.labels;
      p.gather.next_order = order + next_lo;
      p.gather.next_rows = std::min(batch_size, n_rows - next_lo);
    }
    if (targets.values) t.values = batch_values_.data();
    if (targets.labels) t.labels = batch_labels_.data();
  } else {
    p.xb = x + lo * in_w;
    if (targets.values) t.values = targets.values + lo * out_w;
    if (targets.labels) t.labels = targets.labels + lo;
    if (targets.weights) t.weights = targets.weights + lo;
  }
  if (t.labels) {
    for (index_t r = 0; r < rows; ++r) {
      if (t.labels[r] < 0 || t.labels[r] >= out_w) {
        p.status = BatchStatus::BadLabel;
        p.bad_value = t.labels[r];
        return p;
      }
    }
  }
  if (has_batchnorm_ && rows == 1) {
    p.status = BatchStatus::SingleSampleBatch;
    p.bad_value = b;
  }
  return p;
}

template <typename T>
BatchRunResult Network<T>::run_batches(const T* x, index_t n_rows, const Targets<T>& targets,
                                       const std::int64_t* order, index_t batch_size,
                                       index_t first_batch, index_t n_batches,
                                       StopPoller& poller) {
  BatchRunResult result;
  const index_t in_w = in_features(), out_w = out_features();
  // A batch never holds more than the data: batch b starts at b * batch_size, so the first
  // batch past the data stops the loop whatever the requested size.
  const index_t batch_rows = std::min(batch_size, n_rows);
  if (order) {
    // sized once per batch size; later runs with the same batch size allocate nothing
    if (batch_x_.size() < batch_rows * in_w) batch_x_.reset(batch_rows * in_w);
    if (targets.values && batch_values_.size() < batch_rows * out_w)
      batch_values_.reset(batch_rows * out_w);
    if (targets.labels && index_t(batch_labels_.size()) < batch_rows)
      batch_labels_.assign(std::size_t(batch_rows), 0);
    if (targets.weights && batch_weights_.size() < batch_rows) batch_weights_.reset(batch_rows);
  }
  index_t k = 0;
  if (n_batches > 0 && team_runs_batches(batch_rows)) {
    k = run_batches_in_team(x, n_rows, targets, order, batch_size, first_batch, n_batches,
                            poller, result);
    if (result.status != BatchStatus::Ok) return result;
  }
  for (; k < n_batches; ++k) {
    const BatchPlan p =
        plan_batch(x, n_rows, targets, order, batch_size, first_batch, k, n_batches, poller);
    if (p.status != BatchStatus::Ok) {
      result.status = p.status;
      result.bad_value = p.bad_value;
      return result;
    }
    if (p.past_data) break;
    bool updated = false;
    StepResult r = gradients_locked(p.xb, p.rows, p.targets, nullptr,
                                    p.gathers ? &p.gather : nullptr, &updated);
    if (r.finite && !updated) r.finite = update_locked();
    if (!r.finite) {
      result.status = BatchStatus::NonFinite;
      result.failed_loss = r.loss;
      return result;
    }
    add_step(result, r, p.rows);
  }
  return result;
}

template class Network<float>;
template class Network<double>;

}  // namespace mlpcore

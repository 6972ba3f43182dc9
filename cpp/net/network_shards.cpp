// The sharded training step. A step split at the GEMM level hands each product's rows or
// columns to the threads in turn, so every activation written by one core is read by the other
// in the next product: for the layer sizes most MLPs have (a few hundred features, batches of
// a few hundred rows) those cache-to-cache transfers cost more than the second core saves
// (benchmarks/README.md, "Where two threads go"). Here the batch is cut once into two halves
// and each thread takes its half through the forward pass, the loss and the backward pass on
// its own rows; the weights are only read. What crosses between the cores is half of one
// parameter gradient (each thread adds a fixed range of the two) and, in the native loop and
// train_step, half of the parameters (each thread applies the update rule to its range, whose
// optimizer state then stays in its cache).
//
// The cut depends on the shapes alone (shard_step), and one thread runs both halves the same
// way, so the bits do not depend on the thread count (README: "Same seed, same bits").
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "kernels/denormals.hpp"
#include "kernels/prefetch.hpp"
#include "net/arena_threads.hpp"
#include "net/network.hpp"

namespace mlpcore {

namespace {

constexpr index_t kMinShardRows = 16;  // fewer rows per half: the step is not cut
// Less work per step (multiply-adds of the forward pass) is done sooner by one thread than the
// two threads of a parallel region can meet and part.
constexpr index_t kMinShardWork = index_t(1) << 20;
// A step whose largest product has at most this many multiply-adds (one the direct path takes
// on one thread) is cut from kMinSmallShardWork on, whatever crosses between the cores: uncut,
// such products run on one thread or are split at a cost near their own (per step, the rule
// forced either way, AVX2, 2 threads, batch 32: 64-128-64-10 Adam 45.3 -> 37.2 us, 128-128-10
// SGD 49.4 -> 29.8; batch 64 100-100-4 Adam 53.1 -> 32.8; below it 64-96-64-10 SGD 0.98x,
// 64-64-64-10 SGD 0.88x).
constexpr index_t kSmallProductWork = index_t(1) << 21;
constexpr index_t kMinSmallShardWork = index_t(1) << 19;

}  // namespace

template <typename T>
void Network<T>::plan_shards() noexcept {
  // Layers that mix rows (BatchNorm's batch statistics) or draw from one random sequence in row
  // order (Dropout) would change their results if cut.
  kinds_allow_shards_ = !has_batchnorm_;
  dense_work_per_row_ = widths_per_row_ = largest_product_per_row_ = 0.0;
  for (const LayerSpec& s : specs_) {
    if (s.kind == LayerKind::Dropout && s.p != 0.0) kinds_allow_shards_ = false;
    if (s.kind == LayerKind::Dense) {
      const double work = double(s.in_features) * s.out_features;
      dense_work_per_row_ += work;
      largest_product_per_row_ = std::max(largest_product_per_row_, work);
    }
    if (s.kind == LayerKind::Normalization) has_normalization_ = true;
  }
  for (index_t w : widths_) widths_per_row_ += double(w);
}

template <typename T>
bool Network<T>::shard_rows(index_t n) const noexcept {
  if (n < 2 * kMinShardRows) return false;
  const double work = double(n) * dense_work_per_row_;
  if (double(n) * largest_product_per_row_ <= double(kSmallProductWork))
    return work >= double(kMinSmallShardWork);
  // What crosses between the cores: a cut step moves the parameters (read by both halves
  // after the update) and one parameter gradient; a step split product by product moves the
  // activations. Cut when the activations are the larger.
  return work >= double(kMinShardWork) && double(n) * widths_per_row_ >= double(num_params());
}

template <typename T>
bool Network<T>::shard_step(index_t n) const noexcept {
  // (the sentinel reports whole-batch blocks)
  return kinds_allow_shards_ && !sentinel_on_ && shard_rows(n);
}

template <typename T>
void Network<T>::forward_rows(const T* x, const Rows& rows, bool training) noexcept {
  for (std::size_t i = 0; i < specs_.size();) i += forward_layer(i, x, rows, training);
}

template <typename T>
void Network<T>::cut_step_begin(CutStep& s, const T* x, index_t n, const Targets<T>& targets,
                                T* dx, const RowGather* gather, bool with_update) noexcept {
  prepare_features();
  const index_t half = (n / 2 + 1) / 2 * 2;  // the first half, rounded up to an even count
  s = CutStep();
  s.x = x;
  s.n = n;
  s.targets = targets;
  s.dx = dx;
  s.gather = gather;
  s.with_update = with_update;
  // Without clipping (which rescales every gradient) and diagnostics (which copy the weights
  // first), the rule needs nothing cut_step_decide records: each thread then takes its
  // decision itself, from the same sums, and goes on without the barrier that would wait for
  // that one thread.
  s.each_decides = with_update && !clip_.on() && !diagnostics_on_;
  s.next_step = opt_steps_ + 1;
  s.halves[0] = {0, half, grads_.data()};
  s.halves[1] = {half, n - half, shard_grads_.data()};
}

template <typename T>
void Network<T>::cut_step_half(CutStep& s, int half) noexcept {
  const Rows& rows = s.halves[half];
  if (s.gather) gather_rows(*s.gather, rows.r0, rows.n);  // on this core, for this core
  forward_rows(s.x, rows, true);
  const std::size_t last = specs_.size();
  const index_t out_w = widths_[last];
  Targets<T> part;
  if (s.targets.values) part.values = s.targets.values + rows.r0 * out_w;
  if (s.targets.labels) part.labels = s.targets.labels + rows.r0;
  if (s.targets.weights) part.weights = s.targets.weights + rows.r0;
  const T* out = at_row(act(last), rows.r0, out_w);
  HalfResult& r = s.results[half];
  r.loss = loss_forward_backward<T>(loss_, loss_params_, out, rows.n, out_w, part,
                                    at_row(dact(last), rows.r0, out_w), s.n, &r.correct);
  r.finite = std::isfinite(r.loss);
  if (r.finite) backward_rows(s.x, rows, s.dx);
}

// Part `part` of the parameter arena (arena_part, fixed whatever the thread count): the
// halves' gradients added there, the penalties' gradients added and each layer's sum of
// squares taken over it; the update rule is then applied to the same part.
template <typename T>
void Network<T>::cut_step_sum(CutStep& s, int part) noexcept {
  if (!s.results[0].finite || !s.results[1].finite) return;
  index_t lo, hi;
  arena_part(part, &lo, &hi);
  // the parameters this thread updates next, which the other core read in its half: owned
  // here while the gradients are summed (the update wrote them at a third of its speed)
  if (s.with_update) prefetch_for_write(params_.data() + lo, std::size_t(hi - lo) * sizeof(T));
  add_halves_part(part);
}

template <typename T>
void Network<T>::cut_step_decide(CutStep& s) noexcept {
  StepResult& r = s.r;
  r.loss = s.results[0].loss + s.results[1].loss;
  r.correct = s.results[0].correct + s.results[1].correct;
  r.finite = std::isfinite(r.loss);
  if (!r.finite) {
    sentinel_.pass = Pass::Loss;
    return;
  }
  r.loss += s.penalty;
  r.finite = std::isfinite(r.loss);
  if (r.finite && diagnostics_on_) accumulate_activation_stats(s.n);
  s.measured_ok = measured_gradients();
  s.apply = s.with_update && r.finite && s.measured_ok;
  if (s.apply) update_begin_measured();
}

template <typename T>
bool Network<T>::cut_step_applies(const CutStep& s) const noexcept {
  const double loss = s.results[0].loss + s.results[1].loss;
  return std::isfinite(loss) && std::isfinite(loss + s.penalty) &&
         std::isfinite(measured_grad_sq());
}

template <typename T>
void Network<T>::cut_step_in_team(CutStep& s, int t, int team) noexcept {
  for (int h = t; h < 2; h += team) cut_step_half(s, h);
  // by the thread that forked the team, which starts its half first
  if (t == 0) s.penalty = penalties(false);
#pragma omp barrier
  for (int p = t; p < 2; p += team) cut_step_sum(s, p);
#pragma omp barrier
  if (t == 0) cut_step_decide(s);
  if (s.each_decides) {  // (the same branches in every thread)
    if (cut_step_applies(s))
      for (int p = t; p < 2; p += team) apply_rule_part(p, s.next_step);
  } else if (s.with_update) {
#pragma omp barrier
    if (s.apply)
      for (int p = t; p < 2; p += team) apply_rule_part(p, opt_steps_);
  }
}

template <typename T>
StepResult Network<T>::cut_step_result(const CutStep& s) const noexcept {
  StepResult r = s.r;
  if (s.with_update) r.finite = r.finite && s.apply;
  return r;
}

template <typename T>
StepResult Network<T>::gradients_sharded(const T* x, index_t n, const Targets<T>& targets,
                                         T* dx, const RowGather* gather, bool* updated) {
  if (shard_grads_.size() < num_params()) shard_grads_.reset(num_params());
  CutStep s;
  cut_step_begin(s, x, n, targets, dx, gather, updated != nullptr);
  const int nt = arena_threads();
  if (nt <= 1) {
    cut_step_half(s, 0);
    cut_step_half(s, 1);
    s.penalty = penalties(false);
    cut_step_sum(s, 0);
    cut_step_sum(s, 1);
    cut_step_decide(s);
    if (s.apply) apply_rule(0, num_params(), opt_steps_);
  } else {
#pragma omp parallel num_threads(nt)
    {
      const DenormalsAsZero denormals;  // same arithmetic mode in every thread
      const Seat me = seat();
      cut_step_in_team(s, me.t, me.team);
    }
  }
  if (updated) {
    *updated = true;
    if (s.apply) update_end();
  }
  return cut_step_result(s);
}

template <typename T>
bool Network<T>::team_runs_batches(index_t batch_rows) const noexcept {
  return arena_threads() > 1 && shard_step(batch_rows) && !clip_.on() && !diagnostics_on_;
}

template <typename T>
index_t Network<T>::run_batches_in_team(const T* x, index_t n_rows, const Targets<T>& targets,
                                        const std::int64_t* order, index_t batch_size,
                                        index_t first_batch, index_t n_batches,
                                        StopPoller& poller, BatchRunResult& result) {
  // (what may throw, before the region: no batch of the run has more rows)
  reserve_rows(std::min(batch_size, n_rows));
  if (shard_grads_.size() < num_params()) shard_grads_.reset(num_params());
  // Thread 0 plans batch k + 1 while the others may still apply step k's update: the plans and
  // the steps' shared state alternate between two slots. The barrier after each plan (and the
  // ones inside every step) order the rest.
  BatchPlan plans[2];
  CutStep steps[2];
  index_t resume = n_batches;  // where the serial loop goes on
  bool leave = false, failed = false, end_pending = false;
  // The stop check may run Python signal handlers, which may read or write the model: before
  // it is asked, thread 0 waits until thread 1 has applied its part of the last step (steps
  // thread 1 has finished, published after its update).
  struct UpdatesDone {
    std::atomic<index_t> by_thread1{0};
    index_t wanted = 0;  // steps run so far; 0 with a team of one
  } done;
  poller.set_before_ask(
      [](void* ctx) {
        auto* d = static_cast<UpdatesDone*>(ctx);
        while (d->by_thread1.load(std::memory_order_acquire) < d->wanted) {
        }
      },
      &done);
#pragma omp parallel num_threads(arena_threads())
  {
    const DenormalsAsZero denormals;  // same arithmetic mode in every thread
    const Seat me = seat();
    for (index_t k = 0;; ++k) {
      BatchPlan& plan = plans[k & 1];
      CutStep& step = steps[k & 1];
      if (me.t == 0) {  // the calling thread: only it may ask Python about signals
        leave = true;
        done.wanted = me.team > 1 ? k : 0;
        if (k < n_batches && !failed) {
          plan = plan_batch(x, n_rows, targets, order, batch_size, first_batch, k, n_batches,
                            poller);
          if (plan.status != BatchStatus::Ok) {  // (a stop may have left a Python error set:
            result.status = plan.status;         // the poller is not asked again)
            result.bad_value = plan.bad_value;
            failed = true;
          } else if (!plan.past_data && !shard_step(plan.rows)) {
            resume = k;  // an uncut step (a short last batch): the serial loop takes it
          } else if (!plan.past_data) {
            sentinel_ = SentinelReport();
            last_step_shards_ = 2;
            cut_step_begin(step, plan.xb, plan.rows, plan.targets, nullptr,
                           plan.gathers ? &plan.gather : nullptr, true);
            leave = false;
          }
        }
      }
#pragma omp barrier
      // the step before is over in every thread: its update ends here (the momentum flag that
      // this step's rule reads, after the barriers below)
      if (me.t == 0 && end_pending) {
        update_end();
        end_pending = false;
      }
      if (leave) break;
      cut_step_in_team(step, me.t, me.team);
      if (me.t == 1) done.by_thread1.store(k + 1, std::memory_order_release);
      if (me.t == 0) {
        const StepResult r = cut_step_result(step);
        end_pending = step.apply;
        if (r.finite) {
          add_step(result, r, plan.rows);
        } else {
          result.status = BatchStatus::NonFinite;
          result.failed_loss = r.loss;
          failed = true;
        }
      }
    }
  }
  poller.set_before_ask(nullptr, nullptr);
  return resume;
}

namespace {
// Rows each thread of a sharded predict takes at least (fewer: each core packing every weight
// matrix for a few rows costs more than splitting the products).
constexpr index_t kMinPredictRowsPerThread = 128;
constexpr index_t kPredictChunk = 512;  // rows per chunk, as the serial predict's
}  // namespace

template <typename T>
int Network<T>::predict_threads(index_t n) const noexcept {
  const int nt = arena_threads();
  return nt > 1 && n >= nt * kMinPredictRowsPerThread ? nt : 1;
}

template <typename T>
bool Network<T>::predict_sharded(const T* x, index_t n, T* out, const StopCheck* stop, int nt) {
  const index_t per_thread = (n + nt - 1) / nt;
  const index_t chunk = std::min(kPredictChunk, (per_thread + 7) / 8 * 8);
  reserve_rows(nt * chunk);
  prepare_features();
  const index_t chunks = (n + chunk - 1) / chunk;
  const index_t in_w = in_features(), out_w = out_features();
  const std::size_t last = specs_.size();
  StopPoller poller(stop);
  bool stopped = false;  // written by thread 0 only, read by all after each chunk
#pragma omp parallel num_threads(nt)
  {
    const DenormalsAsZero denormals;  // same arithmetic mode in every thread
    const int t = seat().t;
    const index_t r0 = index_t(t) * chunk;  // this thread's rows of the workspace
    for (index_t k = t; k < chunks; k += nt) {
      // Thread 0 is the caller's: only it may ask Python about signals.
      if (t == 0 && poller.stop()) {
#pragma omp atomic write
        stopped = true;
      }
      bool stop_now;
#pragma omp atomic read
      stop_now = stopped;
      if (stop_now) break;
      const index_t start = k * chunk, rows = std::min(chunk, n - start);
      // the input pointer is set so that workspace row r0 reads input row `start`
      forward_rows(x + (start - r0) * in_w, Rows{r0, rows, grads_.data()}, false);
      const T* y = at_row(act(last), r0, out_w);
      std::copy(y, y + rows * out_w, out + start * out_w);
    }
  }
  return !stopped;
}

template class Network<float>;
template class Network<double>;

}  // namespace mlpcore

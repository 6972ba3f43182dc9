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

// One half's results.
struct ShardResult {
  double loss = 0.0;
  std::int64_t correct = 0;
  bool finite = true;
};

}  // namespace

template <typename T>
void Network<T>::plan_shards() noexcept {
  // Layers that mix rows (BatchNorm's batch statistics) or draw from one random sequence in row
  // order (Dropout) would change their results if cut.
  kinds_allow_shards_ = !has_batchnorm_;
  dense_work_per_row_ = widths_per_row_ = 0.0;
  for (const LayerSpec& s : specs_) {
    if (s.kind == LayerKind::Dropout && s.p != 0.0) kinds_allow_shards_ = false;
    if (s.kind == LayerKind::Dense) dense_work_per_row_ += double(s.in_features) * s.out_features;
    if (s.kind == LayerKind::Normalization) has_normalization_ = true;
  }
  for (index_t w : widths_) widths_per_row_ += double(w);
}

template <typename T>
bool Network<T>::shard_rows(index_t n) const noexcept {
  // What crosses between the cores: a cut step moves the parameters (read by both halves
  // after the update) and one parameter gradient; a step split product by product moves the
  // activations. Cut when the activations are the larger.
  return n >= 2 * kMinShardRows && double(n) * dense_work_per_row_ >= double(kMinShardWork) &&
         double(n) * widths_per_row_ >= double(num_params());
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
StepResult Network<T>::gradients_sharded(const T* x, index_t n, const Targets<T>& targets,
                                         T* dx, const RowGather* gather, bool* updated) {
  const index_t params = num_params();
  if (shard_grads_.size() < params) shard_grads_.reset(params);
  prepare_features();
  const index_t half = (n / 2 + 1) / 2 * 2;  // the first half, rounded up to an even count
  const Rows parts[2] = {{0, half, grads_.data()}, {half, n - half, shard_grads_.data()}};
  ShardResult results[2];
  const std::size_t last = specs_.size();
  const index_t out_w = widths_[last];

  auto run_shard = [&](int s) {
    const Rows& rows = parts[s];
    if (gather) gather_rows(*gather, rows.r0, rows.n);  // on this core, for this core
    forward_rows(x, rows, true);
    Targets<T> part;
    if (targets.values) part.values = targets.values + rows.r0 * out_w;
    if (targets.labels) part.labels = targets.labels + rows.r0;
    if (targets.weights) part.weights = targets.weights + rows.r0;
    const T* out = at_row(act(last), rows.r0, out_w);
    ShardResult& r = results[s];
    r.loss = loss_forward_backward<T>(loss_, loss_params_, out, rows.n, out_w, part,
                                      at_row(dact(last), rows.r0, out_w), n, &r.correct);
    r.finite = std::isfinite(r.loss);
    if (r.finite) backward_rows(x, rows, dx);
  };
  // With `updated`, the update follows in the same threads: each applies the rule to its own
  // part of the parameters, the part its core just summed (and will keep the state of).
  const bool with_update = updated != nullptr;
  // Part t of the parameter arena (arena_part, fixed whatever the thread count): thread t (or
  // the one thread, part after part) sums the halves' gradients there, adds the penalties'
  // gradients and takes each layer's sum of squares over it, then applies the update rule to it.
  auto sum_part = [&](int t) {
    if (!results[0].finite || !results[1].finite) return;
    index_t lo, hi;
    arena_part(t, &lo, &hi);
    // the parameters this thread updates next, which the other core read in its half: owned
    // here while the gradients are summed (the update wrote them at a third of its speed)
    if (with_update) prefetch_for_write(params_.data() + lo, std::size_t(hi - lo) * sizeof(T));
    add_halves_part(t);
  };
  double penalty = 0.0;  // the penalties' value (weights only read during the step)
  StepResult r;
  bool measured_ok = false;
  auto finish = [&] {  // the whole batch's loss and statistics, the norms (one thread)
    r.loss = results[0].loss + results[1].loss;
    r.correct = results[0].correct + results[1].correct;
    r.finite = std::isfinite(r.loss);
    if (!r.finite) {
      sentinel_.pass = Pass::Loss;
      return;
    }
    r.loss += penalty;
    r.finite = std::isfinite(r.loss);
    if (r.finite && diagnostics_on_) accumulate_activation_stats(n);
    measured_ok = measured_gradients();
  };
  bool apply = false;
  auto begin_update = [&] {  // (one thread)
    apply = with_update && r.finite && measured_ok;
    if (apply) update_begin_measured();
  };
  // Without clipping (which rescales every gradient) and diagnostics (which copy the weights
  // first), the rule needs nothing begin_update records: each thread then takes finish's and
  // begin_update's decision itself, from the same sums, and goes on without the barrier that
  // would wait for that one thread.
  const bool each_decides = with_update && !clip_.on() && !diagnostics_on_;
  const std::int64_t next_step = opt_steps_ + 1;
  auto applies = [&] {
    const double loss = results[0].loss + results[1].loss;
    return std::isfinite(loss) && std::isfinite(loss + penalty) &&
           std::isfinite(measured_grad_sq());
  };

  const int nt = arena_threads();
  if (nt <= 1) {
    run_shard(0);
    run_shard(1);
    penalty = penalties(false);
    sum_part(0);
    sum_part(1);
    finish();
    begin_update();
    if (apply) apply_rule(0, params, opt_steps_);
  } else {
#pragma omp parallel num_threads(nt)
    {
      const DenormalsAsZero denormals;  // same arithmetic mode in every thread
      const Seat me = seat();
      const int t = me.t, team = me.team;
      for (int s = t; s < 2; s += team) run_shard(s);
      // by the thread that forked the team, which starts its half first
      if (t == 0) penalty = penalties(false);
#pragma omp barrier
      for (int s = t; s < 2; s += team) sum_part(s);
#pragma omp barrier
      if (t == 0) {
        finish();
        begin_update();
      }
      if (each_decides) {  // (the same branches in every thread)
        if (applies())
          for (int s = t; s < 2; s += team) apply_rule_part(s, next_step);
      } else if (with_update) {
#pragma omp barrier
        if (apply)
          for (int s = t; s < 2; s += team) apply_rule_part(s, opt_steps_);
      }
    }
  }
  if (with_update) {
    *updated = true;
    if (apply) update_end();
    r.finite = r.finite && apply;
  }
  return r;
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

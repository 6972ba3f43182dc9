// The network: a layer plan over one parameter arena, one gradient arena, one optimizer-state
// arena and per-batch workspaces. Every method takes raw pointers; validation of user input
// happens in the bindings before any of these is called.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/activations.hpp"
#include "kernels/gemm/gemm.hpp"
#include "kernels/losses.hpp"
#include "kernels/normalization.hpp"
#include "kernels/optim.hpp"
#include "kernels/random.hpp"
#include "net/aligned_buffer.hpp"
#include "net/fork_state.hpp"

namespace mlpcore {

// Every layer kind, one row: X(enum name, name in messages). A Residual block f is flattened to
// ResidualBegin, f's layers, ResidualEnd; the end adds the block's input to f's output. A kind's
// plan, forward and backward sit side by side in network_layers.cpp; the switches over kinds
// carry no default (-Werror=switch), so a new row without its three parts does not compile.
#define MLPCORE_LAYER_KINDS(X)           \
  X(Dense, "Dense")                      \
  X(Activation, "activation")            \
  X(Dropout, "Dropout")                  \
  X(LayerNorm, "LayerNorm")              \
  X(BatchNorm, "BatchNorm1d")            \
  X(Normalization, "Normalization")      \
  X(ResidualBegin, "Residual")           \
  X(ResidualEnd, "Residual (end)")

enum class LayerKind : int {
#define MLPCORE_ENUM_ROW(name, display) name,
  MLPCORE_LAYER_KINDS(MLPCORE_ENUM_ROW)
#undef MLPCORE_ENUM_ROW
};

const char* layer_kind_name(LayerKind kind) noexcept;
// Whether a kind states its input width (in_features): the first layer must, to fix the
// network's input. Answered next to each kind in network_layers.cpp.
bool layer_fixes_width(LayerKind kind) noexcept;

struct LayerSpec {
  LayerKind kind = LayerKind::Dense;
  index_t in_features = 0;   // Dense (and LayerNorm / BatchNorm / Normalization: features)
  index_t out_features = 0;  // Dense
  double l1 = 0.0;           // Dense: penalty l1 * sum|W| (kernel only, as Keras)
  double l2 = 0.0;           // Dense: penalty l2 * sum W^2
  Act act = Act::Identity;   // Activation
  ActParams params;          // Activation
  double p = 0.0;            // Dropout: probability of zeroing an element
  double eps = 1e-5;         // LayerNorm, BatchNorm, Normalization
  double momentum = 0.1;     // BatchNorm: running-statistics update rate
};

// Gradient clipping applied in every update (torch.nn.utils semantics): by global L2 norm
// (scale all gradients by max_norm / (norm + 1e-6) when that is below 1), then by value.
struct ClipConfig {
  double max_norm = 0.0;  // 0: off
  double max_value = 0.0;  // 0: off
  bool on() const noexcept { return max_norm > 0.0 || max_value > 0.0; }
};

// Where one layer's pieces live in the network's arenas; -1 (or 0 for counts) where it has none.
struct LayerSlots {
  index_t weight = -1;      // params/grads: Dense W (in x out), or gamma of a norm layer
  index_t bias = -1;        // params/grads: b, or beta; right after the weight
  index_t param_count = 0;  // weight and bias together
  index_t buffer = -1;      // buffers: BatchNorm running_mean then running_var, or
                            // Normalization mean then variance
  index_t aux = -1;         // per-row scratch (dropout mask, LayerNorm mean and rstd), per row
  index_t feat_aux = -1;    // per-feature scratch (BatchNorm batch mean and rstd)
  std::size_t partner = 0;  // ResidualBegin <-> ResidualEnd
};

// Per-step statistics accumulated natively over an epoch (read and reset by take_stats).
// The per-layer vectors have one entry per layer; entries that do not apply stay 0.
struct TrainStats {
  std::int64_t steps = 0;
  double grad_norm_sum = 0.0;     // pre-clip global gradient L2 norm, summed over steps
  double grad_norm_sq_sum = 0.0;  // its square, summed: gives the spread across the epoch
  std::vector<double> layer_grad_norm_sum;
  // With diagnostics on (set_diagnostics), also per step:
  std::int64_t diag_steps = 0;
  std::vector<double> weight_norm_sum;   // parameter layers: L2 norm after the update
  std::vector<double> update_ratio_sum;  // parameter layers: |update| / |weights before|
  std::vector<double> act_mean_sum, act_std_sum;  // activation layers: over batch and units
  std::vector<double> dead_frac_sum;       // ReLU: units that output 0 for the whole batch
  std::vector<double> saturated_frac_sum;  // Sigmoid (y<0.01 or >0.99), Tanh (|y|>0.99)
  void resize(std::size_t layers);
};

// Where the non-finite sentinel (set_sentinel) first saw a NaN/Inf.
enum class Pass : int { None = 0, Forward = 1, Loss = 2, Backward = 3 };
struct SentinelReport {
  Pass pass = Pass::None;
  std::int64_t layer = -1;  // plan index of the layer whose output / gradient was non-finite
};

// How a run of batches ended.
enum class BatchStatus : int { Ok = 0, NonFinite = 1, BadIndex = 2, BadLabel = 3,
                               SingleSampleBatch = 4, Stopped = 5 };

// Asked between batches and between inference chunks, at most every kStopPollMs: true stops the
// loop there, with the model as the last completed step left it. The bindings answer from
// Python's pending signals (Ctrl-C, a SIGTERM handler), so the network never sees Python.
struct StopCheck {
  bool (*requested)(void* ctx) = nullptr;
  void* ctx = nullptr;
};
inline constexpr int kStopPollMs = 20;

// Polls a StopCheck on a clock, so a loop of microsecond steps does not pay for it.
class StopPoller {
 public:
  explicit StopPoller(const StopCheck* check) noexcept;
  bool stop() noexcept;  // cheap: reads the clock every few calls, asks the check on a tick
  // Called just before the check is asked (which may run Python code that reads the model):
  // a team of threads waits there for the update its other threads may still be applying.
  void set_before_ask(void (*fn)(void*), void* ctx) noexcept {
    before_ask_ = fn;
    before_ask_ctx_ = ctx;
  }

 private:
  const StopCheck* check_;
  void (*before_ask_)(void*) = nullptr;
  void* before_ask_ctx_ = nullptr;
  std::int64_t calls_ = 0, stride_ = 1;  // the clock is read every stride_ calls
  std::int64_t last_read_ns_ = 0, next_ns_ = 0;
};

// What a run of batches produced: sums over the batches that were applied, and where it stopped.
struct BatchRunResult {
  double loss_sum = 0.0;        // sum over applied batches of (batch mean loss * batch rows)
  std::int64_t correct = 0;
  index_t batches_done = 0;     // batches applied before stopping
  BatchStatus status = BatchStatus::Ok;
  double failed_loss = 0.0;     // the loss of the batch that was refused (NonFinite)
  std::int64_t bad_value = 0;   // the offending index or label (BadIndex / BadLabel)
};

// scikit-learn's stopping rule on the epoch losses (loss / scale): an epoch whose loss is not
// below best - tol counts, any other resets the count; training stops once the count exceeds
// patience. best and count carry the state in and out.
struct PlateauRule {
  double scale = 1.0, tol = 0.0, best = 0.0;
  std::int64_t patience = 0, count = 0;
};

// What a run of whole epochs produced: its epochs' mean losses are in the caller's array.
struct EpochRunResult {
  index_t epochs_done = 0;  // epochs completed (their losses written)
  bool plateaued = false;   // stopped by the rule after the last of them
  BatchRunResult failed;    // the epoch that ended early (status not Ok), if any
};

// Fills order[0..n) with a permutation of 0..n-1 drawn from `seed` (Fisher-Yates over a
// xoshiro256** stream seeded through splitmix64): the same seed gives the same order anywhere.
void shuffled_indices(std::uint64_t seed, std::int64_t* order, index_t n) noexcept;

// What one batch produced: the mean loss, the number of correct predictions (classification
// losses) and whether the step could be applied (loss and every gradient finite).
struct StepResult {
  double loss = 0.0;
  std::int64_t correct = 0;
  bool finite = true;
};

// An applied step's sums added to its run's.
inline void add_step(BatchRunResult& run, const StepResult& step, index_t rows) noexcept {
  run.loss_sum += step.loss * double(rows);
  run.correct += step.correct;
  ++run.batches_done;
}

template <typename T>
class Network {
 public:
  // Throws std::invalid_argument when the plan is inconsistent (feature counts that do not chain).
  explicit Network(std::vector<LayerSpec> specs);

  const std::vector<LayerSpec>& specs() const noexcept { return specs_; }
  index_t in_features() const noexcept { return widths_.front(); }
  index_t width_after(std::size_t layer) const { return widths_.at(layer + 1); }
  index_t out_features() const noexcept { return widths_.back(); }

  // Parameter and gradient arenas; layer i's weight (in x out) starts at weight_offset(i) and its
  // bias (out) at bias_offset(i); both are -1 for layers without parameters. For LayerNorm and
  // BatchNorm, "weight" is gamma and "bias" is beta, (features,) each.
  T* params() noexcept { return params_.data(); }
  T* grads() noexcept { return grads_.data(); }
  index_t num_params() const noexcept { return params_.size(); }
  const LayerSlots& slots(std::size_t layer) const { return slots_.at(layer); }
  index_t weight_offset(std::size_t layer) const { return slots_.at(layer).weight; }
  index_t bias_offset(std::size_t layer) const { return slots_.at(layer).bias; }
  index_t param_count(std::size_t layer) const { return slots_.at(layer).param_count; }
  // Non-trainable statistics, (features,) each; -1 for layers without: BatchNorm's running_mean
  // then running_var, Normalization's mean then variance.
  T* buffers() noexcept { return buffers_.data(); }
  index_t buffer_offset(std::size_t layer) const { return slots_.at(layer).buffer; }
  bool has_batchnorm() const noexcept { return has_batchnorm_; }
  // A BatchNorm layer normalises with this batch's statistics alone (not synchronised).
  bool has_local_batchnorm() const noexcept { return has_batchnorm_ && !all_batchnorm_synced_; }

  // Dropout masks are drawn from this generator; its state is part of an exact resume.
  void seed_dropout(std::uint64_t seed) noexcept { dropout_rng_.reseed(seed); }
  Rng& dropout_rng() noexcept { return dropout_rng_; }
  // Test hook: reuse the last dropout masks instead of drawing new ones (for gradient checks).
  void freeze_dropout_masks(bool frozen) noexcept { masks_frozen_ = frozen; }

  void set_loss(Loss loss, const LossParams& params);
  Loss loss() const noexcept { return loss_; }

  // Installs the optimizer. State is kept when the rule is unchanged (e.g. a new learning rate)
  // and zeroed when the rule changes. Throws std::invalid_argument for an unusable
  // configuration (invalid_optimizer_config), leaving the installed one in place.
  void set_optimizer(const OptConfig& cfg);
  const OptConfig& optimizer() const noexcept { return opt_; }
  int optimizer_state_buffers() const noexcept { return optimizer_state_count(opt_); }
  void set_clipping(const ClipConfig& clip);
  // Runs f holding the network's lock: copies of its arrays taken in f are of one state, not
  // torn by a step running in another thread.
  template <typename F>
  void with_lock(F&& f) {
    const CallLock lock(*this);
    f();
  }
  // The L1/L2 penalty of the current weights (what evaluate adds to the loss).
  double regularization_loss() {
    const CallLock lock(*this);
    return penalties(false);
  }
  // Opt-in checks: the sentinel tests every layer's output and gradient for NaN/Inf and
  // reports the first one; diagnostics accumulate the per-layer statistics of TrainStats.
  void set_sentinel(bool on) noexcept { sentinel_on_ = on; }
  void set_diagnostics(bool on);
  SentinelReport sentinel_report() const noexcept { return sentinel_; }
  // Synchronised BatchNorm (data-parallel training): the BatchNorm layers flagged in `layers`
  // (one entry per layer) normalise training batches with the statistics of every replica's
  // rows, summed by `reducer` during the passes (a default StatReducer turns it off). `owner`
  // keeps the reducer's context alive while it is installed.
  void set_stat_reducer(const StatReducer& reducer, const std::vector<bool>& layers,
                        std::shared_ptr<void> owner);
  const StatReducer& stat_reducer() const noexcept { return stat_reducer_; }
  // The pre-clip global gradient norm of the last step, and the epoch statistics so far.
  double last_grad_norm() const noexcept { return last_grad_norm_; }
  // 2 if the last gradient computation was a sharded step (network_shards.cpp), else 1.
  int last_step_shards() const noexcept { return last_step_shards_; }
  TrainStats take_stats();

  // Names of the state buffers, in buffer order (torch.optim's state keys).
  std::vector<std::string> optimizer_state_names() const;
  T* optimizer_state(int k) noexcept { return state_->data() + index_t(k) * num_params(); }
  // The state arena's owner: a NumPy view holds it, so a view outlives a rule change (which
  // replaces the arena) without the network keeping every replaced arena alive.
  std::shared_ptr<AlignedBuffer<T>> optimizer_state_owner() const noexcept { return state_; }
  std::int64_t optimizer_steps() const noexcept { return opt_steps_; }
  // Restoring a saved state: the state buffers hold real history once a step was taken.
  void set_optimizer_steps(std::int64_t steps) noexcept {
    opt_steps_ = steps;
    fresh_momentum_ = steps == 0;
  }

  // The training step has two halves, and every way of training goes through both:
  //   compute_gradients: forward, loss, backward (plus penalties) on one batch: fills the
  //     gradient arena; dx (n x in), if not null, receives dL/dx. Nothing is updated.
  //   update: measures the gradient arena as it is now (after any change made to it in
  //     between: a user's edit, an allreduce), then statistics, clipping and the optimizer
  //     rule. Refuses (returns false, parameters untouched) if a gradient is NaN/Inf.
  // train_step is exactly compute_gradients then update.
  StepResult compute_gradients(const T* x, index_t n, const Targets<T>& targets, T* dx);
  bool update();
  StepResult train_step(const T* x, index_t n, const Targets<T>& targets);

  // Batches first_batch .. first_batch + n_batches - 1 of an epoch over n_rows samples: batch b
  // holds rows order[b * batch_size ...] (or consecutive rows when order is null), gathered into
  // a workspace. Each batch is exactly a train_step. Stops at the first refused batch.
  BatchRunResult train_batches(const T* x, index_t n_rows, const Targets<T>& targets,
                               const std::int64_t* order, index_t batch_size,
                               index_t first_batch, index_t n_batches,
                               const StopCheck* stop = nullptr);
  // Whole epochs in one call: epoch e is shuffled from seeds[e] (consecutive rows without
  // seeds) into order (n_rows entries) and trained as train_batches does; its mean loss goes to
  // losses[e]. With a rule, stops after the epoch that exceeds its patience.
  EpochRunResult train_epochs(const T* x, index_t n_rows, const Targets<T>& targets,
                              const std::uint64_t* seeds, std::int64_t* order,
                              index_t batch_size, index_t epochs, PlateauRule* rule,
                              double* losses, const StopCheck* stop = nullptr);

  // Custom (Python) losses: a training-mode forward that copies the output (n x out) into
  // `out`; then the backward pass from dL/doutput (plus penalties) as compute_gradients makes
  // it (the loss field holds the penalty; finite is false if any gradient is NaN/Inf); then
  // update().
  bool forward_for_custom(const T* x, index_t n, T* out);
  StepResult backward_from(const T* x, index_t n, const T* dout, T* dx);

  // Network outputs (n x out) for n inputs, computed in chunks.
  // False if `stop` asked to stop (out then holds some of the rows).
  bool predict(const T* x, index_t n, T* out, const StopCheck* stop = nullptr);
  // The same for a call too short to be worth releasing the GIL: runs only if no other call
  // holds the network (the caller then keeps the GIL, which a running call may need for its
  // signal checks: waiting for it here could deadlock). False if it did not run.
  bool predict_if_free(const T* x, index_t n, T* out);
  // Multiply-adds of the Dense layers per input row (the size of a forward pass).
  double dense_work_per_row() const noexcept { return dense_work_per_row_; }
  // Packs every Dense weight once for the running GEMM (gemm::prepack_b); the inference
  // passes then read those copies, which training drops (update_begin). For a network whose
  // weights no longer change (a frozen model's private copy). False if memory ran out (then
  // nothing is packed). The packed bytes, 0 when none.
  bool prepack_weights();
  void drop_prepacked_weights() noexcept { prepacked_.clear(); }
  std::size_t prepacked_bytes() const noexcept;

  // Forward pass on one batch, keeping every layer's output: outs[j] (n x width of layer j's
  // output) receives a copy of act(j + 1). For inspection (diagnose), not for speed.
  void forward_collect(const T* x, index_t n, const std::vector<T*>& outs);

  // Mean loss and correct count over n samples, computed in chunks, no gradients.
  // finite is false and stopped true if `stop` asked to stop.
  StepResult evaluate(const T* x, index_t n, const Targets<T>& targets,
                      const StopCheck* stop = nullptr, bool* stopped = nullptr);

 private:
  // What a layer needs, from its plan (network_layers.cpp): the constructor lays the slots out.
  struct LayerNeeds {
    index_t out_width = 0;
    index_t weights = 0, biases = 0;  // parameters (weight then bias, adjacent)
    index_t buffers = 0;              // persistent non-parameter state (running statistics)
    index_t aux_per_row = 0;          // scratch per batch row
    index_t feat_aux = 0;             // scratch per feature
  };
  // One section per kind in network_layers.cpp: plan, forward, backward side by side.
  LayerNeeds plan_layer(std::size_t i, index_t in_width) const;
  void init_layer(std::size_t i) noexcept;  // initial values of non-Dense parameters and buffers
  // Rows r0 .. r0 + n of a batch, and the arena their parameter gradients go to: the whole
  // batch and its first shard write grads_, the second shard of a sharded step shard_grads_.
  struct Rows {
    index_t r0 = 0, n = 0;
    T* grads = nullptr;
  };
  // Input rows a step gathers itself: row r of the batch is src[order[r]], copied to dst (a
  // sharded step gathers each half on the thread that computes it); x is then dst.
  struct RowGather {
    const T* src = nullptr;
    const std::int64_t* order = nullptr;
    T* dst = nullptr;
    // the next batch's labels, asked for while the rows are copied: the serial loop gathers
    // them next, one cache miss each (no effect on results)
    const std::int64_t* labels = nullptr;  // all of them (null: none to ask for)
    const std::int64_t* next_order = nullptr;
    index_t next_rows = 0;
  };
  // Forward of layer i on the rows of x's batch; returns how many layers it consumed (a Dense
  // applies the element-wise activation after it in its GEMM epilogue). Per-feature values
  // that every row reads (Normalization's rstd) come from prepare_features.
  std::size_t forward_layer(std::size_t i, const T* x, const Rows& rows, bool training) noexcept;
  void prepare_features() noexcept;
  // Backward of layer l: its parameter gradients (into rows.grads), and with want_din
  // dL/d(its input) (into dx for layer 0). Returns how many layers it consumed (a Dense applies
  // the derivative of the activation before it on its dX write-back).
  std::size_t backward_layer(std::size_t l, const T* x, T* dx, const Rows& rows,
                             bool want_din) noexcept;
  // Row r0 of a (rows x w) block.
  static T* at_row(T* base, index_t r0, index_t w) noexcept { return base ? base + r0 * w : base; }
  static const T* at_row(const T* base, index_t r0, index_t w) noexcept {
    return base ? base + r0 * w : base;
  }
  const T* input_of(std::size_t j, const T* x) noexcept { return j == 0 ? x : act(j); }
  T* grad_of(std::size_t j, T* dx) noexcept { return j == 0 ? dx : dact(j); }

  // Sizes the per-layer workspaces for at least `rows` rows (grows only, never shrinks).
  void reserve_rows(index_t rows);
  // Output of layer j-1 (j >= 1) in the workspace; act(0) is the input.
  T* act(std::size_t j) noexcept { return acts_.data() + act_offsets_[j] * rows_cap_; }
  T* dact(std::size_t j) noexcept { return dacts_.data() + act_offsets_[j] * rows_cap_; }
  // training: dropout active, BatchNorm on batch statistics (and running statistics updated).
  // Returns the output, or null if the sentinel found a NaN/Inf (training only).
  const T* forward(const T* x, index_t n, bool training) noexcept;
  T* aux(std::size_t layer) noexcept { return aux_.data() + slots_[layer].aux * rows_cap_; }
  T* buffer(std::size_t layer) noexcept { return buffers_.data() + slots_[layer].buffer; }
  T* feat_aux(std::size_t layer) noexcept { return feat_aux_.data() + slots_[layer].feat_aux; }
  // The reducer of layer i's training statistics, or null (local statistics).
  const StatReducer* stat_sync(std::size_t i) const noexcept {
    return stat_reducer_.reduce && stat_sync_[i] ? &stat_reducer_ : nullptr;
  }
  T* weight(std::size_t layer) noexcept { return params_.data() + slots_[layer].weight; }
  T* bias(std::size_t layer) noexcept { return params_.data() + slots_[layer].bias; }
  T* dweight(std::size_t layer) noexcept { return grads_.data() + slots_[layer].weight; }
  T* dbias(std::size_t layer) noexcept { return grads_.data() + slots_[layer].bias; }
  // Returns false (after recording it) if the sentinel found a NaN/Inf.
  bool backward(const T* x, index_t n, T* dx) noexcept;
  bool backward_rows(const T* x, const Rows& rows, T* dx) noexcept;
  // Sharded training step (network_shards.cpp): the batch in two fixed halves, each taken
  // through forward, loss and backward by one thread on its own rows, so that no activation
  // moves between cores; the two parameter gradients are then added. Chosen from the shapes
  // alone (shard_step), so the bits do not depend on the thread count.
  bool shard_step(index_t n) const noexcept;
  bool shard_rows(index_t n) const noexcept;  // the shape part of the rule
  void plan_shards() noexcept;                 // the rule's per-network constants, once
  void forward_rows(const T* x, const Rows& rows, bool training) noexcept;  // no sentinel
  // Inference over many rows at nt > 1 threads: each thread takes its own chunks through every
  // layer (its products on one thread), so no activation crosses between the cores. A row's
  // outputs do not depend on the chunk or thread that computes it. predict_threads: the
  // threads predict uses for n rows (1: the chunks in turn, each product split over threads).
  int predict_threads(index_t n) const noexcept;
  // predict's body, with mutex_ held by the caller.
  bool predict_locked(const T* x, index_t n, T* out, const StopCheck* stop);
  bool predict_sharded(const T* x, index_t n, T* out, const StopCheck* stop, int nt);
  // With `updated` (the native loop), the update follows in the same parallel region and
  // *updated is set; finite then also says the update was applied.
  StepResult gradients_sharded(const T* x, index_t n, const Targets<T>& targets, T* dx,
                               const RowGather* gather, bool* updated);
  // A cut step in parts, so that one team of threads can take it (gradients_sharded forks a
  // team per step, run_batches_in_team keeps one for many steps). CutStep is what the threads
  // share: cut_step_begin fills it (one thread, shard_grads_ sized), cut_step_in_team is the
  // region's body (every thread of the team), cut_step_result the step's outcome (one thread,
  // after the body; update_end, when the step applied, is the caller's).
  struct HalfResult {
    double loss = 0.0;
    std::int64_t correct = 0;
    bool finite = true;
  };
  struct CutStep {
    const T* x = nullptr;
    index_t n = 0;
    Targets<T> targets;
    T* dx = nullptr;
    const RowGather* gather = nullptr;
    bool with_update = false;   // the update rule follows in the same threads
    bool each_decides = false;  // each thread decides on the update itself (no third barrier)
    std::int64_t next_step = 0;  // the rule's step count if the update applies
    Rows halves[2];
    HalfResult results[2];
    double penalty = 0.0;  // the penalties' value (weights only read during the step)
    StepResult r;
    bool measured_ok = false, apply = false;
  };
  void cut_step_begin(CutStep& s, const T* x, index_t n, const Targets<T>& targets, T* dx,
                      const RowGather* gather, bool with_update) noexcept;
  void cut_step_half(CutStep& s, int half) noexcept;
  void cut_step_sum(CutStep& s, int part) noexcept;
  void cut_step_decide(CutStep& s) noexcept;  // the batch's loss, the norms, begin the update
  bool cut_step_applies(const CutStep& s) const noexcept;  // each_decides: the same decision
  void cut_step_in_team(CutStep& s, int t, int team) noexcept;
  StepResult cut_step_result(const CutStep& s) const noexcept;
  // One batch of a run, ready for its step (plan_batch, network_training.cpp): a status other
  // than Ok (with bad_value) stops the run; past_data ends it (the batch starts past the data).
  struct BatchPlan {
    BatchStatus status = BatchStatus::Ok;
    std::int64_t bad_value = 0;
    bool past_data = false;
    index_t rows = 0;
    const T* xb = nullptr;
    Targets<T> targets;
    RowGather gather;  // (used when gathers)
    bool gathers = false;
  };
  BatchPlan plan_batch(const T* x, index_t n_rows, const Targets<T>& targets,
                       const std::int64_t* order, index_t batch_size, index_t first_batch,
                       index_t k, index_t n_batches, StopPoller& poller) noexcept;
  // run_batches' steps in one team of threads kept from batch to batch (a barrier instead of
  // a fork and a join per step), while every batch is cut and the update needs no barrier of
  // its own. Returns the batch where the serial loop goes on (n_batches: none left), with the
  // batches done added to `result` (its status set if one failed).
  bool team_runs_batches(index_t batch_rows) const noexcept;
  index_t run_batches_in_team(const T* x, index_t n_rows, const Targets<T>& targets,
                              const std::int64_t* order, index_t batch_size,
                              index_t first_batch, index_t n_batches, StopPoller& poller,
                              BatchRunResult& result);
  bool is_fusable_activation(std::size_t layer) const noexcept;
  // The two halves of a step, under the lock. gradients_locked's finite flag covers the loss
  // (and the sentinel); update_locked measures the gradients.
  void gather_rows(const RowGather& g, index_t r0, index_t n) noexcept;
  BatchRunResult run_batches(const T* x, index_t n_rows, const Targets<T>& targets,
                             const std::int64_t* order, index_t batch_size, index_t first_batch,
                             index_t n_batches, StopPoller& poller);
  // *updated (when given) is set if the step also applied the update (a sharded step).
  StepResult gradients_locked(const T* x, index_t n, const Targets<T>& targets, T* dx,
                              const RowGather* gather = nullptr, bool* updated = nullptr);
  bool update_locked() noexcept;
  // Sentinel: records (pass, layer) and returns false if the block holds a NaN/Inf.
  bool sentinel_ok(const T* data, index_t count, Pass pass, std::size_t layer) noexcept;
  void accumulate_activation_stats(index_t n) noexcept;
  // L1/L2 penalties: their value, and (when add_grad) their gradient added to the weights'.
  double penalties(bool add_grad) noexcept;
  // Their gradient for the arena's parameters lo .. hi - 1 only (the same operations per element).
  void add_penalty_grads(index_t lo, index_t hi) noexcept;
  // Per-layer and global gradient norms; false if any gradient is NaN/Inf. Each layer's sum of
  // squares is taken over the two halves of the parameter arena separately, then added, so
  // that a sharded step's threads can each measure their half (measure_part) with the same
  // result; measured_gradients adds the halves' sums.
  bool measure_gradients() noexcept;
  // Part 0 or 1 of the parameter arena: positions *lo .. *hi - 1 (fixed by its size alone).
  void arena_part(int part, index_t* lo, index_t* hi) const noexcept {
    *lo = num_params() * part / 2;
    *hi = num_params() * (part + 1) / 2;
  }
  void measure_part(int part) noexcept;
  // A sharded step's sum on arena part `part`: grads_ += shard_grads_, the penalties' gradients
  // added and each layer's sum of squares measured, as the sum, add_penalty_grads and
  // measure_part would give them (one pass per layer, add_into_squares, where no L1 term needs
  // its separate pass).
  void add_halves_part(int part) noexcept;
  bool measured_gradients() noexcept;
  double measured_grad_sq() const noexcept;  // the halves' sums of squares added, in layer order
  void clip_gradients() noexcept;
  // update_locked in three parts, so that a sharded step can apply the rule in its threads:
  // update_begin measures, records, clips and counts the step (false, nothing applied, on a
  // NaN/Inf); apply_rule applies the element-wise rule to parameters lo .. hi; update_end
  // finishes the step (momentum flag, diagnostics).
  bool update_begin() noexcept;
  void update_begin_measured() noexcept;  // update_begin after measure_gradients() held
  // (step: the rule's step count, Adam's bias correction: opt_steps_ once update_begin ran)
  void apply_rule(index_t lo, index_t hi, std::int64_t step) noexcept;
  void apply_rule_part(int part, std::int64_t step) noexcept;  // on arena_part(part)
  void update_end() noexcept;

  std::vector<LayerSpec> specs_;
  std::vector<LayerSlots> slots_;
  std::vector<index_t> widths_;          // widths_[j]: feature count of act(j)
  std::vector<index_t> act_offsets_;     // act(j) starts at act_offsets_[j] * rows_cap_
  std::size_t first_param_ = 0;           // index of the first layer with parameters
  bool has_batchnorm_ = false;
  AlignedBuffer<T> buffers_, aux_, feat_aux_;
  Rng dropout_rng_;
  bool masks_frozen_ = false;

  AlignedBuffer<T> params_, grads_;
  std::vector<gemm::PrepackedB<T>> prepacked_;  // per layer; empty: none (prepack_weights)
  AlignedBuffer<T> shard_grads_;  // the second shard's parameter gradients (sharded steps)
  double dense_work_per_row_ = 0.0, widths_per_row_ = 0.0;  // (plan_shards)
  double largest_product_per_row_ = 0.0;  // the largest Dense layer's in x out (plan_shards)
  bool kinds_allow_shards_ = false, has_normalization_ = false;
  std::shared_ptr<AlignedBuffer<T>> state_ = std::make_shared<AlignedBuffer<T>>();
  AlignedBuffer<T> acts_, dacts_;        // per-layer outputs and their gradients
  index_t rows_cap_ = 0;
  index_t aux_per_row_ = 0;
  AlignedBuffer<T> batch_x_, batch_values_, batch_weights_;  // gathered batch (train_batches)
  std::vector<std::int64_t> batch_labels_;

  Loss loss_ = Loss::MSE;
  LossParams loss_params_;
  OptConfig opt_;
  std::int64_t opt_steps_ = 0;
  bool fresh_momentum_ = true;  // SGD's momentum buffer not yet written (see optimizer_step)
  bool has_optimizer_ = false;

  ClipConfig clip_;
  bool sentinel_on_ = false;
  SentinelReport sentinel_;
  StatReducer stat_reducer_;
  std::vector<char> stat_sync_;       // per layer: BatchNorm synchronised over replicas
  bool all_batchnorm_synced_ = false;
  std::vector<double> stat_scratch_;  // the reducer's values (2 x widest layer + 1)
  std::shared_ptr<void> stat_owner_;
  bool diagnostics_on_ = false;
  AlignedBuffer<T> params_before_;  // diagnostics: the parameters before the update
  double last_grad_norm_ = 0.0;
  int last_step_shards_ = 1;
  std::vector<double> layer_grad_sq_;  // per layer, from measure_gradients
  std::vector<double> part_grad_sq_;   // per layer, per half of the arena (measure_part)
  TrainStats stats_;

  // One call at a time per network (calls run with the GIL released). Python code runs while a
  // native loop holds the lock (signal handlers, asked between batches); a handler calling into
  // the same network would wait for itself forever, so a call from the thread that holds the
  // lock throws instead (RuntimeError in Python).
  class CallLock {
   public:
    explicit CallLock(Network& net) : net_(net) {
      const std::thread::id me = std::this_thread::get_id();
      const std::thread::id owner = net.lock_owner_.load(std::memory_order_relaxed);
      if (owner == me)
        throw std::runtime_error(
            "the network is busy with a call on this thread (a signal handler or callback "
            "called into the model while its fit, predict or evaluate was running); call it "
            "once that call has returned");
      const ForkState& forks = fork_state();
      if (owner != std::thread::id() &&
          net.lock_generation_.load(std::memory_order_relaxed) != forks.generation.load() &&
          owner != forks.forking_thread.load())
        throw std::runtime_error(
            "the network was in use by another thread (its fit, predict, evaluate or a save) "
            "when this process forked; that thread does not exist here, so the call never "
            "ends and the weights may be half-way through a step. Fork when no thread is "
            "using the model, or pass it to the child pickled or saved");
      net.mutex_.lock();
      net.lock_owner_.store(me, std::memory_order_relaxed);
      net.lock_generation_.store(forks.generation.load(), std::memory_order_relaxed);
    }
    ~CallLock() {
      net_.lock_owner_.store(std::thread::id(), std::memory_order_relaxed);
      net_.mutex_.unlock();
    }
    CallLock(const CallLock&) = delete;
    CallLock& operator=(const CallLock&) = delete;

   private:
    Network& net_;
  };
  std::mutex mutex_;
  std::atomic<std::thread::id> lock_owner_{};  // the thread holding mutex_ (none: default id)
  std::atomic<std::uint64_t> lock_generation_{0};  // fork_state().generation when it was taken
};

}  // namespace mlpcore

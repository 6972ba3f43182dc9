// Optimizer update rules over flat buffers, transcribing torch.optim's documented algorithms
// (single-tensor, non-foreach, non-fused variants). Element-wise, so any split is deterministic.
#pragma once
#include <cstdint>

#include "common.hpp"

namespace mlpcore {

// The integer values are part of the Python binding (see optim.py).
enum class OptKind : int { SGD = 0, Adam = 1, AdamW = 2, RMSprop = 3, Adagrad = 4 };

// Hyper-parameters of every rule; each rule reads only its own fields.
struct OptConfig {
  OptKind kind = OptKind::SGD;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double momentum = 0.0;     // SGD, RMSprop
  double dampening = 0.0;    // SGD
  bool nesterov = false;     // SGD
  double beta1 = 0.9;        // Adam, AdamW
  double beta2 = 0.999;      // Adam, AdamW
  double eps = 1e-8;         // Adam, AdamW, RMSprop, Adagrad
  bool amsgrad = false;      // Adam, AdamW
  double alpha = 0.99;       // RMSprop
  bool centered = false;     // RMSprop
  double lr_decay = 0.0;     // Adagrad
};

// Maximum number of state buffers any rule keeps.
constexpr int kMaxOptimizerState = 3;

// The state buffers (each as long as the parameters) this configuration needs, named as
// torch.optim's state keys; returns how many were written into names. Buffers that a
// configuration does not use (max_exp_avg_sq without amsgrad ...) are not allocated.
int optimizer_state_names(const OptConfig& cfg, const char* names[kMaxOptimizerState]) noexcept;

inline int optimizer_state_count(const OptConfig& cfg) noexcept {
  const char* names[kMaxOptimizerState];
  return optimizer_state_names(cfg, names);
}

// One update of n parameters. `step` is the 1-based number of this update; `state` holds the
// buffers listed by optimizer_state_names, in that order, n elements each. `fresh_momentum` says
// SGD's momentum buffer has never been written: torch starts it at the gradient, undamped, the
// first time momentum is used (which may be after step 1 if momentum was switched on later).
template <typename T>
void optimizer_step(const OptConfig& cfg, std::int64_t step, bool fresh_momentum, T* param,
                    const T* grad, T* const* state, index_t n) noexcept;

}  // namespace mlpcore

// Optimizer update rules over flat buffers, transcribing torch.optim's documented algorithms
// (single-tensor, non-foreach, non-fused variants). Element-wise, so any split is deterministic.
#pragma once
#include <cstdint>
#include <string>

#include "common.hpp"

namespace mlpcore {

// Every rule, one row. The list generates the enum and the Python enum mlpcore._core.OptKind
// (bindings/kinds.cpp). A rule's state buffers and its update live together in optim_rules.inl.
#define MLPCORE_OPTIMIZERS(X) X(SGD) X(Adam) X(AdamW) X(RMSprop) X(Adagrad)

enum class OptKind : int {
#define MLPCORE_ENUM_ROW(name) name,
  MLPCORE_OPTIMIZERS(MLPCORE_ENUM_ROW)
#undef MLPCORE_ENUM_ROW
};

// Every hyper-parameter a rule reads, one row: X(type, name, default), named as torch.optim's
// arguments (betas split in two). Generates OptConfig's fields and their Python properties.
#define MLPCORE_OPT_FIELDS(X)   \
  X(double, lr, 1e-3)           \
  X(double, weight_decay, 0.0)  \
  X(double, momentum, 0.0)      /* SGD, RMSprop */ \
  X(double, dampening, 0.0)     /* SGD */          \
  X(bool, nesterov, false)      /* SGD */          \
  X(double, beta1, 0.9)         /* Adam, AdamW */  \
  X(double, beta2, 0.999)       /* Adam, AdamW */  \
  X(double, eps, 1e-8)          /* Adam, AdamW, RMSprop, Adagrad */ \
  X(bool, amsgrad, false)       /* Adam, AdamW */  \
  X(bool, eps_before_correction, false) /* Adam, AdamW: Keras' and scikit-learn's eps */ \
  X(double, alpha, 0.99)        /* RMSprop */      \
  X(bool, centered, false)      /* RMSprop */      \
  X(double, lr_decay, 0.0)      /* Adagrad */

// Hyper-parameters of every rule; each rule reads only its own fields.
struct OptConfig {
  OptKind kind = OptKind::SGD;
#define MLPCORE_FIELD_ROW(type, name, value) type name = value;
  MLPCORE_OPT_FIELDS(MLPCORE_FIELD_ROW)
#undef MLPCORE_FIELD_ROW
};

// The first hyper-parameter that no rule can use (NaN, a negative rate, a beta outside [0, 1)),
// as torch.optim's message ("Invalid learning rate: nan"), or an empty string. Every path that
// installs a configuration goes through it, so none can write NaN into the weights.
std::string invalid_optimizer_config(const OptConfig& cfg);

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

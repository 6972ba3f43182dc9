#include "optim.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "denormals.hpp"
#include "isa_regions.hpp"

namespace mlpcore {

std::string invalid_optimizer_config(const OptConfig& c) {
  auto fmt = [](const char* what, double v) { return std::string("Invalid ") + what + ": " +
                                                  std::to_string(v); };
  auto non_negative = [](double v) { return v >= 0.0 && std::isfinite(v); };  // false for NaN
  if (!non_negative(c.lr)) return fmt("learning rate", c.lr);
  if (!non_negative(c.weight_decay)) return fmt("weight_decay value", c.weight_decay);
  if (!non_negative(c.momentum)) return fmt("momentum value", c.momentum);
  if (!std::isfinite(c.dampening)) return fmt("dampening value", c.dampening);
  if (!(c.beta1 >= 0.0 && c.beta1 < 1.0)) return fmt("beta parameter at index 0", c.beta1);
  if (!(c.beta2 >= 0.0 && c.beta2 < 1.0)) return fmt("beta parameter at index 1", c.beta2);
  if (!non_negative(c.eps)) return fmt("epsilon value", c.eps);
  if (!non_negative(c.alpha)) return fmt("alpha value", c.alpha);
  if (!non_negative(c.lr_decay)) return fmt("lr_decay value", c.lr_decay);
  if (c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0))
    return "Nesterov momentum requires a momentum and zero dampening";
  return {};
}

namespace optim_baseline {
#include "optim_rules.inl"
}  // namespace optim_baseline

// The AVX2 and AVX-512 copies (elementwise_copy.inl, compiled in their own files).
#define MLPCORE_DECLARE_OPTIM_COPY(ns)                                                      \
  namespace ns {                                                                            \
  template <typename T>                                                                     \
  void step(const OptConfig&, std::int64_t, bool, T*, const T*, T* const*, index_t) noexcept; \
  }
MLPCORE_DECLARE_OPTIM_COPY(optim_avx2)
MLPCORE_DECLARE_OPTIM_COPY(optim_avx512)
#undef MLPCORE_DECLARE_OPTIM_COPY

int optimizer_state_names(const OptConfig& cfg, const char* names[kMaxOptimizerState]) noexcept {
  return optim_baseline::state_names(cfg, names);
}

template <typename T>
void optimizer_step(const OptConfig& cfg, std::int64_t step, bool fresh_momentum, T* param,
                    const T* grad, T* const* state, index_t n) noexcept {
  switch (elementwise_isa()) {
    case ElementwiseIsa::Avx512:
      return optim_avx512::step(cfg, step, fresh_momentum, param, grad, state, n);
    case ElementwiseIsa::Avx2:
      return optim_avx2::step(cfg, step, fresh_momentum, param, grad, state, n);
    case ElementwiseIsa::Baseline:
      return optim_baseline::step(cfg, step, fresh_momentum, param, grad, state, n);
  }
}

template void optimizer_step<float>(const OptConfig&, std::int64_t, bool, float*, const float*,
                                    float* const*, index_t) noexcept;
template void optimizer_step<double>(const OptConfig&, std::int64_t, bool, double*, const double*,
                                     double* const*, index_t) noexcept;

}  // namespace mlpcore

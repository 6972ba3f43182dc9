#include "optim.hpp"

#include <algorithm>
#include <cmath>

#include "denormals.hpp"
#include "isa_regions.hpp"

namespace mlpcore {

int optimizer_state_names(const OptConfig& cfg, const char* names[kMaxOptimizerState]) noexcept {
  int count = 0;
  switch (cfg.kind) {
    case OptKind::SGD:
      if (cfg.momentum != 0.0) names[count++] = "momentum_buffer";
      break;
    case OptKind::Adam:
    case OptKind::AdamW:
      names[count++] = "exp_avg";
      names[count++] = "exp_avg_sq";
      if (cfg.amsgrad) names[count++] = "max_exp_avg_sq";
      break;
    case OptKind::RMSprop:
      names[count++] = "square_avg";
      if (cfg.momentum > 0.0) names[count++] = "momentum_buffer";
      if (cfg.centered) names[count++] = "grad_avg";
      break;
    case OptKind::Adagrad:
      names[count++] = "sum";
      break;
  }
  return count;
}

namespace optim_baseline {
#include "optim_rules.inl"
}  // namespace optim_baseline

#if MLPCORE_AVX512_REGIONS
MLPCORE_AVX512_BEGIN
namespace optim_avx512 {
#include "optim_rules.inl"
}  // namespace optim_avx512
MLPCORE_AVX512_END
#endif

template <typename T>
void optimizer_step(const OptConfig& cfg, std::int64_t step, bool fresh_momentum, T* param,
                    const T* grad, T* const* state, index_t n) noexcept {
#if MLPCORE_AVX512_REGIONS
  if (use_avx512_elementwise()) {
    optim_avx512::step(cfg, step, fresh_momentum, param, grad, state, n);
    return;
  }
#endif
  optim_baseline::step(cfg, step, fresh_momentum, param, grad, state, n);
}

template void optimizer_step<float>(const OptConfig&, std::int64_t, bool, float*, const float*,
                                    float* const*, index_t) noexcept;
template void optimizer_step<double>(const OptConfig&, std::int64_t, bool, double*, const double*,
                                     double* const*, index_t) noexcept;

}  // namespace mlpcore

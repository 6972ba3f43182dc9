#include "optim.hpp"

#include <algorithm>
#include <cmath>

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

namespace {

// Elements per parallel chunk: large enough to amortise the fork, element-wise so deterministic.
constexpr index_t kParallelMin = 1 << 15;

template <typename T>
void sgd(const OptConfig& c, bool first, T* p, const T* g, T* buf, index_t n) noexcept {
  const T lr = T(c.lr), wd = T(c.weight_decay), mom = T(c.momentum), damp = T(c.dampening);
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (index_t i = 0; i < n; ++i) {
    T d = g[i] + wd * p[i];
    if (c.momentum != 0.0) {
      // torch starts the buffer at the first gradient, without dampening
      buf[i] = first ? d : mom * buf[i] + (T(1) - damp) * d;
      d = c.nesterov ? d + mom * buf[i] : buf[i];
    }
    p[i] -= lr * d;
  }
}

template <typename T>
void adam(const OptConfig& c, std::int64_t step, T* p, const T* g, T* m, T* v, T* vmax,
          index_t n) noexcept {
  const bool decoupled = c.kind == OptKind::AdamW;
  const T lr = T(c.lr), wd = T(c.weight_decay), b1 = T(c.beta1), b2 = T(c.beta2), eps = T(c.eps);
  const T bias_correction1 = T(1.0 - std::pow(c.beta1, double(step)));
  const T bias_correction2_sqrt = T(std::sqrt(1.0 - std::pow(c.beta2, double(step))));
  const T step_size = lr / bias_correction1;
  const T decay = T(1) - lr * wd;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (index_t i = 0; i < n; ++i) {
    T d = g[i];
    if (decoupled) p[i] *= decay;
    else d += wd * p[i];
    m[i] = b1 * m[i] + (T(1) - b1) * d;
    v[i] = b2 * v[i] + (T(1) - b2) * d * d;
    T second = v[i];
    if (c.amsgrad) {
      vmax[i] = std::max(vmax[i], v[i]);
      second = vmax[i];
    }
    const T denom = std::sqrt(second) / bias_correction2_sqrt + eps;
    p[i] -= step_size * (m[i] / denom);
  }
}

template <typename T>
void rmsprop(const OptConfig& c, T* p, const T* g, T* sq, T* buf, T* gavg, index_t n) noexcept {
  const T lr = T(c.lr), wd = T(c.weight_decay), a = T(c.alpha), eps = T(c.eps),
          mom = T(c.momentum);
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (index_t i = 0; i < n; ++i) {
    const T d = g[i] + wd * p[i];
    sq[i] = a * sq[i] + (T(1) - a) * d * d;
    T avg;
    if (c.centered) {
      gavg[i] = a * gavg[i] + (T(1) - a) * d;
      avg = std::sqrt(sq[i] - gavg[i] * gavg[i]) + eps;
    } else {
      avg = std::sqrt(sq[i]) + eps;
    }
    if (c.momentum > 0.0) {
      buf[i] = mom * buf[i] + d / avg;
      p[i] -= lr * buf[i];
    } else {
      p[i] -= lr * (d / avg);
    }
  }
}

template <typename T>
void adagrad(const OptConfig& c, std::int64_t step, T* p, const T* g, T* sum,
             index_t n) noexcept {
  const T clr = T(c.lr / (1.0 + double(step - 1) * c.lr_decay));
  const T wd = T(c.weight_decay), eps = T(c.eps);
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (index_t i = 0; i < n; ++i) {
    const T d = g[i] + wd * p[i];
    sum[i] += d * d;
    p[i] -= clr * (d / (std::sqrt(sum[i]) + eps));
  }
}

}  // namespace

template <typename T>
void optimizer_step(const OptConfig& cfg, std::int64_t step, bool fresh_momentum, T* param,
                    const T* grad, T* const* state, index_t n) noexcept {
  switch (cfg.kind) {
    case OptKind::SGD:
      sgd(cfg, fresh_momentum, param, grad, cfg.momentum != 0.0 ? state[0] : nullptr, n);
      break;
    case OptKind::Adam:
    case OptKind::AdamW:
      adam(cfg, step, param, grad, state[0], state[1], cfg.amsgrad ? state[2] : nullptr, n);
      break;
    case OptKind::RMSprop: {
      int next = 1;
      T* buf = cfg.momentum > 0.0 ? state[next++] : nullptr;
      T* gavg = cfg.centered ? state[next++] : nullptr;
      rmsprop(cfg, param, grad, state[0], buf, gavg, n);
      break;
    }
    case OptKind::Adagrad: adagrad(cfg, step, param, grad, state[0], n); break;
  }
}

template void optimizer_step<float>(const OptConfig&, std::int64_t, bool, float*, const float*,
                                    float* const*, index_t) noexcept;
template void optimizer_step<double>(const OptConfig&, std::int64_t, bool, double*, const double*,
                                     double* const*, index_t) noexcept;

}  // namespace mlpcore

// The optimizer rules, included twice by optim.cpp (baseline and AVX-512 copies, see
// isa_regions.hpp). Not a stand-alone header: no include guard on purpose.

// Element-wise rules, so any split is deterministic. Large buffers are cut into fixed chunks
// shared by the threads; inside a chunk the loop is branch-free (options are template
// parameters) so it vectorises.
constexpr index_t kParallelMin = 1 << 15;
constexpr index_t kChunk = 1 << 14;

template <typename F>
void for_chunks(index_t n, F&& range) noexcept {
  const index_t chunks = (n + kChunk - 1) / kChunk;
  if (n < kParallelMin) {  // no OpenMP region at all: even an inactive one costs a team setup
    for (index_t c = 0; c < chunks; ++c) range(c * kChunk, std::min(n, (c + 1) * kChunk));
    return;
  }
#pragma omp parallel for schedule(static)
  for (index_t c = 0; c < chunks; ++c) {
    const DenormalsAsZero denormals;  // same arithmetic mode in every thread
    range(c * kChunk, std::min(n, (c + 1) * kChunk));
  }
}

template <typename T, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_range(T* __restrict p, const T* __restrict g, T* __restrict buf, index_t lo, index_t hi,
               T lr, T wd, T mom, T damp) noexcept {
#pragma omp simd
  for (index_t i = lo; i < hi; ++i) {
    T d = g[i] + wd * p[i];
    if (kMomentum) {
      // torch starts the buffer at the first gradient, without dampening
      const T b = kFirst ? d : mom * buf[i] + (T(1) - damp) * d;
      buf[i] = b;
      d = kNesterov ? d + mom * b : b;
    }
    p[i] -= lr * d;
  }
}

// Each rule: the state buffers it keeps (torch.optim's state keys, in buffer order; a buffer
// an option does not use is not allocated), then its update.
inline int sgd_state(const OptConfig& c, const char** names) noexcept {
  int count = 0;
  if (c.momentum != 0.0) names[count++] = "momentum_buffer";
  return count;
}

template <typename T>
void sgd(const OptConfig& c, bool first, T* p, const T* g, T* buf, index_t n) noexcept {
  const T lr = T(c.lr), wd = T(c.weight_decay), mom = T(c.momentum), damp = T(c.dampening);
  for_chunks(n, [&](index_t lo, index_t hi) {
    if (c.momentum == 0.0) sgd_range<T, false, false, false>(p, g, buf, lo, hi, lr, wd, mom, damp);
    else if (first && c.nesterov) sgd_range<T, true, true, true>(p, g, buf, lo, hi, lr, wd, mom, damp);
    else if (first) sgd_range<T, true, true, false>(p, g, buf, lo, hi, lr, wd, mom, damp);
    else if (c.nesterov) sgd_range<T, true, false, true>(p, g, buf, lo, hi, lr, wd, mom, damp);
    else sgd_range<T, true, false, false>(p, g, buf, lo, hi, lr, wd, mom, damp);
  });
}

inline int adam_state(const OptConfig& c, const char** names) noexcept {
  int count = 0;
  names[count++] = "exp_avg";
  names[count++] = "exp_avg_sq";
  if (c.amsgrad) names[count++] = "max_exp_avg_sq";
  return count;
}

template <typename T>
struct AdamScalars {
  T wd, b1, b2, eps, step_size, bias_correction2_sqrt, decay;
};

// kEpsBefore: eps is added to sqrt(v) before the bias correction, which then goes into the step
// size (Keras, scikit-learn: Kingma & Ba's "epsilon hat"); one division per parameter instead
// of torch's two.
template <typename T, bool kDecoupled, bool kAmsgrad, bool kEpsBefore>
void adam_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                T* __restrict vmax, index_t lo, index_t hi, const AdamScalars<T>& s) noexcept {
  const T b1 = s.b1, b2 = s.b2, wd = s.wd, decay = s.decay, eps = s.eps;
  const T step_size = s.step_size, bc2 = s.bias_correction2_sqrt;
#pragma omp simd
  for (index_t i = lo; i < hi; ++i) {
    T d = g[i];
    T w = p[i];
    if (kDecoupled) w *= decay;
    else d += wd * w;
    const T mi = b1 * m[i] + (T(1) - b1) * d;
    const T vi = b2 * v[i] + (T(1) - b2) * d * d;
    m[i] = mi;
    v[i] = vi;
    T second = vi;
    if (kAmsgrad) {
      second = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = second;
    }
    if (kEpsBefore) {
      p[i] = w - (step_size * mi) / (std::sqrt(second) + eps);
    } else {
      const T denom = std::sqrt(second) / bc2 + eps;
      p[i] = w - step_size * (mi / denom);
    }
  }
}

template <typename T, bool kDecoupled, bool kAmsgrad>
void adam_range(bool eps_before, T* p, const T* g, T* m, T* v, T* vmax, index_t lo, index_t hi,
                const AdamScalars<T>& s) noexcept {
  if (eps_before) adam_range<T, kDecoupled, kAmsgrad, true>(p, g, m, v, vmax, lo, hi, s);
  else adam_range<T, kDecoupled, kAmsgrad, false>(p, g, m, v, vmax, lo, hi, s);
}

template <typename T>
void adam(const OptConfig& c, std::int64_t step, T* p, const T* g, T* m, T* v, T* vmax,
          index_t n) noexcept {
  AdamScalars<T> s;
  const T lr = T(c.lr);
  s.wd = T(c.weight_decay);
  s.b1 = T(c.beta1);
  s.b2 = T(c.beta2);
  s.eps = T(c.eps);
  const double bias_correction1 = 1.0 - std::pow(c.beta1, double(step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(c.beta2, double(step)));
  // (scikit-learn's learning_rate_init * sqrt(1 - beta_2**t) / (1 - beta_1**t), in double)
  s.step_size = c.eps_before_correction ? T(c.lr * bias_correction2_sqrt / bias_correction1)
                                        : lr / T(bias_correction1);
  s.bias_correction2_sqrt = T(bias_correction2_sqrt);
  s.decay = T(1) - lr * s.wd;
  const bool decoupled = c.kind == OptKind::AdamW, eps_before = c.eps_before_correction;
  for_chunks(n, [&](index_t lo, index_t hi) {
    if (decoupled && c.amsgrad) adam_range<T, true, true>(eps_before, p, g, m, v, vmax, lo, hi, s);
    else if (decoupled) adam_range<T, true, false>(eps_before, p, g, m, v, vmax, lo, hi, s);
    else if (c.amsgrad) adam_range<T, false, true>(eps_before, p, g, m, v, vmax, lo, hi, s);
    else adam_range<T, false, false>(eps_before, p, g, m, v, vmax, lo, hi, s);
  });
}

inline int rmsprop_state(const OptConfig& c, const char** names) noexcept {
  int count = 0;
  names[count++] = "square_avg";
  if (c.momentum > 0.0) names[count++] = "momentum_buffer";
  if (c.centered) names[count++] = "grad_avg";
  return count;
}

template <typename T, bool kCentered, bool kMomentum>
void rmsprop_range(T* __restrict p, const T* __restrict g, T* __restrict sq, T* __restrict buf,
                   T* __restrict gavg, index_t lo, index_t hi, T lr, T wd, T a, T eps,
                   T mom) noexcept {
#pragma omp simd
  for (index_t i = lo; i < hi; ++i) {
    const T d = g[i] + wd * p[i];
    const T s = a * sq[i] + (T(1) - a) * d * d;
    sq[i] = s;
    T avg;
    if (kCentered) {
      const T ga = a * gavg[i] + (T(1) - a) * d;
      gavg[i] = ga;
      avg = std::sqrt(s - ga * ga) + eps;
    } else {
      avg = std::sqrt(s) + eps;
    }
    if (kMomentum) {
      const T b = mom * buf[i] + d / avg;
      buf[i] = b;
      p[i] -= lr * b;
    } else {
      p[i] -= lr * (d / avg);
    }
  }
}

template <typename T>
void rmsprop(const OptConfig& c, T* p, const T* g, T* sq, T* buf, T* gavg, index_t n) noexcept {
  const T lr = T(c.lr), wd = T(c.weight_decay), a = T(c.alpha), eps = T(c.eps),
          mom = T(c.momentum);
  const bool momentum = c.momentum > 0.0;
  for_chunks(n, [&](index_t lo, index_t hi) {
    if (c.centered && momentum)
      rmsprop_range<T, true, true>(p, g, sq, buf, gavg, lo, hi, lr, wd, a, eps, mom);
    else if (c.centered)
      rmsprop_range<T, true, false>(p, g, sq, buf, gavg, lo, hi, lr, wd, a, eps, mom);
    else if (momentum)
      rmsprop_range<T, false, true>(p, g, sq, buf, gavg, lo, hi, lr, wd, a, eps, mom);
    else
      rmsprop_range<T, false, false>(p, g, sq, buf, gavg, lo, hi, lr, wd, a, eps, mom);
  });
}

inline int adagrad_state(const OptConfig&, const char** names) noexcept {
  names[0] = "sum";
  return 1;
}

template <typename T>
void adagrad(const OptConfig& c, std::int64_t step, T* p, const T* g, T* sum,
             index_t n) noexcept {
  const T clr = T(c.lr / (1.0 + double(step - 1) * c.lr_decay));
  const T wd = T(c.weight_decay), eps = T(c.eps);
  for_chunks(n, [&](index_t lo, index_t hi) {
    T* __restrict pp = p;
    const T* __restrict gg = g;
    T* __restrict ss = sum;
#pragma omp simd
    for (index_t i = lo; i < hi; ++i) {
      const T d = gg[i] + wd * pp[i];
      const T acc = ss[i] + d * d;
      ss[i] = acc;
      pp[i] -= clr * (d / (std::sqrt(acc) + eps));
    }
  });
}

inline int state_names(const OptConfig& cfg, const char** names) noexcept {
  switch (cfg.kind) {
    case OptKind::SGD: return sgd_state(cfg, names);
    case OptKind::Adam:
    case OptKind::AdamW: return adam_state(cfg, names);
    case OptKind::RMSprop: return rmsprop_state(cfg, names);
    case OptKind::Adagrad: return adagrad_state(cfg, names);
  }
  return 0;
}

template <typename T>
void step(const OptConfig& cfg, std::int64_t step, bool fresh_momentum, T* param,
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

#include "losses.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace mlpcore {

namespace {

template <typename T>
inline T sign_of(T d) noexcept {
  return d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0));
}

// Element-wise losses: value and derivative of one element (before the mean's 1/N).
template <typename T>
inline double elementwise_loss(Loss loss, const LossParams& lp, T o, T t, T* grad) noexcept {
  switch (loss) {
    case Loss::MSE: {
      const T d = o - t;
      *grad = T(2) * d;
      return double(d) * double(d);
    }
    case Loss::MAE: {
      const T d = o - t;
      *grad = sign_of(d);
      return std::abs(double(d));
    }
    case Loss::Huber: {
      const T d = o - t;
      const T delta = T(lp.huber_delta);
      const T ad = std::abs(d);
      if (ad < delta) {
        *grad = d;
        return 0.5 * double(d) * double(d);
      }
      *grad = delta * sign_of(d);
      return double(delta) * (double(ad) - 0.5 * double(delta));
    }
    case Loss::BCE: {
      const double log_p = std::max(std::log(double(o)), -100.0);
      const double log_1mp = std::max(std::log1p(-double(o)), -100.0);
      *grad = T((double(o) - double(t)) / std::max((1.0 - double(o)) * double(o), 1e-12));
      return -(double(t) * log_p + (1.0 - double(t)) * log_1mp);
    }
    case Loss::BCEWithLogits: {
      const double x = double(o);
      const double s = x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
      *grad = T(s - double(t));
      return std::max(x, 0.0) - x * double(t) + std::log1p(std::exp(-std::abs(x)));
    }
    case Loss::CrossEntropy: break;  // row-wise, handled by the caller
  }
  *grad = T(0);
  return 0.0;
}

// exp(x) for a float x <= 0 (a logit minus its row's largest), within 1.3 ulp (every float in
// [-87, 0] checked against double exp: at most 1.21; libm: 0.50), in plain float
// arithmetic that the compiler vectorises: libm's expf is one call per element, 12% of a
// 10-class step. The same operations whatever the vector width (and no contraction: the build
// has -ffp-contract=off), so the same bits on every build. NaN stays NaN; below -87.3, where
// the result would be under the smallest normal float, it is 0.
inline float exp_of_nonpositive(float x) noexcept {
  constexpr float kLow = -87.3f;
  const float xc = x > kLow ? x : kLow;  // (NaN -> kLow here, restored below)
  // x = n ln2 + r with |r| <= ln2 / 2; ln2 in two parts so that n * ln2_hi is exact
  // adding 1.5 * 2^23 rounds to an integer n, held in the sum's low mantissa bits
  constexpr float kShifter = 12582912.0f;
  const float shifted = xc * 1.44269504088896341f + kShifter;
  const float n = shifted - kShifter;
  const float r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  // e^r by its Taylor series to r^7 (truncation below 6e-9 relative)
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  std::int32_t shifted_bits;  // 0x4B400000 + n (an int from the bits: no conversion to trap)
  std::memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
  const std::int32_t bits = (shifted_bits - 0x4B400000 + 127) * (std::int32_t(1) << 23);  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float e = p * scale;
  const float kept = x > kLow ? e : 0.0f;
  return x != x ? x : kept;
}

// exp(x[c] - xmax) for c < k into out (when given), and their sum in double, in column order.
inline double shifted_exps(const float* x, index_t k, float xmax, float* out) noexcept {
  double sum = 0.0;
  float chunk[64];
  for (index_t c0 = 0; c0 < k; c0 += 64) {
    const index_t m = std::min<index_t>(64, k - c0);
    float* e = out ? out + c0 : chunk;
#pragma omp simd
    for (index_t c = 0; c < m; ++c) e[c] = exp_of_nonpositive(x[c0 + c] - xmax);
    for (index_t c = 0; c < m; ++c) sum += double(e[c]);
  }
  return sum;
}

inline double shifted_exps(const double* x, index_t k, double xmax, double* out) noexcept {
  double sum = 0.0;
  for (index_t c = 0; c < k; ++c) {
    const double e = std::exp(x[c] - xmax);
    if (out) out[c] = e;
    sum += e;
  }
  return sum;
}

template <typename T>
double cross_entropy(const T* out, index_t n, index_t k, const Targets<T>& targets, T* dout,
                     index_t batch_rows) noexcept {
  double total = 0.0;
  const double inv_n = 1.0 / double(batch_rows);
  for (index_t r = 0; r < n; ++r) {
    const T* x = out + r * k;
    const double w = targets.weights ? double(targets.weights[r]) : 1.0;
    const double row_scale = w * inv_n;
    const T xmax = *std::max_element(x, x + k);
    // exp(x - max) once, in the model's precision (no overflow: every argument is <= 0); kept
    // in dout to become the softmax, the sum accumulated in double
    T* g = dout ? dout + r * k : nullptr;
    const double sum_exp = shifted_exps(x, k, xmax, g);
    const double lse = double(xmax) + std::log(sum_exp);
    const double inv_sum = 1.0 / sum_exp;
    if (targets.labels) {
      const std::int64_t label = targets.labels[r];
      total += w * (lse - double(x[label]));
      if (g) {
        const T scale = T(inv_sum * row_scale);
        for (index_t c = 0; c < k; ++c) g[c] *= scale;
        g[label] -= T(row_scale);
      }
    } else {
      const T* t = targets.values + r * k;
      double t_sum = 0.0, row = 0.0;
      for (index_t c = 0; c < k; ++c) {
        row += double(t[c]) * (lse - double(x[c]));
        t_sum += double(t[c]);
      }
      total += w * row;
      if (g) {
        for (index_t c = 0; c < k; ++c)
          g[c] = T((double(g[c]) * inv_sum * t_sum - double(t[c])) * row_scale);
      }
    }
  }
  return total * inv_n;
}

}  // namespace

template <typename T>
double loss_forward_backward(Loss loss, const LossParams& lp, const T* out, index_t n, index_t k,
                             const Targets<T>& targets, T* dout, index_t batch_rows) noexcept {
  if (n <= 0 || k <= 0) return 0.0;
  if (batch_rows < n) batch_rows = n;
  if (loss == Loss::CrossEntropy) return cross_entropy(out, n, k, targets, dout, batch_rows);
  const index_t count = n * k, batch_count = batch_rows * k;
  const T scale = T(1.0 / double(batch_count));
  double total = 0.0;
  if (!targets.weights) {
    for (index_t i = 0; i < count; ++i) {
      T grad;
      total += elementwise_loss(loss, lp, out[i], targets.values[i], &grad);
      if (dout) dout[i] = grad * scale;
    }
    return total / double(batch_count);
  }
  for (index_t r = 0; r < n; ++r) {
    const T w = targets.weights[r];
    double row = 0.0;
    for (index_t i = r * k; i < (r + 1) * k; ++i) {
      T grad;
      row += elementwise_loss(loss, lp, out[i], targets.values[i], &grad);
      if (dout) dout[i] = grad * (w * scale);
    }
    total += double(w) * row;
  }
  return total / double(batch_count);
}

template <typename T>
std::int64_t count_correct(Loss loss, const T* out, index_t n, index_t k,
                           const Targets<T>& targets) noexcept {
  std::int64_t correct = 0;
  if (loss == Loss::CrossEntropy) {
    for (index_t r = 0; r < n; ++r) {
      const T* x = out + r * k;
      const index_t predicted = std::max_element(x, x + k) - x;
      index_t truth;
      if (targets.labels) {
        truth = index_t(targets.labels[r]);
      } else {
        const T* t = targets.values + r * k;
        truth = std::max_element(t, t + k) - t;
      }
      correct += predicted == truth;
    }
    return correct;
  }
  const T cut = loss == Loss::BCEWithLogits ? T(0) : T(0.5);
  for (index_t i = 0; i < n * k; ++i)
    correct += (out[i] > cut) == (targets.values[i] > T(0.5));
  return correct;
}

template double loss_forward_backward<float>(Loss, const LossParams&, const float*, index_t,
                                             index_t, const Targets<float>&, float*,
                                             index_t) noexcept;
template double loss_forward_backward<double>(Loss, const LossParams&, const double*, index_t,
                                              index_t, const Targets<double>&, double*,
                                              index_t) noexcept;
template std::int64_t count_correct<float>(Loss, const float*, index_t, index_t,
                                           const Targets<float>&) noexcept;
template std::int64_t count_correct<double>(Loss, const double*, index_t, index_t,
                                            const Targets<double>&) noexcept;

}  // namespace mlpcore

// The losses' rules (losses.hpp), one copy per ISA (isa_regions.hpp): included in namespace
// losses_baseline by losses.cpp, which dispatches, and in losses_avx2 by elementwise_copy.inl
// (AVX-512 CPUs run that copy too: elementwise_avx512.cpp says why). Element-wise or in an order fixed here, with no contraction, so every
// copy gives the same bits. Not a stand-alone header.

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

// exp(x[c] - xmax) for c < k into out.
inline void shifted_exps_only(const float* x, index_t k, float xmax, float* out) noexcept {
#pragma omp simd
  for (index_t c = 0; c < k; ++c) out[c] = exp_of_nonpositive(x[c] - xmax);
}

inline void shifted_exps_only(const double* x, index_t k, double xmax, double* out) noexcept {
  for (index_t c = 0; c < k; ++c) out[c] = std::exp(x[c] - xmax);
}

// exp(x[i] - shift[i]) for i < count into out: the same per element.
inline void shifted_exps_only(const float* x, index_t count, const float* shift,
                              float* out) noexcept {
#pragma omp simd
  for (index_t i = 0; i < count; ++i) out[i] = exp_of_nonpositive(x[i] - shift[i]);
}

inline void shifted_exps_only(const double* x, index_t count, const double* shift,
                              double* out) noexcept {
  for (index_t i = 0; i < count; ++i) out[i] = std::exp(x[i] - shift[i]);
}

// exp(x[c] - xmax) for c < k into out (when given), and their sum in double, in column order.
template <typename T>
inline double shifted_exps(const T* x, index_t k, T xmax, T* out) noexcept {
  double sum = 0.0;
  T chunk[64];
  for (index_t c0 = 0; c0 < k; c0 += 64) {
    const index_t m = std::min<index_t>(64, k - c0);
    T* e = out ? out + c0 : chunk;
    shifted_exps_only(x + c0, m, xmax, e);
    for (index_t c = 0; c < m; ++c) sum += double(e[c]);
  }
  return sum;
}

// Rows of at most this many logits are taken kRowBlock at a time, in steps over the block: a
// single row's steps (its maximum, exponentials, their sum in double, the log) wait on each
// other, while the rows of a block do not, so their latencies overlap.
constexpr index_t kBlockMaxColumns = 64;
constexpr index_t kRowBlock = 8;  // (the sums below are written out for 8)

// at = more ? c : at, as a mask: GCC compiled half of the selects below as branches, which
// mispredict on every other column of logits (2.1 against 1.4 us over 100 rows of 4 classes
// of fresh logits, against the same logits again).
inline index_t select_index(bool more, index_t c, index_t at) noexcept {
  return at + ((c - at) & -index_t(more));
}

// Where std::max_element finds the largest of x[0 .. k) (its first column; a NaN counts only in
// column 0). Written with selects: in a row of a few logits, the branches of the plain loop
// mispredict at half of the columns.
template <typename T>
inline index_t first_max(const T* x, index_t k) noexcept {
  T m = x[0];
  index_t at = 0;
  for (index_t c = 1; c < k; ++c) {
    const bool more = m < x[c];
    m = more ? x[c] : m;
    at = select_index(more, c, at);
  }
  return at;
}

// first_max of each of kRowBlock rows of k (x's rows k apart), the rows' chains side by side.
template <typename T>
inline void first_max_rows(const T* x, index_t k, index_t* at) noexcept {
  T m[kRowBlock];
#pragma GCC unroll 8
  for (index_t b = 0; b < kRowBlock; ++b) {
    m[b] = x[b * k];
    at[b] = 0;
  }
  for (index_t c = 1; c < k; ++c) {
#pragma GCC unroll 8
    for (index_t b = 0; b < kRowBlock; ++b) {
      const T v = x[b * k + c];
      const bool more = m[b] < v;
      m[b] = more ? v : m[b];
      at[b] = select_index(more, c, at[b]);
    }
  }
}

// What a row's loss and gradient are made of: its weight w, w / n, log-sum-exp, 1 / sum.
struct RowTerms {
  double w, row_scale, lse, inv_sum;
};

template <typename T>
inline RowTerms row_terms(T xmax, double sum_exp, index_t r, const Targets<T>& targets,
                          double inv_n) noexcept {
  const double w = targets.weights ? double(targets.weights[r]) : 1.0;
  return {w, w * inv_n, double(xmax) + std::log(sum_exp), 1.0 / sum_exp};
}

// With a label, a row's exponentials become its gradient times this, before the label's column
// takes row_scale off.
inline double label_grad_scale(const RowTerms& rt) noexcept { return rt.inv_sum * rt.row_scale; }

// The loss of one row and, with g (its exponentials, shifted by xmax, on entry), its gradient.
template <typename T>
inline double cross_entropy_row(const T* x, index_t k, T xmax, double sum_exp, index_t r,
                                const Targets<T>& targets, T* g, double inv_n) noexcept {
  const RowTerms rt = row_terms(xmax, sum_exp, r, targets, inv_n);
  if (targets.labels) {
    const std::int64_t label = targets.labels[r];
    if (g) {
      const T scale = T(label_grad_scale(rt));
      for (index_t c = 0; c < k; ++c) g[c] *= scale;
      g[label] -= T(rt.row_scale);
    }
    return rt.w * (rt.lse - double(x[label]));
  }
  const T* t = targets.values + r * k;
  double t_sum = 0.0, row = 0.0;
  for (index_t c = 0; c < k; ++c) {
    row += double(t[c]) * (rt.lse - double(x[c]));
    t_sum += double(t[c]);
  }
  if (g) {
    for (index_t c = 0; c < k; ++c)
      g[c] = T((double(g[c]) * rt.inv_sum * t_sum - double(t[c])) * rt.row_scale);
  }
  return rt.w * row;
}

// (defined below)
template <typename T>
std::int64_t correct(Loss loss, const T* out, index_t n, index_t k,
                     const Targets<T>& targets) noexcept;

// With n_correct (and labels), also the rows whose first largest logit is the label: the
// rows' maxima are found here anyway (correct() would find them again).
template <typename T>
double cross_entropy(const T* out, index_t n, index_t k, const Targets<T>& targets, T* dout,
                     index_t batch_rows, std::int64_t* n_correct) noexcept {
  double total = 0.0;
  std::int64_t hits = 0;
  const double inv_n = 1.0 / double(batch_rows);
  index_t r = 0;
  if (dout && k <= kBlockMaxColumns) {
    // the same operations on each row as below, the rows of a block side by side
    T shift[kRowBlock * kBlockMaxColumns];  // per element: its row's maximum, then its scale
    for (; r + kRowBlock <= n; r += kRowBlock) {
      T xmax[kRowBlock];
      double sum[kRowBlock];
      index_t at[kRowBlock];
      first_max_rows(out + r * k, k, at);
      if (targets.labels)
        for (index_t b = 0; b < kRowBlock; ++b) hits += at[b] == index_t(targets.labels[r + b]);
      for (index_t b = 0; b < kRowBlock; ++b) {
        xmax[b] = out[(r + b) * k + at[b]];
        for (index_t c = 0; c < k; ++c) shift[b * k + c] = xmax[b];
        sum[b] = 0.0;
      }
      // the block's rows are contiguous: their exponentials as one run of independent vectors
      // (row by row, a row of 10 was one vector's dependent chain and two scalar ones)
      shifted_exps_only(out + r * k, kRowBlock * k, shift, dout + r * k);
      // each row's sum in column order, the rows' chains side by side (scalar loads: a vector
      // across rows would be a gather, slower than the chains it saves)
      const T* e = dout + r * k;
      for (index_t c = 0; c < k; ++c) {
        sum[0] += double(e[c]);
        sum[1] += double(e[k + c]);
        sum[2] += double(e[2 * k + c]);
        sum[3] += double(e[3 * k + c]);
        sum[4] += double(e[4 * k + c]);
        sum[5] += double(e[5 * k + c]);
        sum[6] += double(e[6 * k + c]);
        sum[7] += double(e[7 * k + c]);
      }
      if (!targets.labels) {
        for (index_t b = 0; b < kRowBlock; ++b)
          total += cross_entropy_row(out + (r + b) * k, k, xmax[b], sum[b], r + b, targets,
                                     dout + (r + b) * k, inv_n);
        continue;
      }
      // cross_entropy_row's label branch, its scaling as one run over the block
      T row_scale[kRowBlock];
      for (index_t b = 0; b < kRowBlock; ++b) {
        const RowTerms rt = row_terms(xmax[b], sum[b], r + b, targets, inv_n);
        const T scale = T(label_grad_scale(rt));
        for (index_t c = 0; c < k; ++c) shift[b * k + c] = scale;
        row_scale[b] = T(rt.row_scale);
        total += rt.w * (rt.lse - double(out[(r + b) * k + targets.labels[r + b]]));
      }
      T* g = dout + r * k;
#pragma omp simd
      for (index_t i = 0; i < kRowBlock * k; ++i) g[i] *= shift[i];
      for (index_t b = 0; b < kRowBlock; ++b) g[b * k + targets.labels[r + b]] -= row_scale[b];
    }
  }
  for (; r < n; ++r) {
    const T* x = out + r * k;
    const index_t at = first_max(x, k);
    if (targets.labels) hits += at == index_t(targets.labels[r]);
    const T xmax = x[at];
    // exp(x - max) once, in the model's precision (no overflow: every argument is <= 0); kept
    // in dout to become the softmax, the sum accumulated in double
    T* g = dout ? dout + r * k : nullptr;
    const double sum_exp = shifted_exps(x, k, xmax, g);
    total += cross_entropy_row(x, k, xmax, sum_exp, r, targets, g, inv_n);
  }
  if (n_correct)
    *n_correct = targets.labels ? hits : correct(Loss::CrossEntropy, out, n, k, targets);
  return total * inv_n;
}

template <typename T>
double forward_backward(Loss loss, const LossParams& lp, const T* out, index_t n, index_t k,
                        const Targets<T>& targets, T* dout, index_t batch_rows,
                        std::int64_t* n_correct) noexcept {
  if (n_correct) *n_correct = 0;
  if (n <= 0 || k <= 0) return 0.0;
  if (batch_rows < n) batch_rows = n;
  if (loss == Loss::CrossEntropy)
    return cross_entropy(out, n, k, targets, dout, batch_rows, n_correct);
  if (n_correct) *n_correct = correct(loss, out, n, k, targets);
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
std::int64_t correct(Loss loss, const T* out, index_t n, index_t k,
                     const Targets<T>& targets) noexcept {
  std::int64_t count = 0;
  if (loss == Loss::CrossEntropy) {
    index_t r = 0;
    if (targets.labels) {
      for (; r + kRowBlock <= n; r += kRowBlock) {
        index_t at[kRowBlock];
        first_max_rows(out + r * k, k, at);
        for (index_t b = 0; b < kRowBlock; ++b) count += at[b] == index_t(targets.labels[r + b]);
      }
    }
    for (; r < n; ++r) {
      const T* x = out + r * k;
      const index_t predicted = first_max(x, k);
      index_t truth;
      if (targets.labels) {
        truth = index_t(targets.labels[r]);
      } else {
        const T* t = targets.values + r * k;
        truth = first_max(t, k);
      }
      count += predicted == truth;
    }
    return count;
  }
  const T cut = loss == Loss::BCEWithLogits ? T(0) : T(0.5);
  for (index_t i = 0; i < n * k; ++i)
    count += (out[i] > cut) == (targets.values[i] > T(0.5));
  return count;
}

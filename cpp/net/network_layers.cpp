// Every layer kind in one place: its plan (what it needs in the arenas), its forward and its
// backward, side by side, kind after kind. The switches at the end dispatch on the kind and carry
// no default: a kind added to MLPCORE_LAYER_KINDS without its three parts does not compile.
//
// Shapes: n rows per batch; `in` / `out` are (n, width) row-major; a layer's gradient arguments
// carry the d prefix (dout = dL/dout, din = dL/din). din may be null: no gradient wanted below.
#include <algorithm>
#include <cmath>

#include "kernels/gemm/gemm.hpp"
#include "kernels/normalization.hpp"
#include "kernels/reductions.hpp"
#include "net/network.hpp"

namespace mlpcore {

const char* layer_kind_name(LayerKind kind) noexcept {
  switch (kind) {
#define MLPCORE_NAME_ROW(name, display) \
  case LayerKind::name: return display;
    MLPCORE_LAYER_KINDS(MLPCORE_NAME_ROW)
#undef MLPCORE_NAME_ROW
  }
  return "layer";
}

bool layer_fixes_width(LayerKind kind) noexcept {
  switch (kind) {
    case LayerKind::Dense:
    case LayerKind::LayerNorm:
    case LayerKind::BatchNorm:
    case LayerKind::Normalization: return true;
    case LayerKind::Activation:
    case LayerKind::Dropout:
    case LayerKind::ResidualBegin:
    case LayerKind::ResidualEnd: return false;
  }
  return false;
}

namespace {

// ------------------------------------------------------------------------------------ Dense
// out = in @ W + b (in: (n, in_f), W: (in_f, out_f), b: (out_f,)); when an element-wise
// activation follows, act_out = f(out) in the same pass (ep.act_out set by the caller).
template <typename T>
void dense_forward(T* out, const T* in, const T* weight, gemm::Epilogue<T>& ep, index_t n,
                   index_t in_f, index_t out_f) noexcept {
  gemm::gemm_fused<T>(false, false, n, out_f, in_f, in, in_f, weight, out_f, out, out_f, ep);
}

// dW = in^T dout, db = column sums of dout; din = dout W^T, times f'(z) of the activation
// before the layer when ep.deriv_z is set (fused in the GEMM's write-back).
template <typename T>
void dense_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight,
                    const gemm::Epilogue<T>& ep, index_t n, index_t in_f, index_t out_f) noexcept {
  gemm::gemm<T>(true, false, in_f, out_f, n, in, in_f, dout, out_f, dweight, out_f, false);
  column_sums<T>(dout, n, out_f, out_f, dbias, false);
  if (!din) return;
  if (ep.deriv_z)
    gemm::gemm_fused<T>(false, true, n, in_f, out_f, dout, out_f, weight, out_f, din, in_f, ep);
  else
    gemm::gemm<T>(false, true, n, in_f, out_f, dout, out_f, weight, out_f, din, in_f, false);
}

// ---------------------------------------------------------------------------------- Dropout
// Inverted dropout: kept elements are scaled by 1 / (1 - p) so evaluation needs no change.
template <typename T>
void dropout_forward(T* out, T* mask, const T* in, index_t count, double p, bool draw,
                     Rng& rng) noexcept {
  if (draw) {
    const T keep_scale = T(1.0 / (1.0 - p));
    for (index_t k = 0; k < count; ++k) mask[k] = rng.uniform() < p ? T(0) : keep_scale;
  }
  for (index_t k = 0; k < count; ++k) out[k] = in[k] * mask[k];
}

template <typename T>
void dropout_backward(T* din, const T* dout, const T* mask, index_t count) noexcept {
  for (index_t k = 0; k < count; ++k) din[k] = dout[k] * mask[k];
}

// ---------------------------------------------------------------------------- Normalization
// Fixed standardisation (Keras' Normalization): out = (in - mean) * rstd, rstd = 1 / sqrt(var +
// eps), mean and var non-trainable buffers (set by adapt). rstd is computed once per pass
// (prepare_features) into the per-feature scratch, where every row and the backward read it.
template <typename T>
void normalization_rstd(T* rstd, const T* var, index_t w, double eps) noexcept {
  for (index_t j = 0; j < w; ++j) rstd[j] = T(1.0 / std::sqrt(double(var[j]) + eps));
}

template <typename T>
void normalization_forward(T* out, const T* rstd, const T* in, const T* mean, index_t n,
                           index_t w) noexcept {
  for (index_t r = 0; r < n; ++r) {
    const T* row = in + r * w;
    T* dst = out + r * w;
    for (index_t j = 0; j < w; ++j) dst[j] = (row[j] - mean[j]) * rstd[j];
  }
}

template <typename T>
void normalization_backward(T* din, const T* dout, const T* rstd, index_t n, index_t w) noexcept {
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < w; ++j) din[r * w + j] = dout[r * w + j] * rstd[j];
}

// --------------------------------------------------------------------------------- Residual
// ResidualEnd: out = f(in) + skip, skip being what entered the matching ResidualBegin. Backward:
// the end passes dout into f's output; the begin adds the gradient through f and through skip.
template <typename T>
void residual_add(T* out, const T* a, const T* b, index_t count) noexcept {
  for (index_t k = 0; k < count; ++k) out[k] = a[k] + b[k];
}

}  // namespace

template <typename T>
typename Network<T>::LayerNeeds Network<T>::plan_layer(std::size_t i, index_t in_width) const {
  const LayerSpec& s = specs_[i];
  LayerNeeds needs;
  needs.out_width = in_width;
  switch (s.kind) {
    case LayerKind::Dense:
      needs.out_width = s.out_features;
      needs.weights = checked_mul(s.in_features, s.out_features, "Dense weight");
      needs.biases = s.out_features;
      break;
    case LayerKind::Activation: break;
    case LayerKind::Dropout: needs.aux_per_row = in_width; break;  // the mask
    case LayerKind::LayerNorm:
      needs.weights = needs.biases = s.in_features;  // gamma, beta
      needs.aux_per_row = 2;                         // mean, rstd of the row
      break;
    case LayerKind::BatchNorm:
      needs.weights = needs.biases = s.in_features;                      // gamma, beta
      needs.buffers = checked_mul(2, s.in_features, "BatchNorm1d buffers");  // running stats
      needs.feat_aux = needs.buffers;                                    // batch mean, rstd
      break;
    case LayerKind::Normalization:
      needs.buffers = checked_mul(2, s.in_features, "Normalization buffers");  // mean, var
      needs.feat_aux = s.in_features;                                        // rstd
      break;
    case LayerKind::ResidualBegin:
    case LayerKind::ResidualEnd: break;
  }
  return needs;
}

template <typename T>
void Network<T>::init_layer(std::size_t i) noexcept {
  const LayerSpec& s = specs_[i];
  switch (s.kind) {
    case LayerKind::LayerNorm:  // starts as the identity: gamma = 1, beta = 0
      std::fill(weight(i), weight(i) + s.in_features, T(1));
      break;
    case LayerKind::BatchNorm:  // gamma = 1, beta = 0; running mean 0, running variance 1
      std::fill(weight(i), weight(i) + s.in_features, T(1));
      std::fill(buffers_.data() + slots_[i].buffer + s.in_features,
                buffers_.data() + slots_[i].buffer + 2 * s.in_features, T(1));
      break;
    case LayerKind::Normalization:  // mean 0, variance 1 until adapted: near the identity
      std::fill(buffer(i) + s.in_features, buffer(i) + 2 * s.in_features, T(1));
      break;
    case LayerKind::Dense:  // initialised from Python (the model's seeded generator)
    case LayerKind::Activation:
    case LayerKind::Dropout:
    case LayerKind::ResidualBegin:
    case LayerKind::ResidualEnd: break;
  }
}

template <typename T>
bool Network<T>::is_fusable_activation(std::size_t layer) const noexcept {
  return layer < specs_.size() && specs_[layer].kind == LayerKind::Activation &&
         is_elementwise(specs_[layer].act);
}

template <typename T>
void Network<T>::prepare_features() noexcept {
  if (!has_normalization_) return;
  for (std::size_t i = 0; i < specs_.size(); ++i)
    if (specs_[i].kind == LayerKind::Normalization)
      normalization_rstd<T>(feat_aux(i), buffer(i) + widths_[i], widths_[i], specs_[i].eps);
}

template <typename T>
std::size_t Network<T>::forward_layer(std::size_t i, const T* x, const Rows& rows,
                                      bool training) noexcept {
  const LayerSpec& s = specs_[i];
  const index_t n = rows.n, r0 = rows.r0;
  const T* in = at_row(input_of(i, x), r0, widths_[i]);
  const index_t w = widths_[i + 1];
  T* out = at_row(act(i + 1), r0, w);
  switch (s.kind) {
    case LayerKind::Dense: {
      gemm::Epilogue<T> ep;
      ep.bias = bias(i);
      if (is_fusable_activation(i + 1)) {
        ep.act = specs_[i + 1].act;
        ep.params = specs_[i + 1].params;
        ep.act_out = at_row(act(i + 2), r0, widths_[i + 2]);
      }
      if (!training && i < prepacked_.size() && !prepacked_[i].data.empty())
        gemm::gemm_fused_prepacked<T>(n, s.out_features, s.in_features, in, s.in_features,
                                      weight(i), s.out_features, prepacked_[i], out,
                                      s.out_features, ep);
      else
        dense_forward<T>(out, in, weight(i), ep, n, s.in_features, s.out_features);
      return ep.act_out ? 2 : 1;
    }
    case LayerKind::Activation:
      activation_forward<T>(s.act, s.params, in, out, n, w);
      return 1;
    case LayerKind::Dropout:
      if (!training || s.p == 0.0)
        std::copy(in, in + n * w, out);
      else
        dropout_forward<T>(out, at_row(aux(i), r0, w), in, n * w, s.p, !masks_frozen_,
                           dropout_rng_);
      return 1;
    case LayerKind::LayerNorm:
      layernorm_forward<T>(in, weight(i), bias(i), out, aux(i) + r0, aux(i) + rows_cap_ + r0, n,
                           w, s.eps);
      return 1;
    case LayerKind::BatchNorm: {  // (never sharded: its statistics span the whole batch)
      T* running = buffers_.data() + slots_[i].buffer;
      if (training)
        batchnorm_forward_train<T>(in, weight(i), bias(i), out, feat_aux(i), feat_aux(i) + w,
                                   running, running + w, n, w, s.eps, s.momentum, stat_sync(i),
                                   stat_scratch_.data());
      else
        batchnorm_forward_eval<T>(in, weight(i), bias(i), out, running, running + w, n, w, s.eps);
      return 1;
    }
    case LayerKind::Normalization:
      normalization_forward<T>(out, feat_aux(i), in, buffer(i), n, w);
      return 1;
    case LayerKind::ResidualBegin:
      std::copy(in, in + n * w, out);
      return 1;
    case LayerKind::ResidualEnd:
      residual_add<T>(out, in, at_row(input_of(slots_[i].partner, x), r0, w), n * w);
      return 1;
  }
  return 1;
}

template <typename T>
std::size_t Network<T>::backward_layer(std::size_t l, const T* x, T* dx, const Rows& rows,
                                       bool want_din) noexcept {
  const LayerSpec& s = specs_[l];
  const index_t n = rows.n, r0 = rows.r0;
  const index_t w = widths_[l + 1];
  const T* dout = at_row(dact(l + 1), r0, w);
  const T* in = at_row(input_of(l, x), r0, widths_[l]);
  T* din = want_din ? at_row(grad_of(l, dx), r0, widths_[l]) : nullptr;
  T* dweight = rows.grads + slots_[l].weight;
  T* dbias = rows.grads + slots_[l].bias;
  switch (s.kind) {
    case LayerKind::Dense: {
      gemm::Epilogue<T> ep;
      std::size_t consumed = 1;
      if (din && l >= 1 && is_fusable_activation(l - 1)) {
        // din becomes the gradient of the activation's input: that layer is done here too
        ep.deriv_act = specs_[l - 1].act;
        ep.params = specs_[l - 1].params;
        ep.deriv_z = at_row(input_of(l - 1, x), r0, widths_[l - 1]);
        ep.deriv_y = at_row(act(l), r0, widths_[l]);
        din = at_row(grad_of(l - 1, dx), r0, widths_[l - 1]);
        consumed = 2;
      }
      dense_backward<T>(din, dweight, dbias, dout, in, weight(l), ep, n, s.in_features,
                        s.out_features);
      return consumed;
    }
    case LayerKind::Activation:
      if (din)
        activation_backward<T>(s.act, s.params, dout, in, at_row(act(l + 1), r0, w), din, n, w);
      return 1;
    case LayerKind::Dropout:
      if (!din) return 1;
      if (s.p == 0.0) std::copy(dout, dout + n * w, din);
      else dropout_backward<T>(din, dout, at_row(aux(l), r0, w), n * w);
      return 1;
    case LayerKind::LayerNorm:
      layernorm_backward<T>(dout, in, weight(l), aux(l) + r0, aux(l) + rows_cap_ + r0, din,
                            dweight, dbias, n, w);
      return 1;
    case LayerKind::BatchNorm:
      batchnorm_backward<T>(dout, in, weight(l), feat_aux(l), feat_aux(l) + w, din, dweight,
                            dbias, n, w, stat_sync(l), stat_scratch_.data());
      return 1;
    case LayerKind::Normalization:  // no parameters: only the input gradient, if wanted
      if (din) normalization_backward<T>(din, dout, feat_aux(l), n, w);
      return 1;
    case LayerKind::ResidualBegin:  // the gradient through f plus the one through the skip
      if (din) residual_add<T>(din, dout, at_row(dact(slots_[l].partner + 1), r0, w), n * w);
      return 1;
    case LayerKind::ResidualEnd:  // into f's output; the skip path is added at the begin
      if (din) std::copy(dout, dout + n * w, din);
      return 1;
  }
  return 1;
}

template <typename T>
bool Network<T>::prepack_weights() {
  const CallLock lock(*this);
  std::vector<gemm::PrepackedB<T>> packed;
  try {
    packed.resize(specs_.size());
  } catch (...) {
    return false;
  }
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const LayerSpec& s = specs_[i];
    if (s.kind != LayerKind::Dense) continue;
    if (!gemm::prepack_b<T>(s.in_features, s.out_features, weight(i), s.out_features,
                            &packed[i]))
      return false;
  }
  prepacked_ = std::move(packed);
  return true;
}

template <typename T>
std::size_t Network<T>::prepacked_bytes() const noexcept {
  std::size_t bytes = 0;
  for (const auto& p : prepacked_) bytes += p.data.size() * sizeof(T);
  return bytes;
}

template class Network<float>;
template class Network<double>;

}  // namespace mlpcore

// The forward and backward passes over the layer plan.
#include <algorithm>
#include <cmath>

#include "kernels/gemm/gemm.hpp"
#include "kernels/normalization.hpp"
#include "kernels/reductions.hpp"
#include "net/network.hpp"

namespace mlpcore {

template <typename T>
bool Network<T>::is_fusable_activation(std::size_t layer) const noexcept {
  return layer < specs_.size() && specs_[layer].kind == LayerKind::Activation &&
         is_elementwise(specs_[layer].act);
}

template <typename T>
const T* Network<T>::forward(const T* x, index_t n, bool training) noexcept {
  auto input_of = [&](std::size_t j) -> const T* { return j == 0 ? x : act(j); };
  std::size_t i = 0;
  while (i < specs_.size()) {
    const LayerSpec& s = specs_[i];
    const T* in = input_of(i);
    T* out = act(i + 1);
    const index_t w = widths_[i + 1];
    switch (s.kind) {
      case LayerKind::Dense: {
        // z = in @ W + b, and when an element-wise activation follows, y = f(z) in the same pass
        gemm::Epilogue<T> ep;
        ep.bias = params_.data() + bias_offsets_[i];
        if (is_fusable_activation(i + 1)) {
          ep.act = specs_[i + 1].act;
          ep.params = specs_[i + 1].params;
          ep.act_out = act(i + 2);
        }
        gemm::gemm_fused<T>(false, false, n, s.out_features, s.in_features, in, s.in_features,
                            params_.data() + weight_offsets_[i], s.out_features, out,
                            s.out_features, ep);
        if (training && sentinel_on_) {
          if (!sentinel_ok(out, n * w, Pass::Forward, i)) return nullptr;
          if (ep.act_out && !sentinel_ok(ep.act_out, n * w, Pass::Forward, i + 1)) return nullptr;
        }
        i += ep.act_out ? 2 : 1;
        continue;
      }
      case LayerKind::Activation:
        activation_forward<T>(s.act, s.params, in, out, n, w);
        break;
      case LayerKind::Dropout: {
        T* mask = aux(i);
        if (!training || s.p == 0.0) {
          std::copy(in, in + n * w, out);
          break;
        }
        if (!masks_frozen_) {
          // inverted dropout: kept elements are scaled by 1 / (1 - p) so eval needs no change
          const T keep_scale = T(1.0 / (1.0 - s.p));
          for (index_t k = 0; k < n * w; ++k)
            mask[k] = dropout_rng_.uniform() < s.p ? T(0) : keep_scale;
        }
        for (index_t k = 0; k < n * w; ++k) out[k] = in[k] * mask[k];
        break;
      }
      case LayerKind::LayerNorm:
        layernorm_forward<T>(in, params_.data() + weight_offsets_[i],
                             params_.data() + bias_offsets_[i], out, aux(i), aux(i) + rows_cap_,
                             n, w, s.eps);
        break;
      case LayerKind::BatchNorm: {
        T* running = buffers_.data() + buffer_offsets_[i];
        if (training)
          batchnorm_forward_train<T>(in, params_.data() + weight_offsets_[i],
                                     params_.data() + bias_offsets_[i], out, feat_aux(i),
                                     feat_aux(i) + w, running, running + w, n, w, s.eps,
                                     s.momentum);
        else
          batchnorm_forward_eval<T>(in, params_.data() + weight_offsets_[i],
                                    params_.data() + bias_offsets_[i], out, running, running + w,
                                    n, w, s.eps);
        break;
      }
      case LayerKind::ResidualBegin:
        std::copy(in, in + n * w, out);
        break;
      case LayerKind::ResidualEnd: {
        // output = f(input) + input, where input is what entered the matching ResidualBegin
        const T* skip = input_of(partner_[i]);
        for (index_t k = 0; k < n * w; ++k) out[k] = in[k] + skip[k];
        break;
      }
    }
    if (training && sentinel_on_ && !sentinel_ok(out, n * w, Pass::Forward, i)) return nullptr;
    i += 1;
  }
  return act(specs_.size());
}

template <typename T>
bool Network<T>::backward(const T* x, index_t n, T* dx) noexcept {
  // dact(j) holds dL/d(act(j)); dact(L) was written by the loss. act(0) is x, dact(0) is dx.
  auto input_of = [&](std::size_t j) -> const T* { return j == 0 ? x : act(j); };
  auto grad_of = [&](std::size_t j) -> T* { return j == 0 ? dx : dact(j); };
  // Gradients flow into act(j) only if a parameter lies before it or the caller wants dx.
  auto needs_grad = [&](std::size_t j) { return dx != nullptr || j > first_param_; };
  std::size_t i = specs_.size();
  while (i > 0) {
    const std::size_t l = i - 1;  // layer being differentiated
    const LayerSpec& s = specs_[l];
    const T* dy = dact(l + 1);
    const index_t w = widths_[l + 1];
    i -= 1;
    switch (s.kind) {
      case LayerKind::Dense: {
        const T* in = input_of(l);
        // dW = in^T dz, db = column sums of dz
        gemm::gemm<T>(true, false, s.in_features, s.out_features, n, in, s.in_features, dy,
                      s.out_features, grads_.data() + weight_offsets_[l], s.out_features, false);
        column_sums<T>(dy, n, s.out_features, s.out_features, grads_.data() + bias_offsets_[l],
                       false);
        if (sentinel_on_ && !sentinel_ok(grads_.data() + weight_offsets_[l], param_counts_[l],
                                         Pass::Backward, l))
          return false;
        if (!needs_grad(l)) return true;
        const T* weight = params_.data() + weight_offsets_[l];
        if (l >= 1 && is_fusable_activation(l - 1)) {
          // dx = dz W^T times the previous activation's derivative, written in one pass
          gemm::Epilogue<T> ep;
          ep.deriv_act = specs_[l - 1].act;
          ep.params = specs_[l - 1].params;
          ep.deriv_z = input_of(l - 1);
          ep.deriv_y = act(l);
          gemm::gemm_fused<T>(false, true, n, s.in_features, s.out_features, dy, s.out_features,
                              weight, s.out_features, grad_of(l - 1), s.in_features, ep);
          i -= 1;
          if (sentinel_on_ && grad_of(l - 1) &&
              !sentinel_ok(grad_of(l - 1), n * s.in_features, Pass::Backward, l))
            return false;
        } else {
          gemm::gemm<T>(false, true, n, s.in_features, s.out_features, dy, s.out_features, weight,
                        s.out_features, grad_of(l), s.in_features, false);
          if (sentinel_on_ && !sentinel_ok(grad_of(l), n * s.in_features, Pass::Backward, l))
            return false;
        }
        break;
      }
      case LayerKind::LayerNorm:
      case LayerKind::BatchNorm: {
        T* dgamma = grads_.data() + weight_offsets_[l];
        T* dbeta = grads_.data() + bias_offsets_[l];
        T* din = needs_grad(l) ? grad_of(l) : nullptr;
        const T* gamma = params_.data() + weight_offsets_[l];
        if (s.kind == LayerKind::LayerNorm)
          layernorm_backward<T>(dy, input_of(l), gamma, aux(l), aux(l) + rows_cap_, din, dgamma,
                                dbeta, n, w);
        else
          batchnorm_backward<T>(dy, input_of(l), gamma, feat_aux(l), feat_aux(l) + w, din,
                                dgamma, dbeta, n, w);
        if (sentinel_on_ && !sentinel_ok(dgamma, 2 * w, Pass::Backward, l)) return false;
        if (!din) return true;
        if (sentinel_on_ && !sentinel_ok(din, n * w, Pass::Backward, l)) return false;
        break;
      }
      default: {
        if (!needs_grad(l)) return true;
        T* din = grad_of(l);
        if (s.kind == LayerKind::Activation) {
          activation_backward<T>(s.act, s.params, dy, input_of(l), act(l + 1), din, n, w);
        } else if (s.kind == LayerKind::Dropout) {
          if (s.p == 0.0) {
            std::copy(dy, dy + n * w, din);
          } else {
            const T* mask = aux(l);
            for (index_t k = 0; k < n * w; ++k) din[k] = dy[k] * mask[k];
          }
        } else if (s.kind == LayerKind::ResidualEnd) {
          std::copy(dy, dy + n * w, din);  // into f's output; the skip path is added at the begin
        } else {  // ResidualBegin: the gradient through f plus the one through the skip
          const T* skip = dact(partner_[l] + 1);
          for (index_t k = 0; k < n * w; ++k) din[k] = dy[k] + skip[k];
        }
        if (sentinel_on_ && din && !sentinel_ok(din, n * w, Pass::Backward, l)) return false;
        break;
      }
    }
  }
  return true;
}

template <typename T>
bool Network<T>::sentinel_ok(const T* data, index_t count, Pass pass, std::size_t layer) noexcept {
  if (all_finite(data, count)) return true;
  sentinel_.pass = pass;
  sentinel_.layer = std::int64_t(layer);
  return false;
}

template class Network<float>;
template class Network<double>;

}  // namespace mlpcore

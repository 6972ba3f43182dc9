// The forward and backward passes over the layer plan: the loops, the anomaly sentinel and the
// per-layer work of each kind (network_layers.cpp).
#include <algorithm>

#include "kernels/reductions.hpp"
#include "net/network.hpp"

namespace mlpcore {

template <typename T>
const T* Network<T>::forward(const T* x, index_t n, bool training) noexcept {
  prepare_features();
  const Rows rows{0, n, grads_.data()};
  std::size_t i = 0;
  while (i < specs_.size()) {
    const std::size_t consumed = forward_layer(i, x, rows, training);
    if (training && sentinel_on_)
      for (std::size_t j = i; j < i + consumed; ++j)
        if (!sentinel_ok(act(j + 1), n * widths_[j + 1], Pass::Forward, j)) return nullptr;
    i += consumed;
  }
  return act(specs_.size());
}

template <typename T>
bool Network<T>::backward(const T* x, index_t n, T* dx) noexcept {
  return backward_rows(x, Rows{0, n, grads_.data()}, dx);
}

template <typename T>
bool Network<T>::backward_rows(const T* x, const Rows& rows, T* dx) noexcept {
  // dact(j) holds dL/d(act(j)); dact(L) was written by the loss. act(0) is x, dact(0) is dx.
  // Gradients flow into act(j) only if a parameter lies before it or the caller wants dx; once
  // they stop, every layer below has nothing left to do.
  std::size_t i = specs_.size();
  while (i > 0) {
    const std::size_t l = i - 1;
    const bool want_din = dx != nullptr || l > first_param_;
    if (!want_din && slots_[l].param_count == 0) return true;
    const std::size_t consumed = backward_layer(l, x, dx, rows, want_din);
    if (sentinel_on_) {  // (never on in a sharded step: rows is the whole batch)
      if (slots_[l].param_count > 0 &&
          !sentinel_ok(rows.grads + slots_[l].weight, slots_[l].param_count, Pass::Backward, l))
        return false;
      const std::size_t below = l + 1 - consumed;  // the lowest layer this call differentiated
      const T* din = want_din ? grad_of(below, dx) : nullptr;
      if (din && !sentinel_ok(din, rows.n * widths_[below], Pass::Backward, l)) return false;
    }
    if (!want_din) return true;
    i -= consumed;
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

// The part of a fused GEMM epilogue that the micro-kernels and the direct path apply to a tile in
// registers, before it is stored: bias, ReLU and ReLU's derivative, the epilogues of the common
// ReLU networks. The arithmetic is the separate epilogue pass's, element by element (an add, a
// compare, a multiply by 1 or 0), so the two give the same bits; split_epilogue() decides what
// goes where and the rest still runs as a pass over the tile (gemm.cpp).
#pragma once
#include "../common.hpp"

namespace mlpcore::gemm {

// Pointers at the tile's (or block's) origin; relu_out and relu_deriv_z have C's leading
// dimension, bias is indexed by column.
template <typename T>
struct RegisterEpilogue {
  const T* bias = nullptr;          // c += bias[j]
  T* relu_out = nullptr;            // y = (!(c <= 0) ? c : 0; NaN kept), after the bias
  const T* relu_deriv_z = nullptr;  // c *= (z > 0 ? 1 : 0)

  bool any() const noexcept { return bias || relu_out || relu_deriv_z; }
  // The same epilogue for the block whose origin is (i, j) of this one.
  RegisterEpilogue at(index_t i, index_t j, index_t ld) const noexcept {
    RegisterEpilogue e;
    if (bias) e.bias = bias + j;
    if (relu_out) e.relu_out = relu_out + i * ld + j;
    if (relu_deriv_z) e.relu_deriv_z = relu_deriv_z + i * ld + j;
    return e;
  }
};

}  // namespace mlpcore::gemm

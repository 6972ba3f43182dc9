// Types shared by every kernel: index type, activation kinds and their parameters.
#pragma once
#include <cstdint>

namespace mlpcore {

using index_t = std::int64_t;

// Activation kinds; the integer values are part of the Python binding (see layers.py).
enum class Act : int {
  Identity = 0,
  ReLU = 1,
  LeakyReLU = 2,
  ELU = 3,
  SELU = 4,
  GELU = 5,       // exact, erf based (torch approximate="none")
  GELUTanh = 6,   // torch approximate="tanh"
  SiLU = 7,
  Sigmoid = 8,
  Tanh = 9,
  Softplus = 10,
  Softmax = 11,   // row-wise, along features: never fused into an element-wise epilogue
};

// Scalar parameters of the parametrised activations; unused fields are ignored.
struct ActParams {
  double negative_slope = 0.01;  // LeakyReLU
  double alpha = 1.0;            // ELU
  double beta = 1.0;             // Softplus
  double threshold = 20.0;       // Softplus
};

}  // namespace mlpcore

// Activation functions with the semantics of the same-named torch.nn modules.
//
// Element-wise kinds expose scalar forward / derivative functions (inline, so GEMM epilogues can
// apply them while C is written); Softmax is row-wise and only has the array form.
// Derivatives take both the pre-activation z and the output y = f(z) and use whichever is cheaper.
#pragma once
#include <algorithm>
#include <cmath>

#include "common.hpp"

namespace mlpcore {

// Every activation, one row each: X(enum name, element-wise). The list generates the enum, the
// Python enum mlpcore._core.Act (bindings/kinds.cpp) and the GEMM epilogue's dispatch; the two
// switches below carry no default, so a new row without its formulas does not compile
// (-Werror=switch). A new activation: a row here, its two formulas below, a class in layers.py.
#define MLPCORE_ACTIVATIONS(X) \
  X(Identity, true)            \
  X(ReLU, true)                \
  X(LeakyReLU, true)           \
  X(ELU, true)                 \
  X(SELU, true)                \
  X(GELU, true)      /* exact, erf based (torch approximate="none") */ \
  X(GELUTanh, true)  /* torch approximate="tanh" */                    \
  X(SiLU, true)                \
  X(Sigmoid, true)             \
  X(Tanh, true)                \
  X(Softplus, true)            \
  X(Softmax, false)  /* row-wise, along features: never fused into an element-wise epilogue */

enum class Act : int {
#define MLPCORE_ENUM_ROW(name, elementwise) name,
  MLPCORE_ACTIVATIONS(MLPCORE_ENUM_ROW)
#undef MLPCORE_ENUM_ROW
};

// Scalar parameters of the parametrised activations; unused fields are ignored.
struct ActParams {
  double negative_slope = 0.01;  // LeakyReLU
  double alpha = 1.0;            // ELU
  double beta = 1.0;             // Softplus
  double threshold = 20.0;       // Softplus
};

namespace act_detail {
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kInvSqrt2 = 0.70710678118654752440084436210485;
constexpr double kInvSqrt2Pi = 0.39894228040143267793994605993438;
constexpr double kSqrt2OverPi = 0.79788456080286535587989211986876;
constexpr double kGeluTanhCoef = 0.044715;

// Logistic function without overflow for large |z|.
template <typename T>
inline T sigmoid(T z) noexcept {
  if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
  const T e = std::exp(z);
  return e / (T(1) + e);
}
}  // namespace act_detail

inline bool is_elementwise(Act act) noexcept {
  switch (act) {
#define MLPCORE_ELEMENTWISE_ROW(name, elementwise) \
  case Act::name: return elementwise;
    MLPCORE_ACTIVATIONS(MLPCORE_ELEMENTWISE_ROW)
#undef MLPCORE_ELEMENTWISE_ROW
  }
  return false;
}

template <typename T>
inline T act_forward(Act act, T z, const ActParams& p) noexcept {
  using namespace act_detail;
  switch (act) {
    case Act::Identity: return z;
    case Act::ReLU: return !(z <= T(0)) ? z : T(0);  // NaN propagates, as torch.relu
    case Act::LeakyReLU: return z > T(0) ? z : T(p.negative_slope) * z;
    case Act::ELU: return z > T(0) ? z : T(p.alpha) * std::expm1(z);
    case Act::SELU: return T(kSeluScale) * (z > T(0) ? z : T(kSeluAlpha) * std::expm1(z));
    case Act::GELU: return T(0.5) * z * (T(1) + std::erf(z * T(kInvSqrt2)));
    case Act::GELUTanh: {
      const T inner = T(kSqrt2OverPi) * (z + T(kGeluTanhCoef) * z * z * z);
      return T(0.5) * z * (T(1) + std::tanh(inner));
    }
    case Act::SiLU: return z * sigmoid(z);
    case Act::Sigmoid: return sigmoid(z);
    case Act::Tanh: return std::tanh(z);
    case Act::Softplus: {
      const T bz = T(p.beta) * z;
      // torch reverts to the identity above the threshold for numerical stability
      return bz > T(p.threshold) ? z : std::log1p(std::exp(bz)) / T(p.beta);
    }
    case Act::Softmax: return z;  // row-wise: never reached through the scalar path
  }
  return z;
}

// dy/dz at one element, given z and y = f(z).
template <typename T>
inline T act_derivative(Act act, T z, T y, const ActParams& p) noexcept {
  using namespace act_detail;
  switch (act) {
    case Act::Identity: return T(1);
    case Act::ReLU: return z > T(0) ? T(1) : T(0);
    case Act::LeakyReLU: return z > T(0) ? T(1) : T(p.negative_slope);
    case Act::ELU: return z > T(0) ? T(1) : y + T(p.alpha);
    case Act::SELU: return z > T(0) ? T(kSeluScale) : y + T(kSeluScale * kSeluAlpha);
    case Act::GELU: {
      const T cdf = T(0.5) * (T(1) + std::erf(z * T(kInvSqrt2)));
      const T pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * z * z);
      return cdf + z * pdf;
    }
    case Act::GELUTanh: {
      const T z2 = z * z;
      const T t = std::tanh(T(kSqrt2OverPi) * (z + T(kGeluTanhCoef) * z2 * z));
      const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluTanhCoef) * z2);
      return T(0.5) * (T(1) + t) + T(0.5) * z * (T(1) - t * t) * dinner;
    }
    case Act::SiLU: {
      const T s = sigmoid(z);
      return s * (T(1) + z * (T(1) - s));
    }
    case Act::Sigmoid: return y * (T(1) - y);
    case Act::Tanh: return T(1) - y * y;
    case Act::Softplus: {
      const T bz = T(p.beta) * z;
      return bz > T(p.threshold) ? T(1) : sigmoid(bz);
    }
    case Act::Softmax: return T(1);  // row-wise: never reached through the scalar path
  }
  return T(1);
}

// y = f(z) over a (rows x cols) row-major block. Softmax normalises each row.
template <typename T>
void activation_forward(Act act, const ActParams& p, const T* z, T* y, index_t rows,
                        index_t cols) noexcept;

// dz = dy * f'(z) over a (rows x cols) block; for Softmax dz = y * (dy - sum(dy * y)) per row.
// dz may alias dy.
template <typename T>
void activation_backward(Act act, const ActParams& p, const T* dy, const T* z, const T* y, T* dz,
                         index_t rows, index_t cols) noexcept;

}  // namespace mlpcore

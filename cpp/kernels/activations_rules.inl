// The array forms of the activations, included once per ISA copy (activations.cpp: baseline;
// elementwise_copy.inl: AVX2, AVX-512; see isa_regions.hpp). Element-wise kinds apply the scalar
// formulas of activations.hpp; Softmax sums each row in column order, so every copy gives the
// same bits. Not a stand-alone header: no include guard on purpose.

template <typename T>
void forward(Act act, const ActParams& p, const T* z, T* y, index_t rows, index_t cols) noexcept {
  if (act == Act::Softmax) {
    for (index_t r = 0; r < rows; ++r) {
      const T* zr = z + r * cols;
      T* yr = y + r * cols;
      const T zmax = *std::max_element(zr, zr + cols);  // shift for overflow-free exp
      T sum = 0;
      for (index_t c = 0; c < cols; ++c) {
        yr[c] = std::exp(zr[c] - zmax);
        sum += yr[c];
      }
      const T inv = T(1) / sum;
      for (index_t c = 0; c < cols; ++c) yr[c] *= inv;
    }
    return;
  }
  const index_t n = rows * cols;
  for (index_t i = 0; i < n; ++i) y[i] = act_forward(act, z[i], p);
}

template <typename T>
void backward(Act act, const ActParams& p, const T* dy, const T* z, const T* y, T* dz,
              index_t rows, index_t cols) noexcept {
  if (act == Act::Softmax) {
    for (index_t r = 0; r < rows; ++r) {
      const T* dyr = dy + r * cols;
      const T* yr = y + r * cols;
      T* dzr = dz + r * cols;
      T dot = 0;
      for (index_t c = 0; c < cols; ++c) dot += dyr[c] * yr[c];
      for (index_t c = 0; c < cols; ++c) dzr[c] = yr[c] * (dyr[c] - dot);
    }
    return;
  }
  const index_t n = rows * cols;
  for (index_t i = 0; i < n; ++i) dz[i] = dy[i] * act_derivative(act, z[i], y[i], p);
}

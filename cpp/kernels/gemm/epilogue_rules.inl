// The fused epilogue on one C tile, included twice by gemm.cpp (baseline and AVX-512 copies,
// see ../isa_regions.hpp). Not a stand-alone header: no include guard on purpose.

template <typename T, Act A>
void forward_rows(const Epilogue<T>& ep, index_t i0, index_t j0, int m, int n, T* C,
                  index_t ldc) noexcept {
  for (int i = 0; i < m; ++i) {
    const T* c = C + (i0 + i) * ldc + j0;
    T* y = ep.act_out + (i0 + i) * ldc + j0;
    for (int j = 0; j < n; ++j) y[j] = act_forward(A, c[j], ep.params);
  }
}

template <typename T, Act A>
void deriv_rows(const Epilogue<T>& ep, index_t i0, index_t j0, int m, int n, T* C,
                index_t ldc) noexcept {
  for (int i = 0; i < m; ++i) {
    T* c = C + (i0 + i) * ldc + j0;
    const T* z = ep.deriv_z + (i0 + i) * ldc + j0;
    const T* y = ep.deriv_y ? ep.deriv_y + (i0 + i) * ldc + j0 : nullptr;
    for (int j = 0; j < n; ++j) {
      const T yj = y ? y[j] : act_forward(A, z[j], ep.params);
      c[j] *= act_derivative(A, z[j], yj, ep.params);
    }
  }
}

// Calls F<T, act> with the activation kind as a compile-time constant (so the per-element switch
// folds away).
template <typename T, template <typename, Act> class F>
void with_act(Act act, const Epilogue<T>& ep, index_t i0, index_t j0, int m, int n, T* C,
              index_t ldc) noexcept {
  switch (act) {
#define MLPCORE_ACT_CASE(K) \
  case Act::K: F<T, Act::K>::run(ep, i0, j0, m, n, C, ldc); break;
    MLPCORE_ACT_CASE(Identity)
    MLPCORE_ACT_CASE(ReLU)
    MLPCORE_ACT_CASE(LeakyReLU)
    MLPCORE_ACT_CASE(ELU)
    MLPCORE_ACT_CASE(SELU)
    MLPCORE_ACT_CASE(GELU)
    MLPCORE_ACT_CASE(GELUTanh)
    MLPCORE_ACT_CASE(SiLU)
    MLPCORE_ACT_CASE(Sigmoid)
    MLPCORE_ACT_CASE(Tanh)
    MLPCORE_ACT_CASE(Softplus)
    MLPCORE_ACT_CASE(Softmax)
#undef MLPCORE_ACT_CASE
  }
}

template <typename T, Act A>
struct ForwardRows {
  static void run(const Epilogue<T>& ep, index_t i0, index_t j0, int m, int n, T* C,
                  index_t ldc) noexcept {
    forward_rows<T, A>(ep, i0, j0, m, n, C, ldc);
  }
};
template <typename T, Act A>
struct DerivRows {
  static void run(const Epilogue<T>& ep, index_t i0, index_t j0, int m, int n, T* C,
                  index_t ldc) noexcept {
    deriv_rows<T, A>(ep, i0, j0, m, n, C, ldc);
  }
};

// The epilogue on the m x n tile of C at (i0, j0), right after its last K block was written
// (the tile is still in L1). Same arithmetic as epilogue_reference.
template <typename T>
void epilogue_tile(const Epilogue<T>& ep, index_t i0, index_t j0, int m, int n, T* C,
                   index_t ldc) noexcept {
  if (ep.bias) {
    const T* bias = ep.bias + j0;
    for (int i = 0; i < m; ++i) {
      T* c = C + (i0 + i) * ldc + j0;
      for (int j = 0; j < n; ++j) c[j] += bias[j];
    }
  }
  if (ep.act_out) with_act<T, ForwardRows>(ep.act, ep, i0, j0, m, n, C, ldc);
  if (ep.deriv_z) with_act<T, DerivRows>(ep.deriv_act, ep, i0, j0, m, n, C, ldc);
}

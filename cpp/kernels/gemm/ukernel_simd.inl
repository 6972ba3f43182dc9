// Generic register-blocked micro-kernel body shared by the AVX2 and AVX-512 files. Included by a
// file compiled with the matching ISA flags, after it defined a vector-traits struct V with:
//   vec, mask, W (lanes), zero(), set1(x), load(p), maskz_load(mk, p), fmadd(a, b, c),
//   add(a, b), mul(a, b), relu(x) (!(x <= 0) ? x : 0: NaN kept), step(x) (x > 0 ? 1 : 0), store(p, v),
//   mask_store(p, mk, v), make_mask(lanes_valid), prefetch(p) (into L1)
// The tile is M_ rows x (NV * W) columns; C tile kept in M_ * NV registers.
// Not a stand-alone header: no include guard on purpose (each ISA file has its own V).

template <class V, int MR, int NV, int M_, bool FullN>
inline void ukernel_body(index_t kc, const typename V::scalar* a, const typename V::scalar* b,
                         index_t rsb, typename V::scalar* c, index_t ldc, int n,
                         bool accumulate, const RegisterEpilogue<typename V::scalar>* ep) noexcept {
  using vec = typename V::vec;
  typename V::mask mk[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mk[v] = V::make_mask(FullN ? V::W : n - v * V::W);
  // Start fetching the C tile now: it is read only after the K loop, and for large C it comes
  // from L3 or memory (a miss per row would stall the write-back).
#pragma GCC unroll 16
  for (int i = 0; i < M_; ++i) {
    V::prefetch(c + i * ldc);
    V::prefetch(c + i * ldc + NV * V::W - 1);
  }
  vec acc[M_][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M_; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

#pragma GCC unroll 2
  for (index_t p = 0; p < kc; ++p) {
    vec bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = FullN ? V::load(b + v * V::W) : V::maskz_load(mk[v], b + v * V::W);
#pragma GCC unroll 16
    for (int i = 0; i < M_; ++i) {
      const vec ai = V::set1(a[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(ai, bv[v], acc[i][v]);
    }
    a += MR;
    b += rsb;
  }

  using S = typename V::scalar;
  auto load_at = [&](const S* p, int v) { return FullN ? V::load(p) : V::maskz_load(mk[v], p); };
  auto store_at = [&](S* p, int v, vec x) {
    if (FullN) V::store(p, x);
    else V::mask_store(p, mk[v], x);
  };
  // the register epilogue, hoisted: null pointers when there is none
  const S* bias = ep ? ep->bias : nullptr;
  S* relu_out = ep ? ep->relu_out : nullptr;
  const S* relu_deriv_z = ep ? ep->relu_deriv_z : nullptr;
#pragma GCC unroll 16
  for (int i = 0; i < M_; ++i) {
    S* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      vec r = acc[i][v];
      if (accumulate) r = V::add(load_at(ci + v * V::W, v), r);
      if (bias) r = V::add(r, load_at(bias + v * V::W, v));
      if (relu_deriv_z) r = V::mul(r, V::step(load_at(relu_deriv_z + i * ldc + v * V::W, v)));
      store_at(ci + v * V::W, v, r);
      if (relu_out) store_at(relu_out + i * ldc + v * V::W, v, V::relu(r));
    }
  }
}

// Dispatch on the number of valid rows m (1..MR) and on full / partial width.
template <class V, int MR, int NV, int... Ms>
inline void ukernel_dispatch(std::integer_sequence<int, Ms...>, index_t kc,
                             const typename V::scalar* a, const typename V::scalar* b, index_t rsb,
                             typename V::scalar* c, index_t ldc, int m, int n,
                             bool accumulate,
                             const RegisterEpilogue<typename V::scalar>* ep) noexcept {
  using S = typename V::scalar;
  using Fn = void (*)(index_t, const S*, const S*, index_t, S*, index_t, int, bool,
                      const RegisterEpilogue<S>*) noexcept;
  static constexpr Fn full[] = {&ukernel_body<V, MR, NV, Ms + 1, true>...};
  static constexpr Fn part[] = {&ukernel_body<V, MR, NV, Ms + 1, false>...};
  // tiles at most one vector wide (a 10-class output layer): one vector of FMAs per row, not NV
  static constexpr Fn full1[] = {&ukernel_body<V, MR, 1, Ms + 1, true>...};
  static constexpr Fn part1[] = {&ukernel_body<V, MR, 1, Ms + 1, false>...};
  if (m == MR && n == NV * V::W) {
    ukernel_body<V, MR, NV, MR, true>(kc, a, b, rsb, c, ldc, n, accumulate, ep);
  } else if (NV > 1 && n <= V::W) {
    (n == V::W ? full1 : part1)[m - 1](kc, a, b, rsb, c, ldc, n, accumulate, ep);
  } else {
    (n == NV * V::W ? full : part)[m - 1](kc, a, b, rsb, c, ldc, n, accumulate, ep);
  }
}

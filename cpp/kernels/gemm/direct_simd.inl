// Direct products for small shapes (the layers of small networks and small batches): no packing
// of op(A), no threads. Each row tile of C is held in registers (up to 64 float / 32 double
// columns with AVX-512, 16 / 8 with AVX2) while K broadcasts of op(A) meet rows of op(B), read
// in place (op(B) = B^T is first copied: into the packed path's K x NR micro-panels by its
// packer, or into K x N rows when K is very small). Every element is summed from zero in
// increasing p with one FMA per step and then stored or added to C: the same arithmetic as the
// micro-kernel of the same ISA on a single K block, so the choice between the two paths never
// changes a result. gemm.cpp takes this path through KernelSet::direct (ukernel.hpp).
//
// This body is included inside the anonymous namespace of ukernel_avx512.cpp and
// ukernel_avx2.cpp, after ukernel_simd.inl, with the same vector-traits struct S (see
// ukernel_simd.inl for its members). Row tiles are kRows rows x up to kMaxVectors vectors of
// columns (template parameters of direct(): kRows * kMaxVectors accumulators, leaving registers
// for the loaded vectors).
// Not a stand-alone header: no include guard on purpose (each ISA file has its own S).

template <class S>
using ScalarOf = typename S::scalar;

// A per-thread scratch buffer that only grows (no allocation once it is large enough), aligned
// to a cache line.
struct Scratch {
  static constexpr std::align_val_t kAlign{64};
  void* data = nullptr;
  std::size_t bytes = 0;
  void* get(std::size_t want) noexcept {
    if (want <= bytes) return data;
    ::operator delete(data, kAlign);
    data = ::operator new(want, kAlign, std::nothrow);
    bytes = data ? want : 0;
    return data;
  }
  ~Scratch() { ::operator delete(data, kAlign); }
};
thread_local Scratch copied_b;  // op(B) = B^T, copied

// Rows i0 .. i0 + RB - 1 of C[:, 0 : w] for NV vectors of columns (w <= NV * W; Full: w ==
// NV * W, plain loads and stores); row p of vector v of op(B) at col[v] + p * rs. Each loaded
// vector of B serves RB rows (RB * NV accumulators in registers).
template <class S, int RB, int NV, bool Full>
void row_tile(bool trans_a, index_t i0, index_t K, const ScalarOf<S>* A, index_t lda,
              const ScalarOf<S>* const* col, index_t rs, ScalarOf<S>* C, index_t ldc,
              const typename S::mask* mask, bool accumulate,
              const RegisterEpilogue<ScalarOf<S>>& ep) noexcept {
  using T = ScalarOf<S>;
  using V = typename S::vec;
  auto load = [&](const T* p, int v) { return Full ? S::load(p) : S::maskz_load(mask[v], p); };
  auto store = [&](T* p, V x, int v) {
    if (Full) S::store(p, x);
    else S::mask_store(p, mask[v], x);
  };
  // Every loop over r and v is unrolled, so the accumulators live in registers (left to GCC,
  // they were kept on the stack: a store per FMA).
  V acc[RB][NV];
#pragma GCC unroll 16
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = S::zero();
  const T* b_col[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) b_col[v] = col[v];
  // The K loop, compiled once per form of op(A). Given transposed, the tile's RB elements of
  // op(A) at step p are adjacent, at one pointer plus constant offsets; a pointer per row there
  // (as the other form needs) ran out of general registers at 6 rows and spilled in the loop
  // (100 x 100 x 100 TN 0.80x NumPy). The arithmetic is the same in both.
  auto k_loop = [&](auto transposed) {  // (one call site per form: inlined)
    constexpr bool kTransA = decltype(transposed)::value;
    const T* a_row[RB];
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r) a_row[r] = A + (i0 + r) * lda;
    const T* a_col = A + i0;  // (transposed) row p of A^T holds the tile's elements of step p
    for (index_t p = 0; p < K; ++p) {
      V bv[NV];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) bv[v] = load(b_col[v] + p * rs, v);
#pragma GCC unroll 16
      for (int r = 0; r < RB; ++r) {
        const V a = S::set1(kTransA ? a_col[r] : a_row[r][p]);
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[r][v] = S::fmadd(a, bv[v], acc[r][v]);
      }
      if (kTransA) a_col += lda;
    }
  };
  if (trans_a)
    k_loop(std::true_type{});
  else
    k_loop(std::false_type{});
  // the epilogue's pointers in locals, as the micro-kernel has them: read through ep, they
  // were reloaded after every store (a vector store may alias anything)
  const T* bias = ep.bias;
  const T* relu_deriv_z = ep.relu_deriv_z;
  T* relu_out = ep.relu_out;
  // Each step of the write-back over the whole tile, one test each: tested per element, the
  // tests were half of a tile's time at small K (100 x 100 x 4, AVX2). Every element still
  // gets the same operations in the same order.
  auto each = [&](auto op) {
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) op(r, v, (i0 + r) * ldc + v * S::W);
  };
  if (accumulate)
    each([&](int r, int v, index_t at) { acc[r][v] = S::add(load(C + at, v), acc[r][v]); });
  if (bias)
    each([&](int r, int v, index_t) { acc[r][v] = S::add(acc[r][v], load(bias + v * S::W, v)); });
  if (relu_deriv_z)
    each([&](int r, int v, index_t at) {
      acc[r][v] = S::mul(acc[r][v], S::step(load(relu_deriv_z + at, v)));
    });
  each([&](int r, int v, index_t at) { store(C + at, acc[r][v], v); });
  if (relu_out)
    each([&](int r, int v, index_t at) { store(relu_out + at, S::relu(acc[r][v]), v); });
}

// The last `rows` (1 .. R) rows of a column block, from row i0, as one tile of that height (more
// independent FMA chains than one row at a time, and each loaded vector of B serves them all).
template <class S, int R, int NV, bool Full>
void last_rows(int rows, bool trans_a, index_t i0, index_t K, const ScalarOf<S>* A, index_t lda,
               const ScalarOf<S>* const* col, index_t rs, ScalarOf<S>* C, index_t ldc,
               const typename S::mask* mask, bool accumulate,
               const RegisterEpilogue<ScalarOf<S>>& ep) noexcept {
  if constexpr (R > 1) {
    if (rows < R) {
      last_rows<S, R - 1, NV, Full>(rows, trans_a, i0, K, A, lda, col, rs, C, ldc, mask,
                                    accumulate, ep);
      return;
    }
  }
  row_tile<S, R, NV, Full>(trans_a, i0, K, A, lda, col, rs, C, ldc, mask, accumulate, ep);
}

// C[:, 0 : w] (w <= NV * W): row tiles of Rows rows, then one tile of the remaining rows.
template <class S, int Rows, int NV, bool Full>
void rows_block(bool trans_a, index_t M, index_t w, index_t K, const ScalarOf<S>* A,
                index_t lda, const ScalarOf<S>* const* col, index_t rs, ScalarOf<S>* C,
                index_t ldc, bool accumulate, const RegisterEpilogue<ScalarOf<S>>& ep) noexcept {
  typename S::mask mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = S::make_mask(int(w) - v * S::W);
  // A last tile of r <= Rows / 2 rows has too few FMA chains to cover the FMA latency (32 rows
  // in tiles of 6 left 2 rows: 4 chains on AVX2, which needs 8): the last full tile and those
  // rows go as two tiles of about (Rows + r) / 2 rows instead. A tile of any height sums each
  // element the same way, so the bits do not change.
  const index_t r = M % Rows;
  const bool split_tail = Rows >= 3 && M > Rows && r != 0 && r <= Rows / 2;  // (halves < Rows)
  const index_t full_end = split_tail ? M - r - Rows : M - r;
  index_t i = 0;
  for (; i < full_end; i += Rows)
    row_tile<S, Rows, NV, Full>(trans_a, i, K, A, lda, col, rs, C, ldc, mask, accumulate, ep);
  if (split_tail) {
    const int first = int(Rows + r + 1) / 2;
    last_rows<S, Rows - 1, NV, Full>(first, trans_a, i, K, A, lda, col, rs, C, ldc, mask,
                                     accumulate, ep);
    i += first;
  }
  if (i < M)
    last_rows<S, Rows - 1, NV, Full>(int(M - i), trans_a, i, K, A, lda, col, rs, C, ldc, mask,
                                     accumulate, ep);
}

// rows_block for nv (1 .. NV) vectors of columns, w wide.
template <class S, int Rows, int NV>
void column_block(int nv, bool trans_a, index_t M, index_t w, index_t K, const ScalarOf<S>* A,
                  index_t lda, const ScalarOf<S>* const* col, index_t rs, ScalarOf<S>* C,
                  index_t ldc, bool accumulate,
                  const RegisterEpilogue<ScalarOf<S>>& ep) noexcept {
  if constexpr (NV > 1) {
    // A last block of one vector (100 columns in blocks of 16: 4 left) in tiles of Rows rows
    // has Rows FMA chains, too few to cover the FMA latency on AVX2 (6 of the 8 needed): it
    // takes tiles of twice the rows instead, as a product of one vector does (direct()).
    if (nv == 1) {
      column_block<S, 2 * Rows, 1>(nv, trans_a, M, w, K, A, lda, col, rs, C, ldc, accumulate,
                                   ep);
      return;
    }
    if (nv < NV) {
      column_block<S, Rows, NV - 1>(nv, trans_a, M, w, K, A, lda, col, rs, C, ldc, accumulate,
                                    ep);
      return;
    }
  }
  if (w == NV * S::W)
    rows_block<S, Rows, NV, true>(trans_a, M, w, K, A, lda, col, rs, C, ldc, accumulate, ep);
  else
    rows_block<S, Rows, NV, false>(trans_a, M, w, K, A, lda, col, rs, C, ldc, accumulate, ep);
}

// C in column blocks of NV vectors, each by row tiles of Rows rows. op(B) is read from B (row
// stride rs) or, if set, from the packed micro-panels `panels` (NR = nr columns each).
template <class S, int NV, int Rows>
void column_blocks(bool trans_a, index_t M, index_t N, index_t K, const ScalarOf<S>* A,
                   index_t lda, const ScalarOf<S>* B, const ScalarOf<S>* panels, index_t rs,
                   index_t nr, ScalarOf<S>* C, index_t ldc, bool accumulate,
                   const RegisterEpilogue<ScalarOf<S>>& ep) noexcept {
  using T = ScalarOf<S>;
  constexpr index_t chunk = NV * S::W;
  for (index_t j0 = 0; j0 < N; j0 += chunk) {
    const index_t w = N - j0 < chunk ? N - j0 : chunk;
    const int nv = int((w + S::W - 1) / S::W);
    const T* col[NV];  // where each vector of columns starts (unused ones repeat the first)
    for (int v = 0; v < NV; ++v) {
      const index_t j = j0 + (v < nv ? v : 0) * S::W;
      col[v] = panels ? panels + j / nr * nr * K + j % nr : B + j;
    }
    const RegisterEpilogue<T> e = ep.at(0, j0, ldc);  // shifted to the column block
    column_block<S, Rows, NV>(nv, trans_a, M, w, K, A, lda, col, rs, C + j0, ldc, accumulate,
                              e);
  }
}

// B^T (N x K, row stride ldb) as the K x N rows the row tiles read: from K = W (one vector) on,
// into the packed path's K x NR micro-panels by its packer (which transposes blocks; a scalar
// transpose cost more than the product itself at 32 x 32 x 32; *panels set, *rs = nr); for
// smaller K, where those blocks would be mostly padding, into plain K x N rows (*rows set,
// *rs = N). False if the scratch buffer could not be allocated.
template <class S>
bool copy_transposed(Scratch& scratch, const ScalarOf<S>* B, index_t ldb, index_t K, index_t N,
                     PackB<ScalarOf<S>> pack_b, index_t nr, const ScalarOf<S>** panels,
                     const ScalarOf<S>** rows, index_t* rs) noexcept {
  using T = ScalarOf<S>;
  const bool pack = K >= S::W;
  const index_t width = pack ? (N + nr - 1) / nr * nr : N;
  T* buf = static_cast<T*>(scratch.get(std::size_t(width * K) * sizeof(T)));
  if (!buf) return false;
  if (pack) {
    pack_b(true, B, ldb, 0, 0, K, N, buf);
    *panels = buf;
    *rs = nr;
  } else {
    for (index_t j = 0; j < N; ++j)
      for (index_t p = 0; p < K; ++p) buf[p * N + j] = B[j * ldb + p];
    *rows = buf;
    *rs = N;
  }
  return true;
}

thread_local Scratch transposed_c;  // C^T of a narrow product, one row block at a time

// Rows per block of a narrow product: C^T's block (N x 256) stays within L1.
constexpr index_t kNarrowRows = 256;

// Whether a product with A given transposed (K x M: a weight gradient X^T dZ) is computed
// transposed (direct_narrow): C with fewer columns than a vector's lanes (a classifier's or
// regressor's output layer), or with one full vector and at most half of another, up to 4
// columns more (10 columns with AVX2's 8 float lanes: the row tiles' lanes 62% used; exactly
// one vector fills them all, and went 5% slower transposed in 2-16-16-2 training). 100 x N x
// 100, 1 thread, us: AVX2 float32 N = 10 3.7-4.2 -> 3.0-3.2, N = 12 3.9-4.2 -> 3.5; AVX-512
// float64 N = 10 5.7 -> 4.3, float32 N = 17 5.3 -> 4.6; beyond, the write-back's cost per
// column took over (AVX-512 float32 N = 24: 5.1-5.3 -> 5.9-6.5).
template <class S>
constexpr bool computed_transposed(index_t M, index_t N) noexcept {
  constexpr index_t kExtra = S::W / 2 < 4 ? S::W / 2 : 4;
  return M >= S::W && N != S::W && N <= S::W + kExtra;
}

// A narrow C (computed_transposed) fills few of the lanes of its last vector, and a row tile of
// it has too few FMA chains. With A given transposed, C is computed transposed instead, C^T =
// op(B)^T A, by the same row tiles reading A's rows in place: C's rows become the lanes, its
// columns the broadcast rows. Every element is still summed from zero in increasing p with one
// FMA per step (a * b and b * a are the same number), and C's elements then get the
// accumulation and the epilogue with the row tiles' operations, as scalars, so the result has
// the bits of the direct path. (For an A not given transposed, copying it to A^T cost 2.5 times
// the product at 200 x 100 x 4.)
template <class S, int kMaxVectors, int kRows>
bool direct_narrow(bool trans_b, index_t M, index_t N, index_t K, const ScalarOf<S>* A,
                   index_t lda, const ScalarOf<S>* B, index_t ldb, ScalarOf<S>* C, index_t ldc,
                   bool accumulate, const RegisterEpilogue<ScalarOf<S>>& ep,
                   index_t nr) noexcept {
  using T = ScalarOf<S>;
  const index_t block = M < kNarrowRows ? M : kNarrowRows;
  T* ct = static_cast<T*>(transposed_c.get(std::size_t(N * block) * sizeof(T)));
  if (!ct) return false;
  const RegisterEpilogue<T> none;
  const T* bias = ep.bias;  // (in locals: through ep, reloaded after every store to C)
  const T* relu_deriv_z = ep.relu_deriv_z;
  T* relu_out = ep.relu_out;
  for (index_t i0 = 0; i0 < M; i0 += block) {
    const index_t m = M - i0 < block ? M - i0 : block;
    // C^T (N x m) = op(B)^T (N x K: element (j, p) is op(B)'s (p, j)) times A's columns
    // i0 .. i0 + m - 1 (K rows of stride lda)
    if (N == 1)
      column_blocks<S, 2 * kMaxVectors, 1>(!trans_b, N, m, K, B, ldb, A + i0, nullptr, lda, nr,
                                           ct, m, false, none);
    else
      column_blocks<S, kMaxVectors, kRows>(!trans_b, N, m, K, B, ldb, A + i0, nullptr, lda, nr,
                                           ct, m, false, none);
    // C's rows i0 .. i0 + m - 1 from C^T, element by element, then each step of the row
    // tiles' write-back as a pass of its own (as scalars: N values gathered into a vector
    // stalled on store forwarding, 0.7 us of a 1.2 us write-back at 100 x 10, AVX2; a test
    // per element cost 10-20% at 16 x 2). Every element gets the same operations in the same
    // order.
    T* c = C + i0 * ldc;
    auto each = [&](auto op) {
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < N; ++j) op(i * ldc + j, j);
    };
    if (accumulate)
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < N; ++j) c[i * ldc + j] = c[i * ldc + j] + ct[j * m + i];
    else
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < N; ++j) c[i * ldc + j] = ct[j * m + i];
    if (bias) each([&](index_t at, index_t j) { c[at] = c[at] + bias[j]; });
    if (relu_deriv_z) {
      const T* z = relu_deriv_z + i0 * ldc;
      each([&](index_t at, index_t) { c[at] = c[at] * (z[at] > T(0) ? T(1) : T(0)); });
    }
    if (relu_out) {
      T* y = relu_out + i0 * ldc;
      each([&](index_t at, index_t) { y[at] = !(c[at] <= T(0)) ? c[at] : T(0); });
    }
  }
  return true;
}

thread_local Scratch narrow_bt;  // op(B)^T of a narrow product, zero-padded (narrow_rows)

// Rows i0 .. i0 + R - 1 of a narrow product (narrow_rows): lane j of sums[r] = row i0 + r of
// A dotted with row j of bt (4 rows of stride kp: K rounded up to whole vectors, zero-padded).
// Each dot product runs in the W lanes of one vector, lane l taking p = l, l + W, l + 2W, ...
// with one FMA per step; the lanes are then added in S::sum4's fixed tree.
template <class S, int R>
void narrow_tile(index_t i0, index_t K, const ScalarOf<S>* A, index_t lda,
                 const ScalarOf<S>* bt, index_t kp, typename S::vec* sums) noexcept {
  using T = ScalarOf<S>;
  using V = typename S::vec;
  V acc[R][4];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[r][j] = S::zero();
  const T* a_row[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) a_row[r] = A + (i0 + r) * lda;
  auto step = [&](index_t p, auto load_a) {
    V b[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) b[j] = S::load(bt + j * kp + p);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V a = load_a(a_row[r] + p);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[r][j] = S::fmadd(a, b[j], acc[r][j]);
    }
  };
  const index_t full = K / S::W * S::W;
  for (index_t p = 0; p < full; p += S::W) step(p, [](const T* x) { return S::load(x); });
  if (full < K) {  // A's elements beyond K read as 0 (and B^T is 0 there)
    const typename S::mask m = S::make_mask(int(K - full));
    step(full, [&](const T* x) { return S::maskz_load(m, x); });
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) sums[r] = S::sum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
}

// narrow_tile's sums for one row, element by element, without a copy of B^T (where the scratch
// buffer could not be allocated): the same lanes, FMA chains and tree, so the same bits.
template <class S>
void narrow_row_unbuffered(bool trans_b, index_t i, index_t N, index_t K,
                           const ScalarOf<S>* A, index_t lda, const ScalarOf<S>* B,
                           index_t ldb, ScalarOf<S>* sums) noexcept {
  using T = ScalarOf<S>;
  for (index_t j = 0; j < N; ++j) {
    T lanes[S::W] = {};
    for (index_t p = 0; p < K; ++p) {
      const T b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
      lanes[p % S::W] = std::fma(A[i * lda + p], b, lanes[p % S::W]);
    }
    for (int width = S::W / 2; width >= 1; width /= 2)
      for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    sums[j] = lanes[0];
  }
}

// A narrow product C (+)= A op(B), A not transposed and N <= cfg::kNarrowMaxColumns (< W):
// an output layer's forward pass, whose few columns would fill N of a row tile's lanes. Each
// element is instead a dot product vectorised over K (narrow_tile), for C's rows m0 .. m1 - 1
// (a row's bits do not depend on the range: threads take row blocks). This sums in another
// order than the row tiles, so gemm.cpp takes it for every product of this form whatever its
// other sizes (cfg::narrow_product).
template <class S>
void narrow_rows(bool trans_b, index_t m0, index_t m1, index_t N, index_t K,
                 const ScalarOf<S>* A, index_t lda, const ScalarOf<S>* B, index_t ldb,
                 ScalarOf<S>* C, index_t ldc, bool accumulate,
                 const RegisterEpilogue<ScalarOf<S>>& ep) noexcept {
  using T = ScalarOf<S>;
  using V = typename S::vec;
  // Rows per tile: 4 x 4 accumulators with AVX-512's 32 vector registers, 2 x 4 with AVX2's 16
  constexpr int R = S::W * int(sizeof(T)) == 64 ? 4 : 2;
  const index_t kp = (K + S::W - 1) / S::W * S::W;
  T* bt = static_cast<T*>(narrow_bt.get(std::size_t(4 * kp) * sizeof(T)));
  if (bt) {
    std::memset(bt, 0, std::size_t(4 * kp) * sizeof(T));
    for (index_t j = 0; j < N; ++j) {
      if (trans_b) {
        std::memcpy(bt + j * kp, B + j * ldb, std::size_t(K) * sizeof(T));
      } else {
        for (index_t p = 0; p < K; ++p) bt[j * kp + p] = B[p * ldb + j];
      }
    }
  }
  const typename S::mask mask = S::make_mask(int(N));
  // C's row from its sums (lanes 0 .. N - 1), with the row tiles' vector operations for the
  // epilogue
  auto write_row = [&](index_t i, V out) {
    const index_t at = i * ldc;
    if (accumulate) out = S::add(S::maskz_load(mask, C + at), out);
    if (ep.bias) out = S::add(out, S::maskz_load(mask, ep.bias));
    if (ep.relu_deriv_z) out = S::mul(out, S::step(S::maskz_load(mask, ep.relu_deriv_z + at)));
    S::mask_store(C + at, mask, out);
    if (ep.relu_out) S::mask_store(ep.relu_out + at, mask, S::relu(out));
  };
  V sums[R];
  index_t i = m0;
  if (bt) {
    for (; i + R <= m1; i += R) {
      narrow_tile<S, R>(i, K, A, lda, bt, kp, sums);
      for (int r = 0; r < R; ++r) write_row(i + r, sums[r]);
    }
    for (; i < m1; ++i) {
      narrow_tile<S, 1>(i, K, A, lda, bt, kp, sums);
      write_row(i, sums[0]);
    }
    return;
  }
  alignas(64) T row[S::W] = {};
  for (; i < m1; ++i) {
    narrow_row_unbuffered<S>(trans_b, i, N, K, A, lda, B, ldb, row);
    write_row(i, S::maskz_load(mask, row));
  }
}

constexpr index_t kCopyBMinRows = 16;  // fewer rows of C: B is read too few times to copy it

// The whole product. pack_b / nr: the packed path's B packer and its micro-panel width.
template <class S, int kMaxVectors, int kRows>
bool direct(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const ScalarOf<S>* A,
            index_t lda, const ScalarOf<S>* B, index_t ldb, ScalarOf<S>* C, index_t ldc,
            bool accumulate, const RegisterEpilogue<ScalarOf<S>>& ep,
            PackB<ScalarOf<S>> pack_b, index_t nr) noexcept {
  using T = ScalarOf<S>;
  if (nr % S::W != 0) return false;  // a vector of columns must not straddle two micro-panels
  if (trans_a && computed_transposed<S>(M, N))
    return direct_narrow<S, kMaxVectors, kRows>(trans_b, M, N, K, A, lda, B, ldb, C, ldc,
                                                accumulate, ep, nr);
  if (cfg::narrow_product(trans_a, N, S::W)) {
    narrow_rows<S>(trans_b, 0, M, N, K, A, lda, B, ldb, C, ldc, accumulate, ep);
    return true;
  }
  // op(B) = B^T is copied once (out of memory: the caller takes the packed path)
  const T* panels = nullptr;
  index_t rs = ldb;
  if (trans_b && !copy_transposed<S>(copied_b, B, ldb, K, N, pack_b, nr, &panels, &B, &rs))
    return false;
  // B read in place with a row stride of a multiple of 512 bytes (128 float columns, 256, ...)
  // has its rows in a few L1 sets, which a column block's rows overflow: it is first copied to
  // rows one cache line longer (100 x 100 x 128 float32 on AVX-512: 23 -> 18 us, copy
  // included; the same copy to fix rows that split vectors across lines, 100 columns, cost
  // more than it saved).
  const index_t line = 64 / index_t(sizeof(T));
  if (!trans_b && M >= kCopyBMinRows && (ldb * index_t(sizeof(T))) % 512 == 0) {
    const index_t ld = (N + line - 1) / line * line + line;
    T* buf = static_cast<T*>(copied_b.get(std::size_t(ld * K) * sizeof(T)));
    if (buf) {
      for (index_t p = 0; p < K; ++p) std::memcpy(buf + p * ld, B + p * ldb, sizeof(T) * N);
      B = buf;
      rs = ld;
    }
  }
  // One row (a single sample) has one FMA chain per vector of columns: twice as many vectors
  // keep both FMA units busy through the FMA latency (same arithmetic per element).
  if (M == 1)
    column_blocks<S, 2 * kMaxVectors, 1>(trans_a, M, N, K, A, lda, B, panels, rs, nr, C, ldc,
                                         accumulate, ep);
  else if (N <= S::W)  // one vector of columns: twice the rows for as many FMA chains
    column_blocks<S, 1, 2 * kRows>(trans_a, M, N, K, A, lda, B, panels, rs, nr, C, ldc,
                                   accumulate, ep);
  else
    column_blocks<S, kMaxVectors, kRows>(trans_a, M, N, K, A, lda, B, panels, rs, nr, C, ldc,
                                         accumulate, ep);
  return true;
}

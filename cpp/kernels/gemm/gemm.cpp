// Packed GEMM driver (GotoBLAS / BLIS structure) behind gemm() and gemm_fused().
//
// Layers: packing (pack.hpp, or pack_avx512.cpp with the AVX-512 kernels) -> macro-kernel
// (below) -> register-blocked micro-kernels (ukernel_*.cpp, chosen at run time by ISA). Blocking
// constants live in config.hpp.
//
// Fused epilogues: bias, ReLU and ReLU's derivative are applied by the micro-kernel to the tile in
// registers on its last K block (register_epilogue.hpp); other activations run as a pass over
// the tile right after it was stored, while it is still in L1.
//
// Threads split the M and N ranges of C into a grid of rectangles (aligned to MR / NR), chosen by
// the size of the largest one and the packing it needs (choose_grid). Every tile of C is summed
// over the same KC blocks, in the same order, whichever thread computes it, so results do not
// depend on the thread count. From cfg::kSharedPackMinWork multiply-adds, on a 1 x nt grid the
// threads pack each A block together and take column chunks from a shared counter, and on an
// nt x 1 grid they pack each B block together (gemm_region_shared_a / _b). In BLIS's order each
// thread packs for its own rectangle, and one done with it takes over units of another's
// (gemm_region_b_outer). Packing buffers are thread_local, allocated once and grown when needed.
//
// Small-matrix paths (chosen by shape only): up to cfg::kDirectMaxWork multiply-adds with the
// AVX-512 or AVX2 kernels, the direct path of direct_simd.inl (no packing of op(A), no threads).
// Below cfg::kParallelMinWork multiply-adds everything runs on the calling thread, and when op(B)
// has contiguous rows (NN, TN), M <= cfg::kSmallM (small batches; cfg::kSmallMBlisOrder in
// BLIS's order) and B fits in half of L2 (or M < 8), B is not packed at all: the micro-kernel
// reads it in place with row stride ldb (masked loads at the right edge) and only the small A
// operand is packed. All paths sum like the micro-kernel with the same KC blocking,
// so they give identical results.
#include "gemm.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <thread>

#include "../activations.hpp"
#include "../denormals.hpp"
#include "ukernel.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mlpcore::gemm {

namespace {

// ---------------------------------------------------------------- per-thread packing buffers
struct PackBuffers {
  void* a = nullptr;
  std::size_t a_bytes = 0;
  void* b = nullptr;
  std::size_t b_bytes = 0;
  ~PackBuffers() {
    std::free(a);
    std::free(b);
  }
};

thread_local PackBuffers tl_pack;

// Grows (never shrinks) a 64-byte aligned buffer; nullptr if the allocation failed.
void* grow(void*& p, std::size_t& cap, std::size_t bytes) noexcept {
  bytes = (bytes + 63) / 64 * 64;
  if (bytes > cap) {
    std::free(p);
    p = std::aligned_alloc(64, bytes);
    cap = p ? bytes : 0;
  }
  return p;
}

index_t round_up(index_t x, index_t m) noexcept { return (x + m - 1) / m * m; }

// The size of each of the fewest equal blocks (a multiple of `unit`, at most `cap` rounded up to
// `unit`) that cover `extent`.
index_t balanced_block(index_t extent, index_t cap, index_t unit) noexcept {
  const index_t blocks = (extent + cap - 1) / cap;
  return round_up((extent + blocks - 1) / blocks, unit);
}

// The K block of a product with K summed terms: K in equal blocks of at most KC (2048 as
// 6 x 344, not 5 x 384 + 128: a short last block spends more of its time loading and storing
// C). A function of K and the blocking alone, like KC; gemm_run and prepack_b must agree on it.
index_t k_block(index_t K, const Blocking& blk) noexcept { return balanced_block(K, blk.kc, 4); }

// ---------------------------------------------------------------- epilogue on one C tile
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
#define MLPCORE_ACT_CASE(K, elementwise) \
  case Act::K: F<T, Act::K>::run(ep, i0, j0, m, n, C, ldc); break;
    MLPCORE_ACTIVATIONS(MLPCORE_ACT_CASE)
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

template <typename T>
bool has_epilogue(const Epilogue<T>* ep) noexcept {
  return ep && (ep->bias || ep->act_out || ep->deriv_z);
}

// Splits an epilogue into the part the micro-kernels apply in registers (bias with or without
// ReLU forward; or ReLU's derivative alone) and the rest, a pass over each tile afterwards. The
// rest never has to see C before the register part (the order of epilogue_tile is kept).
template <typename T>
void split_epilogue(const Epilogue<T>* ep, RegisterEpilogue<T>* in_registers,
                    Epilogue<T>* rest) noexcept {
  *in_registers = RegisterEpilogue<T>();
  *rest = ep ? *ep : Epilogue<T>();
  if (!rest->deriv_z) {
    in_registers->bias = rest->bias;
    rest->bias = nullptr;
    if (rest->act_out && rest->act == Act::ReLU) {
      in_registers->relu_out = rest->act_out;
      rest->act_out = nullptr;
    }
  } else if (!rest->bias && !rest->act_out && rest->deriv_act == Act::ReLU) {
    in_registers->relu_deriv_z = rest->deriv_z;
    rest->deriv_z = nullptr;
  }
}

// ---------------------------------------------------------------- problem description
template <typename T>
struct Problem {
  bool trans_a, trans_b;
  index_t M, N, K;
  const T* A;
  index_t lda;
  const T* B;
  index_t ldb;
  T* C;
  index_t ldc;
  bool accumulate;
  const Epilogue<T>* ep;    // nullptr: none (the whole epilogue, for the reference fallback)
  RegisterEpilogue<T> reg;  // the part of ep applied by the micro-kernels (at C's origin)
  Epilogue<T> rest;         // the part applied by epilogue_tile afterwards
  bool b_in_place;          // op(B) rows contiguous and M small: the micro-kernel reads B directly
  const T* b_pre = nullptr;  // op(B) packed beforehand (prepack_b): K block at pc starts at
  index_t b_pre_ld = 0;      // b_pre + pc * b_pre_ld, its column panel jc at + jc * kc
  bool needs_b_buffer() const noexcept { return !b_in_place && !b_pre; }
};

// ---------------------------------------------------------------- macro-kernel
// C block (mc x nc at (ic, jc)) (+)= packed A block (mc x kc) * B block (kc x nc).
// b_panel: first micro-panel of B; consecutive NR-column micro-panels are b_panel_stride apart,
// rows of a micro-panel rsb apart. The tiles are visited row of tiles by row of tiles (the A
// micro-panel stays in L1) or, in BLIS's order (ks.blk.b_panel_in_l1), column by column (the B
// micro-panel stays in L1); each tile is computed the same way in either order.
template <typename T>
void macro_kernel(const Problem<T>& pb, const KernelSet<T>& ks, index_t ic, index_t jc,
                  index_t mc, index_t nc, index_t kc, const T* a_pack, const T* b_panel,
                  index_t b_panel_stride, index_t rsb, bool accumulate, bool last_k) noexcept {
  const int MR = ks.blk.mr, NR = ks.blk.nr;
  const bool reg = last_k && pb.reg.any();
  const bool rest = last_k && has_epilogue(&pb.rest);
  T* const C = pb.C;
  const index_t ldc = pb.ldc;
  auto tile = [&](index_t ir, index_t jr, index_t jp) {
    const int m = static_cast<int>(std::min<index_t>(MR, mc - ir));
    const int n = static_cast<int>(std::min<index_t>(NR, nc - jr));
    const RegisterEpilogue<T> tile_reg = reg ? pb.reg.at(ic + ir, jc + jr, ldc)
                                             : RegisterEpilogue<T>();
    ks.ukernel(kc, a_pack + ir * kc, b_panel + jp * b_panel_stride, rsb,
               C + (ic + ir) * ldc + jc + jr, ldc, m, n, accumulate, reg ? &tile_reg : nullptr);
    if (rest) epilogue_tile(pb.rest, ic + ir, jc + jr, m, n, C, ldc);
  };
  if (ks.blk.b_panel_in_l1) {
    for (index_t jr = 0, jp = 0; jr < nc; jr += NR, ++jp)
      for (index_t ir = 0; ir < mc; ir += MR) tile(ir, jr, jp);
  } else {
    for (index_t ir = 0; ir < mc; ir += MR)
      for (index_t jr = 0, jp = 0; jr < nc; jr += NR, ++jp) tile(ir, jr, jp);
  }
}

// Fallback when a packing buffer cannot be allocated: the reference loops on the rectangle.
template <typename T>
void region_reference(const Problem<T>& pb, index_t m0, index_t m1, index_t n0,
                      index_t n1) noexcept {
  const T* A = pb.trans_a ? pb.A + m0 : pb.A + m0 * pb.lda;
  const T* B = pb.trans_b ? pb.B + n0 * pb.ldb : pb.B + n0;
  T* C = pb.C + m0 * pb.ldc + n0;
  gemm_reference(pb.trans_a, pb.trans_b, m1 - m0, n1 - n0, pb.K, A, pb.lda, B, pb.ldb, C, pb.ldc,
                 pb.accumulate);
  if (has_epilogue(pb.ep)) {
    Epilogue<T> ep = *pb.ep;  // shift every M x N operand to the rectangle
    const index_t off = m0 * pb.ldc + n0;
    if (ep.bias) ep.bias += n0;
    if (ep.act_out) ep.act_out += off;
    if (ep.deriv_z) ep.deriv_z += off;
    if (ep.deriv_y) ep.deriv_y += off;
    epilogue_reference(m1 - m0, n1 - n0, C, pb.ldc, ep);
  }
}

// Where the micro-kernels read the B block (kc x nc at (pc, jc)) from: the copy packed beforehand,
// op(B) in place, or b_pack, packed here.
template <typename T>
struct BBlock {
  const T* panel;         // first NR-column micro-panel
  index_t panel_stride;   // from one micro-panel to the next
  index_t rsb;            // from one row of a micro-panel to the next
};

template <typename T>
BBlock<T> b_block(const Problem<T>& pb, const KernelSet<T>& ks, index_t pc, index_t kc,
                  index_t jc, index_t nc, T* b_pack) noexcept {
  const index_t NR = ks.blk.nr;
  if (pb.b_pre) return {pb.b_pre + pc * pb.b_pre_ld + jc * kc, NR * kc, NR};
  if (pb.b_in_place) return {pb.B + pc * pb.ldb + jc, NR, pb.ldb};
  ks.pack_b(pb.trans_b, pb.B, pb.ldb, pc, jc, kc, nc, b_pack);
  return {b_pack, NR * kc, NR};
}

// C rows [ic, ic + mc), columns [n0, n1) (+)= the packed A block (mc x kc at K offset pc) times
// op(B)'s rows [pc, pc + kc): B packed block by block into b_pack, or read in place.
template <typename T>
void multiply_packed_a(const Problem<T>& pb, const KernelSet<T>& ks, index_t ic, index_t mc,
                       index_t pc, index_t kc, index_t n0, index_t n1, index_t nc_max,
                       const T* a_pack, T* b_pack) noexcept {
  const bool accumulate = pc == 0 ? pb.accumulate : true;
  const bool last_k = pc + kc >= pb.K;
  for (index_t jc = n0; jc < n1; jc += nc_max) {
    const index_t nc = std::min(nc_max, n1 - jc);
    const BBlock<T> b = b_block(pb, ks, pc, kc, jc, nc, b_pack);
    macro_kernel(pb, ks, ic, jc, mc, nc, kc, a_pack, b.panel, b.panel_stride, b.rsb, accumulate,
                 last_k);
  }
}

// ---------------------------------------------------------------- BLIS's order, with help
// A rectangle in BLIS's order (ks.blk.b_panel_in_l1) is walked one (jc, pc) block at a time:
// its B block (kc x nc) is packed once, then multiplied by the A blocks (mc x kc, L2-sized) of
// every row block. A block's work is cut into units (one A block's rows times a group of
// kHelpPanels column micro-panels) claimed from the rectangle's RegionWork: the owner claims them
// in order, and a thread that has finished its own rectangle claims what is left. On a shared
// host one core is often slower than the other for a while; the faster one then takes over part
// of the slower one's block instead of waiting at the end of the product. A tile is computed by
// one unit, over the same K blocks in the same order, whoever claims it: the bits stay the same.
inline constexpr index_t kHelpPanels = 4;

// One (jc, pc) block of a rectangle, as its units need it.
template <typename T>
struct UnitBlock {
  index_t m0 = 0, m1 = 0, mc_max = 0;  // the rectangle's rows and the A block height
  index_t jc = 0, nc = 0, pc = 0, kc = 0;
  index_t groups = 0;                  // column groups; units = row blocks x groups
  BBlock<T> b{};
};

// What threads share about one rectangle. The claim word holds the published block's number,
// its count of units and the next unclaimed unit; the owner writes `block` and resets `done`
// before it publishes the block (release), and moves on only when all its units are done.
template <typename T>
struct alignas(64) RegionWork {
  static constexpr std::uint64_t kFinished = ~std::uint64_t(0);
  static constexpr int kUnitBits = 22;  // units per block, and the next unit
  static constexpr std::uint64_t kUnitMask = (std::uint64_t(1) << kUnitBits) - 1;
  static constexpr index_t kMaxUnits = index_t(kUnitMask);
  std::atomic<std::uint64_t> claim{0};  // 0: no block published yet
  std::atomic<index_t> done{0};         // units of the published block completed
  UnitBlock<T> block;
};

// Claims the next unit of `w`'s published block into *unit; false if none is left now.
template <typename T>
bool claim_unit(RegionWork<T>& w, index_t* unit) noexcept {
  using W = RegionWork<T>;
  std::uint64_t v = w.claim.load(std::memory_order_relaxed);
  for (;;) {
    if (v == W::kFinished || v == 0) return false;
    const std::uint64_t next = v & W::kUnitMask, units = (v >> W::kUnitBits) & W::kUnitMask;
    if (next >= units) return false;
    if (w.claim.compare_exchange_weak(v, v + 1, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      *unit = index_t(next);
      return true;
    }
  }
}

// The A block a thread packed last (a unit packs A only if its block differs).
struct PackedA {
  const void* region = nullptr;
  index_t pc = -1, ic = -1;
};

template <typename T>
void run_unit(const Problem<T>& pb, const KernelSet<T>& ks, const void* region,
              const UnitBlock<T>& blk, index_t unit, T* a_pack, PackedA* packed) noexcept {
  const index_t NR = ks.blk.nr;
  const index_t ic = blk.m0 + unit / blk.groups * blk.mc_max;
  const index_t mc = std::min(blk.mc_max, blk.m1 - ic);
  const index_t jr = unit % blk.groups * kHelpPanels * NR;
  const index_t cols = std::min(kHelpPanels * NR, blk.nc - jr);
  if (packed->region != region || packed->pc != blk.pc || packed->ic != ic) {
    ks.pack_a(pb.trans_a, pb.A, pb.lda, ic, blk.pc, mc, blk.kc, a_pack);
    *packed = {region, blk.pc, ic};
  }
  macro_kernel(pb, ks, ic, blk.jc + jr, mc, cols, blk.kc, a_pack,
               blk.b.panel + jr / NR * blk.b.panel_stride, blk.b.panel_stride, blk.b.rsb,
               blk.pc == 0 ? pb.accumulate : true, blk.pc + blk.kc >= pb.K);
}

std::atomic<int> g_help_test_thread{-1}, g_help_test_us{0};
std::atomic<std::uint64_t> g_units_helped{0};

inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// The rectangle [m0, m1) x [n0, n1) in BLIS's order; with `work`, open to other threads' help.
template <typename T>
void gemm_region_b_outer(const Problem<T>& pb, const KernelSet<T>& ks, index_t m0, index_t m1,
                         index_t n0, index_t n1, index_t mc_max, index_t nc_max, T* a_pack,
                         T* b_pack, RegionWork<T>* work) noexcept {
  using W = RegionWork<T>;
  const index_t K = pb.K, KC = ks.blk.kc, NR = ks.blk.nr;
  const index_t row_blocks = (m1 - m0 + mc_max - 1) / mc_max;
  UnitBlock<T> local;
  UnitBlock<T>& blk = work ? work->block : local;
  PackedA packed;
  std::uint64_t number = 0;
  for (index_t jc = n0; jc < n1; jc += nc_max) {
    const index_t nc = std::min(nc_max, n1 - jc);
    const index_t groups = (nc + kHelpPanels * NR - 1) / (kHelpPanels * NR);
    const index_t units = row_blocks * groups;
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min(KC, K - pc);
      blk = {m0, m1, mc_max, jc, nc, pc, kc, groups, b_block(pb, ks, pc, kc, jc, nc, b_pack)};
      if (!work || units > W::kMaxUnits) {
        for (index_t u = 0; u < units; ++u) run_unit(pb, ks, &blk, blk, u, a_pack, &packed);
        continue;
      }
      // block numbers 1, 2, ... wrap before all ones (kFinished); 0 is "none yet"
      number = number % ((std::uint64_t(1) << (64 - 2 * W::kUnitBits)) - 2) + 1;
      work->done.store(0, std::memory_order_relaxed);
      work->claim.store(number << (2 * W::kUnitBits) | std::uint64_t(units) << W::kUnitBits,
                        std::memory_order_release);
#ifdef _OPENMP
      if (g_help_test_thread.load(std::memory_order_relaxed) == omp_get_thread_num())
        std::this_thread::sleep_for(std::chrono::microseconds(g_help_test_us.load()));
#endif
      for (index_t u; claim_unit(*work, &u);) {
        run_unit(pb, ks, work, blk, u, a_pack, &packed);
        work->done.fetch_add(1, std::memory_order_release);
      }
      while (work->done.load(std::memory_order_acquire) < units) spin_pause();
    }
  }
}

// A thread done with its own rectangle: units of the others' published blocks, until every
// other rectangle is finished. a_pack holds an A block of any rectangle.
template <typename T>
void help_others(const Problem<T>& pb, const KernelSet<T>& ks, RegionWork<T>* works, int nt,
                 int t, T* a_pack) noexcept {
  PackedA packed;
  for (;;) {
    bool all_finished = true;
    for (int r = 0; r < nt; ++r) {
      if (r == t || works[r].claim.load(std::memory_order_acquire) == RegionWork<T>::kFinished)
        continue;
      all_finished = false;
      for (index_t u; claim_unit(works[r], &u);) {
        run_unit(pb, ks, &works[r], works[r].block, u, a_pack, &packed);
        works[r].done.fetch_add(1, std::memory_order_release);
        g_units_helped.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (all_finished) return;
    spin_pause();
  }
}

// The serial blocked algorithm on the rectangle [m0, m1) x [n0, n1) of C (in BLIS's order, open
// to help through `work` if given).
template <typename T>
void gemm_region(const Problem<T>& pb, const KernelSet<T>& ks, index_t m0, index_t m1, index_t n0,
                 index_t n1, RegionWork<T>* work = nullptr) noexcept {
  if (m0 >= m1 || n0 >= n1) return;
  const int MR = ks.blk.mr, NR = ks.blk.nr;
  const index_t MC = ks.blk.mc, KC = ks.blk.kc, NC = ks.blk.nc;
  const index_t K = pb.K;
  // Equal blocks no larger than MC / NC (2048 rows as 1008 + 1008 + 32 would pack all of B a
  // third time for 32 rows).
  const index_t mc_max = balanced_block(m1 - m0, MC, MR);
  const index_t nc_max = balanced_block(n1 - n0, NC, NR);
  const index_t kc_max = std::min(KC, K);
  T* a_pack = static_cast<T*>(grow(tl_pack.a, tl_pack.a_bytes, sizeof(T) * mc_max * kc_max));
  T* b_pack = !pb.needs_b_buffer() ? nullptr
                                    : static_cast<T*>(grow(tl_pack.b, tl_pack.b_bytes,
                                                           sizeof(T) * nc_max * kc_max));
  if (!a_pack || (pb.needs_b_buffer() && !b_pack)) {
    region_reference(pb, m0, m1, n0, n1);
    return;
  }
  if (ks.blk.b_panel_in_l1) {
    gemm_region_b_outer(pb, ks, m0, m1, n0, n1, mc_max, nc_max, a_pack, b_pack, work);
    return;
  }
  for (index_t ic = m0; ic < m1; ic += mc_max) {
    const index_t mc = std::min(mc_max, m1 - ic);
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min(KC, K - pc);
      ks.pack_a(pb.trans_a, pb.A, pb.lda, ic, pc, mc, kc, a_pack);
      multiply_packed_a(pb, ks, ic, mc, pc, kc, n0, n1, nc_max, a_pack, b_pack);
    }
  }
}

// ---------------------------------------------------------------- shared packing (threads)
// With threads on a 1 x nt grid every thread needs the same A block, and on an nt x 1 grid the
// same B block. Instead of each packing its own copy, the threads pack an equal share of the
// block's micro-panels into one buffer, meet at a barrier, and then all read it. The packed
// layout and the micro-kernel calls are those of gemm_region, so results stay bitwise the same.

// Rows per row block of a thread's `rows` on an nt x 1 grid, walked in `row_blocks` blocks.
inline index_t shared_b_row_block(index_t rows, index_t row_blocks, int MR) noexcept {
  return round_up((std::max<index_t>(rows, 1) + row_blocks - 1) / row_blocks, MR);
}

// Start of part `t` of `parts` of `units` units of `unit` elements, clipped to `total`.
index_t split_at(index_t units, int parts, int t, int unit, index_t total) noexcept {
  return std::min(total, units * t / parts * unit);
}

// Threads on a 1 x nt grid: A blocks shared. The columns are not split in advance but handed out
// in chunks of `chunk` columns from the shared counter `next` (reset for every A block): a thread
// slowed by the host takes fewer chunks instead of keeping the others waiting at the barrier.
// Which thread computes a tile does not change how it is summed.
template <typename T>
void gemm_region_shared_a(const Problem<T>& pb, const KernelSet<T>& ks, T* a_shared, T* b_pack,
                          int t, int nt, index_t chunk, std::atomic<index_t>* next) noexcept {
  const int MR = ks.blk.mr;
  const index_t M = pb.M, N = pb.N, K = pb.K, KC = ks.blk.kc;
  const index_t mc_max = balanced_block(M, ks.blk.mc, MR);
  const index_t chunks = (N + chunk - 1) / chunk;
  for (index_t ic = 0; ic < M; ic += mc_max) {
    const index_t mc = std::min(mc_max, M - ic);
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min(KC, K - pc);
      const index_t panels = (mc + MR - 1) / MR;  // this thread packs [first, last) of them
      const index_t first = split_at(panels, nt, t, 1, panels);
      const index_t last = split_at(panels, nt, t + 1, 1, panels);
#pragma omp barrier  // every thread is done with the previous A block
      if (t == 0) next->store(0, std::memory_order_relaxed);
      if (first < last)
        ks.pack_a(pb.trans_a, pb.A, pb.lda, ic + first * MR, pc,
                  std::min(mc, last * MR) - first * MR, kc, a_shared + first * MR * kc);
#pragma omp barrier  // the A block is complete (and the counter reset)
      for (index_t c = next->fetch_add(1, std::memory_order_relaxed); c < chunks;
           c = next->fetch_add(1, std::memory_order_relaxed)) {
        const index_t jc = c * chunk;
        multiply_packed_a(pb, ks, ic, mc, pc, kc, jc, std::min(N, jc + chunk), chunk, a_shared,
                          b_pack);
      }
    }
  }
}

// Columns per chunk of the 1 x nt grid: about 8 chunks per thread, at least 4 micro-panels (each
// chunk streams the whole A block once) and at most one B block.
inline index_t column_chunk(index_t N, int nt, index_t NC, int NR) noexcept {
  const index_t chunk = round_up((N + 8 * nt - 1) / (8 * nt), NR);
  return std::min(std::max<index_t>(chunk, 4 * NR), std::min(round_up(NC, NR), round_up(N, NR)));
}

// Threads on an nt x 1 grid: all of N, rows [m0, m1) per thread; B blocks shared. Every thread
// walks the same number of row blocks (`row_blocks`) so that all meet at every barrier.
template <typename T>
void gemm_region_shared_b(const Problem<T>& pb, const KernelSet<T>& ks, T* b_shared, T* a_pack,
                          int t, int nt, index_t m0, index_t m1, index_t row_blocks) noexcept {
  const int MR = ks.blk.mr, NR = ks.blk.nr;
  const index_t N = pb.N, K = pb.K, KC = ks.blk.kc;
  const index_t mc_max = shared_b_row_block(m1 - m0, row_blocks, MR);
  const index_t nc_max = balanced_block(N, ks.blk.nc, NR);
  for (index_t blk = 0; blk < row_blocks; ++blk) {
    const index_t ic = m0 + blk * mc_max;
    const index_t mc = std::max<index_t>(0, std::min(mc_max, m1 - ic));
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min(KC, K - pc);
      const bool accumulate = pc == 0 ? pb.accumulate : true;
      const bool last_k = pc + kc >= K;
      if (mc > 0) ks.pack_a(pb.trans_a, pb.A, pb.lda, ic, pc, mc, kc, a_pack);
      for (index_t jc = 0; jc < N; jc += nc_max) {
        const index_t nc = std::min(nc_max, N - jc);
        const index_t panels = (nc + NR - 1) / NR;  // this thread packs [first, last) of them
        const index_t first = split_at(panels, nt, t, 1, panels);
        const index_t last = split_at(panels, nt, t + 1, 1, panels);
#pragma omp barrier  // every thread is done with the previous B block
        if (first < last)
          ks.pack_b(pb.trans_b, pb.B, pb.ldb, pc, jc + first * NR, kc,
                    std::min(nc, last * NR) - first * NR, b_shared + first * NR * kc);
#pragma omp barrier  // the B block is complete
        if (mc > 0)
          macro_kernel(pb, ks, ic, jc, mc, nc, kc, a_pack, b_shared, NR * kc, index_t(NR),
                       accumulate, last_k);
      }
    }
  }
}

// Packing cost of one element, in multiply-adds of the micro-kernel (fitted to lockstep runs of
// both grids at 2 threads): a row gather through transposes (op(A) = A, op(B) = B^T) costs about
// three contiguous row copies (op(B) = B), a copy of short runs `lda` apart (op(A) = A^T) two.
inline constexpr double kGatherCost = 24.0, kStridedCopyCost = 16.0, kRowCopyCost = 8.0;

// Split the M and N ranges over nt threads: a tm x tn grid of rectangles (aligned to MR / NR),
// minimising the largest rectangle plus its packing work (a_cost / b_cost per packed element of
// op(A) / op(B); each thread packs the A rows and B columns of its own rectangle).
void choose_grid(index_t M, index_t N, int MR, int NR, int nt, double a_cost, double b_cost,
                 int* tm_out, int* tn_out) noexcept {
  const index_t pm = (M + MR - 1) / MR, pn = (N + NR - 1) / NR;
  double best = -1;
  for (int tm = 1; tm <= nt; ++tm) {
    if (nt % tm) continue;
    const int tn = nt / tm;
    if (tm > pm || tn > pn) continue;
    // the largest part, in real rows / columns (a part of the last micro-tile costs in
    // proportion to its rows: M = 64 split 36 + 28 is worse than 64 + 64 columns of 128 each)
    const double rows = double(std::min<index_t>(M, (pm + tm - 1) / tm * MR));
    const double cols = double(std::min<index_t>(N, (pn + tn - 1) / tn * NR));
    const double cost = rows * cols + a_cost * rows + b_cost * cols;
    if (best < 0 || cost < best) {
      best = cost;
      *tm_out = tm;
      *tn_out = tn;
    }
  }
  if (best < 0) {  // fewer micro-tiles than threads in some direction: split the longer one
    if (pm >= pn) {
      *tm_out = int(std::min<index_t>(nt, pm));
      *tn_out = 1;
    } else {
      *tm_out = 1;
      *tn_out = int(std::min<index_t>(nt, pn));
    }
  }
}


// Whether the direct path (direct_simd.inl) takes this shape: the ISA has one, at most
// cfg::kDirectMaxWork multiply-adds and K within one K block (so that it sums like the packed
// path).
template <typename T>
bool direct_applies(const KernelSet<T>& ks, index_t M, index_t N, index_t K,
                    bool one_thread) noexcept {
  const index_t limit = one_thread ? cfg::kDirectMaxWorkOneThread : cfg::kDirectMaxWork;
  return ks.direct && M * N * K <= limit && K <= ks.blk.kc;
}

// A narrow product (cfg::narrow_product) by the direct path's narrow form, which takes every
// such shape: row blocks shared by the threads when the product is large enough to split.
template <typename T>
void narrow_run(const KernelSet<T>& ks, bool trans_b, index_t M, index_t N, index_t K,
                const T* A, index_t lda, const T* B, index_t ldb, T* C, index_t ldc,
                bool accumulate, const RegisterEpilogue<T>& in_registers,
                const Epilogue<T>& rest) noexcept {
  auto rows = [&](index_t m0, index_t m1) {
    ks.direct(false, trans_b, m1 - m0, N, K, A + m0 * lda, lda, B, ldb, C + m0 * ldc, ldc,
              accumulate, in_registers.at(m0, 0, ldc), ks.pack_b, ks.blk.nr);
    if (has_epilogue(&rest)) epilogue_tile(rest, m0, 0, int(m1 - m0), int(N), C, ldc);
  };
  int nt = 1;
#ifdef _OPENMP
  if (M * N * K >= cfg::kParallelMinWork && !omp_in_parallel()) nt = omp_get_max_threads();
#endif
  if (nt <= 1) {
    rows(0, M);
    return;
  }
  constexpr index_t kRowsPerBlock = 256;
  const index_t blocks = (M + kRowsPerBlock - 1) / kRowsPerBlock;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (index_t b = 0; b < blocks; ++b) {
    const DenormalsAsZero denormals;  // same arithmetic mode in every thread
    rows(b * kRowsPerBlock, std::min(M, (b + 1) * kRowsPerBlock));
  }
}

template <typename T>
void gemm_run(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const T* A, index_t lda,
              const T* B, index_t ldb, T* C, index_t ldc, bool accumulate,
              const Epilogue<T>* ep, const PrepackedB<T>* pre = nullptr) noexcept {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (index_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
    if (has_epilogue(ep)) epilogue_reference(M, N, C, ldc, *ep);
    return;
  }
  const Isa isa = isa_active();
  KernelSet<T> ks = kernel_set<T>(isa);
  // small product: no packing, no threads (same arithmetic as the packed path of the same ISA)
  RegisterEpilogue<T> in_registers;  // bias / ReLU / ReLU' in registers, the rest after
  Epilogue<T> rest;
  split_epilogue(ep, &in_registers, &rest);
  if (ks.direct && cfg::narrow_product(trans_a, N, ks.blk.nr / 2)) {  // (nr: two vectors)
    narrow_run(ks, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, in_registers, rest);
    return;
  }
  // A product that would run on one thread anyway (inside a sharded step's thread, or with
  // one thread set) takes the direct path up to a larger size: the path never changes a bit.
  bool one_thread = true;
#ifdef _OPENMP
  one_thread = omp_in_parallel() || omp_get_max_threads() == 1;
#endif
  if (direct_applies(ks, M, N, K, one_thread) &&
      ks.direct(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, in_registers,
                ks.pack_b, ks.blk.nr)) {
    if (has_epilogue(&rest)) epilogue_tile(rest, 0, 0, int(M), int(N), C, ldc);
    return;
  }
  ks.blk.kc = k_block(K, ks.blk);
  // Read op(B) in place (no B packing) for small M and contiguous B rows, unless B is too large
  // to stay in L2 and M large enough for packing to pay (config.hpp). Packed or in place, every
  // element is summed in the same order.
  const index_t small_m = ks.blk.b_panel_in_l1 ? cfg::kSmallMBlisOrder : cfg::kSmallM;
  const bool b_in_place = !trans_b && M <= small_m &&
                          (M < cfg::kInPlaceAnyBMaxM ||
                           K * N * index_t(sizeof(T)) <= ks.blk.b_in_place_bytes);
  Problem<T> pb{trans_a, trans_b, M,  N,  K,  A, lda, B, ldb, C, ldc, accumulate,
                ep,      in_registers, rest, b_in_place};
  // B packed beforehand for this ISA and K split replaces packing it here for small M. Where
  // B would be read in place, that stays faster (784 x 256 weights, one row: 12.1 us in place,
  // 18.3 us from the packed copy); above kSmallM rows packing is amortised and the fresh copy
  // is read from L2 (784-1024-1024-10 in lockstep: 16 rows 1.36-1.42x, 64 rows 1.11x, 256 to
  // 4096 rows 0.97-1.03x with the copy).
  if (pre && !b_in_place && M <= cfg::kSmallM && !trans_b && pre->isa == int(isa) &&
      pre->kc == ks.blk.kc &&
      pre->nr == ks.blk.nr && pre->K == K && pre->N == N && !pre->data.empty()) {
    pb.b_in_place = false;
    pb.b_pre = pre->data.data();
    pb.b_pre_ld = pre->n_padded;
  }

  int nt = 1;
#ifdef _OPENMP
  if (M * N * K >= cfg::kParallelMinWork && !omp_in_parallel()) nt = omp_get_max_threads();
#endif
  if (nt <= 1) {
    gemm_region(pb, ks, 0, M, 0, N);
    return;
  }
  const int MR = ks.blk.mr, NR = ks.blk.nr;
  int tm = 1, tn = 1;
  const double a_cost = trans_a ? kStridedCopyCost : kGatherCost;
  const double b_cost = !pb.needs_b_buffer() ? 0.0 : trans_b ? kGatherCost : kRowCopyCost;
  choose_grid(M, N, MR, NR, nt, a_cost, b_cost, &tm, &tn);
  const index_t pm = (M + MR - 1) / MR, pn = (N + NR - 1) / NR;
#ifdef _OPENMP
  // The shared packing buffer, grown here by the calling thread (thread 0 of the team). Each
  // thread grows its own buffer for the other operand; where any allocation fails, or the grid is
  // not 1 x nt or nt x 1, every thread packs privately (gemm_region).
  const index_t KC = ks.blk.kc, kc_max = std::min(KC, K);
  // (not in BLIS's order, where each thread packs an L2-sized A block of its own: see config.hpp)
  const bool big = M * N * K >= cfg::kSharedPackMinWork && !ks.blk.b_panel_in_l1;
  const bool share_a = big && tm == 1, share_b = big && tn == 1 && pb.needs_b_buffer();
  const index_t row_blocks =  // the most row blocks of any thread on an nt x 1 grid
      share_b ? ((pm + tm - 1) / tm * MR + ks.blk.mc - 1) / ks.blk.mc : 0;
  T* shared = nullptr;
  if (share_a) {
    shared = static_cast<T*>(grow(tl_pack.a, tl_pack.a_bytes,
                                  sizeof(T) * balanced_block(M, ks.blk.mc, MR) * kc_max));
  } else if (share_b) {
    shared = static_cast<T*>(grow(tl_pack.b, tl_pack.b_bytes,
                                  sizeof(T) * balanced_block(N, ks.blk.nc, NR) * kc_max));
  }
  const bool sharing = shared != nullptr;
  const index_t chunk = column_chunk(N, tm * tn, ks.blk.nc, NR);  // (1 x nt grid)
  std::atomic<index_t> next_chunk{0};
  // Private packing in BLIS's order: each rectangle open to help (one RegionWork per thread)
  std::unique_ptr<RegionWork<T>[]> works;
  if (!sharing && ks.blk.b_panel_in_l1) works.reset(new (std::nothrow) RegionWork<T>[tm * tn]);
  bool own_failed = false;  // some thread could not grow its own buffer
#pragma omp parallel num_threads(tm * tn)
  {
    const DenormalsAsZero denormals;  // same arithmetic mode in every thread
    const int t = omp_get_thread_num();
    // Rectangle r of the tm x tn grid.
    auto rect = [&](int r, index_t* m0, index_t* m1, index_t* n0, index_t* n1) {
      *m0 = split_at(pm, tm, r / tn, MR, M);
      *m1 = split_at(pm, tm, r / tn + 1, MR, M);
      *n0 = split_at(pn, tn, r % tn, NR, N);
      *n1 = split_at(pn, tn, r % tn + 1, NR, N);
    };
    index_t m0, m1, n0, n1;
    rect(t, &m0, &m1, &n0, &n1);
    // The runtime may start fewer threads than asked (OMP_DYNAMIC, OMP_THREAD_LIMIT): then each
    // takes every team-th rectangle and packs alone. The team size is the same in every thread.
    const int team = omp_get_num_threads();
    if (team != tm * tn) {
      for (int r = t; r < tm * tn; r += team) {
        rect(r, &m0, &m1, &n0, &n1);
        gemm_region(pb, ks, m0, m1, n0, n1);
      }
    } else {
      T* own = nullptr;  // this thread's buffer for the operand it packs alone
      if (sharing && share_a && pb.needs_b_buffer()) {
        own = static_cast<T*>(grow(tl_pack.b, tl_pack.b_bytes, sizeof(T) * chunk * kc_max));
      } else if (sharing && share_b) {
        const index_t mc_max = shared_b_row_block(m1 - m0, row_blocks, MR);
        own = static_cast<T*>(grow(tl_pack.a, tl_pack.a_bytes, sizeof(T) * mc_max * kc_max));
      }
      bool any_failed = false;
      if (sharing) {  // the same branch in every thread: all meet at the barrier
        if (!own && !(share_a && !pb.needs_b_buffer())) {
#pragma omp atomic write
          own_failed = true;
        }
#pragma omp barrier
#pragma omp atomic read
        any_failed = own_failed;
      }
      if (works) {
        gemm_region(pb, ks, m0, m1, n0, n1, &works[t]);
        works[t].claim.store(RegionWork<T>::kFinished, std::memory_order_release);
        // an A block of any rectangle (balanced_block never exceeds this)
        const index_t mc_any = round_up(std::min(ks.blk.mc, M), MR);
        T* a_any = static_cast<T*>(grow(tl_pack.a, tl_pack.a_bytes, sizeof(T) * mc_any * kc_max));
        if (a_any) help_others(pb, ks, works.get(), tm * tn, t, a_any);
      } else if (!sharing || any_failed) gemm_region(pb, ks, m0, m1, n0, n1);
      else if (share_a) gemm_region_shared_a(pb, ks, shared, own, t, tm * tn, chunk, &next_chunk);
      else gemm_region_shared_b(pb, ks, shared, own, t, tm * tn, m0, m1, row_blocks);
    }
  }
#else
  (void)pm;
  (void)pn;
  gemm_region(pb, ks, 0, M, 0, N);
#endif
}

}  // namespace

void set_help_test_delay(int thread, int microseconds) noexcept {
  g_help_test_us.store(microseconds);
  g_help_test_thread.store(thread);
}

std::uint64_t units_helped() noexcept { return g_units_helped.load(); }

template <typename T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const T* A, index_t lda,
          const T* B, index_t ldb, T* C, index_t ldc, bool accumulate) noexcept {
  gemm_run<T>(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, nullptr);
}

template <typename T>
void gemm_fused(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const T* A,
                index_t lda, const T* B, index_t ldb, T* C, index_t ldc,
                const Epilogue<T>& ep) noexcept {
  gemm_run<T>(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, false, &ep);
}

template <typename T>
bool prepack_b(index_t K, index_t N, const T* B, index_t ldb, PrepackedB<T>* out) noexcept {
  out->data.clear();
  if (K <= 0 || N <= 0) return true;
  const Isa isa = isa_active();
  const KernelSet<T> ks = kernel_set<T>(isa);
  const index_t kc = k_block(K, ks.blk);
  const index_t nr = ks.blk.nr, n_padded = round_up(N, nr);
  try {
    out->data.assign(static_cast<std::size_t>(K * n_padded), T(0));
  } catch (...) {
    return false;
  }
  for (index_t pc = 0; pc < K; pc += kc) {
    ks.pack_b(false, B, ldb, pc, 0, std::min(kc, K - pc), N, out->data.data() + pc * n_padded);
  }
  out->isa = int(isa);
  out->K = K;
  out->N = N;
  out->kc = kc;
  out->nr = int(nr);
  out->n_padded = n_padded;
  return true;
}

template <typename T>
void gemm_fused_prepacked(index_t M, index_t N, index_t K, const T* A, index_t lda, const T* B,
                          index_t ldb, const PrepackedB<T>& pre, T* C, index_t ldc,
                          const Epilogue<T>& ep) noexcept {
  gemm_run<T>(false, false, M, N, K, A, lda, B, ldb, C, ldc, false, &ep, &pre);
}

template bool prepack_b<float>(index_t, index_t, const float*, index_t,
                               PrepackedB<float>*) noexcept;
template bool prepack_b<double>(index_t, index_t, const double*, index_t,
                                PrepackedB<double>*) noexcept;
template void gemm_fused_prepacked<float>(index_t, index_t, index_t, const float*, index_t,
                                          const float*, index_t, const PrepackedB<float>&, float*,
                                          index_t, const Epilogue<float>&) noexcept;
template void gemm_fused_prepacked<double>(index_t, index_t, index_t, const double*, index_t,
                                           const double*, index_t, const PrepackedB<double>&,
                                           double*, index_t, const Epilogue<double>&) noexcept;

template void gemm_fused<float>(bool, bool, index_t, index_t, index_t, const float*, index_t,
                                const float*, index_t, float*, index_t,
                                const Epilogue<float>&) noexcept;
template void gemm_fused<double>(bool, bool, index_t, index_t, index_t, const double*, index_t,
                                 const double*, index_t, double*, index_t,
                                 const Epilogue<double>&) noexcept;

template void gemm<float>(bool, bool, index_t, index_t, index_t, const float*, index_t,
                          const float*, index_t, float*, index_t, bool) noexcept;
template void gemm<double>(bool, bool, index_t, index_t, index_t, const double*, index_t,
                           const double*, index_t, double*, index_t, bool) noexcept;

}  // namespace mlpcore::gemm

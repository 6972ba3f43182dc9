// Blocking constants of the packed GEMM, per ISA and dtype (the one place they are defined).
//
// Two loop orders (row-major C, see gemm.cpp), chosen per ISA by Blocking::b_panel_in_l1:
// - A micro-panel in L1 (AVX-512, portable):
//   ic over M in MC -> pc over K in KC -> pack A (MC x KC, MR-row micro-panels; L3 resident:
//                                         only one MR x KC micro-panel at a time is hot, so MC
//                                         is large and B is packed once per MC rows)
//   jc over N in NC -> pack B (KC x NC, NR-column micro-panels; L2 resident)
//   ir over MC in MR -> jr over NC in NR -> micro-kernel (MR x NR register tile, KC updates).
//   The MR x KC micro-panel of A stays in L1 while KC x NR micro-panels of B stream from L2.
// - B micro-panel in L1 (AVX2; BLIS's order):
//   jc over N in NC -> pc over K in KC -> pack B (KC x NC; L3 resident)
//   ic over M in MC -> pack A (MC x KC; L2 resident)
//   jr over NC in NR -> ir over MC in MR -> micro-kernel.
//   The KC x NR micro-panel of B stays in L1 while MR x KC micro-panels of A stream from L2.
//   Threads pack privately (no shared packing) and take over each other's last units
//   (gemm.cpp: "BLIS's order, with help"). On a Zen 3 core (32 KiB L1d, 512 KiB L2), at
//   2 threads, lockstep in one process: 256x1024x1024 NN 1.34x, NT 1.39x, 1024x1024x256 TN
//   1.25x the first order (with its shared packing); 1024^3 and 2048^3 1.00-1.03x; 1 thread
//   0.97-1.08x on ten MLP shapes (no change).
// KC is the largest K block per (ISA, dtype, caches); K is cut into equal blocks of at most KC
// (gemm_run). The summation order of every output element therefore depends on the shape, the
// ISA and the cache sizes (through KC), never on the number of threads or the loop order.
//
// The constants below are the blocking tuned on a 48 KiB L1d / 1-2 MiB L2 core; at run time
// derive_blocking (cache_blocking.cpp) scales them to the caches of the running CPU.
#pragma once
#include "../common.hpp"

namespace mlpcore::gemm {

// The instruction sets with micro-kernels; each has one row in the ISA table (dispatch.cpp),
// which gives its name, its CPU check and its kernels with the blocking below.
enum class Isa : int { Portable, Avx2, Avx512 };

struct Blocking {
  int mr, nr;      // register tile of the micro-kernel
  index_t mc, kc, nc;  // cache blocks
  bool b_panel_in_l1 = false;  // the loop order (see the top): BLIS's order if true
  // op(B) of at most this many bytes may be read in place for small M (see kSmallM); set by
  // derive_blocking from L2
  index_t b_in_place_bytes = 0;
};

// First tuned on Sapphire Rapids (L1d 48 KiB, L2 2 MiB per core). On an AMD EPYC with 1 MiB of
// L2 per core, float32 NC 384 (B block 576 KiB, leaving L2 room for the A micro-panels and C
// tiles that stream through it) measured 1.007-1.017x NC 512 at 1 thread on seven shapes in
// lockstep (1024^3 1.036x) and 0.99-1.04x at 2 threads; NC 256 and KC 256 / 512 no better.
// Cache sizes in bytes (0: unknown), as detected at first use or set by MLPCORE_CACHE_SIZES.
struct CacheSizes {
  index_t l1d = 0, l2 = 0, l3 = 0;
  const char* source = "";   // "cpuid", "sysconf", "sysfs", "MLPCORE_CACHE_SIZES", "default"
  bool env_invalid = false;  // MLPCORE_CACHE_SIZES was set but not valid (so it was ignored)
};

// The caches in use: MLPCORE_CACHE_SIZES=l1d,l2[,l3] (bytes, or with a K/M/G suffix) if set and
// valid, else the running CPU's (CPUID leaf 4 / 0x8000001D, sysconf, sysfs), else the tuning
// machine's. Read once, on first use.
const CacheSizes& cache_sizes() noexcept;
// Test hook: use these caches from now on (re-derives every ISA's blocking). False (nothing
// changed) if a size is outside the accepted range. Not while a product runs.
bool set_cache_sizes(index_t l1d, index_t l2, index_t l3) noexcept;
// Accepted sizes: L1d 4 KiB..4 MiB, L2 32 KiB..1 GiB, L3 0 (unknown) or 64 KiB..64 GiB.
bool cache_sizes_valid(index_t l1d, index_t l2, index_t l3) noexcept;

// An ISA's blocking for these caches and element size, from its tuned blocking (below).
Blocking derive_blocking(const Blocking& tuned, int elem_bytes, const CacheSizes& caches) noexcept;

namespace cfg {
// The per-core caches the tuned blocking below was measured with (derive_blocking's reference).
inline constexpr index_t kTunedL1d = index_t(48) << 10;
inline constexpr index_t kTunedL2 = index_t(1) << 20;

// AVX-512: 24 of the 32 zmm registers hold the C tile (MR rows x 2 vectors).
inline constexpr Blocking kAvx512F32{12, 32, 4032, 384, 384};   // A upanel 18 KiB, B block 576 KiB
inline constexpr Blocking kAvx512F64{12, 16, 4032, 192, 512};   // A upanel 18 KiB, B block 768 KiB
// AVX2+FMA: 12 of the 16 ymm registers hold the C tile (MR rows x 2 vectors). B micro-panel in
// L1; MC and NC here are upper bounds, derive_blocking sizes the A block from L2 and the B
// block from L3.
inline constexpr Blocking kAvx2F32{6, 16, 1008, 384, 4080, true};
inline constexpr Blocking kAvx2F64{6, 8, 1008, 256, 4080, true};
// Portable C++: plain loops, auto-vectorised for the baseline ISA.
inline constexpr Blocking kPortableF32{4, 16, 512, 256, 512};
inline constexpr Blocking kPortableF64{4, 8, 512, 256, 512};

inline constexpr int kMaxMR = 12;
inline constexpr int kMaxNR = 32;

// Shape thresholds (shape only, never thread count).
// Below this many multiply-adds one thread does the whole product (fork/join costs more).
inline constexpr index_t kParallelMinWork = index_t(1) << 19;
// At least this many multiply-adds: on a 1 x nt or nt x 1 thread grid the threads pack the
// operand they all need together (gemm.cpp); below it two barriers per block and reading panels
// packed on the other core cost more than packing a private copy (256x784x256 NT: -3%; on an
// Intel Xeon with 2 MiB of L2 per core, AVX-512, 2 threads: 1024 x 1024 x 256 TN 299 -> 345
// GFLOP/s packed privately, NN 343 -> 358, lockstep training wide 1.068; big's products of 2^31
// to 2^33 multiply-adds were as fast either way).
inline constexpr index_t kSharedPackMinWork = index_t(1) << 29;
// op(B) rows contiguous (not trans_b) and at most this many rows of C: B is read in place by the
// micro-kernel instead of being packed (each B element is reused by few A micro-panels only),
// when B fits in half of L2 (a small layer's weights stay there between calls) or M is below
// kInPlaceAnyBMaxM. A larger B read in place streams from L3 one row (one page) per K step: with
// 1024 x 1024 float32 weights out of L2, 16 rows took 1856 us in place, 551 us packed.
inline constexpr index_t kSmallM = 96;
// The same in BLIS's loop order (the AVX2 kernels), where each B micro-panel read in place must
// stay in L1 across the A micro-panels: rows of 1 KiB or more land in a few L1 sets, and above
// this many rows packing B was faster (784 x 256 B, AVX2, 1 thread, alternating processes: 48
// rows 219 -> 208 us packed, 64 rows 296 -> 280, 96 rows 436 -> 399; 32 rows 153 either way).
inline constexpr index_t kSmallMBlisOrder = 32;
inline constexpr index_t kInPlaceAnyBMaxM = 8;
// At most this many multiply-adds (and K within one K block), with the AVX-512 or AVX2 kernels:
// the direct path of direct_simd.inl, with no packing and no threads (AVX-512, 1 thread: 64^3
// 1.13-1.14x the packed path, 32x64x128 NT 1.08-1.10x; above it mixed, 0.91-1.11x).
inline constexpr index_t kDirectMaxWork = index_t(1) << 18;
// The same, for a product that runs on one thread whatever its size (inside a sharded training
// step's thread, or with one thread set): up to 2^21 (a sharded step of scikit-learn's default
// shapes per half; lockstep training at 2 threads: sk-digits 1.04-1.09x, sk-big 1.00-1.03x).
inline constexpr index_t kDirectMaxWorkOneThread = index_t(1) << 21;
// A product of at most this many columns (fewer than a vector's lanes) with A not transposed:
// a classifier's or regressor's output layer. The direct path's narrow form takes it whatever
// its size (direct_simd.inl, narrow_rows: each element summed across the lanes of a vector,
// 200 x 4 x 100 float32 5.04 -> 2.31 us AVX-512, 4.24 -> 3.20 us AVX2); from 5 columns on,
// groups of four columns cost what the row tiles' unused lanes do (100 x 10 x 100: 2.71
// against 2.69 us), so those keep the row tiles' order.
inline constexpr index_t kNarrowMaxColumns = 4;
constexpr bool narrow_product(bool trans_a, index_t N, int lanes) noexcept {
  return !trans_a && N <= kNarrowMaxColumns && N < lanes;
}
}  // namespace cfg

}  // namespace mlpcore::gemm

// Blocking constants of the packed GEMM, per ISA and dtype (the one place they are defined).
//
// Loop structure (row-major C, see gemm.cpp):
//   ic over M in MC   -> pc over K in KC -> pack A (MC x KC, MR-row micro-panels; L3 resident:
//                                           only one MR x KC micro-panel at a time is hot, so MC
//                                           is large and B is packed once per MC rows)
//   jc over N in NC   -> pack B (KC x NC, NR-column micro-panels; L2 resident)
//   ir over MC in MR  -> jr over NC in NR -> micro-kernel (MR x NR register tile, KC updates).
// The MR x KC micro-panel of A stays in L1 while KC x NR micro-panels of B stream from L2.
// KC is the largest K block per (ISA, dtype); K is cut into equal blocks of at most KC
// (gemm_run). The summation order of every output element therefore depends on the shape and
// the ISA only, never on the number of threads.
#pragma once
#include "../common.hpp"

namespace mlpcore::gemm {

// The instruction sets with micro-kernels; each has one row in the ISA table (dispatch.cpp),
// which gives its name, its CPU check and its kernels with the blocking below.
enum class Isa : int { Portable, Avx2, Avx512 };

struct Blocking {
  int mr, nr;      // register tile of the micro-kernel
  index_t mc, kc, nc;  // cache blocks
};

// First tuned on Sapphire Rapids (L1d 48 KiB, L2 2 MiB per core). On an AMD EPYC with 1 MiB of
// L2 per core, float32 NC 384 (B block 576 KiB, leaving L2 room for the A micro-panels and C
// tiles that stream through it) measured 1.007-1.017x NC 512 at 1 thread on seven shapes in
// lockstep (1024^3 1.036x) and 0.99-1.04x at 2 threads; NC 256 and KC 256 / 512 no better.
namespace cfg {
// AVX-512: 24 of the 32 zmm registers hold the C tile (MR rows x 2 vectors).
inline constexpr Blocking kAvx512F32{12, 32, 4032, 384, 384};   // A upanel 18 KiB, B block 576 KiB
inline constexpr Blocking kAvx512F64{12, 16, 4032, 192, 512};   // A upanel 18 KiB, B block 768 KiB
// AVX2+FMA: 12 of the 16 ymm registers hold the C tile (MR rows x 2 vectors).
inline constexpr Blocking kAvx2F32{6, 16, 1008, 384, 768};
inline constexpr Blocking kAvx2F64{6, 8, 1008, 256, 512};
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
// packed on the other core cost more than packing a private copy (256x784x256 NT: -3%).
inline constexpr index_t kSharedPackMinWork = index_t(1) << 26;
// op(B) rows contiguous (not trans_b) and at most this many rows of C: B is read in place by the
// micro-kernel instead of being packed (each B element is reused by few A micro-panels only).
inline constexpr index_t kSmallM = 96;
// At most this many multiply-adds (and K within one K block), with the AVX-512 or AVX2 kernels:
// the direct path of direct_simd.inl, with no packing and no threads (AVX-512, 1 thread: 64^3
// 1.13-1.14x the packed path, 32x64x128 NT 1.08-1.10x; above it mixed, 0.91-1.11x).
inline constexpr index_t kDirectMaxWork = index_t(1) << 18;
}  // namespace cfg

}  // namespace mlpcore::gemm

// Element-wise kernels compiled twice in one file: for the baseline ISA and, between
// MLPCORE_AVX512_BEGIN / MLPCORE_AVX512_END, for AVX-512 (GCC's target pragma), the copy being
// picked at run time by use_avx512_elementwise(). The two copies give the same bits: they are
// element-wise (or reduce in an order fixed by the source, not by the vector width), and the
// build turns floating-point contraction off (-ffp-contract=off), so AVX-512's FMA never fuses a
// multiply and an add that the baseline copy rounds separately.
#pragma once
#include "common.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define MLPCORE_AVX512_REGIONS 1
#define MLPCORE_AVX512_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,avx512f,avx512dq,avx512vl,avx512bw\")")
#define MLPCORE_AVX512_END _Pragma("GCC pop_options")
#else
#define MLPCORE_AVX512_REGIONS 0
#endif

namespace mlpcore {

// True when the AVX-512 copies may run: the CPU has AVX-512 and the active GEMM ISA is AVX-512
// (so MLPCORE_GEMM_ISA=avx2 / portable, and the tests' ISA switch, select the baseline copies).
bool use_avx512_elementwise() noexcept;

}  // namespace mlpcore

// Element-wise kernels (activations' array forms, optimizer rules, reductions, losses,
// normalisation layers) compiled once per x86 ISA: each family's rules live in a *_rules.inl
// that is included in one namespace per copy,
//   baseline  in the family's own file (activations.cpp, optim.cpp, reductions.cpp, losses.cpp,
//             normalization.cpp),
//   AVX2+FMA  in elementwise_avx2.cpp   (compiled with -mavx2 -mfma),
//   AVX-512   in elementwise_avx512.cpp (compiled with -mavx512f/dq/vl/bw),
// per-file flags (gemm.cmake / CMakeLists.txt) so GCC and Clang build every copy alike.
// elementwise_isa() picks the copy at run time. The copies give the same bits: they are
// element-wise (or reduce in an order fixed by the source, not by the vector width), and the
// build turns floating-point contraction off (-ffp-contract=off), so the FMA units of AVX2 and
// AVX-512 never fuse a multiply and an add that the baseline copy rounds separately.
// A new family: its rules in a .inl, one include per copy file, a dispatch like optim.cpp's.
// Per-file flags have one trap: an inline function from a shared header that a copy file emits
// out of line is a weak symbol the linker may pick for the baseline callers too (an AVX-512
// instruction on an AVX2 CPU). Header functions the rules call are MLPCORE_ALWAYS_INLINE;
// `nm -C elementwise_avx512.cpp.o | grep " W "` lists only the copies' own namespaces.
#pragma once
#include "common.hpp"

namespace mlpcore {

enum class ElementwiseIsa : int { Baseline, Avx2, Avx512 };

// The copy to run: the one matching the active GEMM ISA (so MLPCORE_GEMM_ISA=avx2 / portable,
// and the tests' ISA switch, select the AVX2 / baseline copies); baseline when the ISA file was
// built without its flags (another compiler or architecture).
ElementwiseIsa elementwise_isa() noexcept;
const char* elementwise_isa_name(ElementwiseIsa isa) noexcept;

// Whether elementwise_avx2.cpp / elementwise_avx512.cpp were built with their ISA flags.
bool elementwise_avx2_compiled() noexcept;
bool elementwise_avx512_compiled() noexcept;

}  // namespace mlpcore

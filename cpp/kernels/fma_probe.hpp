// The FMA peak of this CPU at the ISA the element-wise kernels run (mlpcore bench reports model
// FLOP/s as a share of it): independent FMA chains, no memory traffic, timed on each thread.
#pragma once
#include <cstdint>

namespace mlpcore {

// 12 chains x lanes x 2 flops per trip (the ISA copies: elementwise_avx2.cpp / _avx512.cpp; 0
// and no work when the copy was built without its flags).
float fma_chains_avx2(std::int64_t trips) noexcept;
float fma_chains_avx512(std::int64_t trips) noexcept;

// float32 GFLOP/s of `threads` threads running the chains of the active element-wise ISA for
// about `seconds` each; 0 for the baseline copy (no FMA kernel to measure). lanes: 16, 8 or 0.
double fma_peak_gflops(int threads, double seconds, int* lanes) noexcept;

}  // namespace mlpcore

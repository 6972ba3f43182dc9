// The AVX2+FMA copy of the element-wise kernels (isa_regions.hpp). Only this file and the GEMM's
// AVX2 micro-kernels are compiled with -mavx2 -mfma; it runs only after elementwise_isa() checked
// the CPU.
#include "isa_regions.hpp"

namespace mlpcore {
#if defined(__AVX2__) && defined(__FMA__)
bool elementwise_avx2_compiled() noexcept { return true; }
#else
bool elementwise_avx2_compiled() noexcept { return false; }  // built without the flags
#endif
}  // namespace mlpcore

#define MLPCORE_COPY(family) family##_avx2
#include "elementwise_copy.inl"
#undef MLPCORE_COPY

// The AVX-512 copy of the element-wise kernels (isa_regions.hpp). Compiled with the AVX-512
// flags of the GEMM's AVX-512 files; runs only after elementwise_isa() checked the CPU.
#include "isa_regions.hpp"

namespace mlpcore {
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && \
    defined(__AVX512BW__)
bool elementwise_avx512_compiled() noexcept { return true; }
#else
bool elementwise_avx512_compiled() noexcept { return false; }  // built without the flags
#endif
}  // namespace mlpcore

#define MLPCORE_COPY(family) family##_avx512
#include "elementwise_copy.inl"
#undef MLPCORE_COPY

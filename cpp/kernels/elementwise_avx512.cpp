// The AVX-512 copy of the element-wise kernels (isa_regions.hpp). Compiled with the AVX-512
// flags of the GEMM's AVX-512 files; runs only after elementwise_isa() checked the CPU.
#include "isa_regions.hpp"

#include <immintrin.h>

#include "fma_probe.hpp"

namespace mlpcore {
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && \
    defined(__AVX512BW__)
bool elementwise_avx512_compiled() noexcept { return true; }

// fma_probe.hpp: 12 independent chains of 16-lane FMAs, `trips` times each.
float fma_chains_avx512(std::int64_t trips) noexcept {
  __m512 acc[12];
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int k = 0; k < 12; ++k) acc[k] = _mm512_set1_ps(float(k));
  for (std::int64_t t = 0; t < trips; ++t)
    for (int k = 0; k < 12; ++k) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
  __m512 sum = acc[0];
  for (int k = 1; k < 12; ++k) sum = _mm512_add_ps(sum, acc[k]);
  return _mm512_reduce_add_ps(sum);  // used, so the loop is kept
}
#else
float fma_chains_avx512(std::int64_t) noexcept { return 0.0f; }
bool elementwise_avx512_compiled() noexcept { return false; }  // built without the flags
#endif
}  // namespace mlpcore

// No losses copy: GCC's 16-lane code for the losses' rules ran slower than the AVX2 copy's
// 8 lanes (cross-entropy over 100 rows: 4 classes 1.84 against 1.31 us, 100 classes 32.0
// against 18.7 us), so AVX-512 CPUs run the AVX2 copy (losses.cpp).
#define MLPCORE_COPY_WITHOUT_LOSSES
#define MLPCORE_COPY(family) family##_avx512
#include "elementwise_copy.inl"
#undef MLPCORE_COPY
#undef MLPCORE_COPY_WITHOUT_LOSSES

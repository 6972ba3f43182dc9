// The AVX2+FMA copy of the element-wise kernels (isa_regions.hpp). Only this file and the GEMM's
// AVX2 micro-kernels are compiled with -mavx2 -mfma; it runs only after elementwise_isa() checked
// the CPU.
#include "isa_regions.hpp"

#include <immintrin.h>

#include "fma_probe.hpp"

namespace mlpcore {
#if defined(__AVX2__) && defined(__FMA__)
bool elementwise_avx2_compiled() noexcept { return true; }

// fma_probe.hpp: 12 independent chains of 8-lane FMAs, `trips` times each.
float fma_chains_avx2(std::int64_t trips) noexcept {
  __m256 acc[12];
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int k = 0; k < 12; ++k) acc[k] = _mm256_set1_ps(float(k));
  for (std::int64_t t = 0; t < trips; ++t)
    for (int k = 0; k < 12; ++k) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
  __m256 sum = acc[0];
  for (int k = 1; k < 12; ++k) sum = _mm256_add_ps(sum, acc[k]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = 0.0f;
  for (float v : lanes) total += v;
  return total;  // used, so the loop is kept
}
#else
float fma_chains_avx2(std::int64_t) noexcept { return 0.0f; }
bool elementwise_avx2_compiled() noexcept { return false; }  // built without the flags
#endif
}  // namespace mlpcore

#define MLPCORE_COPY(family) family##_avx2
#include "elementwise_copy.inl"
#undef MLPCORE_COPY

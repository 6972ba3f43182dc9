// AVX2 + FMA micro-kernels: f32 6x16 and f64 6x8 (12 ymm accumulators, 2 vectors per row), and
// the direct path of direct_simd.inl with the same vector traits.
// Only this file is compiled with -mavx2 -mfma (see gemm.cmake); it is only called after
// isa_supported(Isa::Avx2) said yes.
#include "ukernel.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace mlpcore::gemm {

bool ukernel_avx2_compiled() noexcept { return true; }

namespace {

// A lane mask for maskload, with its count of valid lanes (the first `valid`) for the stores:
// VMASKMOVPS / PD to memory takes about 20 cycles on AMD Zen 2 / 3 (measured 6.3 ns per store on
// a Zen 3, against 1 ns for a plain one), so a partial vector is written as plain stores of 4, 2
// and 1 lanes instead. The same lanes are written either way.
struct LaneMask {
  __m256i bits;
  int valid;
};
inline LaneMask lane_mask32(int valid) noexcept {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return {_mm256_cmpgt_epi32(_mm256_set1_epi32(valid), idx), valid};
}
inline LaneMask lane_mask64(int valid) noexcept {
  const __m256i idx = _mm256_setr_epi64x(0, 1, 2, 3);
  return {_mm256_cmpgt_epi64(_mm256_set1_epi64x(valid), idx), valid};
}
inline void store_first(float* p, int valid, __m256 v) noexcept {
  if (valid >= 8) {
    _mm256_storeu_ps(p, v);
    return;
  }
  __m128 x = _mm256_castps256_ps128(v);
  if (valid >= 4) {
    _mm_storeu_ps(p, x);
    x = _mm256_extractf128_ps(v, 1);
    p += 4;
    valid -= 4;
  }
  if (valid >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), x);
    x = _mm_movehl_ps(x, x);
    p += 2;
    valid -= 2;
  }
  if (valid >= 1) _mm_store_ss(p, x);
}
inline void store_first(double* p, int valid, __m256d v) noexcept {
  if (valid >= 4) {
    _mm256_storeu_pd(p, v);
    return;
  }
  __m128d x = _mm256_castpd256_pd128(v);
  if (valid >= 2) {
    _mm_storeu_pd(p, x);
    x = _mm256_extractf128_pd(v, 1);
    p += 2;
    valid -= 2;
  }
  if (valid >= 1) _mm_store_sd(p, x);
}

struct VF32x8 {
  using scalar = float;
  using vec = __m256;
  using mask = LaneMask;
  static constexpr int W = 8;
  static vec zero() noexcept { return _mm256_setzero_ps(); }
  static vec set1(float x) noexcept { return _mm256_set1_ps(x); }
  static vec load(const float* p) noexcept { return _mm256_loadu_ps(p); }
  static vec maskz_load(mask k, const float* p) noexcept { return _mm256_maskload_ps(p, k.bits); }
  static vec fmadd(vec a, vec b, vec c) noexcept { return _mm256_fmadd_ps(a, b, c); }
  static vec add(vec a, vec b) noexcept { return _mm256_add_ps(a, b); }
  static vec mul(vec a, vec b) noexcept { return _mm256_mul_ps(a, b); }
  // ordered compares: NaN gives 0, as in the scalar epilogue
  static vec relu(vec x) noexcept {  // unordered compare: NaN kept, as torch.relu
    return _mm256_and_ps(_mm256_cmp_ps(x, zero(), _CMP_NLE_UQ), x);
  }
  static vec step(vec x) noexcept {
    return _mm256_and_ps(_mm256_cmp_ps(x, zero(), _CMP_GT_OQ), set1(1.0f));
  }
  static void store(float* p, vec v) noexcept { _mm256_storeu_ps(p, v); }
  static void mask_store(float* p, mask k, vec v) noexcept { store_first(p, k.valid, v); }
  static mask make_mask(int valid) noexcept { return lane_mask32(valid); }
  static void prefetch(const void* p) noexcept {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  }
  // Lane q (< 4) of the result: the lanes of vector q added in a fixed tree, lane l + lane
  // l + 4, then l + 2, l + 1 (four vectors at once: halves of two paired in one shuffle)
  static vec sum4(vec a, vec b, vec c, vec d) noexcept {
    const vec ab = add(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    const vec cd = add(_mm256_permute2f128_ps(c, d, 0x20), _mm256_permute2f128_ps(c, d, 0x31));
    vec u = add(_mm256_shuffle_ps(ab, cd, 0x44), _mm256_shuffle_ps(ab, cd, 0xEE));
    u = add(u, _mm256_permute_ps(u, 0xB1));  // a, b, c, d in lanes 0, 4, 2, 6
    return _mm256_permutevar8x32_ps(u, _mm256_setr_epi32(0, 4, 2, 6, 0, 0, 0, 0));
  }
};

struct VF64x4 {
  using scalar = double;
  using vec = __m256d;
  using mask = LaneMask;
  static constexpr int W = 4;
  static vec zero() noexcept { return _mm256_setzero_pd(); }
  static vec set1(double x) noexcept { return _mm256_set1_pd(x); }
  static vec load(const double* p) noexcept { return _mm256_loadu_pd(p); }
  static vec maskz_load(mask k, const double* p) noexcept { return _mm256_maskload_pd(p, k.bits); }
  static vec fmadd(vec a, vec b, vec c) noexcept { return _mm256_fmadd_pd(a, b, c); }
  static vec add(vec a, vec b) noexcept { return _mm256_add_pd(a, b); }
  static vec mul(vec a, vec b) noexcept { return _mm256_mul_pd(a, b); }
  static vec relu(vec x) noexcept {
    return _mm256_and_pd(_mm256_cmp_pd(x, zero(), _CMP_NLE_UQ), x);
  }
  static vec step(vec x) noexcept {
    return _mm256_and_pd(_mm256_cmp_pd(x, zero(), _CMP_GT_OQ), set1(1.0));
  }
  static void store(double* p, vec v) noexcept { _mm256_storeu_pd(p, v); }
  static void mask_store(double* p, mask k, vec v) noexcept { store_first(p, k.valid, v); }
  static mask make_mask(int valid) noexcept { return lane_mask64(valid); }
  static void prefetch(const void* p) noexcept {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  }
  // as VF32x8::sum4: lane l + lane l + 2, then l + 1
  static vec sum4(vec a, vec b, vec c, vec d) noexcept {
    const vec ab = add(_mm256_permute2f128_pd(a, b, 0x20), _mm256_permute2f128_pd(a, b, 0x31));
    const vec cd = add(_mm256_permute2f128_pd(c, d, 0x20), _mm256_permute2f128_pd(c, d, 0x31));
    const vec u = _mm256_hadd_pd(ab, cd);     // a, c, b, d
    return _mm256_permute4x64_pd(u, 0xD8);  // (lanes 0, 2, 1, 3)
  }
};

#include "ukernel_simd.inl"
#include "direct_simd.inl"

}  // namespace

void ukernel_f32_6x16_avx2(index_t kc, const float* a, const float* b, index_t rsb, float* c,
                           index_t ldc, int m, int n, bool accumulate,
                           const RegisterEpilogue<float>* ep) noexcept {
  constexpr Blocking blk = cfg::kAvx2F32;
  static_assert(blk.mr == 6 && blk.nr == 2 * VF32x8::W, "name and shape must agree");
  ukernel_dispatch<VF32x8, blk.mr, 2>(std::make_integer_sequence<int, blk.mr>{}, kc, a, b, rsb, c,
                                       ldc, m, n, accumulate, ep);
}

void ukernel_f64_6x8_avx2(index_t kc, const double* a, const double* b, index_t rsb, double* c,
                          index_t ldc, int m, int n, bool accumulate,
                          const RegisterEpilogue<double>* ep) noexcept {
  constexpr Blocking blk = cfg::kAvx2F64;
  static_assert(blk.mr == 6 && blk.nr == 2 * VF64x4::W, "name and shape must agree");
  ukernel_dispatch<VF64x4, blk.mr, 2>(std::make_integer_sequence<int, blk.mr>{}, kc, a, b, rsb, c,
                                       ldc, m, n, accumulate, ep);
}

// The direct path (direct_simd.inl): row tiles of 6 rows x up to 2 ymm vectors (12 of the 16 ymm
// registers, the micro-kernel's shape).
bool direct_f32_avx2(bool ta, bool tb, index_t M, index_t N, index_t K, const float* A,
                     index_t lda, const float* B, index_t ldb, float* C, index_t ldc,
                     bool accumulate, const RegisterEpilogue<float>& ep, PackB<float> pack_b,
                     index_t nr) noexcept {
  return direct<VF32x8, 2, 6>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, ep, pack_b,
                                 nr);
}

bool direct_f64_avx2(bool ta, bool tb, index_t M, index_t N, index_t K, const double* A,
                     index_t lda, const double* B, index_t ldb, double* C, index_t ldc,
                     bool accumulate, const RegisterEpilogue<double>& ep, PackB<double> pack_b,
                     index_t nr) noexcept {
  return direct<VF64x4, 2, 6>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, ep, pack_b,
                                 nr);
}

}  // namespace mlpcore::gemm

#else  // built without the ISA flags (non-x86 or another compiler): never dispatched to

namespace mlpcore::gemm {
bool ukernel_avx2_compiled() noexcept { return false; }
void ukernel_f32_6x16_avx2(index_t, const float*, const float*, index_t, float*, index_t, int, int,
                           bool, const RegisterEpilogue<float>*) noexcept {}
void ukernel_f64_6x8_avx2(index_t, const double*, const double*, index_t, double*, index_t, int,
                          int, bool, const RegisterEpilogue<double>*) noexcept {}
bool direct_f32_avx2(bool, bool, index_t, index_t, index_t, const float*, index_t, const float*,
                     index_t, float*, index_t, bool, const RegisterEpilogue<float>&, PackB<float>,
                     index_t) noexcept {
  return false;
}
bool direct_f64_avx2(bool, bool, index_t, index_t, index_t, const double*, index_t,
                     const double*, index_t, double*, index_t, bool,
                     const RegisterEpilogue<double>&, PackB<double>, index_t) noexcept {
  return false;
}
}  // namespace mlpcore::gemm
#endif

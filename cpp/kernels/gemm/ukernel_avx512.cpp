// AVX-512 micro-kernels: f32 12x32 and f64 12x16 (24 zmm accumulators, 2 vectors per row), and
// the direct path of direct_simd.inl with the same vector traits.
// Only this file is compiled with AVX-512 flags (see gemm.cmake); it is only called after
// isa_supported(Isa::Avx512) said yes.
#include "ukernel.hpp"

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__FMA__)
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace mlpcore::gemm {

bool ukernel_avx512_compiled() noexcept { return true; }

namespace {

struct VF32x16 {
  using scalar = float;
  using vec = __m512;
  using mask = __mmask16;
  static constexpr int W = 16;
  static vec zero() noexcept { return _mm512_setzero_ps(); }
  static vec set1(float x) noexcept { return _mm512_set1_ps(x); }
  static vec load(const float* p) noexcept { return _mm512_loadu_ps(p); }
  static vec maskz_load(mask k, const float* p) noexcept { return _mm512_maskz_loadu_ps(k, p); }
  static vec fmadd(vec a, vec b, vec c) noexcept { return _mm512_fmadd_ps(a, b, c); }
  static vec add(vec a, vec b) noexcept { return _mm512_add_ps(a, b); }
  static vec mul(vec a, vec b) noexcept { return _mm512_mul_ps(a, b); }
  // relu keeps NaN (unordered compare, as torch.relu); step gives 0 for NaN, as the scalar
  // epilogue and torch's threshold_backward
  static vec relu(vec x) noexcept {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, zero(), _CMP_NLE_UQ), x);
  }
  static vec step(vec x) noexcept {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, zero(), _CMP_GT_OQ), set1(1.0f));
  }
  static void store(float* p, vec v) noexcept { _mm512_storeu_ps(p, v); }
  static void mask_store(float* p, mask k, vec v) noexcept { _mm512_mask_storeu_ps(p, k, v); }
  static mask make_mask(int valid) noexcept {
    return valid >= W ? mask(0xFFFF) : valid <= 0 ? mask(0) : mask((1u << valid) - 1u);
  }
  static void prefetch(const void* p) noexcept {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  }
  // Blocks of 4 lanes: two from a, two from b (kImm as for _mm512_shuffle_f32x4), and lanes
  // within blocks (as _mm512_permute_ps). The all-lanes mask forms: GCC 12 warns of the plain
  // ones' undefined pass-through operand.
  template <int kImm>
  static vec blocks(vec a, vec b) noexcept {
    return _mm512_mask_shuffle_f32x4(a, 0xFFFF, a, b, kImm);
  }
  template <int kImm>
  static vec within(vec a) noexcept { return _mm512_mask_permute_ps(a, 0xFFFF, a, kImm); }
  // Lane q (< 4) of the result: the lanes of vector q added in a fixed tree, lane l + lane
  // l + 8, then l + 4, l + 2, l + 1 (four vectors at once: halves of two paired in a shuffle)
  static vec sum4(vec a, vec b, vec c, vec d) noexcept {
    const vec ab = add(blocks<0x44>(a, b), blocks<0xEE>(a, b));
    const vec cd = add(blocks<0x44>(c, d), blocks<0xEE>(c, d));
    vec u = add(blocks<0x88>(ab, cd), blocks<0xDD>(ab, cd));
    u = add(u, within<0x4E>(u));
    u = add(u, within<0xB1>(u));
    const __m512i first = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_mask_permutexvar_ps(u, 0xFFFF, first, u);
  }
};

struct VF64x8 {
  using scalar = double;
  using vec = __m512d;
  using mask = __mmask8;
  static constexpr int W = 8;
  static vec zero() noexcept { return _mm512_setzero_pd(); }
  static vec set1(double x) noexcept { return _mm512_set1_pd(x); }
  static vec load(const double* p) noexcept { return _mm512_loadu_pd(p); }
  static vec maskz_load(mask k, const double* p) noexcept { return _mm512_maskz_loadu_pd(k, p); }
  static vec fmadd(vec a, vec b, vec c) noexcept { return _mm512_fmadd_pd(a, b, c); }
  static vec add(vec a, vec b) noexcept { return _mm512_add_pd(a, b); }
  static vec mul(vec a, vec b) noexcept { return _mm512_mul_pd(a, b); }
  static vec relu(vec x) noexcept {
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, zero(), _CMP_NLE_UQ), x);
  }
  static vec step(vec x) noexcept {
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, zero(), _CMP_GT_OQ), set1(1.0));
  }
  static void store(double* p, vec v) noexcept { _mm512_storeu_pd(p, v); }
  static void mask_store(double* p, mask k, vec v) noexcept { _mm512_mask_storeu_pd(p, k, v); }
  static mask make_mask(int valid) noexcept {
    return valid >= W ? mask(0xFF) : valid <= 0 ? mask(0) : mask((1u << valid) - 1u);
  }
  static void prefetch(const void* p) noexcept {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  }
  template <int kImm>  // (as VF32x16's, in blocks of 2 lanes)
  static vec blocks(vec a, vec b) noexcept {
    return _mm512_mask_shuffle_f64x2(a, 0xFF, a, b, kImm);
  }
  template <int kImm>
  static vec within(vec a) noexcept { return _mm512_mask_permute_pd(a, 0xFF, a, kImm); }
  // as VF32x16::sum4: lane l + lane l + 4, then l + 2, l + 1
  static vec sum4(vec a, vec b, vec c, vec d) noexcept {
    const vec ab = add(blocks<0x44>(a, b), blocks<0xEE>(a, b));
    const vec cd = add(blocks<0x44>(c, d), blocks<0xEE>(c, d));
    vec u = add(blocks<0x88>(ab, cd), blocks<0xDD>(ab, cd));
    u = add(u, within<0x55>(u));
    return _mm512_mask_permutexvar_pd(u, 0xFF, _mm512_setr_epi64(0, 2, 4, 6, 0, 0, 0, 0), u);
  }
};

#include "ukernel_simd.inl"
#include "direct_simd.inl"

}  // namespace

void ukernel_f32_12x32_avx512(index_t kc, const float* a, const float* b, index_t rsb, float* c,
                              index_t ldc, int m, int n, bool accumulate,
                              const RegisterEpilogue<float>* ep) noexcept {
  constexpr Blocking blk = cfg::kAvx512F32;
  static_assert(blk.mr == 12 && blk.nr == 2 * VF32x16::W, "name and shape must agree");
  ukernel_dispatch<VF32x16, blk.mr, 2>(std::make_integer_sequence<int, blk.mr>{}, kc, a, b, rsb, c,
                                        ldc, m, n, accumulate, ep);
}

void ukernel_f64_12x16_avx512(index_t kc, const double* a, const double* b, index_t rsb, double* c,
                              index_t ldc, int m, int n, bool accumulate,
                              const RegisterEpilogue<double>* ep) noexcept {
  constexpr Blocking blk = cfg::kAvx512F64;
  static_assert(blk.mr == 12 && blk.nr == 2 * VF64x8::W, "name and shape must agree");
  ukernel_dispatch<VF64x8, blk.mr, 2>(std::make_integer_sequence<int, blk.mr>{}, kc, a, b, rsb, c,
                                       ldc, m, n, accumulate, ep);
}

// The direct path (direct_simd.inl): row tiles of 6 rows x up to 4 zmm vectors (24 accumulators,
// 29 of the 32 registers with the loaded vectors; 4 rows left 4 broadcasts per 16 FMAs, and
// 100 x 100 x 100 NN ran 5% (float32) to 10% (float64) slower).
bool direct_f32_avx512(bool ta, bool tb, index_t M, index_t N, index_t K, const float* A,
                       index_t lda, const float* B, index_t ldb, float* C, index_t ldc,
                       bool accumulate, const RegisterEpilogue<float>& ep, PackB<float> pack_b,
                       index_t nr) noexcept {
  return direct<VF32x16, 4, 6>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, ep, pack_b,
                                 nr);
}

bool direct_f64_avx512(bool ta, bool tb, index_t M, index_t N, index_t K, const double* A,
                       index_t lda, const double* B, index_t ldb, double* C, index_t ldc,
                       bool accumulate, const RegisterEpilogue<double>& ep, PackB<double> pack_b,
                       index_t nr) noexcept {
  return direct<VF64x8, 4, 6>(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, ep, pack_b,
                                 nr);
}

}  // namespace mlpcore::gemm

#else  // built without the ISA flags (non-x86 or another compiler): never dispatched to

namespace mlpcore::gemm {
bool ukernel_avx512_compiled() noexcept { return false; }
void ukernel_f32_12x32_avx512(index_t, const float*, const float*, index_t, float*, index_t, int,
                              int, bool, const RegisterEpilogue<float>*) noexcept {}
void ukernel_f64_12x16_avx512(index_t, const double*, const double*, index_t, double*, index_t,
                              int, int, bool, const RegisterEpilogue<double>*) noexcept {}
bool direct_f32_avx512(bool, bool, index_t, index_t, index_t, const float*, index_t, const float*,
                       index_t, float*, index_t, bool, const RegisterEpilogue<float>&, PackB<float>,
                       index_t) noexcept {
  return false;
}
bool direct_f64_avx512(bool, bool, index_t, index_t, index_t, const double*, index_t,
                       const double*, index_t, double*, index_t, bool,
                       const RegisterEpilogue<double>&, PackB<double>, index_t) noexcept {
  return false;
}
}  // namespace mlpcore::gemm
#endif

// Direct products for small shapes (the layers of small networks and small batches): no packing
// of op(A), no threads. Each row tile of C is held in registers (up to 64 float / 32 double
// columns with AVX-512, 16 / 8 with AVX2) while K broadcasts of op(A) meet rows of op(B), read
// in place (op(B) = B^T is first copied: into the packed path's K x NR micro-panels by its
// packer, or into K x N rows when K is very small). Every element is summed from zero in
// increasing p with one FMA per step and then stored or added to C: the same arithmetic as the
// micro-kernel of the same ISA on a single K block, so the choice between the two paths never
// changes a result. The body (direct_simd.inl) is compiled with each ISA's micro-kernels, in
// ukernel_avx512.cpp and ukernel_avx2.cpp; gemm.cpp reaches it through KernelSet::direct.
#pragma once
#include "config.hpp"
#include "register_epilogue.hpp"

namespace mlpcore::gemm {

template <typename T>
using PackB = void (*)(bool trans_b, const T* B, index_t ldb, index_t p0, index_t j0, index_t kc,
                       index_t nc, T* dst) noexcept;

// ep: the part of the epilogue applied in registers (register_epilogue.hpp). pack_b / nr: the
// packed path's B packer of the same ISA and its micro-panel width (for op(B) = B^T).
// False (nothing written) if its scratch buffer could not be allocated.
template <typename T>
using Direct = bool (*)(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const T* A,
                        index_t lda, const T* B, index_t ldb, T* C, index_t ldc, bool accumulate,
                        const RegisterEpilogue<T>& ep, PackB<T> pack_b, index_t nr) noexcept;

bool direct_f32_avx512(bool, bool, index_t, index_t, index_t, const float*, index_t, const float*,
                       index_t, float*, index_t, bool, const RegisterEpilogue<float>&,
                       PackB<float>, index_t) noexcept;
bool direct_f64_avx512(bool, bool, index_t, index_t, index_t, const double*, index_t,
                       const double*, index_t, double*, index_t, bool,
                       const RegisterEpilogue<double>&, PackB<double>, index_t) noexcept;
bool direct_f32_avx2(bool, bool, index_t, index_t, index_t, const float*, index_t, const float*,
                     index_t, float*, index_t, bool, const RegisterEpilogue<float>&, PackB<float>,
                     index_t) noexcept;
bool direct_f64_avx2(bool, bool, index_t, index_t, index_t, const double*, index_t, const double*,
                     index_t, double*, index_t, bool, const RegisterEpilogue<double>&,
                     PackB<double>, index_t) noexcept;

}  // namespace mlpcore::gemm

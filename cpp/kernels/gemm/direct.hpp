// Direct products for small shapes (the layers of small networks and small batches): no packing,
// no threads. Each row of C is held in registers, up to 64 float (32 double) columns at a time,
// while K broadcasts of op(A) meet rows of op(B) (op(B) = B^T is first copied, into the packed
// path's K x NR micro-panels by its AVX-512 packer, or into K x N rows when K is very small). Every element is summed from zero in increasing p with one FMA per step and then
// stored or added to C: the same arithmetic as the AVX-512 micro-kernel on a single K block, so
// the choice between the two paths never changes a result.
#pragma once
#include "config.hpp"
#include "register_epilogue.hpp"

namespace mlpcore::gemm {

// Whether the direct path takes this shape (AVX-512 only; K within one K block).
template <typename T>
bool direct_applies(index_t M, index_t N, index_t K) noexcept;

// ep: the part of the epilogue applied in registers (register_epilogue.hpp).
// False (nothing written) if its scratch buffer could not be allocated.
template <typename T>
bool gemm_direct_avx512(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const T* A,
                        index_t lda, const T* B, index_t ldb, T* C, index_t ldc, bool accumulate,
                        const RegisterEpilogue<T>& ep) noexcept;

// Whether direct_avx512.cpp and the AVX-512 packer it uses were built with their ISA flags
// (false: stubs, never dispatched to).
bool direct_avx512_compiled() noexcept;

}  // namespace mlpcore::gemm

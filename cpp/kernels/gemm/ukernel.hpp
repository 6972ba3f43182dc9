// Register-blocked micro-kernels and the runtime ISA dispatch.
//
// Every micro-kernel computes an m x n tile (m <= MR, n <= NR) of C:
//   C[i, j] (+)= sum_{p < kc} a[p * MR + i] * b[p * rsb + j]
// a: packed A micro-panel (MR values per k step, rows >= m may hold anything finite or not: they
//    are never stored). b: kc rows of NR values with row stride rsb (rsb == NR for a packed B
//    micro-panel, ldb when B is read in place; then only the first n columns are read).
// Each output element is accumulated from zero in increasing p with one fused multiply-add per
// step (plain multiply + add in the portable kernel), then stored (accumulate == false) or added
// to C (accumulate == true). The tile split therefore never changes a result.
// ep (nullptr: none) is applied to the tile in registers before the store (only with the last
// K block, never with accumulate); its pointers are at the tile's origin.
//
// The direct path for small products (no packing of op(A), no threads; see direct_simd.inl) is
// compiled with the micro-kernels of each SIMD ISA and sums exactly like them.
#pragma once
#include <vector>

#include "config.hpp"
#include "register_epilogue.hpp"

namespace mlpcore::gemm {

template <typename T>
using UKernel = void (*)(index_t kc, const T* a, const T* b, index_t rsb, T* c, index_t ldc,
                         int m, int n, bool accumulate, const RegisterEpilogue<T>* ep) noexcept;

// Packing into the micro-panel formats of pack.hpp, for the kernel set's MR / NR:
// the mc x kc block of op(A) at (i0, p0), and the kc x nc block of op(B) at (p0, j0).
template <typename T>
using PackA = void (*)(bool trans_a, const T* A, index_t lda, index_t i0, index_t p0, index_t mc,
                       index_t kc, T* dst) noexcept;
template <typename T>
using PackB = void (*)(bool trans_b, const T* B, index_t ldb, index_t p0, index_t j0, index_t kc,
                       index_t nc, T* dst) noexcept;

// The whole product C (+)= op(A) op(B) by the direct path, with the register epilogue ep.
// pack_b / nr: the packed path's B packer of the same ISA and its micro-panel width (used for
// op(B) = B^T). False (nothing written) if its scratch buffer could not be allocated.
template <typename T>
using Direct = bool (*)(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const T* A,
                        index_t lda, const T* B, index_t ldb, T* C, index_t ldc, bool accumulate,
                        const RegisterEpilogue<T>& ep, PackB<T> pack_b, index_t nr) noexcept;

// Portable C++ (also a test oracle).
void ukernel_f32_4x16_portable(index_t, const float*, const float*, index_t, float*, index_t,
                               int, int, bool, const RegisterEpilogue<float>*) noexcept;
void ukernel_f64_4x8_portable(index_t, const double*, const double*, index_t, double*, index_t,
                              int, int, bool, const RegisterEpilogue<double>*) noexcept;
// AVX2 + FMA (compiled with -mavx2 -mfma only in ukernel_avx2.cpp).
void ukernel_f32_6x16_avx2(index_t, const float*, const float*, index_t, float*, index_t,
                           int, int, bool, const RegisterEpilogue<float>*) noexcept;
void ukernel_f64_6x8_avx2(index_t, const double*, const double*, index_t, double*, index_t,
                          int, int, bool, const RegisterEpilogue<double>*) noexcept;
// AVX-512 F/VL/BW/DQ (compiled with AVX-512 flags only in ukernel_avx512.cpp).
void ukernel_f32_12x32_avx512(index_t, const float*, const float*, index_t, float*, index_t,
                              int, int, bool, const RegisterEpilogue<float>*) noexcept;
void ukernel_f64_12x16_avx512(index_t, const double*, const double*, index_t, double*, index_t,
                              int, int, bool, const RegisterEpilogue<double>*) noexcept;

// The direct path: AVX2 in ukernel_avx2.cpp, AVX-512 in ukernel_avx512.cpp.
bool direct_f32_avx2(bool, bool, index_t, index_t, index_t, const float*, index_t, const float*,
                     index_t, float*, index_t, bool, const RegisterEpilogue<float>&, PackB<float>,
                     index_t) noexcept;
bool direct_f64_avx2(bool, bool, index_t, index_t, index_t, const double*, index_t, const double*,
                     index_t, double*, index_t, bool, const RegisterEpilogue<double>&,
                     PackB<double>, index_t) noexcept;
bool direct_f32_avx512(bool, bool, index_t, index_t, index_t, const float*, index_t, const float*,
                       index_t, float*, index_t, bool, const RegisterEpilogue<float>&,
                       PackB<float>, index_t) noexcept;
bool direct_f64_avx512(bool, bool, index_t, index_t, index_t, const double*, index_t,
                       const double*, index_t, double*, index_t, bool,
                       const RegisterEpilogue<double>&, PackB<double>, index_t) noexcept;

// AVX-512 packing (pack_avx512.cpp; MR 12, NR 32 for float and 16 for double).
void pack_a_f32_avx512(bool, const float*, index_t, index_t, index_t, index_t, index_t,
                       float*) noexcept;
void pack_b_f32_avx512(bool, const float*, index_t, index_t, index_t, index_t, index_t,
                       float*) noexcept;
void pack_a_f64_avx512(bool, const double*, index_t, index_t, index_t, index_t, index_t,
                       double*) noexcept;
void pack_b_f64_avx512(bool, const double*, index_t, index_t, index_t, index_t, index_t,
                       double*) noexcept;

// Whether the SIMD files were built with their ISA flags (false: stubs, never dispatched to).
bool ukernel_avx2_compiled() noexcept;
bool ukernel_avx512_compiled() noexcept;
bool pack_avx512_compiled() noexcept;

// ---- dispatch (dispatch.cpp) ----
const char* isa_name(Isa isa) noexcept;
bool isa_from_name(const char* name, Isa* out) noexcept;
// Whether this CPU (and this build) can run the ISA's micro-kernels.
bool isa_supported(Isa isa) noexcept;
// The best supported ISA.
Isa isa_best() noexcept;
// The ISA used by gemm(): MLPCORE_GEMM_ISA (read once, on first use) if set to a supported name,
// else the best one.
Isa isa_active() noexcept;
// Test hook: switch the ISA in-process. Returns false (and changes nothing) if unsupported.
bool set_isa(Isa isa) noexcept;

template <typename T>
struct KernelSet {
  Blocking blk;
  UKernel<T> ukernel;
  PackA<T> pack_a;
  PackB<T> pack_b;
  Direct<T> direct;  // the small-product path of the same ISA; nullptr: none
};

template <typename T>
KernelSet<T> kernel_set(Isa isa) noexcept;

// One row of the ISA table (dispatch.cpp): an ISA's name, whether this CPU and build can run
// it, and its kernels and blocking for each dtype.
struct IsaEntry {
  Isa isa;
  const char* name;
  bool (*usable)() noexcept;
  KernelSet<float> f32;
  KernelSet<double> f64;
};
// Every ISA, in order of preference.
const std::vector<IsaEntry>& isa_table() noexcept;

}  // namespace mlpcore::gemm

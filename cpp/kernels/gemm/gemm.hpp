// The one GEMM entry point used by the network and by mc.matmul.
//
//   C = op(A) * op(B)          (accumulate == false)
//   C = op(A) * op(B) + C      (accumulate == true)
//
// op(A) is M x K: A itself (row-major, leading dimension lda) when trans_a is false, or the
// transpose of a K x M row-major A when trans_a is true. Likewise op(B) is K x N.
// C is M x N row-major with leading dimension ldc. All pointers are to distinct memory.
// Each output element is summed over K in one fixed order whatever the thread count, so results
// are bitwise identical for 1 and N threads.
#pragma once

#include <cstdint>
#include <vector>

#include "../activations.hpp"
#include "../common.hpp"

namespace mlpcore::gemm {

template <typename T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K,
          const T* A, index_t lda, const T* B, index_t ldb,
          T* C, index_t ldc, bool accumulate) noexcept;

// Plain triple loop, single-threaded: the test oracle and the fallback.
template <typename T>
void gemm_reference(bool trans_a, bool trans_b, index_t M, index_t N, index_t K,
                    const T* A, index_t lda, const T* B, index_t ldb,
                    T* C, index_t ldc, bool accumulate) noexcept;

}  // namespace mlpcore::gemm

namespace mlpcore::gemm {

// What gemm_fused applies to each element of C once its full K sum is known (never used with
// accumulation). Forward use: bias and activation while C is written. Backward use: the
// activation derivative of the previous layer applied on the dX write-back.
template <typename T>
struct Epilogue {
  const T* bias = nullptr;     // length N; c += bias[j]
  Act act = Act::Identity;     // element-wise kinds only (never Softmax)
  ActParams params;            // for act and deriv_act
  T* act_out = nullptr;        // M x N, leading dimension ldc: receives act(c); C keeps c (= z)
  const T* deriv_z = nullptr;  // M x N, ld ldc: pre-activation saved by the forward pass
  const T* deriv_y = nullptr;  // M x N, ld ldc: activation output saved by the forward pass
  Act deriv_act = Act::Identity;  // if deriv_z is set: c *= act_derivative(deriv_act, z, y)
};

// C = op(A) op(B), then the epilogue. Same threading guarantees as gemm().
template <typename T>
void gemm_fused(bool trans_a, bool trans_b, index_t M, index_t N, index_t K,
                const T* A, index_t lda, const T* B, index_t ldb,
                T* C, index_t ldc, const Epilogue<T>& ep) noexcept;

// op(B) (K x N, not transposed) packed once for the running ISA's blocking and K split, for a B
// that many products read unchanged (the weights of a frozen model: mc.Sequential.freeze). A
// product given it skips packing B and sums every element as gemm_fused does with B itself;
// if the ISA or the blocking changed since (the ISA switch, the cache-size hook), it packs B
// as usual.
template <typename T>
struct PrepackedB {
  std::vector<T> data;  // K blocks one after the other; in each, NR-column panels of kc rows
  int isa = -1;
  int nr = 0;
  index_t K = 0, N = 0, kc = 0, n_padded = 0;
};

// False (and out empty) if the copy could not be allocated.
template <typename T>
bool prepack_b(index_t K, index_t N, const T* B, index_t ldb, PrepackedB<T>* out) noexcept;

// gemm_fused(false, false, ...) with B also given packed.
template <typename T>
void gemm_fused_prepacked(index_t M, index_t N, index_t K, const T* A, index_t lda, const T* B,
                          index_t ldb, const PrepackedB<T>& pre, T* C, index_t ldc,
                          const Epilogue<T>& ep) noexcept;

// The epilogue as a separate pass over an M x N block of C (the test reference of the fused
// write-back; gemm_reference followed by this is the oracle of gemm_fused).
template <typename T>
void epilogue_reference(index_t M, index_t N, T* C, index_t ldc, const Epilogue<T>& ep) noexcept;

// Threads' help in BLIS's order (gemm.cpp). Test hook: the thread numbered `thread` pauses
// `microseconds` after publishing each block of its rectangle (a negative thread: none), so that
// the others take units of it. units_helped: units computed by a thread other than their owner,
// since the start of the process.
void set_help_test_delay(int thread, int microseconds) noexcept;
std::uint64_t units_helped() noexcept;

}  // namespace mlpcore::gemm

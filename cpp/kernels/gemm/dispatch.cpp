// Runtime ISA detection and selection for the GEMM micro-kernels.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "pack.hpp"
#include "ukernel.hpp"

namespace mlpcore::gemm {

const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Portable: return "portable";
  }
  return "portable";
}

bool isa_from_name(const char* name, Isa* out) noexcept {
  if (!name) return false;
  for (Isa isa : {Isa::Avx512, Isa::Avx2, Isa::Portable}) {
    if (std::strcmp(name, isa_name(isa)) == 0) {
      *out = isa;
      return true;
    }
  }
  return false;
}

bool isa_supported(Isa isa) noexcept {
  switch (isa) {
    case Isa::Portable: return true;
#if defined(__x86_64__) || defined(__i386__)
    case Isa::Avx2:
      return ukernel_avx2_compiled() && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma");
    case Isa::Avx512:
      return ukernel_avx512_compiled() && pack_avx512_compiled() &&
             __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
    default: return false;
#endif
  }
  return false;
}

Isa isa_best() noexcept {
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Portable;
}

namespace {
Isa initial_isa() noexcept {
  Isa isa;
  if (isa_from_name(std::getenv("MLPCORE_GEMM_ISA"), &isa) && isa_supported(isa)) return isa;
  return isa_best();
}

std::atomic<int>& active_slot() noexcept {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};  // env read once
  return slot;
}
}  // namespace

Isa isa_active() noexcept { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

bool set_isa(Isa isa) noexcept {
  if (!isa_supported(isa)) return false;
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

namespace {
// The baseline-ISA packing of pack.hpp for a kernel set's MR / NR.
template <typename T, int MR>
void pack_a_generic(bool trans_a, const T* A, index_t lda, index_t i0, index_t p0, index_t mc,
                    index_t kc, T* dst) noexcept {
  pack_a(trans_a, A, lda, i0, p0, mc, kc, MR, dst);
}
template <typename T, int NR>
void pack_b_generic(bool trans_b, const T* B, index_t ldb, index_t p0, index_t j0, index_t kc,
                    index_t nc, T* dst) noexcept {
  pack_b(trans_b, B, ldb, p0, j0, kc, nc, NR, dst);
}
template <typename T, const Blocking& B>
KernelSet<T> generic_set(UKernel<T> ukernel, Direct<T> direct) noexcept {
  return {B, ukernel, &pack_a_generic<T, B.mr>, &pack_b_generic<T, B.nr>, direct};
}
}  // namespace

template <>
KernelSet<float> kernel_set<float>(Isa isa) noexcept {
  switch (isa) {
    case Isa::Avx512:
      return {cfg::kAvx512F32, ukernel_f32_12x32_avx512, pack_a_f32_avx512, pack_b_f32_avx512,
              direct_f32_avx512};
    case Isa::Avx2:
      return generic_set<float, cfg::kAvx2F32>(ukernel_f32_6x16_avx2, direct_f32_avx2);
    case Isa::Portable: break;
  }
  return generic_set<float, cfg::kPortableF32>(ukernel_f32_4x16_portable, nullptr);
}

template <>
KernelSet<double> kernel_set<double>(Isa isa) noexcept {
  switch (isa) {
    case Isa::Avx512:
      return {cfg::kAvx512F64, ukernel_f64_12x16_avx512, pack_a_f64_avx512, pack_b_f64_avx512,
              direct_f64_avx512};
    case Isa::Avx2:
      return generic_set<double, cfg::kAvx2F64>(ukernel_f64_6x8_avx2, direct_f64_avx2);
    case Isa::Portable: break;
  }
  return generic_set<double, cfg::kPortableF64>(ukernel_f64_4x8_portable, nullptr);
}

}  // namespace mlpcore::gemm

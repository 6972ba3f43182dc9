// Runtime ISA detection and selection for the GEMM micro-kernels.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

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
      return ukernel_avx512_compiled() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
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

template <>
KernelSet<float> kernel_set<float>(Isa isa) noexcept {
  switch (isa) {
    case Isa::Avx512: return {blocking_for<float>(isa), ukernel_f32_12x32_avx512};
    case Isa::Avx2: return {blocking_for<float>(isa), ukernel_f32_6x16_avx2};
    case Isa::Portable: break;
  }
  return {blocking_for<float>(Isa::Portable), ukernel_f32_4x16_portable};
}

template <>
KernelSet<double> kernel_set<double>(Isa isa) noexcept {
  switch (isa) {
    case Isa::Avx512: return {blocking_for<double>(isa), ukernel_f64_12x16_avx512};
    case Isa::Avx2: return {blocking_for<double>(isa), ukernel_f64_6x8_avx2};
    case Isa::Portable: break;
  }
  return {blocking_for<double>(Isa::Portable), ukernel_f64_4x8_portable};
}

}  // namespace mlpcore::gemm

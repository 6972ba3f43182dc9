// Runtime ISA detection and selection for the GEMM micro-kernels.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <vector>

#include "pack.hpp"
#include "ukernel.hpp"

namespace mlpcore::gemm {

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

bool cpu_has_avx512() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return ukernel_avx512_compiled() && pack_avx512_compiled() &&
         __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}
bool cpu_has_avx2() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return ukernel_avx2_compiled() && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma");
#else
  return false;
#endif
}
bool always() noexcept { return true; }

// The ISA table (as BLIS registers each architecture's kernels and blocking in one place): one
// row per ISA, in order of preference, with its tuned blocking (config.hpp), which
// derive_blocking then fits to the caches. Name lookup, the best ISA, kernel_info and the error
// messages iterate it; nothing else in the GEMM names an ISA.
std::vector<IsaEntry> make_table(const CacheSizes& caches) {
  std::vector<IsaEntry> table = {
      {Isa::Avx512, "avx512", cpu_has_avx512,
       {cfg::kAvx512F32, ukernel_f32_12x32_avx512, pack_a_f32_avx512, pack_b_f32_avx512,
        direct_f32_avx512},
       {cfg::kAvx512F64, ukernel_f64_12x16_avx512, pack_a_f64_avx512, pack_b_f64_avx512,
        direct_f64_avx512}},
      {Isa::Avx2, "avx2", cpu_has_avx2,
       generic_set<float, cfg::kAvx2F32>(ukernel_f32_6x16_avx2, direct_f32_avx2),
       generic_set<double, cfg::kAvx2F64>(ukernel_f64_6x8_avx2, direct_f64_avx2)},
      {Isa::Portable, "portable", always,
       generic_set<float, cfg::kPortableF32>(ukernel_f32_4x16_portable, nullptr),
       generic_set<double, cfg::kPortableF64>(ukernel_f64_4x8_portable, nullptr)},
  };
  for (IsaEntry& e : table) {
    e.f32.blk = derive_blocking(e.f32.blk, sizeof(float), caches);
    e.f64.blk = derive_blocking(e.f64.blk, sizeof(double), caches);
  }
  return table;
}

// The table for the current caches. A rebuild (the cache-size test hook) publishes a new table
// and keeps the old ones alive, so a reference taken before stays valid.
std::atomic<const std::vector<IsaEntry>*>& table_slot() noexcept {
  static std::atomic<const std::vector<IsaEntry>*> slot{nullptr};
  return slot;
}
std::list<std::vector<IsaEntry>>& table_store() noexcept {
  static std::list<std::vector<IsaEntry>> store;
  return store;
}
std::mutex& table_mutex() noexcept {
  static std::mutex m;
  return m;
}
}  // namespace

void rebuild_isa_table() noexcept {
  std::lock_guard<std::mutex> lock(table_mutex());
  table_store().push_back(make_table(cache_sizes()));
  table_slot().store(&table_store().back(), std::memory_order_release);
}

const std::vector<IsaEntry>& isa_table() noexcept {
  const std::vector<IsaEntry>* table = table_slot().load(std::memory_order_acquire);
  if (!table) {
    std::lock_guard<std::mutex> lock(table_mutex());
    table = table_slot().load(std::memory_order_acquire);
    if (!table) {
      table_store().push_back(make_table(cache_sizes()));
      table = &table_store().back();
      table_slot().store(table, std::memory_order_release);
    }
  }
  return *table;
}

const IsaEntry& isa_entry(Isa isa) noexcept {
  for (const IsaEntry& e : isa_table())
    if (e.isa == isa) return e;
  return isa_table().back();  // unreachable: every Isa has a row
}

const char* isa_name(Isa isa) noexcept { return isa_entry(isa).name; }

bool isa_from_name(const char* name, Isa* out) noexcept {
  if (!name) return false;
  for (const IsaEntry& e : isa_table()) {
    if (std::strcmp(name, e.name) == 0) {
      *out = e.isa;
      return true;
    }
  }
  return false;
}

bool isa_supported(Isa isa) noexcept { return isa_entry(isa).usable(); }

Isa isa_best() noexcept {
  for (const IsaEntry& e : isa_table())
    if (e.usable()) return e.isa;
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
  return isa_entry(isa).f32;
}

template <>
KernelSet<double> kernel_set<double>(Isa isa) noexcept {
  return isa_entry(isa).f64;
}

}  // namespace mlpcore::gemm

#include "kernels/prefetch.hpp"

#if defined(__GNUC__) && defined(__x86_64__)
#include <cpuid.h>
#endif

namespace mlpcore {

namespace {

#if defined(__GNUC__) && defined(__x86_64__)
// PREFETCHW is CPUID 0x80000001 ECX bit 8 (PRFCHW, "3dnowprefetch"): every AMD x86-64 CPU and
// Intel's from Broadwell on; earlier Intel CPUs may not decode it as a hint.
bool cpu_has_prefetchw() noexcept {
  unsigned a, b, c, d;
  return __get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & (1u << 8));
}
#endif

}  // namespace

void prefetch_for_write(const void* p, std::size_t bytes) noexcept {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool available = cpu_has_prefetchw();
  if (!available || bytes > kPrefetchForWriteMax) return;
  const char* line = static_cast<const char*>(p);
  for (std::size_t offset = 0; offset < bytes; offset += 64)
    asm volatile("prefetchw %0" : : "m"(line[offset]));
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace mlpcore

// Types shared by every kernel.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace mlpcore {

using index_t = std::int64_t;

// For the small header functions that the ISA copies of the element-wise kernels call
// (isa_regions.hpp): always inlined, they are never emitted out of line by a file built with
// AVX-512 flags, where the linker could pick that copy for baseline callers too.
#if defined(__GNUC__)
#define MLPCORE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define MLPCORE_ALWAYS_INLINE inline
#endif

// The most elements one array of mlpcore may hold: 2^48, beyond any machine's memory, yet small
// enough that bytes (x 8) and sums of a few such counts stay far from int64's limit.
inline constexpr index_t kMaxElements = index_t(1) << 48;

// a * b and a + b for sizes (a, b >= 0), throwing std::invalid_argument naming `what` where the
// result would pass kMaxElements: a size from a file or a call never wraps into a small buffer.
inline index_t checked_mul(index_t a, index_t b, const char* what) {
  if (a < 0 || b < 0 || (a != 0 && b > kMaxElements / a))
    throw std::invalid_argument(std::string(what) + " needs " + std::to_string(a) + " x " +
                                std::to_string(b) + " elements, more than the limit of 2^48");
  return a * b;
}
inline index_t checked_add(index_t a, index_t b, const char* what) {
  if (a < 0 || b < 0 || a > kMaxElements - b)
    throw std::invalid_argument(std::string(what) + " needs " + std::to_string(a) + " + " +
                                std::to_string(b) + " elements, more than the limit of 2^48");
  return a + b;
}

}  // namespace mlpcore

// Cache hints for the sharded step (no effect on any result).
#pragma once
#include <cstddef>

namespace mlpcore {

// Asks for the cache lines of [p, p + bytes) in a state this core may write (PREFETCHW), so
// that a loop that later stores there does not wait, line after line, for the copies another
// core read to be invalidated. A hint only: where the CPU lacks the instruction, or the range
// is larger than kPrefetchForWriteMax (lines that many are mostly out of the other core's
// caches, and asking for them all at once would evict what is in use), nothing.
inline constexpr std::size_t kPrefetchForWriteMax = std::size_t(256) << 10;
void prefetch_for_write(const void* p, std::size_t bytes) noexcept;

}  // namespace mlpcore

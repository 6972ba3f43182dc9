// The network's own parallel regions (a cut step, the separate update, a cut predict): at most
// two threads, one per part of the batch or of the parameter arena.
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>

namespace mlpcore {

// Threads for such a region: up to two, one when already inside a parallel region.
inline int arena_threads() noexcept {
#ifdef _OPENMP
  if (!omp_in_parallel()) return std::min(2, omp_get_max_threads());
#endif
  return 1;
}

// Inside the region: this thread's number and the team's size (the runtime may start fewer
// threads than asked; each thread then takes parts t, t + team, ...).
struct Seat {
  int t = 0, team = 1;
};

inline Seat seat() noexcept {
#ifdef _OPENMP
  return {omp_get_thread_num(), omp_get_num_threads()};
#else
  return {};
#endif
}

}  // namespace mlpcore

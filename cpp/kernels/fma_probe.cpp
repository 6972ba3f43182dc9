#include "fma_probe.hpp"

#include <algorithm>
#include <chrono>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "isa_regions.hpp"

namespace mlpcore {

double fma_peak_gflops(int threads, double seconds, int* lanes) noexcept {
  const ElementwiseIsa isa = elementwise_isa();
  const int width = isa == ElementwiseIsa::Avx512 ? 16 : isa == ElementwiseIsa::Avx2 ? 8 : 0;
  *lanes = width;
  if (width == 0) return 0.0;
  auto chains = [isa](std::int64_t trips) {
    return isa == ElementwiseIsa::Avx512 ? fma_chains_avx512(trips) : fma_chains_avx2(trips);
  };
  using clock = std::chrono::steady_clock;
  // Trips for about `seconds` on one thread, from a short calibration run.
  std::int64_t trips = 1 << 16;
  for (;;) {
    const auto t0 = clock::now();
    volatile float sink = chains(trips);
    (void)sink;
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.02 || trips > (std::int64_t(1) << 40)) {
      trips = std::max<std::int64_t>(1, std::int64_t(double(trips) * seconds / std::max(dt, 1e-9)));
      break;
    }
    trips *= 4;
  }
  threads = std::max(1, threads);
  double slowest = 0.0;  // the team's rate is set by its slowest thread
  int team = 1;          // the runtime may start fewer threads than asked
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(max : slowest)
#endif
  {
#ifdef _OPENMP
#pragma omp master
    team = omp_get_num_threads();
#endif
    const auto t0 = clock::now();
    volatile float sink = chains(trips);
    (void)sink;
    slowest = std::chrono::duration<double>(clock::now() - t0).count();
  }
  const double flops = double(team) * double(trips) * 12.0 * width * 2.0;
  return slowest > 0.0 ? flops / slowest / 1e9 : 0.0;
}

}  // namespace mlpcore

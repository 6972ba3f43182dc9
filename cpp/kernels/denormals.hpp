// Subnormal floats as zero (flush-to-zero + denormals-are-zero) while a guard is in scope.
//
// Long training runs drive many gradients into the subnormal range, where x86 arithmetic takes
// a slow microcode path (seen here: a 2x slower tiny-network step after a few hundred epochs).
// Like TensorFlow's CPU default, mlpcore treats them as zero during its own kernels; the
// setting is process-wide (mc.set_flush_denormal, as torch.set_flush_denormal) and every
// thread that computes part of a result sets the same mode, so results stay independent of the
// thread count. The MXCSR register is per thread: each parallel region sets it in its threads.
#pragma once
#include <atomic>

#include "common.hpp"

#if defined(__SSE2__) || defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define MLPCORE_HAS_MXCSR 1
#endif

namespace mlpcore {

MLPCORE_ALWAYS_INLINE std::atomic<bool>& flush_denormals_setting() noexcept {
  static std::atomic<bool> on{true};
  return on;
}

class DenormalsAsZero {
 public:
  MLPCORE_ALWAYS_INLINE DenormalsAsZero() noexcept {
#ifdef MLPCORE_HAS_MXCSR
    if (flush_denormals_setting().load(std::memory_order_relaxed)) {
      saved_ = _mm_getcsr();
      _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
      active_ = true;
    }
#endif
  }
  MLPCORE_ALWAYS_INLINE ~DenormalsAsZero() {
#ifdef MLPCORE_HAS_MXCSR
    if (active_) _mm_setcsr(saved_);
#endif
  }
  DenormalsAsZero(const DenormalsAsZero&) = delete;
  DenormalsAsZero& operator=(const DenormalsAsZero&) = delete;

 private:
  unsigned saved_ = 0;
  bool active_ = false;
};

// The opposite: subnormals kept while a guard is in scope, for work that must be exact whatever
// mode its thread is in (a thread starts in the mode of the thread that created it: OpenMP's
// workers may have been started from inside a DenormalsAsZero scope). Data conversion is one.
class DenormalsKept {
 public:
  MLPCORE_ALWAYS_INLINE DenormalsKept() noexcept {
#ifdef MLPCORE_HAS_MXCSR
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ & ~0x8040u);
#endif
  }
  MLPCORE_ALWAYS_INLINE ~DenormalsKept() {
#ifdef MLPCORE_HAS_MXCSR
    _mm_setcsr(saved_);
#endif
  }
  DenormalsKept(const DenormalsKept&) = delete;
  DenormalsKept& operator=(const DenormalsKept&) = delete;

 private:
  unsigned saved_ = 0;
};

}  // namespace mlpcore

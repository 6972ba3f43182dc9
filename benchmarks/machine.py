"""The machine's ceilings, to read the GEMM and training figures against.

Compiles (with the system's C++ compiler) and runs three probes:
- peak FMA throughput: a loop of independent register-only fused multiply-adds, 12 accumulators
  per thread and no memory traffic, so the result is the cores' FMA issue rate times the vector
  width, the ceiling no GEMM (mlpcore's or OpenBLAS's) can pass;
- the cost of one OpenMP fork/join: an empty 2-thread parallel region, entered back to back
  (what each threaded kernel of a training step pays, and what one region per step would save);
- mlpcore's AVX-512 micro-kernels alone (cpp/kernels/gemm/ukernel_avx512.cpp, compiled here),
  one thread, called over and over on one packed A and B micro-panel that stay in L1: the rate
  of the kernel's own loads, broadcasts and FMAs, with no packing and no cache misses. A whole
  GEMM built on them runs below it; the gap is what packing and the memory hierarchy cost.

    python benchmarks/machine.py

Needs g++ (or $CXX) with OpenMP; x86-64 only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

SOURCE = r"""
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <omp.h>

// One thread's rate: 12 independent FMA chains on register operands (REG is xmm/ymm/zmm).
#define FMA12(REG) \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "0\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "1\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "2\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "3\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "4\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "5\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "6\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "7\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "8\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "9\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "10\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "11\n"

static void loop512(long n) {
  asm volatile("1:\n" FMA12("zmm") "dec %0\n jnz 1b\n" : "+r"(n) :
               : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                 "xmm10", "xmm11", "cc");
}
static void loop256(long n) {
  asm volatile("1:\n" FMA12("ymm") "dec %0\n jnz 1b\n" : "+r"(n) :
               : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                 "xmm10", "xmm11", "cc");
}

int main(int argc, char** argv) {
  if (argc > 2) {  // fork/join probe: microseconds per empty region
    volatile int sink = 0;
    double best = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      const int n = 100000;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
#pragma omp parallel
        { if (omp_get_thread_num() == 1) sink = sink + 1; }
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s / n * 1e6 < best) best = s / n * 1e6;
    }
    std::printf("%.2f\n", best);
    return 0;
  }
  const int lanes = std::atoi(argv[1]);  // 16: zmm, 8: ymm
  const long n = 100000000;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel
    { if (lanes == 16) loop512(n); else loop256(n); }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double gflops = double(n) * 12 * lanes * 2 * omp_get_max_threads() / s / 1e9;
    if (gflops > best) best = gflops;
  }
  std::printf("%.1f\n", best);
}
"""


KERNEL_SOURCE = r"""
#include "ukernel.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>

using mlpcore::index_t;
using namespace mlpcore::gemm;

// GFLOP/s of kernel(kc, a, b, ...) on one MR x NR tile, operands in L1, best of 5.
template <typename T, typename Kernel>
double rate(Kernel kernel, int mr, int nr, index_t kc) {
  T* a = static_cast<T*>(std::aligned_alloc(64, sizeof(T) * mr * kc));
  T* b = static_cast<T*>(std::aligned_alloc(64, sizeof(T) * kc * nr));
  T* c = static_cast<T*>(std::aligned_alloc(64, sizeof(T) * mr * nr));
  for (index_t i = 0; i < mr * kc; ++i) a[i] = T(1e-3);
  for (index_t i = 0; i < kc * nr; ++i) b[i] = T(1e-3);
  for (int i = 0; i < mr * nr; ++i) c[i] = T(0);
  const long calls = 2000000000L / (2L * mr * nr * kc) * 10;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < calls; ++i) kernel(kc, a, b, nr, c, nr, mr, nr, true, nullptr);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double gflops = 2.0 * mr * nr * kc * calls / s / 1e9;
    if (gflops > best) best = gflops;
  }
  std::free(a), std::free(b), std::free(c);
  return best;
}

int main() {
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512dq") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512bw")) {
    std::printf("- -\n");
    return 0;
  }
  const Blocking f = cfg::kAvx512F32, d = cfg::kAvx512F64;
  // kc 128: A and B micro-panels 6 + 16 KiB (float32), 12 + 16 KiB (float64), within L1
  std::printf("%.1f %.1f\n", rate<float>(ukernel_f32_12x32_avx512, f.mr, f.nr, 128),
              rate<double>(ukernel_f64_12x16_avx512, d.mr, d.nr, 128));
}
"""


def kernel_rates(cxx: str, tmp: str) -> tuple[str, str]:
    """mlpcore's AVX-512 micro-kernels on L1-resident operands, GFLOP/s (float32, float64)."""
    gemm_dir = os.path.join(os.path.dirname(HERE), "cpp", "kernels", "gemm")
    src, exe = os.path.join(tmp, "ukernel_rate.cpp"), os.path.join(tmp, "ukernel_rate")
    with open(src, "w") as f:
        f.write(KERNEL_SOURCE)
    isa = ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma", "-mavx2"]
    subprocess.run([cxx, "-O3", "-std=c++17", *isa, "-I", gemm_dir, src,
                    os.path.join(gemm_dir, "ukernel_avx512.cpp"), "-o", exe], check=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([exe], env=env, check=True, capture_output=True, text=True).stdout.split()
    return out[0], out[1]


def build_peak_probe(cxx: str, tmp: str) -> str:
    """Compiles the FMA-peak / fork-join probe into tmp; returns the executable's path."""
    src, exe = os.path.join(tmp, "peak.cpp"), os.path.join(tmp, "peak")
    with open(src, "w") as f:
        f.write(SOURCE)
    subprocess.run([cxx, "-O2", "-fopenmp", src, "-o", exe], check=True)
    return exe


def peak_gflops(exe: str, threads: int, lanes: int = 16) -> float:
    """fp32 FMA peak of `threads` threads, GFLOP/s (lanes 16: AVX-512, 8: AVX2)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="spread")
    out = subprocess.run([exe, str(lanes)], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout)


def main() -> int:
    cxx = os.environ.get("CXX", "g++")
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_peak_probe(cxx, tmp)
        print("fp32 peak FMA throughput (GFLOP/s; float64 is half of it)")
        print(f"{'threads':>8} {'AVX-512':>10} {'AVX2':>10}")
        for threads in (1, 2):
            row = [peak_gflops(exe, threads, lanes) for lanes in (16, 8)]
            print(f"{threads:>8} {row[0]:>10.1f} {row[1]:>10.1f}")
        env = dict(os.environ, OMP_NUM_THREADS="2")
        fork_join = subprocess.run([exe, "0", "fork-join"], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()
        print(f"OpenMP fork/join of an empty 2-thread region: {fork_join} us (best of 5)")
        try:
            f32, f64 = kernel_rates(cxx, tmp)
        except subprocess.CalledProcessError:  # a compiler without the AVX-512 flags
            f32 = f64 = "-"
        print(f"mlpcore AVX-512 micro-kernel alone, 1 thread, operands in L1: float32 {f32}, "
              f"float64 {f64} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The machine's ceilings, to read the GEMM and training figures against.

Compiles (with the system's C++ compiler) and runs two probes:
- peak FMA throughput: a loop of independent register-only fused multiply-adds, 12 accumulators
  per thread and no memory traffic, so the result is the cores' FMA issue rate times the vector
  width, the ceiling no GEMM (mlpcore's or OpenBLAS's) can pass;
- the cost of one OpenMP fork/join: an empty 2-thread parallel region, entered back to back
  (what each threaded kernel of a training step pays, and what one region per step would save).

    python benchmarks/machine.py

Needs g++ (or $CXX) with OpenMP; x86-64 only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

SOURCE = r"""
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <omp.h>

// One thread's rate: 12 independent FMA chains on register operands (REG is xmm/ymm/zmm).
#define FMA12(REG) \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "0\n vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "1\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "2\n vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "3\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "4\n vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "5\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "6\n vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "7\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "8\n vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "9\n" \
  "vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "10\n vfmadd231ps %%" REG "14,%%" REG "15,%%" REG "11\n"

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


def main() -> int:
    cxx = os.environ.get("CXX", "g++")
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "peak.cpp"), os.path.join(tmp, "peak")
        with open(src, "w") as f:
            f.write(SOURCE)
        subprocess.run([cxx, "-O2", "-fopenmp", src, "-o", exe], check=True)
        print("fp32 peak FMA throughput (GFLOP/s; float64 is half of it)")
        print(f"{'threads':>8} {'AVX-512':>10} {'AVX2':>10}")
        for threads in (1, 2):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="spread")
            row = [subprocess.run([exe, str(lanes)], env=env, check=True, capture_output=True,
                                  text=True).stdout.strip() for lanes in (16, 8)]
            print(f"{threads:>8} {row[0]:>10} {row[1]:>10}")
        env = dict(os.environ, OMP_NUM_THREADS="2")
        fork_join = subprocess.run([exe, "0", "fork-join"], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()
        print(f"OpenMP fork/join of an empty 2-thread region: {fork_join} us (best of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

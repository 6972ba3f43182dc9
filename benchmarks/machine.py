"""The machine's ceilings, to read the GEMM and training figures against.

Compiles (with the system's C++ compiler) and runs three probes:
- peak FMA throughput: a loop of independent register-only fused multiply-adds, 12 accumulators
  per thread and no memory traffic, so the result is the cores' FMA issue rate times the vector
  width, the ceiling no GEMM (mlpcore's or OpenBLAS's) can pass;
- the cost of one OpenMP fork/join: an empty 2-thread parallel region, entered back to back
  (what each threaded kernel of a training step pays, and what one region per step would save);
- mlpcore's micro-kernels alone (cpp/kernels/gemm/ukernel_<isa>.cpp, compiled here), one
  thread, called over and over on one packed A and B micro-panel that stay in L1: the rate of
  the kernel's own loads, broadcasts and FMAs, with no packing and no cache misses. A whole GEMM
  built on them runs below it; the gap is what packing and the memory hierarchy cost.

Only the ISAs this CPU has are probed (AVX-512: zmm FMAs and the 12x32 / 12x16 kernels; AVX2:
ymm FMAs and the 6x16 / 6x8 kernels), and MLPCORE_GEMM_ISA=avx2 (as mlpcore itself) leaves out
the wider one, so an AVX-512 machine can stand in for an AVX2-only one.

    python benchmarks/machine.py [--isa avx2] [--quick]

Needs g++ (or $CXX) with OpenMP; x86-64 only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

SOURCE = r"""
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
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
  if (argc > 1 && std::string(argv[1]) == "isas") {  // the ISAs this CPU can run
    if (__builtin_cpu_supports("avx512f")) std::printf("avx512 ");
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) std::printf("avx2");
    std::printf("\n");
    return 0;
  }
  if (argc > 2 && std::string(argv[2]) == "fork-join") {  // microseconds per empty region
    volatile int sink = 0;
    double best = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      const int n = argc > 3 ? std::atoi(argv[3]) : 100000;
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
  const long n = argc > 2 ? std::atol(argv[2]) : 100000000;  // loop trips per thread
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
  const char* flop = std::getenv("PROBE_FLOP");  // flops per repetition
  const long calls = std::atol(flop ? flop : "20000000000") / (2L * mr * nr * kc);
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
#ifdef PROBE_AVX512
  const Blocking f = cfg::kAvx512F32, d = cfg::kAvx512F64;
  const auto kf = ukernel_f32_12x32_avx512;
  const auto kd = ukernel_f64_12x16_avx512;
#else
  const Blocking f = cfg::kAvx2F32, d = cfg::kAvx2F64;
  const auto kf = ukernel_f32_6x16_avx2;
  const auto kd = ukernel_f64_6x8_avx2;
#endif
  // kc 128: A and B micro-panels within L1 (at most 6 + 16 KiB float32, 12 + 16 KiB float64)
  std::printf("%.1f %.1f\n", rate<float>(kf, f.mr, f.nr, 128), rate<double>(kd, d.mr, d.nr, 128));
}
"""


ISA_FLAGS = {"avx512": ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma", "-mavx2",
                        "-DPROBE_AVX512"],
             "avx2": ["-mavx2", "-mfma"]}
LANES = {"avx512": 16, "avx2": 8}  # fp32 lanes of a zmm / ymm register


def kernel_rates(cxx: str, tmp: str, isa: str, quick: bool = False) -> tuple[str, str]:
    """mlpcore's micro-kernels of `isa` on L1-resident operands, GFLOP/s (float32, float64)."""
    gemm_dir = os.path.join(os.path.dirname(HERE), "cpp", "kernels", "gemm")
    src = os.path.join(tmp, f"ukernel_rate_{isa}.cpp")
    exe = os.path.join(tmp, f"ukernel_rate_{isa}")
    with open(src, "w") as f:
        f.write(KERNEL_SOURCE)
    subprocess.run([cxx, "-O3", "-std=c++17", *ISA_FLAGS[isa], "-I", gemm_dir, src,
                    os.path.join(gemm_dir, f"ukernel_{isa}.cpp"), "-o", exe], check=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PROBE_FLOP=str(10**8 if quick else 2 * 10**10))
    out = subprocess.run([exe], env=env, check=True, capture_output=True, text=True).stdout.split()
    return out[0], out[1]


def build_peak_probe(cxx: str, tmp: str) -> str:
    """Compiles the FMA-peak / fork-join probe into tmp; returns the executable's path."""
    src, exe = os.path.join(tmp, "peak.cpp"), os.path.join(tmp, "peak")
    with open(src, "w") as f:
        f.write(SOURCE)
    subprocess.run([cxx, "-O2", "-fopenmp", src, "-o", exe], check=True)
    return exe


def peak_gflops(exe: str, threads: int, lanes: int = 16, trips: int = 100_000_000) -> float:
    """fp32 FMA peak of `threads` threads, GFLOP/s (lanes 16: AVX-512, 8: AVX2)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="spread")
    out = subprocess.run([exe, str(lanes), str(trips)], env=env, check=True, capture_output=True,
                         text=True)
    return float(out.stdout)


def cpu_isas(exe: str) -> list[str]:
    """The SIMD ISAs this CPU can run, widest first, as the probe executable sees them."""
    out = subprocess.run([exe, "isas"], check=True, capture_output=True, text=True)
    return out.stdout.split()


def isas_to_probe(available: list[str], requested: list[str] | None) -> list[str]:
    """The ISAs to probe: the requested ones (or all) that the CPU has, none wider than
    MLPCORE_GEMM_ISA when it names one (portable: none)."""
    order = ["avx512", "avx2"]
    chosen = [i for i in order if i in available and (requested is None or i in requested)]
    cap = os.environ.get("MLPCORE_GEMM_ISA")
    if cap == "portable":
        return []
    if cap in order:
        chosen = [i for i in chosen if order.index(i) >= order.index(cap)]
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isa", action="append", choices=sorted(LANES),
                    help="probe only this ISA (repeatable; default: every one the CPU has)")
    ap.add_argument("--quick", action="store_true",
                    help="short loops: checks the probes run, the figures are not meaningful")
    args = ap.parse_args(argv)
    cxx = os.environ.get("CXX", "g++")
    trips = 1_000_000 if args.quick else 100_000_000
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_peak_probe(cxx, tmp)
        available = cpu_isas(exe)
        isas = isas_to_probe(available, args.isa)
        print(f"CPU ISAs: {' '.join(available) or 'none with FMA'}; probed: "
              f"{' '.join(isas) or 'none'}"
              + (f" (MLPCORE_GEMM_ISA={os.environ['MLPCORE_GEMM_ISA']})"
                 if os.environ.get("MLPCORE_GEMM_ISA") else ""))
        if isas:
            print("fp32 peak FMA throughput (GFLOP/s; float64 is half of it)")
            print(f"{'threads':>8}" + "".join(f"{isa:>10}" for isa in isas))
            for threads in (1, 2):
                row = [peak_gflops(exe, threads, LANES[isa], trips) for isa in isas]
                print(f"{threads:>8}" + "".join(f"{v:>10.1f}" for v in row))
        env = dict(os.environ, OMP_NUM_THREADS="2")
        regions = "1000" if args.quick else "100000"
        fork_join = subprocess.run([exe, "0", "fork-join", regions], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()
        print(f"OpenMP fork/join of an empty 2-thread region: {fork_join} us (best of 5)")
        for isa in isas:
            try:
                f32, f64 = kernel_rates(cxx, tmp, isa, args.quick)
            except subprocess.CalledProcessError:  # a compiler without the ISA's flags
                f32 = f64 = "-"
            print(f"mlpcore {isa} micro-kernel alone, 1 thread, operands in L1: float32 {f32}, "
                  f"float64 {f64} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

// Cache sizes of the running CPU and the blocking derived from them.
//
// The model (after BLIS's analytical model, Low et al. 2016, in this driver's roles: the MR x KC
// A micro-panel stays in L1 while KC x NR B micro-panels stream past it from L2; the KC x NC
// B block stays in L2; the MC x KC A block in L3):
//   KC: the A micro-panel keeps a fixed share of L1 (BLIS gives it a fixed number of L1 ways),
//       so KC is proportional to the L1d size. The share is the tuned one: KC = tuned KC x L1d /
//       48 KiB, never above the tuned KC (larger K blocks measured no better), a multiple of 16.
//   NC: the B block keeps the tuned share of L2: bytes = tuned bytes x L2 / 1 MiB, never above
//       the tuned bytes, and NC never above the tuned NC; a multiple of NR. Below 1 MiB of L2
//       the block takes at most 5/8 of it (the AVX-512 share, 576 of 1024 KiB): the AVX2 block
//       was tuned on a 2 MiB L2 and scaled down would not fit a 512 KiB one (590 KiB). Smaller
//       NC costs nothing measurable here (AVX2 1024^3, NC 768 / 384 / 192: 0.98x / 0.98x /
//       0.98x OpenBLAS Haswell, all within noise): B is packed once per K block either way.
//   MC: the tuned MC, but the A block at most half of L3 when L3 is known; a multiple of MR.
// On a 48 KiB L1d with 1 MiB or more of L2 (and an L3 large enough for the tuned A block, or
// unknown) this gives the tuned constants of config.hpp exactly.
// In BLIS's order (Blocking::b_panel_in_l1: the KC x NR B micro-panel stays in L1 while A
// micro-panels stream from L2, the A block in L2, the B block in L3):
//   KC: as above (the L1 share is the B micro-panel's now: 16 KiB float32 at KC 256).
//   MC: the A block takes 9/32 of L2 (Zen 3, 512 KiB: 144 rows float32 at KC 256; 72, 96 and
//       144 rows measured alike there), a multiple of MR, at most the tuned MC.
//   NC: at most the tuned NC, the B block at most a quarter of L3 when L3 is known.
// Only KC changes results (it sets the K split); none of this depends on the number of threads.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#if defined(__GNUC__)
#include <cpuid.h>
#define MLPCORE_HAS_CPUID 1
#endif
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "config.hpp"

namespace mlpcore::gemm {

namespace {

index_t round_down(index_t v, index_t multiple, index_t minimum) noexcept {
  return std::max(minimum, v / multiple * multiple);
}

#ifdef MLPCORE_HAS_CPUID
// Deterministic cache parameters: CPUID leaf 4 (Intel and most others) or 0x8000001D (AMD,
// Hygon), same register layout. Total size of each level as the leaf describes it.
bool caches_from_cpuid(CacheSizes* out) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
  const unsigned max_leaf = a;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  unsigned leaf = 4;
  if (std::strcmp(vendor, "AuthenticAMD") == 0 || std::strcmp(vendor, "HygonGenuine") == 0) {
    // needs the topology extensions (CPUID 0x80000001 ECX bit 22)
    if (__get_cpuid_max(0x80000000u, nullptr) < 0x8000001Du) return false;
    if (!__get_cpuid(0x80000001u, &a, &b, &c, &d) || !(c & (1u << 22))) return false;
    leaf = 0x8000001Du;
  } else if (max_leaf < 4) {
    return false;
  }
  CacheSizes found;
  for (unsigned sub = 0; sub < 16; ++sub) {
    __cpuid_count(leaf, sub, a, b, c, d);
    const unsigned type = a & 0x1f;  // 0: no more caches, 1: data, 2: instruction, 3: unified
    if (type == 0) break;
    if (type == 2) continue;
    const unsigned level = (a >> 5) & 0x7;
    const index_t ways = ((b >> 22) & 0x3ff) + 1, partitions = ((b >> 12) & 0x3ff) + 1;
    const index_t line = (b & 0xfff) + 1, sets = index_t(c) + 1;
    const index_t size = ways * partitions * line * sets;
    if (level == 1) found.l1d = size;
    if (level == 2) found.l2 = size;
    if (level == 3) found.l3 = size;
  }
  if (found.l1d <= 0 || found.l2 <= 0) return false;
  *out = found;
  return true;
}
#endif

bool caches_from_sysconf(CacheSizes* out) {
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && \
    defined(_SC_LEVEL3_CACHE_SIZE)
  const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l1 <= 0 || l2 <= 0) return false;
  out->l1d = l1;
  out->l2 = l2;
  out->l3 = l3 > 0 ? l3 : 0;
  return true;
#else
  (void)out;
  return false;
#endif
}

// "48K", "1M", "32768": bytes, or -1 if not a size.
index_t parse_size(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.erase(0, 1);
  if (s.empty() || s.size() > 15) return -1;
  index_t scale = 1;
  const char unit = static_cast<char>(std::toupper(static_cast<unsigned char>(s.back())));
  if (unit == 'K' || unit == 'M' || unit == 'G') {
    scale = unit == 'K' ? index_t(1) << 10 : unit == 'M' ? index_t(1) << 20 : index_t(1) << 30;
    s.pop_back();
  }
  if (s.empty()) return -1;
  index_t v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return -1;
    v = v * 10 + (ch - '0');
  }
  return v * scale;
}

bool caches_from_sysfs(CacheSizes* out) {
  CacheSizes found;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level_f(dir + "level"), type_f(dir + "type"), size_f(dir + "size");
    if (!level_f || !type_f || !size_f) break;
    int level = 0;
    std::string type, size;
    level_f >> level;
    type_f >> type;
    size_f >> size;
    if (type == "Instruction") continue;
    const index_t bytes = parse_size(size);
    if (bytes <= 0) continue;
    if (level == 1) found.l1d = bytes;
    if (level == 2) found.l2 = bytes;
    if (level == 3) found.l3 = bytes;
  }
  if (found.l1d <= 0 || found.l2 <= 0) return false;
  *out = found;
  return true;
}

// MLPCORE_CACHE_SIZES=l1d,l2[,l3]; false if unset or invalid.
bool caches_from_env(CacheSizes* out, bool* invalid) {
  const char* env = std::getenv("MLPCORE_CACHE_SIZES");
  *invalid = false;
  if (!env || !*env) return false;
  std::string text(env);
  index_t sizes[3] = {0, 0, 0};
  int count = 0;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    if (count == 3) {
      *invalid = true;
      return false;
    }
    sizes[count++] = parse_size(text.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (count < 2 || !cache_sizes_valid(sizes[0], sizes[1], sizes[2])) {
    *invalid = true;
    return false;
  }
  out->l1d = sizes[0];
  out->l2 = sizes[1];
  out->l3 = sizes[2];
  return true;
}

CacheSizes initial_cache_sizes() {
  CacheSizes c;
  bool env_invalid = false;
  if (caches_from_env(&c, &env_invalid)) {
    c.source = "MLPCORE_CACHE_SIZES";
    return c;
  }
  const char* detected = nullptr;
#ifdef MLPCORE_HAS_CPUID
  if (!detected && caches_from_cpuid(&c)) detected = "cpuid";
#endif
  if (!detected && caches_from_sysconf(&c)) detected = "sysconf";
  if (!detected && caches_from_sysfs(&c)) detected = "sysfs";
  if (detected && !cache_sizes_valid(c.l1d, c.l2, c.l3)) detected = nullptr;  // implausible
  if (!detected) {
    c = CacheSizes{cfg::kTunedL1d, cfg::kTunedL2, 0, "default"};
    detected = "default";
  }
  c.source = detected;
  c.env_invalid = env_invalid;
  return c;
}

CacheSizes& current() noexcept {
  static CacheSizes caches = initial_cache_sizes();
  return caches;
}

}  // namespace

bool cache_sizes_valid(index_t l1d, index_t l2, index_t l3) noexcept {
  constexpr index_t K = 1 << 10, M = K << 10, G = M << 10;
  return l1d >= 4 * K && l1d <= 4 * M && l2 >= 32 * K && l2 <= G &&
         (l3 == 0 || (l3 >= 64 * K && l3 <= 64 * G));
}

const CacheSizes& cache_sizes() noexcept { return current(); }

void rebuild_isa_table() noexcept;  // dispatch.cpp

bool set_cache_sizes(index_t l1d, index_t l2, index_t l3) noexcept {
  if (!cache_sizes_valid(l1d, l2, l3)) return false;
  current() = CacheSizes{l1d, l2, l3, "set by _set_cache_sizes", false};
  rebuild_isa_table();
  return true;
}

Blocking derive_blocking(const Blocking& tuned, int elem_bytes, const CacheSizes& caches) noexcept {
  Blocking b = tuned;
  // KC: the L1-resident micro-panel's share of L1 (see the model at the top)
  const index_t l1 = std::min(caches.l1d, cfg::kTunedL1d);
  b.kc = round_down(tuned.kc * l1 / cfg::kTunedL1d, 16, 32);
  // B read in place for small M only while it can stay in L2 between calls
  b.b_in_place_bytes = caches.l2 / 2;
  if (tuned.b_panel_in_l1) {
    b.mc = round_down(std::min(tuned.mc, caches.l2 / 32 * 9 / (b.kc * elem_bytes)), tuned.mr,
                      4 * tuned.mr);
    b.nc = tuned.nc;
    if (caches.l3 > 0) b.nc = std::min(b.nc, caches.l3 / 4 / (b.kc * elem_bytes));
    b.nc = round_down(b.nc, tuned.nr, 4 * tuned.nr);
    return b;
  }
  // NC: the B block's share of L2
  const index_t tuned_b_bytes = tuned.kc * tuned.nc * elem_bytes;
  const index_t l2 = std::min(caches.l2, cfg::kTunedL2);
  index_t b_bytes = tuned_b_bytes * l2 / cfg::kTunedL2;
  if (caches.l2 < cfg::kTunedL2) b_bytes = std::min(b_bytes, caches.l2 / 8 * 5);
  b.nc = round_down(std::min(tuned.nc, b_bytes / (b.kc * elem_bytes)), tuned.nr, 4 * tuned.nr);
  // MC: the A block in at most half of L3 when L3 is known
  if (caches.l3 > 0)
    b.mc = round_down(std::min(tuned.mc, caches.l3 / 2 / (b.kc * elem_bytes)), tuned.mr,
                      4 * tuned.mr);
  return b;
}

}  // namespace mlpcore::gemm

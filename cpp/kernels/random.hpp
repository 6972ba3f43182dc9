// A small, fast, seedable generator (xoshiro256** seeded through splitmix64): the same seed gives
// the same stream on every platform, so shuffles and dropout masks are reproducible.
#pragma once
#include <cstdint>

namespace mlpcore {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) noexcept { reseed(seed); }

  void reseed(std::uint64_t seed) noexcept {
    for (auto& word : s_) word = splitmix64(seed);
  }

  std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() noexcept { return double(next() >> 11) * 0x1.0p-53; }

  // Uniform integer in [0, bound) without bias (Lemire's multiply-and-reject).
  std::uint64_t below(std::uint64_t bound) noexcept {
    unsigned __int128 m = (unsigned __int128)next() * bound;
    std::uint64_t low = std::uint64_t(m);
    if (low < bound) {
      const std::uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = (unsigned __int128)next() * bound;
        low = std::uint64_t(m);
      }
    }
    return std::uint64_t(m >> 64);
  }

  // The full state, for exact save / resume.
  const std::uint64_t* state() const noexcept { return s_; }
  void set_state(const std::uint64_t* s) noexcept {
    for (int i = 0; i < 4; ++i) s_[i] = s[i];
  }

 private:
  static std::uint64_t splitmix64(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

  std::uint64_t s_[4];
};

}  // namespace mlpcore

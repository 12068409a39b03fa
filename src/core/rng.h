// rng.h — deterministic random numbers (xoshiro256** seeded by splitmix64).
//
// The same seed gives the same stream on every platform and compiler: we do not use
// std::normal_distribution, whose output is implementation-defined. The whole state is
// four 64-bit words, saved in training checkpoints so that a resumed run continues the stream.
#pragma once

#include <array>
#include <cstdint>

namespace sf {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0);

  uint64_t next_u64();
  // Uniform in [0, 1) with 53 random bits.
  double uniform();
  // Standard normal (Box–Muller, both values used).
  double normal();
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n);

  using State = std::array<uint64_t, 6>;  // 4 xoshiro words, has-cached-normal flag, its bits
  State state() const;
  void set_state(const State& state);

 private:
  std::array<uint64_t, 4> s_{};
  bool has_cached_normal_ = false;
  double cached_normal_ = 0.0;
};

}  // namespace sf

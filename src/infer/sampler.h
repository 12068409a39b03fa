// sampler.h — choosing the next token from a row of logits: greedy, temperature, top-k, top-p.
//
// The pipeline is llama.cpp's, with its defaults (temperature 0.8, top-k 40, top-p 0.95):
//   1. temperature: z_i = logit_i / temperature (temperature 0 = greedy: the argmax, no draw);
//   2. top-k: keep the k largest z (k <= 0 disables it); ties at the k-th value are broken by the
//      lower token id, so the kept set is always exactly min(k, finite tokens) tokens;
//   3. softmax over what is kept (computed in fp64);
//   4. top-p (nucleus): keep the smallest set of most probable tokens whose probabilities sum to
//      >= p (at least one token; p >= 1 disables it), then renormalise;
//   5. draw one token from that distribution with sf::Rng seeded by `seed`.
// The same seed and the same logits give the same tokens on every platform (sf::Rng is
// xoshiro256**, and every step above is deterministic). Logits equal to -inf are tokens that can
// never be chosen (masked); NaN or +inf logits are rejected with an error.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace sf {

struct SamplingOptions {
  double temperature = 0.8;  // 0 = greedy (argmax); must be >= 0
  int top_k = 40;            // <= 0 disables top-k
  double top_p = 0.95;       // in (0, 1]; 1 disables top-p
  uint64_t seed = 0;
};

// Throws sf::Error naming the bad option: negative or non-finite temperature, top_p outside
// (0, 1] or NaN. (top_k <= 0 disables top-k, as in llama.cpp.)
void validate_sampling_options(const SamplingOptions& options);

// One token the sampler may draw, with its probability after the whole pipeline.
struct TokenProbability {
  int32_t id;
  double probability;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);  // validates the options

  const SamplingOptions& options() const { return options_; }

  // The next token for one row of `vocab` logits. Advances the random stream (except greedy).
  int32_t sample(const float* logits, int64_t vocab);
  int32_t sample(const double* logits, int64_t vocab);

  // The distribution sample() draws from (steps 1-4), most probable first, probabilities summing
  // to 1. With temperature 0 it is the argmax alone with probability 1. Does not touch the
  // random stream; meant for tests and inspection.
  std::vector<TokenProbability> candidates(const float* logits, int64_t vocab) const;
  std::vector<TokenProbability> candidates(const double* logits, int64_t vocab) const;

 private:
  template <class T>
  int32_t sample_row(const T* logits, int64_t vocab);
  template <class T>
  void scaled_logits(const T* logits, int64_t vocab, std::vector<TokenProbability>& out) const;
  template <class T>
  void build_candidates(const T* logits, int64_t vocab, std::vector<TokenProbability>& out) const;

  SamplingOptions options_;
  Rng rng_;
  std::vector<TokenProbability> scratch_;  // reused between calls: no allocation per token
};

}  // namespace sf

// sampler.cpp — temperature → top-k → softmax → top-p → draw (see sampler.h).
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/error.h"

namespace sf {

void validate_sampling_options(const SamplingOptions& o) {
  SF_CHECK(std::isfinite(o.temperature) && o.temperature >= 0.0,
           "sampling: temperature must be >= 0 (0 = greedy), got {}", o.temperature);
  // A probability mass: 0 and 2 are both mistakes (1 keeps every token, i.e. disables top-p).
  SF_CHECK(o.top_p > 0.0 && o.top_p <= 1.0,
           "sampling: top-p must be in (0, 1] (1 disables it), got {}", o.top_p);
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {
  validate_sampling_options(options_);
}

namespace {

// Most probable first; equal values keep the lower id first, so every step is deterministic.
bool ranks_before(const TokenProbability& a, const TokenProbability& b) {
  return a.probability != b.probability ? a.probability > b.probability : a.id < b.id;
}

// Rejects NaN and +inf (a broken model, never a valid distribution) and returns the index of
// the largest finite logit (the lowest such index on ties), or -1 when every logit is -inf.
template <class T>
int64_t checked_argmax(const T* logits, int64_t vocab) {
  SF_CHECK(logits != nullptr && vocab > 0, "sampling: empty logits row (vocab {})", vocab);
  int64_t best = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    const T v = logits[i];
    SF_CHECK(!std::isnan(v), "sampling: the logit of token {} is NaN", i);
    SF_CHECK(!(std::isinf(v) && v > 0), "sampling: the logit of token {} is +inf", i);
    if (std::isinf(v)) continue;  // -inf: masked token
    if (best < 0 || v > logits[best]) best = i;
  }
  SF_CHECK(best >= 0, "sampling: every one of the {} logits is -inf, no token can be chosen", vocab);
  return best;
}

// Top-p over candidates most probable first, probability_at(i) the i-th one's probability (of
// n): how many to keep (the smallest prefix whose mass reaches p, at least one) and their mass.
template <class ProbabilityAt>
std::pair<size_t, double> top_p_prefix(double top_p, size_t n, ProbabilityAt probability_at) {
  if (top_p >= 1.0) return {n, 1.0};
  double mass = 0.0;
  for (size_t i = 0; i < n; ++i) {
    mass += probability_at(i);
    if (mass >= top_p) return {i + 1, mass};
  }
  return {n, mass};
}

// The draw: the first of the `keep` candidates at which the cumulative probability (over
// `kept`, their mass) passes u in [0, 1); the last one when u lands in the rounding gap.
template <class ProbabilityAt>
size_t draw_index(double u, size_t keep, double kept, ProbabilityAt probability_at) {
  double mass = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    mass += probability_at(i) / kept;
    if (u < mass) return i;
  }
  return keep - 1;
}

}  // namespace

// Temperature, applied to logits shifted by their maximum: (l - max) / T <= 0 never overflows,
// even for a tiny T, so exp() yields values in [0, 1] and never NaN. The field holds the scaled
// logit until a softmax turns it into a probability; masked (-inf) tokens are left out.
template <class T>
void Sampler::scaled_logits(const T* logits, int64_t vocab, std::vector<TokenProbability>& out) const {
  out.clear();
  const int64_t best = checked_argmax(logits, vocab);
  const double max_logit = static_cast<double>(logits[best]);
  for (int64_t i = 0; i < vocab; ++i) {
    if (std::isinf(logits[i])) continue;
    out.push_back({static_cast<int32_t>(i),
                   (static_cast<double>(logits[i]) - max_logit) / options_.temperature});
  }
}

template <class T>
void Sampler::build_candidates(const T* logits, int64_t vocab,
                               std::vector<TokenProbability>& out) const {
  if (options_.temperature == 0.0) {
    out.assign(1, {static_cast<int32_t>(checked_argmax(logits, vocab)), 1.0});
    return;
  }
  scaled_logits(logits, vocab, out);
  // Top-k (exactly k survivors: the comparison breaks ties by id), else a full sort, because
  // top-p and the "most probable first" contract both need the order.
  const int64_t n = static_cast<int64_t>(out.size());
  if (options_.top_k > 0 && options_.top_k < n) {
    std::partial_sort(out.begin(), out.begin() + options_.top_k, out.end(), ranks_before);
    out.resize(options_.top_k);
  } else {
    std::sort(out.begin(), out.end(), ranks_before);
  }
  // Softmax over the survivors; the largest scaled logit is 0 (it is out[0]).
  double total = 0.0;
  for (TokenProbability& c : out) total += (c.probability = std::exp(c.probability));
  for (TokenProbability& c : out) c.probability /= total;
  // Top-p: the smallest prefix whose mass reaches p; at least one token.
  const auto [keep, kept] = top_p_prefix(options_.top_p, out.size(), [&](size_t i) { return out[i].probability; });
  if (options_.top_p < 1.0) {
    out.resize(keep);
    for (TokenProbability& c : out) c.probability /= kept;
  }
}

namespace {

// Puts out[from, to) in rank order, given that out[0, from) is in rank order and ranks before
// everything after it (a partial sort of the rest: a draw rarely needs more than a few hundred
// of the vocabulary's tokens in order, and sorting all 50k of them cost milliseconds a token).
void rank_prefix(std::vector<TokenProbability>& out, size_t from, size_t to) {
  to = std::min(to, out.size());
  if (from < to) std::partial_sort(out.begin() + static_cast<std::ptrdiff_t>(from),
                                   out.begin() + static_cast<std::ptrdiff_t>(to), out.end(), ranks_before);
}
constexpr size_t kFirstRanked = 64;  // tokens put in order at first; 4x more each time after

}  // namespace

template <class T>
int32_t Sampler::sample_row(const T* logits, int64_t vocab) {
  const bool top_k = options_.top_k > 0 && options_.top_k < vocab;
  if (options_.temperature == 0.0 || top_k) {
    build_candidates(logits, vocab, scratch_);
    if (scratch_.size() == 1) return scratch_[0].id;  // greedy, or one survivor: no draw needed
    const double u = rng_.uniform();
    return scratch_[draw_index(u, scratch_.size(), 1.0, [&](size_t i) { return scratch_[i].probability; })].id;
  }
  // No top-k: the same distribution as build_candidates() gives, without sorting the whole
  // vocabulary. The softmax's denominator is summed in token order; the tokens are then walked
  // most probable first, put in order (and their fields turned into probabilities) only as far
  // as the walk gets.
  scaled_logits(logits, vocab, scratch_);
  std::vector<TokenProbability>& c = scratch_;  // (the field holds the scaled logit until ranked)
  double total = 0.0;
  for (const TokenProbability& t : c) total += std::exp(t.probability);
  size_t ranked = 0;
  const auto probability_at = [&](size_t i) {
    if (i >= ranked) {
      const size_t grown = std::min(ranked == 0 ? kFirstRanked : 4 * ranked, c.size());
      rank_prefix(c, ranked, grown);
      for (size_t j = ranked; j < grown; ++j) c[j].probability = std::exp(c[j].probability) / total;
      ranked = grown;
    }
    return c[i].probability;
  };
  const auto [keep, kept] = top_p_prefix(options_.top_p, c.size(), probability_at);
  if (keep == 1) return c[0].id;  // one survivor: no draw needed (rank_prefix ordered it)
  const double u = rng_.uniform();
  return c[draw_index(u, keep, kept, probability_at)].id;
}

int32_t Sampler::sample(const float* logits, int64_t vocab) { return sample_row(logits, vocab); }
int32_t Sampler::sample(const double* logits, int64_t vocab) { return sample_row(logits, vocab); }

std::vector<TokenProbability> Sampler::candidates(const float* logits, int64_t vocab) const {
  std::vector<TokenProbability> out;
  build_candidates(logits, vocab, out);
  return out;
}

std::vector<TokenProbability> Sampler::candidates(const double* logits, int64_t vocab) const {
  std::vector<TokenProbability> out;
  build_candidates(logits, vocab, out);
  return out;
}

}  // namespace sf

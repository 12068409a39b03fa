// sampler_test.cpp — the token sampler: greedy, temperature, top-k, top-p, determinism, the
// empirical distribution of draws, and errors for bad options and bad logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "support/test_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "infer/sampler.h"

namespace sf {
namespace {

std::vector<float> random_logits(int64_t vocab, uint64_t seed, double scale = 3.0) {
  Rng rng(seed);
  std::vector<float> logits(vocab);
  for (float& l : logits) l = static_cast<float>(scale * rng.normal());
  return logits;
}

// softmax(logits / temperature) over the ids in `keep` (all ids when empty), in fp64.
std::vector<double> softmax_of(const std::vector<float>& logits, double temperature,
                               const std::vector<int32_t>& keep = {}) {
  std::vector<double> p(logits.size(), 0.0);
  std::vector<int32_t> ids = keep;
  if (ids.empty()) {
    ids.resize(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
  }
  double max = -std::numeric_limits<double>::infinity();
  for (int32_t i : ids) max = std::max(max, static_cast<double>(logits[i]));
  double total = 0.0;
  for (int32_t i : ids) total += (p[i] = std::exp((logits[i] - max) / temperature));
  for (double& x : p) x /= total;
  return p;
}

// Ids sorted by decreasing logit (lower id first on ties).
std::vector<int32_t> ids_by_logit(const std::vector<float>& logits) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  return ids;
}

using test::error_of;

TEST(Sampler, GreedyIsArgmaxAndIgnoresTheSeed) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const std::vector<float> logits = random_logits(1000, seed);
    const int32_t argmax =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    Sampler sampler({.temperature = 0.0, .top_k = 40, .top_p = 0.5, .seed = seed * 77});
    for (int draw = 0; draw < 3; ++draw) EXPECT_EQ(sampler.sample(logits.data(), 1000), argmax);
    const auto c = sampler.candidates(logits.data(), 1000);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].id, argmax);
    EXPECT_EQ(c[0].probability, 1.0);
  }
  // Ties: the lowest id wins; -inf entries are skipped.
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> tied{-inf, 1.5f, 3.0f, -2.0f, 3.0f};
  Sampler greedy({.temperature = 0.0, .seed = 1});
  EXPECT_EQ(greedy.sample(tied.data(), 5), 2);
}

TEST(Sampler, TemperatureScalesTheSoftmax) {
  const std::vector<float> logits = random_logits(50, 3);
  for (double temperature : {0.25, 0.7, 1.0, 2.5}) {
    Sampler sampler({.temperature = temperature, .top_k = 0, .top_p = 1.0, .seed = 5});
    const auto c = sampler.candidates(logits.data(), 50);
    ASSERT_EQ(c.size(), 50u) << "no filter is active: every token stays";
    const std::vector<double> expected = softmax_of(logits, temperature);
    double total = 0.0;
    for (size_t i = 0; i < c.size(); ++i) {
      EXPECT_NEAR(c[i].probability, expected[c[i].id], 1e-12) << "T=" << temperature;
      if (i > 0) {
        EXPECT_GE(c[i - 1].probability, c[i].probability) << "most probable first";
      }
      total += c[i].probability;
    }
    EXPECT_NEAR(total, 1.0, 1e-12);
  }
  // A lower temperature sharpens: the top probability grows as T falls.
  Sampler cold({.temperature = 0.3, .top_k = 0, .top_p = 1.0});
  Sampler hot({.temperature = 3.0, .top_k = 0, .top_p = 1.0});
  EXPECT_GT(cold.candidates(logits.data(), 50)[0].probability,
            hot.candidates(logits.data(), 50)[0].probability + 0.2);
  // A tiny temperature neither overflows nor yields NaN: it is the argmax with probability ~1.
  Sampler tiny({.temperature = 1e-300, .top_k = 0, .top_p = 1.0});
  const auto t = tiny.candidates(logits.data(), 50);
  EXPECT_EQ(t[0].id, ids_by_logit(logits)[0]);
  EXPECT_NEAR(t[0].probability, 1.0, 1e-12);
}

TEST(Sampler, TopKKeepsExactlyTheKLargest) {
  const std::vector<float> logits = random_logits(200, 11);
  const std::vector<int32_t> order = ids_by_logit(logits);
  for (int k : {1, 2, 7, 40, 199}) {
    Sampler sampler({.temperature = 0.9, .top_k = k, .top_p = 1.0, .seed = 2});
    const auto c = sampler.candidates(logits.data(), 200);
    ASSERT_EQ(c.size(), static_cast<size_t>(k));
    const std::vector<int32_t> kept(order.begin(), order.begin() + k);
    const std::vector<double> expected = softmax_of(logits, 0.9, kept);
    for (size_t i = 0; i < c.size(); ++i) {
      EXPECT_EQ(c[i].id, order[i]);
      EXPECT_NEAR(c[i].probability, expected[c[i].id], 1e-12);
    }
    // Draws never leave the kept set.
    for (int draw = 0; draw < 200; ++draw) {
      const int32_t id = sampler.sample(logits.data(), 200);
      EXPECT_NE(std::find(kept.begin(), kept.end(), id), kept.end()) << "k=" << k;
    }
  }
  // k larger than the vocabulary keeps everything; ties at the boundary still give exactly k.
  Sampler big({.temperature = 1.0, .top_k = 500, .top_p = 1.0});
  EXPECT_EQ(big.candidates(logits.data(), 200).size(), 200u);
  const std::vector<float> ties{1.0f, 2.0f, 2.0f, 2.0f, 0.5f, 2.0f};
  Sampler two({.temperature = 1.0, .top_k = 2, .top_p = 1.0});
  const auto c = two.candidates(ties.data(), 6);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, 1);
  EXPECT_EQ(c[1].id, 2);
  EXPECT_NEAR(c[0].probability, 0.5, 1e-15);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  const std::vector<float> logits = random_logits(300, 19, 2.0);
  const std::vector<int32_t> order = ids_by_logit(logits);
  const std::vector<double> full = softmax_of(logits, 1.0);
  for (double p : {1e-6, 0.1, 0.5, 0.9, 0.95, 0.999}) {
    Sampler sampler({.temperature = 1.0, .top_k = 0, .top_p = p, .seed = 4});
    const auto c = sampler.candidates(logits.data(), 300);
    // The reference set: walk the sorted probabilities until their sum reaches p.
    size_t m = 0;
    double mass = 0.0;
    while (m < order.size() && mass < p) mass += full[order[m++]];
    ASSERT_EQ(c.size(), m) << "p=" << p;
    // Smallest: without its last member the set falls short of p.
    EXPECT_LT(mass - full[order[m - 1]], p);
    EXPECT_GE(mass, p);
    for (size_t i = 0; i < m; ++i) {
      EXPECT_EQ(c[i].id, order[i]);
      EXPECT_NEAR(c[i].probability, full[order[i]] / mass, 1e-12) << "renormalised";
    }
  }
  // A tiny p keeps exactly one token (at least one always survives).
  Sampler one({.temperature = 1.0, .top_k = 0, .top_p = 1e-9});
  EXPECT_EQ(one.candidates(logits.data(), 300).size(), 1u);
}

TEST(Sampler, TopKThenTopPCompose) {
  const std::vector<float> logits = random_logits(100, 23, 1.0);
  const std::vector<int32_t> order = ids_by_logit(logits);
  Sampler sampler({.temperature = 1.5, .top_k = 10, .top_p = 0.6});
  const auto c = sampler.candidates(logits.data(), 100);
  const std::vector<int32_t> top10(order.begin(), order.begin() + 10);
  const std::vector<double> p10 = softmax_of(logits, 1.5, top10);
  size_t m = 0;
  double mass = 0.0;
  while (mass < 0.6) mass += p10[order[m++]];
  ASSERT_EQ(c.size(), m);
  ASSERT_GT(m, 1u);
  ASSERT_LT(m, 10u);
  for (size_t i = 0; i < m; ++i) EXPECT_NEAR(c[i].probability, p10[order[i]] / mass, 1e-12);
}

TEST(Sampler, SameSeedSameTokensOtherSeedOtherTokens) {
  const std::vector<float> logits = random_logits(64, 29, 1.0);
  auto run = [&](uint64_t seed) {
    Sampler sampler({.temperature = 1.0, .top_k = 0, .top_p = 1.0, .seed = seed});
    std::vector<int32_t> ids;
    for (int i = 0; i < 300; ++i) ids.push_back(sampler.sample(logits.data(), 64));
    return ids;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
  // The double overload draws the same tokens as the float one for the same values.
  std::vector<double> wide(logits.begin(), logits.end());
  Sampler a({.temperature = 0.8, .top_k = 20, .top_p = 0.9, .seed = 9});
  Sampler b({.temperature = 0.8, .top_k = 20, .top_p = 0.9, .seed = 9});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(a.sample(logits.data(), 64), b.sample(wide.data(), 64));
}

// 20k draws: every token's frequency within 5 standard errors of its probability, and the
// chi-square statistic within its plausible range. The expected distribution is computed here,
// independently of Sampler::candidates.
void expect_draws_follow(const SamplingOptions& options, const std::vector<float>& logits,
                         const std::vector<double>& expected) {
  const int draws = 20000;
  Sampler sampler(options);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits.data(), logits.size())];
  double chi2 = 0.0;
  int bins = 0;
  for (size_t id = 0; id < logits.size(); ++id) {
    const double p = expected[id];
    if (p == 0.0) {
      EXPECT_EQ(counts[id], 0) << "token " << id << " is outside the kept set";
      continue;
    }
    const double freq = static_cast<double>(counts[id]) / draws;
    EXPECT_NEAR(freq, p, 5.0 * std::sqrt(p * (1 - p) / draws) + 1e-9) << "token " << id;
    chi2 += (counts[id] - draws * p) * (counts[id] - draws * p) / (draws * p);
    ++bins;
  }
  // chi-square with bins-1 degrees of freedom: mean bins-1, sd sqrt(2(bins-1)).
  EXPECT_LT(chi2, (bins - 1) + 6.0 * std::sqrt(2.0 * (bins - 1)));
}

TEST(Sampler, DrawsFollowTheSoftmax) {
  const std::vector<float> logits = random_logits(12, 31, 1.0);
  expect_draws_follow({.temperature = 1.3, .top_k = 0, .top_p = 1.0, .seed = 123}, logits,
                      softmax_of(logits, 1.3));
  // Top-k 5 then top-p 0.8: the expected law is the renormalised head of the top-5 softmax.
  const std::vector<int32_t> order = ids_by_logit(logits);
  const std::vector<double> p5 =
      softmax_of(logits, 0.7, std::vector<int32_t>(order.begin(), order.begin() + 5));
  std::vector<double> expected(logits.size(), 0.0);
  double mass = 0.0;
  for (size_t m = 0; mass < 0.8; ++m) mass += (expected[order[m]] = p5[order[m]]);
  for (double& p : expected) p /= mass;
  expect_draws_follow({.temperature = 0.7, .top_k = 5, .top_p = 0.8, .seed = 321}, logits,
                      expected);
}

// Without top-k the sampler puts only as many tokens in order as its walk reaches (64, then 4x
// more at a time): a flat law over 300 tokens makes it go past the first 64, with and without
// top-p, and the draws still follow the law candidates() describes.
TEST(Sampler, DrawsWithoutTopKFollowTheCandidatesPastTheFirstRanked) {
  const std::vector<float> logits = random_logits(300, 41, 0.3);
  for (double top_p : {1.0, 0.9}) {
    const SamplingOptions o{.temperature = 1.0, .top_k = 0, .top_p = top_p, .seed = 77};
    const std::vector<TokenProbability> c = Sampler(o).candidates(logits.data(), 300);
    if (top_p < 1.0) EXPECT_GT(c.size(), 64u);  // (the walk must grow past its first chunk)
    std::vector<double> expected(logits.size(), 0.0);
    for (const TokenProbability& t : c) expected[t.id] = t.probability;
    expect_draws_follow(o, logits, expected);
  }
}

TEST(Sampler, MaskedTokensAreNeverDrawn) {
  std::vector<float> logits = random_logits(30, 37, 0.5);
  const float inf = std::numeric_limits<float>::infinity();
  for (int id = 0; id < 30; id += 2) logits[id] = -inf;
  Sampler sampler({.temperature = 2.0, .top_k = 0, .top_p = 1.0, .seed = 3});
  EXPECT_EQ(sampler.candidates(logits.data(), 30).size(), 15u);
  for (int i = 0; i < 2000; ++i) EXPECT_EQ(sampler.sample(logits.data(), 30) % 2, 1);
}

TEST(Sampler, BadOptionsAndBadLogitsAreClearErrors) {
  EXPECT_NE(error_of([] { Sampler s({.temperature = -0.1}); }).find("temperature"), std::string::npos);
  EXPECT_NE(error_of([] { Sampler s({.temperature = std::nan("")}); }).find("temperature"),
            std::string::npos);
  EXPECT_NE(error_of([] { Sampler s({.temperature = INFINITY}); }).find("temperature"),
            std::string::npos);
  EXPECT_NE(error_of([] { Sampler s({.top_p = 0.0}); }).find("top-p"), std::string::npos);
  EXPECT_NE(error_of([] { Sampler s({.top_p = -0.5}); }).find("top-p"), std::string::npos);
  EXPECT_NE(error_of([] { Sampler s({.top_p = std::nan("")}); }).find("top-p"), std::string::npos);
  EXPECT_NE(error_of([] { Sampler s({.top_p = 1.5}); }).find("top-p must be in (0, 1]"),
            std::string::npos)
      << "a mass above 1 is a mistake, like 0";
  EXPECT_EQ(error_of([] { Sampler s({.temperature = 0.0, .top_k = -3, .top_p = 1.0}); }), "")
      << "top-k <= 0 and top-p = 1 mean 'disabled'";

  Sampler sampler({.seed = 1});
  std::vector<float> logits = random_logits(10, 41);
  logits[6] = std::nanf("");
  EXPECT_NE(error_of([&] { sampler.sample(logits.data(), 10); }).find("token 6 is NaN"),
            std::string::npos);
  logits[6] = INFINITY;
  EXPECT_NE(error_of([&] { sampler.sample(logits.data(), 10); }).find("+inf"), std::string::npos);
  std::vector<float> all_masked(10, -INFINITY);
  EXPECT_NE(error_of([&] { sampler.sample(all_masked.data(), 10); }).find("every one"),
            std::string::npos);
  EXPECT_NE(error_of([&] { sampler.sample(logits.data(), 0); }).find("empty"), std::string::npos);
}

}  // namespace
}  // namespace sf

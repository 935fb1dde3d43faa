#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "base/error.h"
#include "sample/sampler.h"

namespace skiff {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Params with every filter and penalty off at temperature 1: the plain softmax.
SamplerParams plain() {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  return p;
}

// Probabilities 0.4 0.3 0.15 0.1 0.05 on ids 3 1 4 0 2 (shuffled so id order != prob order).
const std::vector<int32_t> kIds = {3, 1, 4, 0, 2};
const std::vector<double> kProbs = {0.4, 0.3, 0.15, 0.1, 0.05};
std::vector<float> five_logits() {
  std::vector<float> logits(5);
  for (size_t i = 0; i < kIds.size(); ++i) logits[kIds[i]] = float(std::log(kProbs[i]));
  return logits;
}

TokenDistribution dist_of(SamplerParams p, const std::vector<float>& logits,
                          const std::vector<int32_t>& history = {}) {
  return Sampler(p).distribution(logits, history);
}

void expect_dist(const TokenDistribution& d, const std::vector<int32_t>& ids,
                 const std::vector<double>& probs, double tolerance = 1e-6) {
  ASSERT_EQ(d.ids, ids);
  ASSERT_EQ(d.probs.size(), probs.size());
  for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(d.probs[i], probs[i], tolerance) << i;
}

// --- greedy --------------------------------------------------------------------------------

TEST(SamplerArgmax, PicksLargestAndLowestIdOnTies) {
  std::vector<float> logits = {0.1f, 2.0f, -3.0f, 2.0f, 1.9f};
  EXPECT_EQ(argmax(logits), 1);
  std::vector<float> negative = {-5.0f, -1.0f, -1.0f};
  EXPECT_EQ(argmax(negative), 1);
  std::vector<float> one = {-kInf};
  EXPECT_EQ(argmax(one), 0);
  EXPECT_THROW(argmax(std::span<const float>()), Error);
}

TEST(SamplerGreedy, OneHotOnArgmaxWithLowestIdTie) {
  SamplerParams p;  // default filters stay on; temperature 0 overrides them
  p.temperature = 0.0f;
  std::vector<float> logits = {0.5f, 3.0f, 1.0f, 3.0f, -kInf};
  expect_dist(dist_of(p, logits), {1}, {1.0});
  Sampler sampler(p);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sampler.sample(logits, {}), 1);
}

TEST(SamplerGreedy, PenaltiesApplyBeforeArgmax) {
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.repeat_penalty = 2.0f;
  std::vector<float> logits = {3.0f, 2.0f, 1.0f};
  std::vector<int32_t> history = {0};
  // 3 / 2 = 1.5 < 2, so id 1 wins.
  expect_dist(dist_of(p, logits, history), {1}, {1.0});
}

TEST(SamplerGreedy, DoesNotUseTheRng) {
  SamplerParams p = plain();
  p.seed = 7;
  Sampler a(p), b(p);
  SamplerParams g = p;
  g.temperature = 0.0f;
  Sampler greedy(g);
  std::vector<float> logits = {1.0f, 2.0f};
  greedy.sample(logits, {});
  EXPECT_EQ(greedy.uniform(), a.uniform());
}

// --- each filter alone ---------------------------------------------------------------------

TEST(SamplerFilters, PlainSoftmaxKeepsEverythingSorted) {
  expect_dist(dist_of(plain(), five_logits()), kIds, kProbs);
}

TEST(SamplerFilters, SoftmaxIsStableForHugeLogits) {
  std::vector<float> logits = {1000.0f, 1000.0f + std::log(3.0f), -1e30f};
  // Weights 1 : 3 : 0 -> the third token underflows to 0 and leaves.
  expect_dist(dist_of(plain(), logits), {1, 0}, {0.75, 0.25}, 1e-4);
}

TEST(SamplerFilters, TopK) {
  SamplerParams p = plain();
  p.top_k = 2;
  expect_dist(dist_of(p, five_logits()), {3, 1}, {0.4 / 0.7, 0.3 / 0.7});  // .571429 .428571
  p.top_k = 1;
  expect_dist(dist_of(p, five_logits()), {3}, {1.0});
  p.top_k = 5;
  expect_dist(dist_of(p, five_logits()), kIds, kProbs);
  p.top_k = 1000;  // more than the vocabulary: off
  expect_dist(dist_of(p, five_logits()), kIds, kProbs);
}

TEST(SamplerFilters, TopKTiesAtTheBoundaryKeepLowerIds) {
  SamplerParams p = plain();
  p.top_k = 2;
  std::vector<float> logits = {0.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  // id 1 has weight e, the rest 1: kept {1, 0}, probs e/(e+1), 1/(e+1).
  expect_dist(dist_of(p, logits), {1, 0}, {0.7310586, 0.2689414});
}

TEST(SamplerFilters, Temperature) {
  SamplerParams p = plain();
  p.temperature = 2.0f;  // probs proportional to sqrt(p)
  expect_dist(dist_of(p, five_logits()), kIds,
              {0.3001244, 0.2599154, 0.1837879, 0.1500622, 0.1061100});
  p.temperature = 0.5f;  // proportional to p^2: .16 .09 .0225 .01 .0025 over .285
  expect_dist(dist_of(p, five_logits()), kIds,
              {0.5614035, 0.3157895, 0.0789474, 0.0350877, 0.0087719});
}

TEST(SamplerFilters, TopPKeepsSmallestPrefixReachingP) {
  SamplerParams p = plain();
  p.top_p = 0.75f;  // cumulative .4 .7 .85 -> 3 tokens
  expect_dist(dist_of(p, five_logits()), {3, 1, 4}, {0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85});
  p.top_p = 0.5f;  // .4 .7 -> 2 tokens
  expect_dist(dist_of(p, five_logits()), {3, 1}, {0.4 / 0.7, 0.3 / 0.7});
  p.top_p = 0.3f;  // the first token alone already reaches it
  expect_dist(dist_of(p, five_logits()), {3}, {1.0});
  p.top_p = 1e-6f;  // always at least one token
  expect_dist(dist_of(p, five_logits()), {3}, {1.0});
  p.top_p = 0.97f;  // .4 .7 .85 .95 1.0 -> all
  expect_dist(dist_of(p, five_logits()), kIds, kProbs);
}

TEST(SamplerFilters, MinPRelativeToMax) {
  SamplerParams p = plain();
  p.min_p = 0.3f;  // threshold .3 * .4 = .12 -> .4 .3 .15
  expect_dist(dist_of(p, five_logits()), {3, 1, 4}, {0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85});
  p.min_p = 0.5f;  // threshold .2 -> .4 .3
  expect_dist(dist_of(p, five_logits()), {3, 1}, {0.4 / 0.7, 0.3 / 0.7});
  p.min_p = 1.0f;  // only the max
  expect_dist(dist_of(p, five_logits()), {3}, {1.0});
  p.min_p = 0.1f;  // threshold .04 -> all
  expect_dist(dist_of(p, five_logits()), kIds, kProbs);
}

TEST(SamplerFilters, NegativeInfinityLogitsNeverSurvive) {
  std::vector<float> logits = {-kInf, 0.0f, -kInf, 0.0f};
  expect_dist(dist_of(plain(), logits), {1, 3}, {0.5, 0.5});
  SamplerParams p = plain();
  p.top_k = 3;
  expect_dist(dist_of(p, logits), {1, 3}, {0.5, 0.5});
  EXPECT_EQ(dist_of(p, logits).prob_of(0), 0.0f);
}

// --- combination order ---------------------------------------------------------------------

TEST(SamplerOrder, TopKBeforeTopP) {
  SamplerParams p = plain();
  p.top_k = 3;     // renormalized: .470588 .352941 .176471
  p.top_p = 0.8f;  // cumulative .4706 .8235 -> 2 tokens (on the raw probs it would be 3)
  expect_dist(dist_of(p, five_logits()), {3, 1}, {0.4 / 0.7, 0.3 / 0.7});
}

TEST(SamplerOrder, TemperatureAfterTopP) {
  SamplerParams p = plain();
  p.temperature = 0.5f;  // top_p sees T = 1: .4 .7 .85 >= .8 -> 3 tokens (at T = .5 it would be 2)
  p.top_p = 0.8f;        // then T = .5 squares the kept probabilities: .16 .09 .0225
  expect_dist(dist_of(p, five_logits()), {3, 1, 4}, {0.16 / 0.2725, 0.09 / 0.2725, 0.0225 / 0.2725});
}

TEST(SamplerOrder, TemperatureAfterMinP) {
  SamplerParams p = plain();
  p.temperature = 0.5f;  // min_p sees T = 1: p >= .08 keeps .4 .3 .15 .1 (at T = .5 only 2)
  p.min_p = 0.2f;        // then squared: .16 .09 .0225 .01
  expect_dist(dist_of(p, five_logits()), {3, 1, 4, 0},
              {0.16 / 0.2825, 0.09 / 0.2825, 0.0225 / 0.2825, 0.01 / 0.2825});
}

TEST(SamplerOrder, TopPThenMinP) {
  SamplerParams p = plain();
  p.top_p = 0.9f;  // .4 .7 .85 .95 -> 4 tokens
  p.min_p = 0.3f;  // of those, p >= .12 -> 3
  expect_dist(dist_of(p, five_logits()), {3, 1, 4}, {0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85});
  p.min_p = 0.2f;  // p >= .08 -> the 4 from top_p (.1 survives min_p; .05 was cut by top_p)
  expect_dist(dist_of(p, five_logits()), {3, 1, 4, 0},
              {0.4 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.1 / 0.95});
}

TEST(SamplerOrder, TopPCumulatesOverTheTopKSetNotTheMinPSet) {
  SamplerParams p = plain();
  p.min_p = 0.3f;   // min_p set .4 .3 .15 (renormalized would be .47 .35 .18)
  p.top_p = 0.72f;  // on the full softmax: .4 .7 .85 -> 3; on the min_p set it would be 2
  expect_dist(dist_of(p, five_logits()), {3, 1, 4}, {0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85});
}

TEST(SamplerOrder, PenaltiesBeforeTopK) {
  SamplerParams p = plain();
  p.top_k = 1;
  p.presence_penalty = 10.0f;
  std::vector<int32_t> history = {3};  // the best token
  expect_dist(dist_of(p, five_logits(), history), {1}, {1.0});
}

TEST(SamplerOrder, DefaultChain) {
  SamplerParams p;  // T .8, top_k 40, top_p .95, min_p .05
  // Weights p^(1/.8) = p^1.25: .318108 .222025 .093350 .056234 .023644, total .713361.
  // top_p: cumulative .4459 .7572 .8880 .9669 >= .95 -> 4 tokens. min_p .05: all of them.
  double w[] = {0.318108, 0.222025, 0.093350, 0.056234};
  double total = w[0] + w[1] + w[2] + w[3];
  expect_dist(dist_of(p, five_logits()), {3, 1, 4, 0},
              {w[0] / total, w[1] / total, w[2] / total, w[3] / total}, 1e-5);
}

// --- penalties -----------------------------------------------------------------------------

// The penalized logit difference between `id` and `reference`, read back from the softmax.
double logit_gap(const TokenDistribution& d, int32_t id, int32_t reference) {
  return std::log(double(d.prob_of(id)) / double(d.prob_of(reference)));
}

TEST(SamplerPenalties, RepeatDividesPositiveAndMultipliesNegative) {
  SamplerParams p = plain();
  p.repeat_penalty = 2.0f;
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 0.0f};
  std::vector<int32_t> history = {0, 1, 1, 0};
  TokenDistribution d = dist_of(p, logits, history);
  // id 0: 2 / 2 = 1; id 1: -1 * 2 = -2 (once, not per occurrence); id 2 untouched.
  EXPECT_NEAR(logit_gap(d, 0, 2), 1.0 - 0.5, 1e-5);
  EXPECT_NEAR(logit_gap(d, 1, 2), -2.0 - 0.5, 1e-5);
  EXPECT_NEAR(logit_gap(d, 3, 2), 0.0 - 0.5, 1e-5);
}

TEST(SamplerPenalties, PresenceOnceFrequencyPerCount) {
  SamplerParams p = plain();
  p.presence_penalty = 0.25f;
  p.frequency_penalty = 0.5f;
  std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.0f};
  std::vector<int32_t> history = {0, 1, 1, 1, 2, 2};
  TokenDistribution d = dist_of(p, logits, history);
  EXPECT_NEAR(logit_gap(d, 0, 3), -(0.25 + 1 * 0.5), 1e-5);
  EXPECT_NEAR(logit_gap(d, 1, 3), -(0.25 + 3 * 0.5), 1e-5);
  EXPECT_NEAR(logit_gap(d, 2, 3), -(0.25 + 2 * 0.5), 1e-5);
}

TEST(SamplerPenalties, AllThreeTogetherInLlamaCppOrder) {
  SamplerParams p = plain();
  p.repeat_penalty = 2.0f;
  p.presence_penalty = 0.25f;
  p.frequency_penalty = 0.5f;
  std::vector<float> logits = {3.0f, -1.0f, 0.0f};
  std::vector<int32_t> history = {0, 1, 1};
  TokenDistribution d = dist_of(p, logits, history);
  EXPECT_NEAR(logit_gap(d, 0, 2), 3.0 / 2 - 0.5 - 0.25, 1e-5);       // 0.75
  EXPECT_NEAR(logit_gap(d, 1, 2), -1.0 * 2 - 2 * 0.5 - 0.25, 1e-5);  // -3.25
}

TEST(SamplerPenalties, OnlyTheLastRepeatLastNCount) {
  SamplerParams p = plain();
  p.frequency_penalty = 1.0f;
  p.repeat_last_n = 3;
  std::vector<float> logits = {0.0f, 0.0f, 0.0f};
  std::vector<int32_t> history = {0, 0, 0, 1, 1, 0};  // window {1, 1, 0}
  TokenDistribution d = dist_of(p, logits, history);
  EXPECT_NEAR(logit_gap(d, 0, 2), -1.0, 1e-5);
  EXPECT_NEAR(logit_gap(d, 1, 2), -2.0, 1e-5);

  p.repeat_last_n = 0;  // off
  expect_dist(dist_of(p, logits, history), {0, 1, 2}, {1 / 3.0, 1 / 3.0, 1 / 3.0});

  p.repeat_last_n = -1;  // whole history: id 0 four times
  d = dist_of(p, logits, history);
  EXPECT_NEAR(logit_gap(d, 0, 2), -4.0, 1e-5);
}

TEST(SamplerPenalties, HistoryOutsideVocabularyThrows) {
  SamplerParams p = plain();
  p.repeat_penalty = 1.1f;
  std::vector<float> logits = {0.0f, 0.0f};
  EXPECT_THROW(dist_of(p, logits, {2}), Error);
  EXPECT_THROW(dist_of(p, logits, {-1}), Error);
}

// --- bad input -----------------------------------------------------------------------------

TEST(SamplerInputs, BadLogitsThrow) {
  Sampler sampler(plain());
  EXPECT_THROW(sampler.distribution(std::span<const float>(), {}), Error);
  std::vector<float> nan = {0.0f, std::nanf("")};
  EXPECT_THROW(sampler.distribution(nan, {}), Error);
  std::vector<float> inf = {0.0f, kInf};
  EXPECT_THROW(sampler.distribution(inf, {}), Error);
  std::vector<float> all_masked = {-kInf, -kInf};
  EXPECT_THROW(sampler.distribution(all_masked, {}), Error);
  EXPECT_THROW(sampler.draw(TokenDistribution{}), Error);
}

// --- RNG and drawing -----------------------------------------------------------------------

TEST(SamplerRng, MatchesReferenceXoshiro256StarStar) {
  // Computed with an independent implementation of splitmix64 + xoshiro256** (Vigna's C
  // reference). splitmix64(0)'s first output is the well-known 0xe220a8397b1dcdaf.
  Xoshiro256StarStar zero(0);
  EXPECT_EQ(zero.next(), 0x99ec5f36cb75f2b4ull);
  EXPECT_EQ(zero.next(), 0xbf6e1f784956452aull);
  EXPECT_EQ(zero.next(), 0x1a5f849d4933e6e0ull);
  EXPECT_EQ(zero.next(), 0x6aa594f1262d2d2cull);
  Xoshiro256StarStar other(12345);
  EXPECT_EQ(other.next(), 0xbe6a36374160d49bull);
  EXPECT_EQ(other.next(), 0x214aaa0637a688c6ull);
}

TEST(SamplerRng, UniformRanges) {
  Xoshiro256StarStar rng(1);
  for (int i = 0; i < 100000; ++i) {
    double d = rng.next_double();
    float f = rng.next_float();
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
    ASSERT_GE(f, 0.0f);
    ASSERT_LT(f, 1.0f);
  }
}

std::vector<float> random_logits_for_sampling() {
  std::vector<float> logits(5000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i) * 0.7) * 4.0);
  return logits;
}

TEST(SamplerDraw, SameSeedSameSequenceDifferentSeedsDiffer) {
  std::vector<float> logits(1000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i)) * 3.0);
  auto run = [&](uint64_t seed) {
    SamplerParams p;
    p.seed = seed;
    Sampler sampler(p);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 200; ++i) tokens.push_back(sampler.sample(logits, tokens));
    return tokens;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
  EXPECT_NE(run(0), run(1));
}

TEST(SamplerDraw, SampleEqualsDrawOfDistribution) {
  std::vector<float> big = random_logits_for_sampling();
  std::vector<SamplerParams> configs(4, plain());
  configs[1] = SamplerParams{};
  configs[2].top_p = 0.9f;
  configs[3].min_p = 0.01f;
  configs[3].temperature = 1.3f;
  for (SamplerParams p : configs) {
    p.seed = 11;
    Sampler a(p), b(p);
    for (int i = 0; i < 300; ++i) {
      TokenDistribution d = b.distribution(big, {});
      ASSERT_EQ(a.sample(big, {}), b.draw(d)) << i;
    }
  }
}

TEST(SamplerDraw, DrawUsesOneUniformPerCall) {
  SamplerParams p = plain();
  p.seed = 99;
  Sampler a(p), b(p);
  TokenDistribution d{{5, 6}, {0.5f, 0.5f}};
  a.draw(d);
  b.uniform();
  EXPECT_EQ(a.uniform(), b.uniform());
}

TEST(SamplerDraw, DrawIsProportionalToUnnormalizedProbs) {
  SamplerParams p = plain();
  Sampler sampler(p);
  TokenDistribution d{{7, 8, 9}, {0.0f, 2.0f, 0.0f}};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sampler.draw(d), 8);
}

// Pearson's chi-square over 200k draws from the five-token distribution, 4 degrees of
// freedom. The 0.001 critical value is 18.467; the seeds are fixed, so this never flakes.
TEST(SamplerDraw, EmpiricalFrequenciesMatchDistribution) {
  constexpr int kDraws = 200000;
  for (uint64_t seed : {1ull, 2ull, 3ull}) {
    SamplerParams p = plain();
    p.seed = seed;
    Sampler sampler(p);
    std::vector<float> logits = five_logits();
    std::vector<int> counts(5, 0);
    for (int i = 0; i < kDraws; ++i) counts[sampler.sample(logits, {})]++;
    double chi_square = 0.0;
    for (size_t i = 0; i < kIds.size(); ++i) {
      double expected = kProbs[i] * kDraws;
      double diff = counts[kIds[i]] - expected;
      chi_square += diff * diff / expected;
    }
    EXPECT_LT(chi_square, 18.467) << "seed " << seed;
  }
}

TEST(SamplerDraw, EmpiricalFrequenciesAfterFilters) {
  // top_k 3 at temperature 0.5: p^2 for .4 .3 .15 -> .16 .09 .0225 over .2725; 2 dof,
  // 0.001 critical value 13.816.
  constexpr int kDraws = 200000;
  SamplerParams p = plain();
  p.temperature = 0.5f;
  p.top_k = 3;
  p.seed = 5;
  Sampler sampler(p);
  std::vector<float> logits = five_logits();
  std::vector<int> counts(5, 0);
  for (int i = 0; i < kDraws; ++i) counts[sampler.sample(logits, {})]++;
  EXPECT_EQ(counts[0] + counts[2], 0);
  double expected_probs[] = {0.16 / 0.2725, 0.09 / 0.2725, 0.0225 / 0.2725};
  double chi_square = 0.0;
  for (int i = 0; i < 3; ++i) {
    double expected = expected_probs[i] * kDraws;
    double diff = counts[kIds[i]] - expected;
    chi_square += diff * diff / expected;
  }
  EXPECT_LT(chi_square, 13.816);
}

// --- the large-vocabulary paths agree with a plain full sort --------------------------------

TokenDistribution reference_distribution(const SamplerParams& p, std::vector<float> logits) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  if (p.top_k > 0 && size_t(p.top_k) < order.size()) order.resize(p.top_k);
  float max_logit = logits[order[0]];
  std::vector<float> weights;
  double total = 0.0;
  for (int32_t id : order) {
    weights.push_back(std::exp(logits[id] - max_logit));  // temperature comes last
    total += weights.back();
  }
  // Sorted by prob, ties by id: exp() can give distinct logits equal weights.
  std::vector<size_t> by_weight(order.size());
  std::iota(by_weight.begin(), by_weight.end(), 0);
  std::sort(by_weight.begin(), by_weight.end(), [&](size_t a, size_t b) {
    return weights[a] > weights[b] || (weights[a] == weights[b] && order[a] < order[b]);
  });
  std::vector<int32_t> sorted_order;
  std::vector<float> sorted_weights;
  for (size_t i : by_weight) {
    sorted_order.push_back(order[i]);
    sorted_weights.push_back(weights[i]);
  }
  order = sorted_order;
  weights = sorted_weights;
  size_t keep = order.size();
  if (p.top_p < 1.0f) {
    double cumulative = 0.0;
    for (size_t i = 0; i < order.size(); ++i) {
      cumulative += weights[i] / total;
      if (cumulative >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  size_t min_p_keep = 0;
  while (min_p_keep < keep && weights[min_p_keep] >= p.min_p) ++min_p_keep;
  keep = std::min(keep, min_p_keep);
  while (keep > 0 && weights[keep - 1] == 0.0f) --keep;
  for (size_t i = 0; i < keep; ++i) weights[i] = float(std::pow(double(weights[i]), 1.0 / p.temperature));
  while (keep > 1 && weights[keep - 1] == 0.0f) --keep;
  double kept = 0.0;
  for (size_t i = 0; i < keep; ++i) kept += weights[i];
  TokenDistribution d;
  for (size_t i = 0; i < keep; ++i) {
    d.ids.push_back(order[i]);
    d.probs.push_back(float(weights[i] / kept));
  }
  return d;
}

std::vector<float> random_logits(size_t n, uint64_t seed, float scale) {
  Xoshiro256StarStar rng(seed);
  std::vector<float> logits(n);
  for (float& l : logits) l = float((rng.next_double() * 2 - 1) * scale);
  return logits;
}

TEST(SamplerLargeVocab, AllPathsMatchAFullSortReference) {
  struct Case {
    int top_k;
    float top_p, min_p, temperature, scale;
    bool quantize = false;
  };
  std::vector<Case> cases = {
      {0, 0.95f, 0.0f, 0.8f, 10.0f},    // chunked top_p, peaked
      {0, 0.95f, 0.0f, 1.0f, 1.0f},     // chunked top_p, flat: most of the vocabulary
      {0, 0.5f, 0.0f, 1.0f, 0.0f},      // all equal: ties by id
      {0, 0.9f, 0.05f, 0.8f, 10.0f},    // min_p partition then top_p
      {0, 0.9f, 0.001f, 1.0f, 2.0f},    // min_p keeps thousands: radix sort
      {0, 1.0f, 0.0f, 1.0f, 5.0f},      // nothing: full (radix) sort
      {40, 0.95f, 0.05f, 0.8f, 10.0f},  // the defaults
      {1000, 0.9f, 0.0f, 1.5f, 3.0f},   // top_k too big for partial_sort: radix sort on logits
      {5000, 1.0f, 0.0f, 1.0f, 4.0f, true}, {0, 0.99f, 0.0f, 1.0f, 4.0f, true},
      {0, 1.0f, 0.0f, 2.0f, 4.0f, true},    {100, 0.99f, 0.0f, 1.0f, 4.0f, true},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SamplerParams p = plain();
    p.top_k = cases[c].top_k;
    p.top_p = cases[c].top_p;
    p.min_p = cases[c].min_p;
    p.temperature = cases[c].temperature;
    std::vector<float> logits = random_logits(32000, c + 1, cases[c].scale);
    if (cases[c].quantize) {
      // Many exact ties, signed zeros and masked tokens, to test the sort keys.
      for (size_t i = 0; i < logits.size(); ++i) {
        logits[i] = std::round(logits[i] * 2.0f) / 2.0f;
        if (logits[i] == 0.0f && i % 2) logits[i] = -0.0f;
        if (i % 7 == 0) logits[i] = -kInf;
      }
    }
    TokenDistribution got = dist_of(p, logits);
    TokenDistribution want = reference_distribution(p, logits);
    ASSERT_EQ(got.ids, want.ids) << "case " << c;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got.probs[i], want.probs[i], 1e-6);
    double sum = std::accumulate(got.probs.begin(), got.probs.end(), 0.0);
    EXPECT_NEAR(sum, 1.0, 1e-4) << "case " << c;
  }
  SamplerParams p = plain();
  p.top_p = 0.5001f;  // 16003 / 32000 = .50009 falls short, 16004 / 32000 = .500125 reaches it
  TokenDistribution flat = dist_of(p, std::vector<float>(32000, 0.0f));
  ASSERT_EQ(flat.size(), 16004u);
  EXPECT_EQ(flat.ids.front(), 0);
  EXPECT_EQ(flat.ids.back(), 16003);
}

// Prints the fastest of 100 calls (the minimum resists noise from other load on the machine).
TEST(SamplerLargeVocab, Timing) {
  auto time = [](SamplerParams p, const std::vector<float>& logits) {
    Sampler sampler(p);
    double best = 1e30;
    for (int i = 0; i < 100; ++i) {
      auto start = std::chrono::steady_clock::now();
      int32_t token = sampler.sample(logits, {});
      std::chrono::duration<double, std::micro> elapsed = std::chrono::steady_clock::now() - start;
      EXPECT_GE(token, 0);
      best = std::min(best, elapsed.count());
    }
    return best;
  };
  // Like a language model: noise plus a few strong candidates; top_p keeps a handful.
  std::vector<float> peaked = random_logits(32000, 77, 2.0f);
  for (int i = 0; i < 30; ++i) peaked[i * 997] = 8.0f + float(i) / 3.0f;
  std::vector<float> flat = random_logits(32000, 78, 4.0f);  // top_p keeps ~12000
  SamplerParams defaults;
  SamplerParams top_p_only = plain();
  top_p_only.top_p = 0.95f;
  SamplerParams none = plain();
  std::printf(
      "vocab 32000, best us per sample(): defaults %.0f, top_p only (peaked) %.0f, top_p only "
      "(flat) %.0f, no filters %.0f\n",
      time(defaults, peaked), time(top_p_only, peaked), time(top_p_only, flat), time(none, flat));
}

// --- params --------------------------------------------------------------------------------

void expect_invalid(SamplerParams p, const std::string& field) {
  try {
    p.validate();
    ADD_FAILURE() << "no error for " << field;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
  EXPECT_THROW(Sampler{p}, Error);
}

TEST(SamplerValidate, Validate) {
  SamplerParams ok;
  EXPECT_NO_THROW(ok.validate());
  SamplerParams edges = plain();
  edges.temperature = 0.0f;
  edges.min_p = 1.0f;
  edges.repeat_last_n = -1;
  edges.top_k = -5;
  edges.presence_penalty = -1.0f;
  EXPECT_NO_THROW(edges.validate());

  SamplerParams p;
  p.temperature = -0.1f;
  expect_invalid(p, "temperature");
  p = {};
  p.temperature = std::nanf("");
  expect_invalid(p, "temperature");
  p = {};
  p.top_p = 0.0f;
  expect_invalid(p, "top_p");
  p = {};
  p.top_p = 1.5f;
  expect_invalid(p, "top_p");
  p = {};
  p.min_p = -0.1f;
  expect_invalid(p, "min_p");
  p = {};
  p.min_p = 1.1f;
  expect_invalid(p, "min_p");
  p = {};
  p.repeat_penalty = 0.0f;
  expect_invalid(p, "repeat_penalty");
  p = {};
  p.repeat_last_n = -2;
  expect_invalid(p, "repeat_last_n");
  p = {};
  p.presence_penalty = kInf;
  expect_invalid(p, "presence_penalty");
  p = {};
  p.frequency_penalty = std::nanf("");
  expect_invalid(p, "frequency_penalty");
}

// --- stop strings --------------------------------------------------------------------------

// Feeds pieces; returns everything emitted (flushing at the end if no stop) and the stop flag.
std::pair<std::string, bool> feed(StopStrings& stops, const std::vector<std::string>& pieces) {
  std::string emitted;
  for (const std::string& piece : pieces) {
    StopStrings::Output out = stops.push(piece);
    emitted += out.text;
    if (out.stopped) return {emitted, true};
  }
  return {emitted + stops.flush(), false};
}

TEST(StopStrings, AcrossPieceBoundaries) {
  StopStrings stops({"World"});
  EXPECT_EQ(stops.push("Hel").text, "Hel");
  EXPECT_EQ(stops.push("lo Wo").text, "lo ");  // "Wo" held back
  EXPECT_EQ(stops.held(), 2u);
  StopStrings::Output out = stops.push("rld!");
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.text, "");
  EXPECT_EQ(stops.matched(), 0);
  EXPECT_EQ(stops.push("more").text, "");
  EXPECT_TRUE(stops.push("more").stopped);
  EXPECT_EQ(stops.flush(), "");
}

TEST(StopStrings, PartialMatchThatFails) {
  StopStrings stops({"World"});
  EXPECT_EQ(stops.push("a Wor").text, "a ");
  StopStrings::Output out = stops.push("k");
  EXPECT_FALSE(out.stopped);
  EXPECT_EQ(out.text, "Work");
  EXPECT_EQ(stops.held(), 0u);
  // A failed partial whose tail starts a new partial: "WoWor" keeps "Wor".
  EXPECT_EQ(stops.push("Wo").text, "");
  EXPECT_EQ(stops.push("Wor").text, "Wo");
  EXPECT_EQ(stops.flush(), "Wor");  // generation ended normally: release it
}

TEST(StopStrings, OverlappingSelfPrefix) {
  StopStrings stops({"aab"});
  EXPECT_EQ(feed(stops, {"a", "a", "a", "b", "c"}), std::make_pair(std::string("a"), true));
}

TEST(StopStrings, StopInsideOnePiece) {
  StopStrings stops({"\n\n"});
  EXPECT_EQ(feed(stops, {"one\n", "two\n\nthree"}), std::make_pair(std::string("one\ntwo"), true));
}

TEST(StopStrings, StopAtVeryStart) {
  StopStrings stops({"</s>", "User:"});
  StopStrings::Output out = stops.push("User:");
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.text, "");
  EXPECT_EQ(stops.matched(), 1);

  StopStrings split({"User:"});
  EXPECT_EQ(feed(split, {"Us", "er", ": hi"}), std::make_pair(std::string(""), true));
}

TEST(StopStrings, MultipleStopsFirstToCompleteWins) {
  // "abc" starts first but "b" completes first, as it would byte by byte.
  StopStrings a({"abc", "b"});
  EXPECT_EQ(feed(a, {"xabc"}), std::make_pair(std::string("xa"), true));
  EXPECT_EQ(a.matched(), 1);
  // Both complete at the same byte: the longer one, so less text leaks.
  StopStrings b({"c", "abc"});
  EXPECT_EQ(feed(b, {"xabc"}), std::make_pair(std::string("x"), true));
  EXPECT_EQ(b.matched(), 1);
  // Hold back for whichever stop string has the longest partial match.
  StopStrings c({"ENDX", "DONE"});
  EXPECT_EQ(c.push("xxEND").text, "xx");  // "END" could still become "ENDX"
  EXPECT_EQ(c.push("Y").text, "ENDY");
  EXPECT_EQ(c.push("DO").text, "");
  EXPECT_TRUE(c.push("NE").stopped);
  EXPECT_EQ(c.matched(), 1);
  // The "D" held for "ENDX" also starts "DONE".
  StopStrings d({"ENDX", "DONE"});
  EXPECT_EQ(d.push("xxEND").text, "xx");
  StopStrings::Output out = d.push("ONE");
  EXPECT_TRUE(out.stopped);
  EXPECT_EQ(out.text, "EN");
}

TEST(StopStrings, NoStopsPassThrough) {
  StopStrings none({});
  EXPECT_EQ(none.push("anything").text, "anything");
  EXPECT_EQ(none.flush(), "");
  EXPECT_THROW(StopStrings({"ok", ""}), Error);
}

TEST(StopStrings, ResultDoesNotDependOnChunking) {
  const std::string text = "the cat sat on the mat; the end. THE END";
  std::vector<std::vector<std::string>> stop_sets = {
      {"the end"}, {"mat;", "at"}, {"END", "cat s"}, {"nothing here"}, {"t", "the"}};
  Xoshiro256StarStar rng(3);
  for (const auto& stop_set : stop_sets) {
    StopStrings whole(stop_set);
    auto want = feed(whole, {text});
    int want_match = whole.matched();
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<std::string> pieces;
      for (size_t at = 0; at < text.size();) {
        size_t len = 1 + rng.next() % 6;
        pieces.push_back(text.substr(at, len));
        at += len;
      }
      StopStrings chunked(stop_set);
      EXPECT_EQ(feed(chunked, pieces), want) << stop_set[0];
      EXPECT_EQ(chunked.matched(), want_match);
    }
  }
}

}  // namespace
}  // namespace skiff

// The adaptive draft-length rule (decode/draft_policy.h): its cold start, the threshold from
// measured costs and rate, and acceptance learned per confidence.
#include <gtest/gtest.h>

#include "decode/draft_policy.h"

namespace skiff {
namespace {

TEST(DraftLengthPolicy, ColdStartDraftsWhileAllAcceptedIsLikely) {
  DraftLengthPolicy p;
  p.begin_round();
  // Before any verdict every draft is a coin (0.5), whatever its confidence; the cold
  // threshold is 0.5 on the product.
  EXPECT_NEAR(p.acceptance(0.97f), 0.5, 1e-12);
  EXPECT_NEAR(p.acceptance(0.01f), 0.5, 1e-12);
  EXPECT_TRUE(p.include(0.01f));   // pi 0.5
  EXPECT_FALSE(p.include(0.97f));  // pi 0.25
  EXPECT_EQ(p.round_confidences().size(), 1u);
  // Verdicts move the bin and, less, every other bin.
  p.round_done(1, 1, 2, 0.01, false);
  EXPECT_GT(p.acceptance(0.01f), p.acceptance(0.5f));
  EXPECT_GT(p.acceptance(0.5f), 0.5);
}

TEST(DraftLengthPolicy, TakesADraftWhenItRaisesTheRoundsExpectedRate) {
  DraftLengthPolicy p;
  p.draft_step(0.010);
  // One verification size seen: no slope yet, the line is flat at 50 ms.
  p.round_done(0, 0, 3, 0.050, true);
  EXPECT_EQ(p.seconds_per_row(), 0);
  EXPECT_NEAR(p.verify_intercept(), 0.050, 1e-12);
  // A non-steady round (prefill catch-up) teaches nothing about costs.
  p.round_done(0, 0, 40, 5.0, false);
  EXPECT_NEAR(p.verify_intercept(), 0.050, 1e-12);
  // Memory-bound: a round of k drafts costs 60 + 10k ms; draft 1 pays when
  // (1 + pi) / 70 >= 1 / 60, i.e. pi >= 1/6.
  p.begin_round();
  EXPECT_TRUE(p.pays(0.17));
  EXPECT_FALSE(p.pays(0.16));
  // Compute-bound verification: 30 ms + 10 ms per position; k drafts cost 50 + 20k ms and
  // draft 1 pays when (1 + pi) / 70 >= 1 / 50, i.e. pi >= 0.4.
  DraftLengthPolicy q;
  q.draft_step(0.010);
  for (int T = 1; T <= 4; ++T) q.round_done(0, 0, T, 0.030 + 0.010 * T, true);
  EXPECT_NEAR(q.seconds_per_row(), 0.010, 1e-9);
  EXPECT_NEAR(q.verify_intercept(), 0.030, 1e-9);
  EXPECT_NEAR(q.expected_round_seconds(2), 0.090, 1e-9);
  q.begin_round();
  EXPECT_TRUE(q.pays(0.41));
  EXPECT_FALSE(q.pays(0.39));
  // With no verdicts yet every draft is a coin: the first is taken (pi 0.5), and the second
  // (pi 0.25) is not: (1.5 + 0.25) / 90 < 1.5 / 70.
  EXPECT_TRUE(q.include(0.9f));
  EXPECT_FALSE(q.include(0.9f));
  // An outlier fades: after many rounds at 4 ms per row the slope follows.
  for (int i = 0; i < 200; ++i) q.round_done(0, 0, 1 + i % 4, 0.030 + 0.004 * (1 + i % 4), true);
  EXPECT_NEAR(q.seconds_per_row(), 0.004, 2e-4);
  // Never negative (a noisy machine can make more rows look cheaper).
  DraftLengthPolicy n;
  n.round_done(0, 0, 1, 0.050, true);
  n.round_done(0, 0, 4, 0.040, true);
  EXPECT_EQ(n.seconds_per_row(), 0);
}

TEST(DraftLengthPolicy, LearnsAcceptancePerConfidence) {
  DraftLengthPolicy p;
  p.draft_step(0.001);
  for (int round = 0; round < 50; ++round) {
    p.begin_round();
    // Confident drafts that the target always rejects; lukewarm ones it always accepts.
    ASSERT_TRUE(p.include(0.55f) || round > 0);
    if (p.round_confidences().empty()) break;
    p.round_done(1, 1, 2, 0.01, true);
  }
  EXPECT_GT(p.acceptance(0.55f), 0.9);
  for (int round = 0; round < 50; ++round) {
    p.begin_round();
    if (!p.include(0.99f)) break;
    p.round_done(1, 0, 2, 0.01, true);
  }
  EXPECT_LT(p.acceptance(0.99f), 0.2);
  p.begin_round();
  EXPECT_FALSE(p.include(0.99f)) << "a confidence that never pays stops drafting";
  EXPECT_TRUE(p.include(0.55f));
  // Lookup drafts (no confidence) have a bin of their own, so far at the overall rate.
  EXPECT_GT(p.acceptance(-1.0f), p.acceptance(0.99f));
  EXPECT_LT(p.acceptance(-1.0f), p.acceptance(0.55f));
}

TEST(DraftLengthPolicy, ExploresAfterRoundsWithoutDrafts) {
  DraftLengthPolicy p;
  p.draft_step(0.001);
  // Every draft rejected: the rule stops drafting ...
  int drafted_rounds = 0;
  for (int round = 0; round < 200; ++round) {
    p.begin_round();
    const bool drafted = p.include(0.3f);
    drafted_rounds += drafted;
    p.round_done(drafted ? 1 : 0, 0, drafted ? 2 : 1, 0.01, true);
  }
  // ... but tries one draft after every 16 rounds without, in case things changed.
  EXPECT_GE(drafted_rounds, 200 / 17);
  EXPECT_LE(drafted_rounds, 200 / 17 + 8);
}

}  // namespace
}  // namespace skiff

// Speculative sampling keeps the target's distribution: the rejection rule on synthetic
// distributions and on a tiny random model's (early exit vs full), and end to end through
// generate_speculative, checked by chi-square with fixed seeds; deliberately broken rules
// must fail the same test. Also: seeded runs are reproducible, bad settings are clear
// errors, and the benchmark core reports sane numbers.
#include <gtest/gtest.h>

#include <cstdlib>

#include <map>

#include "base/error.h"
#include "decode/early_exit_drafter.h"
#include "decode/model_drafter.h"
#include "decode/ngram_drafter.h"
#include "decode/spec_bench.h"
#include "speculative_test_util.h"

namespace skiff {
namespace {

using namespace testing_spec;

TokenDistribution make_dist(std::vector<int32_t> ids, std::vector<float> weights) {
  double total = 0;
  for (float w : weights) total += w;
  TokenDistribution d;
  d.ids = std::move(ids);
  for (float w : weights) d.probs.push_back(static_cast<float>(w / total));
  return d;
}

using Rule = std::function<int32_t(const TokenDistribution& p, const TokenDistribution& q, int32_t x, Sampler& s)>;

const Rule kCorrect = [](const TokenDistribution& p, const TokenDistribution& q, int32_t x, Sampler& s) {
  return judge_draft(p, q, x, s).token;
};
// Broken on purpose: at a rejection, draw from p instead of the residual max(0, p - q).
const Rule kResampleFromP = [](const TokenDistribution& p, const TokenDistribution& q, int32_t x, Sampler& s) {
  const float px = p.prob_of(x), qx = q.prob_of(x);
  if (px >= qx || s.uniform() * qx < px) return x;
  return s.draw(p);
};
// Broken on purpose: the acceptance ratio upside down.
const Rule kInvertedRatio = [](const TokenDistribution& p, const TokenDistribution& q, int32_t x, Sampler& s) {
  const float px = p.prob_of(x), qx = q.prob_of(x);
  if (px > 0 && s.uniform() * px < qx) return x;
  return s.draw(residual(p, q));
};

// Draws x ~ q, applies the rule, and tests the outcome against p by chi-square.
bool rule_matches(const TokenDistribution& p, const TokenDistribution& q, const Rule& rule, int vocab, int samples,
                  uint64_t seed, double* stat_out = nullptr) {
  SamplerParams sp;
  sp.seed = seed;
  Sampler sampler(sp);
  std::vector<int64_t> counts(static_cast<size_t>(vocab), 0);
  for (int i = 0; i < samples; ++i) ++counts[static_cast<size_t>(rule(p, q, sampler.draw(q), sampler))];
  std::vector<double> expected(static_cast<size_t>(vocab), 0.0);
  for (size_t i = 0; i < p.size(); ++i) expected[static_cast<size_t>(p.ids[i])] = p.probs[i];
  auto [stat, df] = chi_square(expected, counts);
  if (stat_out) *stat_out = stat;
  return stat < chi_square_critical(df);
}

TEST(RejectionRule, PreservesTheTargetOnSyntheticDistributions) {
  // Overlapping supports: q proposes tokens p never makes (10..13), p has tokens q never
  // proposes (0..2), and they disagree on the rest.
  const TokenDistribution p = make_dist({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {5, 1, 3, 8, 2, 2, 6, 1, 4, 3});
  const TokenDistribution q = make_dist({3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, {1, 9, 2, 2, 7, 1, 3, 4, 2, 2, 6});
  double stat = 0;
  EXPECT_TRUE(rule_matches(p, q, kCorrect, 14, 100000, 7, &stat)) << stat;
  EXPECT_FALSE(rule_matches(p, q, kResampleFromP, 14, 100000, 7, &stat)) << stat;
  EXPECT_FALSE(rule_matches(p, q, kInvertedRatio, 14, 100000, 7, &stat)) << stat;
  // Identical distributions: every draft is accepted, no random number spent on it.
  EXPECT_TRUE(rule_matches(p, p, kCorrect, 14, 20000, 8));
  // A point-mass proposal (prompt lookup): accepted with p(x), else p without x.
  const TokenDistribution point = make_dist({4}, {1});
  EXPECT_TRUE(rule_matches(p, point, kCorrect, 14, 50000, 9));
  EXPECT_FALSE(rule_matches(p, point, kResampleFromP, 14, 50000, 9));
}

TEST(RejectionRule, GreedyAcceptsExactlyTheArgmax) {
  Sampler sampler(SamplerParams{0.0f});
  const TokenDistribution p = make_dist({5}, {1}), q5 = make_dist({5}, {1}), q7 = make_dist({7}, {1});
  EXPECT_TRUE(judge_draft(p, q5, 5, sampler).accepted);
  Verdict v = judge_draft(p, q7, 7, sampler);
  EXPECT_FALSE(v.accepted);
  EXPECT_EQ(v.token, 5);
}

// A tiny random model with its own 24-token vocabulary: broad, distinct distributions.
OwnedModel tiny_model() {
  RandomShape s;
  s.dim = 32;
  s.n_layers = 3;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.ffn_dim = 48;
  s.context = 32;
  s.vocab = 24;
  s.layer_scale = 1.2f;
  s.head_scale = 1.5f;
  s.seed = 5;
  return make_random_model(s);
}

TokenDistribution target_dist(const Model& m, const Sampler& sampler, std::span<const int32_t> tokens, int last_layer) {
  Context ctx(m, 0, 1);
  const int dim = m.config.dim;
  std::vector<float> h(tokens.size() * dim), logits(static_cast<size_t>(m.config.vocab_size));
  embed(m, tokens, h.data());
  forward(ctx, h.data(), static_cast<int64_t>(tokens.size()), 0, last_layer);
  compute_logits(ctx, h.data() + (tokens.size() - 1) * dim, 1, logits.data());
  return sampler.distribution(logits, tokens);
}

std::vector<SamplerParams> sampling_configs() {
  SamplerParams plain{1.0f};
  plain.top_k = 0;
  plain.top_p = 1.0f;
  plain.min_p = 0.0f;
  SamplerParams filtered{0.7f};
  filtered.top_k = 8;
  filtered.top_p = 0.9f;
  filtered.min_p = 0.05f;
  return {plain, filtered};
}

TEST(RejectionRule, PreservesTheTargetOnAModelsEarlyExit) {
  OwnedModel m = tiny_model();
  const std::vector<int32_t> prompt = {1, 7, 12, 7};
  for (const SamplerParams& sp : sampling_configs()) {
    Sampler sampler(sp);
    const TokenDistribution p = target_dist(*m, sampler, prompt, m->config.n_layers);
    const TokenDistribution q = target_dist(*m, sampler, prompt, 1);
    ASSERT_GT(p.size(), 1u);
    double stat = 0;
    EXPECT_TRUE(rule_matches(p, q, kCorrect, 24, 50000, 3, &stat)) << stat;
    EXPECT_FALSE(rule_matches(p, q, kResampleFromP, 24, 50000, 3, &stat)) << stat;
    EXPECT_FALSE(rule_matches(p, q, kInvertedRatio, 24, 50000, 3, &stat)) << stat;
  }
}

// End to end: the first two generated tokens of many seeded runs against their exact
// target distributions (x1 ~ p(. | prompt), x2 ~ sum over x1 of p(x1) p(. | prompt, x1)).
TEST(SpeculativeSampling, GeneratedTokensFollowTheTargetDistribution) {
  OwnedModel m = tiny_model();
  OwnedModel other = [] {
    RandomShape s;
    s.dim = 32;
    s.n_layers = 1;
    s.n_heads = 4;
    s.n_kv_heads = 1;
    s.ffn_dim = 40;
    s.context = 32;
    s.vocab = 24;
    s.layer_scale = 1.0f;
    s.head_scale = 1.5f;
    s.seed = 77;
    return make_random_model(s);
  }();
  const std::vector<int32_t> prompt = {1, 7, 12, 7, 12};
  // The sanitizer build (SKIFF_SANITIZED) checks the memory of the same code with a third of
  // the runs: the same test, with less power against a small bias (the release build's job).
  const int V = m->config.vocab_size, runs = std::getenv("SKIFF_SANITIZED") ? 4000 : 12000;
  for (const SamplerParams& sp : sampling_configs()) {
    Sampler exact(sp);
    const TokenDistribution p1 = target_dist(*m, exact, prompt, m->config.n_layers);
    // EOS is an outcome too: it ends the run (x1 = EOS leaves no x2), so x2 is counted over
    // the runs whose x1 was not EOS.
    const int32_t eos = m->tokenizer->eos();
    std::vector<double> want1(static_cast<size_t>(V), 0.0), want2(static_cast<size_t>(V), 0.0);
    double not_eos = 0;
    for (size_t i = 0; i < p1.size(); ++i) {
      want1[static_cast<size_t>(p1.ids[i])] = p1.probs[i];
      if (p1.ids[i] == eos) continue;
      not_eos += p1.probs[i];
      std::vector<int32_t> longer = prompt;
      longer.push_back(p1.ids[i]);
      const TokenDistribution p2 = target_dist(*m, exact, longer, m->config.n_layers);
      for (size_t j = 0; j < p2.size(); ++j) want2[static_cast<size_t>(p2.ids[j])] += double(p1.probs[i]) * p2.probs[j];
    }
    for (double& w : want2) w /= not_eos;
    Context ctx(*m, 0, 1);
    EarlyExitDrafter self(ctx, 1, 0.0f);
    ModelDrafter model_drafter(*m, *other, 0, 1, 0.0f);
    NgramDrafter lookup(*m, 2);
    EarlyExitDrafter adaptive(ctx, 1, 0.0f, SelfSpecOptions{true, 0, nullptr, false});
    EarlyExitDrafter lookup_then_exit(ctx, 1, 0.0f, SelfSpecOptions{false, 2, nullptr, false});
    // A Q4_0 copy of the head proposes from a different distribution q: the rule must still
    // give the target's.
    EarlyExitDrafter q4_head(ctx, 1, 0.0f, SelfSpecOptions{false, 0, make_draft_head(*m, DType::Q4_0), false});
    EarlyExitDrafter dynamic(ctx, 1, 0.0f, SelfSpecOptions{false, 0, nullptr, true});  // the exit moves
    for (Drafter* drafter :
         std::vector<Drafter*>{&self, &model_drafter, &lookup, &adaptive, &lookup_then_exit, &q4_head, &dynamic}) {
      SCOPED_TRACE(::testing::Message() << drafter->name() << ", temperature " << sp.temperature);
      std::vector<int64_t> count1(static_cast<size_t>(V), 0), count2(static_cast<size_t>(V), 0);
      SpecStats total;
      for (int run = 0; run < runs; ++run) {
        SamplerParams seeded = sp;
        seeded.seed = 1000 + static_cast<uint64_t>(run);
        Sampler sampler(seeded);
        ctx.cache().clear();
        std::vector<int32_t> out;
        SpecStats st = generate_speculative(ctx, sampler, *drafter, prompt, 2, SpecParams{3}, [&](int32_t t) {
          out.push_back(t);
          return true;
        });
        ASSERT_EQ(out.size() < 2, st.generation.hit_eos);
        ++count1[static_cast<size_t>(out.empty() ? eos : out[0])];
        if (!out.empty()) ++count2[static_cast<size_t>(out.size() == 1 ? eos : out[1])];
        total.drafted += st.drafted;
        total.accepted += st.accepted;
      }
      // Drafts were made and some (not all) were rejected: the rule was really exercised.
      // (Lookup's copied tokens fall outside the filtered config's few survivors; with at
      // most 2 tokens lookup_then_exit's drafts are all lookup's on this prompt.)
      // (The cost model may find drafting on this tiny model rarely pays.)
      EXPECT_GT(total.drafted, drafter == &adaptive ? runs / 20 : runs / 2);
      if ((drafter != &lookup && drafter != &lookup_then_exit) || sp.top_k == 0) {
        EXPECT_GT(total.accepted, 0);
      }
      EXPECT_LT(total.accepted, total.drafted);
      auto [s1, df1] = chi_square(want1, count1);
      auto [s2, df2] = chi_square(want2, count2);
      EXPECT_LT(s1, chi_square_critical(df1)) << "first token, df " << df1;
      EXPECT_LT(s2, chi_square_critical(df2)) << "second token, df " << df2;
    }
  }
}

TEST(SpeculativeSampling, SeededRunsAreReproducible) {
  std::unique_ptr<Model> m = load_model(kStories);
  const std::vector<int32_t> prompt = m->tokenizer->encode("Once upon a time", true);
  auto run = [&](int kind, uint64_t seed) {
    SamplerParams sp;  // temperature 0.8, top-k 40, top-p 0.95, min-p 0.05
    sp.seed = seed;
    Sampler sampler(sp);
    Context ctx(*m, 0, 1);
    std::unique_ptr<Drafter> d;
    if (kind == 0) d = std::make_unique<EarlyExitDrafter>(ctx, 3, 0.0f);
    if (kind == 1) d = std::make_unique<ModelDrafter>(*m, *m, 0, 1, 0.0f);
    if (kind == 2) d = std::make_unique<NgramDrafter>(*m, 3);
    std::vector<int32_t> out;
    generate_speculative(ctx, sampler, *d, prompt, 80, SpecParams{5}, [&](int32_t t) {
      out.push_back(t);
      return true;
    });
    return out;
  };
  for (int kind = 0; kind < 3; ++kind) {
    EXPECT_EQ(run(kind, 42), run(kind, 42)) << kind;
    EXPECT_NE(run(kind, 42), run(kind, 43)) << kind;
  }
}

TEST(SpeculativeErrors, BadSettingsAreClearErrors) {
  std::unique_ptr<Model> m = load_model(kStories);
  const int L = m->config.n_layers;
  Context ctx(*m, 0, 1);
  auto message_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto one_line = [](const std::string& s) { return !s.empty() && s.find('\n') == std::string::npos; };
  std::string e_too_big = message_of([&] { EarlyExitDrafter d(ctx, L, 0.0f); });
  EXPECT_TRUE(one_line(e_too_big));
  EXPECT_NE(e_too_big.find("1..4"), std::string::npos) << e_too_big;
  EXPECT_TRUE(one_line(message_of([&] { EarlyExitDrafter d(ctx, L + 3, 0.0f); })));
  EXPECT_TRUE(one_line(message_of([&] { EarlyExitDrafter d(ctx, 0, 0.0f); })));
  EXPECT_TRUE(one_line(message_of([&] { EarlyExitDrafter d(ctx, 2, 1.5f); })));
  std::string d_zero = message_of([] { SpecParams{0}.validate(); });
  EXPECT_NE(d_zero.find("--draft-max"), std::string::npos) << d_zero;
  EarlyExitDrafter ok(ctx, 2, 0.0f);
  Sampler sampler(SamplerParams{0.0f});
  const std::vector<int32_t> prompt = {1, 20, 30};
  EXPECT_THROW(generate_speculative(ctx, sampler, ok, prompt, 10, SpecParams{0}, [](int32_t) { return true; }), Error);
  EXPECT_TRUE(one_line(message_of([&] { NgramDrafter d(*m, 0); })));

  // Draft models with another vocabulary: another size, or the same size with other pieces.
  OwnedModel small_vocab = tiny_model();
  std::string other = message_of([&] { ModelDrafter d(*m, *small_vocab, 0, 1, 0.0f); });
  EXPECT_TRUE(one_line(other));
  EXPECT_NE(other.find("vocabulary"), std::string::npos) << other;
  RandomShape same_size;
  same_size.vocab = 512;
  OwnedModel renamed = make_random_model(same_size);
  std::string pieces = message_of([&] { ModelDrafter d(*m, *renamed, 0, 1, 0.0f); });
  EXPECT_NE(pieces.find("token 3"), std::string::npos) << pieces;
  EXPECT_EQ(message_of([&] { ModelDrafter d(*m, *m, 0, 1, 0.0f); }), "");
}

TEST(SpecBench, ReportsSaneNumbersAndIdenticalGreedyText) {
  std::unique_ptr<Model> m = load_model(kStories);
  Context ctx(*m, 0, 1);
  SpecBenchConfig config;
  for (const char* task : {"story", "code", "story"})
    config.prompts.push_back({task, m->tokenizer->encode(task == std::string("story") ? "Once upon a time" : "for (int i = 0;", true)});
  config.n_predict = 24;
  config.sampling.temperature = 0.0f;
  DrafterFactory make = [](Context& c) { return std::make_unique<EarlyExitDrafter>(c, 3, 0.0f); };
  std::vector<SpecBenchResult> results = measure_speculative(ctx, make, SpecParams{4}, config);
  ASSERT_EQ(results.size(), 3u);  // story, code, all
  EXPECT_EQ(results[0].task, "story");
  EXPECT_EQ(results[1].task, "code");
  EXPECT_EQ(results[2].task, "all");
  const SpecBenchResult& all = results[2];
  EXPECT_EQ(all.prompts, 3);
  EXPECT_TRUE(all.identical);
  EXPECT_EQ(all.ar_tokens, all.spec_tokens);
  EXPECT_GT(all.ar_tps, 0);
  EXPECT_GT(all.spec_tps, 0);
  EXPECT_NEAR(all.speedup, all.spec_tps / all.ar_tps, 1e-9);
  EXPECT_GE(all.acceptance_rate, 0.0);
  EXPECT_LE(all.acceptance_rate, 1.0);
  EXPECT_GT(all.draft_step_cost, 0.0);
  EXPECT_GT(all.verify_cost, 0.0);
  EXPECT_GT(all.decode_step_seconds, 0.0);
  EXPECT_EQ(all.rounds, results[0].rounds + results[1].rounds);
}

}  // namespace
}  // namespace skiff

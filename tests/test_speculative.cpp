// Greedy speculative decoding must be plain decoding, token for token, whoever drafts:
// self-speculation (every exit layer E in 1..L-1, draft length D in 1..8), a draft model and
// prompt lookup; on stories260K and on random GQA models; with the context filling up and
// with EOS inside drafts. After every round the target's KV cache must equal the one plain
// decoding has at that point, bit for bit, and self-speculation must run the early layers
// exactly once per position per round (nothing recomputed).
#include <gtest/gtest.h>

#include <set>

#include <algorithm>

#include "base/error.h"
#include "decode/early_exit_copy.h"
#include "decode/early_exit_drafter.h"
#include "decode/model_drafter.h"
#include "decode/ngram_drafter.h"
#include "speculative_test_util.h"
#include "test_util.h"

namespace skiff {
namespace {

using namespace testing_spec;

enum class Kind { SelfSpec, DraftModel, Lookup };

struct SpecSetup {
  Kind kind = Kind::SelfSpec;
  int param = 1;  // E for self-speculation, N for lookup
  int draft_max = 4;
  float p_min = 0.0f;
  const Model* draft = nullptr;
  SelfSpecOptions options = {};  // self-speculation: adaptive length, lookup first
};

// What the runs saw, to show the interesting cases were really exercised.
struct Coverage {
  int runs = 0, eos_in_draft = 0, context_limit = 0, full_accept = 0, rejections = 0, eos_stops = 0;
  int batched_early = 0;  // self-spec runs where lookup drafts shared an early pass
  std::set<int> draft_lengths;
  std::set<int> exits;  // exit layers the rounds verified from (dynamic exit)
};

std::unique_ptr<Drafter> make_drafter(Context& ctx, const SpecSetup& s) {
  switch (s.kind) {
    case Kind::SelfSpec: return std::make_unique<EarlyExitDrafter>(ctx, s.param, s.p_min, s.options);
    case Kind::DraftModel: return std::make_unique<ModelDrafter>(ctx.model(), *s.draft, 0, 1, s.p_min);
    case Kind::Lookup: return std::make_unique<NgramDrafter>(ctx.model(), s.param);
  }
  return nullptr;
}

// Speculative decoding of `prompt` equals `ar` (plain decoding of the same prompt).
void expect_same_as_autoregressive(const Model& model, std::span<const int32_t> prompt, int n, int context,
                                   const SpecSetup& s, const ArRun& ar, Coverage& cov) {
  Context ctx(model, context, 1);
  Sampler sampler(SamplerParams{0.0f});
  std::unique_ptr<Drafter> drafter = make_drafter(ctx, s);
  CacheChecker checker(model, context);
  std::vector<int32_t> out;
  const int32_t eos = model.tokenizer->eos();
  int64_t early_positions = 0;  // what self-speculation must have run through layers 0..E-1
  bool first = true;
  SpecStats st = generate_speculative(
      ctx, sampler, *drafter, prompt, n, SpecParams{s.draft_max},
      [&](int32_t t) {
        out.push_back(t);
        return true;
      },
      [&](const SpecRound& r) {
        checker.after_round(ctx, r.tokens, r.eos);
        const int k = static_cast<int>(r.drafts.size());
        EXPECT_LE(k, s.draft_max);
        cov.draft_lengths.insert(k);
        if (std::find(r.drafts.begin(), r.drafts.end(), eos) != r.drafts.end()) ++cov.eos_in_draft;
        if (k > 0 && r.accepted == k) ++cov.full_accept;
        if (r.accepted < k) ++cov.rejections;
        const int expected_batch = k + 1 + (first && s.kind == Kind::SelfSpec ? static_cast<int>(prompt.size()) - 1 : 0);
        EXPECT_EQ(r.verified, expected_batch) << "the verification batch holds exactly the unseen positions";
        if (s.kind == Kind::SelfSpec && s.options.dynamic_exit) {
          // The round's own exit; the first round verifies the prompt's states, made at E.
          EXPECT_EQ(r.first_layer, static_cast<EarlyExitDrafter&>(*drafter).exit_layer());
          if (first && prompt.size() >= 2) {
            EXPECT_EQ(r.first_layer, s.param);
          }
          EXPECT_GE(r.first_layer, 1);
          EXPECT_LT(r.first_layer, model.config.n_layers);
          cov.exits.insert(r.first_layer);
        } else {
          EXPECT_EQ(r.first_layer, s.kind == Kind::SelfSpec ? s.param : 0);
        }
        if (s.kind == Kind::SelfSpec) {
          EXPECT_EQ(static_cast<EarlyExitDrafter&>(*drafter).exit_count(), 0);
          early_positions += k + 1;
        }
        first = false;
      });
  ASSERT_EQ(out, ar.tokens);
  EXPECT_EQ(st.generation.generated_tokens, ar.stats.generated_tokens);
  EXPECT_EQ(st.generation.hit_context_limit, ar.stats.hit_context_limit);
  EXPECT_EQ(st.generation.hit_eos, ar.stats.hit_eos);
  checker.final_check(ctx);
  if (s.kind == Kind::SelfSpec && s.options.lookup_ngram == 0) {
    EXPECT_EQ(st.draft_steps, early_positions) << "one early pass per position per round";
  } else if (s.kind == Kind::SelfSpec) {
    EXPECT_LE(st.draft_steps, early_positions) << "at most one early pass per position per round";
    cov.batched_early += st.draft_steps < early_positions;
  }
  EXPECT_LE(st.accepted, st.drafted);
  ++cov.runs;
  cov.context_limit += st.generation.hit_context_limit;
  cov.eos_stops += st.generation.hit_eos;
}

struct PromptCase {
  std::vector<int32_t> tokens;
  int context;  // 0: the model's
};

// Every case against plain decoding, for every setup.
void sweep(const Model& model, const std::vector<PromptCase>& prompts, int n, const std::vector<SpecSetup>& setups,
           Coverage& cov) {
  for (const PromptCase& p : prompts) {
    const ArRun ar = run_autoregressive(model, p.tokens, n, p.context);
    for (const SpecSetup& s : setups) {
      SCOPED_TRACE(::testing::Message() << "prompt of " << p.tokens.size() << " tokens, context " << p.context
                                        << ", kind " << static_cast<int>(s.kind) << ", param " << s.param
                                        << ", D " << s.draft_max << ", p_min " << s.p_min);
      expect_same_as_autoregressive(model, p.tokens, n, p.context, s, ar, cov);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

std::vector<SpecSetup> self_spec_setups(int n_layers, float p_min = 0.0f) {
  std::vector<SpecSetup> v;
  for (int e = 1; e < n_layers; ++e)
    for (int d = 1; d <= 8; ++d) v.push_back({Kind::SelfSpec, e, d, p_min});
  return v;
}

class Stories : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = load_model(kStories).release(); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static std::vector<PromptCase> prompts(int short_context) {
    const Tokenizer& tok = *model_->tokenizer;
    std::vector<PromptCase> v;
    for (const char* text : {"", "Once upon a time", "Tom and his dog Max went to the beach. The sun was hot and",
                             "Lily had a red ball. She liked the red ball. One day the red ball rolled away. Lily"}) {
      v.push_back({tok.encode(text, true), 0});
    }
    // The same prompts where the context fills up mid-generation.
    for (size_t i = 1; i < 4; ++i) v.push_back({v[i].tokens, short_context});
    return v;
  }
  static Model* model_;
};
Model* Stories::model_ = nullptr;

TEST_F(Stories, SelfSpeculationIsAutoregressiveForEveryExitAndDraftLength) {
  Coverage cov;
  sweep(*model_, prompts(40), 60, self_spec_setups(model_->config.n_layers), cov);
  EXPECT_EQ(cov.runs, 7 * 4 * 8);
  EXPECT_GT(cov.context_limit, 0);
  EXPECT_GT(cov.full_accept, 0);
  EXPECT_GT(cov.rejections, 0);
}

TEST_F(Stories, AdaptiveDraftLengthKeepsTheOutput) {
  Coverage cov;
  for (float p_min : {0.3f, 0.8f}) {
    std::vector<SpecSetup> setups;
    for (int e = 1; e < model_->config.n_layers; ++e)
      for (int d : {2, 5, 8}) setups.push_back({Kind::SelfSpec, e, d, p_min});
    sweep(*model_, prompts(40), 50, setups, cov);
  }
  EXPECT_GT(cov.rejections, 0);
}

TEST_F(Stories, CostModelDraftLengthAndLookupFirstKeepTheOutput) {
  // --draft-adaptive (the length from measured costs and learned acceptance), lookup drafts
  // first with the early exit continuing (their early pass batched), and both.
  Coverage cov;
  std::vector<SpecSetup> setups;
  for (int e = 1; e < model_->config.n_layers; ++e)
    for (int d : {2, 5, 8})
      for (SelfSpecOptions o : {SelfSpecOptions{true, 0, nullptr, false}, SelfSpecOptions{false, 2, nullptr, false},
                                 SelfSpecOptions{true, 3, nullptr, false}})
        setups.push_back({Kind::SelfSpec, e, d, 0.0f, nullptr, o});
  sweep(*model_, prompts(40), 50, setups, cov);
  EXPECT_GT(cov.rejections, 0);
  EXPECT_GT(cov.full_accept, 0);
  EXPECT_GT(cov.batched_early, 0);
  EXPECT_GE(cov.draft_lengths.size(), 4u) << "the adaptive rule varies the draft length";
}

TEST_F(Stories, QuantizedDraftHeadKeepsTheOutput) {
  // --draft-head: the early head reads a Q8_0 / Q4_0 copy of the output matrix; drafts differ,
  // verification does not, so the greedy text is plain decoding's at every exit and length.
  Coverage cov;
  std::vector<SpecSetup> setups;
  for (DType type : {DType::Q8_0, DType::Q4_0}) {
    const auto head = make_draft_head(*model_, type);
    ASSERT_EQ(head->view.type, type);
    ASSERT_EQ(head->view.rows, model_->output.rows);
    for (int e = 1; e < model_->config.n_layers; ++e)
      for (int d : {2, 5})
        for (int lookup : {0, 2}) setups.push_back({Kind::SelfSpec, e, d, 0.0f, nullptr, SelfSpecOptions{false, lookup, head, false}});
  }
  sweep(*model_, prompts(40), 40, setups, cov);
  EXPECT_GT(cov.rejections, 0);
  EXPECT_GT(cov.full_accept, 0);
  EXPECT_THROW(make_draft_head(*model_, DType::F16), Error);
}

TEST_F(Stories, DynamicExitLayerKeepsTheOutput) {
  // --dynamic-exit: a new exit layer between rounds (layers 0..E'-1 draft, E'..L-1 verify, one
  // KV cache); greedy output is plain decoding's whatever the exits chosen.
  Coverage cov;
  std::vector<SpecSetup> setups;
  for (int e = 1; e < model_->config.n_layers; ++e)
    for (int d : {1, 3, 6})
      for (int lookup : {0, 2})
        setups.push_back({Kind::SelfSpec, e, d, 0.0f, nullptr, SelfSpecOptions{false, lookup, nullptr, true}});
  sweep(*model_, prompts(40), 50, setups, cov);
  EXPECT_GT(cov.rejections, 0);
  EXPECT_GT(cov.full_accept, 0);
  EXPECT_GE(cov.exits.size(), 3u) << "the rule tries several exits";
  Context ctx(*model_, 0, 1);
  EXPECT_THROW(EarlyExitDrafter(ctx, 2, 0.0f, SelfSpecOptions{true, 0, nullptr, true}), Error);
}

TEST_F(Stories, EosInsideDrafts) {
  // stories260K never emits its own EOS, so a frequent token plays EOS: generation ends
  // there, often in the middle of a draft.
  std::unique_ptr<Model> m = load_model(kStories);
  const PromptCase p{m->tokenizer->encode("Once upon a time", true), 0};
  const ArRun free_run = run_autoregressive(*m, p.tokens, 60, 0);
  Coverage cov;
  ASSERT_EQ(free_run.tokens.size(), 60u);
  for (size_t at : {3u, 9u, 20u, 41u}) {
    set_eos(*m, free_run.tokens[at]);
    std::vector<SpecSetup> setups;
    for (int e = 1; e < m->config.n_layers; ++e)
      for (int d : {1, 3, 8}) setups.push_back({Kind::SelfSpec, e, d});
    for (int e = 1; e < m->config.n_layers; e += 2)
      setups.push_back({Kind::SelfSpec, e, 6, 0.0f, nullptr, SelfSpecOptions{true, 2, nullptr, false}});
    for (int n = 1; n <= 4; ++n)
      for (int d : {2, 5, 8}) setups.push_back({Kind::Lookup, n, d});
    setups.push_back({Kind::DraftModel, 0, 6, 0.0f, m.get()});
    sweep(*m, {p, {m->tokenizer->encode("Tom and his dog", true), 0}}, 60, setups, cov);
  }
  EXPECT_GT(cov.eos_in_draft, 0);
  EXPECT_GT(cov.eos_stops, 0);
}

TEST_F(Stories, DraftModelIsAutoregressive) {
  // Drafting with itself (everything accepted: the bonus-token path), and with random
  // models of the same vocabulary (mostly rejected), one of them with a short context.
  std::unique_ptr<Model> same = load_model(kStories);
  RandomShape shape;
  shape.vocab = 0;
  shape.n_layers = 2;
  shape.dim = 32;
  shape.n_heads = 4;
  shape.n_kv_heads = 2;
  shape.ffn_dim = 40;
  shape.context = 30;
  OwnedModel random_draft = make_random_model(shape);
  std::vector<SpecSetup> setups;
  for (int d = 1; d <= 8; ++d) {
    setups.push_back({Kind::DraftModel, 0, d, 0.0f, same.get()});
    setups.push_back({Kind::DraftModel, 0, d, 0.0f, random_draft.model.get()});
  }
  setups.push_back({Kind::DraftModel, 0, 5, 0.5f, same.get()});
  Coverage cov;
  sweep(*model_, prompts(40), 60, setups, cov);
  EXPECT_GT(cov.full_accept, 0);
  EXPECT_GT(cov.rejections, 0);
}

TEST_F(Stories, PromptLookupIsAutoregressive) {
  std::vector<SpecSetup> setups;
  for (int n = 1; n <= 4; ++n)
    for (int d = 1; d <= 8; ++d) setups.push_back({Kind::Lookup, n, d});
  Coverage cov;
  sweep(*model_, prompts(40), 60, setups, cov);
  EXPECT_GT(cov.full_accept, 0);
  EXPECT_GT(cov.rejections, 0);
}

TEST_F(Stories, RepetitionPenaltiesSeeTheDraftsAsHistory) {
  // Penalties depend on the history, which inside a round includes the drafts before a
  // position: the verifier must judge draft i with the history plain decoding would have.
  SamplerParams sp{0.0f};
  sp.repeat_penalty = 1.3f;
  sp.frequency_penalty = 0.2f;
  const std::vector<int32_t> prompt = model_->tokenizer->encode("Once upon a time", true);
  const ArRun ar = run_autoregressive(*model_, prompt, 80, 0, sp);
  for (int e = 1; e < model_->config.n_layers; ++e) {
    Context ctx(*model_, 0, 1);
    Sampler sampler(sp);
    EarlyExitDrafter drafter(ctx, e, 0.0f);
    std::vector<int32_t> out;
    generate_speculative(ctx, sampler, drafter, prompt, 80, SpecParams{6}, [&](int32_t t) {
      out.push_back(t);
      return true;
    });
    EXPECT_EQ(out, ar.tokens) << "E=" << e;
  }
}

TEST_F(Stories, StopsWhenTheCallbackSaysSo) {
  const std::vector<int32_t> prompt = model_->tokenizer->encode("Once upon a time", true);
  for (int stop_after : {1, 2, 7}) {
    Context ctx(*model_, 0, 1);
    Sampler sampler(SamplerParams{0.0f});
    EarlyExitDrafter drafter(ctx, 4, 0.0f);
    int seen = 0;
    SpecStats st = generate_speculative(ctx, sampler, drafter, prompt, 100, SpecParams{8},
                                        [&](int32_t) { return ++seen < stop_after; });
    EXPECT_EQ(seen, stop_after);
    EXPECT_EQ(st.generation.generated_tokens, stop_after);
  }
  // max_tokens = 0 generates nothing.
  Context ctx(*model_, 0, 1);
  Sampler sampler(SamplerParams{0.0f});
  EarlyExitDrafter drafter(ctx, 2, 0.0f);
  SpecStats st = generate_speculative(ctx, sampler, drafter, prompt, 0, SpecParams{4}, [](int32_t) { return true; });
  EXPECT_EQ(st.generation.generated_tokens, 0);
  EXPECT_EQ(st.rounds, 0);
}

// Random GQA models: several shapes, our own small vocabulary and stories260K's.
TEST(RandomModels, EveryStrategyIsAutoregressive) {
  std::vector<RandomShape> shapes(3);
  shapes[0] = {48, 4, 6, 2, 72, 64, 24, 0.6f, 3.0f, 11};
  shapes[1] = {40, 6, 5, 1, 56, 48, 0, 0.4f, 4.0f, 12};
  shapes[2] = {36, 3, 6, 3, 50, 40, 40, 1.0f, 2.0f, 13};
  Coverage cov;
  for (const RandomShape& shape : shapes) {
    SCOPED_TRACE(::testing::Message() << "shape seed " << shape.seed);
    OwnedModel m = make_random_model(shape);
    RandomShape small = shape;
    small.n_layers = 1;
    small.seed += 100;
    small.context = 16;  // shorter than the longest prompt: the draft model falls silent
    OwnedModel draft = make_random_model(small);
    std::mt19937 rng(shape.seed);
    const int vocab = m->config.vocab_size;
    std::vector<PromptCase> prompts;
    for (int len : {1, 4, 17}) {
      std::vector<int32_t> t(static_cast<size_t>(len));
      for (int32_t& x : t) x = static_cast<int32_t>(3 + rng() % static_cast<uint32_t>(vocab - 3));
      t[0] = 1;
      prompts.push_back({t, 0});
    }
    prompts.push_back({prompts[2].tokens, 28});  // fills the context
    prompts.push_back({prompts[2].tokens, 17});  // the prompt alone fills it
    std::vector<SpecSetup> setups = self_spec_setups(shape.n_layers);
    for (int d = 1; d <= 8; ++d) {
      setups.push_back({Kind::DraftModel, 0, d, 0.0f, draft.model.get()});
      setups.push_back({Kind::DraftModel, 0, d, 0.0f, m.model.get()});
      setups.push_back({Kind::Lookup, 1 + d % 3, d});
      setups.push_back({Kind::SelfSpec, 1 + d % (shape.n_layers - 1), d, 0.0f, nullptr, SelfSpecOptions{d % 2 == 0, d % 3, nullptr, false}});
      setups.push_back({Kind::SelfSpec, 1 + d % (shape.n_layers - 1), d, 0.0f, nullptr, SelfSpecOptions{false, d % 3, nullptr, true}});
    }
    sweep(*m, prompts, 40, setups, cov);
    if (::testing::Test::HasFatalFailure()) return;
    // And with a frequent token as EOS, so that drafts run into it.
    // (A token some free run produces at its 7th step, from the longest run.)
    ArRun free_run;
    for (const PromptCase& p : prompts) {
      ArRun r = run_autoregressive(*m, p.tokens, 40, 0);
      if (r.tokens.size() > free_run.tokens.size()) free_run = r;
    }
    ASSERT_GT(free_run.tokens.size(), 6u);
    set_eos(*m, free_run.tokens[6]);
    set_eos(*draft, free_run.tokens[6]);  // a draft model must share the special ids too
    sweep(*m, prompts, 40, setups, cov);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(cov.eos_in_draft, 0);
  EXPECT_GT(cov.context_limit, 0);
  EXPECT_GT(cov.full_accept, 0);
  EXPECT_GT(cov.rejections, 0);
}

TEST(RandomModels, QuantizedEarlyExitCopyDraftsAndKeepsTheOutput) {
  // --draft-copy: layers 0..E-1 and the head as a Q8_0 / Q4_0 model of their own drafting in
  // its own KV cache (ModelDrafter); verification runs every layer of the target, so greedy
  // output is plain decoding's at every exit and draft length.
  const RandomShape shape{64, 4, 4, 2, 96, 64, 24, 0.5f, 3.0f, 21};  // rows whole blocks of 32
  OwnedModel m = make_random_model(shape);
  std::vector<std::unique_ptr<Model>> copies;
  for (DType type : {DType::Q8_0, DType::Q4_0})
    for (int e = 1; e < shape.n_layers; ++e) {
      copies.push_back(make_early_exit_copy(*m, e, type));
      const Model& c = *copies.back();
      ASSERT_EQ(c.config.n_layers, e);
      ASSERT_EQ(c.layers.size(), static_cast<size_t>(e));
      for (const LayerWeights& w : c.layers)
        for (const TensorView* t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.ffn_gate, &w.ffn_up, &w.ffn_down}) {
          EXPECT_EQ(t->type, type) << t->name;
        }
      EXPECT_EQ(c.output.type, type);
      // Norms and embeddings are the target's own (views, not copies).
      EXPECT_EQ(c.layers[0].attn_norm.data, m->layers[0].attn_norm.data);
      EXPECT_EQ(c.token_embd.data, m->token_embd.data);
      EXPECT_EQ(c.output_norm.data, m->output_norm.data);
    }
  // The copy's logits are the target's early exit at E, up to the quantization: layers
  // 0..E-1, the final norm and the head of a 7-token prompt, last position.
  {
    const std::vector<int32_t> tokens = {1, 5, 9, 4, 17, 3, 12};
    const int E = 2, dim = shape.dim, n = static_cast<int>(tokens.size());
    std::vector<float> early(static_cast<size_t>(shape.vocab)), copied(early.size());
    Context target(*m, 0, 1);
    std::vector<float> h(static_cast<size_t>(n * dim));
    embed(*m, tokens, h.data());
    forward(target, h.data(), n, 0, E);
    compute_logits(target, h.data() + (n - 1) * dim, 1, early.data());
    const Model& q8 = *copies[E - 1];
    Context draft(q8, 0, 1);
    embed(q8, tokens, h.data());
    forward(draft, h.data(), n, 0, E);
    compute_logits(draft, h.data() + (n - 1) * dim, 1, copied.data());
    float worst = 0, scale = 0;
    for (size_t i = 0; i < early.size(); ++i) {
      worst = std::max(worst, std::fabs(early[i] - copied[i]));
      scale = std::max(scale, std::fabs(early[i]));
    }
    EXPECT_LT(worst, 0.02f * scale) << "Q8_0 copy of the early exit";
    EXPECT_GT(worst, 0.0f) << "the copy is quantized, not the same weights";
  }
  std::mt19937 rng(shape.seed);
  std::vector<PromptCase> prompts;
  for (int len : {1, 5, 19}) {
    std::vector<int32_t> t(static_cast<size_t>(len));
    for (int32_t& x : t) x = static_cast<int32_t>(3 + rng() % 21u);
    t[0] = 1;
    prompts.push_back({t, 0});
  }
  prompts.push_back({prompts[2].tokens, 30});  // the context fills up mid-generation
  std::vector<SpecSetup> setups;
  for (const auto& c : copies)
    for (int d : {1, 3, 6}) setups.push_back({Kind::DraftModel, 0, d, 0.0f, c.get()});
  Coverage cov;
  sweep(*m, prompts, 40, setups, cov);
  EXPECT_GT(cov.rejections, 0);
  EXPECT_GT(cov.full_accept, 0);

  // Errors: exits outside 1..L-1, types the copy cannot take.
  auto error = [](auto fn) { return test::error_of(fn); };
  EXPECT_NE(error([&] { make_early_exit_copy(*m, 0, DType::Q8_0); }).find("1..3"), std::string::npos);
  EXPECT_NE(error([&] { make_early_exit_copy(*m, 4, DType::Q8_0); }).find("1..3"), std::string::npos);
  EXPECT_NE(error([&] { make_early_exit_copy(*m, 2, DType::F16); }).find("q8_0 or q4_0"), std::string::npos);
  // Rows that are not whole blocks of 32 stay the model's own (ffn_down of 72 columns here).
  OwnedModel odd = make_random_model(RandomShape{64, 3, 4, 2, 72, 64, 24, 0.5f, 3.0f, 22});
  const std::unique_ptr<Model> c = make_early_exit_copy(*odd, 1, DType::Q8_0);
  EXPECT_EQ(c->layers[0].ffn_down.data, odd->layers[0].ffn_down.data);
  EXPECT_EQ(c->layers[0].ffn_up.type, DType::Q8_0);
}

TEST(EarlyExit, RunsOnlyTheFirstLayers) {
  std::unique_ptr<Model> m = load_model(kStories);
  const int L = m->config.n_layers, V = m->config.vocab_size, dim = m->config.dim;
  const std::vector<int32_t> prompt = m->tokenizer->encode("Once upon a time", true);
  const ArRun full = run_autoregressive(*m, prompt, 30, 0);
  for (int e = 1; e <= L; ++e) {
    Context ctx(*m, 0, 1);
    Sampler sampler(SamplerParams{0.0f});
    std::vector<int32_t> out;
    generate_early_exit(ctx, sampler, prompt, e, 30, [&](int32_t t) {
      out.push_back(t);
      return true;
    });
    if (e == L) {
      EXPECT_EQ(out, full.tokens);
    }
    for (int l = e; l < L; ++l) EXPECT_EQ(ctx.cache().length(l), 0);
    // The same by hand: layers [0, e), then the final norm and head.
    Context manual(*m, 0, 1);
    std::vector<int32_t> seq = prompt, expect;
    std::vector<float> logits(static_cast<size_t>(V));
    size_t done = 0;
    while (expect.size() < out.size()) {
      std::vector<float> h((seq.size() - done) * dim);
      embed(*m, std::span<const int32_t>(seq).subspan(done), h.data());
      forward(manual, h.data(), static_cast<int64_t>(seq.size() - done), 0, e);
      compute_logits(manual, h.data() + (seq.size() - done - 1) * dim, 1, logits.data());
      done = seq.size();
      seq.push_back(argmax(logits));
      expect.push_back(seq.back());
    }
    EXPECT_EQ(out, expect) << "exit layer " << e;
  }
  Context ctx(*m, 0, 1);
  Sampler sampler(SamplerParams{0.0f});
  auto ignore = [](int32_t) { return true; };
  EXPECT_THROW(generate_early_exit(ctx, sampler, prompt, 0, 5, ignore), Error);
  EXPECT_THROW(generate_early_exit(ctx, sampler, prompt, L + 1, 5, ignore), Error);
}

}  // namespace
}  // namespace skiff

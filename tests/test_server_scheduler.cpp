// The server's continuous-batching scheduler against plain generate(): several sequences
// batched together, prefix reuse, n > 1, speculation and constrained JSON must not change
// what each sequence would have produced alone.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "decode/early_exit_drafter.h"
#include "decode/generate.h"
#include "decode/ngram_drafter.h"
#include "server/scheduler.h"
#include "test_util.h"

namespace skiff::server {
namespace {

const std::string kModel = std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf";

struct Result {
  std::vector<std::string> text;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::string> finish;
  Usage usage;
  std::string error;
};

std::shared_ptr<Task> make_task(std::vector<std::vector<int32_t>> prompts, int max_tokens, float temperature,
                                int n = 1, uint64_t seed = 7) {
  GenerationRequest r;
  r.prompts = std::move(prompts);
  r.max_tokens = max_tokens;
  r.n = n;
  r.sampling.temperature = temperature;
  r.sampling.top_k = 0;
  r.sampling.top_p = 1;
  r.sampling.min_p = 0;
  r.sampling.seed = seed;
  return std::make_shared<Task>(Task::Kind::kGenerate, std::move(r),
                                std::chrono::steady_clock::now() + std::chrono::minutes(5));
}

Result collect(Task& task) {
  Result res;
  const size_t n = static_cast<size_t>(task.sequences());
  res.text.resize(n);
  res.tokens.resize(n);
  res.finish.resize(n);
  for (;;) {
    const bool done = task.done();
    for (Event& e : task.take(std::chrono::milliseconds(50))) {
      if (e.kind == Event::Kind::kError) res.error = e.text;
      if (e.kind == Event::Kind::kText) {
        res.text[static_cast<size_t>(e.choice)] += e.text;
        for (const TokenLogprob& t : e.tokens) res.tokens[static_cast<size_t>(e.choice)].push_back(t.id);
      }
      if (e.kind == Event::Kind::kFinish) res.finish[static_cast<size_t>(e.choice)] = e.finish_reason;
    }
    if (done) break;
  }
  res.usage = task.usage();
  return res;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override { model = load_model(kModel); }

  std::vector<int32_t> encode(const std::string& text) { return model->tokenizer->encode(text, true); }

  // Greedy tokens of plain generate() for a prompt.
  std::vector<int32_t> plain(const std::vector<int32_t>& prompt, int max_tokens, KvTypes kv_types = {}) {
    Context ctx(*model, 0, 1, kv_types);
    SamplerParams p;
    p.temperature = 0;
    Sampler sampler(p);
    std::vector<int32_t> out;
    generate(ctx, sampler, prompt, max_tokens, [&](int32_t t) {
      out.push_back(t);
      return true;
    });
    return out;
  }

  std::unique_ptr<Model> model;
};

TEST_F(SchedulerTest, BatchedSequencesEqualPlainGreedyDecoding) {
  SchedulerOptions o;
  o.slots = 4;
  o.threads = 2;
  o.batch_rows = 7;  // small: prompts are prefilled in several chunks, mixed with decoding
  Scheduler scheduler(*model, o);
  const std::vector<std::string> prompts = {"Once upon a time", "The cat sat on the mat and", "Lily", "A big dog"};
  std::vector<std::shared_ptr<Task>> tasks;
  for (const auto& p : prompts) {
    tasks.push_back(make_task({encode(p)}, 40, 0.0f));
    ASSERT_TRUE(scheduler.submit(tasks.back()));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    Result r = collect(*tasks[i]);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.tokens[0], plain(encode(prompts[i]), 40)) << prompts[i];
    StreamDecoder decoder(*model->tokenizer);  // the text continues the prompt: its spaces stay
    decoder.set_after_bos(false);
    std::string text;
    for (int32_t t : r.tokens[0]) text += decoder.push(t);
    EXPECT_EQ(r.text[0], text + decoder.flush()) << prompts[i];
    EXPECT_EQ(r.usage.prompt_tokens, static_cast<int>(encode(prompts[i]).size()));
  }
}

TEST_F(SchedulerTest, PrefixReuseSkipsTheCachedPartAndChangesNothing) {
  SchedulerOptions o;
  o.slots = 1;
  Scheduler scheduler(*model, o);
  std::vector<int32_t> first = encode("Once upon a time there was");
  auto t1 = make_task({first}, 10, 0.0f);
  ASSERT_TRUE(scheduler.submit(t1));
  Result r1 = collect(*t1);
  // The next turn: the first prompt, its reply and more text.
  std::vector<int32_t> second = first;
  second.insert(second.end(), r1.tokens[0].begin(), r1.tokens[0].end());
  const std::vector<int32_t> more = model->tokenizer->encode(" and then", false);
  second.insert(second.end(), more.begin(), more.end());
  auto t2 = make_task({second}, 12, 0.0f);
  ASSERT_TRUE(scheduler.submit(t2));
  Result r2 = collect(*t2);
  // Everything but the reply's last token (sampled, never forwarded) was in the cache.
  EXPECT_EQ(r2.usage.cached_tokens, static_cast<int>(first.size() + r1.tokens[0].size()) - 1);
  EXPECT_EQ(r2.tokens[0], plain(second, 12));
}

TEST_F(SchedulerTest, SeveralChoicesShareThePromptAndFollowTheirSeeds) {
  SchedulerOptions o;
  o.slots = 3;
  Scheduler scheduler(*model, o);
  const std::vector<int32_t> prompt = encode("Once upon a time");
  auto a = make_task({prompt}, 20, 1.0f, 3, 42);
  auto b = make_task({prompt}, 20, 1.0f, 3, 42);
  ASSERT_TRUE(scheduler.submit(a));
  Result ra = collect(*a);
  ASSERT_TRUE(scheduler.submit(b));
  Result rb = collect(*b);
  EXPECT_EQ(ra.tokens, rb.tokens);  // same seed, same text
  EXPECT_NE(ra.tokens[0], ra.tokens[1]);
  EXPECT_EQ(ra.usage.prompt_tokens, static_cast<int>(prompt.size()));
  // Choice 0 is what a single request with the same seed gives.
  auto single = make_task({prompt}, 20, 1.0f, 1, 42);
  ASSERT_TRUE(scheduler.submit(single));
  EXPECT_EQ(collect(*single).tokens[0], ra.tokens[0]);
}

TEST_F(SchedulerTest, SpeculationGivesThePlainText) {
  SchedulerOptions o;
  o.slots = 2;
  std::unique_ptr<Model> draft = load_model(kModel);
  o.draft_model = draft.get();
  Scheduler scheduler(*model, o);
  const std::vector<int32_t> prompt = encode("Once upon a time, there was a little girl");
  const std::vector<int32_t> expect = plain(prompt, 48);
  for (int mode = 0; mode < 3; ++mode) {
    auto t = make_task({prompt}, 48, 0.0f);
    GenerationRequest& r = const_cast<GenerationRequest&>(t->request());
    if (mode == 0) r.spec.exit_layer = 2;
    else if (mode == 1) r.spec.lookup_ngram = 2;
    else r.spec.draft_model = true;
    r.spec.draft_max = 3;
    auto other = make_task({encode("The dog")}, 30, 0.0f);  // a plain sequence alongside
    ASSERT_TRUE(scheduler.submit(t));
    ASSERT_TRUE(scheduler.submit(other));
    EXPECT_EQ(collect(*t).tokens[0], expect) << "mode " << mode;
    EXPECT_EQ(collect(*other).tokens[0], plain(encode("The dog"), 30));
  }
}

// Speculating sequences verify inside the batched pass beside plain ones, self-speculation's
// rows entering at their exit layers, and self-speculating ones draft in lockstep (their
// draft steps batched, leaving at their exits): each gives exactly what it gives alone,
// greedy (the plain text) and sampled (the same seed, the same tokens), with the same
// rounds, drafts and acceptances.
TEST_F(SchedulerTest, SpeculativeRoundsInTheBatchEqualEachRunAlone) {
  SchedulerOptions o;
  o.slots = 6;
  o.threads = 2;
  o.batch_rows = 9;  // prompts in several chunks, beside the verifications
  Scheduler scheduler(*model, o);
  struct Case {
    std::string prompt;
    int exit_layer, lookup;
    float temperature;
  };
  const std::vector<Case> cases = {{"Once upon a time, there was a little girl", 1, 0, 0.0f},
                                   {"The cat sat on the mat and the cat sat", 3, 0, 0.0f},
                                   {"Lily and Ben went to the park. Lily and Ben", 0, 2, 0.0f},
                                   {"A big dog", 2, 0, 0.9f},
                                   {"Tim had a red ball. Tim had a", 2, 2, 0.0f},  // lookup, then the exit
                                   {"One day", 0, 0, 0.0f}};  // plain
  const int kTokens = 40;
  std::vector<std::shared_ptr<Task>> tasks;
  for (const Case& c : cases) {
    tasks.push_back(make_task({encode(c.prompt)}, kTokens, c.temperature, 1, 11));
    GenerationRequest& r = const_cast<GenerationRequest&>(tasks.back()->request());
    r.spec.exit_layer = c.exit_layer;
    r.spec.lookup_ngram = c.lookup;
    r.spec.draft_max = 3;
    ASSERT_TRUE(scheduler.submit(tasks.back()));
  }
  int64_t drafted = 0, accepted = 0, rounds = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const std::vector<int32_t> prompt = encode(c.prompt);
    const Result got = collect(*tasks[i]);
    EXPECT_EQ(got.error, "");
    if (c.exit_layer == 0 && c.lookup == 0) {
      EXPECT_EQ(got.tokens[0], plain(prompt, kTokens));
      continue;
    }
    // The same run alone.
    Context ctx(*model, 0, 1);
    const SamplerParams sp = tasks[i]->request().sampling;
    Sampler sampler(sp);
    std::unique_ptr<Drafter> drafter;
    SelfSpecOptions self_spec;
    self_spec.lookup_ngram = c.lookup;
    if (c.exit_layer > 0) drafter = std::make_unique<EarlyExitDrafter>(ctx, c.exit_layer, kDefaultDraftPMin, self_spec);
    else drafter = std::make_unique<NgramDrafter>(*model, c.lookup);
    std::vector<int32_t> alone;
    const SpecStats st = generate_speculative(ctx, sampler, *drafter, prompt, kTokens, SpecParams{3}, [&](int32_t t) {
      alone.push_back(t);
      return true;
    });
    EXPECT_EQ(got.tokens[0], alone) << c.prompt;
    if (c.temperature == 0) {
      EXPECT_EQ(got.tokens[0], plain(prompt, kTokens)) << c.prompt;
    }
    drafted += st.drafted;
    accepted += st.accepted;
    rounds += st.rounds;
  }
  while (scheduler.stats().requests < static_cast<int64_t>(cases.size()))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const SchedulerStats stats = scheduler.stats();
  EXPECT_EQ(stats.spec_rounds, rounds);
  EXPECT_EQ(stats.draft_tokens, drafted);
  EXPECT_EQ(stats.draft_accepted, accepted);
  EXPECT_GT(accepted, 0);
}

// /metrics' skiff_prompt_tokens_total: exactly the prompt positions prefilled, by the batched
// pass or by a speculative run, without the cached prefix.
TEST_F(SchedulerTest, PromptTokensCountWhatWasPrefilled) {
  SchedulerOptions o;
  o.slots = 1;
  Scheduler scheduler(*model, o);
  const std::vector<int32_t> p = encode("Once upon a time, there was a little girl");
  const std::vector<int32_t> q = encode("The dog ran to the park");
  auto t1 = make_task({p}, 16, 0.0f);
  GenerationRequest& r = const_cast<GenerationRequest&>(t1->request());
  r.spec.exit_layer = 2;
  r.spec.draft_max = 3;
  ASSERT_TRUE(scheduler.submit(t1));
  const Result r1 = collect(*t1);
  auto t2 = make_task({q}, 8, 0.0f);
  ASSERT_TRUE(scheduler.submit(t2));
  const Result r2 = collect(*t2);
  while (scheduler.stats().requests < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(r1.usage.cached_tokens, 0);
  EXPECT_GT(r2.usage.cached_tokens, 0);  // the BOS at least
  EXPECT_EQ(scheduler.stats().prompt_tokens,
            static_cast<int64_t>(p.size() + q.size()) - r1.usage.cached_tokens - r2.usage.cached_tokens);
}

// Slots with an F16 KV cache (--cache-type-k/-v): batching, prompt sharing between choices
// (copy_prefix_from) and prefix reuse still give what plain decoding with that cache gives.
TEST_F(SchedulerTest, F16KvCacheSlotsEqualPlainDecodingWithIt) {
  SchedulerOptions o;
  o.slots = 3;
  o.threads = 2;
  o.batch_rows = 7;
  o.kv_types = {DType::F16, DType::F16};
  Scheduler scheduler(*model, o);
  const std::vector<std::string> prompts = {"Once upon a time", "The cat sat on the mat and"};
  std::vector<std::shared_ptr<Task>> tasks;
  for (const auto& p : prompts) {
    tasks.push_back(make_task({encode(p)}, 30, 0.0f));
    ASSERT_TRUE(scheduler.submit(tasks.back()));
  }
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(collect(*tasks[i]).tokens[0], plain(encode(prompts[i]), 30, o.kv_types)) << prompts[i];
  const std::vector<int32_t> prompt = encode("Lily");
  auto shared = make_task({prompt}, 16, 1.0f, 3, 42);
  ASSERT_TRUE(scheduler.submit(shared));
  Result r = collect(*shared);
  auto single = make_task({prompt}, 16, 1.0f, 1, 42);
  ASSERT_TRUE(scheduler.submit(single));
  EXPECT_EQ(collect(*single).tokens[0], r.tokens[0]);
}

TEST_F(SchedulerTest, JsonObjectResponseFormatYieldsJson) {
  SchedulerOptions o;
  o.slots = 1;
  Scheduler scheduler(*model, o);
  auto t = make_task({encode("Once upon a time")}, 200, 0.8f);
  const_cast<GenerationRequest&>(t->request()).json_constraint =
      std::make_shared<const JsonConstraint>(JsonConstraint::any_object());
  ASSERT_TRUE(scheduler.submit(t));
  Result r = collect(*t);
  ASSERT_FALSE(r.text[0].empty());
  JsonConstraint check = JsonConstraint::any_object();
  EXPECT_TRUE(check.can_accept(r.text[0])) << r.text[0];
  if (r.finish[0] == "stop") {
    EXPECT_TRUE(nlohmann::json::accept(r.text[0])) << r.text[0];
  }
}

TEST_F(SchedulerTest, CancelledTasksFreeTheirSlotsAndTheQueueIsBounded) {
  SchedulerOptions o;
  o.slots = 1;
  o.max_queue = 1;
  Scheduler scheduler(*model, o);
  auto running = make_task({encode("Once upon a time")}, 200, 0.0f);
  ASSERT_TRUE(scheduler.submit(running));
  // Wait until it is in the slot, then fill the queue.
  while (scheduler.stats().slots_busy == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto queued = make_task({encode("Lily")}, 5, 0.0f);
  ASSERT_TRUE(scheduler.submit(queued));
  EXPECT_FALSE(scheduler.submit(make_task({encode("Tom")}, 5, 0.0f)));  // 429
  running->cancel();
  Result q = collect(*queued);
  EXPECT_EQ(q.finish[0], "length");
  EXPECT_EQ(q.tokens[0], plain(encode("Lily"), 5));
  EXPECT_EQ(scheduler.stats().queue_depth, 0);
}

}  // namespace
}  // namespace skiff::server

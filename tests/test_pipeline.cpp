// Pipeline stages in one process: each rank a thread, messages through an in-memory Link
// (the MPI transport is tests/cli/test_mpi_pipeline.py's). Stages must give exactly what
// one process gives: logits bit for bit, greedy and sampled text, self-speculation with the
// draft layers on stage 0; a silent rank and a different model file are Errors, not hangs.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "decode/early_exit_drafter.h"
#include "decode/generate.h"
#include "decode/speculative.h"
#include "dist/pipeline.h"
#include "server/scheduler.h"

namespace skiff::dist {
namespace {

const std::string kModel = std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf";

// Every rank's mailbox.
struct Hub {
  explicit Hub(int n) : boxes(static_cast<size_t>(n)) {}
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::deque<Message>> boxes;
};

class ThreadLink : public Link {
 public:
  ThreadLink(Hub& hub, int rank) : hub_(hub), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(hub_.boxes.size()); }
  [[noreturn]] void abort(int) override { std::abort(); }

 protected:
  void send_bytes(int to, int tag, std::span<const uint8_t> bytes, double) override {
    std::lock_guard lock(hub_.mutex);
    hub_.boxes[static_cast<size_t>(to)].push_back(Message{rank_, tag, {bytes.begin(), bytes.end()}});
    hub_.changed.notify_all();
  }
  Message recv_bytes(int from, double timeout_seconds, const std::string& what) override {
    std::unique_lock lock(hub_.mutex);
    std::deque<Message>& box = hub_.boxes[static_cast<size_t>(rank_)];
    auto match = [&] {
      for (auto it = box.begin(); it != box.end(); ++it)
        if (from == kAnySource || it->source == from) return it;
      return box.end();
    };
    if (!hub_.changed.wait_for(lock, std::chrono::duration<double>(timeout_seconds), [&] { return match() != box.end(); }))
      fail("rank {} waited {} s for {} from rank {}", rank_, timeout_seconds, what, from);
    auto it = match();
    Message m = std::move(*it);
    box.erase(it);
    return m;
  }

 private:
  Hub& hub_;
  int rank_;
};

// Runs `head` on rank 0 of a pipeline over `plan` ("0:2,2:5"); the other ranks serve in
// threads (or only join, when `silent_rank` is theirs).
void with_pipeline(const Model& model, const std::string& plan, int keep_on_first,
                   const std::function<void(Pipeline&)>& head, int silent_rank = -1, double timeout = 30,
                   const Model* rank1_model = nullptr, int sequences = 1) {
  const int S = static_cast<int>(std::count(plan.begin(), plan.end(), ',')) + 1;
  Hub hub(S);
  PipelineOptions options;
  options.sequences = sequences;
  options.stage_layers = plan;
  options.keep_on_first = keep_on_first;
  options.threads = 1;
  options.timeout_seconds = timeout;
  std::vector<std::thread> workers;
  std::vector<std::string> worker_errors(static_cast<size_t>(S));
  for (int r = 1; r < S; ++r) {
    workers.emplace_back([&, r] {
      try {
        Pipeline p(std::make_unique<ThreadLink>(hub, r), r == 1 && rank1_model ? *rank1_model : model, options);
        if (r != silent_rank) p.serve();
      } catch (const Error& e) {
        worker_errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  try {
    Pipeline p(std::make_unique<ThreadLink>(hub, 0), model, options);
    head(p);
  } catch (...) {
    // Let the workers time out and end before rethrowing.
    for (std::thread& t : workers) t.join();
    throw;
  }
  for (std::thread& t : workers) t.join();
  for (int r = 1; r < S; ++r) EXPECT_EQ(worker_errors[static_cast<size_t>(r)], "") << "rank " << r;
}

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override { model = load_model(kModel); }
  std::unique_ptr<Model> model;
  std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 271, 300, 42, 99, 7};

  // Logits of every position: a batch of 6, then one at a time.
  std::vector<float> logits(Context& ctx) {
    const ModelConfig& c = model->config;
    std::vector<float> out(tokens.size() * c.vocab_size), h;
    auto run = [&](size_t begin, size_t n) {
      h.resize(n * c.dim);
      embed(*model, std::span<const int32_t>(tokens).subspan(begin, n), h.data());
      forward(ctx, h.data(), static_cast<int64_t>(n), 0, c.n_layers);
      compute_logits(ctx, h.data(), static_cast<int64_t>(n), &out[begin * c.vocab_size]);
    };
    run(0, 6);
    for (size_t t = 6; t < tokens.size(); ++t) run(t, 1);
    return out;
  }
  std::vector<int32_t> generate_text(Context& ctx, float temperature, int self_spec) {
    SamplerParams params;
    params.temperature = temperature;
    params.seed = 7;
    Sampler sampler(params);
    std::vector<int32_t> out;
    auto on_token = [&](int32_t t) {
      out.push_back(t);
      return true;
    };
    const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 4);
    if (self_spec > 0) {
      EarlyExitDrafter drafter(ctx, self_spec, 0.0f);
      generate_speculative(ctx, sampler, drafter, prompt, 40, SpecParams{3}, on_token);
    } else {
      generate(ctx, sampler, prompt, 40, on_token);
    }
    return out;
  }
};

TEST_F(PipelineTest, LogitsEqualOneProcessBitExactly) {
  Context alone(*model, 0, 1);
  const std::vector<float> want = logits(alone);
  for (const char* plan : {"0:5", "0:1,1:5", "0:2,2:4,4:5", "0:1,1:2,2:3,3:5"}) {
    with_pipeline(*model, plan, 0, [&](Pipeline& p) {
      std::unique_ptr<Context> ctx = p.make_context();
      // Stage 0's KV cache holds its own layers only.
      EXPECT_EQ(ctx->cache().last_stored(), p.plan().ranges[0].last);
      EXPECT_EQ(ctx->cache().bytes() * model->config.n_layers, alone.cache().bytes() * p.plan().ranges[0].last);
      EXPECT_EQ(logits(*ctx), want) << plan;
      const std::string line = p.finish(static_cast<int64_t>(tokens.size()));
      EXPECT_NE(line.find(std::string("stages ") + plan), std::string::npos) << line;
    });
  }
}

TEST_F(PipelineTest, TextEqualsOneProcessGreedySampledAndSelfSpec) {
  for (float temperature : {0.0f, 1.0f}) {
    for (int e : {0, 1, 2}) {
      Context alone(*model, 0, 1);
      const std::vector<int32_t> want = generate_text(alone, temperature, e);
      ASSERT_FALSE(want.empty());
      for (const char* plan : {"0:2,2:5", "0:2,2:3,3:5"}) {
        with_pipeline(*model, plan, e, [&](Pipeline& p) {
          std::unique_ptr<Context> ctx = p.make_context();
          EXPECT_EQ(generate_text(*ctx, temperature, e), want) << plan << " temp " << temperature << " E " << e;
          p.finish(1);
        });
      }
    }
  }
}

// Several sequences in one batch, two batches in flight at once and waited for in the other
// order, a prefix copied between sequences: each sequence's logits as it would get alone.
TEST_F(PipelineTest, BatchesOfSequencesInFlightEqualOneProcess) {
  const ModelConfig& c = model->config;
  const std::vector<int32_t> a = {1, 403, 407, 261, 378}, b = {1, 99, 7}, d = {1, 42};
  auto alone = [&](const std::vector<int32_t>& toks) {
    Context ctx(*model, 0, 1);
    std::vector<float> h(toks.size() * c.dim);
    embed(*model, toks, h.data());
    forward(ctx, h.data(), static_cast<int64_t>(toks.size()), 0, c.n_layers);
    return h;
  };
  for (const char* plan : {"0:2,2:5", "0:1,1:3,3:5"}) {
    with_pipeline(*model, plan, 0, [&](Pipeline& p) {
      ThreadPool pool(1);
      std::unique_ptr<Context> ca = p.make_context(0, &pool), cb = p.make_context(1, &pool),
                               cd = p.make_context(2, &pool), ce = p.make_context(3, &pool);
      // Batch 1: a and b together; batch 2: d alone; both in flight before either is waited for.
      std::vector<int32_t> ab = a;
      ab.insert(ab.end(), b.begin(), b.end());
      std::vector<float> h1(ab.size() * c.dim), h2(d.size() * c.dim);
      embed(*model, ab, h1.data());
      embed(*model, d, h2.data());
      const BatchSeq s1[] = {{ca.get(), static_cast<int64_t>(a.size())}, {cb.get(), static_cast<int64_t>(b.size())}};
      const BatchSeq s2[] = {{cd.get(), static_cast<int64_t>(d.size())}};
      const int64_t t1 = start_forward_batch(s1, h1.data(), 0, c.n_layers);
      const int64_t t2 = start_forward_batch(s2, h2.data(), 0, c.n_layers);
      EXPECT_NE(t1, kNoTicket);
      EXPECT_THROW(start_forward_batch(s2, h2.data(), 0, c.n_layers), Error);  // d is already in flight
      finish_forward_batch(s2, t2, h2.data());
      finish_forward_batch(s1, t1, h1.data());
      const std::vector<float> want_a = alone(a), want_b = alone(b), want_d = alone(d);
      EXPECT_EQ(std::vector<float>(h1.begin(), h1.begin() + static_cast<long>(a.size() * c.dim)), want_a) << plan;
      EXPECT_EQ(std::vector<float>(h1.begin() + static_cast<long>(a.size() * c.dim), h1.end()), want_b) << plan;
      EXPECT_EQ(h2, want_d) << plan;
      EXPECT_EQ(ca->cache().length(c.n_layers - 1), static_cast<int>(a.size()));
      // e takes a's first 3 positions (every stage) and goes on with a's last two tokens.
      copy_sequence_prefix(*ca, *ce, 3);
      std::vector<float> h3(2 * c.dim);
      embed(*model, std::span<const int32_t>(a).subspan(3), h3.data());
      forward(*ce, h3.data(), 2, 0, c.n_layers);
      EXPECT_EQ(h3, std::vector<float>(want_a.begin() + 3 * c.dim, want_a.end())) << plan;
      p.finish(1);
    }, -1, 30, nullptr, 4);
  }
}

// The server's scheduler over stages: three slots in two micro-batch groups whose batches
// overlap in the stages, n = 2 choices copying the prompt's cache, a self-speculative
// request drafting on stage 0: every text as one process decodes it.
TEST_F(PipelineTest, ServerSlotsThroughStagesEqualOneProcess) {
  using namespace server;
  auto encode = [&](const std::string& text) { return model->tokenizer->encode(text, true); };
  auto plain = [&](const std::vector<int32_t>& prompt, int n) {
    Context ctx(*model, 0, 1);
    Sampler sampler(SamplerParams{.temperature = 0});
    std::vector<int32_t> out;
    generate(ctx, sampler, prompt, n, [&](int32_t t) {
      out.push_back(t);
      return true;
    });
    return out;
  };
  auto task = [&](const std::string& prompt, int n, int choices, int exit_layer) {
    GenerationRequest r;
    r.prompts = {encode(prompt)};
    r.max_tokens = n;
    r.n = choices;
    r.sampling.temperature = 0;
    r.spec.exit_layer = exit_layer;
    r.spec.draft_max = 3;
    return std::make_shared<Task>(Task::Kind::kGenerate, std::move(r),
                                  std::chrono::steady_clock::now() + std::chrono::minutes(5));
  };
  auto tokens_of = [](Task& t) {
    std::vector<std::vector<int32_t>> out(static_cast<size_t>(t.sequences()));
    for (;;) {
      const bool done = t.done();
      for (Event& e : t.take(std::chrono::milliseconds(20)))
        for (const TokenLogprob& lp : e.tokens) out[static_cast<size_t>(e.choice)].push_back(lp.id);
      if (done) return out;
    }
  };
  with_pipeline(*model, "0:2,2:3,3:5", 2, [&](Pipeline& p) {
    SchedulerOptions o;
    o.slots = 3;
    o.threads = 1;
    o.batch_rows = 5;  // prompts in several chunks, mixed with decoding
    o.micro_batches = 2;
    o.make_context = [&](int slot, ThreadPool& pool) { return p.make_context(slot, &pool); };
    {
      Scheduler scheduler(*model, o);
      const std::vector<std::string> prompts = {"Once upon a time", "The cat sat on the mat and", "Lily"};
      std::vector<std::shared_ptr<Task>> tasks;
      for (const std::string& text : prompts) {
        tasks.push_back(task(text, 30, 1, 0));
        ASSERT_TRUE(scheduler.submit(tasks.back()));
      }
      for (size_t i = 0; i < prompts.size(); ++i)
        EXPECT_EQ(tokens_of(*tasks[i])[0], plain(encode(prompts[i]), 30)) << prompts[i];
      auto two = task("A big dog", 20, 2, 0);
      auto spec = task("Once upon a time, there was", 30, 1, 2);
      ASSERT_TRUE(scheduler.submit(two));
      ASSERT_TRUE(scheduler.submit(spec));
      const std::vector<std::vector<int32_t>> both = tokens_of(*two);
      EXPECT_EQ(both[0], plain(encode("A big dog"), 20));
      EXPECT_EQ(both[1], both[0]);  // greedy: the same text from the copied prompt
      EXPECT_EQ(tokens_of(*spec)[0], plain(encode("Once upon a time, there was"), 30));
      scheduler.shutdown(std::chrono::milliseconds(0));
    }
    EXPECT_NE(p.finish(1).find("3 stages 0:2,2:3,3:5"), std::string::npos);
  }, -1, 30, nullptr, 3);
}

TEST_F(PipelineTest, SelfSpecNeedsDraftLayersOnStageZero) {
  Hub hub(2);
  PipelineOptions options;
  options.stage_layers = "0:1,1:5";
  options.keep_on_first = 2;
  EXPECT_THROW(Pipeline(std::make_unique<ThreadLink>(hub, 0), *model, options), Error);
}

TEST_F(PipelineTest, SilentRankIsAnErrorNotAHang) {
  const auto start = std::chrono::steady_clock::now();
  try {
    with_pipeline(*model, "0:2,2:5", 0, [&](Pipeline& p) {
      std::unique_ptr<Context> ctx = p.make_context();
      logits(*ctx);
    }, 1, 0.3);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
}

TEST_F(PipelineTest, DifferentModelOnARankIsAnError) {
  // A copy of the file with one byte changed near its end.
  const std::string path = (std::filesystem::temp_directory_path() / "skiff_pipeline_other.gguf").string();
  std::filesystem::copy_file(kModel, path, std::filesystem::copy_options::overwrite_existing);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-10, std::ios::end);
    char ch = 0;
    f.read(&ch, 1);
    f.seekp(-10, std::ios::end);
    ch = static_cast<char>(ch ^ 1);
    f.write(&ch, 1);
  }
  std::unique_ptr<Model> other = load_model(path);
  std::filesystem::remove(path);
  EXPECT_NE(fingerprint(*other).hash, fingerprint(*model).hash);
  try {
    with_pipeline(*model, "0:2,2:5", 0, [](Pipeline&) { FAIL() << "no error"; }, 1, 0.1, other.get());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 loaded a different model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace skiff::dist

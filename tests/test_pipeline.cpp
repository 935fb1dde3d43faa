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
                   const Model* rank1_model = nullptr) {
  const int S = static_cast<int>(std::count(plan.begin(), plan.end(), ',')) + 1;
  Hub hub(S);
  PipelineOptions options;
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

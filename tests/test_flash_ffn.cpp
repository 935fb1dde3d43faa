// The flash FFN against the dense one: with an exact activity decision (threshold 0 on a
// ReLU-gated model, or every neuron) the logits must equal the in-RAM model's, whatever the
// cache size (chunked reads, eviction), window, thread count and I/O backend; the memory
// budget is never exceeded; bad budgets are clear errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "base/error.h"
#include "flash/budget.h"
#include "flash/flash_run.h"
#include "flash_test_util.h"

namespace skiff::flash {
namespace {

using testing_flash::expect_close;
using testing_flash::FlashSession;
using testing_flash::kPrompt;
using testing_flash::kSteps;
using testing_flash::relu_shape;
using testing_flash::run_sequence;
using testing_flash::TempDir;
using testing_spec::make_random_model;
using testing_spec::OwnedModel;
using testing_spec::RandomShape;

struct Case {
  const char* budget;  // "" unlimited
  int window;
  int threads;
  IoOptions::Backend backend;
};

TEST(FlashFfn, ReluThresholdZeroEqualsDense) {
  OwnedModel m = make_random_model(relu_shape(3));
  ASSERT_EQ(m->config.ffn_activation, FfnActivation::kRelu);
  TempDir dir;
  write_pack(*m, dir.str());
  std::vector<std::vector<float>> want;
  {
    Context ctx(*m, 0, 1);
    want = run_sequence(ctx);
  }
  // Budgets from unlimited down to a few neurons per layer (chunked reads and eviction).
  const Case cases[] = {{"", 4, 1, IoOptions::Backend::kAuto},
                        {"", 1, 2, IoOptions::Backend::kThreads},
                        {"0", 2, 2, IoOptions::Backend::kAuto}};
  for (const Case& c : cases) {
    FlashOptions o;
    o.window = c.window;
    o.io.backend = c.backend;
    FlashSession f(dir.str(), o, c.budget, c.threads);
    FlashRun* run = f.run.get();
    Context& ctx = f.ctx;
    SCOPED_TRACE(std::string("budget '") + c.budget + "' window " + std::to_string(c.window));
    expect_close(run_sequence(ctx), want, 1e-5f);
    EXPECT_GT(run->ffn->stats().bytes_read, 0u);
    EXPECT_LT(run->ffn->stats().active, run->ffn->stats().considered);  // ReLU: sparse
  }
}

TEST(FlashFfn, SmallCachesChunkAndEvictButStayExact) {
  OwnedModel m = make_random_model(relu_shape(4));
  TempDir dir;
  write_pack(*m, dir.str());
  Context ref(*m, 0, 1);
  const auto want = run_sequence(ref);
  for (int capacity : {1, 2, 5, 17, 71}) {
    for (int window : {1, 3}) {
      LoadedPack pack = load_pack(dir.str());
      FlashOptions o;
      o.window = window;
      FlashFfn ffn(*pack.model, pack.header, pack.bundles_file, o, capacity);
      Context ctx(*pack.model, 0, 2);
      ctx.set_ffn_provider(&ffn);
      SCOPED_TRACE("capacity " + std::to_string(capacity) + " window " + std::to_string(window));
      expect_close(run_sequence(ctx), want, 1e-5f);
      for (int l = 0; l < m->config.n_layers; ++l) {
        EXPECT_LE(ffn.cache(l).size(), capacity);
        ffn.cache(l).check_invariants();
      }
    }
  }
}

TEST(FlashFfn, DenseModeAndSiluThresholdZeroEqualDense) {
  RandomShape s = relu_shape(5);
  s.relu = false;
  OwnedModel m = make_random_model(s);
  TempDir dir;
  write_pack(*m, dir.str());
  Context ref(*m, 0, 1);
  const auto want = run_sequence(ref);
  for (auto mode : {FlashOptions::Mode::kDense, FlashOptions::Mode::kThreshold}) {
    FlashOptions o;
    o.mode = mode;
    FlashSession f(dir.str(), o, "", 1);
    expect_close(run_sequence(f.ctx), want, 1e-5f);
  }
}

TEST(FlashFfn, WindowKeepsRecentNeuronsCached) {
  OwnedModel m = make_random_model(relu_shape(6));
  TempDir dir;
  write_pack(*m, dir.str());
  FlashOptions o;
  o.window = 100;
  FlashSession f(dir.str(), o, "", 1);
  run_sequence(f.ctx);
  const FlashStats& s = f.run->ffn->stats();
  EXPECT_GT(s.hits, 0);
  // Every neuron is read at most once when nothing is ever evicted.
  EXPECT_LE(s.misses, static_cast<int64_t>(m->config.n_layers) * m->config.ffn_dim);
}

TEST(FlashFfn, BudgetIsNeverExceeded) {
  OwnedModel m = make_random_model(relu_shape(7));
  TempDir dir;
  write_pack(*m, dir.str());
  LoadedPack probe = load_pack(dir.str());
  FlashOptions o;
  const uint64_t ctx_bytes = context_bytes(probe.model->config, 0, 8, 1);
  const FlashPlan unlimited = plan_memory(*probe.model, probe.header, o, 0, ctx_bytes);
  // Budgets between the minimum and the unlimited plan's total.
  const uint64_t full = unlimited.resident + unlimited.context + unlimited.io_buffers + unlimited.cache;
  for (uint64_t budget = unlimited.minimum; budget <= full + 4096; budget += (full - unlimited.minimum) / 5 + 1) {
    auto run = open_flash(load_pack(dir.str()), o, std::to_string(budget), 0, 8, 1);
    EXPECT_LE(run->budget.used(), budget);
    Context ctx(run->model(), 0, 1);
    ctx.set_ffn_provider(run->ffn.get());
    run_sequence(ctx);
    for (int l = 0; l < m->config.n_layers; ++l) EXPECT_LE(run->ffn->cache(l).size(), run->plan.capacity);
    EXPECT_LE(run->ffn->cache_bytes(), run->plan.cache + run->plan.io_buffers);
  }
  try {
    open_flash(load_pack(dir.str()), o, std::to_string(unlimited.minimum - 1), 0, 8, 1);
    FAIL() << "a budget below the minimum was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("below the minimum"), std::string::npos) << e.what();
  }
}

TEST(FlashFfn, SparsityCalibrationHitsTheTarget) {
  RandomShape s = relu_shape(8);
  s.relu = false;
  OwnedModel m = make_random_model(s);
  TempDir dir;
  write_pack(*m, dir.str());
  FlashOptions o;
  o.sparsity = 0.6f;
  FlashSession f(dir.str(), o, "", 1);
  const int32_t t = 3;
  eval_tokens(f.ctx, std::span<const int32_t>(&t, 1));  // one position: exactly 40% stay active
  const FlashStats& st = f.run->ffn->stats();
  const double active = static_cast<double>(st.active) / static_cast<double>(st.considered);
  EXPECT_NEAR(active, 0.4, 0.03);
  for (int l = 0; l < m->config.n_layers; ++l) EXPECT_GT(f.run->ffn->layer_threshold(l), 0.0f);
}

TEST(FlashBudget, ParsesSizes) {
  EXPECT_EQ(parse_mem_size("4096", 0), 4096u);
  EXPECT_EQ(parse_mem_size("850M", 0), 850ull << 20);
  EXPECT_EQ(parse_mem_size("1.5G", 0), 3ull << 29);
  EXPECT_EQ(parse_mem_size("512MiB", 0), 512ull << 20);
  EXPECT_EQ(parse_mem_size("50%", 1000), 500u);
  for (const char* bad : {"", "abc", "-5M", "10X", "150%", "nan"})
    EXPECT_THROW(parse_mem_size(bad, 100), Error) << bad;
  MemoryBudget b(100);
  b.charge(60, "a");
  EXPECT_THROW(b.charge(41, "b"), Error);
}

}  // namespace
}  // namespace skiff::flash

namespace skiff::flash {
namespace {

TEST(FlashPackGate, GateTypeRequantizesEveryLayersResidentGate) {
  testing_spec::RandomShape s;
  s.dim = 64;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.ffn_dim = 40;
  s.n_layers = 12;  // two-digit layer names too
  s.vocab = 24;
  testing_spec::OwnedModel m = testing_spec::make_random_model(s);
  const std::string dir = std::filesystem::temp_directory_path() / ("skiff-gate-" + std::to_string(::getpid()));
  PackOptions o;
  o.gate_type = DType::Q8_0;
  write_pack(*m, dir, o);
  LoadedPack pack = load_pack(dir);
  std::vector<float> want(64), got(64);
  for (int l = 0; l < s.n_layers; ++l) {
    const TensorView& g = pack.model->layers[static_cast<size_t>(l)].ffn_gate;
    ASSERT_EQ(g.type, DType::Q8_0) << "layer " << l;
    // The resident copy is the source gate quantized with ggml's Q8_0 rounding.
    for (int r = 0; r < s.ffn_dim; ++r) {
      dequantize_row(DType::F32, m->layers[static_cast<size_t>(l)].ffn_gate.row(r), want.data(), 64);
      std::vector<uint8_t> q(row_bytes(DType::Q8_0, 64));
      ASSERT_TRUE(quantize_row(DType::Q8_0, want.data(), q.data(), 64));
      ASSERT_EQ(std::memcmp(q.data(), g.row(r), q.size()), 0) << "layer " << l << " row " << r;
    }
  }
  std::filesystem::remove_all(dir);
  // A width that is not a multiple of the block size is a clear error.
  s.dim = 40;
  s.n_heads = 4;
  testing_spec::OwnedModel odd = testing_spec::make_random_model(s);
  try {
    write_pack(*odd, dir, o);
    FAIL() << "q8_0 gates of width 40 were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block size"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace skiff::flash

// Unit tests of the trainer (src/train): LayerSkip rates, scales and curricula against
// hand-computed values; the schedule and clipping; data splitting and shuffling; checkpoint
// round trip and corruption; thread-count invariance (SiLU, and ReLU with the activation L1
// penalty); overfitting a tiny batch; resume after an interruption (bit-exact); the NaN guard;
// the trainer's logits against the engine's forward (SiLU and ReLU); block attention
// (first_visible masks: all-zero equals causal, keys before a row's first visible one do not
// matter, thread-count invariance, an entry's logits independent of what precedes it and of its
// position) and the loss mask; exit self-distillation (its term, thread-count invariance, 0
// where an exit is the final state). Gradients against
// PyTorch are in tests/reference/test_train_reference.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "model/forward.h"
#include "test_util.h"
#include "train/trainer.h"

using namespace skiff;
using namespace skiff::train;

namespace {

const Tokenizer& test_tokenizer() {
  static std::unique_ptr<Model> m = load_model(std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf");
  return *m->tokenizer;
}

ModelConfig tiny_config() {
  ModelConfig c;
  c.name = "tiny";
  c.dim = 32;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.ffn_dim = 40;
  c.vocab_size = 512;
  c.context_length = 64;
  c.rope_dim = 6;
  return c;
}

std::vector<int32_t> random_tokens(size_t n, uint64_t seed) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(counter_uniform(seed, i, 0, 0, 0) * 512);
  return t;
}

std::string temp_dir(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string("skiff_train_") + name + "_" +
                                                     std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

TrainOptions small_options() {
  TrainOptions o;
  o.batch = 2;
  o.steps = 8;
  o.opt.lr = 3e-3;
  o.opt.min_lr = 3e-4;
  o.opt.warmup = 2;
  o.opt.total_steps = 8;
  o.layer_dropout = 0.5;
  o.early_exit = true;
  o.e_scale = 0.8;
  o.exit_curriculum = ExitCurriculum::parse("rotational:2");
  o.seed = 9;
  o.eval_batches = 1;
  o.progress = false;
  return o;
}

}  // namespace

TEST(LayerSkip, DropoutRatesByLayer) {
  // L = 5: D(l) = 2^(l/4) - 1
  const double want[] = {0.0, 0.18920711500272105, 0.41421356237309515, 0.6817928305074290, 1.0};
  for (int l = 0; l < 5; ++l) EXPECT_NEAR(layer_dropout_rate(l, 5, 0.2, 1.0), 0.2 * want[l], 1e-12) << l;
  EXPECT_EQ(layer_dropout_rate(0, 1, 0.2, 1.0), 0.0);
  EXPECT_NEAR(layer_dropout_rate(1, 2, 0.1, 1.0), 0.1, 1e-12);  // the last layer gets P_MAX
}

TEST(LayerSkip, DropoutTimeCurriculum) {
  EXPECT_EQ(dropout_time_scale(DropoutCurriculum::Constant, 3, 10), 1.0);
  EXPECT_NEAR(dropout_time_scale(DropoutCurriculum::Exp, 0, 5), 0.0, 1e-15);
  EXPECT_NEAR(dropout_time_scale(DropoutCurriculum::Exp, 2, 5), std::sqrt(2.0) - 1, 1e-12);
  EXPECT_NEAR(dropout_time_scale(DropoutCurriculum::Exp, 4, 5), 1.0, 1e-12);
  EXPECT_NEAR(layer_dropout_rate(4, 5, 0.2, dropout_time_scale(DropoutCurriculum::Exp, 2, 5)),
              0.2 * (std::sqrt(2.0) - 1), 1e-12);
}

TEST(LayerSkip, DropoutMasksFollowTheRates) {
  // 4000 samples: layer 0 never skipped, the last at ~P_MAX, in between ~its rate.
  const int B = 4000, L = 3;
  std::vector<uint8_t> skip(static_cast<size_t>(B) * L);
  sample_layer_dropout(skip.data(), B, L, 0.5, 1.0, 42, 7, 0);
  int count[3] = {0, 0, 0};
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l) count[l] += skip[static_cast<size_t>(b * L + l)];
  EXPECT_EQ(count[0], 0);
  EXPECT_NEAR(count[1] / double(B), 0.5 * (std::sqrt(2.0) - 1), 0.03);
  EXPECT_NEAR(count[2] / double(B), 0.5, 0.03);
  std::vector<uint8_t> again(skip.size());
  sample_layer_dropout(again.data(), B, L, 0.5, 1.0, 42, 7, 0);
  EXPECT_EQ(skip, again);  // counter-based: same (seed, step, micro) -> same masks
  sample_layer_dropout(again.data(), B, L, 0.5, 1.0, 42, 8, 0);
  EXPECT_NE(skip, again);
}

TEST(LayerSkip, EarlyExitScales) {
  // all 4 layers, e_scale 1: cumsum(l+1) = 1, 3, 6, 10 over 20
  auto s = early_exit_scales({0, 1, 2, 3}, 4, 1.0);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_NEAR(s[0], 0.05, 1e-12);
  EXPECT_NEAR(s[1], 0.15, 1e-12);
  EXPECT_NEAR(s[2], 0.30, 1e-12);
  EXPECT_NEAR(s[3], 0.50, 1e-12);
  // e_scale 0.5: 0.5, 1.5, 3, 10 over 15
  s = early_exit_scales({0, 1, 2, 3}, 4, 0.5);
  EXPECT_NEAR(s[0], 1.0 / 30, 1e-12);
  EXPECT_NEAR(s[1], 0.1, 1e-12);
  EXPECT_NEAR(s[2], 0.2, 1e-12);
  EXPECT_NEAR(s[3], 2.0 / 3, 1e-12);
  // a subset (rotational): cumsum over the ACTIVE layers: {1, 3} -> 2, 2+4 = 6 over 8
  s = early_exit_scales({1, 3}, 4, 1.0);
  EXPECT_NEAR(s[0], 0.25, 1e-12);
  EXPECT_NEAR(s[1], 0.75, 1e-12);
  s = early_exit_scales({4}, 5, 0.3);
  EXPECT_NEAR(s[0], 1.0, 1e-12);
}

TEST(LayerSkip, RotationalCurriculum) {
  ExitCurriculum c = ExitCurriculum::parse("rotational:2");
  EXPECT_EQ(c.kind, ExitCurriculum::Kind::Rotational);
  EXPECT_EQ(c.rotation, 2);
  // L = 5, pattern 10101 rolled right by one per step (np.roll), last layer always on
  EXPECT_EQ(active_exit_layers(c, 5, 0, 100), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(active_exit_layers(c, 5, 1, 100), (std::vector<int>{0, 1, 3, 4}));
  EXPECT_EQ(active_exit_layers(c, 5, 2, 100), (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(active_exit_layers(c, 5, 5, 100), (std::vector<int>{0, 2, 4}));  // period L
  ExitCurriculum r3 = ExitCurriculum::parse("rotational:3");
  EXPECT_EQ(active_exit_layers(r3, 6, 0, 10), (std::vector<int>{0, 3, 5}));
  EXPECT_EQ(active_exit_layers(r3, 6, 1, 10), (std::vector<int>{1, 4, 5}));
}

TEST(LayerSkip, GradualCurriculum) {
  ExitCurriculum c = ExitCurriculum::parse("gradual");
  EXPECT_EQ(c.kind, ExitCurriculum::Kind::Gradual);
  EXPECT_DOUBLE_EQ(c.fraction, 0.5);
  // L = 4, 100 steps: layer l joins at step >= 100 * 0.5 * (4 - l) / 4: l=2 at 25, l=1 at
  // 37.5 -> 38, l=0 at 50; the last layer is always on.
  EXPECT_EQ(active_exit_layers(c, 4, 0, 100), (std::vector<int>{3}));
  EXPECT_EQ(active_exit_layers(c, 4, 24, 100), (std::vector<int>{3}));
  EXPECT_EQ(active_exit_layers(c, 4, 25, 100), (std::vector<int>{2, 3}));
  EXPECT_EQ(active_exit_layers(c, 4, 37, 100), (std::vector<int>{2, 3}));
  EXPECT_EQ(active_exit_layers(c, 4, 38, 100), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(active_exit_layers(c, 4, 50, 100), (std::vector<int>{0, 1, 2, 3}));
  ExitCurriculum f = ExitCurriculum::parse("gradual:1");
  EXPECT_EQ(active_exit_layers(f, 4, 75, 100), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(active_exit_layers(ExitCurriculum::parse("none"), 3, 5, 10), (std::vector<int>{0, 1, 2}));
  EXPECT_THROW(ExitCurriculum::parse("rotational:0"), Error);
  EXPECT_THROW(ExitCurriculum::parse("rotational:x"), Error);
  EXPECT_THROW(ExitCurriculum::parse("gradual:2"), Error);
  EXPECT_THROW(ExitCurriculum::parse("sometimes"), Error);
}

TEST(Optimizer, ScheduleAndClipping) {
  OptimizerConfig c;
  c.lr = 1.0;
  c.min_lr = 0.1;
  c.warmup = 2;
  c.total_steps = 12;
  EXPECT_NEAR(learning_rate(c, 0), 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(c, 1), 1.0, 1e-12);
  EXPECT_NEAR(learning_rate(c, 2), 1.0, 1e-12);
  EXPECT_NEAR(learning_rate(c, 5), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI / 3)), 1e-12);
  EXPECT_NEAR(learning_rate(c, 11), 0.1, 1e-12);
  EXPECT_NEAR(clip_factor(2.0, 1.0), 1.0 / (2.0 + 1e-6), 1e-15);
  EXPECT_EQ(clip_factor(0.5, 1.0), 1.0);
  EXPECT_EQ(clip_factor(5.0, 0.0), 1.0);
  const float g[] = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(global_norm(g), 5.0);
}

TEST(Optimizer, AdamWFirstStepMovesByLr) {
  // After one step m_hat / sqrt(v_hat) = sign(g): a parameter moves by lr (plus decay).
  ModelConfig c = tiny_config();
  ParamLayout layout(c, true);
  std::vector<float> p(layout.total, 1.0f), g(layout.total, 0.0f);
  g[layout.output_norm] = 2.0f;   // a vector: no decay
  g[layout.token_embd] = -3.0f;   // a matrix: decayed
  ThreadPool pool(1);
  OptimizerConfig oc;
  oc.weight_decay = 0.1;
  AdamW adam(layout.total);
  adam.step(p, g, layout, oc, 0.01, 1.0, pool);
  EXPECT_NEAR(p[layout.output_norm], 1.0 - 0.01, 1e-6);
  EXPECT_NEAR(p[layout.token_embd], 1.0 * (1 - 0.001) + 0.01, 1e-6);
  EXPECT_NEAR(p[layout.token_embd + 1], 1.0 * (1 - 0.001), 1e-7);  // zero gradient: decay only
  EXPECT_EQ(adam.t(), 1);
}

TEST(TrainData, SplitsDocuments) {
  EXPECT_EQ(split_documents("one story\n another \n"), (std::vector<std::string>{"one story", "another"}));
  EXPECT_EQ(split_documents("a b\nc\n\n\nd e\n  \nf"), (std::vector<std::string>{"a b\nc", "d e", "f"}));
  EXPECT_TRUE(split_documents("\n \n").empty());
}

TEST(TrainData, WindowsAndDeterministicShuffle) {
  std::vector<int32_t> train(41), val(11);
  for (int i = 0; i < 41; ++i) train[static_cast<size_t>(i)] = i;
  Dataset d(train, val, 10, 3);
  EXPECT_EQ(d.train_windows(), 4);
  EXPECT_EQ(d.val_windows(), 1);
  DataPosition pos;
  std::vector<int32_t> out(11 * 8);
  d.next_train_batch(pos, 8, out.data());  // two epochs
  EXPECT_EQ(pos.epoch, 1);
  EXPECT_EQ(pos.index, 4);
  std::vector<int> firsts, seen(4, 0);
  for (int w = 0; w < 8; ++w) {
    int first = out[static_cast<size_t>(w) * 11];
    EXPECT_EQ(first % 10, 0);
    for (int i = 0; i < 11; ++i) EXPECT_EQ(out[static_cast<size_t>(w * 11 + i)], first + i);  // T+1 contiguous
    if (w < 4) seen[static_cast<size_t>(first / 10)]++;
    firsts.push_back(first);
  }
  EXPECT_EQ(seen, (std::vector<int>{1, 1, 1, 1}));  // a permutation per epoch
  Dataset d2(train, val, 10, 3);
  DataPosition p2{1, 2};
  std::vector<int32_t> one(11);
  d2.next_train_batch(p2, 1, one.data());
  EXPECT_EQ(one[0], firsts[6]);  // a position is all a resumed run needs
  EXPECT_THROW(Dataset(std::vector<int32_t>(5), val, 10, 1), Error);
}

TEST(TrainCheckpoint, StateRoundTripAndCorruption) {
  std::string dir = temp_dir("state");
  TrainState s;
  s.step = 12;
  s.position = {3, 4};
  s.seed = 99;
  s.adam_t = 12;
  s.params = {1.f, 2.f, 3.f};
  s.m = {0.1f, 0.2f, 0.3f};
  s.v = {0.01f, 0.02f, 0.03f};
  save_state(dir + "/a.state", s);
  TrainState r = load_state(dir + "/a.state");
  EXPECT_EQ(r.step, 12);
  EXPECT_EQ(r.position.epoch, 3);
  EXPECT_EQ(r.position.index, 4);
  EXPECT_EQ(r.params, s.params);
  EXPECT_EQ(r.v, s.v);
  const std::string bytes = skiff::test::read_text(dir + "/a.state");
  std::string flipped = bytes;
  flipped[70] ^= 1;
  std::ofstream(dir + "/b.state", std::ios::binary) << flipped;
  EXPECT_THROW(load_state(dir + "/b.state"), Error);
  std::ofstream(dir + "/c.state", std::ios::binary) << bytes.substr(0, bytes.size() - 5);
  EXPECT_THROW(load_state(dir + "/c.state"), Error);
  EXPECT_EQ(checkpoint_stem("x/y.gguf"), "x/y");
  EXPECT_EQ(state_path("x/y.gguf"), "x/y.state");
  std::filesystem::remove_all(dir);
}

TEST(TrainModel, ThreadCountDoesNotChangeResults) {
  for (FfnActivation act : {FfnActivation::kSilu, FfnActivation::kRelu}) {
    ModelConfig c = tiny_config();
    c.ffn_activation = act;
    std::vector<std::vector<float>> results;
    std::vector<double> losses;
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      TrainModel m(c, false, 3, 9, pool);
      m.init_random(5);
      auto tokens = random_tokens(3 * 10, 1);
      std::vector<uint8_t> skip = {0, 1, 0, 0, 0, 1, 0, 1, 1};
      m.zero_grads();
      m.forward(tokens.data(), skip.data());
      LossSpec spec;
      spec.exit_layers = {0, 1, 2};
      spec.scales = early_exit_scales({0, 1, 2}, 3, 1.0);
      if (act == FfnActivation::kRelu) spec.activation_l1 = 0.3;
      StepResult r = m.backward(spec, 1.0f);
      if (act == FfnActivation::kRelu) {
        EXPECT_GT(r.sparsity_loss, 0.0);
        EXPECT_GT(r.sparsity, 0.2);  // random init: about half the gates are <= 0
        EXPECT_LT(r.sparsity, 0.8);
      } else {
        EXPECT_EQ(r.sparsity_loss, 0.0);
      }
      results.push_back(m.grads());
      losses.push_back(r.loss);
    }
    EXPECT_EQ(results[0], results[1]) << ffn_activation_name(act);
    EXPECT_EQ(losses[0], losses[1]) << ffn_activation_name(act);
  }
}

TEST(TrainModel, ActivationL1NeedsRelu) {
  ThreadPool pool(1);
  TrainModel m(tiny_config(), false, 1, 4, pool);
  m.init_random(5);
  auto tokens = random_tokens(5, 1);
  m.forward(tokens.data(), nullptr);
  LossSpec spec;
  spec.exit_layers = {2};
  spec.scales = {1.0};
  spec.activation_l1 = 0.1;
  EXPECT_THROW(m.backward(spec, 1.0f), Error);
}

namespace {
// The trainer's final logits against the engine's forward of as_model() (which must keep the
// FFN activation: it is what the checkpoint's GGUF says).
void expect_logits_equal_engine(FfnActivation act) {
  SCOPED_TRACE(ffn_activation_name(act));
  ModelConfig c = tiny_config();
  c.ffn_activation = act;
  ThreadPool pool(2);
  const int T = 11;
  TrainModel m(c, false, 1, T, pool);
  m.init_random(3);
  for (float& p : m.params()) p *= 20.0f;  // sizeable activations
  auto tokens = random_tokens(T + 1, 2);
  m.forward(tokens.data(), nullptr);
  std::vector<float> got(static_cast<size_t>(T) * 512);
  m.exit_logits(2, got.data(), nullptr, nullptr);
  std::unique_ptr<Model> model = m.as_model(test_tokenizer(), "tiny");
  EXPECT_EQ(model->config.ffn_activation, act);
  Context ctx(*model, 0, 1);
  std::vector<float> hidden(static_cast<size_t>(T) * 32), want(got.size());
  embed(*model, std::span<const int32_t>(tokens.data(), T), hidden.data());
  forward(ctx, hidden.data(), T, 0, 3);
  compute_logits(ctx, hidden.data(), T, want.data());
  float worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  EXPECT_LT(worst, 1e-4f * std::max(1.0f, scale)) << "max logit " << scale;
}
}  // namespace

TEST(TrainModel, LogitsEqualTheEngineForward) {
  expect_logits_equal_engine(FfnActivation::kSilu);
  expect_logits_equal_engine(FfnActivation::kRelu);
}

TEST(Trainer, OverfitsATinyBatch) {
  ThreadPool pool(2);
  TrainModel m(tiny_config(), true, 2, 16, pool);
  m.init_random(1);
  auto toks = random_tokens(17, 4);
  Dataset data(toks, toks, 16, 1);  // a single window: every batch is the same
  TrainOptions o;
  o.batch = 2;
  o.steps = 80;
  o.opt.lr = 2e-2;
  o.opt.min_lr = 1e-3;
  o.opt.warmup = 5;
  o.opt.weight_decay = 0.0;
  o.opt.total_steps = o.steps;
  o.progress = false;
  o.eval_batches = 1;
  TrainSummary s = run_training(m, data, test_tokenizer(), o, pool);
  EXPECT_GT(s.losses.front(), 5.0);
  EXPECT_LT(s.losses.back(), 0.01) << "first " << s.losses.front() << " last " << s.losses.back();
  EXPECT_LT(s.final_eval.loss.back(), 0.05);
}

TEST(Trainer, ResumeGivesTheSameLosses) {
  std::string dir = temp_dir("resume");
  auto toks = random_tokens(400, 6);
  auto val = random_tokens(40, 7);
  auto run = [&](const std::string& out, int64_t save_every, int64_t stop_after, bool resume) {
    ThreadPool pool(2);
    TrainModel m(tiny_config(), false, 2, 12, pool);
    m.init_random(2);
    Dataset data(toks, val, 12, 5);
    TrainOptions o = small_options();
    o.accum = 2;
    o.out = out;
    o.save_every = save_every;
    o.stop_after = stop_after;
    o.resume = resume;
    TrainSummary s = run_training(m, data, test_tokenizer(), o, pool);
    return std::make_pair(s, m.params());
  };
  auto [full, full_params] = run(dir + "/full.gguf", 0, -1, false);
  ASSERT_EQ(full.losses.size(), 8u);
  // interrupted after step 6 with the last checkpoint at step 4, then resumed
  auto [part, part_params] = run(dir + "/part.gguf", 4, 6, false);
  EXPECT_EQ(part.last_step, 6);
  auto [rest, rest_params] = run(dir + "/part.gguf", 4, -1, true);
  EXPECT_EQ(rest.first_step, 4);
  ASSERT_EQ(rest.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(rest.losses[i], full.losses[4 + i]) << "step " << 5 + i;
  EXPECT_EQ(rest_params, full_params);
  // the logs, the eval curve and its plot sit beside the checkpoint
  for (const char* f : {"/part.log.csv", "/part.eval.csv", "/part.svg", "/part.state", "/part.gguf"})
    EXPECT_TRUE(std::filesystem::exists(dir + f)) << f;
  // resuming with other settings is refused
  {
    ThreadPool pool(1);
    TrainModel m(tiny_config(), false, 3, 12, pool);
    Dataset data(toks, val, 12, 5);
    TrainOptions o = small_options();
    o.batch = 3;
    o.out = dir + "/part.gguf";
    o.resume = true;
    try {
      run_training(m, data, test_tokenizer(), o, pool);
      ADD_FAILURE() << "resumed with another batch size";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("other settings"), std::string::npos) << e.what();
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(Trainer, NanStopsWithTheLastCheckpointIntact) {
  std::string dir = temp_dir("nan");
  ThreadPool pool(1);
  TrainModel m(tiny_config(), true, 2, 12, pool);
  m.init_random(2);
  auto toks = random_tokens(300, 8);
  Dataset data(toks, toks, 12, 5);
  TrainOptions o = small_options();
  o.out = dir + "/ckpt.gguf";
  o.save_every = 2;
  o.debug_nan_step = 4;  // the 5th step
  try {
    run_training(m, data, test_tokenizer(), o, pool);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("step 5: gradient norm is nan"), std::string::npos) << msg;
    EXPECT_NE(msg.find("last good checkpoint"), std::string::npos) << msg;
  }
  EXPECT_EQ(load_state(dir + "/ckpt.state").step, 4);
  std::unique_ptr<Model> loaded = load_model(dir + "/ckpt.gguf");
  EXPECT_EQ(loaded->config.n_layers, 3);
  std::filesystem::remove_all(dir);
}

// ---- Block attention (memory-augmented episodes): first_visible masks -------------------

namespace {

struct AttentionCase {
  int64_t B = 2;
  int T = 12, H = 4, KV = 2, hd = 8;
  std::vector<float> q, k, v, dout;
  // Sample 0: an episode [BOS][entry 3 rows][entry 4 rows][question 4 rows]; sample 1 plain
  // text rows then an episode whose entry starts at row 7.
  std::vector<int32_t> first_visible = {0, 1, 1, 1, 4, 4, 4, 4, 0, 0, 0, 0,
                                        0, 0, 0, 0, 0, 5, 5, 7, 7, 7, 5, 5};
  explicit AttentionCase(uint64_t seed) {
    auto fill = [&](std::vector<float>& x, size_t n, uint64_t stream) {
      x.resize(n);
      for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(counter_uniform(seed, stream, i, 0, 0) * 2 - 1);
    };
    const auto N = static_cast<size_t>(B * T);
    fill(q, N * static_cast<size_t>(H * hd), 1);
    fill(k, N * static_cast<size_t>(KV * hd), 2);
    fill(v, N * static_cast<size_t>(KV * hd), 3);
    fill(dout, N * static_cast<size_t>(H * hd), 4);
  }
  size_t out_size() const { return static_cast<size_t>(B * T * H * hd); }
  size_t att_size() const { return static_cast<size_t>(B * H * T * T); }
  size_t kv_size() const { return static_cast<size_t>(B * T * KV * hd); }
};

struct AttentionResult {
  std::vector<float> out, att, dq, dk, dv;
};

AttentionResult run_attention(const AttentionCase& c, const int32_t* first_visible, int threads) {
  ThreadPool pool(threads);
  AttentionResult r;
  r.out.resize(c.out_size());
  r.att.resize(c.att_size());
  r.dq.resize(c.out_size());
  r.dk.resize(c.kv_size());
  r.dv.resize(c.kv_size());
  attention_forward(r.out.data(), r.att.data(), c.q.data(), c.k.data(), c.v.data(), first_visible, c.B, c.T,
                    c.H, c.KV, c.hd, pool);
  attention_backward(r.dq.data(), r.dk.data(), r.dv.data(), c.dout.data(), r.att.data(), c.q.data(), c.k.data(),
                     c.v.data(), first_visible, c.B, c.T, c.H, c.KV, c.hd, pool);
  return r;
}

}  // namespace

TEST(TrainOps, BlockAttentionAllZeroEqualsCausalBitForBit) {
  AttentionCase c(3);
  std::vector<int32_t> zeros(static_cast<size_t>(c.B * c.T), 0);
  AttentionResult causal = run_attention(c, nullptr, 2), masked = run_attention(c, zeros.data(), 2);
  EXPECT_EQ(causal.out, masked.out);
  EXPECT_EQ(causal.att, masked.att);
  EXPECT_EQ(causal.dq, masked.dq);
  EXPECT_EQ(causal.dk, masked.dk);
  EXPECT_EQ(causal.dv, masked.dv);
}

TEST(TrainOps, BlockAttentionIgnoresKeysBeforeFirstVisible) {
  AttentionCase c(4);
  AttentionResult base = run_attention(c, c.first_visible.data(), 2);
  // Masked-out probabilities are exactly 0, the visible ones sum to 1.
  for (int64_t b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h)
      for (int t = 0; t < c.T; ++t) {
        const float* p = base.att.data() + ((b * c.H + h) * c.T + t) * c.T;
        const int lo = c.first_visible[static_cast<size_t>(b * c.T + t)];
        double sum = 0;
        for (int s = 0; s < c.T; ++s) {
          if (s < lo || s > t) {
            EXPECT_EQ(p[s], 0.0f) << b << " " << h << " " << t << " " << s;
          }
          sum += p[s];
        }
        EXPECT_NEAR(sum, 1.0, 1e-5);
      }
  // Changing the keys and values of every row before row t's first_visible leaves row t's
  // output unchanged, bit for bit (an entry's rows do not depend on what precedes it).
  const int64_t kw = static_cast<int64_t>(c.KV) * c.hd, qw = static_cast<int64_t>(c.H) * c.hd;
  for (int64_t b = 0; b < c.B; ++b)
    for (int t = 0; t < c.T; ++t) {
      const int lo = c.first_visible[static_cast<size_t>(b * c.T + t)];
      if (lo == 0) continue;
      AttentionCase altered = c;
      for (int s = 0; s < lo; ++s)
        for (int64_t i = 0; i < kw; ++i) {
          altered.k[static_cast<size_t>((b * c.T + s) * kw + i)] += 0.75f;
          altered.v[static_cast<size_t>((b * c.T + s) * kw + i)] -= 1.5f;
        }
      AttentionResult r = run_attention(altered, c.first_visible.data(), 2);
      for (int64_t i = 0; i < qw; ++i)
        ASSERT_EQ(r.out[static_cast<size_t>((b * c.T + t) * qw + i)],
                  base.out[static_cast<size_t>((b * c.T + t) * qw + i)])
            << "sample " << b << " row " << t;
    }
}

TEST(TrainOps, BlockAttentionThreadCountInvariant) {
  AttentionCase c(5);
  AttentionResult one = run_attention(c, c.first_visible.data(), 1),
                  three = run_attention(c, c.first_visible.data(), 3);
  EXPECT_EQ(one.out, three.out);
  EXPECT_EQ(one.att, three.att);
  EXPECT_EQ(one.dq, three.dq);
  EXPECT_EQ(one.dk, three.dk);
  EXPECT_EQ(one.dv, three.dv);
}

TEST(TrainOps, BlockAttentionRejectsBadFirstVisible) {
  AttentionCase c(6);
  std::vector<int32_t> bad = c.first_visible;
  bad[3] = 4;  // row 3 cannot start its keys after itself
  EXPECT_THROW(run_attention(c, bad.data(), 1), Error);
  bad[3] = -1;
  EXPECT_THROW(run_attention(c, bad.data(), 1), Error);
}

TEST(TrainModel, BlockAttentionAndLossMaskThreadCountInvariant) {
  // Through the whole model: masks, ignored targets and layer dropout, 1 vs 2 threads.
  ModelConfig c = tiny_config();
  const int B = 2, T = 12;
  std::vector<int32_t> first_visible = AttentionCase(0).first_visible;
  std::vector<uint8_t> loss_mask(static_cast<size_t>(B * T), 1);
  for (size_t i = 0; i < loss_mask.size(); i += 3) loss_mask[i] = 0;
  std::vector<std::vector<float>> grads;
  std::vector<double> losses;
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    TrainModel m(c, false, B, T, pool);
    m.init_random(5);
    auto tokens = random_tokens(static_cast<size_t>(B * (T + 1)), 2);
    std::vector<uint8_t> skip = {0, 1, 0, 0, 0, 1};
    m.zero_grads();
    m.forward(tokens.data(), skip.data(), first_visible.data(), loss_mask.data());
    LossSpec spec;
    spec.exit_layers = {1, 2};
    spec.scales = early_exit_scales({1, 2}, 3, 1.0);
    StepResult r = m.backward(spec, 1.0f);
    grads.push_back(m.grads());
    losses.push_back(r.loss);
  }
  EXPECT_EQ(grads[0], grads[1]);
  EXPECT_EQ(losses[0], losses[1]);
}

TEST(TrainModel, LossMaskAveragesOverCountedRows) {
  // The loss with a mask equals the mean of the unmasked per-row losses over the kept rows,
  // and an all-zero first_visible equals the causal forward exactly.
  ThreadPool pool(2);
  ModelConfig c = tiny_config();
  const int B = 2, T = 8;
  TrainModel m(c, true, B, T, pool);
  m.init_random(3);
  auto tokens = random_tokens(static_cast<size_t>(B * (T + 1)), 4);
  const int64_t N = B * T;
  std::vector<float> logits(static_cast<size_t>(N * c.vocab_size)), row_loss(static_cast<size_t>(N));
  m.forward(tokens.data(), nullptr);
  m.exit_logits(c.n_layers - 1, logits.data(), row_loss.data(), nullptr);
  LossSpec spec;
  spec.exit_layers = {c.n_layers - 1};
  spec.scales = {1.0};
  m.zero_grads();
  const double full = m.backward(spec, 1.0f).loss;
  std::vector<int32_t> zeros(static_cast<size_t>(N), 0);
  std::vector<uint8_t> all(static_cast<size_t>(N), 1);
  std::vector<float> g_full = m.grads();
  m.zero_grads();
  m.forward(tokens.data(), nullptr, zeros.data(), all.data());
  EXPECT_EQ(m.backward(spec, 1.0f).loss, full);
  EXPECT_EQ(m.grads(), g_full);
  std::vector<uint8_t> mask(static_cast<size_t>(N), 0);
  double sum = 0;
  int counted = 0;
  for (int64_t n = 0; n < N; n += 3) {
    mask[static_cast<size_t>(n)] = 1;
    sum += row_loss[static_cast<size_t>(n)];
    ++counted;
  }
  m.zero_grads();
  m.forward(tokens.data(), nullptr, nullptr, mask.data());
  EXPECT_NEAR(m.backward(spec, 1.0f).loss, sum / counted, 1e-5);
  // No counted row: loss 0, no gradient.
  std::fill(mask.begin(), mask.end(), 0);
  m.zero_grads();
  m.forward(tokens.data(), nullptr, nullptr, mask.data());
  EXPECT_EQ(m.backward(spec, 1.0f).loss, 0.0);
  for (float g : m.grads()) ASSERT_EQ(g, 0.0f);
}

TEST(TrainModel, BlockAttentionEntryIsPositionIndependent) {
  // An entry that sees only itself: its rows' logits do not depend on the tokens before it
  // (exactly) nor on its position (up to rounding: RoPE scores depend on distances only), which
  // is what lets the engine splice an entry's separately computed KV cache.
  ThreadPool pool(2);
  ModelConfig c = tiny_config();
  const int T = 16, E = 5;
  TrainModel m(c, false, 1, T, pool);
  m.init_random(11);
  const std::vector<int32_t> entry = {40, 41, 42, 43, 44};
  auto entry_logits = [&](int at, uint64_t seed) {
    std::vector<int32_t> tokens = random_tokens(T + 1, seed);
    std::vector<int32_t> fv(T, 0);
    for (int i = 0; i < E; ++i) {
      tokens[static_cast<size_t>(at + i)] = entry[static_cast<size_t>(i)];
      fv[static_cast<size_t>(at + i)] = at;
    }
    m.forward(tokens.data(), nullptr, fv.data(), nullptr);
    std::vector<float> logits(static_cast<size_t>(T) * c.vocab_size);
    m.exit_logits(c.n_layers - 1, logits.data(), nullptr, nullptr);
    return std::vector<float>(logits.begin() + static_cast<int64_t>(at) * c.vocab_size,
                              logits.begin() + static_cast<int64_t>(at + E) * c.vocab_size);
  };
  const std::vector<float> a = entry_logits(4, 1), other_prefix = entry_logits(4, 2), shifted = entry_logits(9, 3);
  EXPECT_EQ(a, other_prefix);
  float worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - shifted[i]));
  EXPECT_LT(worst, 1e-4f);
}

namespace {
struct DistillRun {
  StepResult r;
  std::vector<float> grads;
};
// One backward of tiny_config() (3 layers) with exits {0, 1, 2} and self-distillation weight w.
DistillRun distill_run(double w, const std::vector<uint8_t>& skip, int threads) {
  ThreadPool pool(threads);
  TrainModel m(tiny_config(), false, 3, 9, pool);
  m.init_random(5);
  auto tokens = random_tokens(3 * 10, 2);
  m.zero_grads();
  m.forward(tokens.data(), skip.data());
  LossSpec spec;
  spec.exit_layers = {0, 1, 2};
  spec.scales = early_exit_scales({0, 1, 2}, 3, 1.0);
  spec.exit_distill = w;
  DistillRun d;
  d.r = m.backward(spec, 1.0f);
  d.grads = m.grads();
  return d;
}
}  // namespace

TEST(TrainModel, ExitDistill) {
  const std::vector<uint8_t> skip = {0, 1, 0, 0, 0, 1, 0, 1, 1};
  const DistillRun off = distill_run(0.0, skip, 2), on = distill_run(2.0, skip, 2);
  // W = 0 is the plain early-exit loss; W > 0 adds W * the mean over exits 0 and 1 of their
  // KL(final || exit), which is in the loss and moves the gradients; the CE parts stay.
  EXPECT_EQ(off.r.distill_loss, 0.0);
  EXPECT_EQ(off.r.exit_kl, std::vector<double>(3, 0.0));
  EXPECT_EQ(on.r.exit_loss, off.r.exit_loss);
  EXPECT_GT(on.r.exit_kl[0], 0.0);
  EXPECT_GT(on.r.exit_kl[1], 0.0);
  EXPECT_EQ(on.r.exit_kl[2], 0.0);
  EXPECT_NEAR(on.r.distill_loss, 2.0 * (on.r.exit_kl[0] + on.r.exit_kl[1]) / 2, 1e-12);
  EXPECT_NEAR(on.r.loss, off.r.loss + on.r.distill_loss, 1e-9);
  EXPECT_NE(on.grads, off.grads);
  // Thread-count invariant.
  const DistillRun one = distill_run(2.0, skip, 1);
  EXPECT_EQ(one.grads, on.grads);
  EXPECT_EQ(one.r.loss, on.r.loss);
}

TEST(TrainModel, ExitDistillIsZeroWhereTheExitIsTheFinalLayer) {
  // Every sample skips layer 2: the state after layer 1 is the final one, so exit 1's KL is 0
  // (to rounding) and so is its gradient; exit 0 still has its KL.
  const std::vector<uint8_t> skip = {0, 0, 1, 0, 1, 1, 1, 0, 1};
  const DistillRun d = distill_run(1.0, skip, 2);
  // (random initialization: near-uniform distributions, so exit 0's KL is small too, ~1e-4)
  EXPECT_LT(std::abs(d.r.exit_kl[1]), 1e-7);
  EXPECT_GT(d.r.exit_kl[0], 1e-5);
}

TEST(TrainModel, ExitDistillNeedsTheFinalLayerAndAPositiveWeight) {
  ThreadPool pool(1);
  TrainModel m(tiny_config(), false, 1, 4, pool);
  m.init_random(5);
  auto tokens = random_tokens(5, 1);
  m.forward(tokens.data(), nullptr);
  LossSpec spec;
  spec.exit_layers = {0, 1};
  spec.scales = {0.5, 0.5};
  spec.exit_distill = 1.0;
  EXPECT_THROW(m.backward(spec, 1.0f), Error);
  spec.exit_layers = {0, 2};
  spec.exit_distill = -1.0;
  EXPECT_THROW(m.backward(spec, 1.0f), Error);
  TrainOptions o;
  o.exit_distill = 0.5;
  EXPECT_EQ(loss_spec(o, 3, 0).exit_distill, 0.0);  // no early exit: no exits to distill
  o.early_exit = true;
  EXPECT_EQ(loss_spec(o, 3, 0).exit_distill, 0.5);
}

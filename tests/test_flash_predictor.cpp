// Learned activity predictors for the flash path: the file round-trips and rejects bad
// input; predictor mode computes exactly the FFN over the predicted (position, neuron) pairs
// (checked against a direct evaluation from the dense weights); batching does not change
// the result; the collector's labels are the true ReLU activity; training recovers a
// low-rank activity rule it did not see.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "base/error.h"
#include "flash/predictor_train.h"
#include "flash_test_util.h"
#include "test_util.h"

namespace skiff::flash {
namespace {

using test::error_of;
using testing_flash::expect_close;
using testing_flash::FlashSession;
using testing_flash::kPrompt;
using testing_flash::relu_shape;
using testing_flash::run_sequence;
using testing_flash::TempDir;
using testing_spec::make_random_model;
using testing_spec::OwnedModel;

Predictors random_predictors(const ModelConfig& c, int rank, float cutoff, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Predictors p;
  p.dim = c.dim;
  p.ffn_dim = c.ffn_dim;
  for (int l = 0; l < c.n_layers; ++l) {
    LayerPredictor lp;
    lp.rank = rank;
    lp.a.resize(static_cast<size_t>(rank * c.dim));
    lp.b.resize(static_cast<size_t>(c.ffn_dim * rank));
    lp.bias.resize(static_cast<size_t>(c.ffn_dim));
    for (float& v : lp.a) v = normal(rng);
    for (float& v : lp.b) v = normal(rng);
    for (float& v : lp.bias) v = normal(rng);
    lp.cutoff = cutoff;
    lp.recall = 0.5f + 0.01f * static_cast<float>(l);
    lp.precision = 0.25f;
    p.layers.push_back(std::move(lp));
  }
  return p;
}

// Row r of an F32 tensor.
const float* f32_row(const TensorView& t, int64_t r) { return reinterpret_cast<const float*>(t.row(r)); }

TEST(FlashPredictor, FileRoundTripsAndRejectsBadInput) {
  OwnedModel m = make_random_model(relu_shape(11));
  const ModelConfig& c = m->config;
  TempDir dir;
  const std::string path = predictors_path(dir.str());
  Predictors p = random_predictors(c, 5, 0.25f, 1);
  p.label_threshold = 0.125f;
  save_predictors(p, path);
  Predictors q = load_predictors(path, c.n_layers, c.dim, c.ffn_dim);
  EXPECT_EQ(q.label_threshold, 0.125f);
  ASSERT_EQ(q.layers.size(), p.layers.size());
  for (size_t l = 0; l < p.layers.size(); ++l) {
    EXPECT_EQ(q.layers[l].rank, 5);
    EXPECT_EQ(q.layers[l].a, p.layers[l].a);
    EXPECT_EQ(q.layers[l].b, p.layers[l].b);
    EXPECT_EQ(q.layers[l].bias, p.layers[l].bias);
    EXPECT_EQ(q.layers[l].cutoff, 0.25f);
    EXPECT_EQ(q.layers[l].recall, p.layers[l].recall);
  }
  EXPECT_EQ(q.bytes(), p.bytes());

  EXPECT_NE(error_of([&] { load_predictors(path, c.n_layers + 1, c.dim, c.ffn_dim); }).find("do not fit"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_predictors(dir.str() + "/none.gguf", c.n_layers, c.dim, c.ffn_dim); })
                .find("flash-train-predictor"),
            std::string::npos);
  // Truncated at several points: always a clear error, never a crash.
  const std::string bytes = test::read_text(path);
  for (size_t cut : {size_t{3}, size_t{40}, bytes.size() / 2, bytes.size() - 1}) {
    const std::string bad = dir.str() + "/cut.gguf";
    std::ofstream(bad, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(cut));
    EXPECT_NE(error_of([&] { load_predictors(bad, c.n_layers, c.dim, c.ffn_dim); }), "") << cut;
  }
  p.layers[1].cutoff = NAN;
  save_predictors(p, path);
  EXPECT_NE(error_of([&] { load_predictors(path, c.n_layers, c.dim, c.ffn_dim); }).find("not finite"),
            std::string::npos);
}

// Every neuron predicted: predictor mode must equal the dense model, whatever the cache.
TEST(FlashPredictor, EverythingPredictedEqualsDense) {
  OwnedModel m = make_random_model(relu_shape(12));
  TempDir dir;
  write_pack(*m, dir.str());
  Context ref(*m, 0, 1);
  const auto want = run_sequence(ref);
  const Predictors p = random_predictors(m->config, 3, -1e30f, 2);
  for (const char* budget : {"", "0"}) {
    for (int threads : {1, 2}) {
      FlashOptions o;
      o.mode = FlashOptions::Mode::kPredictor;
      o.predictors = &p;
      o.measure_recall = true;
      FlashSession f(dir.str(), o, budget, threads);
      expect_close(run_sequence(f.ctx), want, 1e-5f);
      const FlashStats& s = f.run->ffn->stats();
      EXPECT_EQ(s.active, s.considered);
      EXPECT_GT(s.true_active, 0);
      EXPECT_EQ(s.predicted_true, s.true_active);  // recall 1
    }
  }
}

// With a real cutoff some pairs are skipped: the output must be exactly the FFN summed over
// the predicted pairs, evaluated here directly from the dense weights.
TEST(FlashPredictor, ComputesExactlyThePredictedNeurons) {
  OwnedModel m = make_random_model(relu_shape(13));
  const ModelConfig& c = m->config;
  TempDir dir;
  write_pack(*m, dir.str());
  const Predictors p = random_predictors(c, 4, 0.5f, 3);
  FlashOptions o;
  o.mode = FlashOptions::Mode::kPredictor;
  o.predictors = &p;
  o.measure_recall = true;
  FlashSession f(dir.str(), o, "", 1);

  const int D = c.dim, F = c.ffn_dim, T = 3;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * D)), out(static_cast<size_t>(T * D));
  for (float& v : x) v = normal(rng);
  for (int layer = 0; layer < c.n_layers; ++layer) {
    f.run->ffn->run(f.ctx, layer, x.data(), T, out.data());
    const LayerWeights& w = m->layers[static_cast<size_t>(layer)];
    const LayerPredictor& lp = p.layers[static_cast<size_t>(layer)];
    int skipped_active = 0;
    for (int t = 0; t < T; ++t) {
      const float* xt = &x[static_cast<size_t>(t * D)];
      std::vector<double> h(static_cast<size_t>(lp.rank), 0.0), want(static_cast<size_t>(D), 0.0);
      for (int r = 0; r < lp.rank; ++r)
        for (int d = 0; d < D; ++d) h[r] += lp.a[static_cast<size_t>(r * D + d)] * xt[d];
      for (int i = 0; i < F; ++i) {
        double score = lp.bias[static_cast<size_t>(i)];
        for (int r = 0; r < lp.rank; ++r) score += lp.b[static_cast<size_t>(i * lp.rank + r)] * h[r];
        double g = 0, u = 0;
        for (int d = 0; d < D; ++d) {
          g += f32_row(w.ffn_gate, i)[d] * xt[d];
          u += f32_row(w.ffn_up, i)[d] * xt[d];
        }
        if (score <= lp.cutoff) {
          skipped_active += g > 0;
          continue;
        }
        const double a = g > 0 ? g * u : 0.0;
        for (int d = 0; d < D; ++d) want[d] += a * f32_row(w.ffn_down, d)[i];
      }
      for (int d = 0; d < D; ++d)
        ASSERT_NEAR(out[static_cast<size_t>(t * D + d)], want[d], 1e-4 * (1 + std::fabs(want[d])))
            << "layer " << layer << " t " << t << " d " << d;
    }
    EXPECT_GT(skipped_active, 0) << "the cutoff should drop some active neurons";
  }
  const FlashStats& s = f.run->ffn->stats();
  EXPECT_LT(s.predicted_true, s.true_active);
  EXPECT_LT(s.active, s.considered);
}

// Per-position predictions: a prompt as one batch equals the same tokens one at a time.
TEST(FlashPredictor, BatchEqualsOneTokenAtATime) {
  OwnedModel m = make_random_model(relu_shape(14));
  TempDir dir;
  write_pack(*m, dir.str());
  const Predictors p = random_predictors(m->config, 4, 0.0f, 4);
  FlashOptions o;
  o.mode = FlashOptions::Mode::kPredictor;
  o.predictors = &p;
  std::vector<std::vector<float>> batch, single;
  {
    FlashSession f(dir.str(), o, "", 2);
    batch.push_back(eval_tokens(f.ctx, kPrompt));
  }
  {
    FlashSession f(dir.str(), o, "0", 2);
    std::vector<float> last;
    for (int32_t t : kPrompt) last = eval_tokens(f.ctx, std::span<const int32_t>(&t, 1));
    single.push_back(last);
  }
  expect_close(batch, single, 1e-5f);
}

// The collector's samples are the FFN inputs, labelled with relu(gate x) > 0 from the weights.
TEST(FlashPredictor, CollectorLabelsAreTheTrueActivity) {
  OwnedModel m = make_random_model(relu_shape(15));
  const ModelConfig& c = m->config;
  TempDir dir;
  write_pack(*m, dir.str());
  FlashOptions o;
  o.mode = FlashOptions::Mode::kDense;
  FlashSession f(dir.str(), o, "", 1);
  ActivationCollector collector(f.run->model(), *f.run->ffn, 0.0f, 4);
  f.ctx.set_ffn_provider(&collector);
  Context ref(*m, 0, 1);
  expect_close({eval_tokens(f.ctx, kPrompt)}, {eval_tokens(ref, kPrompt)}, 1e-5f);  // passes through
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerSamples& s = collector.samples()[static_cast<size_t>(l)];
    ASSERT_EQ(s.n, 4);  // capped at max_samples
    const LayerWeights& w = m->layers[static_cast<size_t>(l)];
    for (int64_t k = 0; k < s.n; ++k) {
      for (int i = 0; i < c.ffn_dim; ++i) {
        double g = 0;
        for (int d = 0; d < c.dim; ++d) g += f32_row(w.ffn_gate, i)[d] * s.x[static_cast<size_t>(k * c.dim + d)];
        if (std::fabs(g) < 1e-4) continue;  // too close to call in float
        EXPECT_EQ(s.active[static_cast<size_t>(k * c.ffn_dim + i)], g > 0 ? 1 : 0) << l << " " << k << " " << i;
      }
    }
  }
  EXPECT_TRUE(collector.full());
}

// Labels from a hidden rank-3 rule: the trained predictor must find it on unseen samples.
TEST(FlashPredictor, TrainingRecoversALowRankRule) {
  const int D = 24, F = 40, R = 3;
  const int64_t N = 6000;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> a0(static_cast<size_t>(R * D)), b0(static_cast<size_t>(F * R)), c0(static_cast<size_t>(F));
  for (float& v : a0) v = normal(rng);
  for (float& v : b0) v = normal(rng);
  for (float& v : c0) v = normal(rng) * 2.0f - 2.5f;  // mostly inactive, like a sparse FFN
  LayerSamples s;
  s.n = N;
  s.x.resize(static_cast<size_t>(N * D));
  for (float& v : s.x) v = normal(rng);
  for (int64_t k = 0; k < N; ++k) {
    std::vector<float> h(R, 0.0f);
    for (int r = 0; r < R; ++r)
      for (int d = 0; d < D; ++d) h[r] += a0[static_cast<size_t>(r * D + d)] * s.x[static_cast<size_t>(k * D + d)];
    for (int i = 0; i < F; ++i) {
      float z = c0[static_cast<size_t>(i)];
      for (int r = 0; r < R; ++r) z += b0[static_cast<size_t>(i * R + r)] * h[r];
      s.active.push_back(z > 0 ? 1 : 0);
    }
  }
  PredictorTrainOptions o;
  o.rank = 6;
  o.epochs = 30;
  o.batch = 128;
  o.lr = 5e-3f;
  o.target_recall = 0.98f;
  ThreadPool pool(2);
  LayerTrainReport report;
  const LayerPredictor p = train_layer_predictor(s, D, F, o, pool, &report);
  EXPECT_GT(report.active_rate, 0.05);
  EXPECT_LT(report.active_rate, 0.5);
  EXPECT_GE(p.recall, 0.95f);
  EXPECT_GE(p.precision, 0.8f);
  EXPECT_LT(report.predicted_rate, 1.3 * report.active_rate);  // reads little beyond the truth
  // Too few samples is a clear error.
  LayerSamples few;
  few.n = 10;
  few.x.resize(static_cast<size_t>(10 * D));
  few.active.resize(static_cast<size_t>(10 * F));
  EXPECT_THROW(train_layer_predictor(few, D, F, o, pool), Error);
}

}  // namespace
}  // namespace skiff::flash

namespace skiff::flash {
namespace {

// With the gate given, the start is the gate's best rank-r approximation: for a gate of rank
// 3 <= r that IS the gate, so labels relu(gate x) > 0 are predicted without any training.
TEST(FlashPredictor, GateInitIsTheLowRankGate) {
  const int D = 20, F = 30, R = 3;
  const int64_t N = 2000;
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> u(static_cast<size_t>(F * R)), v(static_cast<size_t>(R * D)), gate(static_cast<size_t>(F * D), 0.0f);
  for (float& x : u) x = normal(rng);
  for (float& x : v) x = normal(rng);
  for (int i = 0; i < F; ++i)
    for (int d = 0; d < D; ++d)
      for (int r = 0; r < R; ++r) gate[static_cast<size_t>(i * D + d)] += u[static_cast<size_t>(i * R + r)] * v[static_cast<size_t>(r * D + d)];
  LayerSamples s;
  s.n = N;
  s.x.resize(static_cast<size_t>(N * D));
  for (float& x : s.x) x = normal(rng);
  for (int64_t k = 0; k < N; ++k)
    for (int i = 0; i < F; ++i) {
      double g = 0;
      for (int d = 0; d < D; ++d) g += gate[static_cast<size_t>(i * D + d)] * s.x[static_cast<size_t>(k * D + d)];
      s.active.push_back(g > 0 ? 1 : 0);
    }
  PredictorTrainOptions o;
  o.rank = 5;     // above the gate's rank: the extra directions must not disturb the scores
  o.epochs = 0;  // the initialization alone
  o.target_recall = 0.98f;
  ThreadPool pool(2);
  const LayerPredictor with_gate = train_layer_predictor(s, D, F, o, pool, nullptr, gate.data());
  EXPECT_GE(with_gate.recall, 0.97f);
  EXPECT_GE(with_gate.precision, 0.97f);
  const LayerPredictor random = train_layer_predictor(s, D, F, o, pool);
  EXPECT_LT(random.precision, 0.8f);  // an untrained random start is no predictor at all
}

}  // namespace
}  // namespace skiff::flash

#include "flash/predictor_train.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "base/error.h"
#include "kernels/matmul.h"
#include "train/optimizer.h"
#include "train/train_kernels.h"

namespace skiff::flash {

namespace {

inline float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

// log(1 + e^z) without overflow.
inline double softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

// Adam (no weight decay) on one of the predictor's tensors, through the trainer's AdamW.
struct TensorOptimizer {
  train::ParamLayout layout;
  train::AdamW adam;
  TensorOptimizer(const char* name, int64_t rows, int64_t cols)
      : adam(static_cast<size_t>(rows * cols)) {
    layout.add(name, rows, cols);
  }
  void step(std::vector<float>& w, const std::vector<float>& g, const train::OptimizerConfig& c,
            ThreadPool& pool) {
    adam.step(w, g, layout, c, c.lr, 1.0, pool);
  }
};

// a[r][dim] = the top-r right singular vectors of gate [ffn][dim] (orthonormal rows), by
// subspace iteration on gate^T gate; b[ffn][r] = gate a^T.
void gate_subspace(const float* gate, int ffn, int dim, int r, std::mt19937_64& rng, ThreadPool& pool,
                   std::vector<float>& a, std::vector<float>& b) {
  std::vector<float> gram(static_cast<size_t>(dim) * dim, 0.0f), z(static_cast<size_t>(r) * dim);
  train::matmul_backward_weight(gram.data(), gate, gate, ffn, dim, dim, pool);  // gate^T gate
  std::normal_distribution<float> normal(0.0f, 1.0f);
  a.resize(static_cast<size_t>(r) * dim);
  for (float& v : a) v = normal(rng);
  // Modified Gram-Schmidt in double, each row projected out twice ("twice is enough"): rows
  // beyond the gate's true rank are rounding noise whose top-space parts must go, or they
  // would distort the scores.
  auto orthonormalize = [&](std::vector<float>& rows) {
    std::vector<double> q(rows.begin(), rows.end());
    for (int i = 0; i < r; ++i) {
      double* ri = q.data() + static_cast<size_t>(i) * dim;
      for (int pass = 0; pass < 2; ++pass) {
        for (int j = 0; j < i; ++j) {
          const double* rj = q.data() + static_cast<size_t>(j) * dim;
          double dot = 0;
          for (int k = 0; k < dim; ++k) dot += ri[k] * rj[k];
          for (int k = 0; k < dim; ++k) ri[k] -= dot * rj[k];
        }
      }
      double norm = 0;
      for (int k = 0; k < dim; ++k) norm += ri[k] * ri[k];
      const double inv = norm > 1e-300 ? 1.0 / std::sqrt(norm) : 0.0;
      for (int k = 0; k < dim; ++k) ri[k] *= inv;
    }
    for (size_t k = 0; k < rows.size(); ++k) rows[k] = static_cast<float>(q[k]);
  };
  orthonormalize(a);
  for (int it = 0; it < 12; ++it) {
    train::matmul_forward(z.data(), a.data(), gram.data(), r, dim, dim, pool);  // rows: gram a_i
    orthonormalize(z);
    a.swap(z);
  }
  b.resize(static_cast<size_t>(ffn) * r);
  train::matmul_forward(b.data(), gate, a.data(), ffn, dim, r, pool);
}

}  // namespace

ActivationCollector::ActivationCollector(const Model& model, FfnProvider& inner, float label_threshold,
                                         int64_t max_samples)
    : model_(model), inner_(inner), label_threshold_(label_threshold), max_samples_(max_samples),
      samples_(static_cast<size_t>(model.config.n_layers)) {}

bool ActivationCollector::full() const {
  for (const LayerSamples& s : samples_)
    if (s.n < max_samples_) return false;
  return true;
}

void ActivationCollector::run(Context& ctx, int layer, const float* x, int64_t T, float* out) {
  LayerSamples& s = samples_[static_cast<size_t>(layer)];
  const int D = model_.config.dim, F = model_.config.ffn_dim;
  const int64_t take = std::min(T, max_samples_ - s.n);
  if (take > 0) {
    gate_.resize(static_cast<size_t>(take * F));
    matmul(model_.layers[static_cast<size_t>(layer)].ffn_gate, x, take, gate_.data(), ctx.pool());
    s.x.insert(s.x.end(), x, x + take * D);
    const FfnActivation act = model_.config.ffn_activation;
    for (int64_t k = 0; k < take * F; ++k)
      s.active.push_back(std::fabs(apply_ffn_activation(act, gate_[static_cast<size_t>(k)])) > label_threshold_ ? 1 : 0);
    s.n += take;
  }
  inner_.run(ctx, layer, x, T, out);
}

LayerPredictor train_layer_predictor(const LayerSamples& s, int dim, int ffn,
                                     const PredictorTrainOptions& o, ThreadPool& pool,
                                     LayerTrainReport* report, const float* gate) {
  const int64_t n_test = static_cast<int64_t>(static_cast<double>(s.n) * o.test);
  const int64_t n_cal = static_cast<int64_t>(static_cast<double>(s.n) * o.calibrate);
  const int64_t n_train = s.n - n_test - n_cal;
  if (n_train < 16 || n_test < 1 || n_cal < 1)
    fail("{} activation samples are too few to train, calibrate and test a predictor (need more text)", s.n);
  const int r = std::min(o.rank, dim);

  // Class balance: positives weighted by negatives / positives over the training split.
  int64_t positives = 0;
  for (int64_t k = 0; k < n_train * ffn; ++k) positives += s.active[static_cast<size_t>(k)];
  const double pos_rate = std::clamp(static_cast<double>(positives) / static_cast<double>(n_train * ffn), 1e-6, 1 - 1e-6);
  const float pos_weight = static_cast<float>(std::clamp((1 - pos_rate) / pos_rate, 1e-2, 1e2));

  // Initialization: random projections, and the bias at each neuron's logit of being active.
  LayerPredictor p;
  p.rank = r;
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  p.a.resize(static_cast<size_t>(r) * dim);
  p.b.resize(static_cast<size_t>(ffn) * r);
  for (float& w : p.a) w = normal(rng) / std::sqrt(static_cast<float>(dim));
  for (float& w : p.b) w = normal(rng) * 0.01f;
  p.bias.resize(static_cast<size_t>(ffn));
  if (gate != nullptr) gate_subspace(gate, ffn, dim, r, rng, pool, p.a, p.b);  // bias 0: score ~ gate
  for (int i = 0; i < ffn && gate == nullptr; ++i) {
    int64_t on = 0;
    for (int64_t k = 0; k < n_train; ++k) on += s.active[static_cast<size_t>(k * ffn + i)];
    const double rate = std::clamp((static_cast<double>(on) + 0.5) / (static_cast<double>(n_train) + 1.0), 1e-4, 1 - 1e-4);
    p.bias[static_cast<size_t>(i)] = static_cast<float>(std::log(rate / (1 - rate)));
  }

  // Adam over shuffled mini-batches (rows gathered into a contiguous batch).
  train::OptimizerConfig adam_config;
  adam_config.lr = o.lr;
  adam_config.beta2 = 0.999;
  adam_config.weight_decay = 0.0;
  TensorOptimizer opt_a("a", r, dim), opt_b("b", ffn, r), opt_c("c", 1, ffn);
  std::vector<float> ga, gb, gc, h, z, dz, dh;
  std::vector<int64_t> order(static_cast<size_t>(n_train));
  std::iota(order.begin(), order.end(), 0);
  LayerSamples batch;
  double epoch_loss = 0;
  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    epoch_loss = 0;
    for (int64_t b0 = 0; b0 < n_train; b0 += o.batch) {
      const int64_t n = std::min<int64_t>(o.batch, n_train - b0);
      batch.n = n;
      batch.x.resize(static_cast<size_t>(n * dim));
      batch.active.resize(static_cast<size_t>(n * ffn));
      for (int64_t k = 0; k < n; ++k) {
        const int64_t row = order[static_cast<size_t>(b0 + k)];
        std::copy_n(s.x.data() + row * dim, dim, batch.x.data() + k * dim);
        std::copy_n(s.active.data() + row * ffn, ffn, batch.active.data() + k * ffn);
      }
      z.resize(static_cast<size_t>(n * ffn));
      predict_scores(p, dim, ffn, batch.x.data(), n, z.data(), h, pool);
      // Weighted logistic loss, mean over the batch's (sample, neuron) pairs.
      dz.resize(z.size());
      const float scale = 1.0f / static_cast<float>(n * ffn);
      double loss = 0;
      for (size_t k = 0; k < z.size(); ++k) {
        const float sg = sigmoid(z[k]);
        if (batch.active[k]) {
          loss += pos_weight * softplus(-z[k]);
          dz[k] = pos_weight * (sg - 1.0f) * scale;
        } else {
          loss += softplus(z[k]);
          dz[k] = sg * scale;
        }
      }
      epoch_loss += loss * scale * static_cast<double>(n);
      ga.assign(p.a.size(), 0.0f);
      gb.assign(p.b.size(), 0.0f);
      gc.assign(p.bias.size(), 0.0f);
      dh.assign(static_cast<size_t>(n * r), 0.0f);
      train::matmul_backward_weight(gb.data(), dz.data(), h.data(), n, r, ffn, pool);
      train::matmul_backward_input(dh.data(), dz.data(), p.b.data(), n, r, ffn, pool);
      train::matmul_backward_weight(ga.data(), dh.data(), batch.x.data(), n, dim, r, pool);
      for (int64_t k = 0; k < n; ++k)
        for (int i = 0; i < ffn; ++i) gc[static_cast<size_t>(i)] += dz[static_cast<size_t>(k * ffn + i)];
      opt_a.step(p.a, ga, adam_config, pool);
      opt_b.step(p.b, gb, adam_config, pool);
      opt_c.step(p.bias, gc, adam_config, pool);
    }
    epoch_loss /= static_cast<double>(n_train);
  }

  // Cutoff from the calibration split: keep >= target_recall of its active pairs.
  z.resize(static_cast<size_t>(std::max(n_cal, n_test) * ffn));
  predict_scores(p, dim, ffn, s.x.data() + n_train * dim, n_cal, z.data(), h, pool);
  std::vector<float> positive_scores;
  for (int64_t k = 0; k < n_cal * ffn; ++k)
    if (s.active[static_cast<size_t>((n_train * ffn) + k)]) positive_scores.push_back(z[static_cast<size_t>(k)]);
  if (positive_scores.empty()) {
    p.cutoff = 0.0f;
  } else {
    std::sort(positive_scores.begin(), positive_scores.end());
    const size_t miss = static_cast<size_t>(std::floor((1.0 - o.target_recall) * static_cast<double>(positive_scores.size())));
    // Scores strictly above the cutoff count as active: step just below the kept minimum.
    p.cutoff = std::nextafter(positive_scores[std::min(miss, positive_scores.size() - 1)], -INFINITY);
  }

  // Recall and precision on the test split.
  const int64_t t0 = n_train + n_cal;
  predict_scores(p, dim, ffn, s.x.data() + t0 * dim, n_test, z.data(), h, pool);
  int64_t tp = 0, fp = 0, fn = 0;
  for (int64_t k = 0; k < n_test * ffn; ++k) {
    const bool truth = s.active[static_cast<size_t>(t0 * ffn + k)] != 0;
    const bool pred = z[static_cast<size_t>(k)] > p.cutoff;
    tp += truth && pred;
    fp += !truth && pred;
    fn += truth && !pred;
  }
  p.recall = tp + fn > 0 ? static_cast<float>(static_cast<double>(tp) / static_cast<double>(tp + fn)) : 1.0f;
  p.precision = tp + fp > 0 ? static_cast<float>(static_cast<double>(tp) / static_cast<double>(tp + fp)) : 1.0f;
  if (report) {
    const double pairs = static_cast<double>(n_test * ffn);
    report->active_rate = static_cast<double>(tp + fn) / pairs;
    report->predicted_rate = static_cast<double>(tp + fp) / pairs;
    report->final_loss = epoch_loss;
  }
  return p;
}

}  // namespace skiff::flash

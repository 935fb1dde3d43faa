// Training the low-rank activity predictors (predictor.h), as `skiff flash-train-predictor`
// does: run the model over a text, record per layer the FFN input x and which neurons were
// active (|act(gate x)| > label threshold), then fit score = B (A x) + c per layer with a
// class-balanced logistic loss (active neurons are rare, so positives are weighted by
// negatives / positives) and Adam.
//
// The samples are split in text order: the first part trains, the next `calibrate` fraction
// sets the cutoff (the highest score threshold whose recall there is >= target_recall: a
// missed active neuron changes the output, an extra one only costs bytes), and the last
// `test` fraction measures the recall and precision that are reported and stored.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "base/thread_pool.h"
#include "flash/predictor.h"
#include "model/forward.h"

namespace skiff::flash {

struct LayerSamples {
  int64_t n = 0;
  std::vector<float> x;         // [n][dim]
  std::vector<uint8_t> active;  // [n][ffn], 0 or 1
};

// An FfnProvider that records each layer's inputs and active neurons (from the resident
// gate matrix of `model`) and then lets `inner` compute the FFN. Stops recording a layer
// after `max_samples` positions.
class ActivationCollector final : public FfnProvider {
 public:
  ActivationCollector(const Model& model, FfnProvider& inner, float label_threshold, int64_t max_samples);
  void run(Context& ctx, int layer, const float* x, int64_t T, float* out) override;

  std::vector<LayerSamples>& samples() { return samples_; }
  bool full() const;  // every layer has max_samples

 private:
  const Model& model_;
  FfnProvider& inner_;
  float label_threshold_;
  int64_t max_samples_;
  std::vector<LayerSamples> samples_;
  std::vector<float> gate_;
};

struct PredictorTrainOptions {
  int rank = 64;
  int epochs = 10;
  int batch = 256;
  float lr = 2e-3f;
  float calibrate = 0.1f;  // fraction of samples that sets the cutoff
  float test = 0.1f;       // fraction that measures recall and precision
  float target_recall = 0.99f;
  uint64_t seed = 1;
};

struct LayerTrainReport {
  double active_rate = 0;     // fraction of (sample, neuron) pairs active, test split
  double predicted_rate = 0;  // fraction predicted active at the cutoff, test split
  double final_loss = 0;      // training loss of the last epoch
};

// Fits one layer's predictor on `s` (dim-wide inputs, ffn neurons). Throws Error when there
// are too few samples to split.
// `gate` ([ffn][dim] floats, optional): the layer's gate matrix. The predictor then starts
// from the gate projected on its top `rank` right singular vectors (score = W V V^T x, found
// by subspace iteration), i.e. the best rank-r approximation of the exact gate, instead of
// random projections; training refines it.
LayerPredictor train_layer_predictor(const LayerSamples& s, int dim, int ffn_dim,
                                     const PredictorTrainOptions& options, ThreadPool& pool,
                                     LayerTrainReport* report = nullptr, const float* gate = nullptr);

}  // namespace skiff::flash

// Low-rank activity predictors (LLM in a Flash section 3.1, after Deja Vu): for layer l and
// the FFN input x (after ffn_norm),
//
//   score = B (A x) + c,   A [rank][dim], B [ffn][rank], c [ffn]
//
// and neuron i is predicted active where score_i > cutoff. They let the flash engine skip the
// resident gate matrix: only the predicted neurons' full bundles [up | down | gate] are read,
// and their gate is then computed exactly. Trained by `skiff flash-train-predictor`
// (predictor_train.h) and stored in the pack folder as predictors.gguf:
//
//   blk.L.pred_a  F32 {dim, rank}    blk.L.pred_b  F32 {rank, ffn}    blk.L.pred_c  F32 {ffn}
//   skiff.predictor.layers, .dim, .ffn, .label_threshold (f32: a neuron counted active in
//   training where |act(gate)| > it), and per layer arrays .cutoff, .recall, .precision
//   (held-out recall and precision at the cutoff).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/thread_pool.h"

namespace skiff {
class GgufFile;
}

namespace skiff::flash {

struct LayerPredictor {
  int rank = 0;
  std::vector<float> a;     // [rank][dim]
  std::vector<float> b;     // [ffn][rank]
  std::vector<float> bias;  // [ffn]
  float cutoff = 0.0f;
  float recall = 0.0f, precision = 0.0f;  // measured on held-out activations
};

struct Predictors {
  int dim = 0, ffn_dim = 0;
  float label_threshold = 0.0f;
  std::vector<LayerPredictor> layers;

  uint64_t bytes() const;  // parameters, for the memory budget
};

// Path of the predictors inside a pack folder.
std::string predictors_path(const std::string& pack_dir);

void save_predictors(const Predictors& predictors, const std::string& path);
// Loads and checks shapes against the pack (layers, dim, ffn). Throws Error naming the file
// and what is wrong (missing tensor, wrong shape or type, non-finite cutoff).
Predictors load_predictors(const std::string& path, int n_layers, int dim, int ffn_dim);
// The same checks on a parsed GGUF (load_predictors opens the file; the fuzz target parses
// bytes).
Predictors parse_predictors(const GgufFile& file, int n_layers, int dim, int ffn_dim);

// scores[T][ffn] for x[T][dim]; `hidden` is scratch (resized to T * rank).
void predict_scores(const LayerPredictor& p, int dim, int ffn_dim, const float* x, int64_t T,
                    float* scores, std::vector<float>& hidden, ThreadPool& pool);

}  // namespace skiff::flash

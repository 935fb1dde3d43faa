// The feed-forward block of LLM in a Flash: per token and layer, decide which neurons are
// active, make sure their bundles are in the layer's DRAM neuron cache (reading the missing
// ones from the pack with O_DIRECT while the cached ones are computed), and compute the FFN
// over those neurons only:
//
//   out = sum over active i of  act(gate_i . x) * (up_i . x) * down_i
//
// Deciding activity (section 3.1 of the paper):
//   kThreshold  the gate matrix is resident; gate = W_gate x is computed exactly and neuron i
//               is active where |act(gate_i)| > threshold (threshold 0 on a ReLU-gated model
//               is exact). The cache holds [up | down] of each neuron.
//   kPredictor  learned low-rank predictors (predictor.h) score every neuron from x; the
//               predicted ones (per position) are read whole and their gate is computed
//               exactly from the bundle, so the gate matrix need not be resident. The cache
//               holds [up | down | gate].
//   kDense      every neuron is active and the gate row comes from the bundle: the naive
//               baseline (everything read from disk each token) and the all-in-RAM check.
//               The cache holds [up | down | gate].
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flash/direct_io.h"
#include "flash/neuron_cache.h"
#include "flash/pack.h"
#include "flash/predictor.h"
#include "model/forward.h"

namespace skiff::flash {

struct FlashOptions {
  enum class Mode { kThreshold, kPredictor, kDense } mode = Mode::kThreshold;
  float threshold = 0.0f;
  // >= 0: instead of `threshold`, each layer's threshold is set on its first call (the
  // prompt) so that this fraction of the (position, neuron) gate values falls below it.
  float sparsity = -1.0f;
  int window = 4;  // neurons used by the last `window` tokens stay cached (>= 1)
  IoOptions io;
  // Reads merge across at most one skipped bundle (plus the unread tail of the previous
  // one): a fixed byte gap would read several unneeded bundles of a small model per merge.
  bool gap_one_bundle = true;
  const Predictors* predictors = nullptr;  // kPredictor: owned by the caller
  // kPredictor: also compute the exact gate from the resident matrix (not charged to the
  // budget, not timed) to count the predictor's recall in FlashStats.
  bool measure_recall = false;
};

// Accumulated over run() calls; per token = divide by tokens.
struct FlashStats {
  int64_t tokens = 0;           // positions through the last layer
  double io_wait_ms = 0;        // blocked waiting for reads (I/O not hidden behind compute)
  double memory_ms = 0;         // deciding activity, cache bookkeeping, submitting reads
  double compute_ms = 0;        // gate matmul, neuron FFN, reduction
  uint64_t bytes_read = 0;      // from the pack file, alignment and gaps included
  uint64_t bundle_bytes = 0;    // of those, the bundle bytes asked for (no alignment, gaps)
  int64_t cached = 0;           // neurons in the caches after each layer call, summed
  uint64_t reads = 0;
  int64_t active = 0;           // active (layer, neuron) pairs, summed over calls
  int64_t considered = 0;       // (layer, neuron) pairs looked at
  int64_t hits = 0, misses = 0; // active neurons found in / missing from the cache
  // measure_recall: (position, layer, neuron) triples truly active, and how many of those
  // the predictor chose. recall = predicted_true / true_active.
  int64_t true_active = 0, predicted_true = 0;

  FlashStats& operator+=(const FlashStats& o);
  FlashStats operator-(const FlashStats& o) const;  // the counts between two snapshots
};

// How the memory budget is spent (plan_memory).
struct FlashPlan {
  uint64_t budget = 0;         // 0: unlimited
  uint64_t resident = 0;       // weights kept in RAM (token embeddings excluded: see below)
  uint64_t context = 0;        // KV cache and scratch
  uint64_t io_buffers = 0;
  uint64_t cache = 0;          // all layers' neuron caches
  uint64_t minimum = 0;        // the smallest budget that works
  int capacity = 0;            // neurons cached per layer
  uint64_t slot_bytes = 0;     // bytes per cached neuron
};

// Bytes of the cached part of one bundle for a mode: [up|down] or [up|down|gate].
uint64_t cached_bundle_bytes(const PackHeader& header, FlashOptions::Mode mode);
// Weights the flash engine keeps in RAM: everything in resident.gguf except the token
// embedding table (rows are read through the mapping on demand, one per distinct token;
// counted when tied to the output), the gate matrices only in kThreshold mode, and the
// predictors in kPredictor mode.
uint64_t resident_weight_bytes(const Model& model, const FlashOptions& options);
// Bytes of the original dense model: what "50%" of --mem-budget refers to.
uint64_t dense_model_bytes(const Model& model, const PackHeader& header);
// Splits `budget` (0: unlimited, everything cached) among the fixed costs and the
// per-layer neuron caches. Throws Error naming the minimum when the budget cannot hold the
// resident set plus a minimal cache.
FlashPlan plan_memory(const Model& model, const PackHeader& header, const FlashOptions& options,
                      uint64_t budget, uint64_t context_bytes);

class FlashFfn final : public FfnProvider {
 public:
  // `model` is the pack's resident model. `capacity`: neurons cached per layer (plan).
  FlashFfn(const Model& model, const PackHeader& header, const std::string& bundles_file,
           const FlashOptions& options, int capacity);

  void run(Context& ctx, int layer, const float* x, int64_t T, float* out) override;

  // Reads every neuron of every layer into the caches (capacity must be the FFN width).
  void preload_all();
  void clear_caches();

  const FlashStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }
  const DirectReader& reader() const { return *reader_; }
  // Long-lived bytes held: neuron caches and the reader's buffers.
  uint64_t cache_bytes() const;
  const NeuronCache& cache(int layer) const { return caches_[static_cast<size_t>(layer)]; }
  float layer_threshold(int layer) const { return thresholds_[static_cast<size_t>(layer)]; }

 private:
  void decide(Context& ctx, int layer, const float* x, const float* gate, int64_t T);
  void count_recall(Context& ctx, int layer, const float* x, int64_t T);
  void compute(Context& ctx, int layer, const std::vector<int>& slots, const float* x,
               const float* gate, int64_t T);
  void submit_reads(int layer, const std::vector<int>& neurons);

  const Model& model_;
  PackHeader header_;
  FlashOptions options_;
  uint64_t read_bytes_;  // bytes read per neuron
  std::unique_ptr<DirectReader> reader_;
  std::vector<NeuronCache> caches_;
  std::vector<float> thresholds_;
  std::vector<bool> calibrated_;
  std::vector<int64_t> step_;  // calls per layer: the window's clock
  FlashStats stats_;
  // Scratch, sized once per T.
  std::vector<float> gate_;       // [T][ffn] (kThreshold; kPredictor: scores)
  std::vector<uint8_t> chosen_;   // [T][ffn] (kPredictor): predicted active at position t
  std::vector<float> hidden_;     // predictor scratch
  std::vector<float> truth_gate_; // measure_recall: the exact gate
  std::vector<float> partial_;    // [threads][T][dim]
  std::vector<int> active_, hits_, misses_;
  std::vector<ReadRequest> requests_;
};

}  // namespace skiff::flash

// A loaded LLaMA-family model: hyper-parameters, weight views and tokenizer. Weights are
// views into the memory-mapped file when its layout allows (GGUF), or into buffers the model
// owns (llama2.c checkpoints, whose tensors are stored in another order).
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "io/gguf.h"
#include "kernels/ops.h"
#include "kernels/repack.h"
#include "tensor/tensor.h"
#include "tokenizer/tokenizer.h"

namespace skiff {

// The gate's nonlinearity in the feed-forward block: SiLU (LLaMA's SwiGLU) or ReLU
// (ReLU-gated models are exactly sparse: LLM in a Flash). GGUF key "skiff.ffn_activation".
enum class FfnActivation { kSilu, kRelu };

// act(g): max(g, 0) or g * sigmoid(g) (ops.h's swiglu / reglu apply it to whole rows).
inline float apply_ffn_activation(FfnActivation a, float g) {
  if (a == FfnActivation::kRelu) return g > 0.0f ? g : 0.0f;
  return g / (1.0f + std::exp(-g));
}

// RoPE frequency scaling (llama.cpp's rope.scaling.* keys, Hugging Face's rope_scaling).
enum class RopeScalingType { kNone, kLinear, kYarn, kLlama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  float factor = 1.0f;           // context extension factor (linear, YaRN, llama3)
  int original_context = 0;      // context the model was pre-trained with (YaRN, llama3)
  float low_freq_factor = 1.0f;  // llama3
  float high_freq_factor = 4.0f; // llama3
  float beta_fast = 32.0f;       // YaRN ramp, in rotations over the original context
  float beta_slow = 1.0f;
  float attn_factor = 0.0f;      // YaRN cos/sin scale; 0: 0.1 ln(factor) + 1
};

struct ModelConfig {
  std::string name;
  int dim = 0;           // embedding width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;    // grouped-query attention: n_heads is a multiple of n_kv_heads
  int head_dim = 0;      // usually dim / n_heads; GGUF attention.key_length, HF head_dim
  int ffn_dim = 0;       // SwiGLU hidden width
  int vocab_size = 0;
  int context_length = 0;
  int rope_dim = 0;      // rotated dims per head (<= head_dim)
  float rope_theta = 10000.0f;
  // GGUF "llama" files (and llama.cpp's converter) store q/k rows so that RoPE turns
  // consecutive pairs; Hugging Face checkpoints keep the rotate-half layout. skiff rotates
  // either in place (no copy of wq/wk at load); the GGUF writer permutes rows to interleaved.
  RopeLayout rope_layout = RopeLayout::kInterleaved;
  RopeScaling rope_scaling;
  // Per-pair divisors of the base frequencies (rope_dim / 2 values; GGUF rope_freqs.weight,
  // which Llama 3.1+ files carry instead of rope.scaling.type = llama3). Empty: all 1.
  std::vector<float> rope_freq_factors;
  float rms_eps = 1e-5f;
  FfnActivation ffn_activation = FfnActivation::kSilu;

  int kv_dim() const { return n_kv_heads * head_dim; }
  int q_dim() const { return n_heads * head_dim; }
  // Throws Error when the numbers cannot describe a model.
  void validate(const std::string& source) const;
};

struct LayerWeights {
  TensorView attn_norm, wq, wk, wv, wo;
  TensorView ffn_norm, ffn_gate, ffn_up, ffn_down;
  size_t nbytes() const;  // bytes of the layer's tensors as stored
};

struct Model {
  ModelConfig config;
  TensorView token_embd;   // [vocab rows][dim]
  TensorView output_norm;  // [dim]
  TensorView output;       // [vocab rows][dim]; the same as token_embd when tied
  bool tied_output = false;
  std::vector<LayerWeights> layers;
  std::unique_ptr<Tokenizer> tokenizer;

  std::string source;                       // file it came from
  std::string format;                       // "gguf", "llama2c" or "hf"
  std::optional<GgufFile> gguf;             // the parsed file, for GGUF models
  std::shared_ptr<MappedFile> file;         // keeps the mapping alive
  std::vector<std::shared_ptr<MappedFile>> shards;  // every mapped file (HF: each *.safetensors)
  std::vector<std::vector<float>> owned;    // weights copied out of the file (llama2c, F32 norms)
  std::vector<PackedBytes> packed;          // weights rearranged by pack_weights
  // Buffers that views point into and nothing above owns (an early-exit copy's quantized
  // matrices: decode/early_exit_copy.h).
  std::vector<std::shared_ptr<const void>> keep_alive;

  int64_t parameter_count() const;
  size_t weight_bytes() const;  // bytes of all weight tensors as stored
};

// How strict load_model_gguf is about which tensors must be present.
struct LoadOptions {
  // A flash pack's resident.gguf has no blk.N.ffn_up / ffn_down: with this set, missing ones
  // leave empty TensorViews (present ones are still shape-checked). The model then cannot run
  // the dense FFN; the flash path reads those rows from bundles.bin instead.
  bool ffn_up_down_optional = false;
  // pack_weights after loading (off for the flash engine, whose memory budget counts on
  // attention weights staying evictable file pages).
  bool pack_weights = true;
};

// Rearranges, once, the matmul weights that the active CPU path reads faster packed
// (kernels/repack.h: Q4_0, Q8_0, F16 and BF16 on AVX-512; matrices in parallel) and drops the
// file pages each was read from as soon as it is packed, so the model's memory stays about one
// copy. The copies are anonymous memory, which (unlike a file
// mapping) cannot be evicted: when they would not fit in `headroom` bytes (default: what the
// machine and this process's cgroup have available, less 512 MiB), nothing is packed and the
// model runs from the mapping as before (a model larger than memory still runs). SKIFF_PACK=0
// in the environment turns packing off (A/B). Returns the bytes packed.
size_t pack_weights(Model& model);
size_t pack_weights(Model& model, size_t headroom);
// Only layers [first_layer, last_layer) and, with `head`, the output matrix: what a pipeline
// stage runs (docs/DISTRIBUTED.md), so that each rank holds about its share of the weights.
size_t pack_weights(Model& model, size_t headroom, int first_layer, int last_layer, bool head);

// Bytes this process can still allocate: MemAvailable, and below its cgroup's memory.max
// less memory.current when there is one (cgroup v2). SIZE_MAX when neither can be read.
size_t memory_headroom();

// Loads a GGUF file or a llama2.c checkpoint (detected from the first bytes). llama2.c needs
// a tokenizer.bin: `tokenizer_path`, or tokenizer.bin / tok<vocab>.bin beside the model.
// `residency`: map the file (default) or copy it into huge pages (see MappedFile).
// `pack`: pack_weights after loading a GGUF file (pipeline stages load unpacked and pack
// only their own layers once the plan is known: pack_weights' layer range).
std::unique_ptr<Model> load_model(const std::string& path, const std::string& tokenizer_path = "",
                                  Residency residency = Residency::kMapped, bool pack = true);
std::unique_ptr<Model> load_model_gguf(std::shared_ptr<MappedFile> file);
// A Hugging Face checkpoint directory: config.json, *.safetensors (one, or sharded with
// model.safetensors.index.json), tokenizer.json (+ tokenizer_config.json,
// generation_config.json). Tensors are mapped, not copied (F32, F16, BF16).
std::unique_ptr<Model> load_model_hf(const std::string& dir, Residency residency = Residency::kMapped);
std::unique_ptr<Model> load_model_gguf(std::shared_ptr<MappedFile> file,
                                       const LoadOptions& options);

// GGUF value of "skiff.ffn_activation" for `a` ("silu", "relu"), and back (nullopt if unknown).
const char* ffn_activation_name(FfnActivation a);
std::optional<FfnActivation> parse_ffn_activation(const std::string& name);

}  // namespace skiff

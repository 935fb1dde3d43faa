// Random-weight LLaMA models of a chosen shape, for benchmarks and tests: `skiff synth`.
// Matrices are N(0, 0.02) (so activations stay finite through many layers), norms are 1,
// and the vocabulary (tokenizer.ggml.* keys) is copied from a vocabulary-only GGUF such as
// llama.cpp's ggml-vocab-llama-spm.gguf (LLaMA-2, 32000 tokens).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "tensor/dtype.h"

namespace skiff {

struct SynthShape {
  std::string name;
  int dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, ffn_dim = 0, vocab_size = 0;
  int context_length = 0;
};

// "tinyllama" (dim 2048, 16 layers, 32 heads, 8 KV heads, FFN 5632, vocab 32000, context 2048),
// "small" (dim 512, 8 layers, 8/4 heads, FFN 1408) and "tiny" (dim 64, 2 layers, 4/2 heads,
// FFN 192, context 256), all with the 32000-token vocabulary. nullopt for other names.
std::optional<SynthShape> synth_shape(std::string_view name);
std::string synth_shape_names();  // "tinyllama, small, tiny"

struct SynthOptions {
  SynthShape shape;
  DType type = DType::F16;  // of the matrices; rows not a multiple of its block stay F32
  uint64_t seed = 1;
  std::string vocab_path;   // GGUF with tokenizer.ggml.*; its token count must be vocab_size
  int threads = 0;
};

// Writes the model to `path` (atomically). progress(done, total) after each tensor.
void write_synthetic_model(const SynthOptions& options, const std::string& path,
                           const std::function<void(int, int)>& progress = {});

}  // namespace skiff

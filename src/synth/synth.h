// Random-weight LLaMA models of a chosen shape, for benchmarks and tests: `skiff synth`.
// Matrices are N(0, 0.02) (so activations stay finite through many layers), norms are 1,
// and the vocabulary (tokenizer.ggml.* keys and tokenizer.chat_template) is copied from a vocabulary-only GGUF such as
// llama.cpp's ggml-vocab-llama-spm.gguf (LLaMA-2, 32000 tokens).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "io/quant_scheme.h"
#include "model/model.h"
#include "tensor/dtype.h"

namespace skiff {

struct SynthShape {
  std::string name;
  int dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, ffn_dim = 0, vocab_size = 0;
  int context_length = 0;
  float rope_theta = 10000.0f;
  bool tied = false;           // no output.weight: the head reuses token_embd
  RopeScaling rope_scaling;    // kLlama3: written as rope_freqs.weight, as llama.cpp does
};

// A shape with LLaMA-2 defaults (rope base 10000, separate head, no scaling).
SynthShape llama_shape(std::string name, int dim, int n_layers, int n_heads, int n_kv_heads, int ffn_dim,
                       int vocab_size, int context_length);

// "tinyllama" (dim 2048, 16 layers, 32 heads, 8 KV heads, FFN 5632, vocab 32000, context 2048),
// "small" (dim 512, 8 layers, 8/4 heads, FFN 1408) and "tiny" (dim 64, 2 layers, 4/2 heads,
// FFN 192, context 256), all with the 32000-token vocabulary; "llama3-1b" (Llama-3.2-1B:
// dim 2048, 16 layers, 32/8 heads, FFN 8192, tied head, llama3 RoPE scaling x32) and
// "llama3-8b" (Llama-3.1-8B: dim 4096, 32 layers, 32/8 heads, FFN 14336, scaling x8), both
// with the 128256-token Llama-3 vocabulary, rope base 500000, context 131072. nullopt for
// other names.
std::optional<SynthShape> synth_shape(std::string_view name);
std::string synth_shape_names();  // "tinyllama, small, tiny, llama3-1b, llama3-8b"

struct SynthOptions {
  SynthShape shape;
  DType type = DType::F16;  // of the matrices; rows not a multiple of its block stay F32
  std::optional<QuantScheme> scheme;  // when set, chooses each matrix's type instead (Q4_K_M)
  uint64_t seed = 1;
  std::string vocab_path;   // GGUF with tokenizer.ggml.*; its token count must be vocab_size
  int threads = 0;
  // The "planted early exit" benchmark setting: the attention output (attn_output) and FFN
  // down (ffn_down) matrices of layers >= planted_exit are multiplied by planted_scale before
  // they are quantized, so late layers write little into the residual stream and the exit at
  // layer planted_exit agrees often with the full model. 0: off.
  int planted_exit = 0;
  float planted_scale = 1.0f;
};

// Writes the model to `path` (atomically). progress(done, total) after each tensor.
void write_synthetic_model(const SynthOptions& options, const std::string& path,
                           const std::function<void(int, int)>& progress = {});

}  // namespace skiff

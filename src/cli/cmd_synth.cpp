// skiff synth: writes a random-weight LLaMA GGUF of a named shape (for benchmarks and tests),
// optionally marked ReLU-gated (skiff.ffn_activation = "relu") for the flash path's sparsity.
#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "io/export_gguf.h"
#include "synth/synth.h"

#ifndef SKIFF_DEFAULT_VOCAB
#define SKIFF_DEFAULT_VOCAB ""
#endif

namespace skiff::cli {

void register_synth(CLI::App& app) {
  struct Flags {
    std::string output, shape = "tinyllama", type = "f16", vocab;
    std::string activation = "silu";
    uint64_t seed = 1;
    int threads = 0;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("synth", "write a random-weight LLaMA GGUF of a given shape");
  cmd->add_option("-o,--output", flags->output, "output GGUF file")->required();
  cmd->add_option("--shape", flags->shape, "tinyllama (default), small, tiny, llama3-1b or llama3-8b");
  cmd->add_option("--type", flags->type, "matrix type: f16 (default), f32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q6_K, or "
                  "q4_k_m (llama.cpp's mix: Q4_K, Q6_K for the head and some attn_v / ffn_down)");
  cmd->add_option("--vocab", flags->vocab, "GGUF holding the vocabulary (default from ../shared/models: LLaMA-2's, Llama-3's for llama3-*)");
  cmd->add_option("--activation", flags->activation,
                  "FFN gate nonlinearity: silu (default, LLaMA) or relu (e.g. --shape tiny)");
  cmd->add_option("--seed", flags->seed, "random seed (default 1)");
  cmd->add_option("-t,--threads", flags->threads, "threads (default: one per core)")->check(CLI::Range(0, 1024));
  cmd->callback([flags] {
    SynthOptions o;
    std::optional<SynthShape> shape = synth_shape(flags->shape);
    if (!shape) fail("unknown shape '{}' (known: {})", flags->shape, synth_shape_names());
    std::optional<QuantScheme> scheme = parse_quant_scheme(flags->type);
    if (!scheme) fail("unknown tensor type '{}'", flags->type);
    std::optional<FfnActivation> activation = parse_ffn_activation(flags->activation);
    if (!activation) fail("unknown activation '{}' (silu or relu)", flags->activation);
    if (flags->vocab.empty())
      flags->vocab = flags->shape.starts_with("llama3") ? SKIFF_LLAMA3_VOCAB : SKIFF_DEFAULT_VOCAB;
    o.shape = *shape;
    o.type = scheme->base;
    o.scheme = *scheme;
    o.seed = flags->seed;
    o.vocab_path = flags->vocab;
    o.threads = flags->threads;
    write_synthetic_model(o, flags->output, [](int done, int total) { draw_progress("synth", done, total); });
    if (*activation == FfnActivation::kRelu) {
      // Rewrites the file with the key added (atomically; the mapping keeps the old inode).
      copy_gguf(GgufFile::open(flags->output), flags->output, {},
                {{"skiff.ffn_activation", GgufValue::str("relu")}});
    }
    std::fprintf(stderr, "wrote %s (%s, %s, %s)\n", flags->output.c_str(), flags->shape.c_str(),
                 flags->type.c_str(), flags->activation.c_str());
  });
}

}  // namespace skiff::cli

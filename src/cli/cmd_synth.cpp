// skiff synth: writes a random-weight LLaMA GGUF of a named shape (for benchmarks and tests),
// optionally marked ReLU-gated (skiff.ffn_activation = "relu") for the flash path's sparsity.
#include <cstdio>

#include <fmt/format.h>

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
    int planted_exit = 0;
    float planted_scale = 0.03f;
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
  CLI::Option* planted_exit = cmd->add_option(
      "--planted-exit", flags->planted_exit,
      "planted early exit E (1..layers-1): scale attn_output and ffn_down of layers >= E by --planted-scale, "
      "so the exit at layer E agrees often with the full model (a self-speculation benchmark setting)");
  CLI::Option* planted_scale = cmd->add_option("--planted-scale", flags->planted_scale,
                                               "with --planted-exit: the scale S > 0 (default 0.03)");
  cmd->callback([flags, planted_exit, planted_scale] {
    if (planted_scale->count() > 0 && planted_exit->count() == 0) fail("--planted-scale needs --planted-exit");
    SynthOptions o;
    std::optional<SynthShape> shape = synth_shape(flags->shape);
    if (!shape) fail("unknown shape '{}' (known: {})", flags->shape, synth_shape_names());
    std::optional<QuantScheme> scheme = parse_quant_scheme(flags->type);
    if (!scheme) fail("unknown tensor type '{}'", flags->type);
    std::optional<FfnActivation> activation = parse_ffn_activation(flags->activation);
    if (!activation) fail("unknown activation '{}' (silu or relu)", flags->activation);
    if (flags->vocab.empty())
      flags->vocab = flags->shape.starts_with("llama3") ? SKIFF_LLAMA3_VOCAB : SKIFF_DEFAULT_VOCAB;
    if (planted_exit->count() > 0 && (flags->planted_exit < 1 || flags->planted_exit >= shape->n_layers))
      fail("--planted-exit {} must be in 1..{} (the shape '{}' has {} layers)", flags->planted_exit,
           shape->n_layers - 1, shape->name, shape->n_layers);
    o.shape = *shape;
    o.type = scheme->base;
    o.scheme = *scheme;
    o.seed = flags->seed;
    o.vocab_path = flags->vocab;
    o.threads = flags->threads;
    o.planted_exit = flags->planted_exit;
    o.planted_scale = flags->planted_scale;
    write_synthetic_model(o, flags->output, [](int done, int total) { draw_progress("synth", done, total); });
    if (*activation == FfnActivation::kRelu) {
      // Rewrites the file with the key added (atomically; the mapping keeps the old inode).
      copy_gguf(GgufFile::open(flags->output), flags->output, {},
                {{"skiff.ffn_activation", GgufValue::str("relu")}});
    }
    std::string planted;
    if (flags->planted_exit > 0)
      planted = fmt::format(", planted exit {} scale {}", flags->planted_exit, flags->planted_scale);
    std::fprintf(stderr, "wrote %s (%s, %s, %s%s)\n", flags->output.c_str(), flags->shape.c_str(),
                 flags->type.c_str(), flags->activation.c_str(), planted.c_str());
  });
}

}  // namespace skiff::cli

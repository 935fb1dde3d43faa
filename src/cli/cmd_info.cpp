// skiff info: what a model file holds and what running it costs.
#include <cstdio>

#include <fmt/format.h>

#include "bench/system.h"
#include "cli/commands.h"
#include "cli/common.h"

namespace skiff::cli {
namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.2f} {}", b, units[u]);
}

void print_tensor(const TensorView& t) {
  std::printf("  %-28s %-6s [%lld, %lld] %zu bytes\n", t.name.c_str(),
              std::string(dtype_name(t.type)).c_str(), static_cast<long long>(t.cols),
              static_cast<long long>(t.rows), t.nbytes());
}

}  // namespace

void register_info(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    int context = 0;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("info", "print a model's metadata, tensors and memory needs");
  add_model_flags(cmd, flags->model, false);
  cmd->add_option("-c,--ctx-size", flags->context, "context length for the memory estimate (default: the model's)");
  cmd->callback([flags] {
    std::unique_ptr<Model> model = open_model(flags->model);
    const ModelConfig& c = model->config;
    std::printf("file: %s (%s)\n", model->source.c_str(), model->format.c_str());
    if (model->gguf) {
      std::printf("gguf version %u, alignment %llu, %zu metadata keys, %zu tensors\n", model->gguf->version(),
                  static_cast<unsigned long long>(model->gguf->alignment()), model->gguf->metadata().size(),
                  model->gguf->tensors().size());
      std::printf("metadata:\n");
      for (const auto& [key, value] : model->gguf->metadata())
        std::printf("  %s = %s\n", key.c_str(), value.to_display_string().c_str());
    }
    std::printf("hyper-parameters:\n");
    std::printf("  dim %d, layers %d, heads %d, kv heads %d, head dim %d, ffn %d, vocab %d\n", c.dim,
                c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size);
    std::printf("  context %d, rope dims %d, rope base %g, rms eps %g, output %s\n", c.context_length,
                c.rope_dim, c.rope_theta, c.rms_eps, model->tied_output ? "tied to token_embd" : "separate");
    std::printf("tensors:\n");
    print_tensor(model->token_embd);
    print_tensor(model->output_norm);
    if (!model->tied_output) print_tensor(model->output);
    for (const LayerWeights& l : model->layers) {
      for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.ffn_gate,
                                  &l.ffn_up, &l.ffn_down})
        print_tensor(*t);
    }
    int ctx = flags->context > 0 ? flags->context : c.context_length;
    double weights = static_cast<double>(model->weight_bytes());
    double kv = 2.0 * c.n_layers * ctx * c.kv_dim() * sizeof(float);
    double scratch = 4.0 * (4.0 * c.dim + 2.0 * c.ffn_dim + c.vocab_size);
    std::printf("parameters: %lld\n", static_cast<long long>(model->parameter_count()));
    std::printf("memory: weights %s (memory-mapped) + kv cache %s at context %d + scratch %s = %s\n",
                human_bytes(weights).c_str(), human_bytes(kv).c_str(), ctx, human_bytes(scratch).c_str(),
                human_bytes(weights + kv + scratch).c_str());
    // Weights are used in place from the mapping: only what has been read is resident.
    std::printf("resident: %s now (%s of the mapped file paged in)\n",
                human_bytes(static_cast<double>(resident_bytes())).c_str(),
                human_bytes(model->file ? static_cast<double>(resident_bytes_of(model->file->data(), model->file->size()))
                                        : 0.0).c_str());
  });
}

}  // namespace skiff::cli

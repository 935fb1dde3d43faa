// skiff dump-logits: raw logits for given token ids, for reference tests and debugging.
// The first --prefill tokens go through one batched forward, the rest one at a time.
#include <cstdio>
#include <sstream>

#include "base/error.h"
#include "base/mapped_file.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/stage_flags.h"
#include "model/forward.h"

namespace skiff::cli {

void register_dump_logits(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    std::string tokens, output;
    int prefill = 0;
    int exit_layer = 0;
    StageFlags stages;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("dump-logits", "write float32 logits [tokens][vocab] for token ids");
  add_model_flags(cmd, flags->model);
  cmd->add_option("--tokens", flags->tokens, "token ids, space-separated (no BOS is added)")->required();
  cmd->add_option("--prefill", flags->prefill, "tokens in the first batch (default: all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--exit-layer", flags->exit_layer, "run layers 0..K-1 only, then the head (default: all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("-o,--output", flags->output, "output file")->required();
  add_stage_flags(cmd, flags->stages);
  cmd->callback([flags, cmd] {
    flags->model.pack = !stages_requested(*cmd);  // stages pack only their own layers
    std::unique_ptr<Model> model = open_model(flags->model);
    // Pipeline stages (mpirun): rank 0 writes the logits, the others run their layers.
    std::unique_ptr<dist::Pipeline> pipeline = start_pipeline(flags->stages, *cmd, *model, 0, flags->model.threads, 0);
    if (pipeline && !pipeline->head()) {
      pipeline->serve();
      return;
    }
    const ModelConfig& c = model->config;
    std::vector<int32_t> ids;
    std::istringstream in(flags->tokens);
    for (std::string word; in >> word;) {
      try {
        size_t used = 0;
        long v = std::stol(word, &used);
        if (used != word.size() || v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument(word);
        ids.push_back(static_cast<int32_t>(v));
      } catch (const std::logic_error&) {
        fail("--tokens: '{}' is not a token id", word);
      }
    }
    if (ids.empty()) fail("--tokens: no token ids given");
    int layers = flags->exit_layer > 0 ? flags->exit_layer : c.n_layers;
    if (layers > c.n_layers) fail("--exit-layer {} exceeds the model's {} layers", layers, c.n_layers);
    const int64_t n = static_cast<int64_t>(ids.size());
    int64_t first_batch = flags->prefill > 0 ? std::min<int64_t>(flags->prefill, n) : n;

    std::unique_ptr<Context> owned_ctx =
        pipeline ? pipeline->make_context() : std::make_unique<Context>(*model, 0, flags->model.threads);
    Context& ctx = *owned_ctx;
    std::vector<float> logits(static_cast<size_t>(n) * c.vocab_size);
    std::vector<float> hidden;
    auto run = [&](int64_t begin, int64_t count) {
      hidden.resize(static_cast<size_t>(count) * c.dim);
      embed(*model, std::span<const int32_t>(ids).subspan(begin, count), hidden.data());
      forward(ctx, hidden.data(), count, 0, layers);
      compute_logits(ctx, hidden.data(), count, &logits[static_cast<size_t>(begin) * c.vocab_size]);
    };
    run(0, first_batch);
    for (int64_t t = first_batch; t < n; ++t) run(t, 1);
    write_file_atomically(flags->output, std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(logits.data()), logits.size() * sizeof(float)));
    if (pipeline) std::fprintf(stderr, "%s\n", pipeline->finish(n).c_str());
  });
}

}  // namespace skiff::cli

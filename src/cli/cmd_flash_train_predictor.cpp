// skiff flash-train-predictor: learns the low-rank activity predictors of a flash pack
// (flash/predictor_train.h) from the activations the model produces on a text file, reports
// recall and precision per layer, and writes PACK/predictors.gguf for `--flash-predict`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "flash/flash_run.h"
#include "flash/predictor_train.h"
#include "kernels/matmul.h"

namespace skiff::cli {
namespace {

// --rank: one rank for every layer, or a comma-separated rank per layer.
std::vector<int> parse_ranks(const std::string& text, int n_layers) {
  std::vector<int> ranks;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1 || v > 65536)
      fail("--rank {}: expected a rank (1..65536) or one per layer, comma-separated", text);
    ranks.push_back(static_cast<int>(v));
    start = comma + 1;
  }
  if (ranks.size() == 1) ranks.assign(static_cast<size_t>(n_layers), ranks[0]);
  if (static_cast<int>(ranks.size()) != n_layers)
    fail("--rank {}: {} ranks for a model of {} layers (give one, or one per layer)", text, ranks.size(), n_layers);
  return ranks;
}

}  // namespace

void register_flash_train_predictor(CLI::App& app) {
  struct Flags {
    std::string pack, data, output, budget, rank = "64", init = "gate";
    int64_t samples = 16384;
    int context = 256;
    int threads = 0;
    float label_threshold = 0.0f;
    flash::PredictorTrainOptions train;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand(
      "flash-train-predictor",
      "train low-rank FFN activity predictors for a flash pack: PACK --data FILE (writes PACK/predictors.gguf)");
  cmd->add_option("pack", f->pack, "flash pack folder (skiff flash-pack)")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--data", f->data, "text whose activations train the predictors")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--output", f->output, "predictor file (default: PACK/predictors.gguf)");
  cmd->add_option("--rank", f->rank,
                  "rank of the predictors: one for every layer or one per layer, e.g. 32,32,64,64 (default 64, "
                  "at most the model width)");
  cmd->add_option("--samples", f->samples, "token positions collected per layer (default 16384)")
      ->check(CLI::Range(int64_t{64}, int64_t{1} << 32));
  cmd->add_option("--epochs", f->train.epochs, "passes over the training samples (default 10)")->check(CLI::Range(1, 10000));
  cmd->add_option("--batch", f->train.batch, "samples per Adam step (default 256)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--lr", f->train.lr, "Adam learning rate (default 2e-3)")->check(CLI::PositiveNumber);
  cmd->add_option("--target-recall", f->train.target_recall,
                  "each layer's cutoff keeps at least this fraction of active neurons on calibration samples (default 0.99)")
      ->check(CLI::Range(0.5, 1.0));
  cmd->add_option("--label-threshold", f->label_threshold,
                  "a neuron counts as active where |act(gate)| > this (default 0: exact for ReLU models)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-c,--ctx-size", f->context, "tokens per forward pass over the text (default 256)")->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--mem-budget", f->budget, "memory budget while collecting (default: unlimited)");
  cmd->add_option("--init", f->init,
                  "gate: start from the best rank-r approximation of the gate matrix (default); random")
      ->check(CLI::IsMember({"gate", "random"}));
  cmd->add_option("--seed", f->train.seed, "seed for initialization and shuffling");
  cmd->add_option("-t,--threads", f->threads, "threads (default: one per core)");
  cmd->callback([f] {
    const auto started = std::chrono::steady_clock::now();
    const int threads = f->threads > 0 ? f->threads : ThreadPool::default_thread_count();
    flash::LoadedPack pack = flash::load_pack(f->pack);
    const std::string dir = pack.dir;
    const Model& resident = *pack.model;
    const ModelConfig c = resident.config;
    if (f->context > c.context_length)
      fail("--ctx-size {} exceeds the model's context length {}", f->context, c.context_length);
    const std::vector<int> ranks = parse_ranks(f->rank, c.n_layers);
    const std::vector<int32_t> tokens = resident.tokenizer->encode(read_text_file(f->data), true);

    // Every neuron read from the bundles (kept cached when the budget allows), the gate for
    // the labels from the resident matrix.
    flash::FlashOptions dense;
    dense.mode = flash::FlashOptions::Mode::kDense;
    auto run = flash::open_flash(std::move(pack), dense, f->budget, f->context, f->context, threads);
    flash::ActivationCollector collector(run->model(), *run->ffn, f->label_threshold, f->samples);
    Context ctx(run->model(), f->context, threads);
    ctx.set_ffn_provider(&collector);
    std::vector<float> hidden(static_cast<size_t>(f->context) * c.dim);
    const int64_t chunks = static_cast<int64_t>(tokens.size()) / f->context;
    const int64_t needed = (f->samples + f->context - 1) / f->context;
    if (chunks < needed)
      fail("{} has {} tokens: {} chunks of {}, but --samples {} needs {} (use more text or fewer samples)", f->data,
           tokens.size(), chunks, f->context, f->samples, needed);
    for (int64_t i = 0; i < needed; ++i) {
      std::vector<int32_t> chunk(tokens.begin() + i * f->context, tokens.begin() + (i + 1) * f->context);
      chunk[0] = resident.tokenizer->bos();
      ctx.cache().clear();
      embed(run->model(), chunk, hidden.data());
      forward(ctx, hidden.data(), f->context, 0, c.n_layers);
      draw_progress("collect", static_cast<int>(i + 1), static_cast<int>(needed));
    }

    flash::Predictors predictors;
    predictors.dim = c.dim;
    predictors.ffn_dim = c.ffn_dim;
    predictors.label_threshold = f->label_threshold;
    std::printf("| layer | rank | active | predicted | recall | precision | loss |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    double recall_sum = 0, predicted_sum = 0, active_sum = 0;
    for (int l = 0; l < c.n_layers; ++l) {
      flash::LayerTrainReport report;
      flash::PredictorTrainOptions o = f->train;
      o.seed = f->train.seed + static_cast<uint64_t>(l);
      o.rank = ranks[static_cast<size_t>(l)];
      std::vector<float> gate;
      if (f->init == "gate") {
        const TensorView& w = run->model().layers[static_cast<size_t>(l)].ffn_gate;
        gate.resize(static_cast<size_t>(c.ffn_dim) * c.dim);
        for (int i = 0; i < c.ffn_dim; ++i) dequantize_tensor_row(w, i, gate.data() + static_cast<size_t>(i) * c.dim);
      }
      predictors.layers.push_back(flash::train_layer_predictor(collector.samples()[static_cast<size_t>(l)], c.dim,
                                                               c.ffn_dim, o, ctx.pool(), &report,
                                                               gate.empty() ? nullptr : gate.data()));
      const flash::LayerPredictor& p = predictors.layers.back();
      std::printf("| %d | %d | %.1f%% | %.1f%% | %.2f%% | %.1f%% | %.4f |\n", l, p.rank, 100.0 * report.active_rate,
                  100.0 * report.predicted_rate, 100.0 * p.recall, 100.0 * p.precision, report.final_loss);
      std::fflush(stdout);
      recall_sum += p.recall;
      predicted_sum += report.predicted_rate;
      active_sum += report.active_rate;
    }
    const std::string out = f->output.empty() ? flash::predictors_path(dir) : f->output;
    flash::save_predictors(predictors, out);
    const double L = c.n_layers;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("wrote %s (%.1f KiB): mean over layers active %.1f%%, predicted %.1f%%, recall %.2f%% "
                "(held-out text positions), %.1f s\n",
                out.c_str(), static_cast<double>(predictors.bytes()) / 1024.0, 100.0 * active_sum / L,
                100.0 * predicted_sum / L, 100.0 * recall_sum / L, seconds);
    if (active_sum / L > 0.9)
      std::fprintf(stderr, "note: %.0f%% of neurons are active at --label-threshold %g; a SiLU model needs a "
                   "larger threshold (or ReLU-fication: skiff train --activation relu) to be sparse\n",
                   100.0 * active_sum / L, static_cast<double>(f->label_threshold));
  });
}

}  // namespace skiff::cli

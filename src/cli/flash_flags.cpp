#include "cli/flash_flags.h"

#include <fmt/format.h>

#include "base/error.h"

namespace skiff::cli {

void add_flash_flags(CLI::App* cmd, FlashFlags& f) {
  cmd->add_option("--flash", f.pack, "run from a flash pack (skiff flash-pack): FFN neurons stream from disk")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--mem-budget", f.budget, "flash: memory budget, e.g. 850M, 1.5G or 50% of the model (default: unlimited)");
  cmd->add_option("--window", f.window, "flash: keep neurons used by the last K tokens cached (default 4)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--flash-threshold", f.threshold, "flash: a neuron is active where |act(gate)| > this (default 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--flash-sparsity", f.sparsity, "flash: per-layer threshold set on the prompt for this fraction of inactive neurons")
      ->check(CLI::Range(0.0, 0.999));
  cmd->add_flag("--flash-predict", f.predict,
                "flash: decide active neurons with the pack's learned predictors (skiff flash-train-predictor) "
                "instead of the resident gate");
  cmd->add_option("--io", f.io, "flash: io_uring, threads or auto (default)")
      ->check(CLI::IsMember({"auto", "io_uring", "threads"}));
  cmd->add_option("--io-gap", f.io_gap,
                  "flash: bundles at most this many bytes apart on disk are read in one request, gap included "
                  "(default: one bundle; 0: only adjacent ones)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_option("--io-depth", f.io_depth, "flash: reads in flight, each with its bounce buffer (default 32)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--io-max-read", f.io_max_read,
                  "flash: largest coalesced read and bounce buffer in bytes (default 262144; a small model "
                  "under a small budget wants less)")
      ->check(CLI::Range(size_t{4096}, size_t{1} << 26));
  cmd->add_flag("--no-direct", f.buffered, "flash: read through the page cache instead of O_DIRECT");
}

flash::FlashOptions flash_options(const FlashFlags& f, const CLI::App& cmd) {
  const char* flash_only[] = {"--mem-budget", "--window", "--flash-threshold", "--flash-sparsity",
                              "--flash-predict", "--io", "--io-gap", "--io-depth", "--io-max-read",
                              "--no-direct"};
  if (f.pack.empty()) {
    for (const char* name : flash_only)
      if (cmd.count(name) > 0) fail("{} needs --flash PACK", name);
  }
  if (cmd.count("--flash-threshold") > 0 && cmd.count("--flash-sparsity") > 0)
    fail("give --flash-threshold or --flash-sparsity, not both");
  if (f.predict && (cmd.count("--flash-threshold") > 0 || cmd.count("--flash-sparsity") > 0))
    fail("--flash-predict decides activity with the predictors: drop --flash-threshold / --flash-sparsity");
  flash::FlashOptions o;
  if (f.predict) o.mode = flash::FlashOptions::Mode::kPredictor;
  o.threshold = f.threshold;
  o.sparsity = f.sparsity;
  o.window = f.window;
  o.io.direct = !f.buffered;
  o.gap_one_bundle = f.io_gap < 0;
  if (f.io_gap >= 0) o.io.max_gap = static_cast<size_t>(f.io_gap);
  o.io.queue_depth = f.io_depth;
  o.io.max_read = f.io_max_read;
  o.io.backend = f.io == "io_uring"  ? flash::IoOptions::Backend::kUring
                 : f.io == "threads" ? flash::IoOptions::Backend::kThreads
                                     : flash::IoOptions::Backend::kAuto;
  return o;
}

std::string describe_plan(const flash::FlashRun& run) {
  using flash::format_bytes;
  const flash::FlashPlan& p = run.plan;
  return fmt::format(
      "flash: budget {} (dense model {}): resident {}, context {}, neuron caches {} "
      "({} of {} neurons per layer), activity by {}, reads via {}{}; charged {}",
      p.budget ? format_bytes(p.budget) : std::string("unlimited"), format_bytes(run.dense_bytes),
      format_bytes(p.resident), format_bytes(p.context), format_bytes(p.cache), p.capacity,
      run.pack.header.ffn_dim,
      run.options.mode == flash::FlashOptions::Mode::kPredictor ? "learned predictors" : "gate threshold",
      run.ffn->reader().backend(),
      run.ffn->reader().direct() ? fmt::format(" (O_DIRECT, {}-byte aligned)", run.ffn->reader().alignment())
                                 : std::string(" (buffered)"),
      format_bytes(run.budget.used()));
}

std::string describe_stats(const flash::FlashStats& s) {
  const double n = s.tokens > 0 ? static_cast<double>(s.tokens) : 1.0;
  const int64_t lookups = s.hits + s.misses;
  return fmt::format(
      "flash per token: I/O wait {:.2f} ms, memory {:.2f} ms, compute {:.2f} ms, read {:.2f} MB, "
      "active {:.1f}%, cache hit rate {:.1f}%",
      s.io_wait_ms / n, s.memory_ms / n, s.compute_ms / n, static_cast<double>(s.bytes_read) / n / 1e6,
      s.considered ? 100.0 * static_cast<double>(s.active) / static_cast<double>(s.considered) : 0.0,
      lookups ? 100.0 * static_cast<double>(s.hits) / static_cast<double>(lookups) : 0.0) +
         (s.true_active > 0 ? fmt::format(", predictor recall {:.2f}%", 100.0 * static_cast<double>(s.predicted_true) /
                                                                             static_cast<double>(s.true_active))
                            : std::string());
}

}  // namespace skiff::cli

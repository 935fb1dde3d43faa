#include "flash/flash_run.h"

#include <algorithm>

#include "base/error.h"

namespace skiff::flash {

uint64_t context_bytes(const ModelConfig& c, int context_length, int max_batch, int threads) {
  const uint64_t ctx = static_cast<uint64_t>(context_length > 0 ? context_length : c.context_length);
  const uint64_t T = static_cast<uint64_t>(std::max(1, max_batch));
  const uint64_t kv = 2ull * static_cast<uint64_t>(c.n_layers) * ctx * static_cast<uint64_t>(c.kv_dim()) +
                      ctx * static_cast<uint64_t>(c.rope_dim);  // and the Context's RoPE table
  // Context::Scratch (norm, q, k, v, attn, proj, gate, up) + attention scores per thread.
  const uint64_t scratch = T * (3ull * c.dim + 2ull * c.q_dim() + 2ull * c.kv_dim() + 2ull * c.ffn_dim) +
                           static_cast<uint64_t>(threads) * ctx;
  // Hidden states and logits of the caller, the flash gate and per-thread partial sums.
  const uint64_t caller = T * (static_cast<uint64_t>(c.dim) + static_cast<uint64_t>(c.vocab_size));
  const uint64_t flash = T * static_cast<uint64_t>(c.ffn_dim) +
                         static_cast<uint64_t>(threads) * T * static_cast<uint64_t>(c.dim);
  return 4 * (kv + scratch + caller + flash);
}

std::unique_ptr<FlashRun> open_flash(LoadedPack pack, const FlashOptions& options,
                                     const std::string& budget_text, int context_length,
                                     int max_batch, int threads) {
  auto run = std::make_unique<FlashRun>();
  run->pack = std::move(pack);
  run->options = options;
  const Model& m = *run->pack.model;
  if (run->options.mode == FlashOptions::Mode::kPredictor && run->options.predictors == nullptr) {
    const PackHeader& h = run->pack.header;
    run->predictors = std::make_unique<Predictors>(
        load_predictors(predictors_path(run->pack.dir), h.n_layers, h.dim, h.ffn_dim));
    run->options.predictors = run->predictors.get();
  }
  run->dense_bytes = dense_model_bytes(m, run->pack.header);
  const uint64_t budget =
      budget_text.empty() || budget_text == "0" ? 0 : parse_mem_size(budget_text, run->dense_bytes);
  const uint64_t ctx_bytes = context_bytes(m.config, context_length, max_batch, threads);
  run->plan = plan_memory(m, run->pack.header, run->options, budget, ctx_bytes);
  run->budget = MemoryBudget(budget);
  run->budget.charge(run->plan.resident, "resident weights");
  run->budget.charge(ctx_bytes, "KV cache and scratch");
  run->ffn = std::make_unique<FlashFfn>(m, run->pack.header, run->pack.bundles_file, run->options,
                                        run->plan.capacity);
  run->budget.charge(run->ffn->cache_bytes(), "neuron caches and I/O buffers");
  return run;
}

}  // namespace skiff::flash

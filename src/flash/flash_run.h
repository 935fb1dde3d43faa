// Everything a flash run needs, assembled and accounted in one place: the pack's resident
// model, the memory plan, the budget with every long-lived allocation charged to it, and
// the FFN provider to hand to a Context.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "flash/budget.h"
#include "flash/flash_ffn.h"
#include "flash/pack.h"

namespace skiff::flash {

struct FlashRun {
  LoadedPack pack;
  FlashOptions options;
  FlashPlan plan;
  MemoryBudget budget;
  uint64_t dense_bytes = 0;  // the original model's weight bytes
  std::unique_ptr<Predictors> predictors;  // kPredictor: the pack's predictors.gguf
  std::unique_ptr<FlashFfn> ffn;

  const Model& model() const { return *pack.model; }
};

// Bytes of a Context's KV cache, RoPE table and scratch, plus logits and the flash engine's per-call
// buffers, for up to `max_batch` positions per forward with `threads` threads.
uint64_t context_bytes(const ModelConfig& config, int context_length, int max_batch, int threads);

// Runs a loaded pack (load_pack) under `budget_text` ("" or "0": unlimited; else a size or a
// percentage of the dense model, see parse_mem_size). Throws Error naming the minimum budget
// when it is too small. In kPredictor mode without options.predictors, the pack's
// predictors.gguf is loaded (an Error says how to make it when missing).
std::unique_ptr<FlashRun> open_flash(LoadedPack pack, const FlashOptions& options,
                                     const std::string& budget_text, int context_length,
                                     int max_batch, int threads);

}  // namespace skiff::flash

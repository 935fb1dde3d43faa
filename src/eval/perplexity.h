// Perplexity as llama.cpp's `llama-perplexity` computes it, so numbers are comparable: the
// text is tokenized once (with BOS), cut into chunks of n_ctx tokens, each chunk's first
// token replaced by BOS, and only the second half of each chunk is scored (every scored
// token sees at least n_ctx/2 tokens of context).
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "model/forward.h"
#include "model/model.h"

namespace skiff {

struct PerplexityResult {
  double ppl = 0;
  double ppl_err = 0;  // ppl * standard error of the mean negative log-likelihood
  int64_t tokens = 0;  // tokens scored
  int chunks = 0;
};

// progress(chunks_done, chunks_total) after each chunk. `ffn` (optional) replaces the dense
// FFN (a flash run); kv_types: the KV cache's element types. Throws Error when the text has fewer than 2 * n_ctx tokens or n_ctx is
// out of range.
PerplexityResult perplexity(const Model& model, std::span<const int32_t> tokens, int n_ctx,
                            int n_threads, int max_chunks,
                            const std::function<void(int, int)>& progress, FfnProvider* ffn = nullptr,
                            KvTypes kv_types = {});
// The same in a context the caller made (pipeline stages: src/dist/pipeline.h), whose
// context length must be at least n_ctx.
PerplexityResult perplexity(Context& ctx, std::span<const int32_t> tokens, int n_ctx, int max_chunks,
                            const std::function<void(int, int)>& progress);

}  // namespace skiff

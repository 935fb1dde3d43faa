#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/error.h"
#include "model/forward.h"

namespace skiff {

namespace {

void check_perplexity_args(const Model& model, std::span<const int32_t> tokens, int n_ctx, int max_chunks) {
  const ModelConfig& c = model.config;
  if (n_ctx < 8 || n_ctx > c.context_length)
    fail("perplexity context {} must be in 8..{} (the model's context length)", n_ctx, c.context_length);
  int chunks = static_cast<int>(static_cast<int64_t>(tokens.size()) / n_ctx);
  if (max_chunks > 0) chunks = std::min(chunks, max_chunks);
  if (chunks < 1)
    fail("the text has {} tokens, fewer than one chunk of {}", tokens.size(), n_ctx);
}

}  // namespace

PerplexityResult perplexity(const Model& model, std::span<const int32_t> tokens, int n_ctx,
                            int n_threads, int max_chunks,
                            const std::function<void(int, int)>& progress, FfnProvider* ffn,
                            KvTypes kv_types) {
  check_perplexity_args(model, tokens, n_ctx, max_chunks);
  Context ctx(model, n_ctx, n_threads, kv_types);
  ctx.set_ffn_provider(ffn);
  return perplexity(ctx, tokens, n_ctx, max_chunks, progress);
}

PerplexityResult perplexity(Context& ctx, std::span<const int32_t> tokens, int n_ctx, int max_chunks,
                            const std::function<void(int, int)>& progress) {
  const Model& model = ctx.model();
  const ModelConfig& c = model.config;
  check_perplexity_args(model, tokens, n_ctx, max_chunks);
  if (ctx.context_length() < n_ctx)
    fail("perplexity context {} is longer than the context's {}", n_ctx, ctx.context_length());
  int chunks = static_cast<int>(static_cast<int64_t>(tokens.size()) / n_ctx);
  if (max_chunks > 0) chunks = std::min(chunks, max_chunks);
  const int first = n_ctx / 2;
  std::vector<float> hidden(static_cast<size_t>(n_ctx) * c.dim);
  std::vector<float> logits(static_cast<size_t>(n_ctx) * c.vocab_size);
  double nll_sum = 0, nll2_sum = 0;
  int64_t count = 0;
  for (int i = 0; i < chunks; ++i) {
    std::vector<int32_t> chunk(tokens.begin() + static_cast<int64_t>(i) * n_ctx,
                               tokens.begin() + static_cast<int64_t>(i + 1) * n_ctx);
    chunk[0] = model.tokenizer->bos();
    ctx.cache().clear();
    embed(model, chunk, hidden.data());
    forward(ctx, hidden.data(), n_ctx, 0, c.n_layers);
    // Only the scored half needs the (vocabulary-wide) head.
    compute_logits(ctx, hidden.data() + static_cast<size_t>(first) * c.dim, n_ctx - 1 - first,
                   logits.data());
    for (int j = first; j < n_ctx - 1; ++j) {
      const float* row = &logits[static_cast<size_t>(j - first) * c.vocab_size];
      float max = *std::max_element(row, row + c.vocab_size);
      double sum = 0;
      for (int v = 0; v < c.vocab_size; ++v) sum += std::exp(static_cast<double>(row[v]) - max);
      double nll = std::log(sum) + max - row[chunk[static_cast<size_t>(j) + 1]];
      nll_sum += nll;
      nll2_sum += nll * nll;
      ++count;
    }
    if (progress) progress(i + 1, chunks);
  }
  PerplexityResult r;
  double mean = nll_sum / static_cast<double>(count);
  double var = nll2_sum / static_cast<double>(count) - mean * mean;
  r.ppl = std::exp(mean);
  r.ppl_err = count > 1 ? r.ppl * std::sqrt(std::max(0.0, var) / static_cast<double>(count - 1)) : 0;
  r.tokens = count;
  r.chunks = chunks;
  return r;
}

}  // namespace skiff

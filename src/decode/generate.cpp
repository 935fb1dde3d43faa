#include "decode/generate.h"

#include <chrono>
#include <vector>

#include "base/error.h"

namespace skiff {

namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

GenerateStats generate(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                       int max_tokens, const TokenCallback& on_token) {
  const Model& model = ctx.model();
  if (prompt.empty()) fail("the prompt is empty (not even a BOS token)");
  if (static_cast<int64_t>(prompt.size()) > ctx.context_length())
    fail("the prompt has {} tokens but the context holds only {}", prompt.size(), ctx.context_length());
  if (max_tokens < 0) fail("the number of tokens to generate must be >= 0");

  GenerateStats stats;
  stats.prompt_tokens = static_cast<int>(prompt.size());
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  auto start = std::chrono::steady_clock::now();
  std::vector<float> logits = eval_tokens(ctx, prompt);
  stats.prompt_seconds = seconds_since(start);

  start = std::chrono::steady_clock::now();
  while (stats.generated_tokens < max_tokens) {
    int32_t token = sampler.sample(logits, history);
    if (token == model.tokenizer->eos()) break;
    ++stats.generated_tokens;
    history.push_back(token);
    if (!on_token(token)) break;
    if (stats.generated_tokens == max_tokens) break;
    if (ctx.cache().length(0) >= ctx.context_length()) {
      stats.hit_context_limit = true;
      break;
    }
    logits = eval_tokens(ctx, std::span<const int32_t>(&token, 1));
  }
  stats.generate_seconds = seconds_since(start);
  return stats;
}

}  // namespace skiff

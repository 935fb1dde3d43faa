#include "decode/generate.h"

#include <chrono>
#include <vector>

#include "base/error.h"

namespace skiff {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// embed -> layers [0, last_layer) -> logits of the last position.
std::vector<float> eval_through(Context& ctx, std::span<const int32_t> tokens, int last_layer) {
  const ModelConfig& c = ctx.model().config;
  if (last_layer == c.n_layers) return eval_tokens(ctx, tokens);
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<float> hidden(static_cast<size_t>(T * c.dim));
  embed(ctx.model(), tokens, hidden.data());
  forward(ctx, hidden.data(), T, 0, last_layer);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  compute_logits(ctx, hidden.data() + (T - 1) * c.dim, 1, logits.data());
  return logits;
}

// `cached`: prompt tokens already in every layer's cache (checked by the caller).
GenerateStats generate_through(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                               int cached, int last_layer, int max_tokens, const TokenCallback& on_token) {
  GenerateStats stats;
  stats.prompt_tokens = static_cast<int>(prompt.size()) - cached;
  std::vector<int32_t> tokens(prompt.begin(), prompt.end());
  Emitter emitter(tokens, *ctx.model().tokenizer, ctx.context_length(), max_tokens, on_token,
                  stats);
  auto start = std::chrono::steady_clock::now();
  std::vector<float> logits = eval_through(ctx, prompt.subspan(static_cast<size_t>(cached)), last_layer);
  stats.prompt_seconds = seconds_since(start);

  start = std::chrono::steady_clock::now();
  while (!emitter.done()) {
    if (!emitter.push(sampler.sample(logits, tokens))) break;
    logits = eval_through(ctx, std::span<const int32_t>(&tokens.back(), 1), last_layer);
  }
  stats.generate_seconds = seconds_since(start);
  return stats;
}

}  // namespace

void check_generate_args(const Context& ctx, std::span<const int32_t> prompt, int max_tokens) {
  if (prompt.empty()) fail("the prompt is empty (not even a BOS token)");
  if (static_cast<int64_t>(prompt.size()) > ctx.context_length())
    fail("the prompt has {} tokens but the context holds only {}", prompt.size(), ctx.context_length());
  if (max_tokens < 0) fail("the number of tokens to generate must be >= 0");
  for (int l = 0; l < ctx.cache().n_layers(); ++l)
    if (ctx.cache().length(l) != 0) fail("generation needs a fresh context (layer {} holds {} positions)", l, ctx.cache().length(l));
}

int check_continue_args(const Context& ctx, std::span<const int32_t> prompt, int max_tokens) {
  if (static_cast<int64_t>(prompt.size()) > ctx.context_length())
    fail("the conversation has {} tokens but the context holds only {}", prompt.size(), ctx.context_length());
  if (max_tokens < 0) fail("the number of tokens to generate must be >= 0");
  const int cached = ctx.cache().length(0);
  for (int l = 1; l < ctx.cache().n_layers(); ++l)
    if (ctx.cache().length(l) != cached)
      fail("continuing needs every layer at one length (layer 0 holds {}, layer {} holds {})", cached, l,
           ctx.cache().length(l));
  if (cached >= static_cast<int>(prompt.size()))
    fail("continuing needs at least one token past the {} cached positions, got {} tokens", cached, prompt.size());
  return cached;
}

GenerateStats generate(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                       int max_tokens, const TokenCallback& on_token) {
  check_generate_args(ctx, prompt, max_tokens);
  return generate_through(ctx, sampler, prompt, 0, ctx.model().config.n_layers, max_tokens, on_token);
}

GenerateStats generate_continue(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                                int max_tokens, const TokenCallback& on_token) {
  const int cached = check_continue_args(ctx, prompt, max_tokens);
  return generate_through(ctx, sampler, prompt, cached, ctx.model().config.n_layers, max_tokens, on_token);
}

GenerateStats generate_early_exit(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                                  int exit_layer, int max_tokens, const TokenCallback& on_token) {
  const int L = ctx.model().config.n_layers;
  if (exit_layer < 1 || exit_layer > L)
    fail("the exit layer must be in 1..{} (the model has {} layers), got {}", L, L, exit_layer);
  check_generate_args(ctx, prompt, max_tokens);
  return generate_through(ctx, sampler, prompt, 0, exit_layer, max_tokens, on_token);
}

}  // namespace skiff

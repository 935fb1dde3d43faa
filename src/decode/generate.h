// Plain autoregressive generation: prefill the prompt in one batch, then one token at a time
// through all layers (or, for early exit, through layers 0..E-1 then the final norm + head).
// Speculative decoding (speculative.h) reuses the same stop rules (emitter.h) and sampler.
#pragma once

#include <cstdint>
#include <span>

#include "decode/emitter.h"
#include "model/forward.h"
#include "sample/sampler.h"

namespace skiff {

// Generates up to max_tokens after `prompt` (which must be non-empty and fit in the context;
// otherwise Error). Stops at EOS (not passed to the callback), at max_tokens, when the
// callback says so, or when the context is full (stats.hit_context_limit).
GenerateStats generate(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                       int max_tokens, const TokenCallback& on_token);

// The same with an early exit: every token runs layers [0, exit_layer) only, then the final
// norm and head. exit_layer must be in 1..L (L: plain decoding); otherwise Error.
GenerateStats generate_early_exit(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                                  int exit_layer, int max_tokens, const TokenCallback& on_token);

// Continues a sequence whose first tokens are already in the cache (a chat's earlier turns):
// every layer must hold the same number of positions, fewer than prompt.size(); only the
// rest of the prompt is prefilled (stats.prompt_tokens counts those). Otherwise as generate().
GenerateStats generate_continue(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                                int max_tokens, const TokenCallback& on_token);

// The checks every generation loop makes on its arguments (Error with a one-line message).
void check_generate_args(const Context& ctx, std::span<const int32_t> prompt, int max_tokens);
// The same for continuing (generate_continue); returns the cached positions.
int check_continue_args(const Context& ctx, std::span<const int32_t> prompt, int max_tokens);

}  // namespace skiff

// Plain autoregressive generation: prefill the prompt in one batch, then one token at a time
// through all layers. The drafting strategies of speculative decoding build on the same
// Context and sampler.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "model/forward.h"
#include "sample/sampler.h"

namespace skiff {

struct GenerateStats {
  int prompt_tokens = 0;
  double prompt_seconds = 0;
  int generated_tokens = 0;
  double generate_seconds = 0;
  bool hit_context_limit = false;
};

// Called with each generated token; return false to stop (e.g. a stop string matched).
using TokenCallback = std::function<bool(int32_t token)>;

// Generates up to max_tokens after `prompt` (which must be non-empty and fit in the context;
// otherwise Error). Stops at EOS (not passed to the callback), at max_tokens, when the
// callback says so, or when the context is full (stats.hit_context_limit).
GenerateStats generate(Context& ctx, Sampler& sampler, std::span<const int32_t> prompt,
                       int max_tokens, const TokenCallback& on_token);

}  // namespace skiff

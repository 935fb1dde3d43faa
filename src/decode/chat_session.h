// A conversation decoded turn after turn in one context, keeping the KV cache between turns.
// Each turn the caller renders and tokenizes the WHOLE conversation; the session keeps the
// longest prefix of it that the cache already holds (normally everything before the new
// user turn) and prefills only the rest. When the new tokens do not extend the old ones (the
// template re-rendered the reply differently, or dropped reasoning) the cache is cut back to
// the common prefix first. Invariant between turns: every layer holds the same number of
// positions, a prefix of tokens().
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "decode/drafter.h"
#include "decode/emitter.h"
#include "decode/speculative.h"
#include "model/forward.h"
#include "sample/sampler.h"

namespace skiff {

struct ChatTurnStats {
  int conversation_tokens = 0;  // the rendered conversation, before the reply
  int reused = 0;               // of those, already in the cache
  GenerateStats generation;     // generation.prompt_tokens: those prefilled this turn
  SpecStats spec;               // with a drafter
};

class ChatSession {
 public:
  explicit ChatSession(Context& ctx) : ctx_(ctx) {}

  // Generates the reply to `conversation` (the whole conversation so far, ending where the
  // reply begins; at most the context length, else Error before anything changes). With a
  // drafter (built for this context; self-speculation or lookup) decoding is speculative.
  ChatTurnStats reply(std::span<const int32_t> conversation, Sampler& sampler, int max_tokens,
                      const TokenCallback& on_token, Drafter* drafter = nullptr,
                      const SpecParams& spec = {});
  // Forgets the conversation and empties the cache.
  void reset();
  // The conversation and the reply's tokens (the end-of-generation token not included: the
  // template's rendering of the finished turn brings it next turn).
  const std::vector<int32_t>& tokens() const { return tokens_; }

 private:
  Context& ctx_;
  std::vector<int32_t> tokens_;
};

}  // namespace skiff

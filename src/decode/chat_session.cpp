#include "decode/chat_session.h"

#include <algorithm>

#include "base/error.h"
#include "decode/generate.h"

namespace skiff {

ChatTurnStats ChatSession::reply(std::span<const int32_t> conversation, Sampler& sampler,
                                 int max_tokens, const TokenCallback& on_token, Drafter* drafter,
                                 const SpecParams& spec) {
  if (conversation.empty()) fail("the conversation is empty");
  if (static_cast<int64_t>(conversation.size()) > ctx_.context_length())
    fail("the conversation has {} tokens but the context holds only {}", conversation.size(),
         ctx_.context_length());
  KvCache& cache = ctx_.cache();
  int cached = cache.length(0);
  for (int l = 1; l < cache.n_layers(); ++l) cached = std::min(cached, cache.length(l));
  const size_t limit =
      std::min({tokens_.size(), conversation.size() - 1, static_cast<size_t>(cached)});
  size_t common = 0;
  while (common < limit && tokens_[common] == conversation[common]) ++common;
  cache.truncate_all(static_cast<int>(common));

  ChatTurnStats stats;
  stats.conversation_tokens = static_cast<int>(conversation.size());
  stats.reused = static_cast<int>(common);
  tokens_.assign(conversation.begin(), conversation.end());
  TokenCallback record = [&](int32_t token) {
    tokens_.push_back(token);
    return on_token(token);
  };
  if (drafter) {
    stats.spec = generate_speculative_continue(ctx_, sampler, *drafter, conversation, max_tokens,
                                               spec, record);
    stats.generation = stats.spec.generation;
  } else {
    stats.generation = generate_continue(ctx_, sampler, conversation, max_tokens, record);
  }
  // Both loops leave every layer at one length (the newest token not yet run unless the
  // reply ended at EOS); the next turn keeps what matches.
  return stats;
}

void ChatSession::reset() {
  tokens_.clear();
  ctx_.cache().clear();
}

}  // namespace skiff

#include "decode/model_drafter.h"

#include <algorithm>

#include "base/error.h"

namespace skiff {

namespace {

// The draft model, once it is known to share the target's vocabulary (before its context
// is allocated).
const Model& checked(const Model& target, const Model& draft) {
  check_same_vocabulary(target, draft);
  return draft;
}

float checked_p_min(float p_min) {
  if (!(p_min >= 0.0f && p_min <= 1.0f)) fail("--draft-p-min must be in [0, 1], got {}", p_min);
  return p_min;
}

int draft_context_length(const Model& target, const Model& draft, int requested) {
  int n = requested > 0 ? requested : target.config.context_length;
  return std::min(n, draft.config.context_length);
}

}  // namespace

void check_same_vocabulary(const Model& target, const Model& draft) {
  const Vocab& a = target.tokenizer->vocab();
  const Vocab& b = draft.tokenizer->vocab();
  auto refuse = [&](const std::string& why) {
    fail("the draft model {} cannot draft for {}: {} (both must use the same tokenizer)",
         draft.source, target.source, why);
  };
  if (target.config.vocab_size != draft.config.vocab_size)
    refuse(fmt::format("its vocabulary has {} tokens, the target's {}", draft.config.vocab_size,
                       target.config.vocab_size));
  if (a.size() != b.size())
    refuse(fmt::format("its tokenizer has {} tokens, the target's {}", b.size(), a.size()));
  for (int32_t i = 0; i < a.size(); ++i) {
    if (a.pieces[static_cast<size_t>(i)] != b.pieces[static_cast<size_t>(i)])
      refuse(fmt::format("token {} is '{}' there but '{}' in the target", i,
                         b.pieces[static_cast<size_t>(i)], a.pieces[static_cast<size_t>(i)]));
  }
  if (a.bos_id != b.bos_id || a.eos_id != b.eos_id) refuse("its BOS/EOS ids differ");
}

ModelDrafter::ModelDrafter(const Model& target, const Model& draft, int context_length,
                           int n_threads, float p_min)
    : Drafter(target),
      ctx_(checked(target, draft), draft_context_length(target, draft, context_length), n_threads),
      p_min_(checked_p_min(p_min)) {}

ModelDrafter::ModelDrafter(const Model& target, const Model& draft, int context_length, ThreadPool& pool,
                           float p_min)
    : Drafter(target), ctx_(checked(target, draft), draft_context_length(target, draft, context_length), pool),
      p_min_(checked_p_min(p_min)) {}

void ModelDrafter::start(std::span<const int32_t> prompt) {
  // Prefill all but the newest prompt token, as the target did; the first round catches up.
  ctx_.cache().clear();
  const size_t n = std::min(prompt.size() - 1, static_cast<size_t>(ctx_.context_length()));
  if (n > 0) {
    eval_tokens(ctx_, prompt.first(n));
    ++forward_steps_;
  }
}

void ModelDrafter::propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler,
                           Draft& out) {
  const int n = static_cast<int>(tokens.size());
  // The draft context holds positions < its length; drafting k tokens runs positions up to
  // n-2+k through it.
  max_drafts = std::min(max_drafts, ctx_.context_length() - n + 1);
  if (max_drafts <= 0) return;
  std::vector<int32_t> history(tokens.begin(), tokens.end());
  // Catch up in one batch: everything from the draft cache's length to the newest token.
  std::span<const int32_t> unseen = tokens.subspan(static_cast<size_t>(ctx_.cache().length(0)));
  std::vector<float> logits = eval_tokens(ctx_, unseen);
  ++forward_steps_;
  for (int i = 0; i < max_drafts; ++i) {
    if (i > 0) {
      logits = eval_tokens(ctx_, std::span<const int32_t>(&history.back(), 1));
      ++forward_steps_;
    }
    if (top_probability(logits) < p_min_) break;
    TokenDistribution q = sampler.distribution(logits, history);
    const int32_t token = sampler.draw(q);
    history.push_back(token);
    out.push(token, std::move(q));
    if (target_.tokenizer->is_eog(token)) break;
  }
}

void ModelDrafter::accepted(int n) {
  // Keep what the draft model computed for accepted tokens; the newest token (n-1) is run
  // at the next round's catch-up.
  ctx_.cache().truncate_all(std::min(ctx_.cache().length(0), n - 1));
}

}  // namespace skiff

// Two-model speculative decoding: a second, smaller model with the same vocabulary drafts,
// in its own context. It catches up on the tokens it has not seen (the prompt, the target's
// correction or bonus token) in one batch at the start of each round.
#pragma once

#include <memory>

#include "decode/drafter.h"

namespace skiff {

class ModelDrafter : public Drafter {
 public:
  // Throws Error when the draft model's vocabulary differs from the target's (size, a
  // token's text, or the BOS/EOS ids), or p_min is outside [0, 1]. context_length <= 0: the
  // draft model's own (capped at the target's); threads as for Context.
  ModelDrafter(const Model& target, const Model& draft, int context_length, int n_threads, float p_min);
  // The same, drafting on the target context's threads (no second pool whose idle workers
  // spin on the cores the other one needs).
  ModelDrafter(const Model& target, const Model& draft, int context_length, ThreadPool& pool, float p_min);

  const char* name() const override { return "draft model"; }
  void start(std::span<const int32_t> prompt) override;
  void propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler, Draft& out) override;
  void accepted(int n) override;

  const Context& draft_context() const { return ctx_; }

 private:
  Context ctx_;
  float p_min_;
};

// Throws Error when `draft` cannot draft for `target` (different tokenizers).
void check_same_vocabulary(const Model& target, const Model& draft);

}  // namespace skiff

// Prompt-lookup drafting (n-gram matching, as llama.cpp's lookup and HF's prompt lookup):
// find the latest earlier occurrence of the sequence's last N tokens (then N-1, ... 1) and
// propose the tokens that followed it. No model runs; drafts are point masses, so the
// rejection rule accepts one with the target's probability of it (greedy: iff it is argmax).
#pragma once

#include "decode/drafter.h"

namespace skiff {

// Appends to `out` at most max_drafts tokens: what followed the latest earlier occurrence of
// the sequence's last n-gram, for the longest n in max_ngram..1 that occurs, as point masses,
// ending after an end-of-generation token. Returns how many.
int lookup_drafts(std::span<const int32_t> tokens, int max_ngram, int max_drafts, const Tokenizer& tokenizer,
                  Draft& out);

class NgramDrafter : public Drafter {
 public:
  // max_ngram N >= 1, otherwise Error.
  NgramDrafter(const Model& target, int max_ngram);

  const char* name() const override { return "prompt lookup"; }
  void propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler, Draft& out) override;

 private:
  int max_ngram_;
};

}  // namespace skiff

// The drafting-strategy seam of speculative decoding. A Drafter proposes tokens; the one
// verifier (speculative.h) checks them with the target model, whatever proposed them:
//   - EarlyExitDrafter (self-speculation, LayerSkip): layers 0..E-1 of the target itself,
//     sharing its KV cache; verification resumes at layer E from the kept exit states;
//   - ModelDrafter: a second, smaller model with the same vocabulary;
//   - NgramDrafter: prompt lookup, copying what followed an earlier occurrence of the last
//     n-gram.
//
// A round, with `tokens` the accepted sequence (n tokens; the newest, tokens[n-1], has not
// been through the target yet, and every target layer holds at most n-1 positions):
//   1. propose(tokens, k_max)           -> k <= k_max drafts d_1..d_k, each with the
//                                          distribution q_i it was drawn from;
//   2. verification_input(seq, from)    -> the hidden states entering layer `first` for
//                                          positions [from, n+k) of seq = tokens ++ drafts,
//                                          where `from` is the target's last layer's length;
//   3. the verifier runs layers [first, L) on them in ONE batch, accepts a prefix of the
//      drafts plus one token of its own, and cuts every target layer to n'-1 positions;
//   4. accepted(n')                     -> the drafter drops what it kept for rejected drafts.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/forward.h"
#include "sample/sampler.h"

namespace skiff {

struct Draft {
  std::vector<int32_t> tokens;
  // q_i: the distribution tokens[i] was drawn from (filtered, as the sampler filters). A
  // deterministic proposal (n-gram lookup) is a point mass on the token.
  std::vector<TokenDistribution> dists;

  size_t size() const { return tokens.size(); }
  void clear() {
    tokens.clear();
    dists.clear();
  }
  void push(int32_t token, TokenDistribution dist) {
    tokens.push_back(token);
    dists.push_back(std::move(dist));
  }
};

// What the verifier did with a round's drafts, for drafters that adapt (draft_policy.h).
struct RoundFeedback {
  int judged = 0;     // drafts judged: the accepted ones, then the rejected one if any
  int accepted = 0;   // of those, accepted
  int positions = 0;  // in the verification batch
  double verify_seconds = 0;
  bool steady = false;  // the batch held only the round's own positions (no prefill catch-up)
  int emitted = 0;      // tokens the round added to the sequence
  double round_seconds = 0;
};

class Drafter {
 public:
  virtual ~Drafter() = default;
  virtual const char* name() const = 0;

  // Once, before the first round, with the whole prompt. Unless the drafter defers the
  // target's prefill, the verifier has already run prompt[0 .. P-1) through every layer.
  virtual void start(std::span<const int32_t> prompt) {}
  // True when the drafter runs the prompt through some layers itself and the remaining
  // layers take it in the first verification (self-speculation's deferred prefill).
  virtual bool defers_prefill() const { return false; }
  // Appends at most max_drafts (>= 0) tokens continuing `tokens` to `out` (empty on entry).
  // `sampler` draws them (greedy: argmax) with the target's filtering; the RNG is shared
  // with the verifier so a seed reproduces the whole run.
  virtual void propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler,
                       Draft& out) = 0;
  // Fills hidden[(seq.size() - from) * dim] with the states entering layer `first` (the
  // return value) for positions [from, seq.size()). Default: token embeddings, layer 0.
  virtual int verification_input(std::span<const int32_t> seq, int from, std::vector<float>& hidden);
  // The round is over: the sequence has n tokens and every target layer holds n-1 positions
  // (n when EOS ended generation, as in plain decoding).
  virtual void accepted(int n) {}
  // After accepted(): the round's outcome and timings.
  virtual void round_done(const RoundFeedback& feedback) {}

  // Forward passes the drafter ran (for costs per draft step).
  int64_t forward_steps() const { return forward_steps_; }

 protected:
  explicit Drafter(const Model& target) : target_(target) {}
  const Model& target_;
  int64_t forward_steps_ = 0;
};

// The largest softmax probability of raw logits: the draft's confidence, compared with
// --draft-p-min to stop drafting early (the same for greedy and sampling).
float top_probability(std::span<const float> logits);

}  // namespace skiff

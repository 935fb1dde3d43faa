// Self-speculative drafting (LayerSkip): the target's own first E layers draft, one token at
// a time, then the final norm + head on their output. Nothing is computed twice:
//   - the drafts' keys and values of layers 0..E-1 go into the target's one KV cache, where
//     they stay when the drafts are accepted;
//   - the state leaving layer E-1 of every drafted position is kept (the exit-state cache),
//     so verification starts at layer E;
//   - the prompt runs through layers 0..E-1 only; layers E..L-1 take its exit states in the
//     first verification batch (deferred prefill).
// Between rounds the early layers hold as many positions as the late ones; during a round
// they run ahead by the drafts, and the verifier's truncate_all cuts both back.
//
// Options: the draft length by a cost model instead of a fixed confidence threshold
// (draft_policy.h), and prompt lookup first (NgramDrafter's n-gram match, free to propose):
// when it matches, its tokens are the first drafts, and when it runs dry before the draft
// limit, the early exit continues after them. Lookup drafts go through layers 0..E-1 in one
// batch (with the round's newest token), not one step each.
#pragma once

#include <chrono>
#include <memory>

#include "decode/draft_policy.h"
#include "decode/early_exit_copy.h"
#include "decode/drafter.h"
#include "kernels/repack.h"

namespace skiff {

struct SelfSpecOptions {
  bool adaptive = false;  // the draft length from draft_policy.h's rule instead of p_min
  int lookup_ngram = 0;   // > 0: prompt lookup with n-grams up to this drafts first
  // The early head's own smaller copy of the output matrix (make_draft_head): a draft step
  // reads the exit layers *and* the whole head, a quarter of it on a 0.85B F16 model (131 of
  // 492 MB). Null: the early head is the model's head.
  std::shared_ptr<const DraftHead> head;
  // The exit layer chosen every round (DEL-style) among 1..max(E, L/2) from the acceptance
  // seen at each against each exit's cost in weight bytes, trying a neighbour of the best
  // every few rounds; E (the constructor's) is the first round's (the prompt's deferred prefill
  // ran to it). Not with `adaptive` (its statistics are per exit).
  bool dynamic_exit = false;
};

class EarlyExitDrafter : public Drafter {
 public:
  // `target` is the context the verifier decodes in. exit_layer E must be in 1..L-1 and
  // p_min in [0, 1] (drafting stops when the early head's top probability falls below it);
  // otherwise Error.
  EarlyExitDrafter(Context& target, int exit_layer, float p_min, SelfSpecOptions options = {});

  const char* name() const override { return "self-speculation"; }
  void start(std::span<const int32_t> prompt) override;
  bool defers_prefill() const override { return true; }
  void propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler, Draft& out) override;
  int verification_input(std::span<const int32_t> seq, int from, std::vector<float>& hidden) override;
  void accepted(int n) override;
  void round_done(const RoundFeedback& feedback) override;

  // propose() as steps, for a caller that runs several drafters' early passes in one batch
  // (the server's slots): begin_proposal() takes propose()'s arguments (kept until the proposal
  // is complete); then while early_tokens() is not empty, the caller runs those tokens
  // through layers [0, exit_layer()) of this drafter's context, at its cache's next
  // positions, hands their states to early_done(), and, when wants_logits(), the early
  // head's logits of the last state (head()) to drafted(). The last step of a round runs the
  // final draft, which verification needs through the early layers too, without logits.
  void begin_proposal(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler, Draft& out);
  std::span<const int32_t> early_tokens() const { return early_; }
  bool wants_logits() const { return early_wants_logits_; }
  void early_done(const float* states);
  void drafted(std::span<const float> logits);
  // The early head: the draft head's copy, or null for the model's output matrix.
  const TensorView* head() const { return options_.head ? &options_.head->view : nullptr; }

  int exit_layer() const { return exit_layer_; }  // this round's
  // Positions whose exit state is kept for the next verification, starting at position
  // exit_from(); both for tests.
  int exit_count() const { return static_cast<int>(exit_states_.size()) / dim_; }
  int exit_from() const { return exit_from_; }
  const DraftLengthPolicy& policy() const { return policy_; }

 private:
  // Runs `tokens` through layers 0..E-1 at the next early positions, in one batch; keeps
  // their exit states and returns the last one's.
  const float* run_early(std::span<const int32_t> tokens);
  // dynamic_exit: the exit layer with the best expected tokens per weight byte read.
  int choose_exit(int max_drafts);
  // The next draft from the early head's logits: false when drafting should stop.
  bool draft_from(std::span<const float> logits);
  // After a draft step: the next early step (the newest token while drafts are wanted), the
  // final draft's pass without logits, or none.
  void next_early_step(bool more);

  // The proposal in progress (begin_proposal .. the last step).
  std::vector<int32_t> history_;
  int max_drafts_ = 0;
  Sampler* sampler_ = nullptr;
  Draft* out_ = nullptr;
  std::vector<int32_t> early_;  // tokens of the next early step
  bool early_wants_logits_ = false;
  bool early_is_draft_step_ = false;  // a one-token draft step, timed for the policy
  std::chrono::steady_clock::time_point step_start_;

  Context& ctx_;
  int exit_layer_;
  float p_min_;
  SelfSpecOptions options_;
  DraftLengthPolicy policy_;
  int dim_;
  int exit_from_ = 0;               // position of exit_states_[0]
  std::vector<float> exit_states_;  // [positions][dim], after layer E-1, before the norm
  std::vector<float> logits_;
  // dynamic_exit: per exit layer, drafts judged and accepted, and the cost of a draft step
  // (layers 0..E-1 and the head) and of a verification (layers E..L-1 and the head) in
  // bytes of weights read.
  std::vector<int64_t> judged_at_, accepted_at_;
  std::vector<double> draft_bytes_, verify_bytes_;
  int exit_rounds_ = 0;
};

}  // namespace skiff

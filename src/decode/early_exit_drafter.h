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
#pragma once

#include "decode/drafter.h"

namespace skiff {

class EarlyExitDrafter : public Drafter {
 public:
  // `target` is the context the verifier decodes in. exit_layer E must be in 1..L-1 and
  // p_min in [0, 1] (drafting stops when the early head's top probability falls below it);
  // otherwise Error.
  EarlyExitDrafter(Context& target, int exit_layer, float p_min);

  const char* name() const override { return "self-speculation"; }
  void start(std::span<const int32_t> prompt) override;
  bool defers_prefill() const override { return true; }
  void propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler, Draft& out) override;
  int verification_input(std::span<const int32_t> seq, int from, std::vector<float>& hidden) override;
  void accepted(int n) override;

  int exit_layer() const { return exit_layer_; }
  // Positions whose exit state is kept for the next verification, starting at position
  // exit_from(); both for tests.
  int exit_count() const { return static_cast<int>(exit_states_.size()) / dim_; }
  int exit_from() const { return exit_from_; }

 private:
  // Runs `token` through layers 0..E-1 at the next early position; keeps its exit state.
  const float* run_early(int32_t token);

  Context& ctx_;
  int exit_layer_;
  float p_min_;
  int dim_;
  int exit_from_ = 0;               // position of exit_states_[0]
  std::vector<float> exit_states_;  // [positions][dim], after layer E-1, before the norm
  std::vector<float> logits_;
};

}  // namespace skiff

#include "decode/early_exit_drafter.h"

#include "base/error.h"

namespace skiff {

EarlyExitDrafter::EarlyExitDrafter(Context& target, int exit_layer, float p_min)
    : Drafter(target.model()), ctx_(target), exit_layer_(exit_layer), p_min_(p_min),
      dim_(target.model().config.dim) {
  const int L = target.model().config.n_layers;
  if (exit_layer < 1 || exit_layer >= L)
    fail("--self-spec {}: the exit layer must be in 1..{} (the model has {} layers; E = L would "
         "leave nothing to verify with)", exit_layer, L - 1, L);
  if (!(p_min >= 0.0f && p_min <= 1.0f)) fail("--draft-p-min must be in [0, 1], got {}", p_min);
  logits_.resize(static_cast<size_t>(target.model().config.vocab_size));
}

const float* EarlyExitDrafter::run_early(int32_t token) {
  const size_t at = exit_states_.size();
  exit_states_.resize(at + static_cast<size_t>(dim_));
  float* h = exit_states_.data() + at;
  embed(target_, std::span<const int32_t>(&token, 1), h);
  forward(ctx_, h, 1, 0, exit_layer_);
  ++forward_steps_;
  return h;
}

void EarlyExitDrafter::start(std::span<const int32_t> prompt) {
  // All but the newest prompt token through layers 0..E-1; the first round's first draft
  // step runs the newest, as it runs the newest accepted token in every round. Positions
  // already cached (a chat's earlier turns, in every layer) are skipped.
  const int cached = ctx_.cache().length(0);
  exit_from_ = cached;
  exit_states_.clear();
  if (static_cast<int>(prompt.size()) - cached < 2) return;
  const int64_t T = static_cast<int64_t>(prompt.size()) - 1 - cached;
  exit_states_.resize(static_cast<size_t>(T) * dim_);
  embed(target_, prompt.subspan(static_cast<size_t>(cached), static_cast<size_t>(T)), exit_states_.data());
  forward(ctx_, exit_states_.data(), T, 0, exit_layer_);
}

void EarlyExitDrafter::propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler,
                               Draft& out) {
  std::vector<int32_t> history(tokens.begin(), tokens.end());
  int32_t current = tokens.back();
  for (int i = 0; i < max_drafts; ++i) {
    const float* h = run_early(current);
    compute_logits(ctx_, h, 1, logits_.data());
    if (top_probability(logits_) < p_min_) break;  // unsure: the state is kept for verification
    TokenDistribution q = sampler.distribution(logits_, history);
    current = sampler.draw(q);
    history.push_back(current);
    out.push(current, std::move(q));
    if (target_.tokenizer->is_eog(current)) break;  // nothing follows the end
  }
}

int EarlyExitDrafter::verification_input(std::span<const int32_t> seq, int from,
                                         std::vector<float>& hidden) {
  if (from != exit_from_)
    fail("self-speculation: the late layers hold {} positions but the exit states start at {}",
         from, exit_from_);
  // The newest position (the last draft, or the newest token when nothing was drafted) has
  // not been through layers 0..E-1 yet.
  while (exit_from_ + exit_count() < static_cast<int>(seq.size()))
    run_early(seq[static_cast<size_t>(exit_from_ + exit_count())]);
  hidden.assign(exit_states_.begin(), exit_states_.end());
  return exit_layer_;
}

void EarlyExitDrafter::accepted(int n) {
  // Every kept state went into the verification; the late layers now hold them (or the
  // verifier cut them with the rejected drafts).
  exit_states_.clear();
  exit_from_ = ctx_.cache().length(ctx_.model().config.n_layers - 1);
  (void)n;
}

}  // namespace skiff

#include "decode/early_exit_drafter.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "decode/ngram_drafter.h"
#include "kernels/matmul.h"
#include "tensor/dtype.h"

namespace skiff {

EarlyExitDrafter::EarlyExitDrafter(Context& target, int exit_layer, float p_min, SelfSpecOptions options)
    : Drafter(target.model()), ctx_(target), exit_layer_(exit_layer), p_min_(p_min), options_(options),
      dim_(target.model().config.dim) {
  const int L = target.model().config.n_layers;
  if (exit_layer < 1 || exit_layer >= L)
    fail("--self-spec {}: the exit layer must be in 1..{} (the model has {} layers; E = L would "
         "leave nothing to verify with)", exit_layer, L - 1, L);
  if (!(p_min >= 0.0f && p_min <= 1.0f)) fail("--draft-p-min must be in [0, 1], got {}", p_min);
  if (options.lookup_ngram < 0) fail("--lookup N: the n-gram length must be at least 1, got {}", options.lookup_ngram);
  logits_.resize(static_cast<size_t>(target.model().config.vocab_size));
  if (options.dynamic_exit) {
    if (options.adaptive) fail("--dynamic-exit and --draft-adaptive exclude each other");
    const Model& m = target.model();
    const double head = static_cast<double>((options.head ? options.head->view : m.output).nbytes());
    const double verify_head = static_cast<double>(m.output.nbytes());
    std::vector<double> below(static_cast<size_t>(L) + 1, 0.0);  // bytes of layers 0..l-1
    for (int l = 0; l < L; ++l) {
      const LayerWeights& w = m.layers[static_cast<size_t>(l)];
      double bytes = 0;
      for (const TensorView* t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.ffn_gate, &w.ffn_up, &w.ffn_down})
        bytes += static_cast<double>(t->nbytes());
      below[static_cast<size_t>(l) + 1] = below[static_cast<size_t>(l)] + bytes;
    }
    judged_at_.assign(static_cast<size_t>(L), 0);
    accepted_at_.assign(static_cast<size_t>(L), 0);
    draft_bytes_.assign(static_cast<size_t>(L), 0.0);
    verify_bytes_.assign(static_cast<size_t>(L), 0.0);
    for (int e = 1; e < L; ++e) {
      draft_bytes_[static_cast<size_t>(e)] = below[static_cast<size_t>(e)] + head;
      verify_bytes_[static_cast<size_t>(e)] = below[static_cast<size_t>(L)] - below[static_cast<size_t>(e)] + verify_head;
    }
  }
}

int EarlyExitDrafter::choose_exit(int max_drafts) {
  // Hill climbing on measured acceptance: the best exit among those tried (expected tokens per
  // byte of weights read, acceptance per exit with a prior of 1/2 worth one draft), and every
  // kExploreEvery-th round another exit instead, so a better exit is found and a noisy
  // estimate is revisited. Untried exits are not assumed anything: an
  // optimistic guess for all of them kept the first 30 rounds of a 64-token run exploring
  // (planted 0.85B F16 from E = 2: acceptance 30%, slower than a fixed exit).
  constexpr int kExploreEvery = 6;
  const int L = static_cast<int>(judged_at_.size());
  const int top = std::min(L - 1, std::max(exit_layer_, L / 2));
  const double d = std::max(1, max_drafts);
  auto score = [&](int e) {
    const double judged = static_cast<double>(judged_at_[static_cast<size_t>(e)]);
    const double a = std::min(0.98, (static_cast<double>(accepted_at_[static_cast<size_t>(e)]) + 0.5) / (judged + 1.0));
    const double tokens = (1.0 - std::pow(a, d + 1.0)) / (1.0 - a);
    return tokens / (d * draft_bytes_[static_cast<size_t>(e)] + verify_bytes_[static_cast<size_t>(e)]);
  };
  int best = exit_layer_;
  for (int e = 1; e <= top; ++e)
    if (judged_at_[static_cast<size_t>(e)] > 0 && score(e) > score(best)) best = e;
  if (++exit_rounds_ % kExploreEvery != 0) return best;
  // Explore: every other time the least-tried neighbour of the best, else the least-tried
  // exit of all (a flat stretch of near-zero acceptance has no slope to climb).
  int pick = 0;
  const bool anywhere = exit_rounds_ % (2 * kExploreEvery) == 0;
  for (int e = 1; e <= top; ++e) {
    if (e == best || (!anywhere && std::abs(e - best) != 1)) continue;
    if (pick == 0 || judged_at_[static_cast<size_t>(e)] < judged_at_[static_cast<size_t>(pick)]) pick = e;
  }
  return pick == 0 ? best : pick;
}

const float* EarlyExitDrafter::run_early(std::span<const int32_t> tokens) {
  const size_t at = exit_states_.size();
  exit_states_.resize(at + tokens.size() * static_cast<size_t>(dim_));
  float* h = exit_states_.data() + at;
  embed(target_, tokens, h);
  forward(ctx_, h, static_cast<int64_t>(tokens.size()), 0, exit_layer_);
  ++forward_steps_;
  return h + (tokens.size() - 1) * static_cast<size_t>(dim_);
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

bool EarlyExitDrafter::draft_from(std::span<const float> logits) {
  const float confidence = top_probability(logits);
  // Unsure: stop; the state stays for verification.
  if (options_.adaptive ? !policy_.include(confidence) : confidence < p_min_) return false;
  TokenDistribution q = sampler_->distribution(logits, history_);
  const int32_t token = sampler_->draw(q);
  history_.push_back(token);
  out_->push(token, std::move(q));
  return !target_.tokenizer->is_eog(token);  // nothing follows the end
}

void EarlyExitDrafter::next_early_step(bool more) {
  early_.clear();
  early_wants_logits_ = false;
  early_is_draft_step_ = false;
  const size_t have = static_cast<size_t>(exit_from_ + exit_count());
  if (more && static_cast<int>(out_->size()) < max_drafts_) {
    early_.push_back(history_.back());
    early_wants_logits_ = early_is_draft_step_ = true;
  } else if (history_.size() > have) {
    // What no step has run (the final draft; the newest token when nothing was drafted):
    // verification enters at layer E for every position.
    early_.assign(history_.begin() + static_cast<std::ptrdiff_t>(have), history_.end());
  }
  step_start_ = std::chrono::steady_clock::now();
}

void EarlyExitDrafter::begin_proposal(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler,
                                      Draft& out) {
  // A new exit only between rounds with nothing kept: the first round verifies the prompt's
  // exit states, made at the first exit layer.
  if (options_.dynamic_exit && exit_states_.empty()) exit_layer_ = choose_exit(max_drafts);
  policy_.begin_round();
  history_.assign(tokens.begin(), tokens.end());
  max_drafts_ = max_drafts;
  sampler_ = &sampler;
  out_ = &out;
  if (options_.lookup_ngram > 0 && max_drafts > 0) {
    Draft found;
    lookup_drafts(tokens, options_.lookup_ngram, max_drafts, *target_.tokenizer, found);
    for (size_t i = 0; i < found.size() && (!options_.adaptive || policy_.include(-1.0f)); ++i) {
      history_.push_back(found.tokens[i]);
      out.push(found.tokens[i], std::move(found.dists[i]));
    }
    if (!out.tokens.empty()) {
      const bool done = static_cast<int>(out.size()) == max_drafts || target_.tokenizer->is_eog(out.tokens.back()) ||
                        out.size() < found.size();
      // Dry before the limit: the newest token and the lookup drafts through layers 0..E-1
      // in one step, and the early exit drafts on from the last. Done: the step runs them
      // without drafting on.
      early_.assign(tokens.end() - 1, tokens.end());
      early_.insert(early_.end(), out.tokens.begin(), out.tokens.end());
      early_wants_logits_ = !done;
      early_is_draft_step_ = false;
      return;
    }
  }
  next_early_step(true);
}

void EarlyExitDrafter::early_done(const float* states) {
  exit_states_.insert(exit_states_.end(), states, states + early_.size() * static_cast<size_t>(dim_));
  ++forward_steps_;
  if (!early_wants_logits_) early_.clear();  // the final pass: the proposal is complete
}

void EarlyExitDrafter::drafted(std::span<const float> logits) {
  const bool more = draft_from(logits);
  if (early_is_draft_step_)
    policy_.draft_step(std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start_).count());
  next_early_step(more);
}

void EarlyExitDrafter::propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler, Draft& out) {
  begin_proposal(tokens, max_drafts, sampler, out);
  while (!early_.empty()) {
    const std::vector<int32_t> step = early_;
    const float* h = run_early(step);
    if (!early_wants_logits_) {
      early_.clear();
      break;
    }
    compute_logits(ctx_, h, 1, logits_.data(), head());
    drafted(logits_);
  }
}

int EarlyExitDrafter::verification_input(std::span<const int32_t> seq, int from,
                                         std::vector<float>& hidden) {
  if (from != exit_from_)
    fail("self-speculation: the late layers hold {} positions but the exit states start at {}",
         from, exit_from_);
  // The newest position (the last draft, or the newest token when nothing was drafted) has
  // not been through layers 0..E-1 yet.
  const int have = exit_from_ + exit_count();
  if (have < static_cast<int>(seq.size())) run_early(seq.subspan(static_cast<size_t>(have)));
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

void EarlyExitDrafter::round_done(const RoundFeedback& f) {
  if (options_.dynamic_exit) {
    judged_at_[static_cast<size_t>(exit_layer_)] += f.judged;
    accepted_at_[static_cast<size_t>(exit_layer_)] += f.accepted;
  }
  if (options_.adaptive)
    policy_.round_done(f.judged, f.accepted, f.positions, f.verify_seconds, f.steady);
}

}  // namespace skiff

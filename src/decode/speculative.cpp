#include "decode/speculative.h"

#include <algorithm>
#include <chrono>

#include "base/error.h"
#include "decode/generate.h"

namespace skiff {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

void SpecParams::validate() const {
  if (draft_max < 1) fail("--draft-max must be at least 1 (drafts per round), got {}", draft_max);
}

TokenDistribution residual(const TokenDistribution& p, const TokenDistribution& q) {
  // q's probabilities by id in a dense scratch row (reset afterwards): p and q may each
  // hold the whole vocabulary, so a pairwise lookup would be quadratic.
  thread_local std::vector<float> q_by_id;
  for (int32_t id : q.ids)
    if (static_cast<size_t>(id) >= q_by_id.size()) q_by_id.resize(static_cast<size_t>(id) + 1, 0.0f);
  for (size_t i = 0; i < q.size(); ++i) q_by_id[static_cast<size_t>(q.ids[i])] = q.probs[i];
  TokenDistribution r;
  for (size_t i = 0; i < p.size(); ++i) {
    const size_t id = static_cast<size_t>(p.ids[i]);
    const float qi = id < q_by_id.size() ? q_by_id[id] : 0.0f;
    if (p.probs[i] > qi) {
      r.ids.push_back(p.ids[i]);
      r.probs.push_back(p.probs[i] - qi);
    }
  }
  for (int32_t id : q.ids) q_by_id[static_cast<size_t>(id)] = 0.0f;
  return r.size() > 0 ? r : p;
}

Verdict judge_draft(const TokenDistribution& p, const TokenDistribution& q, int32_t x, Sampler& sampler) {
  const float px = p.prob_of(x), qx = q.prob_of(x);
  // px >= qx: always accepted, without spending a random number. Otherwise with
  // probability px / qx (qx > 0: x was drawn from q).
  if (px >= qx || sampler.uniform() * qx < px) return {true, x};
  return {false, sampler.draw(residual(p, q))};
}

SpeculativeRun::SpeculativeRun(Context& target, Sampler& sampler, Drafter& drafter, std::span<const int32_t> prompt,
                               int cached, int max_tokens, const SpecParams& params, const TokenCallback& on_token,
                               const RoundCallback& on_round)
    : target_(target),
      sampler_(sampler),
      drafter_(drafter),
      params_(params),
      on_round_(on_round),
      on_token_(on_token),
      tokens_(prompt.begin(), prompt.end()),
      emitter_(tokens_, *target.model().tokenizer, target.context_length(), max_tokens, on_token_, stats_.generation),
      steps_before_(drafter.forward_steps()) {
  const ModelConfig& c = target.model().config;
  GenerateStats& g = stats_.generation;
  g.prompt_tokens = static_cast<int>(prompt.size()) - cached;
  Clock::time_point t0 = Clock::now();
  if (!drafter.defers_prefill() && static_cast<int>(prompt.size()) - cached > 1) {
    // The prompt but its newest token, which every round's batch starts with.
    const int64_t T = static_cast<int64_t>(prompt.size()) - 1 - cached;
    std::vector<float> h(static_cast<size_t>(T) * c.dim);
    embed(target.model(), prompt.subspan(static_cast<size_t>(cached), static_cast<size_t>(T)), h.data());
    forward(target, h.data(), T, 0, c.n_layers);
  }
  drafter.start(prompt);
  g.prompt_seconds = seconds_between(t0, Clock::now());
}

bool SpeculativeRun::round() {
  const std::optional<Verification> v = begin_round();
  if (!v) return false;
  const ModelConfig& c = target_.model().config;
  // ONE forward of the target over every position it has not seen, the drafts included.
  forward(target_, hidden_.data(), v->rows, v->first_layer, c.n_layers);
  logits_.resize(static_cast<size_t>(v->logit_rows) * c.vocab_size);
  compute_logits(target_, hidden_.data() + static_cast<size_t>(v->rows - v->logit_rows) * c.dim, v->logit_rows,
                 logits_.data());
  return end_round(logits_.data());
}

std::optional<SpeculativeRun::Verification> SpeculativeRun::begin_round() {
  const std::optional<Proposal> p = start_round();
  if (!p) return std::nullopt;
  drafter_.propose(p->tokens, p->max_drafts, *p->sampler, *p->out);
  return drafted();
}

std::optional<SpeculativeRun::Proposal> SpeculativeRun::start_round() {
  if (emitter_.done()) return std::nullopt;
  Pending& r = pending_;
  r.start = Clock::now();
  r.n = static_cast<int>(tokens_.size());
  // Positions n-1 .. n-1+k must fit the context, and a round yields at most k+1 tokens.
  r.k_max = std::max(0, std::min({params_.draft_max, target_.context_length() - r.n, emitter_.remaining() - 1}));
  draft_.clear();
  return Proposal{tokens_, r.k_max, &sampler_, &draft_};
}

SpeculativeRun::Verification SpeculativeRun::drafted() {
  Pending& r = pending_;
  const int L = target_.model().config.n_layers, dim = target_.model().config.dim;
  r.k = static_cast<int>(draft_.size());
  if (r.k > r.k_max || draft_.dists.size() != draft_.tokens.size())
    fail("drafter {} proposed {} tokens where at most {} were asked for", drafter_.name(), r.k, r.k_max);
  seq_.assign(tokens_.begin(), tokens_.end());
  seq_.insert(seq_.end(), draft_.tokens.begin(), draft_.tokens.end());
  const int from = target_.cache().length(L - 1);
  r.first = drafter_.verification_input(seq_, from, hidden_);
  // Every position the target has not seen, the drafts included.
  r.T = static_cast<int64_t>(seq_.size()) - from;
  if (hidden_.size() < static_cast<size_t>(r.T) * dim)
    fail("drafter {} gave {} hidden values for {} positions", drafter_.name(), hidden_.size(), r.T);
  r.drafted = Clock::now();
  stats_.draft_seconds += seconds_between(r.start, r.drafted);
  return Verification{hidden_.data(), r.T, r.first, r.k + 1};
}

bool SpeculativeRun::end_round(const float* logits) {
  const Pending& r = pending_;
  const int V = target_.model().config.vocab_size;
  const int n = r.n, k = r.k;
  GenerateStats& g = stats_.generation;
  // Row i is the target's prediction after seq[0 .. n+i): it judges draft i, and row k
  // gives the bonus token when every draft passed.
  int accepted = 0, judged = 0;
  for (int i = 0; i <= k; ++i) {
    std::span<const float> row(logits + static_cast<size_t>(i) * V, static_cast<size_t>(V));
    TokenDistribution p = sampler_.distribution(row, std::span<const int32_t>(seq_.data(), static_cast<size_t>(n + i)));
    if (i == k) {
      emitter_.push(sampler_.draw(p));
      break;
    }
    Verdict verdict = judge_draft(p, draft_.dists[static_cast<size_t>(i)], draft_.tokens[static_cast<size_t>(i)], sampler_);
    ++judged;
    if (verdict.accepted) ++accepted;
    if (!emitter_.push(verdict.token) || !verdict.accepted) break;
  }

  // Back to plain decoding's cache: every position but the newest token's (at EOS, which
  // is never appended, plain decoding has run the newest too).
  const int keep = static_cast<int>(tokens_.size()) - (g.hit_eos ? 0 : 1);
  target_.cache().truncate_all(keep);
  drafter_.accepted(static_cast<int>(tokens_.size()));
  const Clock::time_point end = Clock::now();
  const double verify = seconds_between(r.drafted, end);
  stats_.verify_seconds += verify;
  if (r.T == k + 1) {
    ++stats_.steady_rounds;
    stats_.steady_verify_seconds += verify;
  }
  ++stats_.rounds;
  stats_.drafted += k;
  stats_.accepted += accepted;
  stats_.verified_positions += r.T;
  g.generate_seconds += seconds_between(r.start, end);
  drafter_.round_done(RoundFeedback{judged, accepted, static_cast<int>(r.T), verify, r.T == k + 1,
                                    static_cast<int>(tokens_.size()) - n, seconds_between(r.start, end)});
  stats_.draft_steps = drafter_.forward_steps() - steps_before_;
  if (on_round_) {
    on_round_(SpecRound{std::span<const int32_t>(draft_.tokens), accepted, r.first, static_cast<int>(r.T),
                        std::span<const int32_t>(tokens_), emitter_.done(), g.hit_eos});
  }
  return !emitter_.done();
}

namespace {

SpecStats speculate(Context& target, Sampler& sampler, Drafter& drafter, std::span<const int32_t> prompt,
                    int cached, int max_tokens, const SpecParams& params, const TokenCallback& on_token,
                    const RoundCallback& on_round) {
  SpeculativeRun run(target, sampler, drafter, prompt, cached, max_tokens, params, on_token, on_round);
  while (run.round()) {
  }
  return run.stats();
}

}  // namespace

SpecStats generate_speculative(Context& target, Sampler& sampler, Drafter& drafter,
                               std::span<const int32_t> prompt, int max_tokens,
                               const SpecParams& params, const TokenCallback& on_token,
                               const RoundCallback& on_round) {
  params.validate();
  check_generate_args(target, prompt, max_tokens);
  return speculate(target, sampler, drafter, prompt, 0, max_tokens, params, on_token, on_round);
}

SpecStats generate_speculative_continue(Context& target, Sampler& sampler, Drafter& drafter,
                                        std::span<const int32_t> prompt, int max_tokens,
                                        const SpecParams& params, const TokenCallback& on_token) {
  params.validate();
  const int cached = check_continue_args(target, prompt, max_tokens);
  return speculate(target, sampler, drafter, prompt, cached, max_tokens, params, on_token, {});
}

}  // namespace skiff

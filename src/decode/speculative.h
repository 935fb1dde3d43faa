// Speculative decoding: one verification path for every drafting strategy (drafter.h).
// Each round the drafter proposes up to D tokens; the target model checks them all in ONE
// forward over its layers [first, L) (first = E for self-speculation, whose drafts already
// went through layers 0..E-1, else 0), keeps the longest prefix it agrees with plus one token
// of its own, and cuts every layer's cache back to the accepted length.
//
// Agreement is the speculative rejection rule on the sampler's filtered distributions:
// accept a draft x ~ q with probability min(1, p(x)/q(x)); at the first rejection draw from
// norm(max(0, p - q)); when every draft passes draw a bonus token from p. The output then has
// exactly the target's distribution; with greedy sampling (one-hot p and q) it is token for
// token the autoregressive output, because a position's result does not depend on the batch
// it was computed in (forward.h's batch invariance).
//
// Invariant between rounds (n = accepted tokens): every layer of the target holds exactly
// n-1 positions, the cache plain decoding would have; the newest token is not yet through
// any layer. Self-speculation's first round is the exception its deferred prefill makes:
// the late layers start empty and catch up on the prompt in the first verification.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <functional>
#include <span>
#include <vector>

#include "decode/drafter.h"
#include "decode/emitter.h"
#include "model/forward.h"
#include "sample/sampler.h"

namespace skiff {

// The default --draft-p-min, chosen by measurement on stories260K (docs/SPECULATIVE.md):
// higher values only help a model whose early exits are poor; 0.8 stays within a few percent
// of the best there while still letting a LayerSkip-trained model draft.
inline constexpr float kDefaultDraftPMin = 0.8f;

struct SpecParams {
  int draft_max = 4;  // D: most drafts per round
  // Throws Error for draft_max < 1.
  void validate() const;
};

struct SpecStats {
  GenerateStats generation;
  int rounds = 0;
  int64_t drafted = 0;   // draft tokens proposed
  int64_t accepted = 0;  // of those, accepted by the target
  int64_t draft_steps = 0;     // the drafter's forward passes
  double draft_seconds = 0;    // proposing, plus preparing the verification input
  double verify_seconds = 0;   // the target's batched forward, logits and acceptance
  // Rounds whose verification batch held only the round's own positions (k+1), and their
  // time: the first self-speculative round also carries the deferred prefill.
  int steady_rounds = 0;
  double steady_verify_seconds = 0;
  int64_t verified_positions = 0;  // positions through the target in verification batches

  double acceptance_rate() const { return drafted > 0 ? double(accepted) / double(drafted) : 0.0; }
  // Accepted drafts per round (the round's own token not counted).
  double mean_accepted_length() const { return rounds > 0 ? double(accepted) / rounds : 0.0; }
};

// What a round did, for tests and tracing; `tokens` is the accepted sequence after it.
struct SpecRound {
  std::span<const int32_t> drafts;
  int accepted = 0;     // drafts kept
  int first_layer = 0;  // where verification entered the target
  int verified = 0;     // positions in the verification batch
  std::span<const int32_t> tokens;
  bool last = false;    // generation ends after this round
  bool eos = false;     // ... because the target chose EOS
};
using RoundCallback = std::function<void(const SpecRound&)>;

// Speculative generation one round at a time, for callers that interleave it with other
// work (the server's scheduler runs a round per step). The constructor prefills (unless the
// drafter defers it) with `cached` prompt tokens already in every layer of the target's
// cache; each round() drafts, verifies and emits; false once generation is over.
class SpeculativeRun {
 public:
  SpeculativeRun(Context& target, Sampler& sampler, Drafter& drafter, std::span<const int32_t> prompt, int cached,
                 int max_tokens, const SpecParams& params, const TokenCallback& on_token,
                 const RoundCallback& on_round = {});
  bool round();

  // round() in two halves, for a caller that runs the verification inside its own batched
  // pass with other sequences (the server's continuous batch): begin_round() drafts and says
  // what to verify, or nothing once generation is over; the caller runs the target's layers
  // [first_layer, L) over the `rows` hidden states in place (appending them to the target's
  // cache) and computes the target's logits of the last `logit_rows` of them, which
  // end_round() judges and emits. Returns as round().
  struct Verification {
    const float* hidden;  // [rows][dim], valid until end_round()
    int64_t rows;
    int first_layer;
    int logit_rows;       // drafts + 1
  };
  std::optional<Verification> begin_round();
  bool end_round(const float* logits);

  // begin_round() in two halves, for a caller that runs several drafters together (the
  // server drafts every self-speculating slot in lockstep): start_round() says what to
  // propose (nothing once generation is over), the caller proposes into `out` as
  // drafter.propose(tokens, max_drafts, *sampler, *out) would, and drafted() prepares the
  // verification.
  struct Proposal {
    std::span<const int32_t> tokens;
    int max_drafts;
    Sampler* sampler;
    Draft* out;
  };
  std::optional<Proposal> start_round();
  Verification drafted();

  bool done() const { return emitter_.done(); }
  const SpecStats& stats() const { return stats_; }
  // The prompt and every emitted token.
  const std::vector<int32_t>& tokens() const { return tokens_; }

 private:
  Context& target_;
  Sampler& sampler_;
  Drafter& drafter_;
  const SpecParams params_;
  const RoundCallback on_round_;
  const TokenCallback on_token_;  // a copy: the Emitter holds a reference
  SpecStats stats_;
  std::vector<int32_t> tokens_;
  Emitter emitter_;
  int64_t steps_before_;
  Draft draft_;
  std::vector<int32_t> seq_;
  std::vector<float> hidden_, logits_;
  // The round between begin_round() and end_round().
  struct Pending {
    std::chrono::steady_clock::time_point start, drafted;
    int n = 0, k_max = 0, k = 0, first = 0;
    int64_t T = 0;
  } pending_;
};

// Generates like generate() (same arguments, same stop rules) with drafts from `drafter`,
// which must have been built for this `target` context. The context must be fresh.
SpecStats generate_speculative(Context& target, Sampler& sampler, Drafter& drafter,
                               std::span<const int32_t> prompt, int max_tokens,
                               const SpecParams& params, const TokenCallback& on_token,
                               const RoundCallback& on_round = {});

// The same continuing a sequence whose first tokens are already in every layer of the
// target's cache (generate_continue's rules). The drafter's start() must handle the cached
// prefix: self-speculation (EarlyExitDrafter) and lookup (NgramDrafter) do; a draft model
// would need its own cache continued too.
SpecStats generate_speculative_continue(Context& target, Sampler& sampler, Drafter& drafter,
                                        std::span<const int32_t> prompt, int max_tokens,
                                        const SpecParams& params, const TokenCallback& on_token);

// One step of the rejection rule: the draft x (drawn from q) against the target's p.
// Uses one sampler.uniform() unless p(x) >= q(x), and one draw on rejection.
struct Verdict {
  bool accepted = false;
  int32_t token = -1;  // x when accepted, else the correction drawn from the residual
};
Verdict judge_draft(const TokenDistribution& p, const TokenDistribution& q, int32_t x, Sampler& sampler);

// norm(max(0, p - q)) unnormalized, over p's support; p itself if that is empty (p == q).
TokenDistribution residual(const TokenDistribution& p, const TokenDistribution& q);

}  // namespace skiff

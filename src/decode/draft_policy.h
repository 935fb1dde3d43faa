// Adaptive draft length (--draft-adaptive): per round, keep drafting while the tokens a draft
// is expected to add pay for what it costs, at the rate the run achieves.
//
// Draft i of a round is included when
//     pi_i >= R * (t_step + dt_verify/dT)
// where
//   - pi_i = prod_{j<=i} alpha(c_j): the probability that drafts 1..i are all accepted, so
//     the expected tokens draft i adds (it yields a token only if every earlier draft passed);
//     alpha(c) is the acceptance rate of drafts with early-head confidence c (top softmax
//     probability) at that depth in the round (1, 2, 3 and deeper: a draft that continues
//     drafts is less often right), learned from this run's verdicts in 20 bins per depth, each
//     shrunk towards the rate over all bins (lookup drafts, which have no confidence, have a
//     bin of their own);
//   - t_step: the drafter's measured seconds per draft step (early layers + head);
//   - t_verify(T): measured seconds of a verification of T positions (steady rounds only),
//     a least-squares line over recent rounds; its slope is what one more row costs (0
//     until two sizes have been seen);
//   - R: the rate a draft must beat: the run's tokens per second so far (decayed), or the
//     rate of its rounds without drafts if that is higher (else drafting that lowers the rate
//     would lower the bar with it).
// On a memory-bound model verification rows are almost free and the rule drafts long while
// the drafts are confident; on a compute-bound one each row costs and drafts stay short.
//
// After 16 rounds without a draft the first draft is included anyway, so a pessimistic
// estimate can learn it was wrong.
//
// Greedy output never depends on the draft lengths (verification is exact). Under sampling
// the output keeps the target's distribution, but the lengths follow measured times, so a seed
// reproduces a sampled text only with a fixed --draft-p-min.
#pragma once

#include <array>
#include <vector>

namespace skiff {

class DraftLengthPolicy {
 public:
  // Starts a round: nothing drafted yet.
  void begin_round();
  // Whether to include the next draft, an early-exit draft of confidence `c` in [0, 1], or a
  // lookup draft (c < 0); updates the running pi when it is included.
  bool include(float c);
  // The confidences of the drafts included this round (-1 for lookup drafts), in order.
  const std::vector<float>& round_confidences() const { return confidences_; }

  // Measurements.
  void draft_step(double seconds);
  // After the verification: `judged` drafts were judged (the accepted ones, then the rejected
  // one if any), `accepted` of them passed; `positions` went through the verification in
  // `verify_seconds` (steady: only the round's own positions, no catch-up); the round emitted
  // `emitted` tokens in `round_seconds`.
  void round_done(int judged, int accepted, int positions, double verify_seconds, bool steady, int emitted,
                  double round_seconds);

  // For tests and tracing.
  double acceptance(float c, int depth = 1) const;
  double threshold() const;  // the pi a draft needs
  double seconds_per_row() const;  // the verification's measured cost of one more position
  double tokens_per_second() const;  // R

 private:
  static constexpr int kBins = 20, kDepths = 3;
  struct Bin {
    double accepted = 0, judged = 0;
  };
  int bin_of(float c) const;
  int depth_of(int depth) const;

  std::array<std::array<Bin, kBins + 1>, kDepths> bins_{};  // [depth][bin]; the last bin: lookup
  // Decayed sums for the verification-time line: weight, T, T^2, seconds, T * seconds.
  std::array<double, 5> fit_{};
  double step_seconds_ = 0;                         // EWMA, 0 = unseen
  double rate_tokens_ = 0, rate_seconds_ = 0;  // decayed sums: the achieved rate
  double plain_rate_ = 0;                      // EWMA tokens/s of rounds without drafts
  double pi_ = 1;
  int rounds_without_draft_ = 0;
  std::vector<float> confidences_;
};

}  // namespace skiff

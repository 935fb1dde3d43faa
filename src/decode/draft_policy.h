// Adaptive draft length (--draft-adaptive): per round, draft while one more draft raises the
// round's expected tokens per second.
//
// With k drafts taken, the round is expected to yield E_k = 1 + pi_1 + ... + pi_k tokens in
// S_k = (k+1) t_step + t_verify(k+1) seconds; draft k+1 is taken when E_{k+1} / S_{k+1} >=
// E_k / S_k, where
//   - pi_i = prod_{j<=i} alpha(c_j): the probability that drafts 1..i are all accepted, so
//     the expected tokens draft i adds (it yields a token only if every earlier draft passed);
//     alpha(c) is the acceptance rate of drafts with early-head confidence c (top softmax
//     probability) at that depth in the round (1, 2, 3 and deeper: a draft that continues
//     drafts is less often right), learned from this run's verdicts in 20 bins per depth, each
//     shrunk towards the rate over all bins (lookup drafts, which have no confidence, have a
//     bin of their own);
//   - t_step: the drafter's measured seconds per draft step (early layers + head);
//   - t_verify(T) = a + b T: a least-squares line through the measured (positions, seconds)
//     of steady verifications, recent rounds weighing more (b = 0 until two sizes were seen).
// The comparison is within the round, not against the run's achieved rate: a rule measured
// against its own results can settle where long, often-rejected drafts keep the rate low.
// On a memory-bound model a verification row is nearly free (b ~ 0) and drafts run long while
// they are likely; where each row costs, drafts stay short. Before the first measurements a
// draft is taken while pi >= 0.5. After 16 rounds without a draft the first draft is taken
// anyway, so a pessimistic estimate can learn it was wrong.
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
  // `verify_seconds` (steady: only the round's own positions, no catch-up).
  void round_done(int judged, int accepted, int positions, double verify_seconds, bool steady);

  // For tests and tracing.
  double acceptance(float c, int depth = 1) const;
  bool pays(double pi) const;  // would a next draft with this pi be taken?
  double seconds_per_row() const;  // b: the verification's cost of one more position
  double verify_intercept() const;  // a
  double expected_round_seconds(int drafts) const;  // S_k

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
  double pi_ = 1, expected_tokens_ = 1;
  int rounds_without_draft_ = 0;
  std::vector<float> confidences_;
};

}  // namespace skiff

#include "decode/draft_policy.h"

#include <algorithm>

namespace skiff {

namespace {

// Before the first steady round has been timed: include a draft while pi >= this (what a
// fixed --draft-p-min of 0.5 would do for the first draft).
constexpr double kColdThreshold = 0.5;
// Weight of the newest measurement in the running means, and the decay of the rate's sums.
constexpr double kNewWeight = 0.25;
constexpr double kRateDecay = 0.9;
// Pseudo-verdicts of a prior; rounds without a draft after which the first draft is
// included whatever the rule says (else an estimate that never drafts never learns).
constexpr double kPriorWeight = 2;
constexpr int kExploreAfter = 16;

double blend(double old_value, double value) {
  return old_value == 0 ? value : (1 - kNewWeight) * old_value + kNewWeight * value;
}

}  // namespace

void DraftLengthPolicy::begin_round() {
  pi_ = 1;
  confidences_.clear();
}

int DraftLengthPolicy::bin_of(float c) const {
  if (c < 0) return kBins;
  return std::min(kBins - 1, static_cast<int>(c * kBins));
}

double DraftLengthPolicy::acceptance(float c) const {
  // A bin's rate shrunk towards the rate of every draft so far, itself starting at a coin:
  // whether confidence predicts acceptance at all is the model's business (a random-weight
  // model's early head is never confident, yet its drafts may be right).
  double all_accepted = 0, all_judged = 0;
  for (const Bin& b : bins_) {
    all_accepted += b.accepted;
    all_judged += b.judged;
  }
  const double overall = (all_accepted + 0.5 * kPriorWeight) / (all_judged + kPriorWeight);
  const Bin& b = bins_[static_cast<size_t>(bin_of(c))];
  return (b.accepted + overall * kPriorWeight) / (b.judged + kPriorWeight);
}

double DraftLengthPolicy::verify_seconds(int positions) const {
  positions = std::clamp(positions, 1, kMaxPositions);
  if (verify_[static_cast<size_t>(positions)] > 0) return verify_[static_cast<size_t>(positions)];
  int lo = positions - 1, hi = positions + 1;
  while (lo >= 1 && verify_[static_cast<size_t>(lo)] == 0) --lo;
  while (hi <= kMaxPositions && verify_[static_cast<size_t>(hi)] == 0) ++hi;
  const bool has_lo = lo >= 1, has_hi = hi <= kMaxPositions;
  if (has_lo && has_hi) {
    const double f = static_cast<double>(positions - lo) / (hi - lo);
    return (1 - f) * verify_[static_cast<size_t>(lo)] + f * verify_[static_cast<size_t>(hi)];
  }
  if (has_lo) return verify_[static_cast<size_t>(lo)];
  if (has_hi) return verify_[static_cast<size_t>(hi)];
  return 0;
}

double DraftLengthPolicy::threshold(int positions) const {
  if (step_seconds_ == 0 || rate_seconds_ == 0) return kColdThreshold;
  const double extra_row = std::max(0.0, verify_seconds(positions + 1) - verify_seconds(positions));
  return tokens_per_second() * (step_seconds_ + extra_row);
}

bool DraftLengthPolicy::include(float c) {
  // Positions the verification holds now: the round's newest token and the drafts so far.
  const int positions = 1 + static_cast<int>(confidences_.size());
  const double pi = pi_ * acceptance(c);
  const bool explore = positions == 1 && rounds_without_draft_ >= kExploreAfter;
  if (pi < threshold(positions) && !explore) return false;
  pi_ = pi;
  confidences_.push_back(c);
  return true;
}

void DraftLengthPolicy::draft_step(double seconds) { step_seconds_ = blend(step_seconds_, seconds); }

void DraftLengthPolicy::round_done(int judged, int accepted, int positions, double verify_seconds, bool steady,
                                   int emitted, double round_seconds) {
  rounds_without_draft_ = confidences_.empty() ? rounds_without_draft_ + 1 : 0;
  judged = std::min(judged, static_cast<int>(confidences_.size()));
  for (int i = 0; i < judged; ++i) {
    Bin& b = bins_[static_cast<size_t>(bin_of(confidences_[static_cast<size_t>(i)]))];
    b.judged += 1;
    if (i < accepted) b.accepted += 1;
  }
  // The first round also carries the deferred prefill: neither its verification nor its rate
  // says what a round costs.
  if (!steady) return;
  if (positions >= 1 && positions <= kMaxPositions)
    verify_[static_cast<size_t>(positions)] = blend(verify_[static_cast<size_t>(positions)], verify_seconds);
  rate_tokens_ = kRateDecay * rate_tokens_ + emitted;
  rate_seconds_ = kRateDecay * rate_seconds_ + round_seconds;
}

}  // namespace skiff

#include "decode/draft_policy.h"

#include <algorithm>

namespace skiff {

namespace {

// Before the first steady round has been timed: include a draft while pi >= this.
constexpr double kColdThreshold = 0.5;
// Weight of the newest measurement in the draft step's running mean.
constexpr double kNewWeight = 0.25;
// Decay of the verification-time fit's sums per steady round (an early outlier fades).
constexpr double kFitDecay = 0.95;
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
  expected_tokens_ = 1;
  confidences_.clear();
}

int DraftLengthPolicy::depth_of(int depth) const { return std::clamp(depth, 1, kDepths) - 1; }

int DraftLengthPolicy::bin_of(float c) const {
  if (c < 0) return kBins;
  return std::min(kBins - 1, static_cast<int>(c * kBins));
}

double DraftLengthPolicy::acceptance(float c, int depth) const {
  // A bin's rate shrunk towards the rate of every draft so far, itself starting at a coin:
  // whether confidence predicts acceptance at all is the model's business (a random-weight
  // model's early head is never confident, yet its drafts may be right).
  double all_accepted = 0, all_judged = 0;
  for (const auto& row : bins_)
    for (const Bin& b : row) {
      all_accepted += b.accepted;
      all_judged += b.judged;
    }
  const double overall = (all_accepted + 0.5 * kPriorWeight) / (all_judged + kPriorWeight);
  const Bin& b = bins_[static_cast<size_t>(depth_of(depth))][static_cast<size_t>(bin_of(c))];
  return (b.accepted + overall * kPriorWeight) / (b.judged + kPriorWeight);
}

double DraftLengthPolicy::seconds_per_row() const {
  // The slope of the least-squares line through (positions, seconds), recent rounds weighing
  // more; 0 until two sizes have been seen (and never negative).
  const double var = fit_[0] * fit_[2] - fit_[1] * fit_[1];
  if (fit_[0] == 0 || var <= 1e-9 * fit_[0] * fit_[0]) return 0;
  return std::max(0.0, (fit_[0] * fit_[4] - fit_[1] * fit_[3]) / var);
}

double DraftLengthPolicy::verify_intercept() const {
  if (fit_[0] == 0) return 0;
  return std::max(0.0, (fit_[3] - seconds_per_row() * fit_[1]) / fit_[0]);
}

double DraftLengthPolicy::expected_round_seconds(int drafts) const {
  // drafts + 1 early passes with the head (the last one's head is the draft that was not
  // taken, or nothing), and a verification of drafts + 1 positions.
  return (drafts + 1) * step_seconds_ + verify_intercept() + seconds_per_row() * (drafts + 1);
}

bool DraftLengthPolicy::pays(double pi) const {
  const int k = static_cast<int>(confidences_.size());
  if (step_seconds_ == 0 || fit_[0] == 0) return pi >= kColdThreshold;
  return (expected_tokens_ + pi) / expected_round_seconds(k + 1) >= expected_tokens_ / expected_round_seconds(k);
}

bool DraftLengthPolicy::include(float c) {
  const double pi = pi_ * acceptance(c, static_cast<int>(confidences_.size()) + 1);
  const bool explore = confidences_.empty() && rounds_without_draft_ >= kExploreAfter;
  if (!pays(pi) && !explore) return false;
  pi_ = pi;
  expected_tokens_ += pi;
  confidences_.push_back(c);
  return true;
}

void DraftLengthPolicy::draft_step(double seconds) { step_seconds_ = blend(step_seconds_, seconds); }

void DraftLengthPolicy::round_done(int judged, int accepted, int positions, double verify_seconds, bool steady) {
  rounds_without_draft_ = confidences_.empty() ? rounds_without_draft_ + 1 : 0;
  judged = std::min(judged, static_cast<int>(confidences_.size()));
  for (int i = 0; i < judged; ++i) {
    Bin& b = bins_[static_cast<size_t>(depth_of(i + 1))][static_cast<size_t>(bin_of(confidences_[static_cast<size_t>(i)]))];
    b.judged += 1;
    if (i < accepted) b.accepted += 1;
  }
  // The first round also carries the deferred prefill: its verification says nothing of what
  // a round costs.
  if (!steady) return;
  const double T = positions;
  for (double& f : fit_) f *= kFitDecay;
  fit_[0] += 1;
  fit_[1] += T;
  fit_[2] += T * T;
  fit_[3] += verify_seconds;
  fit_[4] += T * verify_seconds;
}

}  // namespace skiff

// Measures speculative decoding against plain decoding in the same process, on the same
// prompts: what `skiff bench --self-spec/--draft-model/--lookup` and `skiff sweep` print.
// Times are end to end per request (prompt + generation): self-speculation defers part of
// the prefill into its first verification, so only the sum compares fairly. Runs are paired:
// each repetition runs plain then speculative decoding of a prompt back to back, and for
// each prompt the fastest run of each counts (the least disturbed by other processes).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "decode/drafter.h"
#include "decode/speculative.h"

namespace skiff {

struct SpecBenchPrompt {
  std::string task;  // e.g. "story", "summary", "code"
  std::vector<int32_t> tokens;
};

struct SpecBenchConfig {
  std::vector<SpecBenchPrompt> prompts;
  int n_predict = 128;
  SamplerParams sampling;  // the bench defaults to greedy (temperature 0)
  uint64_t seed = 1;
  int repetitions = 1;
};

// Builds the drafter for a run (outside the timed part); `target` is that run's context.
using DrafterFactory = std::function<std::unique_ptr<Drafter>(Context& target)>;

struct SpecBenchResult {
  std::string task;  // a task name, or "all"
  int prompts = 0;
  int64_t ar_tokens = 0, spec_tokens = 0;
  double ar_seconds = 0, spec_seconds = 0;
  double ar_tps = 0, spec_tps = 0, speedup = 0;
  double acceptance_rate = 0;       // accepted drafts / drafted
  double mean_accepted_length = 0;  // accepted drafts per round
  double tokens_per_round = 0;      // generated tokens per verification
  double draft_step_cost = 0;       // one drafter forward pass / one full decode step
  // Drafting per drafted token / one full decode step: a round's whole drafting (the D draft
  // steps and, for self-speculation, the last draft's own early pass) over its D drafts; the
  // c_d of the cost model ideal = E[tokens per round] / (D c_d + c_v).
  double draft_cost_per_token = 0;
  double verify_cost = 0;           // one verification (D+1 positions) / one full decode step
  double decode_step_seconds = 0;   // one full decode step of plain decoding (with sampling)
  bool identical = true;            // greedy only: the same tokens as plain decoding
  int64_t rounds = 0, drafted = 0, accepted = 0, draft_steps = 0;
};

// Runs plain and speculative decoding on every prompt. Returns one result per task, in
// first-seen order, then "all".
std::vector<SpecBenchResult> measure_speculative(Context& ctx, const DrafterFactory& make_drafter,
                                                 const SpecParams& params, const SpecBenchConfig& config);

}  // namespace skiff

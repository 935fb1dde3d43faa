// Which layers each pipeline stage runs (docs/DISTRIBUTED.md). No MPI here: the plan is
// parsed, placed and checked before any message is sent, and unit-tested on its own.
//
// Stage s runs layers [ranges[s].first, ranges[s].last); the ranges are contiguous, start at
// 0, end at L and none is empty. Stage 0 (MPI rank 0) also owns the tokenizer, embeddings,
// head and sampling; with self-speculation (--self-spec E) it must hold layers 0..E-1 too,
// so drafting sends no messages.
#pragma once

#include <string>
#include <vector>

namespace skiff::dist {

struct LayerRange {
  int first = 0, last = 0;
  int size() const { return last - first; }
  bool operator==(const LayerRange&) const = default;
};

struct StagePlan {
  std::vector<LayerRange> ranges;
  int stages() const { return static_cast<int>(ranges.size()); }
  // "0:3,3:8"
  std::string describe() const;
};

// Parses --stage-layers "A:B,B:C,...": syntax only (Error with the offending piece).
StagePlan parse_stage_layers(const std::string& text);

// Checks a plan for a model of n_layers on n_stages processes, stage 0 holding at least
// layers [0, min_first): Error with a one-line reason otherwise.
void validate_stage_plan(const StagePlan& plan, int n_layers, int n_stages, int min_first = 0);

// --stages auto: layers split evenly by count (earlier stages take the remainder), stage 0
// taking at least min_first layers and the rest splitting what remains. Error when there
// are fewer layers than stages to fill.
StagePlan place_stages(int n_layers, int n_stages, int min_first = 0);

// --stages auto: contiguous layer ranges sized to each stage's free memory. layer_bytes[l]:
// what layer l costs where it lives (weights + KV cache); stage0_bytes: what only stage 0
// holds (embeddings, head); free_bytes[s]: stage s's available memory (0 everywhere:
// unknown, split by bytes evenly). Each stage gets layers until its share of the total,
// in proportion to its free memory less its fixed cost, is reached (the nearer boundary);
// at least one layer each and min_first on stage 0. Error when there are fewer layers than
// stages to fill.
StagePlan place_stages_by_memory(const std::vector<double>& layer_bytes, double stage0_bytes,
                                 const std::vector<double>& free_bytes, int min_first = 0);

}  // namespace skiff::dist

#include "dist/stage_plan.h"

#include <algorithm>
#include <charconv>

#include "base/error.h"

namespace skiff::dist {

namespace {

int parse_layer(const std::string& piece, const std::string& text) {
  int v = 0;
  const char* end = piece.data() + piece.size();
  auto [ptr, ec] = std::from_chars(piece.data(), end, v);
  if (piece.empty() || ec != std::errc() || ptr != end || v < 0)
    fail("--stage-layers '{}': '{}' is not a layer number", text, piece);
  return v;
}

}  // namespace

std::string StagePlan::describe() const {
  std::string out;
  for (const LayerRange& r : ranges) out += fmt::format("{}{}:{}", out.empty() ? "" : ",", r.first, r.last);
  return out;
}

StagePlan parse_stage_layers(const std::string& text) {
  StagePlan plan;
  size_t begin = 0;
  while (true) {
    size_t comma = text.find(',', begin);
    const std::string item = text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    const size_t colon = item.find(':');
    if (colon == std::string::npos)
      fail("--stage-layers '{}': '{}' is not FIRST:LAST (e.g. 0:6,6:16)", text, item);
    plan.ranges.push_back({parse_layer(item.substr(0, colon), text), parse_layer(item.substr(colon + 1), text)});
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return plan;
}

void validate_stage_plan(const StagePlan& plan, int n_layers, int n_stages, int min_first) {
  const std::string text = plan.describe();
  if (plan.stages() != n_stages)
    fail("--stage-layers {}: {} stages for {} processes (mpirun -np must match)", text, plan.stages(), n_stages);
  int expect = 0;
  for (int s = 0; s < plan.stages(); ++s) {
    const LayerRange& r = plan.ranges[static_cast<size_t>(s)];
    if (r.first != expect)
      fail("--stage-layers {}: stage {} starts at layer {}, expected {} (stages must be contiguous from 0)", text, s,
           r.first, expect);
    if (r.last <= r.first) fail("--stage-layers {}: stage {} ({}:{}) holds no layers", text, s, r.first, r.last);
    expect = r.last;
  }
  if (expect != n_layers)
    fail("--stage-layers {}: the stages end at layer {} but the model has {} layers", text, expect, n_layers);
  if (min_first > plan.ranges[0].last)
    fail("--stage-layers {}: --self-spec {} drafts with layers 0..{}, which must all be on stage 0 (it holds 0:{})",
         text, min_first, min_first - 1, plan.ranges[0].last);
}

StagePlan place_stages(int n_layers, int n_stages, int min_first) {
  if (n_stages < 1) fail("pipeline: {} stages", n_stages);
  if (n_stages > n_layers) fail("--stages auto: {} stages but the model has only {} layers", n_stages, n_layers);
  std::vector<int> sizes(static_cast<size_t>(n_stages));
  for (int s = 0; s < n_stages; ++s) sizes[static_cast<size_t>(s)] = n_layers / n_stages + (s < n_layers % n_stages);
  if (sizes[0] < min_first) {
    // Stage 0 keeps the draft layers; the others split the rest evenly.
    const int rest = n_layers - min_first, others = n_stages - 1;
    if (rest < others)
      fail("--stages auto: --self-spec {} keeps layers 0..{} on stage 0, leaving {} layers for {} more stages",
           min_first, min_first - 1, rest, others);
    sizes[0] = min_first;
    for (int s = 1; s < n_stages; ++s) sizes[static_cast<size_t>(s)] = rest / others + (s - 1 < rest % others);
  }
  StagePlan plan;
  int at = 0;
  for (int n : sizes) {
    plan.ranges.push_back({at, at + n});
    at += n;
  }
  return plan;
}

StagePlan place_stages_by_memory(const std::vector<double>& layer_bytes, double stage0_bytes,
                                 const std::vector<double>& free_bytes, int min_first) {
  const int L = static_cast<int>(layer_bytes.size()), S = static_cast<int>(free_bytes.size());
  // The feasibility rules (and their messages) are place_stages's.
  place_stages(L, S, min_first);
  std::vector<double> capacity(static_cast<size_t>(S));
  double total_capacity = 0;
  for (int s = 0; s < S; ++s) {
    capacity[static_cast<size_t>(s)] = std::max(0.0, free_bytes[static_cast<size_t>(s)] - (s == 0 ? stage0_bytes : 0.0));
    total_capacity += capacity[static_cast<size_t>(s)];
  }
  if (total_capacity <= 0) std::fill(capacity.begin(), capacity.end(), 1.0), total_capacity = S;
  std::vector<double> cumulative(static_cast<size_t>(L) + 1, 0.0);  // bytes of layers [0, l)
  for (int l = 0; l < L; ++l) cumulative[static_cast<size_t>(l) + 1] = cumulative[static_cast<size_t>(l)] + layer_bytes[static_cast<size_t>(l)];
  // boundary[s]: the first layer of stage s (boundary[0] = 0, boundary[S] = L).
  std::vector<int> boundary(static_cast<size_t>(S) + 1, 0);
  boundary[static_cast<size_t>(S)] = L;
  double share = 0;
  for (int s = 1; s < S; ++s) {
    share += capacity[static_cast<size_t>(s) - 1] / total_capacity;
    const double target = share * cumulative[static_cast<size_t>(L)];
    int b = 0;
    while (b < L && cumulative[static_cast<size_t>(b) + 1] <= target) ++b;
    // b is the last boundary at or below the target; b + 1 may be nearer.
    if (b < L && target - cumulative[static_cast<size_t>(b)] > cumulative[static_cast<size_t>(b) + 1] - target) ++b;
    boundary[static_cast<size_t>(s)] = b;
  }
  // At least one layer per stage, min_first on stage 0: push boundaries up, then down.
  boundary[1] = std::max(boundary[1], std::max(1, min_first));
  for (int s = 2; s < S; ++s) boundary[static_cast<size_t>(s)] = std::max(boundary[static_cast<size_t>(s)], boundary[static_cast<size_t>(s) - 1] + 1);
  for (int s = S - 1; s >= 1; --s)
    boundary[static_cast<size_t>(s)] = std::min(boundary[static_cast<size_t>(s)], boundary[static_cast<size_t>(s) + 1] - 1);
  StagePlan plan;
  for (int s = 0; s < S; ++s) plan.ranges.push_back({boundary[static_cast<size_t>(s)], boundary[static_cast<size_t>(s) + 1]});
  return plan;
}

}  // namespace skiff::dist

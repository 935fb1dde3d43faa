// An SVG chart of the evaluation curves: validation loss and top-1 agreement with the final
// layer, one line per exit layer, against the step. Self-contained (no fonts or scripts).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace skiff::train {

struct EvalPoint {
  int64_t step = 0;
  std::vector<double> loss;   // per exit layer 0..L-1
  std::vector<double> agree;  // per exit layer, fraction in [0, 1]
};

std::string render_eval_svg(const std::vector<EvalPoint>& points, const std::string& title);

}  // namespace skiff::train

#include "decode/drafter.h"

#include <algorithm>
#include <cmath>

namespace skiff {

int Drafter::verification_input(std::span<const int32_t> seq, int from, std::vector<float>& hidden) {
  const int dim = target_.config.dim;
  std::span<const int32_t> fresh = seq.subspan(static_cast<size_t>(from));
  hidden.resize(fresh.size() * static_cast<size_t>(dim));
  embed(target_, fresh, hidden.data());
  return 0;
}

float top_probability(std::span<const float> logits) {
  if (logits.empty()) return 0.0f;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (float l : logits) total += std::exp(static_cast<double>(l - max_logit));
  return static_cast<float>(1.0 / total);
}

}  // namespace skiff

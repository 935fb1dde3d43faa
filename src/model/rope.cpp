#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace skiff {
namespace {

// YaRN's correction dim: the pair index whose wavelength fits `rotations` times into the
// original context (ggml_rope_yarn_corr_dim, HF find_correction_dim).
double yarn_correction_dim(int rope_dim, int original_context, double rotations, double theta) {
  return rope_dim * std::log(original_context / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(theta));
}

}  // namespace

const char* rope_scaling_name(RopeScalingType t) {
  switch (t) {
    case RopeScalingType::kLinear: return "linear";
    case RopeScalingType::kYarn: return "yarn";
    case RopeScalingType::kLlama3: return "llama3";
    case RopeScalingType::kNone: break;
  }
  return "none";
}

std::vector<float> llama3_rope_freq_factors(int rope_dim, float theta, const RopeScaling& s) {
  const double low_wavelen = s.original_context / static_cast<double>(s.low_freq_factor);
  const double high_wavelen = s.original_context / static_cast<double>(s.high_freq_factor);
  std::vector<float> factors(static_cast<size_t>(rope_dim / 2));
  for (int i = 0; i < rope_dim / 2; ++i) {
    const double freq = std::pow(static_cast<double>(theta), -2.0 * i / rope_dim);
    const double wavelen = 2.0 * std::numbers::pi / freq;
    double f = 1.0;
    if (wavelen > low_wavelen) {
      f = s.factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (s.original_context / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      f = 1.0 / ((1.0 - smooth) / s.factor + smooth);
    }
    factors[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return factors;
}

RopeFrequencies rope_frequencies(const ModelConfig& c) {
  const int pairs = c.rope_dim / 2;
  const RopeScaling& s = c.rope_scaling;
  std::vector<float> factors = c.rope_freq_factors;
  if (factors.empty() && s.type == RopeScalingType::kLlama3)
    factors = llama3_rope_freq_factors(c.rope_dim, c.rope_theta, s);

  RopeFrequencies r;
  r.inv_freq.resize(static_cast<size_t>(pairs));
  for (int i = 0; i < pairs; ++i) {
    // The same expression as kernels/ops.cpp's plain rope_angles, so unscaled models give
    // bit-identical angles.
    double f = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / c.rope_dim);
    if (!factors.empty()) f /= factors[static_cast<size_t>(i)];
    r.inv_freq[static_cast<size_t>(i)] = f;
  }
  if (s.type == RopeScalingType::kLinear) {
    for (double& f : r.inv_freq) f /= s.factor;
  } else if (s.type == RopeScalingType::kYarn) {
    // Pairs below `low` rotate many times within the original context and keep their
    // frequency (extrapolation); pairs above `high` are interpolated (divided by factor);
    // a linear ramp blends those between. cos/sin grow by 0.1 ln(factor) + 1.
    const int original = s.original_context > 0 ? s.original_context : c.context_length;
    double low = std::floor(yarn_correction_dim(c.rope_dim, original, s.beta_fast, c.rope_theta));
    double high = std::ceil(yarn_correction_dim(c.rope_dim, original, s.beta_slow, c.rope_theta));
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(c.rope_dim - 1));
    for (int i = 0; i < pairs; ++i) {
      const double ramp = std::clamp((i - low) / std::max(0.001, high - low), 0.0, 1.0);
      const double extrapolate = 1.0 - ramp;  // 1: keep the frequency, 0: interpolate
      double& f = r.inv_freq[static_cast<size_t>(i)];
      f = f / s.factor * (1.0 - extrapolate) + f * extrapolate;
    }
    r.mscale = s.attn_factor > 0 ? s.attn_factor
                                 : static_cast<float>(0.1 * std::log(s.factor) + 1.0);
  }
  return r;
}

}  // namespace skiff

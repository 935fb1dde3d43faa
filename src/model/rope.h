// RoPE frequencies of a model: the base frequencies theta^(-2i/rope_dim), divided by
// per-pair factors (Llama 3's rope_freqs), and scaled for context extension (linear, YaRN,
// llama3), in one table of per-pair inverse frequencies plus a cos/sin magnitude. Every
// scheme llama.cpp and Hugging Face use for LLaMA models is such a table, so the decoder
// computes angles the same way for all of them (kernels/ops.h rope_angles).
#pragma once

#include <vector>

#include "model/model.h"

namespace skiff {

struct RopeFrequencies {
  std::vector<double> inv_freq;  // rope_dim / 2 values: angle of pair i = pos * inv_freq[i]
  float mscale = 1.0f;           // cos and sin are multiplied by it (YaRN)
};

RopeFrequencies rope_frequencies(const ModelConfig& c);

// Llama 3's per-pair divisors (what llama.cpp's converter stores as rope_freqs.weight and what
// Hugging Face's "llama3" rope_type computes): 1 for short wavelengths, `factor` for long ones,
// a smooth blend between.
std::vector<float> llama3_rope_freq_factors(int rope_dim, float theta, const RopeScaling& s);

// "none", "linear", "yarn", "llama3".
const char* rope_scaling_name(RopeScalingType t);

}  // namespace skiff

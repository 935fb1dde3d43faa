#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/activation.h"
#include "kernels/cpu.h"

namespace skiff {

void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
  double ss = 0.0;  // double: the sum of 4096 squares should not lose the small ones
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void rope_angles(int n_rot, int pos, const double* inv_freq, float mscale, float* cos_sin) {
  const int half = n_rot / 2;
  for (int i = 0; i < half; ++i) {
    double angle = pos * inv_freq[i];
    cos_sin[i] = static_cast<float>(std::cos(angle)) * mscale;
    cos_sin[half + i] = static_cast<float>(std::sin(angle)) * mscale;
  }
}

void rope_angles(int n_rot, int pos, float theta, float* cos_sin) {
  std::vector<double> inv_freq(static_cast<size_t>(n_rot / 2));
  // Same angle computation as ggml: theta_scale^(i/2) with theta_scale = base^(-2/n_rot).
  for (int i = 0; i < n_rot / 2; ++i)
    inv_freq[static_cast<size_t>(i)] = std::pow(static_cast<double>(theta), -2.0 * i / n_rot);
  rope_angles(n_rot, pos, inv_freq.data(), 1.0f, cos_sin);
}

void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float theta, RopeLayout layout) {
  std::vector<float> cos_sin(static_cast<size_t>(n_rot));
  rope_angles(n_rot, pos, theta, cos_sin.data());
  rope_rotate(x, n_heads, head_dim, n_rot, cos_sin.data(), layout);
}

void rope_rotate(float* x, int n_heads, int head_dim, int n_rot, const float* cos_sin,
                 RopeLayout layout) {
  const int half = n_rot / 2;
  // Pair i is (x[2i], x[2i+1]) or (x[i], x[i + half]).
  const int first_step = layout == RopeLayout::kInterleaved ? 2 : 1;
  const int second = layout == RopeLayout::kInterleaved ? 1 : half;
  for (int i = 0; i < half; ++i) {
    const float c = cos_sin[i], s = cos_sin[half + i];
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + static_cast<int64_t>(h) * head_dim + i * first_step;
      float a = v[0], b = v[second];
      v[0] = a * c - b * s;
      v[second] = a * s + b * c;
    }
  }
}

void exp_f32(const float* x, float* out, int64_t n) {
  if (active_cpu_path() == CpuPath::Avx512) {
    kernels::exp_avx512(x, out, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = std::exp(x[i]);
}

void softmax(float* x, int64_t n) {
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, x[i]);
  for (int64_t i = 0; i < n; ++i) x[i] -= max;
  exp_f32(x, x, n);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void kernels::swiglu_scalar(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void swiglu(float* gate, const float* up, int64_t n) {
  if (active_cpu_path() == CpuPath::Avx512) kernels::swiglu_avx512(gate, up, n);
  else kernels::swiglu_scalar(gate, up, n);
}

void reglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = (gate[i] > 0.0f ? gate[i] : 0.0f) * up[i];
}

}  // namespace skiff

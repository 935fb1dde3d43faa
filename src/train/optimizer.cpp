#include "train/optimizer.h"

#include <cmath>

namespace skiff::train {

double learning_rate(const OptimizerConfig& c, int64_t step) {
  if (step < c.warmup) return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup);
  const int64_t decay_steps = c.total_steps - c.warmup;
  if (decay_steps <= 1) return c.lr;
  double progress = static_cast<double>(step - c.warmup) / static_cast<double>(decay_steps - 1);
  if (progress > 1) progress = 1;
  return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

double global_norm(std::span<const float> g) {
  double s = 0.0;
  for (float x : g) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

double clip_factor(double norm, double clip) {
  if (clip <= 0) return 1.0;
  double f = clip / (norm + 1e-6);
  return f < 1.0 ? f : 1.0;
}

void AdamW::step(std::vector<float>& params, const std::vector<float>& grads, const ParamLayout& layout,
                 const OptimizerConfig& c, double lr, double grad_factor, ThreadPool& pool) {
  ++t_;
  const float b1 = static_cast<float>(c.beta1), b2 = static_cast<float>(c.beta2);
  const float bc1 = static_cast<float>(1.0 - std::pow(c.beta1, static_cast<double>(t_)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(c.beta2, static_cast<double>(t_))));
  const float step_size = static_cast<float>(lr) / bc1;
  const float eps = static_cast<float>(c.eps), gf = static_cast<float>(grad_factor);
  for (const ParamTensor& t : layout.tensors) {
    const float decay = t.is_matrix ? static_cast<float>(1.0 - lr * c.weight_decay) : 1.0f;
    float* p = params.data() + t.offset;
    const float* g = grads.data() + t.offset;
    float* m = m_.data() + t.offset;
    float* v = v_.data() + t.offset;
    pool.parallel_for(static_cast<int64_t>(t.size()), [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        const float gi = g[i] * gf;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * m[i] / denom;
      }
    });
  }
}

}  // namespace skiff::train

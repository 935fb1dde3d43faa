// AdamW (decoupled weight decay, as torch.optim.AdamW computes it), the learning-rate
// schedule (linear warm-up, then cosine decay to min_lr) and global-norm gradient clipping
// (as torch.nn.utils.clip_grad_norm_: scale = clip / (norm + 1e-6) when norm > clip).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/thread_pool.h"
#include "train/train_model.h"

namespace skiff::train {

struct OptimizerConfig {
  double lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup = 0;
  int64_t total_steps = 1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // matrices only (embeddings and linear layers), not norms
  double clip = 1.0;          // <= 0: no clipping
};

// Learning rate for 0-based `step`: lr * (step+1)/warmup during warm-up, then
// min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2 with progress from 0 to 1 over the
// remaining steps.
double learning_rate(const OptimizerConfig& c, int64_t step);

// sqrt(sum g^2) in double, serially (deterministic).
double global_norm(std::span<const float> g);
// The factor clipping multiplies gradients by (1 when no clipping is needed).
double clip_factor(double norm, double clip);

class AdamW {
 public:
  explicit AdamW(size_t n) : m_(n, 0.0f), v_(n, 0.0f) {}
  // One update with gradients `grads * grad_factor`; t() counts updates (bias correction).
  void step(std::vector<float>& params, const std::vector<float>& grads, const ParamLayout& layout,
            const OptimizerConfig& c, double lr, double grad_factor, ThreadPool& pool);
  int64_t t() const { return t_; }
  void set_t(int64_t t) { t_ = t; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }

 private:
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

}  // namespace skiff::train

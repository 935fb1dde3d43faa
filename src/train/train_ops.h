// The operations of the LLaMA block as *_forward / *_backward pairs over float32 row-major
// buffers (llm.c style). Forward functions save what their backward needs in buffers the
// caller owns; backward functions ACCUMULATE (+=) into parameter gradients and, unless
// stated otherwise, into input gradients. Shapes: N rows (tokens), a sample is T
// consecutive rows at positions 0..T-1. Matrix products are in train_kernels.h.
#pragma once

#include <cstdint>
#include <vector>

#include "base/thread_pool.h"

namespace skiff::train {

// out[n] = table[tokens[n]]
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t D);
// dtable[tokens[n]] += dout[n]   (serial: rows may repeat)
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t D);

// out[n] = x[n] * rstd[n] * w, rstd[n] = 1/sqrt(mean(x[n]^2) + eps); saves rstd.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t D,
                     float eps, ThreadPool& pool);
// dx += d/dx, dw += d/dw  (dw summed over rows in order: serial over rows, parallel over D)
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t D, ThreadPool& pool);

// Rotary embedding tables for positions 0..T-1: cos/sin[t][i], i < n_rot/2, angle
// t * theta^(-2i/n_rot) (GGUF "llama" pairing (x[2i], x[2i+1])).
struct RopeTable {
  int T = 0, half = 0;
  std::vector<float> cos, sin;
  void init(int T, int n_rot, float theta);
};
// x[N][heads*head_dim] rotated in place (forward) or by the transpose (backward, on the
// gradient). Row n has position n % T.
void rope_forward(float* x, int64_t N, int heads, int head_dim, const RopeTable& table);
void rope_backward(float* dx, int64_t N, int heads, int head_dim, const RopeTable& table);

// Grouped-query attention per sample: q[N][H*hd], k, v [N][KV*hd] -> out[N][H*hd];
// att[B][H][T][T] saves the probabilities. B = N / T. Row t of sample b attends to the keys
// [first_visible[b*T + t], t] (block attention: an entry of a memory-augmented episode sees
// only itself, so its keys and values do not depend on what precedes it); first_visible ==
// nullptr is plain causal attention from the sample start. Values must satisfy
// 0 <= first_visible[b*T + t] <= t (checked by attention_forward; Error otherwise). Masked-out
// probabilities are exactly 0 in att.
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       const int32_t* first_visible, int64_t B, int T, int H, int KV, int hd,
                       ThreadPool& pool);
// dq, dk, dv are OVERWRITTEN; first_visible as given to attention_forward.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* att,
                        const float* q, const float* k, const float* v, const int32_t* first_visible,
                        int64_t B, int T, int H, int KV, int hd, ThreadPool& pool);

// out = silu(gate) * up
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, ThreadPool& pool);
// dgate, dup OVERWRITTEN.
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n, ThreadPool& pool);

// out = relu(gate) * up (the ReLU-gated FFN of ModelConfig::ffn_activation == kRelu)
void reglu_forward(float* out, const float* gate, const float* up, int64_t n, ThreadPool& pool);
// dgate, dup OVERWRITTEN; relu'(0) = 0. `l1_grad` is added to dgate where gate > 0: the
// gradient of l1_grad * sum(relu(gate)), the activation-sparsity penalty (0: none).
void reglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                    const float* up, int64_t n, float l1_grad, ThreadPool& pool);

// sum(relu(gate)) (in double, summed in a fixed order: the result does not depend on the
// thread count) and how many gate values are <= 0, i.e. give a zero ReLU activation.
struct ReluStats {
  double sum = 0;
  int64_t zeros = 0;
};
ReluStats relu_stats(const float* gate, int64_t n);

// Per row: loss[n] = logsumexp(logits[n]) - logits[n][target[n]], argmax[n]; when
// `grad_scale` != 0 the logits are overwritten by grad_scale * (softmax - onehot(target)).
// A target < 0 is an ignored row (padding, a target in another segment): loss 0 and, when
// `grad_scale` != 0, a zero gradient row; its argmax is still written.
void cross_entropy_forward_backward(float* logits, float* loss, int32_t* argmax,
                                    const int32_t* targets, int64_t N, int64_t V,
                                    float grad_scale, ThreadPool& pool);

// Self-distillation's teacher (LossSpec::exit_distill): out[n] = log_softmax(logits[n]).
void log_softmax_rows(float* out, const float* logits, int64_t N, int64_t V, ThreadPool& pool);

// cross_entropy_forward_backward (no argmax) plus the self-distillation term against a
// detached teacher: per row with a target, kl[n] = sum_v q_v (teacher_logp[n][v] - log p_v)
// = KL(q || p), q = exp(teacher_logp[n]), p = softmax(logits[n]). When `ce_scale` or
// `kl_scale` != 0 the logits are overwritten by ce_scale * (p - onehot(target)) +
// kl_scale * (p - q), the gradient of ce_scale * CE + kl_scale * KL (q is a constant). An
// ignored row (target < 0): loss and kl 0, a zero gradient row.
void cross_entropy_distill_forward_backward(float* logits, float* loss, float* kl, const int32_t* targets,
                                            const float* teacher_logp, int64_t N, int64_t V, float ce_scale,
                                            float kl_scale, ThreadPool& pool);

}  // namespace skiff::train

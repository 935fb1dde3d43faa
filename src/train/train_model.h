// The engine's LLaMA architecture (model/forward.h: RMSNorm, GGUF RoPE, grouped-query causal
// attention, SwiGLU or ReLU-gated FFN (config.ffn_activation), shared final norm + tied or untied head) as a trainable model, llm.c
// style: parameters, gradients and activations live in buffers sized once at construction
// for a batch of B samples of T positions; each op is a *_forward / *_backward pair
// (train_ops.h, train_kernels.h).
//
// LayerSkip hooks: a per-sample skip mask per layer (a skipped layer is the identity for that
// sample: its rows are not even computed) and a loss after any set of layers through the
// shared head, each with its own weight. Block attention (memory-augmented episodes,
// episodes.h): a per-row first visible key and a per-row loss mask. Results do not depend on
// the thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "model/model.h"
#include "train/train_ops.h"

namespace skiff::train {

// One parameter tensor inside the flat buffer, named and shaped as in GGUF.
struct ParamTensor {
  std::string name;
  int64_t rows = 1, cols = 0;  // PyTorch layout [rows][cols]; GGUF dims {cols, rows}
  size_t offset = 0;           // in floats
  bool is_matrix = false;      // weight decay applies to matrices only
  size_t size() const { return static_cast<size_t>(rows * cols); }
};

struct LayerOffsets {
  size_t attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down;
};

// Where each tensor lives; order = GGUF file order (token_embd, output_norm, [output], then
// per layer attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
// ffn_down).
struct ParamLayout {
  std::vector<ParamTensor> tensors;
  size_t token_embd = 0, output_norm = 0, output = 0;  // output == token_embd when tied
  std::vector<LayerOffsets> layers;
  size_t total = 0;
  ParamLayout(const ModelConfig& c, bool tied);
  ParamLayout() = default;  // empty: build with add() (e.g. the flash predictors' trainer)
  // Appends a [rows][cols] tensor (a matrix when rows > 1) and returns its offset.
  size_t add(std::string name, int64_t rows, int64_t cols);
};

struct LossSpec {
  std::vector<int> exit_layers;  // ascending; layer l means "after layer l"
  std::vector<double> scales;    // one per exit layer
  // ProSparse-style activation-sparsity penalty (ReLU-gated models only): each layer that ran
  // adds activation_l1 * sum(relu(gate)) / (B*T * ffn_dim), i.e. lambda times the mean of the
  // FFN intermediate activation over the batch's rows (a row that skipped the layer adds 0).
  double activation_l1 = 0;
  // Self-distillation of the early exits toward the final layer (--exit-distill W), which
  // optimizes self-speculative decoding's acceptance directly. With K = the exits before the
  // last layer (the final layer, L-1, must be among exit_layers; K = 0 adds nothing):
  //   exit_distill / K * sum over those exits l of mean over the rows with a target of
  //   KL(p_final || p_l) = sum_v p_final(v) (log p_final(v) - log p_l(v)),
  // p = the softmax of the shared head's logits after that layer (layer dropout included, as
  // for the CE); p_final is DETACHED (a constant: no gradient reaches the final layer through
  // this term), so d/d logits_l = exit_distill / (K * rows) * (p_l - p_final). The exits are
  // weighted uniformly, not by `scales`: the term is about the drafts, which every exit may be.
  double exit_distill = 0;
};

struct StepResult {
  double loss = 0;                // sum over exits of scale * mean CE (over the rows with a
                                  // target), plus sparsity_loss
  std::vector<double> exit_loss;  // per exit layer of the spec
  double sparsity_loss = 0;       // the activation-sparsity penalty (in `loss`)
  double distill_loss = 0;        // the self-distillation term (LossSpec::exit_distill; in `loss`)
  std::vector<double> exit_kl;    // per exit layer: the mean KL(final || exit) (0 for the last)
  // ReLU-gated models: the fraction of zero FFN activations (gate <= 0) over the rows that ran
  // each layer, averaged over the layers some row ran; 0 for SiLU (never exactly zero).
  double sparsity = 0;
};

class TrainModel {
 public:
  TrainModel(const ModelConfig& config, bool tied, int batch, int seq_len, ThreadPool& pool);

  const ModelConfig& config() const { return config_; }
  bool tied() const { return tied_; }
  int batch() const { return B_; }
  int seq_len() const { return T_; }
  const ParamLayout& layout() const { return layout_; }
  std::vector<float>& params() { return params_; }
  const std::vector<float>& params() const { return params_; }
  std::vector<float>& grads() { return grads_; }

  // Random initialization (from scratch): matrices ~ N(0, 0.02^2), output projections
  // (attn_output, ffn_down) scaled by 1/sqrt(2L), norms 1.
  void init_random(uint64_t seed);
  // Copies the weights of a loaded model (any readable type, dequantized to F32).
  void init_from(const Model& model);

  // Forward over tokens [B][T+1] (inputs are the first T of each row, targets the last T),
  // with skip[b * L + l] (nullptr: no layer skipped). Keeps activations for backward.
  // Block attention: first_visible[b * T + t] is the first row (within sample b) that row t
  // attends to, 0 <= first_visible <= t (nullptr: causal from the sample start; see
  // attention_forward). loss_mask[b * T + t] == 0 drops row t's target from every loss (its
  // target becomes -1); the mean cross-entropy is over the counted rows (nullptr: all count).
  void forward(const int32_t* tokens, const uint8_t* skip, const int32_t* first_visible = nullptr,
               const uint8_t* loss_mask = nullptr);
  // The losses of `spec` after forward(); gradients of loss * grad_scale ACCUMULATE into
  // grads() (call zero_grads() first for a fresh step).
  StepResult backward(const LossSpec& spec, float grad_scale);
  void zero_grads();

  // After forward(): logits [B*T][V] after layer `layer` (0-based; L-1 = the full model),
  // written to `out`; optional per-row CE losses and argmax.
  void exit_logits(int layer, float* out, float* row_loss, int32_t* row_argmax);

  // A Model whose weights are views into params() (F32), for save_model_gguf; shares the
  // tokenizer's vocabulary. Valid while this object lives.
  std::unique_ptr<Model> as_model(const Tokenizer& tokenizer, const std::string& name) const;

 private:
  void layer_forward(int l);
  // first_visible_ of the samples in `active` (compact, as the layer's buffers), or nullptr.
  const int32_t* visible_rows(const std::vector<int>& active);
  // l1_grad: the sparsity penalty's gradient per positive gate value (ReLU only).
  void layer_backward(int l, float* dres, float l1_grad);
  // Self-distillation at one head (LossSpec::exit_distill): keep_teacher stores the head's
  // log-softmax in teacher_logp_ (the final layer, run first); kl != nullptr adds the KL
  // against it (its mean over the counted rows written to *kl) with gradient kl_grad * KL.
  struct HeadDistill {
    bool keep_teacher = false;
    double* kl = nullptr;
    float kl_grad = 0;
  };
  // Head on resid_[layer+1]: loss (+ gradient into dres when a gradient scale != 0).
  double head(int layer, float grad_scale, float* dres, const HeadDistill& distill);

  ModelConfig config_;
  bool tied_;
  int B_, T_;
  int64_t N_;
  ThreadPool& pool_;
  ParamLayout layout_;
  std::vector<float> params_, grads_;
  RopeTable rope_;

  // inputs
  std::vector<int32_t> inputs_, targets_;  // target -1: no loss at that row
  int64_t counted_ = 0;                    // rows with a target
  std::vector<uint8_t> skip_;
  bool block_attention_ = false;           // first_visible_ given (else causal)
  std::vector<int32_t> first_visible_;     // [B*T]
  std::vector<int32_t> visible_active_;    // first_visible_ of a layer's active samples
  // activations
  std::vector<float> resid_;  // [L+1][N][D]
  struct LayerActs {
    std::vector<int> active;  // samples that ran the layer, ascending
    std::vector<float> ln1, rstd1, q, k, v, att, atty, xmid, ln2, rstd2, gate, up, hsw;
  };
  std::vector<LayerActs> acts_;
  // scratch
  std::vector<float> xin_, dc_, dres_, dln_, dq_, dk_, dv_, datty_, dgate_, dup_, dhsw_;
  std::vector<float> hnorm_, hrstd_, logits_, row_loss_, dh_;
  std::vector<float> teacher_logp_, row_kl_;  // [N][V], [N]: sized on first self-distillation
};

}  // namespace skiff::train

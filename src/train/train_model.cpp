#include "train/train_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "model/rope.h"
#include "train/layerskip.h"
#include "train/train_kernels.h"

namespace skiff::train {

size_t ParamLayout::add(std::string name, int64_t rows, int64_t cols) {
  ParamTensor t;
  t.name = std::move(name);
  t.rows = rows;
  t.cols = cols;
  t.offset = total;
  t.is_matrix = rows > 1;
  total += t.size();
  tensors.push_back(t);
  return t.offset;
}

ParamLayout::ParamLayout(const ModelConfig& c, bool tied) {
  const int64_t D = c.dim, QD = c.q_dim(), KVD = c.kv_dim(), F = c.ffn_dim, V = c.vocab_size;
  token_embd = add("token_embd.weight", V, D);
  output_norm = add("output_norm.weight", 1, D);
  output = tied ? token_embd : add("output.weight", V, D);
  for (int l = 0; l < c.n_layers; ++l) {
    std::string p = "blk." + std::to_string(l) + ".";
    LayerOffsets o;
    o.attn_norm = add(p + "attn_norm.weight", 1, D);
    o.wq = add(p + "attn_q.weight", QD, D);
    o.wk = add(p + "attn_k.weight", KVD, D);
    o.wv = add(p + "attn_v.weight", KVD, D);
    o.wo = add(p + "attn_output.weight", D, QD);
    o.ffn_norm = add(p + "ffn_norm.weight", 1, D);
    o.gate = add(p + "ffn_gate.weight", F, D);
    o.up = add(p + "ffn_up.weight", F, D);
    o.down = add(p + "ffn_down.weight", D, F);
    layers.push_back(o);
  }
}

TrainModel::TrainModel(const ModelConfig& config, bool tied, int batch, int seq_len, ThreadPool& pool)
    : config_(config), tied_(tied), B_(batch), T_(seq_len),
      N_(static_cast<int64_t>(batch) * seq_len), pool_(pool), layout_(config, tied) {
  config_.validate("train");
  if (config_.head_dim * config_.n_heads != config_.dim)
    fail("train: the embedding length {} must be the head count {} times the head dimension {}",
         config_.dim, config_.n_heads, config_.head_dim);
  if (config_.rope_layout != RopeLayout::kInterleaved || config_.rope_scaling.type != RopeScalingType::kNone ||
      !config_.rope_freq_factors.empty())
    fail("train: the trainer supports plain RoPE only (interleaved pairs, no frequency scaling or "
         "rope_freqs); this model has {} scaling, {} frequency factors, {} layout",
         rope_scaling_name(config_.rope_scaling.type), config_.rope_freq_factors.size(),
         config_.rope_layout == RopeLayout::kHalves ? "rotate-half" : "interleaved");
  if (batch < 1 || seq_len < 1) fail("train: batch and sequence length must be positive");
  if (seq_len > config_.context_length)
    fail("train: sequence length {} exceeds the model's context length {}", seq_len,
         config_.context_length);
  const auto D = static_cast<size_t>(config_.dim), QD = static_cast<size_t>(config_.q_dim()),
             KVD = static_cast<size_t>(config_.kv_dim()), F = static_cast<size_t>(config_.ffn_dim),
             V = static_cast<size_t>(config_.vocab_size), N = static_cast<size_t>(N_),
             L = static_cast<size_t>(config_.n_layers);
  params_.assign(layout_.total, 0.0f);
  grads_.assign(layout_.total, 0.0f);
  rope_.init(T_, config_.rope_dim, config_.rope_theta);
  inputs_.resize(N);
  targets_.resize(N);
  first_visible_.resize(N);
  visible_active_.resize(N);
  skip_.assign(static_cast<size_t>(B_) * L, 0);
  resid_.resize((L + 1) * N * D);
  acts_.resize(L);
  for (LayerActs& a : acts_) {
    a.ln1.resize(N * D);
    a.rstd1.resize(N);
    a.q.resize(N * QD);
    a.k.resize(N * KVD);
    a.v.resize(N * KVD);
    a.att.resize(static_cast<size_t>(B_) * static_cast<size_t>(config_.n_heads) *
                 static_cast<size_t>(T_) * static_cast<size_t>(T_));
    a.atty.resize(N * QD);
    a.xmid.resize(N * D);
    a.ln2.resize(N * D);
    a.rstd2.resize(N);
    a.gate.resize(N * F);
    a.up.resize(N * F);
    a.hsw.resize(N * F);
  }
  xin_.resize(N * D);
  dc_.resize(N * D);
  dres_.resize(N * D);
  dln_.resize(N * D);
  dq_.resize(N * QD);
  dk_.resize(N * KVD);
  dv_.resize(N * KVD);
  datty_.resize(N * QD);
  dgate_.resize(N * F);
  dup_.resize(N * F);
  dhsw_.resize(N * F);
  hnorm_.resize(N * D);
  hrstd_.resize(N);
  logits_.resize(N * V);
  row_loss_.resize(N);
  dh_.resize(N * D);
}

void TrainModel::init_random(uint64_t seed) {
  const double out_scale = 1.0 / std::sqrt(2.0 * config_.n_layers);
  for (size_t ti = 0; ti < layout_.tensors.size(); ++ti) {
    const ParamTensor& t = layout_.tensors[ti];
    float* p = params_.data() + t.offset;
    if (!t.is_matrix) {
      std::fill(p, p + t.size(), 1.0f);
      continue;
    }
    double std = 0.02;
    if (t.name.find("attn_output") != std::string::npos || t.name.find("ffn_down") != std::string::npos)
      std *= out_scale;
    for (size_t i = 0; i < t.size(); ++i) {
      // Box-Muller from two counter-based uniforms
      double u1 = counter_uniform(seed, 0x696e6974ull, ti, i, 0);
      double u2 = counter_uniform(seed, 0x696e6974ull, ti, i, 1);
      double z = std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);
      p[i] = static_cast<float>(std * z);
    }
  }
}

void TrainModel::init_from(const Model& model) {
  const ModelConfig& c = model.config;
  if (c.dim != config_.dim || c.n_layers != config_.n_layers || c.vocab_size != config_.vocab_size ||
      c.ffn_dim != config_.ffn_dim || c.n_heads != config_.n_heads ||
      c.n_kv_heads != config_.n_kv_heads || model.tied_output != tied_)
    fail("train: {} does not have the shape being trained", model.source);
  auto copy = [&](const TensorView& v, size_t offset) {
    for (int64_t r = 0; r < v.rows; ++r)
      dequantize_row(v.type, v.row(r), params_.data() + offset + static_cast<size_t>(r * v.cols), v.cols);
  };
  copy(model.token_embd, layout_.token_embd);
  copy(model.output_norm, layout_.output_norm);
  if (!tied_) copy(model.output, layout_.output);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model.layers[static_cast<size_t>(l)];
    const LayerOffsets& o = layout_.layers[static_cast<size_t>(l)];
    copy(w.attn_norm, o.attn_norm);
    copy(w.wq, o.wq);
    copy(w.wk, o.wk);
    copy(w.wv, o.wv);
    copy(w.wo, o.wo);
    copy(w.ffn_norm, o.ffn_norm);
    copy(w.ffn_gate, o.gate);
    copy(w.ffn_up, o.up);
    copy(w.ffn_down, o.down);
  }
}

void TrainModel::zero_grads() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

namespace {
// Rows of the samples in `active` (each T rows) copied between a full [B*T][D] buffer and a
// compact [|active|*T][D] one.
void gather(float* compact, const float* full, const std::vector<int>& active, int T, int64_t D) {
  const size_t bytes = sizeof(float) * static_cast<size_t>(T * D);
  for (size_t i = 0; i < active.size(); ++i)
    std::memcpy(compact + static_cast<int64_t>(i) * T * D, full + static_cast<int64_t>(active[i]) * T * D, bytes);
}
void scatter(float* full, const float* compact, const std::vector<int>& active, int T, int64_t D) {
  const size_t bytes = sizeof(float) * static_cast<size_t>(T * D);
  for (size_t i = 0; i < active.size(); ++i)
    std::memcpy(full + static_cast<int64_t>(active[i]) * T * D, compact + static_cast<int64_t>(i) * T * D, bytes);
}
}  // namespace

void TrainModel::forward(const int32_t* tokens, const uint8_t* skip, const int32_t* first_visible,
                         const uint8_t* loss_mask) {
  const int L = config_.n_layers;
  counted_ = 0;
  for (int b = 0; b < B_; ++b)
    for (int t = 0; t < T_; ++t) {
      const int32_t in = tokens[b * (T_ + 1) + t], out = tokens[b * (T_ + 1) + t + 1];
      if (in < 0 || in >= config_.vocab_size || out < 0 || out >= config_.vocab_size)
        fail("train: token id outside the vocabulary of {}", config_.vocab_size);
      const auto n = static_cast<size_t>(b * T_ + t);
      const bool counted = !loss_mask || loss_mask[n] != 0;
      inputs_[n] = in;
      targets_[n] = counted ? out : -1;
      counted_ += counted;
      if (first_visible && (first_visible[n] < 0 || first_visible[n] > t))
        fail("train: first_visible of sample {} row {} is {}, outside [0, {}]", b, t, first_visible[n], t);
    }
  block_attention_ = first_visible != nullptr;
  if (block_attention_) std::copy(first_visible, first_visible + N_, first_visible_.begin());
  if (skip)
    std::copy(skip, skip + static_cast<size_t>(B_) * L, skip_.begin());
  else
    std::fill(skip_.begin(), skip_.end(), 0);
  embedding_forward(resid_.data(), inputs_.data(), params_.data() + layout_.token_embd, N_, config_.dim);
  for (int l = 0; l < L; ++l) layer_forward(l);
}

const int32_t* TrainModel::visible_rows(const std::vector<int>& active) {
  if (!block_attention_) return nullptr;
  for (size_t i = 0; i < active.size(); ++i)
    std::copy_n(first_visible_.begin() + static_cast<int64_t>(active[i]) * T_, T_,
                visible_active_.begin() + static_cast<int64_t>(i) * T_);
  return visible_active_.data();
}

void TrainModel::layer_forward(int l) {
  const ModelConfig& c = config_;
  const int64_t D = c.dim, QD = c.q_dim(), KVD = c.kv_dim(), F = c.ffn_dim;
  const LayerOffsets& o = layout_.layers[static_cast<size_t>(l)];
  const float* P = params_.data();
  LayerActs& a = acts_[static_cast<size_t>(l)];
  float* x = resid_.data() + static_cast<int64_t>(l) * N_ * D;
  float* x_next = x + N_ * D;
  std::copy(x, x + N_ * D, x_next);
  a.active.clear();
  for (int b = 0; b < B_; ++b)
    if (!skip_[static_cast<size_t>(b * c.n_layers + l)]) a.active.push_back(b);
  const int64_t Bn = static_cast<int64_t>(a.active.size()), Na = Bn * T_;
  if (Na == 0) return;
  gather(xin_.data(), x, a.active, T_, D);
  rmsnorm_forward(a.ln1.data(), a.rstd1.data(), xin_.data(), P + o.attn_norm, Na, D, c.rms_eps, pool_);
  matmul_forward(a.q.data(), a.ln1.data(), P + o.wq, Na, D, QD, pool_);
  matmul_forward(a.k.data(), a.ln1.data(), P + o.wk, Na, D, KVD, pool_);
  matmul_forward(a.v.data(), a.ln1.data(), P + o.wv, Na, D, KVD, pool_);
  rope_forward(a.q.data(), Na, c.n_heads, c.head_dim, rope_);
  rope_forward(a.k.data(), Na, c.n_kv_heads, c.head_dim, rope_);
  attention_forward(a.atty.data(), a.att.data(), a.q.data(), a.k.data(), a.v.data(),
                    visible_rows(a.active), Bn, T_, c.n_heads, c.n_kv_heads, c.head_dim, pool_);
  matmul_forward(a.xmid.data(), a.atty.data(), P + o.wo, Na, QD, D, pool_);
  for (int64_t i = 0; i < Na * D; ++i) a.xmid[static_cast<size_t>(i)] += xin_[static_cast<size_t>(i)];
  rmsnorm_forward(a.ln2.data(), a.rstd2.data(), a.xmid.data(), P + o.ffn_norm, Na, D, c.rms_eps, pool_);
  matmul_forward(a.gate.data(), a.ln2.data(), P + o.gate, Na, D, F, pool_);
  matmul_forward(a.up.data(), a.ln2.data(), P + o.up, Na, D, F, pool_);
  if (c.ffn_activation == FfnActivation::kRelu)
    reglu_forward(a.hsw.data(), a.gate.data(), a.up.data(), Na * F, pool_);
  else
    swiglu_forward(a.hsw.data(), a.gate.data(), a.up.data(), Na * F, pool_);
  matmul_forward(dln_.data(), a.hsw.data(), P + o.down, Na, F, D, pool_);
  for (int64_t i = 0; i < Na * D; ++i) dln_[static_cast<size_t>(i)] += a.xmid[static_cast<size_t>(i)];
  scatter(x_next, dln_.data(), a.active, T_, D);
}

double TrainModel::head(int layer, float grad_scale, float* dres, const HeadDistill& distill) {
  const int64_t D = config_.dim, V = config_.vocab_size;
  const float* P = params_.data();
  const float* x = resid_.data() + static_cast<int64_t>(layer + 1) * N_ * D;
  rmsnorm_forward(hnorm_.data(), hrstd_.data(), x, P + layout_.output_norm, N_, D, config_.rms_eps, pool_);
  matmul_forward(logits_.data(), hnorm_.data(), P + layout_.output, N_, D, V, pool_);
  // The mean over the rows that have a target (ignored rows add 0 to the sum and the
  // gradient); a batch with none has loss 0 and no gradient.
  if (counted_ == 0) return 0.0;
  if (distill.keep_teacher) log_softmax_rows(teacher_logp_.data(), logits_.data(), N_, V, pool_);
  const float row_scale = grad_scale / static_cast<float>(counted_);
  bool grad = grad_scale != 0.0f;
  if (distill.kl) {
    const float kl_row_scale = distill.kl_grad / static_cast<float>(counted_);
    cross_entropy_distill_forward_backward(logits_.data(), row_loss_.data(), row_kl_.data(), targets_.data(),
                                           teacher_logp_.data(), N_, V, row_scale, kl_row_scale, pool_);
    double kl = 0.0;
    for (int64_t n = 0; n < N_; ++n) kl += row_kl_[static_cast<size_t>(n)];
    *distill.kl = kl / static_cast<double>(counted_);
    grad = grad || kl_row_scale != 0.0f;
  } else {
    cross_entropy_forward_backward(logits_.data(), row_loss_.data(), nullptr, targets_.data(), N_, V,
                                   row_scale, pool_);
  }
  double sum = 0.0;
  for (int64_t n = 0; n < N_; ++n) sum += row_loss_[static_cast<size_t>(n)];
  if (grad) {
    std::fill(dh_.begin(), dh_.end(), 0.0f);
    matmul_backward_input(dh_.data(), logits_.data(), P + layout_.output, N_, D, V, pool_);
    matmul_backward_weight(grads_.data() + layout_.output, logits_.data(), hnorm_.data(), N_, D, V, pool_);
    rmsnorm_backward(dres, grads_.data() + layout_.output_norm, dh_.data(), x, P + layout_.output_norm,
                     hrstd_.data(), N_, D, pool_);
  }
  return sum / static_cast<double>(counted_);
}

void TrainModel::layer_backward(int l, float* dres, float l1_grad) {
  const ModelConfig& c = config_;
  const int64_t D = c.dim, QD = c.q_dim(), KVD = c.kv_dim(), F = c.ffn_dim;
  const LayerOffsets& o = layout_.layers[static_cast<size_t>(l)];
  const float* P = params_.data();
  float* G = grads_.data();
  LayerActs& a = acts_[static_cast<size_t>(l)];
  const int64_t Bn = static_cast<int64_t>(a.active.size()), Na = Bn * T_;
  if (Na == 0) return;  // the identity: dres passes through
  gather(dc_.data(), dres, a.active, T_, D);
  // out = xmid + act(ln2 Wg^T, ln2 Wu^T) Wd^T, act = swiglu or reglu
  std::fill(dhsw_.begin(), dhsw_.begin() + Na * F, 0.0f);
  matmul_backward_input(dhsw_.data(), dc_.data(), P + o.down, Na, F, D, pool_);
  matmul_backward_weight(G + o.down, dc_.data(), a.hsw.data(), Na, F, D, pool_);
  if (c.ffn_activation == FfnActivation::kRelu)
    reglu_backward(dgate_.data(), dup_.data(), dhsw_.data(), a.gate.data(), a.up.data(), Na * F, l1_grad,
                   pool_);
  else
    swiglu_backward(dgate_.data(), dup_.data(), dhsw_.data(), a.gate.data(), a.up.data(), Na * F, pool_);
  std::fill(dln_.begin(), dln_.begin() + Na * D, 0.0f);
  matmul_backward_input(dln_.data(), dgate_.data(), P + o.gate, Na, D, F, pool_);
  matmul_backward_input(dln_.data(), dup_.data(), P + o.up, Na, D, F, pool_);
  matmul_backward_weight(G + o.gate, dgate_.data(), a.ln2.data(), Na, D, F, pool_);
  matmul_backward_weight(G + o.up, dup_.data(), a.ln2.data(), Na, D, F, pool_);
  rmsnorm_backward(dc_.data(), G + o.ffn_norm, dln_.data(), a.xmid.data(), P + o.ffn_norm,
                   a.rstd2.data(), Na, D, pool_);
  // xmid = xin + attention(rope(ln1 Wq^T), rope(ln1 Wk^T), ln1 Wv^T) Wo^T
  std::fill(datty_.begin(), datty_.begin() + Na * QD, 0.0f);
  matmul_backward_input(datty_.data(), dc_.data(), P + o.wo, Na, QD, D, pool_);
  matmul_backward_weight(G + o.wo, dc_.data(), a.atty.data(), Na, QD, D, pool_);
  attention_backward(dq_.data(), dk_.data(), dv_.data(), datty_.data(), a.att.data(), a.q.data(),
                     a.k.data(), a.v.data(), visible_rows(a.active), Bn, T_, c.n_heads, c.n_kv_heads,
                     c.head_dim, pool_);
  rope_backward(dq_.data(), Na, c.n_heads, c.head_dim, rope_);
  rope_backward(dk_.data(), Na, c.n_kv_heads, c.head_dim, rope_);
  std::fill(dln_.begin(), dln_.begin() + Na * D, 0.0f);
  matmul_backward_input(dln_.data(), dq_.data(), P + o.wq, Na, D, QD, pool_);
  matmul_backward_input(dln_.data(), dk_.data(), P + o.wk, Na, D, KVD, pool_);
  matmul_backward_input(dln_.data(), dv_.data(), P + o.wv, Na, D, KVD, pool_);
  matmul_backward_weight(G + o.wq, dq_.data(), a.ln1.data(), Na, D, QD, pool_);
  matmul_backward_weight(G + o.wk, dk_.data(), a.ln1.data(), Na, D, KVD, pool_);
  matmul_backward_weight(G + o.wv, dv_.data(), a.ln1.data(), Na, D, KVD, pool_);
  gather(xin_.data(), resid_.data() + static_cast<int64_t>(l) * N_ * D, a.active, T_, D);
  rmsnorm_backward(dc_.data(), G + o.attn_norm, dln_.data(), xin_.data(), P + o.attn_norm,
                   a.rstd1.data(), Na, D, pool_);
  scatter(dres, dc_.data(), a.active, T_, D);
}

namespace {
// The number of exits self-distillation averages over (those before the last layer; 0: off);
// throws on a spec it cannot apply to.
int check_distill(const LossSpec& spec, int n_layers) {
  if (!(spec.exit_distill >= 0)) fail("train: the exit self-distillation weight must not be negative");
  if (spec.exit_distill == 0) return 0;
  if (spec.exit_layers.back() != n_layers - 1)
    fail("train: exit self-distillation needs the final layer among the exit layers");
  return static_cast<int>(spec.exit_layers.size()) - 1;
}
}  // namespace

StepResult TrainModel::backward(const LossSpec& spec, float grad_scale) {
  const int L = config_.n_layers;
  if (spec.exit_layers.size() != spec.scales.size() || spec.exit_layers.empty())
    fail("train: loss spec needs one scale per exit layer");
  const bool relu = config_.ffn_activation == FfnActivation::kRelu;
  if (spec.activation_l1 < 0) fail("train: the activation L1 penalty must not be negative");
  if (spec.activation_l1 > 0 && !relu)
    fail("train: the activation L1 penalty needs a ReLU-gated model (this one's FFN activation is {})",
         ffn_activation_name(config_.ffn_activation));
  // d(lambda * sum(relu(gate)) / (N F)) / d gate, where gate > 0
  const double l1_scale = spec.activation_l1 / (static_cast<double>(N_) * config_.ffn_dim);
  const float l1_grad = static_cast<float>(grad_scale * l1_scale);
  const int distill_exits = check_distill(spec, L);
  const bool distill = distill_exits > 0;
  if (distill && teacher_logp_.empty()) {
    teacher_logp_.resize(static_cast<size_t>(N_ * config_.vocab_size));
    row_kl_.resize(static_cast<size_t>(N_));
  }
  StepResult r;
  r.exit_loss.assign(spec.exit_layers.size(), 0.0);
  r.exit_kl.assign(spec.exit_layers.size(), 0.0);
  int ran = 0;  // layers some sample ran
  std::fill(dres_.begin(), dres_.end(), 0.0f);
  int next = static_cast<int>(spec.exit_layers.size()) - 1;
  for (int l = L - 1; l >= 0; --l) {
    if (next >= 0 && spec.exit_layers[static_cast<size_t>(next)] == l) {
      const double s = spec.scales[static_cast<size_t>(next)];
      HeadDistill hd;
      if (distill && l == L - 1) hd.keep_teacher = true;  // the first head run: the teacher
      if (distill && l < L - 1) {
        hd.kl = &r.exit_kl[static_cast<size_t>(next)];
        hd.kl_grad = static_cast<float>(grad_scale * spec.exit_distill / distill_exits);
      }
      double loss = head(l, static_cast<float>(grad_scale * s), dres_.data(), hd);
      r.exit_loss[static_cast<size_t>(next)] = loss;
      r.loss += s * loss;
      --next;
    }
    const LayerActs& a = acts_[static_cast<size_t>(l)];
    if (relu && !a.active.empty()) {
      const int64_t n = static_cast<int64_t>(a.active.size()) * T_ * config_.ffn_dim;
      const ReluStats st = relu_stats(a.gate.data(), n);
      r.sparsity += static_cast<double>(st.zeros) / static_cast<double>(n);
      r.sparsity_loss += l1_scale * st.sum;
      ++ran;
    }
    layer_backward(l, dres_.data(), l1_grad);
  }
  if (ran > 0) r.sparsity /= ran;
  r.loss += r.sparsity_loss;
  if (distill) {
    for (double kl : r.exit_kl) r.distill_loss += kl;
    r.distill_loss *= spec.exit_distill / distill_exits;
    r.loss += r.distill_loss;
  }
  embedding_backward(grads_.data() + layout_.token_embd, dres_.data(), inputs_.data(), N_, config_.dim);
  return r;
}

void TrainModel::exit_logits(int layer, float* out, float* row_loss, int32_t* row_argmax) {
  const int64_t D = config_.dim, V = config_.vocab_size;
  const float* P = params_.data();
  const float* x = resid_.data() + static_cast<int64_t>(layer + 1) * N_ * D;
  rmsnorm_forward(hnorm_.data(), hrstd_.data(), x, P + layout_.output_norm, N_, D, config_.rms_eps, pool_);
  matmul_forward(out, hnorm_.data(), P + layout_.output, N_, D, V, pool_);
  if (row_loss || row_argmax) {
    float* losses = row_loss ? row_loss : row_loss_.data();
    cross_entropy_forward_backward(out, losses, row_argmax, targets_.data(), N_, V, 0.0f, pool_);
  }
}

std::unique_ptr<Model> TrainModel::as_model(const Tokenizer& tokenizer, const std::string& name) const {
  auto m = std::make_unique<Model>();
  m->config = config_;
  m->config.name = name;
  m->tied_output = tied_;
  m->tokenizer = std::make_unique<Tokenizer>(tokenizer.vocab());
  m->source = name;
  m->format = "gguf";
  auto view = [&](const std::string& n, size_t offset, int64_t rows, int64_t cols) {
    return f32_view(params_.data() + offset, rows, cols, n);
  };
  const ModelConfig& c = config_;
  m->token_embd = view("token_embd.weight", layout_.token_embd, c.vocab_size, c.dim);
  m->output_norm = view("output_norm.weight", layout_.output_norm, 1, c.dim);
  m->output = view("output.weight", layout_.output, c.vocab_size, c.dim);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerOffsets& o = layout_.layers[static_cast<size_t>(l)];
    LayerWeights w;
    w.attn_norm = view("attn_norm", o.attn_norm, 1, c.dim);
    w.wq = view("attn_q", o.wq, c.q_dim(), c.dim);
    w.wk = view("attn_k", o.wk, c.kv_dim(), c.dim);
    w.wv = view("attn_v", o.wv, c.kv_dim(), c.dim);
    w.wo = view("attn_output", o.wo, c.dim, c.q_dim());
    w.ffn_norm = view("ffn_norm", o.ffn_norm, 1, c.dim);
    w.ffn_gate = view("ffn_gate", o.gate, c.ffn_dim, c.dim);
    w.ffn_up = view("ffn_up", o.up, c.ffn_dim, c.dim);
    w.ffn_down = view("ffn_down", o.down, c.dim, c.ffn_dim);
    m->layers.push_back(std::move(w));
  }
  return m;
}

}  // namespace skiff::train

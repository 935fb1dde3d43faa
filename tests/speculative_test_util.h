// Helpers for the speculative-decoding tests: tiny random LLaMA models built in memory with
// GgufWriter (GQA, odd sizes, a vocabulary of our own or stories260K's), a checker that the
// target's KV cache equals plain decoding's after every round, and a chi-square test.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "decode/generate.h"
#include "decode/speculative.h"
#include "io/gguf.h"
#include "model/forward.h"
#include "model/model.h"

namespace skiff::testing_spec {

inline const std::string kStories = std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf";

struct RandomShape {
  int dim = 48, n_layers = 4, n_heads = 6, n_kv_heads = 2, ffn_dim = 72, context = 96;
  int vocab = 24;  // own vocabulary of this size; 0: copy stories260K's (512 tokens)
  float layer_scale = 0.6f;  // residual branches' weight scale (small: early exits agree more)
  float head_scale = 3.0f;   // output weights' scale (large: peaked distributions)
  uint32_t seed = 1;
  bool relu = false;  // ReLU-gated FFN (skiff.ffn_activation = relu)
};

// A model and the bytes it is a view of.
struct OwnedModel {
  std::vector<uint8_t> bytes;
  std::unique_ptr<Model> model;
  Model& operator*() { return *model; }
  Model* operator->() { return model.get(); }
};

inline OwnedModel make_random_model(const RandomShape& s) {
  using V = GgufValue;
  GgufWriter w;
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  w.set("general.architecture", V::str("llama"));
  w.set("general.name", V::str("random-" + std::to_string(s.seed)));
  w.set("llama.embedding_length", V::u32(static_cast<uint32_t>(s.dim)));
  w.set("llama.block_count", V::u32(static_cast<uint32_t>(s.n_layers)));
  w.set("llama.feed_forward_length", V::u32(static_cast<uint32_t>(s.ffn_dim)));
  w.set("llama.attention.head_count", V::u32(static_cast<uint32_t>(s.n_heads)));
  w.set("llama.attention.head_count_kv", V::u32(static_cast<uint32_t>(s.n_kv_heads)));
  w.set("llama.context_length", V::u32(static_cast<uint32_t>(s.context)));
  w.set("llama.attention.layer_norm_rms_epsilon", V::f32(1e-5f));
  if (s.relu) w.set("skiff.ffn_activation", V::str("relu"));
  int vocab = s.vocab;
  if (vocab == 0) {
    GgufFile stories = GgufFile::open(kStories);
    for (const auto& [key, value] : stories.metadata())
      if (key.rfind("tokenizer.", 0) == 0) w.set(key, value);
    vocab = static_cast<int>(stories.find("tokenizer.ggml.tokens")->as_array("tokens").size());
  } else {
    std::vector<V> tokens, scores, types;
    for (int i = 0; i < vocab; ++i) {
      std::string piece = i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "\xe2\x96\x81w" + std::to_string(i);
      tokens.push_back(V::str(piece));
      scores.push_back(V::f32(0.0f));
      types.push_back(V::i32(i == 0 ? 2 : i < 3 ? 3 : 1));
    }
    w.set("tokenizer.ggml.model", V::str("llama"));
    w.set("tokenizer.ggml.tokens", V::array(GgufType::STRING, tokens));
    w.set("tokenizer.ggml.scores", V::array(GgufType::FLOAT32, scores));
    w.set("tokenizer.ggml.token_type", V::array(GgufType::INT32, types));
  }
  auto tensor = [&](const std::string& name, int64_t cols, int64_t rows, float scale, float mean = 0.0f) {
    std::vector<float> data(static_cast<size_t>(cols * rows));
    for (float& x : data) x = mean + scale * normal(rng);
    std::vector<int64_t> dims = rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
    w.add_tensor(name, DType::F32, dims,
                 std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size() * 4));
  };
  const int hd = s.dim / s.n_heads, q_dim = hd * s.n_heads, kv_dim = hd * s.n_kv_heads;
  auto inv_sqrt = [](int n) { return 1.0f / std::sqrt(static_cast<float>(n)); };
  tensor("token_embd.weight", s.dim, vocab, 1.0f);
  tensor("output_norm.weight", s.dim, 1, 0.1f, 1.0f);
  tensor("output.weight", s.dim, vocab, s.head_scale * inv_sqrt(s.dim));
  for (int l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    tensor(p + "attn_norm.weight", s.dim, 1, 0.1f, 1.0f);
    tensor(p + "attn_q.weight", s.dim, q_dim, inv_sqrt(s.dim));
    tensor(p + "attn_k.weight", s.dim, kv_dim, inv_sqrt(s.dim));
    tensor(p + "attn_v.weight", s.dim, kv_dim, inv_sqrt(s.dim));
    tensor(p + "attn_output.weight", q_dim, s.dim, s.layer_scale * inv_sqrt(q_dim));
    tensor(p + "ffn_norm.weight", s.dim, 1, 0.1f, 1.0f);
    tensor(p + "ffn_gate.weight", s.dim, s.ffn_dim, inv_sqrt(s.dim));
    tensor(p + "ffn_up.weight", s.dim, s.ffn_dim, inv_sqrt(s.dim));
    tensor(p + "ffn_down.weight", s.ffn_dim, s.dim, s.layer_scale * inv_sqrt(s.ffn_dim));
  }
  OwnedModel m;
  m.bytes = w.serialize();
  m.model = load_model_gguf(MappedFile::borrow(m.bytes, "random-" + std::to_string(s.seed) + ".gguf"));
  return m;
}

// Gives the model's tokenizer another EOS id: stories260K never emits its own EOS (llama2.c
// separates stories with BOS), so tests make a frequent token the end of generation.
inline void set_eos(Model& model, int32_t eos) {
  Vocab v = model.tokenizer->vocab();
  v.eos_id = eos;
  model.tokenizer = std::make_unique<Tokenizer>(std::move(v));
}

struct ArRun {
  std::vector<int32_t> tokens;
  GenerateStats stats;
};

inline ArRun run_autoregressive(const Model& model, std::span<const int32_t> prompt, int n, int context,
                              SamplerParams sp = {0.0f}) {
  Context ctx(model, context, 1);
  Sampler sampler(sp);
  ArRun r;
  r.stats = generate(ctx, sampler, prompt, n, [&](int32_t t) {
    r.tokens.push_back(t);
    return true;
  });
  return r;
}

// After every round, the target's cache must be the one plain decoding has at that point:
// all layers at the same length (n-1, or n at EOS), and the same keys and values bit for bit.
class CacheChecker {
 public:
  CacheChecker(const Model& model, int context) : ref_(model, context, 1) {}

  void after_round(const Context& target, std::span<const int32_t> tokens, bool eos) {
    const KvCache& c = target.cache();
    const int want = static_cast<int>(tokens.size()) - (eos ? 0 : 1);
    for (int l = 0; l < c.n_layers(); ++l) ASSERT_EQ(c.length(l), want) << "layer " << l;
    if (want > ref_len_) {
      const int dim = ref_.model().config.dim;
      std::vector<float> h(static_cast<size_t>(want - ref_len_) * dim);
      embed(ref_.model(), tokens.subspan(static_cast<size_t>(ref_len_), static_cast<size_t>(want - ref_len_)), h.data());
      forward(ref_, h.data(), want - ref_len_, 0, ref_.model().config.n_layers);
      ref_len_ = want;
    }
    compare(target, checked_, want);
    checked_ = want;
  }
  // The whole cache, once at the end.
  void final_check(const Context& target) { compare(target, 0, checked_); }

 private:
  void compare(const Context& target, int from, int to) {
    const KvCache& a = target.cache();
    const KvCache& b = ref_.cache();
    const size_t bytes = static_cast<size_t>(a.kv_dim()) * sizeof(float);
    for (int l = 0; l < a.n_layers(); ++l)
      for (int p = from; p < to; ++p) {
        ASSERT_EQ(std::memcmp(a.key(l, p), b.key(l, p), bytes), 0) << "key, layer " << l << " position " << p;
        ASSERT_EQ(std::memcmp(a.value(l, p), b.value(l, p), bytes), 0) << "value, layer " << l << " position " << p;
      }
  }
  Context ref_;
  int ref_len_ = 0, checked_ = 0;
};

// Pearson's chi-square of observed counts against probabilities (bins with expected count
// < 5 pooled). Returns {statistic, degrees of freedom}.
inline std::pair<double, int> chi_square(const std::vector<double>& expected_probs, const std::vector<int64_t>& counts) {
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  double stat = 0, pooled_e = 0, pooled_o = 0;
  int bins = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = expected_probs[i] * static_cast<double>(total);
    if (e < 5.0) {
      pooled_e += e;
      pooled_o += static_cast<double>(counts[i]);
      continue;
    }
    stat += (counts[i] - e) * (counts[i] - e) / e;
    ++bins;
  }
  if (pooled_e > 0) {
    // An observed count where nothing was expected is a failure however little was pooled.
    const double e = std::max(pooled_e, 1e-9);
    stat += (pooled_o - pooled_e) * (pooled_o - pooled_e) / e;
    ++bins;
  }
  return {stat, std::max(1, bins - 1)};
}

// The chi-square quantile at 1 - 1e-4 (Wilson-Hilferty): a false failure once in 10000.
inline double chi_square_critical(int df) {
  const double z = 3.719, k = static_cast<double>(df);
  const double a = 1.0 - 2.0 / (9.0 * k) + z * std::sqrt(2.0 / (9.0 * k));
  return k * a * a * a;
}

}  // namespace skiff::testing_spec

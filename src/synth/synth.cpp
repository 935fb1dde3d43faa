#include "synth/synth.h"

#include <cmath>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "io/export_gguf.h"
#include "io/gguf.h"
#include "model/rope.h"

namespace skiff {
namespace {

// splitmix64: a small, fast generator; seeded per row so the output does not depend on
// the thread count.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>((next() >> 40) + 1) * (1.0f / 16777217.0f); }  // (0, 1)
};

void fill_normal(Rng& rng, float* out, int64_t n, float sigma) {
  constexpr float kTwoPi = 6.28318530718f;
  for (int64_t i = 0; i < n; i += 2) {  // Box-Muller
    float r = sigma * std::sqrt(-2.0f * std::log(rng.uniform()));
    float a = kTwoPi * rng.uniform();
    out[i] = r * std::cos(a);
    if (i + 1 < n) out[i + 1] = r * std::sin(a);
  }
}

}  // namespace

SynthShape llama_shape(std::string name, int dim, int n_layers, int n_heads, int n_kv_heads, int ffn_dim,
                       int vocab_size, int context_length) {
  SynthShape s;
  s.name = std::move(name);
  s.dim = dim;
  s.n_layers = n_layers;
  s.n_heads = n_heads;
  s.n_kv_heads = n_kv_heads;
  s.ffn_dim = ffn_dim;
  s.vocab_size = vocab_size;
  s.context_length = context_length;
  return s;
}

std::optional<SynthShape> synth_shape(std::string_view name) {
  if (name == "tinyllama") return llama_shape("tinyllama", 2048, 16, 32, 8, 5632, 32000, 2048);
  if (name == "small") return llama_shape("small", 512, 8, 8, 4, 1408, 32000, 1024);
  if (name == "tiny") return llama_shape("tiny", 64, 2, 4, 2, 192, 32000, 256);
  if (name == "llama3-1b" || name == "llama3-8b") {
    const bool small = name == "llama3-1b";
    SynthShape s = small ? llama_shape("llama3-1b", 2048, 16, 32, 8, 8192, 128256, 131072)
                         : llama_shape("llama3-8b", 4096, 32, 32, 8, 14336, 128256, 131072);
    s.rope_theta = 500000.0f;
    s.tied = small;
    s.rope_scaling.type = RopeScalingType::kLlama3;
    s.rope_scaling.factor = small ? 32.0f : 8.0f;
    s.rope_scaling.original_context = 8192;
    s.rope_scaling.low_freq_factor = 1.0f;
    s.rope_scaling.high_freq_factor = 4.0f;
    return s;
  }
  return std::nullopt;
}

std::string synth_shape_names() { return "tinyllama, small, tiny, llama3-1b, llama3-8b"; }

void write_synthetic_model(const SynthOptions& o, const std::string& path,
                           const std::function<void(int, int)>& progress) {
  const SynthShape& s = o.shape;
  const QuantScheme scheme = o.scheme ? *o.scheme : QuantScheme{o.type, false};
  {
    std::vector<float> probe(static_cast<size_t>(traits(scheme.base).block_size));
    std::vector<uint8_t> out(row_bytes(scheme.base, traits(scheme.base).block_size));
    if (!quantize_row(scheme.base, probe.data(), out.data(), traits(scheme.base).block_size))
      fail("synth cannot write tensors of type {}", dtype_name(scheme.base));
  }
  if (o.planted_exit != 0) {
    if (o.planted_exit < 1 || o.planted_exit >= s.n_layers)
      fail("--planted-exit {} must be in 1..{} (the shape '{}' has {} layers)", o.planted_exit, s.n_layers - 1,
           s.name, s.n_layers);
    if (!(o.planted_scale > 0.0f) || !std::isfinite(o.planted_scale))
      fail("--planted-scale {} must be a finite number > 0", o.planted_scale);
  }
  GgufFile vocab = GgufFile::open(o.vocab_path);
  const GgufValue* tokens = vocab.find("tokenizer.ggml.tokens");
  if (tokens == nullptr) fail("{}: no tokenizer.ggml.tokens", o.vocab_path);
  const int64_t n_tokens = static_cast<int64_t>(tokens->as_array("tokenizer.ggml.tokens").size());
  if (n_tokens != s.vocab_size)
    fail("{}: holds {} tokens, the shape needs {}", o.vocab_path, n_tokens, s.vocab_size);

  const int head_dim = s.dim / s.n_heads, kv_dim = head_dim * s.n_kv_heads;
  GgufWriter w;
  w.set("general.architecture", GgufValue::str("llama"));
  w.set("general.name", GgufValue::str("skiff-synth-" + s.name));
  w.set("general.file_type", GgufValue::u32(quant_scheme_file_type(scheme)));
  w.set("llama.context_length", GgufValue::u32(static_cast<uint32_t>(s.context_length)));
  w.set("llama.embedding_length", GgufValue::u32(static_cast<uint32_t>(s.dim)));
  w.set("llama.block_count", GgufValue::u32(static_cast<uint32_t>(s.n_layers)));
  w.set("llama.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(s.ffn_dim)));
  w.set("llama.rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(head_dim)));
  w.set("llama.attention.head_count", GgufValue::u32(static_cast<uint32_t>(s.n_heads)));
  w.set("llama.attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(s.n_kv_heads)));
  w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(1e-5f));
  w.set("llama.rope.freq_base", GgufValue::f32(s.rope_theta));
  w.set("llama.vocab_size", GgufValue::u32(static_cast<uint32_t>(s.vocab_size)));
  if (o.planted_exit > 0) {  // informational: skiff and llama.cpp ignore these keys
    w.set("skiff.synth.planted_exit", GgufValue::u32(static_cast<uint32_t>(o.planted_exit)));
    w.set("skiff.synth.planted_scale", GgufValue::f32(o.planted_scale));
  }
  for (const auto& [key, value] : vocab.metadata())
    if (key.rfind("tokenizer.ggml.", 0) == 0 || key == "tokenizer.chat_template") w.set(key, value);

  struct Spec {
    std::string name;
    int64_t cols, rows;  // rows == 0: a norm vector
    float scale = 1.0f;  // multiplies the random values (the planted early exit)
  };
  std::vector<float> rope_freqs;
  if (s.rope_scaling.type == RopeScalingType::kLlama3) {
    rope_freqs = llama3_rope_freq_factors(head_dim, s.rope_theta, s.rope_scaling);
    w.add_tensor("rope_freqs.weight", DType::F32, {static_cast<int64_t>(rope_freqs.size())},
                 std::span(reinterpret_cast<const uint8_t*>(rope_freqs.data()), rope_freqs.size() * sizeof(float)));
  }
  std::vector<Spec> specs = {{"token_embd.weight", s.dim, s.vocab_size}, {"output_norm.weight", s.dim, 0}};
  if (!s.tied) specs.push_back({"output.weight", s.dim, s.vocab_size});
  for (int l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const float planted = o.planted_exit > 0 && l >= o.planted_exit ? o.planted_scale : 1.0f;
    specs.push_back({p + "attn_norm.weight", s.dim, 0});
    specs.push_back({p + "attn_q.weight", s.dim, s.dim});
    specs.push_back({p + "attn_k.weight", s.dim, kv_dim});
    specs.push_back({p + "attn_v.weight", s.dim, kv_dim});
    specs.push_back({p + "attn_output.weight", s.dim, s.dim, planted});
    specs.push_back({p + "ffn_norm.weight", s.dim, 0});
    specs.push_back({p + "ffn_gate.weight", s.dim, s.ffn_dim});
    specs.push_back({p + "ffn_up.weight", s.dim, s.ffn_dim});
    specs.push_back({p + "ffn_down.weight", s.ffn_dim, s.dim, planted});
  }

  ThreadPool pool(o.threads);
  int done = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& t = specs[i];
    if (t.rows == 0) {
      std::vector<float> ones(static_cast<size_t>(t.cols), 1.0f);
      w.add_tensor(t.name, DType::F32, {t.cols},
                   std::span(reinterpret_cast<const uint8_t*>(ones.data()), ones.size() * sizeof(float)));
    } else {
      const DType type = quant_tensor_type(scheme, t.name, t.cols, s.n_layers, !s.tied);
      const size_t rb = row_bytes(type, t.cols);
      std::vector<uint8_t> data(rb * static_cast<size_t>(t.rows));
      pool.parallel_for_dynamic(t.rows, 64, [&](int64_t b, int64_t e, int) {
        std::vector<float> row(static_cast<size_t>(t.cols));
        for (int64_t r = b; r < e; ++r) {
          Rng rng{o.seed * 0x100000001B3ull ^ (uint64_t{i} << 40) ^ static_cast<uint64_t>(r)};
          rng.next();
          fill_normal(rng, row.data(), t.cols, 0.02f);
          if (t.scale != 1.0f)
            for (float& v : row) v *= t.scale;
          quantize_row(type, row.data(), data.data() + rb * static_cast<size_t>(r), t.cols);
        }
      });
      w.add_tensor(t.name, type, {t.cols, t.rows}, data);
    }
    if (progress) progress(++done, static_cast<int>(specs.size()));
  }
  w.write(path);
}

}  // namespace skiff

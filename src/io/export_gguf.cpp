#include "io/export_gguf.h"

#include <cmath>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"
#include "model/model.h"
#include "model/rope.h"

namespace skiff {
namespace {

// Row order that turns a head's rotate-half layout (Hugging Face) into interleaved pairs
// (GGUF "llama"): out row h*hd + 2j + k is in row h*hd + k*hd/2 + j, as llama.cpp's converter
// permutes q/k. Empty when the rows need no reordering.
std::vector<int64_t> interleave_rows(const ModelConfig& c, int64_t rows) {
  if (c.rope_layout == RopeLayout::kInterleaved) return {};
  if (c.rope_dim != c.head_dim)
    fail("cannot write a rotate-half model with rope dimension {} != head dimension {} as GGUF",
         c.rope_dim, c.head_dim);
  const int64_t hd = c.head_dim, half = hd / 2;
  std::vector<int64_t> order(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t head = r / hd, j = (r % hd) / 2, k = r % 2;
    order[static_cast<size_t>(r)] = head * hd + k * half + j;
  }
  return order;
}

void write_rope_keys(GgufWriter& writer, const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScalingType::kLinear || s.type == RopeScalingType::kYarn) {
    writer.set("llama.rope.scaling.type", GgufValue::str(rope_scaling_name(s.type)));
    writer.set("llama.rope.scaling.factor", GgufValue::f32(s.factor));
    if (s.original_context > 0)
      writer.set("llama.rope.scaling.original_context_length",
                 GgufValue::u32(static_cast<uint32_t>(s.original_context)));
    if (s.type == RopeScalingType::kYarn && s.attn_factor > 0)  // llama.cpp's factor of 0.1 ln(f) + 1
      writer.set("llama.rope.scaling.attn_factor",
                 GgufValue::f32(static_cast<float>(s.attn_factor / (0.1 * std::log(s.factor) + 1.0))));
  }
}

}  // namespace

uint32_t llama_file_type(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 7;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::Q4_K: return 15;
    case DType::Q5_K: return 17;
    case DType::Q6_K: return 18;
    case DType::BF16: return 32;
    default: return 0;
  }
}

void save_model_gguf(const Model& model, const std::string& path, DType type,
                     const std::function<void(int, int)>& progress) {
  save_model_gguf(model, path, QuantScheme{type, false}, progress);
}

void save_model_gguf(const Model& model, const std::string& path, const QuantScheme& scheme,
                     const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config;
  const DType type = scheme.base;
  {
    std::vector<float> probe(static_cast<size_t>(traits(type).block_size));
    std::vector<uint8_t> out(row_bytes(type, traits(type).block_size));
    if (!quantize_row(type, probe.data(), out.data(), traits(type).block_size))
      fail("cannot write tensors of type {}", dtype_name(type));
  }
  GgufWriter writer;
  writer.set("general.architecture", GgufValue::str("llama"));
  writer.set("general.name", GgufValue::str(c.name.empty() ? "skiff" : c.name));
  writer.set("general.file_type", GgufValue::u32(quant_scheme_file_type(scheme)));
  writer.set("llama.context_length", GgufValue::u32(static_cast<uint32_t>(c.context_length)));
  writer.set("llama.embedding_length", GgufValue::u32(static_cast<uint32_t>(c.dim)));
  writer.set("llama.block_count", GgufValue::u32(static_cast<uint32_t>(c.n_layers)));
  writer.set("llama.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(c.ffn_dim)));
  writer.set("llama.rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(c.rope_dim)));
  writer.set("llama.attention.head_count", GgufValue::u32(static_cast<uint32_t>(c.n_heads)));
  writer.set("llama.attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(c.n_kv_heads)));
  writer.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(c.rms_eps));
  writer.set("llama.rope.freq_base", GgufValue::f32(c.rope_theta));
  if (c.head_dim * c.n_heads != c.dim) {
    writer.set("llama.attention.key_length", GgufValue::u32(static_cast<uint32_t>(c.head_dim)));
    writer.set("llama.attention.value_length", GgufValue::u32(static_cast<uint32_t>(c.head_dim)));
  }
  write_rope_keys(writer, c);
  writer.set("llama.vocab_size", GgufValue::u32(static_cast<uint32_t>(c.vocab_size)));
  // SiLU is the llama default; only ReLU-gated models carry the key (llama.cpp ignores it).
  if (c.ffn_activation == FfnActivation::kRelu)
    writer.set("skiff.ffn_activation", GgufValue::str("relu"));

  write_vocab_gguf(model.tokenizer->vocab(), writer);

  std::vector<std::pair<std::string, const TensorView*>> tensors;
  // Llama 3 scaling travels as per-pair frequency divisors, as llama.cpp expects.
  std::vector<float> freq_factors = c.rope_freq_factors;
  if (freq_factors.empty() && c.rope_scaling.type == RopeScalingType::kLlama3)
    freq_factors = llama3_rope_freq_factors(c.rope_dim, c.rope_theta, c.rope_scaling);
  TensorView rope_freqs;
  if (!freq_factors.empty()) {
    rope_freqs.name = "rope_freqs.weight";
    rope_freqs.type = DType::F32;
    rope_freqs.cols = static_cast<int64_t>(freq_factors.size());
    rope_freqs.rows = 1;
    rope_freqs.data = reinterpret_cast<const uint8_t*>(freq_factors.data());
    rope_freqs.row_stride = row_bytes(DType::F32, rope_freqs.cols);
    tensors.emplace_back("rope_freqs.weight", &rope_freqs);
  }
  tensors.emplace_back("token_embd.weight", &model.token_embd);
  tensors.emplace_back("output_norm.weight", &model.output_norm);
  if (!model.tied_output) tensors.emplace_back("output.weight", &model.output);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model.layers[static_cast<size_t>(l)];
    std::string p = "blk." + std::to_string(l) + ".";
    tensors.emplace_back(p + "attn_norm.weight", &w.attn_norm);
    tensors.emplace_back(p + "attn_q.weight", &w.wq);
    tensors.emplace_back(p + "attn_k.weight", &w.wk);
    tensors.emplace_back(p + "attn_v.weight", &w.wv);
    tensors.emplace_back(p + "attn_output.weight", &w.wo);
    tensors.emplace_back(p + "ffn_norm.weight", &w.ffn_norm);
    tensors.emplace_back(p + "ffn_gate.weight", &w.ffn_gate);
    tensors.emplace_back(p + "ffn_up.weight", &w.ffn_up);
    tensors.emplace_back(p + "ffn_down.weight", &w.ffn_down);
  }

  int done = 0;
  std::vector<float> row;
  for (const auto& [name, t] : tensors) {
    if (t->empty()) {  // e.g. a flash pack's resident model, whose ffn_up/ffn_down are absent
      if (progress) progress(++done, static_cast<int>(tensors.size()));
      continue;
    }
    bool is_vector = t->rows == 1;
    DType out_type =
        is_vector ? DType::F32 : quant_tensor_type(scheme, name, t->cols, c.n_layers, !model.tied_output);
    const bool rotated = name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight");
    const std::vector<int64_t> order = rotated ? interleave_rows(c, t->rows) : std::vector<int64_t>{};
    auto source_row = [&](int64_t r) { return order.empty() ? r : order[static_cast<size_t>(r)]; };
    if (t->type == out_type && order.empty()) {
      writer.add_tensor(name, out_type, is_vector ? std::vector<int64_t>{t->cols}
                                                  : std::vector<int64_t>{t->cols, t->rows},
                        std::span<const uint8_t>(t->data, t->nbytes()));
    } else {
      size_t rb = row_bytes(out_type, t->cols);
      std::vector<uint8_t> data(rb * static_cast<size_t>(t->rows));
      row.resize(static_cast<size_t>(t->cols));
      for (int64_t r = 0; r < t->rows; ++r) {
        uint8_t* out = data.data() + rb * static_cast<size_t>(r);
        if (t->type == out_type) {  // only reordered
          std::copy_n(t->row(source_row(r)), rb, out);
          continue;
        }
        dequantize_row(t->type, t->row(source_row(r)), row.data(), t->cols);
        quantize_row(out_type, row.data(), out, t->cols);
      }
      writer.add_tensor(name, out_type, is_vector ? std::vector<int64_t>{t->cols}
                                                  : std::vector<int64_t>{t->cols, t->rows},
                        data);
    }
    if (progress) progress(++done, static_cast<int>(tensors.size()));
  }
  writer.write(path);
}

void copy_gguf(const GgufFile& source, const std::string& path,
               const std::function<bool(const GgufTensorInfo&)>& keep,
               const std::vector<std::pair<std::string, GgufValue>>& extra) {
  GgufWriter writer(source.alignment());
  for (const auto& [key, value] : source.metadata()) writer.set(key, value);
  for (const auto& [key, value] : extra) writer.set(key, value);
  for (const GgufTensorInfo& t : source.tensors()) {
    if (keep && !keep(t)) continue;
    writer.add_tensor(t.name, t.type, t.dims, std::span<const uint8_t>(t.data, t.nbytes));
  }
  writer.write(path);
}

}  // namespace skiff

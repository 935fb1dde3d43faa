// Builds a Model from a GGUF file of architecture "llama": hyper-parameters from the llama.*
// keys, weights as views into the mapping, each tensor checked against the shape the
// hyper-parameters imply. "skiff.ffn_activation" (optional) selects the FFN gate's nonlinearity.
#include <cmath>

#include "base/error.h"
#include "model/load_util.h"
#include "model/model.h"

namespace skiff {
namespace {

struct Loader {
  Model& model;
  const GgufFile& gguf;

  const GgufTensorInfo& find(const std::string& name) const {
    const GgufTensorInfo* t = gguf.find_tensor(name);
    if (t == nullptr) fail("{}: missing tensor {}", gguf.path(), name);
    return *t;
  }

  void check_readable(const GgufTensorInfo& t) const {
    if (!traits(t.type).can_dequantize)
      fail("{}: tensor {} has type {}, which skiff cannot read yet", gguf.path(), t.name,
           dtype_name(t.type));
  }

  // A matrix of `rows` x `cols` (GGUF dims {cols, rows}).
  TensorView matrix(const std::string& name, int64_t cols, int64_t rows) const {
    const GgufTensorInfo& t = find(name);
    bool ok = (t.dims.size() == 2 && t.dims[0] == cols && t.dims[1] == rows) ||
              (t.dims.size() == 1 && rows == 1 && t.dims[0] == cols);
    if (!ok)
      fail("{}: tensor {} has shape {}, expected [{}, {}] from the hyper-parameters", gguf.path(),
           name, shape_string(t.dims), cols, rows);
    check_readable(t);
    TensorView v;
    v.name = name;
    v.type = t.type;
    v.cols = cols;
    v.rows = rows;
    v.data = t.data;
    v.row_stride = row_bytes(t.type, cols);
    return v;
  }

  // Like matrix(), but an absent tensor gives an empty view.
  TensorView optional_matrix(const std::string& name, int64_t cols, int64_t rows) const {
    if (gguf.find_tensor(name) == nullptr) return TensorView{};
    return matrix(name, cols, rows);
  }

  // A norm weight vector: always F32 in memory (converted once if the file stores another type).
  TensorView vector(const std::string& name, int64_t n) const {
    return f32_vector(model, matrix(name, n, 1));
  }
};

int to_int(const GgufFile& gguf, const std::string& key, int64_t v) {
  if (v < 0 || v > (int64_t{1} << 30)) fail("{}: metadata {} = {} is out of range", gguf.path(), key, v);
  return static_cast<int>(v);
}

FfnActivation read_activation(const GgufFile& gguf) {
  const char* const kKey = "skiff.ffn_activation";
  if (gguf.find(kKey) == nullptr) return FfnActivation::kSilu;
  std::string value = gguf.get_string(kKey, "");
  std::optional<FfnActivation> a = parse_ffn_activation(value);
  if (!a)
    fail("{}: metadata {} = '{}' is not a known activation (silu or relu)", gguf.path(), kKey,
         value);
  return *a;
}

// llama.cpp's {arch}.rope.scaling.* keys. An absent type with a factor is linear, as in
// llama.cpp (which also reads the older rope.scale_linear).
RopeScaling read_rope_scaling(const GgufFile& gguf) {
  RopeScaling s;
  const std::string type = gguf.get_string("llama.rope.scaling.type", "");
  double factor = gguf.get_double("llama.rope.scaling.factor", gguf.get_double("llama.rope.scale_linear", 0.0));
  if (type == "none" || (type.empty() && factor == 0.0)) return s;
  if (type == "linear" || type.empty()) {
    s.type = RopeScalingType::kLinear;
  } else if (type == "yarn") {
    s.type = RopeScalingType::kYarn;
  } else {
    fail("{}: metadata llama.rope.scaling.type = '{}' is not supported (none, linear, yarn)", gguf.path(), type);
  }
  if (factor == 0.0) factor = 1.0;
  s.factor = static_cast<float>(factor);
  s.original_context = to_int(gguf, "llama.rope.scaling.original_context_length",
                              gguf.get_int("llama.rope.scaling.original_context_length", 0));
  // llama.cpp multiplies YaRN's cos/sin by attn_factor * (0.1 ln(factor) + 1); skiff keeps
  // that product (Hugging Face's attention_factor).
  if (s.type == RopeScalingType::kYarn && gguf.find("llama.rope.scaling.attn_factor") != nullptr)
    s.attn_factor = static_cast<float>(gguf.get_double("llama.rope.scaling.attn_factor", 1.0) *
                                       (0.1 * std::log(factor) + 1.0));
  return s;
}

}  // namespace

const char* ffn_activation_name(FfnActivation a) {
  return a == FfnActivation::kRelu ? "relu" : "silu";
}

std::optional<FfnActivation> parse_ffn_activation(const std::string& name) {
  if (name == "silu") return FfnActivation::kSilu;
  if (name == "relu") return FfnActivation::kRelu;
  return std::nullopt;
}

std::unique_ptr<Model> load_model_gguf(std::shared_ptr<MappedFile> file) {
  return load_model_gguf(std::move(file), LoadOptions{});
}

std::unique_ptr<Model> load_model_gguf(std::shared_ptr<MappedFile> file,
                                       const LoadOptions& options) {
  auto model = std::make_unique<Model>();
  model->source = file->name();
  model->format = "gguf";
  model->file = file;
  model->gguf = GgufFile::parse(std::move(file));
  const GgufFile& gguf = *model->gguf;

  std::string arch = gguf.get_string("general.architecture", "");
  if (arch.empty()) fail("{}: missing metadata key general.architecture", gguf.path());
  if (arch != "llama") fail("{}: architecture '{}' is not supported (only 'llama')", gguf.path(), arch);

  ModelConfig& c = model->config;
  auto key = [](const char* k) { return std::string("llama.") + k; };
  auto get = [&](const char* k) { return to_int(gguf, key(k), gguf.get_int(key(k))); };
  c.name = gguf.get_string("general.name", "");
  c.dim = get("embedding_length");
  c.n_layers = get("block_count");
  c.ffn_dim = get("feed_forward_length");
  c.n_heads = get("attention.head_count");
  c.n_kv_heads = to_int(gguf, key("attention.head_count_kv"),
                        gguf.get_int(key("attention.head_count_kv"), c.n_heads));
  c.context_length = to_int(gguf, key("context_length"), gguf.get_int(key("context_length"), 2048));
  c.rms_eps = static_cast<float>(gguf.get_double(key("attention.layer_norm_rms_epsilon"), 1e-5));
  c.rope_theta = static_cast<float>(gguf.get_double(key("rope.freq_base"), 10000.0));
  c.ffn_activation = read_activation(gguf);
  c.head_dim = to_int(gguf, key("attention.key_length"),
                      gguf.get_int(key("attention.key_length"), c.n_heads > 0 ? c.dim / c.n_heads : 0));
  if (gguf.find(key("attention.value_length")) != nullptr &&
      gguf.get_int(key("attention.value_length")) != c.head_dim)
    fail("{}: metadata {} = {} differs from the key length {} (skiff needs them equal)", gguf.path(),
         key("attention.value_length"), gguf.get_int(key("attention.value_length")), c.head_dim);
  c.rope_scaling = read_rope_scaling(gguf);
  c.rope_dim = to_int(gguf, key("rope.dimension_count"),
                      gguf.get_int(key("rope.dimension_count"), c.head_dim));

  const GgufTensorInfo* embd = gguf.find_tensor("token_embd.weight");
  if (embd == nullptr) fail("{}: missing tensor token_embd.weight", gguf.path());
  if (embd->dims.size() != 2) fail("{}: tensor token_embd.weight must have 2 dims", gguf.path());
  c.vocab_size = static_cast<int>(std::min<int64_t>(embd->dims[1], int64_t{1} << 30));
  if (const GgufValue* v = gguf.find(key("vocab_size")); v != nullptr && v->as_int(key("vocab_size")) != c.vocab_size)
    fail("{}: metadata {} = {} disagrees with token_embd.weight's {} rows", gguf.path(), key("vocab_size"),
         v->as_int(key("vocab_size")), c.vocab_size);
  Loader load{*model, gguf};
  // Llama 3.1+: per-pair frequency divisors (llama.cpp reads the same tensor).
  if (gguf.find_tensor("rope_freqs.weight") != nullptr && c.rope_dim > 0 && c.rope_dim % 2 == 0) {
    TensorView f = load.vector("rope_freqs.weight", c.rope_dim / 2);
    c.rope_freq_factors.assign(f.f32(), f.f32() + c.rope_dim / 2);
  }
  c.validate(gguf.path());

  model->token_embd = load.matrix("token_embd.weight", c.dim, c.vocab_size);
  model->output_norm = load.vector("output_norm.weight", c.dim);
  if (gguf.find_tensor("output.weight") != nullptr) {
    model->output = load.matrix("output.weight", c.dim, c.vocab_size);
  } else {
    model->output = model->token_embd;
    model->tied_output = true;
  }
  for (int l = 0; l < c.n_layers; ++l) {
    auto name = [&](const char* what) { return "blk." + std::to_string(l) + "." + what + ".weight"; };
    LayerWeights w;
    w.attn_norm = load.vector(name("attn_norm"), c.dim);
    w.wq = load.matrix(name("attn_q"), c.dim, c.q_dim());
    w.wk = load.matrix(name("attn_k"), c.dim, c.kv_dim());
    w.wv = load.matrix(name("attn_v"), c.dim, c.kv_dim());
    w.wo = load.matrix(name("attn_output"), c.q_dim(), c.dim);
    w.ffn_norm = load.vector(name("ffn_norm"), c.dim);
    w.ffn_gate = load.matrix(name("ffn_gate"), c.dim, c.ffn_dim);
    if (options.ffn_up_down_optional) {
      w.ffn_up = load.optional_matrix(name("ffn_up"), c.dim, c.ffn_dim);
      w.ffn_down = load.optional_matrix(name("ffn_down"), c.ffn_dim, c.dim);
    } else {
      w.ffn_up = load.matrix(name("ffn_up"), c.dim, c.ffn_dim);
      w.ffn_down = load.matrix(name("ffn_down"), c.ffn_dim, c.dim);
    }
    model->layers.push_back(std::move(w));
  }

  Vocab vocab = vocab_from_gguf(gguf);
  if (vocab.size() > c.vocab_size)
    fail("{}: tokenizer has {} tokens but token_embd.weight only {} rows", gguf.path(), vocab.size(),
         c.vocab_size);
  model->tokenizer = std::make_unique<Tokenizer>(std::move(vocab));
  if (options.pack_weights) pack_weights(*model);
  return model;
}

}  // namespace skiff

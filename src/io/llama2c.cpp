#include "io/llama2c.h"

#include <cstring>
#include <filesystem>

#include "base/error.h"
#include "model/model.h"

namespace skiff {
namespace {

constexpr uint32_t kMagicV1 = 0x616b3432;  // "ak42"

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
  bool shared_classifier;
  bool legacy;
  size_t weights_offset;
};

Header read_header(const MappedFile& file) {
  const uint8_t* p = file.data();
  auto i32 = [&](size_t off) {
    int32_t v;
    std::memcpy(&v, p + off, 4);
    return v;
  };
  if (file.size() < 28) fail("{}: not a GGUF file or llama2.c checkpoint (only {} bytes)", file.name(), file.size());
  Header h{};
  uint32_t magic;
  std::memcpy(&magic, p, 4);
  if (magic == kMagicV1) {
    if (file.size() < 256) fail("{}: truncated llama2.c v1 header", file.name());
    int32_t version = i32(4);
    if (version != 1) fail("{}: llama2.c export version {} is not supported (only 1)", file.name(), version);
    h.dim = i32(8), h.hidden_dim = i32(12), h.n_layers = i32(16), h.n_heads = i32(20);
    h.n_kv_heads = i32(24), h.vocab_size = i32(28), h.seq_len = i32(32);
    h.shared_classifier = p[36] != 0;
    h.legacy = false;
    h.weights_offset = 256;
  } else {
    h.dim = i32(0), h.hidden_dim = i32(4), h.n_layers = i32(8), h.n_heads = i32(12);
    h.n_kv_heads = i32(16), h.vocab_size = i32(20), h.seq_len = i32(24);
    h.shared_classifier = h.vocab_size > 0;
    if (h.vocab_size < 0) h.vocab_size = -h.vocab_size;
    h.legacy = true;
    h.weights_offset = 28;
  }
  bool plausible = h.dim > 0 && h.hidden_dim > 0 && h.n_layers > 0 && h.n_heads > 0 &&
                   h.n_kv_heads > 0 && h.vocab_size > 0 && h.seq_len > 0;
  if (!plausible)
    fail("{}: not a GGUF file or llama2.c checkpoint (header holds non-positive sizes)", file.name());
  return h;
}

std::string find_tokenizer(const std::string& model_path, int vocab_size) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(model_path).parent_path();
  for (const std::string& name : {std::string("tokenizer.bin"), "tok" + std::to_string(vocab_size) + ".bin"}) {
    fs::path candidate = dir / name;
    if (fs::exists(candidate)) return candidate.string();
  }
  fail("{}: llama2.c checkpoints need a tokenizer; pass --tokenizer FILE (none found beside the model)",
       model_path);
}

}  // namespace

std::unique_ptr<Model> load_llama2c(std::shared_ptr<MappedFile> file, const std::string& tokenizer_path) {
  Header h = read_header(*file);
  auto model = std::make_unique<Model>();
  model->source = file->name();
  model->format = "llama2c";
  ModelConfig& c = model->config;
  c.name = std::filesystem::path(file->name()).stem().string();
  c.dim = h.dim;
  c.ffn_dim = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.vocab_size = h.vocab_size;
  c.context_length = h.seq_len;
  c.head_dim = h.dim / h.n_heads;
  c.rope_dim = c.head_dim;
  c.validate(file->name());

  // Walk the weights in file order, checking each span lies inside the file.
  const int64_t dim = c.dim, kv = c.kv_dim(), ffn = c.ffn_dim, L = c.n_layers, V = c.vocab_size;
  size_t offset = h.weights_offset;
  auto take = [&](const char* what, int64_t cols, int64_t rows) {
    size_t bytes = static_cast<size_t>(cols) * static_cast<size_t>(rows) * sizeof(float);
    if (offset > file->size() || bytes > file->size() - offset)
      fail("{}: truncated llama2.c checkpoint: {} needs {} bytes at offset {}, file has {}",
           file->name(), what, bytes, offset, file->size());
    const TensorView v = matrix_view(DType::F32, file->data() + offset, rows, cols, what);
    offset += bytes;
    return v;
  };
  // Per-layer tensors are stored as L consecutive matrices; split a stacked block into layers.
  auto per_layer = [&](const char* what, int64_t cols, int64_t rows, TensorView LayerWeights::*field) {
    TensorView all = take(what, cols, rows * L);
    for (int64_t l = 0; l < L; ++l) {
      TensorView v = all;
      v.name = "blk." + std::to_string(l) + "." + what;
      v.rows = rows;
      v.data = all.data + static_cast<size_t>(l) * static_cast<size_t>(rows) * all.row_stride;
      model->layers[static_cast<size_t>(l)].*field = v;
    }
  };
  model->layers.resize(static_cast<size_t>(L));
  const int64_t q = c.q_dim();
  if (h.legacy) {
    model->token_embd = take("token_embd", dim, V);
    per_layer("attn_norm", dim, 1, &LayerWeights::attn_norm);
    per_layer("attn_q", dim, q, &LayerWeights::wq);
    per_layer("attn_k", dim, kv, &LayerWeights::wk);
    per_layer("attn_v", dim, kv, &LayerWeights::wv);
    per_layer("attn_output", q, dim, &LayerWeights::wo);
    per_layer("ffn_norm", dim, 1, &LayerWeights::ffn_norm);
    per_layer("ffn_gate", dim, ffn, &LayerWeights::ffn_gate);  // w1
    per_layer("ffn_down", ffn, dim, &LayerWeights::ffn_down);  // w2
    per_layer("ffn_up", dim, ffn, &LayerWeights::ffn_up);      // w3
    model->output_norm = take("output_norm", dim, 1);
    take("freq_cis", c.head_dim, c.context_length);  // real and imaginary halves, unused
  } else {
    per_layer("attn_norm", dim, 1, &LayerWeights::attn_norm);
    per_layer("ffn_norm", dim, 1, &LayerWeights::ffn_norm);
    model->output_norm = take("output_norm", dim, 1);
    model->token_embd = take("token_embd", dim, V);
    per_layer("attn_q", dim, q, &LayerWeights::wq);
    per_layer("attn_k", dim, kv, &LayerWeights::wk);
    per_layer("attn_v", dim, kv, &LayerWeights::wv);
    per_layer("attn_output", q, dim, &LayerWeights::wo);
    per_layer("ffn_gate", dim, ffn, &LayerWeights::ffn_gate);
    per_layer("ffn_down", ffn, dim, &LayerWeights::ffn_down);
    per_layer("ffn_up", dim, ffn, &LayerWeights::ffn_up);
  }
  if (h.shared_classifier) {
    model->output = model->token_embd;
    model->tied_output = true;
  } else {
    model->output = take("output", dim, V);
  }
  model->file = std::move(file);

  std::string tok = tokenizer_path.empty() ? find_tokenizer(model->source, c.vocab_size) : tokenizer_path;
  model->tokenizer = std::make_unique<Tokenizer>(vocab_from_llama2c(tok, c.vocab_size));
  return model;
}

}  // namespace skiff

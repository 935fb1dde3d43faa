#include "decode/early_exit_copy.h"

#include <fmt/format.h>

#include "base/error.h"
#include "kernels/matmul.h"
#include "tensor/dtype.h"

namespace skiff {

std::shared_ptr<const QuantizedMatrix> quantize_matrix(const TensorView& w, DType type, const std::string& what,
                                                       ThreadPool* pool) {
  if (type != DType::Q8_0 && type != DType::Q4_0) fail("{}: the copy can be q8_0 or q4_0", what);
  if (w.cols % 32 != 0)
    fail("{}: {}'s rows ({} columns) are not whole blocks of 32", what, w.name, w.cols);
  auto q = std::make_shared<QuantizedMatrix>();
  const size_t rb = row_bytes(type, w.cols);
  q->bytes.resize(rb * static_cast<size_t>(w.rows));
  auto rows = [&](int64_t r0, int64_t r1, int) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_tensor_row(w, r, row.data());
      quantize_row(type, row.data(), q->bytes.data() + rb * static_cast<size_t>(r), w.cols);
    }
  };
  if (pool != nullptr) {
    pool->parallel_for(w.rows, rows);
  } else {
    rows(0, w.rows, 0);
  }
  TensorView& v = q->view;
  v = w;
  v.type = type;
  v.data = q->bytes.data();
  v.row_stride = rb;
  v.packed = nullptr;
  if (packing_helps(v)) {
    q->packed = pack_matrix(v);
    v.packed = q->packed.get();
  }
  return q;
}

std::shared_ptr<const DraftHead> make_draft_head(const Model& model, DType type) {
  TensorView head = model.output;
  head.name = "early head";
  return quantize_matrix(head, type, fmt::format("--draft-head {}", dtype_name(type)));
}

std::unique_ptr<Model> make_early_exit_copy(const Model& model, int exit_layer, DType type) {
  const int L = model.config.n_layers;
  const std::string what = fmt::format("--draft-copy {}", dtype_name(type));
  if (exit_layer < 1 || exit_layer >= L)
    fail("{}: the exit layer must be in 1..{} (the model has {} layers), got {}", what, L - 1, L, exit_layer);
  auto copy = std::make_unique<Model>();
  copy->config = model.config;
  copy->config.n_layers = exit_layer;
  copy->config.name = fmt::format("{} (layers 0..{}, {} copy)", model.config.name, exit_layer - 1, dtype_name(type));
  copy->source = fmt::format("{} (layers 0..{}, {} copy)", model.source, exit_layer - 1, dtype_name(type));
  copy->format = model.format;
  copy->file = model.file;
  copy->shards = model.shards;
  copy->tokenizer = std::make_unique<Tokenizer>(model.tokenizer->vocab());
  copy->token_embd = model.token_embd;
  copy->output_norm = model.output_norm;
  copy->tied_output = false;  // the head is its own copy (or a view) either way
  ThreadPool pool(ThreadPool::default_thread_count());
  // A matrix is copied when the copy is smaller; one whose rows are not whole blocks of 32
  // (stories260K's FFN width 172) stays the model's own.
  auto copied = [&](const TensorView& w) -> TensorView {
    if (w.type == type || w.cols % 32 != 0 || row_bytes(type, w.cols) >= w.row_stride) return w;
    auto q = quantize_matrix(w, type, what, &pool);
    copy->keep_alive.push_back(q);
    return q->view;
  };
  copy->output = copied(model.output);
  copy->layers.reserve(static_cast<size_t>(exit_layer));
  for (int l = 0; l < exit_layer; ++l) {
    LayerWeights w = model.layers[static_cast<size_t>(l)];
    for (TensorView* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.ffn_gate, &w.ffn_up, &w.ffn_down}) *m = copied(*m);
    copy->layers.push_back(w);
  }
  return copy;
}

}  // namespace skiff

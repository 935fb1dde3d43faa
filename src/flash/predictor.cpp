#include "flash/predictor.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "base/error.h"
#include "io/gguf.h"
#include "kernels/matmul.h"
#include "tensor/tensor.h"

namespace skiff::flash {

namespace {

std::string tensor_name(int layer, const char* part) { return fmt::format("blk.{}.pred_{}", layer, part); }

std::span<const uint8_t> bytes_of(const std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)};
}

GgufValue float_array(const std::vector<float>& values) {
  std::vector<GgufValue> items;
  for (float v : values) items.push_back(GgufValue::f32(v));
  return GgufValue::array(GgufType::FLOAT32, std::move(items));
}

// The F32 tensor `name` of shape {cols, rows} copied out of the file.
std::vector<float> read_tensor(const GgufFile& f, const std::string& name, int64_t cols, int64_t rows) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (t == nullptr) fail("{}: missing tensor {}", f.path(), name);
  const bool shape_ok = rows == 1 ? (t->dims.size() == 1 && t->dims[0] == cols) ||
                                        (t->dims.size() == 2 && t->dims[0] == cols && t->dims[1] == 1)
                                  : t->dims.size() == 2 && t->dims[0] == cols && t->dims[1] == rows;
  if (!shape_ok) fail("{}: tensor {} should be F32 {{{}, {}}}", f.path(), name, cols, rows);
  if (t->type != DType::F32) fail("{}: tensor {} is {}, predictors are F32", f.path(), name, dtype_name(t->type));
  std::vector<float> out(static_cast<size_t>(cols * rows));
  std::memcpy(out.data(), t->data, out.size() * sizeof(float));
  for (float v : out)
    if (!std::isfinite(v)) fail("{}: tensor {} holds a non-finite value", f.path(), name);
  return out;
}

std::vector<float> read_floats(const GgufFile& f, const std::string& key, int n) {
  const GgufValue* v = f.find(key);
  if (v == nullptr) fail("{}: missing metadata key {}", f.path(), key);
  const std::vector<GgufValue>& items = v->as_array(f.path() + ": " + key);
  if (static_cast<int>(items.size()) != n) fail("{}: {} has {} values, expected {}", f.path(), key, items.size(), n);
  std::vector<float> out;
  for (const GgufValue& item : items) out.push_back(static_cast<float>(item.as_double(f.path() + ": " + key)));
  return out;
}

}  // namespace

uint64_t Predictors::bytes() const {
  uint64_t total = 0;
  for (const LayerPredictor& p : layers) total += (p.a.size() + p.b.size() + p.bias.size()) * sizeof(float);
  return total;
}

std::string predictors_path(const std::string& pack_dir) {
  return (std::filesystem::path(pack_dir) / "predictors.gguf").string();
}

void save_predictors(const Predictors& p, const std::string& path) {
  GgufWriter w;
  const int L = static_cast<int>(p.layers.size());
  w.set("general.architecture", GgufValue::str("skiff-predictor"));
  w.set("skiff.predictor.layers", GgufValue::u32(static_cast<uint32_t>(L)));
  w.set("skiff.predictor.dim", GgufValue::u32(static_cast<uint32_t>(p.dim)));
  w.set("skiff.predictor.ffn", GgufValue::u32(static_cast<uint32_t>(p.ffn_dim)));
  w.set("skiff.predictor.label_threshold", GgufValue::f32(p.label_threshold));
  std::vector<float> cutoff, recall, precision;
  for (const LayerPredictor& lp : p.layers) {
    cutoff.push_back(lp.cutoff);
    recall.push_back(lp.recall);
    precision.push_back(lp.precision);
  }
  w.set("skiff.predictor.cutoff", float_array(cutoff));
  w.set("skiff.predictor.recall", float_array(recall));
  w.set("skiff.predictor.precision", float_array(precision));
  for (int l = 0; l < L; ++l) {
    const LayerPredictor& lp = p.layers[static_cast<size_t>(l)];
    w.add_tensor(tensor_name(l, "a"), DType::F32, {p.dim, lp.rank}, bytes_of(lp.a));
    w.add_tensor(tensor_name(l, "b"), DType::F32, {lp.rank, p.ffn_dim}, bytes_of(lp.b));
    w.add_tensor(tensor_name(l, "c"), DType::F32, {p.ffn_dim}, bytes_of(lp.bias));
  }
  w.write(path);
}

Predictors load_predictors(const std::string& path, int n_layers, int dim, int ffn_dim) {
  if (!std::filesystem::exists(path))
    fail("{}: no predictors (train them with `skiff flash-train-predictor`)", path);
  return parse_predictors(GgufFile::open(path), n_layers, dim, ffn_dim);
}

Predictors parse_predictors(const GgufFile& f, int n_layers, int dim, int ffn_dim) {
  const std::string& path = f.path();
  if (f.get_string("general.architecture", "") != "skiff-predictor")
    fail("{}: not a predictor file (general.architecture is not skiff-predictor)", path);
  Predictors p;
  p.dim = static_cast<int>(f.get_int("skiff.predictor.dim"));
  p.ffn_dim = static_cast<int>(f.get_int("skiff.predictor.ffn"));
  const int L = static_cast<int>(f.get_int("skiff.predictor.layers"));
  if (L != n_layers || p.dim != dim || p.ffn_dim != ffn_dim)
    fail("{}: predictors for {} layers, dim {}, ffn {} do not fit the pack ({} layers, dim {}, ffn {})",
         path, L, p.dim, p.ffn_dim, n_layers, dim, ffn_dim);
  p.label_threshold = static_cast<float>(f.get_double("skiff.predictor.label_threshold", 0.0));
  const std::vector<float> cutoff = read_floats(f, "skiff.predictor.cutoff", L);
  const std::vector<float> recall = read_floats(f, "skiff.predictor.recall", L);
  const std::vector<float> precision = read_floats(f, "skiff.predictor.precision", L);
  for (int l = 0; l < L; ++l) {
    LayerPredictor lp;
    const GgufTensorInfo* a = f.find_tensor(tensor_name(l, "a"));
    if (a == nullptr || a->dims.size() != 2) fail("{}: missing or malformed tensor {}", path, tensor_name(l, "a"));
    lp.rank = static_cast<int>(a->dims[1]);
    if (lp.rank < 1 || lp.rank > 65536) fail("{}: layer {} rank {} out of range", path, l, lp.rank);
    lp.a = read_tensor(f, tensor_name(l, "a"), dim, lp.rank);
    lp.b = read_tensor(f, tensor_name(l, "b"), lp.rank, ffn_dim);
    lp.bias = read_tensor(f, tensor_name(l, "c"), ffn_dim, 1);
    lp.cutoff = cutoff[static_cast<size_t>(l)];
    if (!std::isfinite(lp.cutoff)) fail("{}: layer {} cutoff is not finite", path, l);
    lp.recall = recall[static_cast<size_t>(l)];
    lp.precision = precision[static_cast<size_t>(l)];
    p.layers.push_back(std::move(lp));
  }
  return p;
}

void predict_scores(const LayerPredictor& p, int dim, int ffn_dim, const float* x, int64_t T,
                    float* scores, std::vector<float>& hidden, ThreadPool& pool) {
  hidden.resize(static_cast<size_t>(T * p.rank));
  matmul(f32_view(p.a.data(), p.rank, dim), x, T, hidden.data(), pool);
  matmul(f32_view(p.b.data(), ffn_dim, p.rank), hidden.data(), T, scores, pool);
  for (int64_t t = 0; t < T; ++t)
    for (int i = 0; i < ffn_dim; ++i) scores[t * ffn_dim + i] += p.bias[static_cast<size_t>(i)];
}

}  // namespace skiff::flash

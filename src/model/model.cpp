#include "model/model.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "base/error.h"
#include "io/llama2c.h"

namespace skiff {

void ModelConfig::validate(const std::string& source) const {
  auto check = [&](bool ok, const char* what) {
    if (!ok) fail("{}: invalid hyper-parameters: {}", source, what);
  };
  check(dim > 0 && dim <= (1 << 16), "embedding length must be in 1..65536");
  check(n_layers > 0 && n_layers <= 1024, "block count must be in 1..1024");
  check(n_heads > 0 && n_heads <= dim, "head count must be in 1..embedding length");
  check(n_kv_heads > 0 && n_heads % n_kv_heads == 0, "head count is not a multiple of the KV head count");
  check(head_dim > 0 && head_dim <= 1024 && head_dim % 2 == 0,
        "head dimension (attention.key_length) must be even and in 2..1024");
  check(ffn_dim > 0 && ffn_dim <= (1 << 20), "feed-forward length must be in 1..2^20");
  check(vocab_size > 0 && vocab_size <= (1 << 24), "vocabulary size must be in 1..2^24");
  check(context_length > 0 && context_length <= (1 << 24), "context length must be in 1..2^24");
  check(rope_dim > 0 && rope_dim <= head_dim && rope_dim % 2 == 0,
        "rope dimension count must be even and in 1..head dimension");
  check(rms_eps > 0 && rms_eps < 1, "rms epsilon must be in (0, 1)");
  check(rope_theta > 0, "rope freq base must be positive");
  check(rope_freq_factors.empty() || rope_freq_factors.size() == static_cast<size_t>(rope_dim / 2),
        "rope_freqs must hold rope dimension count / 2 values");
  for (float f : rope_freq_factors) check(std::isfinite(f) && f > 0, "rope_freqs values must be positive");
  const RopeScaling& s = rope_scaling;
  if (s.type != RopeScalingType::kNone)
    check(std::isfinite(s.factor) && s.factor >= 1 && s.factor <= 1024, "rope scaling factor must be in 1..1024");
  if (s.type == RopeScalingType::kLlama3)
    check(s.original_context > 0 && s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor,
          "llama3 rope scaling needs original context > 0 and high_freq_factor > low_freq_factor > 0");
  if (s.type == RopeScalingType::kYarn)
    check(s.beta_fast > 0 && s.beta_slow > 0 && s.attn_factor >= 0, "yarn rope scaling needs positive betas");
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  auto add = [&](const TensorView& t) { n += t.cols * t.rows; };
  add(token_embd);
  add(output_norm);
  if (!tied_output) add(output);
  for (const auto& l : layers) {
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm,
                                &l.ffn_gate, &l.ffn_up, &l.ffn_down})
      add(*t);
  }
  return n;
}

size_t LayerWeights::nbytes() const {
  size_t n = 0;
  for (const TensorView* t : {&attn_norm, &wq, &wk, &wv, &wo, &ffn_norm, &ffn_gate, &ffn_up, &ffn_down}) n += t->nbytes();
  return n;
}

size_t Model::weight_bytes() const {
  size_t n = token_embd.nbytes() + output_norm.nbytes() + (tied_output ? 0 : output.nbytes());
  for (const auto& l : layers) n += l.nbytes();
  return n;
}

std::unique_ptr<Model> load_model(const std::string& path, const std::string& tokenizer_path,
                                  Residency residency, bool pack) {
  if (std::filesystem::is_directory(path)) {
    if (!tokenizer_path.empty())
      fail("{}: a Hugging Face checkpoint folder carries its own tokenizer.json; drop --tokenizer", path);
    return load_model_hf(path, residency);
  }
  auto file = MappedFile::open(path, residency);
  if (file->size() >= 4 && std::memcmp(file->data(), "GGUF", 4) == 0) {
    if (!tokenizer_path.empty())
      fail("{}: a GGUF file carries its own tokenizer; drop --tokenizer", path);
    LoadOptions options;
    options.pack_weights = pack;
    return load_model_gguf(std::move(file), options);
  }
  return load_llama2c(std::move(file), tokenizer_path);
}

namespace {

// The first number in `path` after `key` (e.g. "MemAvailable:"), nullopt when absent.
std::optional<uint64_t> read_number(const std::string& path, const std::string& key = "") {
  std::ifstream in(path);
  std::string word;
  while (in >> word) {
    if (!key.empty() && word != key) continue;
    uint64_t v = 0;
    if (!key.empty() && !(in >> word)) return std::nullopt;
    if (std::from_chars(word.data(), word.data() + word.size(), v).ec != std::errc{}) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

}  // namespace

size_t memory_headroom() {
  uint64_t headroom = SIZE_MAX;
  if (auto kb = read_number("/proc/meminfo", "MemAvailable:")) headroom = *kb * 1024;
  // cgroup v2: "0::/path" in /proc/self/cgroup; memory.max is "max" when unlimited.
  std::ifstream cg("/proc/self/cgroup");
  for (std::string line; std::getline(cg, line);) {
    if (line.rfind("0::", 0) != 0) continue;
    const std::string dir = "/sys/fs/cgroup" + line.substr(3);
    auto max = read_number(dir + "/memory.max");
    auto current = read_number(dir + "/memory.current");
    if (max && current) headroom = std::min<uint64_t>(headroom, *max > *current ? *max - *current : 0);
  }
  return static_cast<size_t>(std::min<uint64_t>(headroom, SIZE_MAX));
}

namespace {

// True when w's bytes lie in one of the model's files (mapped, copied or linked in), not in
// weights the loader converted into memory of its own (llama2.c, F32 norms).
bool in_model_files(const Model& model, const TensorView& w) {
  auto inside = [&](const MappedFile* f) {
    return f != nullptr && w.data >= f->data() && w.data + w.nbytes() <= f->data() + f->size();
  };
  if (inside(model.file.get())) return true;
  return std::any_of(model.shards.begin(), model.shards.end(), [&](const auto& s) { return inside(s.get()); });
}

}  // namespace

size_t pack_weights(Model& model) { return pack_weights(model, memory_headroom()); }

size_t pack_weights(Model& model, size_t headroom) {
  return pack_weights(model, headroom, 0, model.config.n_layers, true);
}

size_t pack_weights(Model& model, size_t headroom, int first_layer, int last_layer, bool head) {
  if (const char* env = std::getenv("SKIFF_PACK"); env != nullptr && std::string(env) == "0") return 0;
  std::vector<TensorView*> todo;
  for (int i = std::max(0, first_layer); i < std::min(last_layer, model.config.n_layers); ++i) {
    LayerWeights& l = model.layers[static_cast<size_t>(i)];
    for (TensorView* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down}) todo.push_back(w);
  }
  // A tied head is the embedding table too: its rows are still read for lookups.
  if (head && !model.tied_output) todo.push_back(&model.output);
  // F32 only from the files: a loader's own F32 copy (llama2.c) cannot be released after
  // packing, so packing would double its memory.
  std::erase_if(todo, [&](const TensorView* w) {
    return w->packed != nullptr || !packing_helps(*w) || (w->type == DType::F32 && !in_model_files(model, *w));
  });
  size_t needed = 0;
  for (const TensorView* w : todo) needed += packed_bytes(*w);
  constexpr size_t kReserve = size_t{512} << 20;
  if (needed == 0 || needed > headroom || headroom - needed < kReserve) return 0;
  // Matrices packed in parallel: packing is a copy, bound by page faults and memory (one thread
  // took 3.9 s for the 2.5 GB of a 1B F16 model).
  std::vector<PackedBytes> packed(todo.size());
  std::vector<size_t> sizes(todo.size());
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> errors(todo.size());
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < todo.size();) {
      try {
        const TensorView& w = *todo[i];
        packed[i] = pack_matrix(w, &sizes[i]);
        // The file's pages of w go now, so that resident memory stays about one copy.
        for (const auto& shard : model.shards) shard->release(w.data, w.nbytes());
        if (model.file) model.file->release(w.data, w.nbytes());
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  {
    const unsigned n = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
    std::vector<std::jthread> threads;
    for (unsigned t = 1; t < n && t < todo.size(); ++t) threads.emplace_back(worker);
    worker();
  }  // joined
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  size_t total = 0;
  for (size_t i = 0; i < todo.size(); ++i) {
    TensorView& w = *todo[i];
    model.packed.push_back(std::move(packed[i]));
    w.packed = model.packed.back().get();
    total += sizes[i];
  }
  return total;
}

}  // namespace skiff

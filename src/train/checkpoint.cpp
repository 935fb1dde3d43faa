#include "train/checkpoint.h"

#include <cstring>

#include "base/error.h"
#include "base/mapped_file.h"
#include "io/export_gguf.h"

namespace skiff::train {

namespace {
constexpr char kMagic[8] = {'S', 'K', 'I', 'F', 'F', 'T', 'R', 'N'};
constexpr uint32_t kVersion = 2;


template <typename T>
void put(std::vector<uint8_t>& out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}
}  // namespace

uint64_t fnv1a(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string checkpoint_stem(const std::string& path) {
  const std::string ext = ".gguf";
  if (path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0)
    return path.substr(0, path.size() - ext.size());
  return path;
}

std::string state_path(const std::string& gguf_path) { return checkpoint_stem(gguf_path) + ".state"; }

void save_state(const std::string& path, const TrainState& s) {
  const uint64_t n = s.params.size();
  if (s.m.size() != n || s.v.size() != n) fail("checkpoint: optimizer state does not match the parameters");
  std::vector<uint8_t> out;
  out.reserve(64 + 12 * n + 8);
  out.insert(out.end(), kMagic, kMagic + 8);
  put(out, kVersion);
  put(out, uint32_t{0});
  put(out, s.step);
  put(out, s.position.epoch);
  put(out, s.position.index);
  put(out, s.seed);
  put(out, s.adam_t);
  put(out, s.fingerprint);
  put(out, n);
  for (const std::vector<float>* v : {&s.params, &s.m, &s.v}) {
    const auto* p = reinterpret_cast<const uint8_t*>(v->data());
    out.insert(out.end(), p, p + n * sizeof(float));
  }
  put(out, fnv1a(out.data(), out.size()));
  write_file_atomically(path, out);
}

TrainState load_state(const std::string& path) {
  auto file = MappedFile::open(path);
  const uint8_t* p = file->data();
  const size_t size = file->size();
  constexpr size_t header = 8 + 4 + 4 + 8 * 7;
  if (size < header + 8 || std::memcmp(p, kMagic, 8) != 0)
    fail("{}: not a skiff training state (bad magic or truncated)", path);
  auto get = [&](size_t off, auto& v) { std::memcpy(&v, p + off, sizeof v); };
  uint32_t version = 0;
  get(8, version);
  if (version != kVersion) fail("{}: training state version {} (expected {})", path, version, kVersion);
  TrainState s;
  uint64_t n = 0;
  get(16, s.step);
  get(24, s.position.epoch);
  get(32, s.position.index);
  get(40, s.seed);
  get(48, s.adam_t);
  get(56, s.fingerprint);
  get(64, n);
  if (n > (size - header - 8) / 12 || size != header + 12 * n + 8)
    fail("{}: size {} does not match {} parameters (truncated?)", path, size, n);
  uint64_t sum = 0;
  get(size - 8, sum);
  if (sum != fnv1a(p, size - 8)) fail("{}: checksum mismatch (corrupt file)", path);
  if (s.step < 0 || s.position.epoch < 0 || s.position.index < 0 || s.adam_t < 0)
    fail("{}: negative step or data position", path);
  size_t off = header;
  for (std::vector<float>* v : {&s.params, &s.m, &s.v}) {
    v->resize(n);
    std::memcpy(v->data(), p + off, n * sizeof(float));
    off += n * sizeof(float);
  }
  return s;
}

void save_checkpoint(const std::string& gguf_path, const TrainModel& model, const AdamW& adam,
                     int64_t step, const DataPosition& pos, uint64_t seed, uint64_t fingerprint,
                     const Tokenizer& tokenizer, const std::string& name,
                     const std::function<void()>& between) {
  std::unique_ptr<Model> m = model.as_model(tokenizer, name);
  save_model_gguf(*m, gguf_path, DType::F32);
  if (between) between();
  TrainState s;
  s.step = step;
  s.position = pos;
  s.seed = seed;
  s.adam_t = adam.t();
  s.fingerprint = fingerprint;
  s.params = model.params();
  s.m = adam.m();
  s.v = adam.v();
  save_state(state_path(gguf_path), s);
}

}  // namespace skiff::train

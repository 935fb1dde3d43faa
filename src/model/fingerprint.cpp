#include "model/fingerprint.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/hash.h"

namespace skiff {

std::string ModelFingerprint::describe() const {
  return fmt::format("{} bytes, {} layers, dim {}, vocab {}, hash {:016x}", file_size, n_layers, dim, vocab_size, hash);
}

ModelFingerprint fingerprint(const Model& model) {
  ModelFingerprint f;
  const ModelConfig& c = model.config;
  f.n_layers = c.n_layers;
  f.dim = c.dim;
  f.vocab_size = c.vocab_size;
  f.kv_dim = c.kv_dim();
  f.hash = kFnv1aBasis;
  const MappedFile* file = model.file ? model.file.get() : model.shards.empty() ? nullptr : model.shards[0].get();
  if (file) {
    std::span<const uint8_t> all = file->bytes();
    f.file_size = all.size();
    constexpr size_t kHead = 1 << 20, kTail = 64 << 10;
    f.hash = fnv1a(f.hash, all.first(std::min(all.size(), kHead)));
    f.hash = fnv1a(f.hash, all.last(std::min(all.size(), kTail)));
  }
  return f;
}

}  // namespace skiff

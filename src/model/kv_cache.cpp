#include "model/kv_cache.h"

#include <algorithm>

#include "base/error.h"

namespace skiff {

KvCache::KvCache(int n_layers, int context_length, int kv_dim) : KvCache(n_layers, context_length, kv_dim, 0, n_layers) {}

KvCache::KvCache(int n_layers, int context_length, int kv_dim, int first_stored, int last_stored)
    : context_length_(context_length), kv_dim_(kv_dim), first_stored_(first_stored), last_stored_(last_stored) {
  if (n_layers > 0 && (first_stored < 0 || first_stored >= last_stored || last_stored > n_layers))
    fail("kv cache: cannot store layers [{}, {}) of {}", first_stored, last_stored, n_layers);
  lengths_.assign(static_cast<size_t>(n_layers), 0);
  keys_.resize(static_cast<size_t>(last_stored - first_stored) * context_length * kv_dim);
  values_.resize(keys_.size());
}

void KvCache::truncate(int layer, int len) {
  if (layer < 0 || layer >= n_layers()) fail("kv cache: layer {} out of range", layer);
  if (len < 0 || len > length(layer))
    fail("kv cache: cannot truncate layer {} of length {} to {}", layer, length(layer), len);
  lengths_[static_cast<size_t>(layer)] = len;
}

void KvCache::truncate_all(int len) {
  for (int l = 0; l < n_layers(); ++l) {
    if (len < length(l)) lengths_[static_cast<size_t>(l)] = len;
  }
}

void KvCache::copy_prefix_from(const KvCache& other, int len) {
  if (other.n_layers() != n_layers() || other.kv_dim() != kv_dim_ || len < 0 || len > context_length_ ||
      first_stored_ != 0 || last_stored_ != n_layers() || other.first_stored_ != 0 || other.last_stored_ != n_layers())
    fail("kv cache: cannot copy {} positions from a cache of another shape", len);
  for (int l = 0; l < n_layers(); ++l) {
    if (len > other.length(l)) fail("kv cache: layer {} holds {} positions, not {}", l, other.length(l), len);
    const size_t n = static_cast<size_t>(len) * kv_dim_;
    std::copy_n(other.key(l, 0), n, key(l, 0));
    std::copy_n(other.value(l, 0), n, value(l, 0));
    lengths_[static_cast<size_t>(l)] = len;
  }
}

}  // namespace skiff

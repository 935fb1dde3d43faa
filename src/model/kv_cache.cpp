#include "model/kv_cache.h"

#include <algorithm>
#include <cctype>

#include "base/error.h"

namespace skiff {
namespace {

bool kv_type_supported(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::Q8_0; }

void check_kv_type(DType t, const char* side, int kv_dim, int head_dim) {
  if (!kv_type_supported(t)) fail("kv cache: {} type {} is not f32, f16 or q8_0", side, dtype_name(t));
  const int block = traits(t).block_size;
  if (kv_dim % block != 0 || (head_dim > 0 && head_dim % block != 0))
    fail("kv cache: {} type {} needs head slices of whole blocks of {} values; the head dimension is {}", side,
         dtype_name(t), block, head_dim > 0 ? head_dim : kv_dim);
}

}  // namespace

std::optional<DType> parse_kv_type(std::string_view name) {
  std::optional<DType> t = parse_dtype(name);
  if (t && kv_type_supported(*t)) return t;
  return std::nullopt;
}

KvCache::KvCache(int n_layers, int context_length, int kv_dim, KvTypes types, int head_dim)
    : KvCache(n_layers, context_length, kv_dim, 0, n_layers, types, head_dim) {}

KvCache::KvCache(int n_layers, int context_length, int kv_dim, int first_stored, int last_stored, KvTypes types,
                 int head_dim)
    : context_length_(context_length),
      kv_dim_(kv_dim),
      first_stored_(first_stored),
      last_stored_(last_stored),
      lengths_(static_cast<size_t>(std::max(n_layers, 0)), 0),
      types_(types) {
  if (n_layers > 0 && (first_stored < 0 || first_stored >= last_stored || last_stored > n_layers))
    fail("kv cache: cannot store layers [{}, {}) of {}", first_stored, last_stored, n_layers);
  check_kv_type(types.k, "key", kv_dim, head_dim);
  check_kv_type(types.v, "value", kv_dim, head_dim);
  const size_t positions = static_cast<size_t>(std::max(last_stored - first_stored, 0)) * static_cast<size_t>(context_length);
  if (types.k == DType::F32) keys_.resize(positions * static_cast<size_t>(kv_dim));
  else key_bytes_.resize(positions * key_row_bytes());
  if (types.v == DType::F32) values_.resize(positions * static_cast<size_t>(kv_dim));
  else value_bytes_.resize(positions * value_row_bytes());
}

size_t KvCache::bytes_per_position(int n_layers, int kv_dim, KvTypes types) {
  return static_cast<size_t>(n_layers) * (row_bytes(types.k, kv_dim) + row_bytes(types.v, kv_dim));
}

const uint8_t* KvCache::key_row(int layer, int pos) const {
  if (types_.k == DType::F32) return reinterpret_cast<const uint8_t*>(key(layer, pos));
  return key_bytes_.data() + row(layer, pos) * key_row_bytes();
}

const uint8_t* KvCache::value_row(int layer, int pos) const {
  if (types_.v == DType::F32) return reinterpret_cast<const uint8_t*>(value(layer, pos));
  return value_bytes_.data() + row(layer, pos) * value_row_bytes();
}

void KvCache::store(int layer, int pos, const float* k, const float* v) {
  if (types_.k == DType::F32) std::copy_n(k, kv_dim_, key(layer, pos));
  else quantize_row(types_.k, k, key_row_at(layer, pos), kv_dim_);
  if (types_.v == DType::F32) std::copy_n(v, kv_dim_, value(layer, pos));
  else quantize_row(types_.v, v, value_row_at(layer, pos), kv_dim_);
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
      first_stored_ != other.first_stored_ || last_stored_ != other.last_stored_)
    fail("kv cache: cannot copy {} positions from a cache of another shape", len);
  if (other.types_.k != types_.k || other.types_.v != types_.v)
    fail("kv cache: cannot copy positions from a cache of other types ({}/{} into {}/{})", dtype_name(other.types_.k),
         dtype_name(other.types_.v), dtype_name(types_.k), dtype_name(types_.v));
  for (int l = first_stored_; l < last_stored_; ++l)
    if (len > other.length(l)) fail("kv cache: layer {} holds {} positions, not {}", l, other.length(l), len);
  for (int l = 0; l < n_layers(); ++l) {
    if (l < first_stored_ || l >= last_stored_) {
      // Another process's layer (a pipeline stage): only its length is known here.
      lengths_[static_cast<size_t>(l)] = std::min(len, other.length(l));
      continue;
    }
    // Positions of a layer are contiguous rows in every type.
    const uint8_t* k = other.key_row(l, 0);
    const uint8_t* v = other.value_row(l, 0);
    std::copy_n(k, static_cast<size_t>(len) * key_row_bytes(), key_row_at(l, 0));
    std::copy_n(v, static_cast<size_t>(len) * value_row_bytes(), value_row_at(l, 0));
    lengths_[static_cast<size_t>(l)] = len;
  }
}

}  // namespace skiff

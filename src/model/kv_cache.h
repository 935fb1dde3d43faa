// Keys and values of past positions, per layer. Each layer keeps its OWN length: during
// self-speculative drafting the early layers run ahead of the late ones, and a rejected draft
// is undone by truncating each layer back to the accepted length.
//
// A pipeline stage (src/dist/) stores keys and values only for its own layers
// [first_stored, last_stored); it still keeps every layer's length, so the first stage knows
// where the later stages' layers stand (their storage lives in other processes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "tensor/dtype.h"

namespace skiff {

// Element types of the cached keys and values (llama.cpp's --cache-type-k / -v): F32 (the
// default: exact), F16, or Q8_0 (GGUF's blocks of 32 values with an F16 scale, along each
// position's row; every head's slice must then be whole blocks: head_dim % 32 == 0).
struct KvTypes {
  DType k = DType::F32, v = DType::F32;
  bool is_f32() const { return k == DType::F32 && v == DType::F32; }
};
// "f32", "f16", "q8_0" (any case); nullopt for anything else.
std::optional<DType> parse_kv_type(std::string_view name);

class KvCache {
 public:
  // Throws Error for a type other than F32/F16/Q8_0, or Q8_0 rows that blocks do not divide
  // (head_dim: the slice one head reads; 0 skips that check).
  KvCache(int n_layers, int context_length, int kv_dim, KvTypes types = {}, int head_dim = 0);
  // Storage for layers [first_stored, last_stored) only (0 <= first < last <= n_layers).
  KvCache(int n_layers, int context_length, int kv_dim, int first_stored, int last_stored, KvTypes types = {},
          int head_dim = 0);

  int n_layers() const { return static_cast<int>(lengths_.size()); }
  int context_length() const { return context_length_; }
  int kv_dim() const { return kv_dim_; }
  int first_stored() const { return first_stored_; }
  int last_stored() const { return last_stored_; }

  int length(int layer) const { return lengths_[static_cast<size_t>(layer)]; }
  // Forget positions >= len of one layer (len <= length(layer)).
  void truncate(int layer, int len);
  void truncate_all(int len);
  void clear() { truncate_all(0); }

  // Float rows, for an F32 cache (key type F32 for key(), value type F32 for value()).
  float* key(int layer, int pos) { return &keys_[index(layer, pos)]; }
  float* value(int layer, int pos) { return &values_[index(layer, pos)]; }
  const float* key(int layer, int pos) const { return &keys_[index(layer, pos)]; }
  const float* value(int layer, int pos) const { return &values_[index(layer, pos)]; }
  // Makes this cache hold the first `len` positions of `other` in every stored layer (the
  // same shape, types and stored layers; len <= each stored layer's length of other): a
  // sequence that shares a prefix with another. Layers stored elsewhere (pipeline stages)
  // take min(len, other's length) as their length.
  void copy_prefix_from(const KvCache& other, int len);
  // Marks positions [length, length + n) of `layer` as written.
  void extend(int layer, int n) { lengths_[static_cast<size_t>(layer)] += n; }

  size_t bytes() const {
    return (keys_.size() + values_.size()) * sizeof(float) + key_bytes_.size() + value_bytes_.size();
  }

  // Any type: position `pos`'s row of kv_dim values as stored (row_bytes(type, kv_dim) bytes).
  KvTypes types() const { return types_; }
  size_t key_row_bytes() const { return row_bytes(types_.k, kv_dim_); }
  size_t value_row_bytes() const { return row_bytes(types_.v, kv_dim_); }
  const uint8_t* key_row(int layer, int pos) const;
  const uint8_t* value_row(int layer, int pos) const;
  // Writes position `pos` of `layer` from kv_dim floats each (converted to the cache's types;
  // F32 is a plain copy). Does not change the length (extend does).
  void store(int layer, int pos, const float* k, const float* v);
  // Bytes of keys and values one position takes over n_layers layers.
  static size_t bytes_per_position(int n_layers, int kv_dim, KvTypes types);

 private:
  uint8_t* key_row_at(int layer, int pos) { return const_cast<uint8_t*>(std::as_const(*this).key_row(layer, pos)); }
  uint8_t* value_row_at(int layer, int pos) { return const_cast<uint8_t*>(std::as_const(*this).value_row(layer, pos)); }
  // Row number of (layer, pos) in the stored layers.
  size_t row(int layer, int pos) const {
    return static_cast<size_t>(layer - first_stored_) * context_length_ + static_cast<size_t>(pos);
  }
  size_t index(int layer, int pos) const { return row(layer, pos) * kv_dim_; }
  int context_length_;
  int kv_dim_;
  int first_stored_ = 0, last_stored_ = 0;
  std::vector<int> lengths_;
  std::vector<float> keys_;    // [layer][pos][kv_dim]
  std::vector<float> values_;  // [layer][pos][kv_dim]
  // Non-F32 types: [layer][pos][row bytes] (the float vector of that side is then empty).
  KvTypes types_;
  std::vector<uint8_t> key_bytes_, value_bytes_;
};

}  // namespace skiff

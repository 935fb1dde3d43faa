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
#include <vector>

namespace skiff {

class KvCache {
 public:
  KvCache(int n_layers, int context_length, int kv_dim);
  // Storage for layers [first_stored, last_stored) only (0 <= first < last <= n_layers).
  KvCache(int n_layers, int context_length, int kv_dim, int first_stored, int last_stored);

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

  float* key(int layer, int pos) { return &keys_[index(layer, pos)]; }
  float* value(int layer, int pos) { return &values_[index(layer, pos)]; }
  const float* key(int layer, int pos) const { return &keys_[index(layer, pos)]; }
  const float* value(int layer, int pos) const { return &values_[index(layer, pos)]; }
  // Makes this cache hold the first `len` positions of `other` in every layer (the same
  // shape, every layer stored; len <= each of other's lengths): a sequence that shares a
  // prefix with another.
  void copy_prefix_from(const KvCache& other, int len);
  // Marks positions [length, length + n) of `layer` as written.
  void extend(int layer, int n) { lengths_[static_cast<size_t>(layer)] += n; }

  size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(float); }

 private:
  size_t index(int layer, int pos) const {
    return (static_cast<size_t>(layer - first_stored_) * context_length_ + static_cast<size_t>(pos)) * kv_dim_;
  }
  int context_length_;
  int kv_dim_;
  int first_stored_ = 0, last_stored_ = 0;
  std::vector<int> lengths_;
  std::vector<float> keys_;    // [layer][pos][kv_dim]
  std::vector<float> values_;  // [layer][pos][kv_dim]
};

}  // namespace skiff

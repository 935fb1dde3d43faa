// BPE merge ranks: (left, right) -> rank, looked up with string_views and no allocation.
// Keys live in one arena as offsets, so the table can be copied or moved freely.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace skiff {

class MergeTable {
 public:
  MergeTable() = default;
  // merges[i] is "left right" (split at the first space after the first byte, as llama.cpp
  // does); the rank is i. Entries without such a space are skipped; the first of duplicates wins.
  explicit MergeTable(const std::vector<std::string>& merges);

  // The rank of merging left with right, or -1.
  int32_t rank(std::string_view left, std::string_view right) const {
    if (slots_.empty()) return -1;
    for (size_t i = hash(left, right) & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.rank < 0) return -1;
      if (slot.left_length == left.size() && slot.right_length == right.size() &&
          std::string_view(arena_.data() + slot.offset, left.size()) == left &&
          std::string_view(arena_.data() + slot.offset + left.size(), right.size()) == right) {
        return slot.rank;
      }
    }
  }
  size_t size() const { return count_; }

 private:
  struct Slot {
    uint32_t offset = 0;
    uint32_t left_length = 0;
    uint32_t right_length = 0;
    int32_t rank = -1;
  };
  static size_t hash(std::string_view left, std::string_view right) {
    // FNV-1a over both halves with a separator the halves cannot be confused across.
    uint64_t h = 1469598103934665603ull;
    for (char c : left) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    h = (h ^ 0x1FF) * 1099511628211ull;
    for (char c : right) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }

  std::string arena_;  // left and right of every merge back to back
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t count_ = 0;
};

}  // namespace skiff

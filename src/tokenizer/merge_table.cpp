// Open addressing with linear probing at a load factor of at most one half.
#include "tokenizer/merge_table.h"

#include <limits>

#include "base/error.h"

namespace skiff {

MergeTable::MergeTable(const std::vector<std::string>& merges) {
  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& merge = merges[i];
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string::npos;
    if (space == std::string::npos) continue;
    const std::string_view left = std::string_view(merge).substr(0, space);
    const std::string_view right = std::string_view(merge).substr(space + 1);
    if (rank(left, right) >= 0) continue;
    if (arena_.size() + merge.size() > std::numeric_limits<uint32_t>::max() ||
        i > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      fail("tokenizer: the merges are too large ({} entries)", merges.size());
    }
    size_t slot = hash(left, right) & mask_;
    while (slots_[slot].rank >= 0) slot = (slot + 1) & mask_;
    slots_[slot] = {static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(left.size()),
                    static_cast<uint32_t>(right.size()), static_cast<int32_t>(i)};
    arena_.append(left);
    arena_.append(right);
    ++count_;
  }
}

}  // namespace skiff

// Nearest entries of a memory store to a query vector: exact (every entry's dot product;
// the cosine for the unit vectors of memory/encode.h, a length-pivoted TF-IDF score for
// memory/lexical.h).
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "memory/store.h"

namespace skiff::memory {

struct Hit {
  size_t entry;
  float score;
};

// The k best entries, best first (ties: the lower index first), among the first `limit`
// entries (all when 0; measurements of smaller stores search a prefix). Throws Error when k
// is not in [1, entries searched] or the query's width differs from the store's vectors.
// memory/ann.h finds the same entries approximately, and much faster in large stores.
std::vector<Hit> search_exact(const MemoryStore& store, std::span<const float> query, int k, size_t limit = 0);

}  // namespace skiff::memory

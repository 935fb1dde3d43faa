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

// The k best entries, best first (ties: the lower index first). Throws Error when k is
// not in [1, store.size()] or the query's width differs from the store's vectors.
std::vector<Hit> search_exact(const MemoryStore& store, std::span<const float> query, int k);

}  // namespace skiff::memory

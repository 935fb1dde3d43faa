#include "memory/retrieval.h"

#include <algorithm>

#include "base/error.h"
#include "kernels/dot.h"

namespace skiff::memory {

std::vector<Hit> search_exact(const MemoryStore& store, std::span<const float> query, int k, size_t limit) {
  const size_t n = limit == 0 ? store.size() : std::min(limit, store.size());
  if (k < 1 || static_cast<size_t>(k) > n)
    fail("{}: k = {} must be between 1 and the store's {} entries", store.name(), k, n);
  if (query.size() != store.header().vector_dim)
    fail("{}: query vector of width {}, the store's are {}", store.name(), query.size(), store.header().vector_dim);
  std::vector<Hit> hits(n);
  for (size_t i = 0; i < n; ++i) {
    const std::span<const float> v = store.vector(i);
    hits[i] = {i, dot_f32(v.data(), query.data(), static_cast<int64_t>(v.size()))};
  }
  auto better = [](const Hit& a, const Hit& b) { return a.score > b.score || (a.score == b.score && a.entry < b.entry); };
  std::partial_sort(hits.begin(), hits.begin() + k, hits.end(), better);
  hits.resize(static_cast<size_t>(k));
  return hits;
}

}  // namespace skiff::memory

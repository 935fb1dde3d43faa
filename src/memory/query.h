// The entries of a memory store nearest to a query text, by the store's own retriever: the
// lexical one (TF-IDF with the IDF stored in the file, memory/lexical.h) or the model's pooled
// hidden state (memory/encode.h). Used by the server's "skiff": {"memory": ...} requests;
// safe to call from several threads at once.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "memory/ann.h"
#include "memory/lexical.h"
#include "memory/store.h"
#include "model/forward.h"

namespace skiff::memory {

class QueryRetriever {
 public:
  // Throws Error when the store was built with another model.
  QueryRetriever(const Model& model, const MemoryStore& store);
  ~QueryRetriever();

  // The k best entries, best first. Throws Error for an empty query and as search_exact
  // does (k not in [1, store size]).
  std::vector<size_t> top_k(const std::string& text, int k) const;
  // The query's retrieval vector.
  std::vector<float> query_vector(const std::string& text) const;

  // Search this HNSW index (memory/ann.h) with `ef` candidates instead of every vector; null:
  // exact search. The index must outlive the retriever.
  void use_index(const AnnIndex* index, int ef = kDefaultEf) {
    index_ = index;
    ef_ = ef;
  }

  const MemoryStore& store() const { return store_; }

 private:
  const Model& model_;
  const MemoryStore& store_;
  std::unique_ptr<LexicalEncoder> lexical_;
  const AnnIndex* index_ = nullptr;
  int ef_ = kDefaultEf;
  // One hidden-state query and one index search at a time (hnswlib keeps ef in the index).
  mutable std::mutex ctx_mutex_, index_mutex_;
  mutable std::unique_ptr<Context> ctx_;  // hidden-state retriever only, made on first use
};

}  // namespace skiff::memory

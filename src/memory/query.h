// The entries of a memory store nearest to a query text, by the store's own retriever: the
// lexical one (TF-IDF with the IDF stored in the file, memory/lexical.h) or the model's pooled
// hidden state (memory/encode.h). Used by the server's "skiff": {"memory": ...} requests;
// safe to call from several threads at once.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "memory/lexical.h"
#include "memory/store.h"
#include "model/forward.h"

namespace skiff::memory {

class QueryRetriever {
 public:
  // Throws Error when the store was built with another model.
  QueryRetriever(const Model& model, const MemoryStore& store);
  ~QueryRetriever();

  // Up to k entries, best first (k is clamped to the store's size; k >= 1).
  std::vector<size_t> top_k(const std::string& text, int k) const;

  const MemoryStore& store() const { return store_; }

 private:
  const Model& model_;
  const MemoryStore& store_;
  std::unique_ptr<LexicalEncoder> lexical_;
  mutable std::mutex mutex_;               // guards ctx_: one hidden-state query at a time
  mutable std::unique_ptr<Context> ctx_;  // hidden-state retriever only, made on first use
};

}  // namespace skiff::memory

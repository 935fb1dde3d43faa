#include "memory/query.h"

#include <algorithm>

#include "base/error.h"
#include "memory/encode.h"
#include "memory/retrieval.h"

namespace skiff::memory {

namespace {
constexpr int kQueryContext = 512;  // a query is encoded in a context of at most this many positions
}  // namespace

QueryRetriever::QueryRetriever(const Model& model, const MemoryStore& store) : model_(model), store_(store) {
  store.check_model(model);
  if (store.size() == 0) fail("memory store {} holds no entries", store.name());
  if (store.retriever() == Retriever::kLexical)
    lexical_ = std::make_unique<LexicalEncoder>(std::vector<float>(store.idf().begin(), store.idf().end()));
}

QueryRetriever::~QueryRetriever() = default;

std::vector<float> QueryRetriever::query_vector(const std::string& text) const {
  const std::vector<int32_t> words = model_.tokenizer->encode(text, false);
  if (words.empty()) fail("memory: the query is empty");
  if (lexical_) return lexical_->encode(words, false);
  std::lock_guard lock(ctx_mutex_);
  if (!ctx_) ctx_ = std::make_unique<Context>(model_, std::min(kQueryContext, model_.config.context_length), 1);
  const size_t n = std::min(words.size(), static_cast<size_t>(ctx_->context_length()));
  return retrieval_vector(*ctx_, std::span<const int32_t>(words).first(n));
}

std::vector<size_t> QueryRetriever::top_k(const std::string& text, int k) const {
  const std::vector<float> query = query_vector(text);
  std::vector<Hit> hits;
  if (index_) {
    std::lock_guard lock(index_mutex_);
    hits = search(store_, index_, query, k, ef_);
  } else {
    hits = search_exact(store_, query, k);
  }
  std::vector<size_t> out;
  for (const Hit& h : hits) out.push_back(h.entry);
  return out;
}

}  // namespace skiff::memory

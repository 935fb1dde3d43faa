// A lexical retriever: a text's token unigrams and bigrams, hashed into `dim` buckets and
// weighted TF-IDF (sublinear term frequency times the bucket's inverse document frequency
// over the knowledge base), scaled to unit length. Dense, so the same exact (and, for large
// stores, approximate) nearest-neighbour search serves it and the pooled hidden states.
//
// Why: the pooled states of a small decoder are a weak retriever for knowledge bases whose
// entries differ mainly in names (recall@8 0.31 on the synthetic task, docs/MEMORY.md);
// names are rare token sequences, which is exactly what IDF-weighted bigrams single out.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace skiff::memory {

class LexicalEncoder {
 public:
  // idf: one weight per bucket (its size is the vector width).
  explicit LexicalEncoder(std::vector<float> idf);
  // IDF of every bucket over these documents: log((1 + N) / (1 + df)) + 1.
  static LexicalEncoder fit(std::span<const std::vector<int32_t>> documents, int dim);

  int dim() const { return static_cast<int>(idf_.size()); }
  const std::vector<float>& idf() const { return idf_; }
  // A query's unit vector, or a document's vector divided by the square root of its length
  // rather than by its length: with cosine similarity a short QA pair about the entity
  // outranks the passage that holds the asked fact (recall@5 on the synthetic task: 0.84 with
  // cosine, 0.99 this way; docs/MEMORY.md). Search ranks by the dot product. All zeros for
  // an empty sequence.
  std::vector<float> encode(std::span<const int32_t> tokens, bool document) const;

 private:
  std::vector<float> idf_;
};

}  // namespace skiff::memory

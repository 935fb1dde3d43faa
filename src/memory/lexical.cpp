#include "memory/lexical.h"

#include <cmath>
#include <unordered_map>

#include "base/error.h"
#include "base/hash.h"

namespace skiff::memory {

namespace {

// Calls fn(bucket) for every unigram and bigram of the tokens (splitmix64: the buckets must
// not change between the build and the queries, on any machine).
template <class Fn>
void for_each_feature(std::span<const int32_t> tokens, int dim, Fn&& fn) {
  const uint64_t d = static_cast<uint64_t>(dim);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint64_t a = static_cast<uint32_t>(tokens[i]);
    fn(static_cast<int>(splitmix64(a) % d));
    if (i + 1 < tokens.size()) fn(static_cast<int>(splitmix64((a << 32) | static_cast<uint32_t>(tokens[i + 1])) % d));
  }
}

}  // namespace

LexicalEncoder::LexicalEncoder(std::vector<float> idf) : idf_(std::move(idf)) {
  if (idf_.empty()) fail("lexical retriever: no buckets");
}

LexicalEncoder LexicalEncoder::fit(std::span<const std::vector<int32_t>> documents, int dim) {
  if (dim < 1) fail("lexical retriever: {} buckets", dim);
  std::vector<int64_t> df(static_cast<size_t>(dim), 0);
  std::vector<int64_t> seen(static_cast<size_t>(dim), -1);  // the last document that counted a bucket
  for (size_t doc = 0; doc < documents.size(); ++doc) {
    for_each_feature(documents[doc], dim, [&](int b) {
      if (seen[static_cast<size_t>(b)] != static_cast<int64_t>(doc)) {
        seen[static_cast<size_t>(b)] = static_cast<int64_t>(doc);
        ++df[static_cast<size_t>(b)];
      }
    });
  }
  std::vector<float> idf(static_cast<size_t>(dim));
  const double n = static_cast<double>(documents.size());
  for (size_t b = 0; b < idf.size(); ++b)
    idf[b] = static_cast<float>(std::log((1.0 + n) / (1.0 + static_cast<double>(df[b]))) + 1.0);
  return LexicalEncoder(std::move(idf));
}

std::vector<float> LexicalEncoder::encode(std::span<const int32_t> tokens, bool document) const {
  std::unordered_map<int, int> tf;
  for_each_feature(tokens, dim(), [&](int b) { ++tf[b]; });
  std::vector<float> v(idf_.size(), 0.0f);
  double norm = 0;
  for (auto [b, count] : tf) {
    const double w = (1.0 + std::log(static_cast<double>(count))) * idf_[static_cast<size_t>(b)];
    v[static_cast<size_t>(b)] = static_cast<float>(w);
    norm += w * w;
  }
  if (norm > 0) {
    // Documents: divided by the square root of their length, queries: by their length.
    const float s = static_cast<float>(document ? 1.0 / std::pow(norm, 0.25) : 1.0 / std::sqrt(norm));
    for (float& x : v) x *= s;
  }
  return v;
}

}  // namespace skiff::memory

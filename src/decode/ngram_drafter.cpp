#include "decode/ngram_drafter.h"

#include <algorithm>

#include "base/error.h"

namespace skiff {

NgramDrafter::NgramDrafter(const Model& target, int max_ngram) : Drafter(target), max_ngram_(max_ngram) {
  if (max_ngram < 1) fail("--lookup N: the n-gram length must be at least 1, got {}", max_ngram);
}

int lookup_drafts(std::span<const int32_t> tokens, int max_ngram, int max_drafts, const Tokenizer& tokenizer,
                  Draft& out) {
  const int n = static_cast<int>(tokens.size());
  const size_t before = out.size();
  for (int size = std::min(max_ngram, n - 1); size >= 1 && max_drafts > 0; --size) {
    const int32_t* tail = tokens.data() + (n - size);
    // The latest start j < n - size whose n-gram equals the tail and that has a follower.
    for (int j = n - size - 1; j >= 0; --j) {
      if (!std::equal(tail, tail + size, tokens.data() + j)) continue;
      for (int f = j + size; f < n && static_cast<int>(out.size() - before) < max_drafts; ++f) {
        const int32_t token = tokens[static_cast<size_t>(f)];
        out.push(token, TokenDistribution{{token}, {1.0f}});
        if (tokenizer.is_eog(token)) break;
      }
      return static_cast<int>(out.size() - before);
    }
  }
  return 0;
}

void NgramDrafter::propose(std::span<const int32_t> tokens, int max_drafts, Sampler& sampler,
                           Draft& out) {
  lookup_drafts(tokens, max_ngram_, max_drafts, *target_.tokenizer, out);
  (void)sampler;
}

}  // namespace skiff

#include "memory/build.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "base/error.h"
#include "memory/encode.h"
#include "memory/lexical.h"
#include "memory/store.h"
#include "model/fingerprint.h"
#include "model/forward.h"

namespace skiff::memory {

BuildStats build_store(const Model& model, std::span<const KbEntry> kb, const std::string& path,
                       const BuildOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const Tokenizer& tok = *model.tokenizer;
  // Tokenize first: a bad entry fails before any work.
  std::vector<std::vector<int32_t>> tokens(kb.size());
  int longest = 1;
  for (size_t i = 0; i < kb.size(); ++i) {
    tokens[i] = tok.encode(kb[i].text, false);
    const int n = static_cast<int>(tokens[i].size());
    if (n == 0) fail("memory build: entry {} has no tokens", kb[i].id);
    if (n > options.max_entry_tokens || n > model.config.context_length)
      fail("memory build: entry {} has {} tokens, more than the {} allowed", kb[i].id, n,
           std::min(options.max_entry_tokens, model.config.context_length));
    longest = std::max(longest, n);
  }
  Context ctx(model, longest, options.threads);
  const bool lexical = options.retriever == Retriever::kLexical;
  std::optional<LexicalEncoder> lex;
  if (lexical) lex = LexicalEncoder::fit(tokens, options.lexical_dim);
  StoreWriter writer(path, fingerprint(model), options.types, lexical ? options.lexical_dim : model.config.dim,
                     lexical ? std::span<const float>(lex->idf()) : std::span<const float>());
  BuildStats stats;
  for (size_t i = 0; i < kb.size(); ++i) {
    const EncodedEntry e = encode_entry(ctx, tokens[i]);
    writer.add(kb[i].id, kb[i].kind, kb[i].text, tokens[i], e.keys, e.values,
               lexical ? lex->encode(tokens[i], true) : e.vector);
    stats.tokens += static_cast<int64_t>(tokens[i].size());
    if (options.progress) options.progress(i + 1, kb.size());
  }
  stats.entries = kb.size();
  stats.file_bytes = writer.finish();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace skiff::memory

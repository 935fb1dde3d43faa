#include "memory/build.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <unordered_set>

#include "base/error.h"
#include "memory/compress.h"
#include "memory/encode.h"
#include "memory/lexical.h"
#include "memory/store.h"
#include "model/fingerprint.h"
#include "model/forward.h"

namespace skiff::memory {

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Tokenizes the entries; a bad one fails before any work. Returns the longest length.
int tokenize(const Model& model, std::span<const KbEntry> kb, int max_entry_tokens,
             std::vector<std::vector<int32_t>>& tokens) {
  const Tokenizer& tok = *model.tokenizer;
  int longest = 1;
  for (const KbEntry& e : kb) {
    tokens.push_back(tok.encode(e.text, false));
    const int n = static_cast<int>(tokens.back().size());
    if (n == 0) fail("memory build: entry {} has no tokens", e.id);
    if (n > max_entry_tokens || n > model.config.context_length)
      fail("memory build: entry {} has {} tokens, more than the {} allowed", e.id, n,
           std::min(max_entry_tokens, model.config.context_length));
    longest = std::max(longest, n);
  }
  return longest;
}

// The store at `path`: base's entries (if any) copied, then kb's encoded.
BuildStats write_store(const Model& model, const MemoryStore* base, std::span<const KbEntry> kb,
                       const std::string& path, const BuildOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n_base = base ? base->size() : 0;
  std::vector<std::vector<int32_t>> tokens;  // every entry's: base's, then kb's
  tokens.reserve(n_base + kb.size());
  for (size_t i = 0; i < n_base; ++i) {
    const std::span<const int32_t> t = base->tokens(i);
    tokens.emplace_back(t.begin(), t.end());
  }
  const int longest = tokenize(model, kb, options.max_entry_tokens, tokens);
  const bool lexical = options.retriever == Retriever::kLexical;
  std::optional<LexicalEncoder> lex;
  if (lexical) lex = LexicalEncoder::fit(tokens, options.lexical_dim);
  const std::vector<int32_t> probe =
      options.slots > 0 ? model.tokenizer->encode(options.slot_probe, false) : std::vector<int32_t>{};
  Context ctx(model, std::min(model.config.context_length, longest + static_cast<int>(probe.size())), options.threads);
  StoreWriter writer(path, fingerprint(model), options.types, lexical ? options.lexical_dim : model.config.dim,
                     lexical ? std::span<const float>(lex->idf()) : std::span<const float>(), options.slots);
  BuildStats stats;
  for (size_t i = 0; i < n_base; ++i) {
    writer.add_stored(*base, i, lexical ? lex->encode(tokens[i], true) : std::vector<float>(base->vector(i).begin(), base->vector(i).end()));
    stats.tokens += static_cast<int64_t>(tokens[i].size());
  }
  for (size_t j = 0; j < kb.size(); ++j) {
    const std::vector<int32_t>& t = tokens[n_base + j];
    const EncodedEntry e = options.slots > 0 ? encode_entry_slots(ctx, t, options.slots, probe) : encode_entry(ctx, t);
    writer.add(kb[j].id, kb[j].kind, kb[j].text, t, e.keys, e.values, lexical ? lex->encode(t, true) : e.vector);
    stats.tokens += static_cast<int64_t>(t.size());
    if (options.progress) options.progress(j + 1, kb.size());
  }
  stats.entries = n_base + kb.size();
  stats.file_bytes = writer.finish();
  write_index(path, options.ann, options.ann_params, stats);
  stats.seconds = since(t0);
  return stats;
}

}  // namespace

BuildStats build_store(const Model& model, std::span<const KbEntry> kb, const std::string& path,
                       const BuildOptions& options) {
  return write_store(model, nullptr, kb, path, options);
}

BuildStats add_to_store(const Model& model, const MemoryStore& base, std::span<const KbEntry> kb,
                        const std::string& path, const BuildOptions& options) {
  base.check_model(model);
  if (kb.empty()) fail("memory add: no entries to add");
  const auto index = base.index_by_id();
  for (const KbEntry& e : kb) {
    if (index.count(e.id)) fail("memory add: entry \"{}\" is already in {}", e.id, base.name());
  }
  BuildOptions o = options;
  o.types = base.types();
  o.retriever = base.retriever();
  o.lexical_dim = static_cast<int>(base.header().vector_dim);
  o.slots = base.slots();
  return write_store(model, &base, kb, path, o);
}

void write_index(const std::string& path, AnnMode mode, const AnnParams& params, BuildStats& stats) {
  const std::string index_path = ann_path(path);
  const MemoryStore store(path);
  if (mode == AnnMode::kOff || (mode == AnnMode::kAuto && store.size() <= kAnnAutoThreshold)) {
    std::error_code ec;
    std::filesystem::remove(index_path, ec);  // an index of the store this one replaced
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  stats.ann_bytes = AnnIndex(store, params).save(index_path);
  stats.ann_seconds = since(t0);
}

}  // namespace skiff::memory

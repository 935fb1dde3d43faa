// `skiff memory build`: encodes every knowledge-base entry once and writes the store.
// `skiff memory add`: appends entries to a store, encoding only them.
#pragma once

#include <functional>
#include <span>
#include <string>

#include "memory/ann.h"
#include "memory/knowledge_base.h"
#include "memory/store.h"
#include "model/model.h"

namespace skiff::memory {

// Whether to write an HNSW index (memory/ann.h) next to the store: auto above
// kAnnAutoThreshold entries.
enum class AnnMode { kAuto, kOn, kOff };

struct BuildOptions {
  KvTypes types{DType::F16, DType::F16};  // what the store keeps
  int threads = 0;
  int max_entry_tokens = 1024;            // longer entries are an error naming them
  Retriever retriever = Retriever::kLexical;
  int lexical_dim = 1024;                 // buckets of the lexical retriever
  AnnMode ann = AnnMode::kAuto;
  AnnParams ann_params;
  int slots = 0;                          // > 0: a compressed store (memory/compress.h)
  std::string slot_probe = "Q: A:";       // its probe (memory/compress.h; "" none)
  std::function<void(size_t done, size_t total)> progress;
};

struct BuildStats {
  size_t entries = 0;
  int64_t tokens = 0;
  uint64_t file_bytes = 0;
  double seconds = 0;      // everything, the index included
  uint64_t ann_bytes = 0;  // 0: no index written
  double ann_seconds = 0;
};

BuildStats build_store(const Model& model, std::span<const KbEntry> kb, const std::string& path,
                       const BuildOptions& options);

// Writes `path`: the entries of `base` followed by `kb`'s, which are encoded with `model` (the
// store's model: another is refused, as are ids already in the store). Entries already
// stored keep their bytes (tokens, keys, values); the store's types, retriever and lexical
// width and slot count are kept (options.types, retriever, lexical_dim and slots are ignored). The lexical
// retriever's IDF is refitted over all entries and every lexical vector recomputed (token
// counting, no model), so the result is byte for byte the store `build_store` makes from the
// concatenated knowledge base. Hidden-state vectors of stored entries are kept. path may be
// base's own file (it is written beside it and renamed into place).
BuildStats add_to_store(const Model& model, const MemoryStore& base, std::span<const KbEntry> kb,
                        const std::string& path, const BuildOptions& options);

// Writes (or, when `mode` says not to, removes, so no stale one is left) ann_path(path) for
// the store at `path`; returns its size (0: none) and adds its time to stats.
void write_index(const std::string& path, AnnMode mode, const AnnParams& params, BuildStats& stats);

}  // namespace skiff::memory

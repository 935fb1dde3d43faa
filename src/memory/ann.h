// Approximate nearest-neighbour search over a memory store's retrieval vectors: an HNSW
// graph (hnswlib, inner-product space: the dot product is the score search_exact ranks by).
// Exact search reads every vector; HNSW visits a few hundred, which wins once a store holds
// more than a few thousand entries (docs/MEMORY.md, "Scale", has the measurement).
//
// The index is a sidecar file next to the store, STORE.hnsw, holding only the graph: the
// vectors stay in the store (an hnswlib file would hold a second copy of them, 4 KiB per entry
// at 1024 buckets). Loading rebuilds hnswlib's structures from the graph and the store's
// vectors (copied into hnswlib's rows: 430 MB of memory, 0.55 s, at 100k entries), so hnswlib
// never parses file bytes; our parser checks every count and neighbour
// first, and the header names the store it was built for (its tables checksum, entry count
// and vector width): an index of another or an older store is refused.
//
// File layout (little-endian):
//   header  kAnnHeaderBytes: magic SKIFFANN, version, entries, the store's tables checksum,
//           vector width, M, ef_construction, top level, entry point, graph bytes, graph
//           checksum and, last, a checksum of the header itself
//   graph   per entry: uint32 level, then for each level 0..level: uint32 count and count
//           uint32 neighbours (at most 2M on level 0, M above)
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "memory/retrieval.h"
#include "memory/store.h"

namespace skiff::memory {

inline constexpr char kAnnMagic[8] = {'S', 'K', 'I', 'F', 'F', 'A', 'N', 'N'};
inline constexpr uint32_t kAnnVersion = 1;
inline constexpr size_t kAnnHeaderBytes = 96;

struct AnnParams {
  int M = 16;                 // neighbours per node above level 0 (2M on level 0)
  int ef_construction = 200;  // candidates while inserting
  uint64_t seed = 100;        // of the level generator: the same store gives the same file
};

// The ef a search uses unless told: recall@8 against exact search 0.966 on the 104,900-entry
// lexical store, 0.99+ up to 16k entries, at a tenth of exact search's time there
// (docs/MEMORY.md, "Scale"; ef 64 found only 0.883 at 100k).
inline constexpr int kDefaultEf = 256;
// `memory build --ann auto` builds an index above this many entries: where HNSW search at
// the default ef became as fast as exact search over 1024-wide vectors (1.2 against 1.4 ms
// per query at 8,000 entries; exact was twice as fast at 4,000; docs/MEMORY.md, "Scale").
inline constexpr size_t kAnnAutoThreshold = 8000;

// The graph as the file holds it, checked: every count within M, every neighbour an entry
// that exists on that level, the entry point on the top level.
struct AnnGraph {
  uint64_t n_entries = 0, store_checksum = 0;
  uint32_t vector_dim = 0, M = 0, ef_construction = 0, max_level = 0, entry_point = 0;
  std::vector<uint32_t> level;       // per entry
  std::vector<uint64_t> first_list;  // per entry: the index of its level-0 list in list_start
  std::vector<uint64_t> list_start;  // per list: its first neighbour in links, plus one end
  std::vector<uint32_t> links;
  std::span<const uint32_t> neighbours(size_t entry, uint32_t lvl) const;
};

// Parses and checks an index file's bytes (also the fuzz target's entry). Throws Error naming
// `name` and what is wrong.
AnnGraph parse_ann(std::span<const uint8_t> bytes, const std::string& name);
std::vector<uint8_t> serialize_ann(const AnnGraph& graph);

// "STORE.hnsw": where an index of the store at `store_path` lives.
std::string ann_path(const std::string& store_path);

class AnnIndex {
 public:
  // Builds the graph over the store's first `limit` entries (all when 0), inserting them in
  // order on one thread: deterministic.
  AnnIndex(const MemoryStore& store, const AnnParams& params = {}, size_t limit = 0);
  // Checks a parsed graph against the store (the same entries, width and tables checksum).
  AnnIndex(const MemoryStore& store, AnnGraph graph, const std::string& name);
  ~AnnIndex();
  AnnIndex(const AnnIndex&) = delete;
  AnnIndex& operator=(const AnnIndex&) = delete;

  // Reads and checks `path` against the store. Throws Error (missing, corrupt, stale).
  static std::unique_ptr<AnnIndex> load(const MemoryStore& store, const std::string& path);
  // ann_path(store.name()) when that file exists, else null (callers search exactly).
  static std::unique_ptr<AnnIndex> load_if_present(const MemoryStore& store);

  const AnnGraph& graph() const { return graph_; }
  size_t size() const { return static_cast<size_t>(graph_.n_entries); }
  // Writes the index (to path.tmp, renamed into place); returns its size in bytes.
  uint64_t save(const std::string& path) const;

  // The k best entries found with `ef` candidates (at least k), best first, scored and
  // ordered as search_exact would (the store's vectors, the same tie rule): only which
  // entries are found is approximate. Throws Error as search_exact does. One search at a
  // time (hnswlib keeps ef in the index).
  std::vector<Hit> search(std::span<const float> query, int k, int ef = kDefaultEf) const;

 private:
  void restore();  // hnswlib's structures from graph_ and the store's vectors

  const MemoryStore& store_;
  AnnGraph graph_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The best of: the index when given, else exact search.
std::vector<Hit> search(const MemoryStore& store, const AnnIndex* index, std::span<const float> query, int k,
                        int ef = kDefaultEf);

}  // namespace skiff::memory

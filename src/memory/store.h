// A knowledge memory store: every entry of a knowledge base encoded ONCE by the model, its
// keys and values for every layer kept in one memory-mapped file, so that answering a
// question splices the retrieved entries' KV into the context (memory/splice.h) instead of
// prefilling their text again (MATTER, TurboRAG, Block-Attention; docs/MEMORY.md).
//
// An entry is encoded alone, at positions 0..n-1, attending only to itself: the block
// attention the reader model is trained with. Its keys are stored as rotated at those
// positions; placing it at position p re-rotates them by p (RoPE angles are linear in the
// position), which reproduces a block-masked prefill of the same text.
//
// File layout (little-endian; every section 64-byte aligned):
//   header     kHeaderBytes: magic, version, the model's fingerprint, KV types, counts,
//              section offsets, a checksum of the tables and, last, of the header itself
//   data       per entry: int32 tokens[n], then per layer keys[r][key row] and
//              values[r][value row] in the store's types (F32, F16 or Q8_0), each entry
//              with its own checksum (checked when the entry is read); r = n, or in a
//              compressed store (slots M > 0, version 2) r = min(M, n) rows per layer chosen
//              per KV head (memory/compress.h), keys rotated as if at positions 0..r-1
//   entries    EntryRecord[n_entries]
//   vectors    float[n_entries][vector_dim]: the retrieval vectors (memory/retrieval.h)
//   strings    ids and texts, referenced by the records
//   retriever  the lexical retriever's IDF per bucket (memory/lexical.h); empty for pooled
//              hidden states
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/mapped_file.h"
#include "model/fingerprint.h"
#include "model/kv_cache.h"

namespace skiff::memory {

inline constexpr char kStoreMagic[8] = {'S', 'K', 'I', 'F', 'F', 'M', 'E', 'M'};
// Version 2 added the slot count (header) and each entry's KV rows (record); version 1
// files (every token's KV, those fields zero) are still read.
inline constexpr uint32_t kStoreVersion = 2;
inline constexpr size_t kHeaderBytes = 256;

enum class EntryKind : uint32_t { kPassage = 0, kQa = 1 };
// How the retrieval vectors were made: pooled hidden states (memory/encode.h) or hashed
// TF-IDF token n-grams (memory/lexical.h).
enum class Retriever : uint32_t { kHidden = 0, kLexical = 1 };
const char* retriever_name(Retriever r);
// "passage", "qa"
const char* entry_kind_name(EntryKind kind);

struct StoreHeader {
  uint32_t version = kStoreVersion;
  ModelFingerprint model;
  KvTypes types;
  uint32_t vector_dim = 0;
  uint64_t n_entries = 0;
  uint64_t data_offset = 0, data_bytes = 0;
  uint64_t entries_offset = 0, vectors_offset = 0, strings_offset = 0, strings_bytes = 0;
  Retriever retriever = Retriever::kHidden;
  uint64_t retriever_offset = 0, retriever_bytes = 0;
  uint64_t tables_checksum = 0;  // of the entries, vectors, strings and retriever sections
  uint32_t slots = 0;            // 0: every token's KV; M: at most M rows per entry and layer
};

// One entry's place in the file (64 bytes).
struct EntryRecord {
  uint64_t data_offset = 0;  // from the data section's start
  uint64_t data_bytes = 0;
  uint64_t data_checksum = 0;
  uint64_t id_offset = 0, text_offset = 0;  // in the strings section
  uint32_t id_bytes = 0, text_bytes = 0;
  uint32_t n_tokens = 0;
  uint32_t kind = 0;
  uint32_t kv_rows = 0;  // KV rows per layer (n_tokens unless compressed; 0 in version 1: n_tokens)
  uint32_t reserved = 0;
};
static_assert(sizeof(EntryRecord) == 64);

// Parses and checks a store's header (magic, version, checksum, section bounds against
// file_size). Throws Error naming `name` and what is wrong. Also the fuzz target's entry.
StoreHeader parse_store_header(std::span<const uint8_t> bytes, uint64_t file_size, const std::string& name);

class MemoryStore {
 public:
  // Maps and checks the file: header, tables checksum, every record's bounds. Throws Error.
  explicit MemoryStore(const std::string& path);
  // The same over bytes in memory (tests, fuzzing); `bytes` must outlive the store.
  MemoryStore(std::span<const uint8_t> bytes, std::string name);

  const StoreHeader& header() const { return h_; }
  const std::string& name() const { return name_; }
  size_t size() const { return static_cast<size_t>(h_.n_entries); }
  KvTypes types() const { return h_.types; }
  int n_layers() const { return h_.model.n_layers; }
  int kv_dim() const { return h_.model.kv_dim; }
  int slots() const { return static_cast<int>(h_.slots); }
  // Throws Error unless the store was built with this model (its fingerprint).
  void check_model(const Model& model) const;

  struct Entry {
    std::string_view id, text;
    EntryKind kind;
    int n_tokens;
    int kv_rows;  // the KV rows it splices in: n_tokens, or at most slots() when compressed
  };
  Entry entry(size_t i) const;
  // Entry index by id (views into the mapped strings).
  std::unordered_map<std::string_view, size_t> index_by_id() const;
  std::span<const int32_t> tokens(size_t i) const;
  std::span<const float> vector(size_t i) const;
  Retriever retriever() const { return h_.retriever; }
  // The lexical retriever's IDF per bucket (empty for pooled hidden states).
  std::span<const float> idf() const;
  // Keys (values) of entry i in `layer`: kv_rows rows of key_row_bytes (value_row_bytes).
  const uint8_t* keys(size_t i, int layer) const;
  const uint8_t* values(size_t i, int layer) const;
  size_t key_row_bytes() const;
  size_t value_row_bytes() const;
  // Bytes entry i takes in the file (tokens, keys and values).
  size_t entry_bytes(size_t i) const { return static_cast<size_t>(record(i).data_bytes); }
  // Throws Error when entry i's bytes do not match their checksum (callers check each entry
  // once before reading its KV: splice does).
  void verify_entry(size_t i) const;

 private:
  void open(std::span<const uint8_t> bytes);
  const EntryRecord& record(size_t i) const;
  const uint8_t* data(size_t i) const;

  std::string name_;
  std::shared_ptr<MappedFile> file_;
  std::span<const uint8_t> bytes_;
  StoreHeader h_;
  mutable std::vector<uint8_t> verified_;  // per entry: checksum already checked
};

// Appends entries to a new store file (written to `path`.tmp, renamed on finish()).
class StoreWriter {
 public:
  // idf: the lexical retriever's weights (then vector_dim == idf.size()); empty: the vectors
  // are pooled hidden states.
  // slots > 0: a compressed store, whose entries hold min(slots, n_tokens) KV rows.
  StoreWriter(const std::string& path, const ModelFingerprint& model, KvTypes types, int vector_dim,
              std::span<const float> idf = {}, int slots = 0);
  ~StoreWriter();
  // keys/values: [n_layers][kv_rows][kv_dim] floats (converted to the store's types); kv_rows
  // is n_tokens, or min(slots, n_tokens) in a compressed store.
  void add(std::string_view id, EntryKind kind, std::string_view text, std::span<const int32_t> tokens,
           std::span<const float> keys, std::span<const float> values, std::span<const float> vector);
  // An entry of another store with the same model and types (`memory add`), its tokens, keys
  // and values copied as they are: the bytes the encoding wrote, not recomputed.
  void add_stored(const MemoryStore& from, size_t i, std::span<const float> vector);
  // Writes the tables and the header and renames the file into place; returns its size.
  uint64_t finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::memory

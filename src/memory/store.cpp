#include "memory/store.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"
#include "tensor/dtype.h"

namespace skiff::memory {

namespace {

constexpr uint64_t kAlign = 64;
// Bounds that keep every size product far below 2^63.
constexpr int64_t kMaxLayers = 1024, kMaxKvDim = 1 << 16, kMaxVectorDim = 1 << 16;
constexpr uint64_t kMaxTokens = 1 << 20;

// Header field offsets.
enum : size_t {
  kOffVersion = 8,
  kOffHeaderBytes = 12,
  kOffFileSize = 16,
  kOffHash = 24,
  kOffLayers = 32,
  kOffDim = 36,
  kOffVocab = 40,
  kOffKvDim = 44,
  kOffKeyType = 48,
  kOffValueType = 52,
  kOffVectorDim = 56,
  kOffRetriever = 60,
  kOffEntries = 64,
  kOffDataOffset = 72,
  kOffDataBytes = 80,
  kOffEntriesOffset = 88,
  kOffVectorsOffset = 96,
  kOffStringsOffset = 104,
  kOffStringsBytes = 112,
  kOffTablesChecksum = 120,
  kOffRetrieverOffset = 128,
  kOffRetrieverBytes = 136,
  kOffSlots = 144,
  kOffHeaderChecksum = kHeaderBytes - 8,
};

uint64_t align_up(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

bool is_kv_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::Q8_0; }

// Bytes of one entry's data: tokens (padded to the alignment), then keys and values.
uint64_t entry_data_bytes(uint64_t n_tokens, uint64_t kv_rows, int n_layers, size_t key_row, size_t value_row) {
  return align_up(n_tokens * sizeof(int32_t)) + static_cast<uint64_t>(n_layers) * kv_rows * (key_row + value_row);
}

// The KV rows an entry of n tokens holds in a store of `slots` (0: all).
uint64_t rows_for(uint64_t n_tokens, uint32_t slots) { return slots == 0 ? n_tokens : std::min<uint64_t>(n_tokens, slots); }

}  // namespace

const char* entry_kind_name(EntryKind kind) { return kind == EntryKind::kQa ? "qa" : "passage"; }
const char* retriever_name(Retriever r) { return r == Retriever::kLexical ? "lexical" : "hidden"; }

StoreHeader parse_store_header(std::span<const uint8_t> bytes, uint64_t file_size, const std::string& name) {
  if (bytes.size() < kHeaderBytes || file_size < kHeaderBytes)
    fail("{}: truncated: {} bytes, shorter than the {}-byte memory store header", name, file_size, kHeaderBytes);
  if (std::memcmp(bytes.data(), kStoreMagic, sizeof(kStoreMagic)) != 0)
    fail("{}: bad magic: not a skiff memory store", name);
  StoreHeader h;
  h.version = get_le<uint32_t>(bytes, kOffVersion);
  if (h.version != 1 && h.version != kStoreVersion)
    fail("{}: unsupported memory store version {} (this skiff reads versions 1 and {})", name, h.version,
         kStoreVersion);
  const uint64_t stored = get_le<uint64_t>(bytes, kOffHeaderChecksum);
  const uint64_t computed = fnv1a(bytes.first(kOffHeaderChecksum));
  if (stored != computed)
    fail("{}: header checksum mismatch (stored {:016x}, computed {:016x}): the header is corrupt", name, stored,
         computed);
  if (get_le<uint32_t>(bytes, kOffHeaderBytes) != kHeaderBytes)
    fail("{}: header size {} is not {}", name, get_le<uint32_t>(bytes, kOffHeaderBytes), kHeaderBytes);
  h.model.file_size = get_le<uint64_t>(bytes, kOffFileSize);
  h.model.hash = get_le<uint64_t>(bytes, kOffHash);
  h.model.n_layers = get_le<int32_t>(bytes, kOffLayers);
  h.model.dim = get_le<int32_t>(bytes, kOffDim);
  h.model.vocab_size = get_le<int32_t>(bytes, kOffVocab);
  h.model.kv_dim = get_le<int32_t>(bytes, kOffKvDim);
  if (h.model.n_layers < 1 || h.model.n_layers > kMaxLayers)
    fail("{}: {} layers is outside [1, {}]", name, h.model.n_layers, kMaxLayers);
  if (h.model.kv_dim < 1 || h.model.kv_dim > kMaxKvDim)
    fail("{}: KV width {} is outside [1, {}]", name, h.model.kv_dim, kMaxKvDim);
  const uint32_t types[2] = {get_le<uint32_t>(bytes, kOffKeyType), get_le<uint32_t>(bytes, kOffValueType)};
  for (int side = 0; side < 2; ++side) {
    const DType t = static_cast<DType>(types[side]);
    if (!is_kv_type(t)) fail("{}: {} type {} is not f32, f16 or q8_0", name, side ? "value" : "key", types[side]);
    if (h.model.kv_dim % traits(t).block_size != 0)
      fail("{}: KV width {} is not a whole number of {} blocks", name, h.model.kv_dim, dtype_name(t));
  }
  h.types = {static_cast<DType>(types[0]), static_cast<DType>(types[1])};
  h.vector_dim = get_le<uint32_t>(bytes, kOffVectorDim);
  if (h.vector_dim < 1 || h.vector_dim > kMaxVectorDim)
    fail("{}: retrieval vector width {} is outside [1, {}]", name, h.vector_dim, kMaxVectorDim);
  h.n_entries = get_le<uint64_t>(bytes, kOffEntries);
  h.data_offset = get_le<uint64_t>(bytes, kOffDataOffset);
  h.data_bytes = get_le<uint64_t>(bytes, kOffDataBytes);
  h.entries_offset = get_le<uint64_t>(bytes, kOffEntriesOffset);
  h.vectors_offset = get_le<uint64_t>(bytes, kOffVectorsOffset);
  h.strings_offset = get_le<uint64_t>(bytes, kOffStringsOffset);
  h.strings_bytes = get_le<uint64_t>(bytes, kOffStringsBytes);
  h.tables_checksum = get_le<uint64_t>(bytes, kOffTablesChecksum);
  const uint32_t retriever = get_le<uint32_t>(bytes, kOffRetriever);
  if (retriever > 1) fail("{}: unknown retriever {}", name, retriever);
  h.retriever = static_cast<Retriever>(retriever);
  h.retriever_offset = get_le<uint64_t>(bytes, kOffRetrieverOffset);
  h.retriever_bytes = get_le<uint64_t>(bytes, kOffRetrieverBytes);
  h.slots = get_le<uint32_t>(bytes, kOffSlots);
  if (h.version == 1 && h.slots != 0) fail("{}: a version 1 store with {} slots", name, h.slots);
  if (h.slots > kMaxTokens) fail("{}: {} slots per entry is more than {}", name, h.slots, kMaxTokens);
  const uint64_t want = h.retriever == Retriever::kLexical ? uint64_t{h.vector_dim} * sizeof(float) : 0;
  if (h.retriever_bytes != want)
    fail("{}: the {} retriever's section holds {} bytes, not {}", name, retriever_name(h.retriever), h.retriever_bytes,
         want);
  // Each section inside the file, in order, without overflow (sizes are checked against the
  // file before they are multiplied).
  if (h.n_entries > file_size / sizeof(EntryRecord)) fail("{}: truncated or corrupt: {} entries cannot fit in {} bytes", name, h.n_entries, file_size);
  const uint64_t sections[5][2] = {{h.data_offset, h.data_bytes},
                                   {h.entries_offset, h.n_entries * sizeof(EntryRecord)},
                                   {h.vectors_offset, h.n_entries * h.vector_dim * sizeof(float)},
                                   {h.strings_offset, h.strings_bytes},
                                   {h.retriever_offset, h.retriever_bytes}};
  const char* section_names[5] = {"data", "entries", "vectors", "strings", "retriever"};
  uint64_t end = kHeaderBytes;
  for (int s = 0; s < 5; ++s) {
    const uint64_t off = sections[s][0], size = sections[s][1];
    if (off % kAlign != 0 || off < end || off > file_size || size > file_size - off)
      fail("{}: the {} section ({} bytes at offset {}) lies outside the file ({} bytes) or overlaps another: "
           "the file is truncated or corrupt",
           name, section_names[s], size, off, file_size);
    end = off + size;
  }
  // The writer pads the file to the alignment: a shorter file lost its end.
  if (file_size != align_up(end))
    fail("{}: {} bytes, but its sections end at {}: the file is {}", name, file_size, align_up(end),
         file_size < align_up(end) ? "truncated" : "followed by stray bytes");
  return h;
}

MemoryStore::MemoryStore(const std::string& path) : name_(path), file_(MappedFile::open(path)) {
  open(file_->bytes());
}

MemoryStore::MemoryStore(std::span<const uint8_t> bytes, std::string name) : name_(std::move(name)) { open(bytes); }

void MemoryStore::open(std::span<const uint8_t> bytes) {
  bytes_ = bytes;
  h_ = parse_store_header(bytes, bytes.size(), name_);
  uint64_t tables = fnv1a(bytes.subspan(h_.entries_offset, h_.n_entries * sizeof(EntryRecord)));
  tables = fnv1a(tables, bytes.subspan(h_.vectors_offset, h_.n_entries * h_.vector_dim * sizeof(float)));
  tables = fnv1a(tables, bytes.subspan(h_.strings_offset, h_.strings_bytes));
  tables = fnv1a(tables, bytes.subspan(h_.retriever_offset, h_.retriever_bytes));
  if (tables != h_.tables_checksum)
    fail("{}: checksum mismatch in the entry tables (stored {:016x}, computed {:016x}): the file is corrupt", name_,
         h_.tables_checksum, tables);
  for (size_t i = 0; i < size(); ++i) {
    const EntryRecord& r = record(i);
    if (r.kind > 1) fail("{}: entry {} has unknown kind {}", name_, i, r.kind);
    if (r.n_tokens < 1 || r.n_tokens > kMaxTokens)
      fail("{}: entry {} has {} tokens (1..{} allowed)", name_, i, r.n_tokens, kMaxTokens);
    if (r.data_offset > h_.data_bytes || r.data_bytes > h_.data_bytes - r.data_offset || r.data_offset % kAlign)
      fail("{}: entry {}'s data lies outside the data section", name_, i);
    const uint64_t rows = rows_for(r.n_tokens, h_.slots);
    if (r.kv_rows != (h_.version == 1 ? 0 : rows))
      fail("{}: entry {} holds {} KV rows, its {} tokens and {} slots give {}", name_, i, r.kv_rows, r.n_tokens,
           h_.slots, rows);
    if (r.data_bytes != entry_data_bytes(r.n_tokens, rows, n_layers(), key_row_bytes(), value_row_bytes()))
      fail("{}: entry {} holds {} bytes of data, {} tokens need {}", name_, i, r.data_bytes, r.n_tokens,
           entry_data_bytes(r.n_tokens, rows, n_layers(), key_row_bytes(), value_row_bytes()));
    if (r.id_offset > h_.strings_bytes || r.id_bytes > h_.strings_bytes - r.id_offset ||
        r.text_offset > h_.strings_bytes || r.text_bytes > h_.strings_bytes - r.text_offset)
      fail("{}: entry {}'s id or text lies outside the strings section", name_, i);
  }
  verified_.assign(size(), 0);
}

void MemoryStore::check_model(const Model& model) const {
  const ModelFingerprint mine = fingerprint(model);
  if (!(mine == h_.model))
    fail("{}: built with another model ({}); this model is {} ({})", name_, h_.model.describe(), model.source,
         mine.describe());
}

const EntryRecord& MemoryStore::record(size_t i) const {
  if (i >= size()) fail("{}: entry {} does not exist (the store holds {})", name_, i, size());
  return reinterpret_cast<const EntryRecord*>(bytes_.data() + h_.entries_offset)[i];
}

MemoryStore::Entry MemoryStore::entry(size_t i) const {
  const EntryRecord& r = record(i);
  const char* strings = reinterpret_cast<const char*>(bytes_.data() + h_.strings_offset);
  return {std::string_view(strings + r.id_offset, r.id_bytes), std::string_view(strings + r.text_offset, r.text_bytes),
          static_cast<EntryKind>(r.kind), static_cast<int>(r.n_tokens),
          static_cast<int>(rows_for(r.n_tokens, h_.slots))};
}

std::unordered_map<std::string_view, size_t> MemoryStore::index_by_id() const {
  std::unordered_map<std::string_view, size_t> index;
  for (size_t i = 0; i < size(); ++i) index.emplace(entry(i).id, i);
  return index;
}

const uint8_t* MemoryStore::data(size_t i) const { return bytes_.data() + h_.data_offset + record(i).data_offset; }

std::span<const int32_t> MemoryStore::tokens(size_t i) const {
  return {reinterpret_cast<const int32_t*>(data(i)), record(i).n_tokens};
}

std::span<const float> MemoryStore::vector(size_t i) const {
  record(i);  // bounds
  return {reinterpret_cast<const float*>(bytes_.data() + h_.vectors_offset) + i * h_.vector_dim, h_.vector_dim};
}

std::span<const float> MemoryStore::idf() const {
  return {reinterpret_cast<const float*>(bytes_.data() + h_.retriever_offset), h_.retriever_bytes / sizeof(float)};
}

size_t MemoryStore::key_row_bytes() const { return row_bytes(h_.types.k, h_.model.kv_dim); }
size_t MemoryStore::value_row_bytes() const { return row_bytes(h_.types.v, h_.model.kv_dim); }

const uint8_t* MemoryStore::keys(size_t i, int layer) const {
  const EntryRecord& r = record(i);
  if (layer < 0 || layer >= n_layers()) fail("{}: layer {} is outside the store's {} layers", name_, layer, n_layers());
  return data(i) + align_up(r.n_tokens * sizeof(int32_t)) +
         static_cast<size_t>(layer) * rows_for(r.n_tokens, h_.slots) * (key_row_bytes() + value_row_bytes());
}

const uint8_t* MemoryStore::values(size_t i, int layer) const {
  return keys(i, layer) + rows_for(record(i).n_tokens, h_.slots) * key_row_bytes();
}

void MemoryStore::verify_entry(size_t i) const {
  const EntryRecord& r = record(i);
  if (verified_[i]) return;
  const uint64_t sum = fnv1a({data(i), static_cast<size_t>(r.data_bytes)});
  if (sum != r.data_checksum)
    fail("{}: entry {} ({}) is corrupt: checksum {:016x}, expected {:016x}", name_, i, entry(i).id, sum,
         r.data_checksum);
  verified_[i] = 1;
}

// ---- writer ----

struct StoreWriter::Impl {
  std::string path, tmp;
  std::FILE* f = nullptr;
  StoreHeader h;
  std::vector<EntryRecord> records;
  std::vector<float> vectors;
  std::string strings;
  std::vector<float> idf;
  std::vector<uint8_t> buf;
  uint64_t data_end = 0;  // bytes of the data section so far

  void write(const void* p, size_t n) {
    if (std::fwrite(p, 1, n, f) != n) fail("{}: write failed (disk full?)", tmp);
  }
};

StoreWriter::StoreWriter(const std::string& path, const ModelFingerprint& model, KvTypes types, int vector_dim,
                         std::span<const float> idf, int slots)
    : impl_(std::make_unique<Impl>()) {
  Impl& w = *impl_;
  if (!is_kv_type(types.k) || !is_kv_type(types.v)) fail("memory store: KV types must be f32, f16 or q8_0");
  for (DType t : {types.k, types.v}) {
    if (model.kv_dim % traits(t).block_size != 0)
      fail("memory store: {} needs the KV width ({}) to be a multiple of {}", dtype_name(t), model.kv_dim,
           traits(t).block_size);
  }
  if (vector_dim < 1 || vector_dim > kMaxVectorDim) fail("memory store: retrieval vector width {}", vector_dim);
  if (!idf.empty() && idf.size() != static_cast<size_t>(vector_dim))
    fail("memory store: {} IDF weights for vectors of width {}", idf.size(), vector_dim);
  w.idf.assign(idf.begin(), idf.end());
  w.h.retriever = idf.empty() ? Retriever::kHidden : Retriever::kLexical;
  w.path = path;
  w.tmp = path + ".tmp";
  w.h.model = model;
  w.h.types = types;
  w.h.vector_dim = static_cast<uint32_t>(vector_dim);
  if (slots < 0 || static_cast<uint64_t>(slots) > kMaxTokens) fail("memory store: {} slots per entry", slots);
  w.h.slots = static_cast<uint32_t>(slots);
  w.h.data_offset = kHeaderBytes;
  w.f = std::fopen(w.tmp.c_str(), "wb");
  if (!w.f) fail("{}: cannot create: {}", w.tmp, std::strerror(errno));
  std::vector<uint8_t> zeros(kHeaderBytes, 0);
  w.write(zeros.data(), zeros.size());
}

StoreWriter::~StoreWriter() {
  if (impl_ && impl_->f) {  // not finished: leave nothing behind
    std::fclose(impl_->f);
    std::remove(impl_->tmp.c_str());
  }
}

void StoreWriter::add(std::string_view id, EntryKind kind, std::string_view text, std::span<const int32_t> tokens,
                      std::span<const float> keys, std::span<const float> values, std::span<const float> vector) {
  Impl& w = *impl_;
  const int L = w.h.model.n_layers, kv = w.h.model.kv_dim;
  const size_t n = tokens.size();
  if (n < 1 || n > kMaxTokens) fail("memory store: entry {} has {} tokens (1..{} allowed)", id, n, kMaxTokens);
  const size_t rows = static_cast<size_t>(rows_for(n, w.h.slots));
  const size_t floats = static_cast<size_t>(L) * rows * static_cast<size_t>(kv);
  if (keys.size() != floats || values.size() != floats || vector.size() != w.h.vector_dim)
    fail("memory store: entry {}: wrong key, value or vector sizes", id);
  const size_t key_row = row_bytes(w.h.types.k, kv), value_row = row_bytes(w.h.types.v, kv);
  EntryRecord r;
  r.data_offset = w.data_end;
  r.data_bytes = entry_data_bytes(n, rows, L, key_row, value_row);
  r.n_tokens = static_cast<uint32_t>(n);
  r.kv_rows = static_cast<uint32_t>(rows);
  r.kind = static_cast<uint32_t>(kind);
  w.buf.assign(static_cast<size_t>(align_up(r.data_bytes)), 0);
  std::memcpy(w.buf.data(), tokens.data(), n * sizeof(int32_t));
  uint8_t* p = w.buf.data() + align_up(n * sizeof(int32_t));
  for (int l = 0; l < L; ++l) {
    for (size_t j = 0; j < rows; ++j, p += key_row) {
      if (!quantize_row(w.h.types.k, &keys[(static_cast<size_t>(l) * rows + j) * kv], p, kv))
        fail("memory store: entry {}: cannot store keys as {}", id, dtype_name(w.h.types.k));
    }
    for (size_t j = 0; j < rows; ++j, p += value_row) {
      if (!quantize_row(w.h.types.v, &values[(static_cast<size_t>(l) * rows + j) * kv], p, kv))
        fail("memory store: entry {}: cannot store values as {}", id, dtype_name(w.h.types.v));
    }
  }
  r.data_checksum = fnv1a({w.buf.data(), static_cast<size_t>(r.data_bytes)});
  w.write(w.buf.data(), w.buf.size());
  w.data_end += w.buf.size();
  r.id_offset = w.strings.size();
  r.id_bytes = static_cast<uint32_t>(id.size());
  w.strings.append(id);
  r.text_offset = w.strings.size();
  r.text_bytes = static_cast<uint32_t>(text.size());
  w.strings.append(text);
  w.records.push_back(r);
  w.vectors.insert(w.vectors.end(), vector.begin(), vector.end());
}

void StoreWriter::add_stored(const MemoryStore& from, size_t i, std::span<const float> vector) {
  Impl& w = *impl_;
  if (!(from.header().model == w.h.model) || from.types().k != w.h.types.k || from.types().v != w.h.types.v ||
      from.slots() != static_cast<int>(w.h.slots))
    fail("memory store: {} was built with another model, KV types or slot count", from.name());
  if (vector.size() != w.h.vector_dim) fail("memory store: entry {}: wrong vector size", i);
  from.verify_entry(i);  // copy nothing corrupt
  const MemoryStore::Entry e = from.entry(i);
  EntryRecord r;
  r.data_offset = w.data_end;
  r.data_bytes = from.entry_bytes(i);
  r.n_tokens = static_cast<uint32_t>(e.n_tokens);
  r.kv_rows = static_cast<uint32_t>(e.kv_rows);
  r.kind = static_cast<uint32_t>(e.kind);
  const auto* data = reinterpret_cast<const uint8_t*>(from.tokens(i).data());
  w.buf.assign(static_cast<size_t>(align_up(r.data_bytes)), 0);
  std::memcpy(w.buf.data(), data, static_cast<size_t>(r.data_bytes));
  r.data_checksum = fnv1a({w.buf.data(), static_cast<size_t>(r.data_bytes)});
  w.write(w.buf.data(), w.buf.size());
  w.data_end += w.buf.size();
  r.id_offset = w.strings.size();
  r.id_bytes = static_cast<uint32_t>(e.id.size());
  w.strings.append(e.id);
  r.text_offset = w.strings.size();
  r.text_bytes = static_cast<uint32_t>(e.text.size());
  w.strings.append(e.text);
  w.records.push_back(r);
  w.vectors.insert(w.vectors.end(), vector.begin(), vector.end());
}

uint64_t StoreWriter::finish() {
  Impl& w = *impl_;
  StoreHeader& h = w.h;
  h.n_entries = w.records.size();
  h.data_bytes = w.data_end;
  auto pad_to_alignment = [&](uint64_t& pos) {
    const std::vector<uint8_t> zeros(static_cast<size_t>(align_up(pos) - pos), 0);
    w.write(zeros.data(), zeros.size());
    pos = align_up(pos);
  };
  uint64_t pos = kHeaderBytes + w.data_end;
  h.entries_offset = pos;
  const auto* rec = reinterpret_cast<const uint8_t*>(w.records.data());
  w.write(rec, w.records.size() * sizeof(EntryRecord));
  pos += w.records.size() * sizeof(EntryRecord);
  pad_to_alignment(pos);
  h.vectors_offset = pos;
  const auto* vec = reinterpret_cast<const uint8_t*>(w.vectors.data());
  w.write(vec, w.vectors.size() * sizeof(float));
  pos += w.vectors.size() * sizeof(float);
  pad_to_alignment(pos);
  h.strings_offset = pos;
  h.strings_bytes = w.strings.size();
  w.write(w.strings.data(), w.strings.size());
  pos += w.strings.size();
  pad_to_alignment(pos);
  h.retriever_offset = pos;
  h.retriever_bytes = w.idf.size() * sizeof(float);
  const auto* idf = reinterpret_cast<const uint8_t*>(w.idf.data());
  w.write(idf, h.retriever_bytes);
  pos += h.retriever_bytes;
  pad_to_alignment(pos);
  h.tables_checksum = fnv1a({rec, w.records.size() * sizeof(EntryRecord)});
  h.tables_checksum = fnv1a(h.tables_checksum, {vec, w.vectors.size() * sizeof(float)});
  h.tables_checksum = fnv1a(h.tables_checksum, {reinterpret_cast<const uint8_t*>(w.strings.data()), w.strings.size()});
  h.tables_checksum = fnv1a(h.tables_checksum, {idf, static_cast<size_t>(h.retriever_bytes)});

  std::vector<uint8_t> header(kHeaderBytes, 0);
  std::memcpy(header.data(), kStoreMagic, sizeof(kStoreMagic));
  put_le<uint32_t>(header, kOffVersion, kStoreVersion);
  put_le<uint32_t>(header, kOffHeaderBytes, kHeaderBytes);
  put_le<uint64_t>(header, kOffFileSize, h.model.file_size);
  put_le<uint64_t>(header, kOffHash, h.model.hash);
  put_le<int32_t>(header, kOffLayers, h.model.n_layers);
  put_le<int32_t>(header, kOffDim, h.model.dim);
  put_le<int32_t>(header, kOffVocab, h.model.vocab_size);
  put_le<int32_t>(header, kOffKvDim, h.model.kv_dim);
  put_le<uint32_t>(header, kOffKeyType, static_cast<uint32_t>(h.types.k));
  put_le<uint32_t>(header, kOffValueType, static_cast<uint32_t>(h.types.v));
  put_le<uint32_t>(header, kOffVectorDim, h.vector_dim);
  put_le<uint64_t>(header, kOffEntries, h.n_entries);
  put_le<uint64_t>(header, kOffDataOffset, h.data_offset);
  put_le<uint64_t>(header, kOffDataBytes, h.data_bytes);
  put_le<uint64_t>(header, kOffEntriesOffset, h.entries_offset);
  put_le<uint64_t>(header, kOffVectorsOffset, h.vectors_offset);
  put_le<uint64_t>(header, kOffStringsOffset, h.strings_offset);
  put_le<uint64_t>(header, kOffStringsBytes, h.strings_bytes);
  put_le<uint64_t>(header, kOffTablesChecksum, h.tables_checksum);
  put_le<uint32_t>(header, kOffRetriever, static_cast<uint32_t>(h.retriever));
  put_le<uint64_t>(header, kOffRetrieverOffset, h.retriever_offset);
  put_le<uint64_t>(header, kOffRetrieverBytes, h.retriever_bytes);
  put_le<uint32_t>(header, kOffSlots, h.slots);
  put_le<uint64_t>(header, kOffHeaderChecksum, fnv1a({header.data(), kOffHeaderChecksum}));
  if (std::fseek(w.f, 0, SEEK_SET) != 0) fail("{}: seek failed", w.tmp);
  w.write(header.data(), header.size());
  if (std::fflush(w.f) != 0 || std::fclose(w.f) != 0) {
    w.f = nullptr;
    std::remove(w.tmp.c_str());
    fail("{}: write failed (disk full?)", w.tmp);
  }
  w.f = nullptr;
  std::error_code ec;
  std::filesystem::rename(w.tmp, w.path, ec);
  if (ec) fail("{}: cannot rename to {}: {}", w.tmp, w.path, ec.message());
  return pos;
}

}  // namespace skiff::memory

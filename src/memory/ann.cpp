#include "memory/ann.h"

// hnswlib 0.6.2's search loops prefetch the neighbour after the last one, reading one id past
// the end of a link list (and forming an out-of-range pointer from it): harmless on hardware,
// but the sanitizers stop there. Sanitized builds take its plain code path (no prefetch, scalar
// distances); the results are the same.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define SKIFF_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(SKIFF_SANITIZED)
#define NO_MANUAL_VECTORIZATION
#endif
#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/mapped_file.h"
#include "kernels/dot.h"

namespace skiff::memory {

namespace {

// Header field offsets.
enum : size_t {
  kOffVersion = 8,
  kOffHeaderBytes = 12,
  kOffEntries = 16,
  kOffStoreChecksum = 24,
  kOffVectorDim = 32,
  kOffM = 36,
  kOffEfConstruction = 40,
  kOffMaxLevel = 44,
  kOffEntryPoint = 48,
  kOffGraphBytes = 56,
  kOffGraphChecksum = 64,
  kOffHeaderChecksum = kAnnHeaderBytes - 8,
};

// Far above anything hnswlib makes (levels grow as log(n) / log(M)), far below overflow.
constexpr uint32_t kMaxM = 1024, kMaxLevel = 64;

}  // namespace

std::span<const uint32_t> AnnGraph::neighbours(size_t entry, uint32_t lvl) const {
  const uint64_t list = first_list[entry] + lvl;
  return {links.data() + list_start[list], static_cast<size_t>(list_start[list + 1] - list_start[list])};
}

std::string ann_path(const std::string& store_path) { return store_path + ".hnsw"; }

AnnGraph parse_ann(std::span<const uint8_t> bytes, const std::string& name) {
  if (bytes.size() < kAnnHeaderBytes)
    fail("{}: truncated: {} bytes, shorter than the {}-byte index header", name, bytes.size(), kAnnHeaderBytes);
  if (std::memcmp(bytes.data(), kAnnMagic, sizeof(kAnnMagic)) != 0)
    fail("{}: bad magic: not a skiff memory index", name);
  const uint32_t version = get_le<uint32_t>(bytes, kOffVersion);
  if (version != kAnnVersion)
    fail("{}: unsupported memory index version {} (this skiff reads version {})", name, version, kAnnVersion);
  const uint64_t stored = get_le<uint64_t>(bytes, kOffHeaderChecksum), computed = fnv1a(bytes.first(kOffHeaderChecksum));
  if (stored != computed)
    fail("{}: header checksum mismatch (stored {:016x}, computed {:016x}): the index is corrupt", name, stored,
         computed);
  if (get_le<uint32_t>(bytes, kOffHeaderBytes) != kAnnHeaderBytes)
    fail("{}: header size {} is not {}", name, get_le<uint32_t>(bytes, kOffHeaderBytes), kAnnHeaderBytes);
  AnnGraph g;
  g.n_entries = get_le<uint64_t>(bytes, kOffEntries);
  g.store_checksum = get_le<uint64_t>(bytes, kOffStoreChecksum);
  g.vector_dim = get_le<uint32_t>(bytes, kOffVectorDim);
  g.M = get_le<uint32_t>(bytes, kOffM);
  g.ef_construction = get_le<uint32_t>(bytes, kOffEfConstruction);
  g.max_level = get_le<uint32_t>(bytes, kOffMaxLevel);
  g.entry_point = get_le<uint32_t>(bytes, kOffEntryPoint);
  const uint64_t graph_bytes = get_le<uint64_t>(bytes, kOffGraphBytes);
  if (g.M < 2 || g.M > kMaxM) fail("{}: M = {} is outside [2, {}]", name, g.M, kMaxM);
  if (g.max_level > kMaxLevel) fail("{}: top level {} is above {}", name, g.max_level, kMaxLevel);
  if (graph_bytes != bytes.size() - kAnnHeaderBytes)
    fail("{}: {} bytes, but its header describes {}: the file is {}", name, bytes.size(),
         kAnnHeaderBytes + graph_bytes, bytes.size() < kAnnHeaderBytes + graph_bytes ? "truncated" : "followed by stray bytes");
  const std::span<const uint8_t> graph = bytes.subspan(kAnnHeaderBytes);
  if (fnv1a(graph) != get_le<uint64_t>(bytes, kOffGraphChecksum))
    fail("{}: checksum mismatch in the graph: the index is corrupt", name);
  // Every entry takes at least 8 bytes (its level and its level-0 count).
  if (g.n_entries < 1 || g.n_entries > graph.size() / 8 || g.n_entries > UINT32_MAX)
    fail("{}: {} entries cannot fit in {} bytes of graph", name, g.n_entries, graph.size());
  if (g.entry_point >= g.n_entries) fail("{}: entry point {} is not one of the {} entries", name, g.entry_point, g.n_entries);
  const size_t n = static_cast<size_t>(g.n_entries);
  g.level.resize(n);
  g.first_list.resize(n);
  g.list_start.push_back(0);
  g.links.reserve(graph.size() / 4);
  size_t pos = 0;
  auto word = [&](const char* what, size_t entry) {
    if (graph.size() - pos < 4) fail("{}: truncated in entry {}'s {}", name, entry, what);
    const uint32_t v = get_le<uint32_t>(graph, pos);
    pos += 4;
    return v;
  };
  for (size_t i = 0; i < n; ++i) {
    g.level[i] = word("level", i);
    if (g.level[i] > g.max_level) fail("{}: entry {} is on level {}, above the top level {}", name, i, g.level[i], g.max_level);
    g.first_list[i] = g.list_start.size() - 1;
    for (uint32_t l = 0; l <= g.level[i]; ++l) {
      const uint32_t count = word("neighbour count", i);
      const uint32_t most = l == 0 ? 2 * g.M : g.M;
      if (count > most) fail("{}: entry {} has {} neighbours on level {}, more than {}", name, i, count, l, most);
      if (graph.size() - pos < uint64_t{count} * 4) fail("{}: truncated in entry {}'s neighbours", name, i);
      for (uint32_t j = 0; j < count; ++j) g.links.push_back(word("neighbours", i));
      g.list_start.push_back(g.links.size());
    }
  }
  if (pos != graph.size()) fail("{}: {} stray bytes after the graph", name, graph.size() - pos);
  if (g.level[g.entry_point] != g.max_level)
    fail("{}: the entry point {} is on level {}, not the top level {}", name, g.entry_point, g.level[g.entry_point],
         g.max_level);
  // A neighbour on level l must exist and reach level l: search reads its list there.
  for (size_t i = 0; i < n; ++i) {
    for (uint32_t l = 0; l <= g.level[i]; ++l) {
      for (uint32_t j : g.neighbours(i, l)) {
        if (j >= n || g.level[j] < l)
          fail("{}: entry {} links on level {} to {}, which is not an entry on that level", name, i, l, j);
      }
    }
  }
  return g;
}

std::vector<uint8_t> serialize_ann(const AnnGraph& g) {
  std::vector<uint8_t> out(kAnnHeaderBytes, 0);
  auto append = [&](uint32_t v) {
    const size_t at = out.size();
    out.resize(at + 4);
    std::memcpy(out.data() + at, &v, 4);
  };
  for (size_t i = 0; i < g.level.size(); ++i) {
    append(g.level[i]);
    for (uint32_t l = 0; l <= g.level[i]; ++l) {
      const std::span<const uint32_t> nb = g.neighbours(i, l);
      append(static_cast<uint32_t>(nb.size()));
      for (uint32_t j : nb) append(j);
    }
  }
  std::memcpy(out.data(), kAnnMagic, sizeof(kAnnMagic));
  put_le<uint32_t>(out, kOffVersion, kAnnVersion);
  put_le<uint32_t>(out, kOffHeaderBytes, kAnnHeaderBytes);
  put_le<uint64_t>(out, kOffEntries, g.n_entries);
  put_le<uint64_t>(out, kOffStoreChecksum, g.store_checksum);
  put_le<uint32_t>(out, kOffVectorDim, g.vector_dim);
  put_le<uint32_t>(out, kOffM, g.M);
  put_le<uint32_t>(out, kOffEfConstruction, g.ef_construction);
  put_le<uint32_t>(out, kOffMaxLevel, g.max_level);
  put_le<uint32_t>(out, kOffEntryPoint, g.entry_point);
  put_le<uint64_t>(out, kOffGraphBytes, out.size() - kAnnHeaderBytes);
  put_le<uint64_t>(out, kOffGraphChecksum, fnv1a(std::span<const uint8_t>(out).subspan(kAnnHeaderBytes)));
  put_le<uint64_t>(out, kOffHeaderChecksum, fnv1a(std::span<const uint8_t>(out).first(kOffHeaderChecksum)));
  return out;
}

struct AnnIndex::Impl {
  explicit Impl(size_t dim) : space(dim) {}
  hnswlib::InnerProductSpace space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw;
};

AnnIndex::~AnnIndex() = default;

AnnIndex::AnnIndex(const MemoryStore& store, const AnnParams& params, size_t limit) : store_(store) {
  const size_t n = limit == 0 ? store.size() : std::min(limit, store.size());
  if (n == 0) fail("{}: cannot index an empty store", store.name());
  if (params.M < 2 || static_cast<uint32_t>(params.M) > kMaxM) fail("memory index: M = {} is outside [2, {}]", params.M, kMaxM);
  if (params.ef_construction < 1) fail("memory index: ef_construction = {}", params.ef_construction);
  impl_ = std::make_unique<Impl>(store.header().vector_dim);
  auto& h = impl_->hnsw;
  h = std::make_unique<hnswlib::HierarchicalNSW<float>>(&impl_->space, n, static_cast<size_t>(params.M),
                                                       static_cast<size_t>(params.ef_construction), params.seed);
  for (size_t i = 0; i < n; ++i) h->addPoint(store.vector(i).data(), i);
  // The graph, as the file keeps it.
  AnnGraph& g = graph_;
  g.n_entries = n;
  g.store_checksum = n == store.size() ? store.header().tables_checksum : 0;
  g.vector_dim = store.header().vector_dim;
  g.M = static_cast<uint32_t>(h->M_);
  g.ef_construction = static_cast<uint32_t>(h->ef_construction_);
  g.max_level = static_cast<uint32_t>(h->maxlevel_);
  g.entry_point = h->enterpoint_node_;
  g.level.resize(n);
  g.first_list.resize(n);
  g.list_start.push_back(0);
  for (size_t i = 0; i < n; ++i) {
    g.level[i] = static_cast<uint32_t>(h->element_levels_[i]);
    g.first_list[i] = g.list_start.size() - 1;
    for (uint32_t l = 0; l <= g.level[i]; ++l) {
      hnswlib::linklistsizeint* ll = h->get_linklist_at_level(static_cast<hnswlib::tableint>(i), static_cast<int>(l));
      const unsigned short count = h->getListCount(ll);
      const auto* nb = reinterpret_cast<const hnswlib::tableint*>(ll + 1);
      g.links.insert(g.links.end(), nb, nb + count);
      g.list_start.push_back(g.links.size());
    }
  }
}

AnnIndex::AnnIndex(const MemoryStore& store, AnnGraph graph, const std::string& name)
    : store_(store), graph_(std::move(graph)) {
  if (graph_.n_entries != store.size() || graph_.vector_dim != store.header().vector_dim ||
      graph_.store_checksum != store.header().tables_checksum)
    fail("{}: an index of another store or of an older version of it ({} entries of width {}, tables {:016x}; {} "
         "holds {} of width {}, tables {:016x}): rebuild it with `skiff memory index --store {}`",
         name, graph_.n_entries, graph_.vector_dim, graph_.store_checksum, store.name(), store.size(),
         store.header().vector_dim, store.header().tables_checksum, store.name());
  restore();
}

void AnnIndex::restore() {
  const AnnGraph& g = graph_;
  const size_t n = static_cast<size_t>(g.n_entries);
  impl_ = std::make_unique<Impl>(g.vector_dim);
  auto& h = impl_->hnsw;
  h = std::make_unique<hnswlib::HierarchicalNSW<float>>(&impl_->space, n, g.M, g.ef_construction);
  for (size_t i = 0; i < n; ++i) {
    const auto id = static_cast<hnswlib::tableint>(i);
    char* row = h->data_level0_memory_ + i * h->size_data_per_element_;
    std::memcpy(row + h->offsetData_, store_.vector(i).data(), h->data_size_);
    const hnswlib::labeltype label = i;
    std::memcpy(row + h->label_offset_, &label, sizeof(label));
    h->element_levels_[i] = static_cast<int>(g.level[i]);
    if (g.level[i] > 0) {
      h->linkLists_[i] = static_cast<char*>(std::calloc(g.level[i], h->size_links_per_element_));
      if (!h->linkLists_[i]) fail("memory index: out of memory");
    }
    for (uint32_t l = 0; l <= g.level[i]; ++l) {
      hnswlib::linklistsizeint* ll = h->get_linklist_at_level(id, static_cast<int>(l));
      const std::span<const uint32_t> nb = g.neighbours(i, l);
      *ll = static_cast<hnswlib::linklistsizeint>(nb.size());  // the count; no deletion mark
      std::memcpy(ll + 1, nb.data(), nb.size() * sizeof(uint32_t));
    }
    h->label_lookup_[label] = id;
    h->cur_element_count = i + 1;  // the destructor frees the lists of the entries counted
  }
  h->maxlevel_ = static_cast<int>(g.max_level);
  h->enterpoint_node_ = g.entry_point;
}

std::unique_ptr<AnnIndex> AnnIndex::load(const MemoryStore& store, const std::string& path) {
  const std::shared_ptr<MappedFile> file = MappedFile::open(path);
  return std::make_unique<AnnIndex>(store, parse_ann(file->bytes(), path), path);
}

std::unique_ptr<AnnIndex> AnnIndex::load_if_present(const MemoryStore& store) {
  const std::string path = ann_path(store.name());
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return nullptr;
  return load(store, path);
}

uint64_t AnnIndex::save(const std::string& path) const {
  if (graph_.n_entries != store_.size()) fail("memory index: an index of part of a store is not saved");
  const std::vector<uint8_t> bytes = serialize_ann(graph_);
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", tmp, std::strerror(errno));
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    fail("{}: write failed (disk full?)", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("{}: cannot rename to {}: {}", tmp, path, ec.message());
  return bytes.size();
}

std::vector<Hit> AnnIndex::search(std::span<const float> query, int k, int ef) const {
  if (k < 1 || static_cast<size_t>(k) > size())
    fail("{}: k = {} must be between 1 and the store's {} entries", store_.name(), k, size());
  if (query.size() != graph_.vector_dim)
    fail("{}: query vector of width {}, the store's are {}", store_.name(), query.size(), graph_.vector_dim);
  if (ef < 1) fail("memory search: ef = {} must be at least 1", ef);
  impl_->hnsw->setEf(static_cast<size_t>(std::max(ef, k)));
  auto found = impl_->hnsw->searchKnn(query.data(), static_cast<size_t>(k));
  // The store's own scores (hnswlib's SIMD sums in another order) and search_exact's order.
  std::vector<Hit> hits;
  hits.reserve(found.size());
  for (; !found.empty(); found.pop()) {
    const size_t e = static_cast<size_t>(found.top().second);
    const std::span<const float> v = store_.vector(e);
    hits.push_back({e, dot_f32(v.data(), query.data(), static_cast<int64_t>(v.size()))});
  }
  std::sort(hits.begin(), hits.end(),
            [](const Hit& a, const Hit& b) { return a.score > b.score || (a.score == b.score && a.entry < b.entry); });
  // A graph cut into pieces can yield fewer than k: exact search never does.
  if (hits.size() < static_cast<size_t>(k)) return search_exact(store_, query, k, size());
  return hits;
}

std::vector<Hit> search(const MemoryStore& store, const AnnIndex* index, std::span<const float> query, int k, int ef) {
  return index ? index->search(query, k, ef) : search_exact(store, query, k);
}

}  // namespace skiff::memory

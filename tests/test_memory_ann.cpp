// Large memory stores: the HNSW index (src/memory/ann.h: recall against exact search, a
// deterministic build, the sidecar file refused when stale, foreign or damaged) and
// `memory add` (src/memory/build.h: the same bytes as building from the concatenated
// knowledge base; another model and duplicate ids refused).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "base/error.h"
#include "base/hash.h"
#include "memory/ann.h"
#include "memory/build.h"
#include "memory/knowledge_base.h"
#include "memory/retrieval.h"
#include "memory/store.h"
#include "memory_test_util.h"
#include "test_util.h"

namespace skiff::memory {
namespace {

std::vector<float> random_unit(std::mt19937& rng, int dim) {
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(dim));
  double norm = 0;
  for (float& x : v) {
    x = normal(rng);
    norm += static_cast<double>(x) * x;
  }
  for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
  return v;
}

// A store of n random unit vectors, each entry one token of a 1-layer, 32-wide "model":
// retrieval needs no model, and thousands of entries write in milliseconds.
std::string random_store(const std::string& name, size_t n, int dim, uint32_t seed) {
  const std::string path = test::temp_path("test_memory_ann", name);
  ModelFingerprint fp;
  fp.file_size = 1;
  fp.n_layers = 1;
  fp.dim = dim;
  fp.vocab_size = 2;
  fp.kv_dim = 32;
  StoreWriter w(path, fp, {DType::F32, DType::F32}, dim);
  std::mt19937 rng(seed);
  const std::vector<float> kv(32, 0.5f);
  const std::vector<int32_t> tokens = {1};
  for (size_t i = 0; i < n; ++i)
    w.add(fmt::format("e{}", i), EntryKind::kQa, "text", tokens, kv, kv, random_unit(rng, dim));
  w.finish();
  return path;
}

class MemoryAnn : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const std::string& p : paths_) {
      std::filesystem::remove(p);
      std::filesystem::remove(ann_path(p));
    }
  }
  std::string store(const std::string& name, size_t n, int dim, uint32_t seed) {
    paths_.push_back(random_store(name, n, dim, seed));
    return paths_.back();
  }
  std::vector<std::string> paths_;
};

TEST_F(MemoryAnn, RecallAgainstExactSearchAtTheDefaultEf) {
  // Random unit vectors are the hard case for a graph index (no clusters to follow).
  const MemoryStore s(store("recall.skm", 3000, 48, 1));
  const AnnIndex index(s);
  const int k = 8, queries = 200;
  for (int ef :
       {64, kDefaultEf}) {  // the default, and a quarter of it (the bound holds even there)
    std::mt19937 rng(99);
    double found = 0;
    for (int q = 0; q < queries; ++q) {
      const std::vector<float> query = random_unit(rng, 48);
      const std::vector<Hit> exact = search_exact(s, query, k);
      const std::vector<Hit> approx = index.search(query, k, ef);
      ASSERT_EQ(approx.size(), static_cast<size_t>(k));
      for (size_t i = 1; i < approx.size(); ++i) EXPECT_GE(approx[i - 1].score, approx[i].score);
      for (const Hit& h : approx) {
        for (const Hit& e : exact) {
          if (e.entry == h.entry) {
            found += 1;
            EXPECT_EQ(e.score, h.score);  // the store's scores, as exact search computes them
          }
        }
      }
    }
    const double recall = found / (queries * k);
    std::printf("HNSW recall@%d against exact, 3000 random unit vectors of width 48, ef %d: %.3f\n",
                k, ef, recall);
    EXPECT_GE(recall, 0.95) << "ef " << ef;
  }
  // An entry's own vector finds the entry first.
  for (size_t i = 0; i < 50; ++i) EXPECT_EQ(index.search(s.vector(i), 1)[0].entry, i);
  EXPECT_NE(test::error_of([&] { index.search(s.vector(0), 3001); }).find("k = 3001"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { index.search(std::vector<float>(5), 3); }).find("width 5"),
            std::string::npos);
}

TEST_F(MemoryAnn, DeterministicAndTheFileRoundTrips) {
  const std::string path = store("rt.skm", 1500, 32, 2);
  const MemoryStore s(path);
  const AnnIndex a(s), b(s);
  const std::vector<uint8_t> bytes = serialize_ann(a.graph());
  EXPECT_EQ(bytes, serialize_ann(b.graph()));
  EXPECT_EQ(a.save(ann_path(path)), bytes.size());
  EXPECT_EQ(test::read_bytes(ann_path(path)), bytes);
  const std::unique_ptr<AnnIndex> loaded = AnnIndex::load_if_present(s);
  ASSERT_NE(loaded, nullptr);
  EXPECT_EQ(serialize_ann(loaded->graph()), bytes);
  std::mt19937 rng(5);
  for (int q = 0; q < 50; ++q) {
    const std::vector<float> query = random_unit(rng, 32);
    const std::vector<Hit> x = a.search(query, 5, 20), y = loaded->search(query, 5, 20);
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i].entry, y[i].entry);
  }
  // No file: callers search exactly.
  std::filesystem::remove(ann_path(path));
  EXPECT_EQ(AnnIndex::load_if_present(s), nullptr);
  EXPECT_NE(test::error_of([&] { AnnIndex::load(s, ann_path(path)); }).find(ann_path(path)),
            std::string::npos);
}

TEST_F(MemoryAnn, StaleForeignAndDamagedIndexesAreRefused) {
  const std::string path = store("a.skm", 600, 16, 3);
  const MemoryStore s(path);
  const std::vector<uint8_t> bytes = serialize_ann(AnnIndex(s).graph());
  auto error = [&](const MemoryStore& st, const std::vector<uint8_t>& b) {
    return test::error_of([&] { AnnIndex(st, parse_ann(b, "x.hnsw"), "x.hnsw"); });
  };
  EXPECT_EQ(error(s, bytes), "");
  // Another store of the same size and width (other vectors), and one more entry.
  const MemoryStore other(store("b.skm", 600, 16, 4));
  EXPECT_NE(error(other, bytes).find("another store"), std::string::npos);
  const MemoryStore longer(store("c.skm", 601, 16, 3));
  EXPECT_NE(error(longer, bytes).find("another store"), std::string::npos);
  std::vector<uint8_t> b = bytes;
  b[0] = 'X';
  EXPECT_NE(error(s, b).find("bad magic"), std::string::npos);
  b = bytes;
  b[20] ^= 1;
  EXPECT_NE(error(s, b).find("header checksum"), std::string::npos);
  b = bytes;
  b[kAnnHeaderBytes + 100] ^= 1;
  EXPECT_NE(error(s, b).find("checksum mismatch in the graph"), std::string::npos);
  for (size_t keep : {size_t{0}, size_t{50}, kAnnHeaderBytes, bytes.size() / 2, bytes.size() - 1}) {
    const std::vector<uint8_t> cut(bytes.begin(),
                                   bytes.begin() + static_cast<std::ptrdiff_t>(keep));
    EXPECT_NE(error(s, cut).find("truncated"), std::string::npos) << keep << ": " << error(s, cut);
  }
  b = bytes;
  b.push_back(0);
  EXPECT_NE(error(s, b).find("stray bytes"), std::string::npos);

  // Checksums intact, graph wrong: the parser's own checks (what keeps hnswlib from reading
  // outside its arrays).
  AnnGraph g = parse_ann(bytes, "x.hnsw");
  AnnGraph bad = g;
  bad.links[0] = 600;
  EXPECT_NE(error(s, serialize_ann(bad)).find("links on level 0 to 600"), std::string::npos);
  // A level-1 link to an entry that is only on level 0.
  bad = g;
  size_t ground = 0;
  while (bad.level[ground] != 0) ++ground;
  bool planted = false;
  for (size_t i = 0; i < bad.level.size() && !planted; ++i) {
    if (bad.level[i] >= 1 && !bad.neighbours(i, 1).empty()) {
      bad.links[bad.list_start[bad.first_list[i] + 1]] = static_cast<uint32_t>(ground);
      planted = true;
    }
  }
  ASSERT_TRUE(planted);
  EXPECT_NE(error(s, serialize_ann(bad)).find("which is not an entry on that level"),
            std::string::npos);
  bad = g;
  bad.entry_point = 600;
  EXPECT_NE(error(s, serialize_ann(bad)).find("entry point 600"), std::string::npos);
}

TEST(MemoryAnnFile, TheFuzzSeedParses) {
  const AnnGraph g = parse_ann(test::read_bytes(std::string(SKIFF_SOURCE_DIR) +
                                                "/fuzz/seeds/fuzz_memory_ann/three_entries.hnsw"),
                               "three_entries.hnsw");
  EXPECT_EQ(g.n_entries, 3u);
  EXPECT_EQ(g.max_level, 1u);
}

TEST_F(MemoryAnn, BuildWritesTheIndexWhenAskedAndRemovesAStaleOne) {
  const std::string path = store("w.skm", 100, 8, 6);
  BuildStats stats;
  write_index(path, AnnMode::kOn, {}, stats);
  EXPECT_GT(stats.ann_bytes, 0u);
  const MemoryStore s(path);
  EXPECT_NE(AnnIndex::load_if_present(s), nullptr);
  stats = {};
  write_index(path, AnnMode::kAuto, {}, stats);  // 100 entries: below the threshold
  EXPECT_EQ(stats.ann_bytes, 0u);
  EXPECT_FALSE(std::filesystem::exists(ann_path(path)));
}

using test::kKb;

class MemoryAdd : public ::testing::TestWithParam<Retriever> {
 protected:
  void SetUp() override {
    model_ = load_model(std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf");
  }
  void TearDown() override {
    for (const std::string& p : paths_) std::filesystem::remove(p);
  }
  std::string path(const std::string& name) {
    paths_.push_back(test::temp_path(
        "test_memory_ann", name + (GetParam() == Retriever::kLexical ? "_lex" : "_hid") + ".skm"));
    return paths_.back();
  }
  BuildOptions options() const {
    BuildOptions o;
    o.types = {DType::Q8_0, DType::F16};
    o.threads = 2;
    o.retriever = GetParam();
    o.ann = AnnMode::kOff;
    return o;
  }
  std::unique_ptr<Model> model_;
  std::vector<std::string> paths_;
};

TEST_P(MemoryAdd, EqualsBuildingFromTheConcatenation) {
  const std::string whole = path("whole"), part = path("part"), added = path("added");
  build_store(*model_, kKb, whole, options());
  const std::span<const KbEntry> kb(kKb);
  build_store(*model_, kb.first(3), part, options());
  BuildOptions o = options();
  o.types = {DType::F32, DType::F32};  // ignored: the store's types are kept
  {
    const MemoryStore base(part);
    const BuildStats s = add_to_store(*model_, base, kb.subspan(3), added, o);
    EXPECT_EQ(s.entries, kKb.size());
  }
  EXPECT_EQ(test::read_bytes(added), test::read_bytes(whole));
  // In place, twice (one entry at a time).
  {
    const MemoryStore base(part);
    add_to_store(*model_, base, kb.subspan(3, 1), part, o);
  }
  {
    const MemoryStore base(part);
    add_to_store(*model_, base, kb.subspan(4), part, o);
  }
  EXPECT_EQ(test::read_bytes(part), test::read_bytes(whole));
}

TEST_P(MemoryAdd, ForeignModelAndDuplicateIdsAreRefused) {
  const std::string base_path = path("base"), out = path("out");
  build_store(*model_, std::span<const KbEntry>(kKb).first(2), base_path, options());
  const MemoryStore base(base_path);
  const std::vector<KbEntry> dup = {{"p9", EntryKind::kQa, "Q: Who? A: me."},
                                    {"q1", EntryKind::kQa, "Q: a? A: b."}};
  EXPECT_NE(test::error_of([&] {
              add_to_store(*model_, base, dup, out, options());
            }).find("\"q1\" is already in"),
            std::string::npos);
  const std::unique_ptr<Model> other =
      load_model(std::string(SKIFF_SOURCE_DIR) + "/models/stories3M-layerskip.gguf");
  EXPECT_NE(test::error_of([&] {
              add_to_store(*other, base, std::span<const KbEntry>(kKb).subspan(2), out, options());
            }).find("built with another model"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(out));
}

INSTANTIATE_TEST_SUITE_P(Retrievers, MemoryAdd,
                         ::testing::Values(Retriever::kLexical, Retriever::kHidden),
                         [](const auto& info) { return std::string(retriever_name(info.param)); });

}  // namespace
}  // namespace skiff::memory

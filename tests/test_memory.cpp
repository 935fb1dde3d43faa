// Memory-augmented generation (src/memory/): block attention in the forward pass, the store
// file (round trip, corruption, truncation, a foreign model), and the exactness claim: the
// stored entries spliced at their positions give the logits of a block-masked prefill of
// the same text, while the splice without the RoPE correction does not.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "base/hash.h"
#include "memory/build.h"
#include "memory/compress.h"
#include "memory/knowledge_base.h"
#include "memory/lexical.h"
#include "memory/reader.h"
#include "memory/retrieval.h"
#include "memory/store.h"
#include "memory_test_util.h"
#include "model/forward.h"
#include "synth/synth.h"
#include "test_util.h"

namespace skiff::memory {
namespace {

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

using test::kKb;

// The model under test: stories260K (GQA 8:4, a real tokenizer) and a random GQA model with
// a 32000-token vocabulary and head dim 64 (Q8_0 blocks fit).
class MemoryModel : public ::testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() {
    random_path_ = test::temp_path("test_memory", "random.gguf");
    SynthOptions o;
    o.shape = llama_shape("mem", 128, 3, 4, 2, 256, 32000, 512);
    o.type = DType::F16;
    o.vocab_path = test::shared_path("models/ggml-vocab-llama-spm.gguf");
    o.threads = 2;
    write_synthetic_model(o, random_path_);
  }
  static void TearDownTestSuite() { std::filesystem::remove(random_path_); }

  void SetUp() override {
    const std::string which = GetParam();
    model_ =
        load_model(which == "random" ? random_path_
                                     : std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf");
  }
  std::string build(KvTypes types, const std::string& name) {
    const std::string path =
        test::temp_path("test_memory", std::string(GetParam()) + "_" + name + ".skm");
    BuildOptions o;
    o.types = types;
    o.threads = 2;
    build_store(*model_, kKb, path, o);
    paths_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const std::string& p : paths_) std::filesystem::remove(p);
  }

  static std::string random_path_;
  std::unique_ptr<Model> model_;
  std::vector<std::string> paths_;
};
std::string MemoryModel::random_path_;

TEST_P(MemoryModel, SpliceEqualsBlockMaskedPrefillAndUncorrectedDoesNot) {
  const MemoryStore store(build({}, "f32"));
  Reader reader(*model_, &store, 256, 2);
  const std::vector<int32_t> q = question_tokens(*model_->tokenizer, "What pet does Bomira have?");
  const std::vector<size_t> entries = {2, 0, 4, 1};
  const std::vector<float> block = reader.prefill(Method::kReadBlock, entries, q);
  const std::vector<float> spliced = reader.prefill(Method::kSplice, entries, q);
  const std::vector<float> uncorrected = reader.prefill(Method::kSpliceUncorrected, entries, q);
  const std::vector<float> causal = reader.prefill(Method::kRead, entries, q);
  EXPECT_LE(max_abs_diff(block, spliced), 1e-4f);
  std::printf("%s: |splice - block prefill| %.3g, uncorrected %.3g, causal read %.3g\n", GetParam(),
              max_abs_diff(block, spliced), max_abs_diff(block, uncorrected),
              max_abs_diff(block, causal));
  // The negative control and plain reading differ far beyond rounding (a random model's
  // attention depends on position only weakly: 1e-2 there, 1 on stories260K).
  EXPECT_GT(max_abs_diff(block, uncorrected), std::max(1e-3f, 100 * max_abs_diff(block, spliced)));
  EXPECT_GT(max_abs_diff(block, causal), 1e-2f);
  // The splice leaves the cache as long as the prefill does.
  EXPECT_EQ(
      reader.context().cache().length(0), 1 + static_cast<int>(q.size()) + [&] {
        int n = 0;
        for (size_t e : entries) n += store.entry(e).n_tokens;
        return n;
      }());
}

TEST_P(MemoryModel, SpliceRecomputeIsBetweenSpliceAndReading) {
  // Recomputing every token of every entry is reading them causally; recomputing a few keeps
  // the rest of each entry's stored rows, so the logits are neither the splice's nor reading's
  // but a masked prefill's (tests/reference/test_memory_reference.py checks them against an
  // independent reference too).
  const MemoryStore store(build({}, "f32"));
  Reader reader(*model_, &store, 256, 2);
  const std::vector<int32_t> q = question_tokens(*model_->tokenizer, "What pet does Bomira have?");
  const std::vector<size_t> entries = {2, 0, 4, 1};
  const std::vector<float> causal = reader.prefill(Method::kRead, entries, q);
  const std::vector<float> spliced = reader.prefill(Method::kSplice, entries, q);
  reader.set_recompute(1000);
  EXPECT_LE(max_abs_diff(causal, reader.prefill(Method::kSpliceRecompute, entries, q)), 1e-4f);
  reader.set_recompute(3);
  const std::vector<float> partial = reader.prefill(Method::kSpliceRecompute, entries, q);
  EXPECT_GT(max_abs_diff(partial, causal), 1e-3f);
  EXPECT_GT(max_abs_diff(partial, spliced), 1e-3f);
  // No row of an entry follows its recomputed ones, so every row has one version: the whole
  // is a masked prefill of the sequence with the layout's first visible positions.
  const Reader::Layout seq = reader.layout(Method::kSpliceRecompute, entries, q);
  const ModelConfig& c = model_->config;
  Context masked(*model_, 256, 2);
  const auto T = static_cast<int64_t>(seq.tokens.size());
  std::vector<float> hidden(static_cast<size_t>(T) * c.dim), logits(static_cast<size_t>(c.vocab_size));
  embed(*model_, seq.tokens, hidden.data());
  forward_masked(masked, hidden.data(), T, 0, c.n_layers, std::span<const int32_t>(seq.first_visible));
  compute_logits(masked, hidden.data() + (T - 1) * c.dim, 1, logits.data());
  EXPECT_LE(max_abs_diff(partial, logits), 1e-4f);
  int n = 0;
  for (size_t e : entries) n += store.entry(e).n_tokens;
  EXPECT_EQ(reader.context().cache().length(0), 1 + n + static_cast<int>(q.size()));
  // What it reads: the last 3 rows of each entry see everything, the others their entry.
  int start = 1;
  for (size_t e : entries) {
    const int len = store.entry(e).n_tokens;
    for (int j = 0; j < len; ++j)
      EXPECT_EQ(seq.first_visible[static_cast<size_t>(start + j)], j < len - 3 ? start : 0) << e << " " << j;
    start += len;
  }
  EXPECT_THROW(reader.set_recompute(0), Error);
}

TEST_P(MemoryModel, QuantizedStoresStayCloseToTheBlockMaskedPrefill) {
  // F16 keys/values: about 3 decimal digits; Q8_0: about 2. The bounds are the measured
  // differences with a margin of ~3x (docs/MEMORY.md states them).
  const std::vector<int32_t> q =
      question_tokens(*model_->tokenizer, "What does Tavek like to eat?");
  const std::vector<size_t> entries = {3, 1, 2};
  const MemoryStore exact(build({}, "f32"));
  Reader reference(*model_, &exact, 256, 2);
  const std::vector<float> block = reference.prefill(Method::kReadBlock, entries, q);
  float scale = 0;
  for (float x : block) scale = std::max(scale, std::fabs(x));
  for (auto [type, bound] : {std::pair{DType::F16, 2e-3f}, std::pair{DType::Q8_0, 2e-2f}}) {
    const MemoryStore store(build({type, type}, dtype_name(type).data()));
    Reader reader(*model_, &store, 256, 2);
    const float d = max_abs_diff(block, reader.prefill(Method::kSplice, entries, q));
    EXPECT_LE(d, bound * std::max(1.0f, scale)) << dtype_name(type) << " logit scale " << scale;
    std::printf("%s: %s store, |splice - block prefill| %.3g (largest logit %.3g)\n", GetParam(),
                dtype_name(type).data(), d, scale);
  }
}

TEST_P(MemoryModel, BatchedAnswersEqualOneByOne) {
  // answer_batch runs the questions through batched passes (different lengths, every method,
  // one question with its own given entries); each answer and first-token distribution
  // equals answer()'s for that question alone.
  const MemoryStore store(build({}, "batch"));
  Reader single(*model_, &store, 256, 2), batched(*model_, &store, 256, 2);
  single.set_recompute(3);
  batched.set_recompute(3);
  const std::vector<std::string> questions = {
      "What pet does Bomira have?", "Who is Tavek's friend?", "What color does Lomi like?"};
  const std::vector<std::vector<size_t>> given = {{1}, {2, 0}, {4}};
  for (Method m : {Method::kNone, Method::kOracle, Method::kRead, Method::kReadBlock, Method::kSplice,
                   Method::kSpliceUncorrected, Method::kSpliceRecompute}) {
    for (int round = 0; round < 2; ++round) {  // a second batch reuses the sequences
      const std::vector<Answer> got = batched.answer_batch(
          m, questions, 3, m == Method::kOracle ? given : std::vector<std::vector<size_t>>{}, 6);
      ASSERT_EQ(got.size(), questions.size());
      for (size_t i = 0; i < questions.size(); ++i) {
        const Answer want = single.answer(
            m, questions[i], 3,
            m == Method::kOracle ? std::span<const size_t>(given[i]) : std::span<const size_t>(),
            6);
        EXPECT_EQ(got[i].text, want.text) << method_name(m) << " " << i;
        EXPECT_EQ(got[i].entries, want.entries) << method_name(m) << " " << i;
        EXPECT_EQ(got[i].prefill_tokens, want.prefill_tokens) << method_name(m) << " " << i;
        EXPECT_LE(max_abs_diff(got[i].first_logits, want.first_logits), 1e-4f)
            << method_name(m) << " " << i;
      }
    }
  }
}

TEST_P(MemoryModel, StoreRoundTripAndRetrieval) {
  const MemoryStore store(build({DType::F16, DType::F16}, "rt"));
  ASSERT_EQ(store.size(), kKb.size());
  for (size_t i = 0; i < kKb.size(); ++i) {
    EXPECT_EQ(store.entry(i).id, kKb[i].id);
    EXPECT_EQ(store.entry(i).text, kKb[i].text);
    EXPECT_EQ(store.entry(i).kind, kKb[i].kind);
    const std::vector<int32_t> t = model_->tokenizer->encode(kKb[i].text, false);
    EXPECT_EQ(std::vector<int32_t>(store.tokens(i).begin(), store.tokens(i).end()), t);
    EXPECT_NO_THROW(store.verify_entry(i));
  }
  EXPECT_NO_THROW(store.check_model(*model_));
  EXPECT_EQ(store.retriever(), Retriever::kLexical);
  // The lexical retriever: a question about Bomira's pet finds the QA pair first and the
  // passage that states it among the top 3 (in five entries IDF tells little apart).
  const LexicalEncoder lex(std::vector<float>(store.idf().begin(), store.idf().end()));
  const std::vector<Hit> hits = search_exact(
      store, lex.encode(model_->tokenizer->encode("What pet does Bomira have?", false), false), 3);
  EXPECT_EQ(store.entry(hits[0].entry).id, "q1");
  EXPECT_TRUE(store.entry(hits[1].entry).id == "p1" || store.entry(hits[2].entry).id == "p1");
  EXPECT_NE(test::error_of([&] { search_exact(store, store.vector(0), 6); }).find("k = 6"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { search_exact(store, store.vector(0), 0); }).find("k = 0"),
            std::string::npos);
}

TEST_P(MemoryModel, HiddenStateRetriever) {
  BuildOptions o;
  o.retriever = Retriever::kHidden;
  const std::string path = test::temp_path("test_memory", std::string(GetParam()) + "_hidden.skm");
  paths_.push_back(path);
  build_store(*model_, kKb, path, o);
  const MemoryStore store(path);
  EXPECT_EQ(store.retriever(), Retriever::kHidden);
  EXPECT_TRUE(store.idf().empty());
  EXPECT_EQ(store.header().vector_dim, static_cast<uint32_t>(model_->config.dim));
  // Unit vectors: an entry's own vector finds it first.
  for (size_t i = 0; i < store.size(); ++i)
    EXPECT_EQ(search_exact(store, store.vector(i), 2)[0].entry, i);
}

INSTANTIATE_TEST_SUITE_P(Models, MemoryModel, ::testing::Values("stories260K", "random"));

TEST(BlockAttention, AllZeroStartsAreCausalAndMaskedRowsIgnoreWhatTheyCannotSee) {
  const std::unique_ptr<Model> model =
      load_model(std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf");
  const ModelConfig& c = model->config;
  auto run = [&](const std::vector<int32_t>& tokens, const std::vector<int32_t>* first_visible) {
    Context ctx(*model, 64, 2);
    std::vector<float> hidden(tokens.size() * static_cast<size_t>(c.dim));
    embed(*model, tokens, hidden.data());
    if (first_visible)
      forward_masked(ctx, hidden.data(), static_cast<int64_t>(tokens.size()), 0, c.n_layers,
                     *first_visible);
    else
      forward(ctx, hidden.data(), static_cast<int64_t>(tokens.size()), 0, c.n_layers);
    return hidden;
  };
  const std::vector<int32_t> a = {1, 45, 300, 12, 99, 7, 400, 250, 31};
  const std::vector<int32_t> zeros(a.size(), 0);
  EXPECT_EQ(run(a, nullptr), run(a, &zeros));
  // Rows 4.. see only positions 4..: changing tokens 0..3 leaves their states bit-identical.
  std::vector<int32_t> b = a;
  b[0] = 2;
  b[2] = 77;
  b[3] = 100;
  const std::vector<int32_t> fv = {0, 0, 0, 0, 4, 4, 4, 4, 4};
  const std::vector<float> ha = run(a, &fv), hb = run(b, &fv);
  const size_t from = 4 * static_cast<size_t>(c.dim);
  EXPECT_TRUE(std::equal(ha.begin() + static_cast<std::ptrdiff_t>(from), ha.end(),
                         hb.begin() + static_cast<std::ptrdiff_t>(from)));
  EXPECT_NE(ha, hb);
  // Bad masks are errors, nothing written.
  Context ctx(*model, 64, 1);
  std::vector<float> hidden(a.size() * static_cast<size_t>(c.dim));
  embed(*model, a, hidden.data());
  const std::vector<int32_t> ahead = {0, 2, 0, 0, 0,
                                      0, 0, 0, 0};  // row 1 cannot start at position 2
  EXPECT_NE(test::error_of([&] {
              forward_masked(ctx, hidden.data(), 9, 0, c.n_layers, ahead);
            }).find("row 1"),
            std::string::npos);
  EXPECT_THROW(forward_masked(ctx, hidden.data(), 9, 0, c.n_layers, std::vector<int32_t>(8, 0)),
               Error);
  EXPECT_EQ(ctx.cache().length(0), 0);
}

TEST_P(MemoryModel, CompressedStoreKeepsSlotsAtRowsWithReRotatedKeys) {
  constexpr int kSlots = 3;
  const std::string full_path = build({}, "full32");
  const std::string path = test::temp_path("test_memory", std::string(GetParam()) + "_m3.skm");
  paths_.push_back(path);
  BuildOptions o;
  o.types = {};  // F32: the rows compare exactly
  o.threads = 2;
  o.slots = kSlots;
  build_store(*model_, kKb, path, o);
  const MemoryStore store(path), full(full_path);
  ASSERT_EQ(store.slots(), kSlots);
  const ModelConfig& c = model_->config;
  const int hd = c.head_dim, kv = c.kv_dim();
  const std::vector<int32_t> probe = model_->tokenizer->encode(kDefaultSlotProbe, false);
  Context enc(*model_, 128, 2);
  for (size_t e = 0; e < store.size(); ++e) {
    const int n = store.entry(e).n_tokens;
    ASSERT_EQ(store.entry(e).kv_rows, std::min(n, kSlots)) << e;
    if (n > kSlots) {
      EXPECT_LT(store.entry_bytes(e), full.entry_bytes(e)) << e;
    }
    SlotChoice choice;
    encode_entry_slots(enc, store.tokens(e), kSlots, probe, &choice);
    ASSERT_EQ(choice.size(), static_cast<size_t>(c.n_layers));
    for (const auto& layer : choice) {
      ASSERT_EQ(layer.size(), static_cast<size_t>(c.n_kv_heads));
      for (const std::vector<int>& keep : layer) {
        ASSERT_EQ(keep.size(), static_cast<size_t>(std::min(n, kSlots)));
        for (size_t j = 0; j < keep.size(); ++j) {
          EXPECT_TRUE(keep[j] >= 0 && keep[j] < n && (j == 0 || keep[j - 1] < keep[j])) << e;
        }
      }
    }
    // Layer 0's keys and values depend on the token and its position only: row j of head h
    // must be the key a token kept from position t has AT POSITION j (re-rotated by j - t),
    // and its value. Computed independently: the token run alone at position j.
    for (int h = 0; h < c.n_kv_heads; ++h) {
      for (int j = 0; j < store.entry(e).kv_rows; ++j) {
        const int t = choice[0][static_cast<size_t>(h)][static_cast<size_t>(j)];
        Context ref(*model_, 64, 1);
        const std::vector<int32_t> run(static_cast<size_t>(j + 1),
                                       store.tokens(e)[static_cast<size_t>(t)]);
        eval_tokens(ref, run);
        const auto* k =
            reinterpret_cast<const float*>(store.keys(e, 0)) + static_cast<size_t>(j) * kv + h * hd;
        const auto* v = reinterpret_cast<const float*>(store.values(e, 0)) +
                        static_cast<size_t>(j) * kv + h * hd;
        for (int i = 0; i < hd; ++i) {
          EXPECT_NEAR(k[i], ref.cache().key(0, j)[h * hd + i], 1e-4f)
              << e << " head " << h << " row " << j;
          EXPECT_NEAR(v[i], ref.cache().value(0, j)[h * hd + i], 1e-5f)
              << e << " head " << h << " row " << j;
        }
      }
    }
  }
  // Spliced, an entry takes its kept rows; the question after them is read as usual.
  Reader reader(*model_, &store, 256, 2);
  const std::vector<int32_t> q = question_tokens(*model_->tokenizer, "What pet does Bomira have?");
  const std::vector<size_t> entries = {0, 2, 4};
  const std::vector<float> logits = reader.prefill(Method::kSplice, entries, q);
  EXPECT_EQ(reader.context().cache().length(0), 1 + 3 * kSlots + static_cast<int>(q.size()));
  EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float x) { return std::isfinite(x); }));
  // Recomputing an entry's last tokens needs its rows to be its tokens: refused, named.
  try {
    reader.prefill(Method::kSpliceRecompute, entries, q);
    ADD_FAILURE() << "splice-recompute read a compressed store";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("whole entries"), std::string::npos) << e.what();
  }
}

TEST_P(MemoryModel, VersionOneStoresAreStillRead) {
  // A version 1 file: no slot count, records without KV rows (both zero). Made from a
  // version 2 store by rewriting those fields and the checksums that cover them.
  const std::string path = build({DType::F16, DType::F16}, "v2");
  std::vector<uint8_t> b = test::read_bytes(path);
  auto u64 = [&](size_t off) {
    uint64_t x;
    std::memcpy(&x, &b[off], 8);
    return x;
  };
  auto put32 = [&](size_t off, uint32_t x) { std::memcpy(&b[off], &x, 4); };
  auto put64 = [&](size_t off, uint64_t x) { std::memcpy(&b[off], &x, 8); };
  put32(8, 1);  // version
  const uint64_t n = u64(64), entries = u64(88), vectors = u64(96), strings = u64(104),
                 strings_bytes = u64(112), retriever = u64(128), retriever_bytes = u64(136);
  const uint32_t vector_dim = [&] {
    uint32_t x;
    std::memcpy(&x, &b[56], 4);
    return x;
  }();
  for (uint64_t i = 0; i < n; ++i)
    put32(static_cast<size_t>(entries + i * sizeof(EntryRecord) + 56), 0);
  uint64_t tables = fnv1a({&b[entries], n * sizeof(EntryRecord)});
  tables = fnv1a(tables, {&b[vectors], n * vector_dim * sizeof(float)});
  tables = fnv1a(tables, {&b[strings], strings_bytes});
  tables = fnv1a(tables, {&b[retriever], retriever_bytes});
  put64(120, tables);
  put64(kHeaderBytes - 8, fnv1a({b.data(), kHeaderBytes - 8}));
  const MemoryStore v1(b, "v1.skm"), v2(path);
  EXPECT_EQ(v1.header().version, 1u);
  EXPECT_EQ(v1.slots(), 0);
  Reader a(*model_, &v1, 256, 2), r2(*model_, &v2, 256, 2);
  const std::vector<int32_t> q = question_tokens(*model_->tokenizer, "Who is Tavek's friend?");
  EXPECT_EQ(a.prefill(Method::kSplice, std::vector<size_t>{1, 2}, q),
            r2.prefill(Method::kSplice, std::vector<size_t>{1, 2}, q));
  // A version 1 header with a slot count is refused.
  put32(144, 4);
  put64(kHeaderBytes - 8, fnv1a({b.data(), kHeaderBytes - 8}));
  EXPECT_NE(
      test::error_of([&] { MemoryStore s(b, "v1.skm"); }).find("version 1 store with 4 slots"),
      std::string::npos);
}

// A store on disk with its bytes changed: every damage is a clear error, never a crash.
class StoreFile : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = load_model(std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf");
    path_ = test::temp_path("test_memory", "file.skm");
    BuildOptions o;
    o.types = {DType::Q8_0, DType::F16};
    build_store(*model_, kKb, path_, o);
    bytes_ = test::read_bytes(path_);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::string open_error(const std::vector<uint8_t>& bytes) {
    return test::error_of([&] { MemoryStore s(bytes, "damaged.skm"); });
  }
  std::unique_ptr<Model> model_;
  std::string path_;
  std::vector<uint8_t> bytes_;
};

TEST_F(StoreFile, DamageIsNamed) {
  EXPECT_EQ(open_error(bytes_), "");
  std::vector<uint8_t> b = bytes_;
  b[0] = 'X';
  EXPECT_NE(open_error(b).find("bad magic"), std::string::npos);
  b = bytes_;
  b[40] ^= 1;  // a header field
  EXPECT_NE(open_error(b).find("header checksum"), std::string::npos);
  for (size_t keep : {size_t{0}, size_t{100}, kHeaderBytes, bytes_.size() / 2, bytes_.size() - 1}) {
    const std::vector<uint8_t> cut(bytes_.begin(),
                                   bytes_.begin() + static_cast<std::ptrdiff_t>(keep));
    const std::string e = open_error(cut);
    EXPECT_TRUE(e.find("truncated") != std::string::npos) << keep << ": " << e;
  }
  // The tables (last sections) and an entry's data (first section) are checksummed.
  b = bytes_;
  b[b.size() - 70] ^= 0x40;
  EXPECT_NE(open_error(b).find("checksum mismatch in the entry tables"), std::string::npos);
  b = bytes_;
  b[kHeaderBytes + 3] ^= 0x40;
  MemoryStore damaged(b, "damaged.skm");
  EXPECT_NE(test::error_of([&] { damaged.verify_entry(0); }).find("entry 0 (p1) is corrupt"),
            std::string::npos);
  EXPECT_NO_THROW(damaged.verify_entry(1));
}

TEST_F(StoreFile, ForeignModelAndBadKnowledgeBasesAreRefused) {
  const MemoryStore store(path_);
  const std::unique_ptr<Model> other =
      load_model(std::string(SKIFF_SOURCE_DIR) + "/models/stories3M-layerskip.gguf");
  EXPECT_NE(test::error_of([&] { store.check_model(*other); }).find("built with another model"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { Reader r(*other, &store, 64, 1); }).find("another model"),
            std::string::npos);

  const std::string kb = test::temp_path("test_memory", "kb.jsonl");
  auto kb_error = [&](const std::string& text) {
    std::ofstream(kb) << text;
    return test::error_of([&] { read_kb(kb); });
  };
  EXPECT_EQ(kb_error("{\"id\": \"a\", \"kind\": \"qa\", \"text\": \"x\"}\n"), "");
  EXPECT_NE(kb_error("{\"id\": \"a\", \"kind\": \"qa\", \"text\": \"x\"}\n{oops\n")
                .find(":2: not valid JSON"),
            std::string::npos);
  EXPECT_NE(
      kb_error("{\"id\": \"a\", \"kind\": \"poem\", \"text\": \"x\"}\n").find("kind \"poem\""),
      std::string::npos);
  EXPECT_NE(kb_error("{\"id\": \"a\", \"kind\": \"qa\"}\n").find("\"text\" is missing"),
            std::string::npos);
  EXPECT_NE(kb_error("{\"id\": \"a\", \"kind\": \"qa\", \"text\": \"x\"}\n{\"id\": \"a\", "
                     "\"kind\": \"qa\", \"text\": \"y\"}\n")
                .find("duplicate id"),
            std::string::npos);
  EXPECT_NE(kb_error("").find("no entries"), std::string::npos);
  std::filesystem::remove(kb);

  // More entries than the context holds.
  Reader small(*model_, &store, 16, 1);
  const std::vector<size_t> all = {0, 1, 2, 3, 4};
  EXPECT_NE(test::error_of([&] {
              small.prefill(Method::kSplice, all, question_tokens(*model_->tokenizer, "Who?"));
            }).find("more than the context"),
            std::string::npos);
}

}  // namespace
}  // namespace skiff::memory

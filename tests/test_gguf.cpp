// GGUF reader/writer: round trips through the writer, real files written by llama.cpp, and a
// hostile-input suite (truncation at every byte, corrupt counts/types/dims/offsets/alignment)
// where every defect must surface as an Error that says what is wrong, never a crash.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace skiff {
namespace {

using test::f32_bytes;
using test::shared_path;
using Parsed = test::Parsed<GgufFile>;

// A parse over a private, exact-size copy of the bytes, so ASan catches any read past the end.
Parsed parse_bytes(const std::vector<uint8_t>& bytes, const std::string& name = "test.gguf") {
  return test::parse_copy<GgufFile>(bytes, name);
}

// The Error message parse() gives, or "" when it parses.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  return test::error_of([&] { parse_bytes(bytes, "bad.gguf"); });
}

#define EXPECT_PARSE_ERROR(bytes, fragment)                                   \
  do {                                                                        \
    const std::string message = parse_error(bytes);                           \
    EXPECT_NE(message.find(fragment), std::string::npos)                      \
        << "message: \"" << message << "\" lacks \"" << (fragment) << "\"";   \
    EXPECT_NE(message.find("bad.gguf: byte "), std::string::npos) << message; \
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;              \
  } while (0)

bool same_value(const GgufValue& a, const GgufValue& b) {
  if (a.type != b.type || a.value.index() != b.value.index()) return false;
  if (a.type != GgufType::ARRAY) {
    if (const auto* u = std::get_if<uint64_t>(&a.value)) return *u == std::get<uint64_t>(b.value);
    if (const auto* i = std::get_if<int64_t>(&a.value)) return *i == std::get<int64_t>(b.value);
    if (const auto* d = std::get_if<double>(&a.value)) return *d == std::get<double>(b.value);
    if (const auto* f = std::get_if<bool>(&a.value)) return *f == std::get<bool>(b.value);
    return std::get<std::string>(a.value) == std::get<std::string>(b.value);
  }
  if (a.array_type != b.array_type) return false;
  const auto& x = std::get<std::vector<GgufValue>>(a.value);
  const auto& y = std::get<std::vector<GgufValue>>(b.value);
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!same_value(x[i], y[i])) return false;
  }
  return true;
}

std::vector<uint8_t> quantized(DType type, int64_t row, int64_t rows, float seed) {
  std::vector<float> x(static_cast<size_t>(row * rows));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(seed + 0.37f * static_cast<float>(i));
  std::vector<uint8_t> out(row_bytes(type, row) * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_TRUE(quantize_row(type, x.data() + r * row, out.data() + r * row_bytes(type, row), row));
  }
  return out;
}

// ---- round trips ----------------------------------------------------------------------------

std::vector<std::pair<std::string, GgufValue>> every_value_type() {
  using V = GgufValue;
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"t.u8", V{GgufType::UINT8, uint64_t{200}}},
      {"t.i8", V{GgufType::INT8, int64_t{-128}}},
      {"t.u16", V{GgufType::UINT16, uint64_t{65535}}},
      {"t.i16", V{GgufType::INT16, int64_t{-12345}}},
      {"t.u32", V::u32(4000000000u)},
      {"t.i32", V::i32(-2000000000)},
      {"t.f32", V::f32(1e-5f)},
      {"t.bool.true", V::boolean(true)},
      {"t.bool.false", V::boolean(false)},
      {"t.string", V::str("h\xc3\xa9llo\n\"world\"")},
      {"t.string.empty", V::str("")},
      {"t.string.nul", V::str(std::string("a\0b", 3))},
      {"t.u64", V{GgufType::UINT64, std::numeric_limits<uint64_t>::max()}},
      {"t.i64", V{GgufType::INT64, std::numeric_limits<int64_t>::min()}},
      {"t.f64", V{GgufType::FLOAT64, 3.141592653589793}},
      {"t.array.u8", V::array(GgufType::UINT8, {V{GgufType::UINT8, uint64_t{1}},
                                                V{GgufType::UINT8, uint64_t{255}}})},
      {"t.array.str", V::array(GgufType::STRING, {V::str("<unk>"), V::str(""), V::str("▁the")})},
      {"t.array.f32", V::array(GgufType::FLOAT32, {V::f32(0.5f), V::f32(-1e30f)})},
      {"t.array.bool", V::array(GgufType::BOOL, {V::boolean(true), V::boolean(false)})},
      {"t.array.empty", V::array(GgufType::INT32, {})},
      {"t.array.nested",
       V::array(GgufType::ARRAY, {V::array(GgufType::INT32, {V::i32(1), V::i32(-2)}),
                                  V::array(GgufType::STRING, {V::str("x")}),
                                  V::array(GgufType::ARRAY, {V::array(GgufType::FLOAT64, {})})})},
  };
  return kv;
}

TEST(GgufRoundTrip, EveryValueType) {
  GgufWriter writer;
  const auto kv = every_value_type();
  for (const auto& [k, v] : kv) writer.set(k, v);
  const Parsed parsed = parse_bytes(writer.serialize());
  const GgufFile& g = parsed.file;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_TRUE(g.tensors().empty());
  ASSERT_EQ(g.metadata().size(), kv.size());
  for (size_t i = 0; i < kv.size(); ++i) {
    SCOPED_TRACE(kv[i].first);
    EXPECT_EQ(g.metadata()[i].first, kv[i].first);  // file order kept
    const GgufValue* v = g.find(kv[i].first);
    ASSERT_NE(v, nullptr);
    EXPECT_TRUE(same_value(*v, kv[i].second)) << v->to_display_string();
  }
  EXPECT_EQ(g.get_int("t.u8"), 200);
  EXPECT_EQ(g.get_int("t.i8"), -128);
  EXPECT_EQ(g.get_int("t.u32"), 4000000000);
  EXPECT_EQ(g.get_int("t.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_THROW(g.get_int("t.u64"), Error);  // does not fit in int64
  EXPECT_FLOAT_EQ(static_cast<float>(g.get_double("t.f32", 0)), 1e-5f);
  EXPECT_DOUBLE_EQ(g.get_double("t.u16", 0), 65535.0);
  EXPECT_TRUE(g.get_bool("t.bool.true", false));
  EXPECT_EQ(g.get_string("t.string.nul", ""), std::string("a\0b", 3));
  const auto& nested = g.find("t.array.nested")->as_array("nested");
  ASSERT_EQ(nested.size(), 3u);
  EXPECT_EQ(nested[0].as_array("inner")[1].as_int("inner[1]"), -2);
}

TEST(GgufRoundTrip, GettersReportMissingKeysAndWrongTypes) {
  GgufWriter writer;
  writer.set("a.string", GgufValue::str("llama"));
  writer.set("a.int", GgufValue::u32(7));
  const Parsed parsed = parse_bytes(writer.serialize(), "getters.gguf");
  const GgufFile& g = parsed.file;
  EXPECT_EQ(g.get_int("a.missing", 5), 5);
  EXPECT_EQ(g.get_string("a.missing", "x"), "x");
  EXPECT_EQ(g.get_bool("a.missing", true), true);
  EXPECT_EQ(g.get_double("a.missing", 2.5), 2.5);
  EXPECT_EQ(g.find("a.missing"), nullptr);
  try {
    g.get_int("a.missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "getters.gguf: missing metadata key a.missing");
  }
  try {
    g.get_int("a.string", 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.string"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expected an integer"), std::string::npos) << e.what();
  }
  EXPECT_THROW(g.get_string("a.int", ""), Error);
  EXPECT_THROW(g.get_bool("a.int", false), Error);
  EXPECT_THROW(g.get_double("a.string", 0), Error);
  EXPECT_THROW(g.find("a.int")->as_array("a.int"), Error);
  EXPECT_EQ(g.get_double("a.int", 0), 7.0);
}

TEST(GgufRoundTrip, SetReplacesExistingKey) {
  GgufWriter writer;
  writer.set("k", GgufValue::u32(1));
  writer.set("other", GgufValue::u32(2));
  writer.set("k", GgufValue::str("replaced"));
  const Parsed parsed = parse_bytes(writer.serialize());
  const GgufFile& g = parsed.file;
  ASSERT_EQ(g.metadata().size(), 2u);
  EXPECT_EQ(g.metadata()[0].first, "k");
  EXPECT_EQ(g.get_string("k", ""), "replaced");
}

TEST(GgufRoundTrip, DisplayStrings) {
  EXPECT_EQ(GgufValue::u32(7).to_display_string(), "7");
  EXPECT_EQ(GgufValue::f32(1e-5f).to_display_string(), "1e-05");
  EXPECT_EQ(GgufValue::boolean(true).to_display_string(), "true");
  EXPECT_EQ(GgufValue::str("a\nb").to_display_string(), "\"a\\nb\"");
  std::vector<GgufValue> items;
  for (int i = 0; i < 10; ++i) items.push_back(GgufValue::i32(i));
  EXPECT_EQ(GgufValue::array(GgufType::INT32, items).to_display_string(3),
            "[0, 1, 2, ... (10 items)]");
  EXPECT_EQ(GgufValue::array(GgufType::INT32, {}).to_display_string(), "[]");
  const std::string long_string(1000, 'x');
  EXPECT_LT(GgufValue::str(long_string).to_display_string().size(), 300u);
}

struct TensorCase {
  std::string name;
  DType type;
  std::vector<int64_t> dims;
};

void check_tensor_round_trip(uint64_t alignment) {
  SCOPED_TRACE("alignment " + std::to_string(alignment));
  const std::vector<TensorCase> cases = {
      {"f32.vec", DType::F32, {7}},         {"f16.mat", DType::F16, {6, 5}},
      {"bf16", DType::BF16, {3, 2, 2}},     {"q4_0", DType::Q4_0, {64, 3}},
      {"q8_0", DType::Q8_0, {32, 2, 1, 2}}, {"q4_K", DType::Q4_K, {256, 2}},
      {"q6_K", DType::Q6_K, {512}},         {"q5_1", DType::Q5_1, {96}},
  };
  GgufWriter writer(alignment);
  writer.set("general.architecture", GgufValue::str("llama"));
  std::vector<std::vector<uint8_t>> payloads;
  for (size_t i = 0; i < cases.size(); ++i) {
    const TensorCase& c = cases[i];
    int64_t rows = 1;
    for (size_t d = 1; d < c.dims.size(); ++d) rows *= c.dims[d];
    payloads.push_back(quantized(c.type, c.dims[0], rows, static_cast<float>(i)));
    writer.add_tensor(c.name, c.type, c.dims, payloads.back());
  }
  const std::vector<uint8_t> bytes = writer.serialize();
  const Parsed parsed = parse_bytes(bytes);
  const GgufFile& g = parsed.file;
  EXPECT_EQ(g.alignment(), alignment);
  EXPECT_EQ(g.find("general.alignment") != nullptr, alignment != 32);
  if (alignment != 32) {
    EXPECT_EQ(g.get_int("general.alignment"), static_cast<int64_t>(alignment));
  }
  ASSERT_EQ(g.tensors().size(), cases.size());
  const uint8_t* base = g.file()->data();
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    const GgufTensorInfo& t = g.tensors()[i];
    EXPECT_EQ(t.name, cases[i].name);
    EXPECT_EQ(t.type, cases[i].type);
    EXPECT_EQ(t.dims, cases[i].dims);
    EXPECT_EQ(t.nbytes, payloads[i].size());
    EXPECT_EQ(t.offset % alignment, 0u);
    EXPECT_EQ(static_cast<uint64_t>(t.data - base) % alignment, 0u);
    ASSERT_LE(static_cast<size_t>(t.data - base) + t.nbytes, g.file()->size());
    EXPECT_EQ(std::memcmp(t.data, payloads[i].data(), t.nbytes), 0);
    EXPECT_EQ(g.find_tensor(cases[i].name), &t);
  }
  EXPECT_EQ(g.tensors()[3].element_count(), 192);
  EXPECT_EQ(g.find_tensor("nope"), nullptr);
  EXPECT_EQ(bytes.size() % alignment, 0u);  // every tensor padded, the last one too (as ggml)
}

TEST(GgufRoundTrip, TensorsOfSeveralTypes) { check_tensor_round_trip(32); }
TEST(GgufRoundTrip, OtherAlignments) {
  for (uint64_t alignment : {1u, 8u, 64u, 4096u}) check_tensor_round_trip(alignment);
}

TEST(GgufRoundTrip, WriteToDiskAndOpen) {
  GgufWriter writer;
  writer.set("general.name", GgufValue::str("disk"));
  writer.add_tensor("w", DType::F32, {4}, f32_bytes({1, 2, 3, 4}));
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("skiff_gguf_test_" + std::to_string(getpid()) + ".gguf"))
                               .string();
  writer.write(path);
  {
    const GgufFile g = GgufFile::open(path);
    EXPECT_EQ(g.path(), path);
    EXPECT_EQ(g.get_string("general.name", ""), "disk");
    float w[4];
    std::memcpy(w, g.find_tensor("w")->data, sizeof w);
    EXPECT_EQ(w[3], 4.0f);
  }
  std::filesystem::remove(path);
}

TEST(GgufWriter, RefusesBadInput) {
  const auto data = f32_bytes({1, 2, 3, 4});
  {
    GgufWriter w;
    w.add_tensor("a", DType::F32, {4}, data);
    EXPECT_THROW(w.add_tensor("a", DType::F32, {4}, data), Error);  // duplicate name
    EXPECT_THROW(w.add_tensor("b", DType::F32, {5}, data), Error);  // size mismatch
    EXPECT_THROW(w.add_tensor("c", DType::F32, {}, data), Error);   // no dims
    EXPECT_THROW(w.add_tensor("d", DType::F32, {4, 0}, data), Error);
    EXPECT_THROW(w.add_tensor("e", DType::F32, {1, 1, 1, 1, 4}, data), Error);
    EXPECT_THROW(w.add_tensor("f", DType::Q4_0, {16}, data), Error);  // not whole blocks
    EXPECT_THROW(w.add_tensor("g", static_cast<DType>(4), {4}, data), Error);
  }
  for (uint64_t alignment : {0u, 3u, 48u}) {
    GgufWriter w(alignment);
    EXPECT_THROW(w.serialize(), Error) << alignment;
  }
  {
    GgufWriter w;
    w.set("x", GgufValue{GgufType::UINT8, uint64_t{300}});
    EXPECT_THROW(w.serialize(), Error);
  }
  {
    GgufWriter w;
    w.set("x", GgufValue{GgufType::INT8, int64_t{-129}});
    EXPECT_THROW(w.serialize(), Error);
  }
  {
    GgufWriter w;
    w.set("x", GgufValue::array(GgufType::INT32, {GgufValue::str("not an int")}));
    EXPECT_THROW(w.serialize(), Error);
  }
  {
    GgufWriter w;
    w.set("x", GgufValue{GgufType::FLOAT32, std::string("wrong holder")});
    EXPECT_THROW(w.serialize(), Error);
  }
  {
    GgufWriter w(64);
    w.set("general.alignment", GgufValue::u32(128));  // disagrees with the writer
    EXPECT_THROW(w.serialize(), Error);
  }
}

// ---- real files from llama.cpp -------------------------------------------------------------

TEST(GgufRealFiles, LlamaSpmVocabulary) {
  const GgufFile g = GgufFile::open(shared_path("models/ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(g.version(), 3u);
  EXPECT_TRUE(g.tensors().empty());
  EXPECT_EQ(g.metadata().size(), 22u);
  EXPECT_EQ(g.get_string("general.architecture", ""), "llama");
  EXPECT_EQ(g.get_int("llama.block_count"), 32);
  EXPECT_EQ(g.get_int("llama.context_length"), 4096);
  EXPECT_NEAR(g.get_double("llama.attention.layer_norm_rms_epsilon", 0), 1e-5, 1e-10);
  EXPECT_TRUE(g.get_bool("tokenizer.ggml.add_bos_token", false));
  const GgufValue* tokens = g.find("tokenizer.ggml.tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->array_type, GgufType::STRING);
  const auto& list = tokens->as_array("tokens");
  ASSERT_EQ(list.size(), 32000u);
  EXPECT_EQ(list[0].as_string("t"), "<unk>");
  EXPECT_EQ(list[1].as_string("t"), "<s>");
  EXPECT_EQ(list[2].as_string("t"), "</s>");
  EXPECT_EQ(g.find("tokenizer.ggml.scores")->as_array("s").size(), 32000u);
  EXPECT_EQ(g.find("tokenizer.ggml.token_type")->array_type, GgufType::INT32);
}

TEST(GgufRealFiles, PeerStories260K) {
  const GgufFile g = GgufFile::open(shared_path("models/peer/stories260K.gguf"));
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.tensors().size(), 48u);
  EXPECT_EQ(g.get_int("llama.embedding_length"), 64);
  EXPECT_EQ(g.get_int("llama.block_count"), 5);
  const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(embd->type, DType::F32);
  EXPECT_EQ(embd->nbytes, 64u * 512u * 4u);
  const GgufTensorInfo* norm = g.find_tensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->dims, (std::vector<int64_t>{64}));
  const uint8_t* begin = g.file()->data();
  const uint8_t* end = begin + g.file()->size();
  for (const GgufTensorInfo& t : g.tensors()) {
    EXPECT_GE(t.data, begin);
    EXPECT_LE(t.data + t.nbytes, end);
  }
  std::vector<float> row(64);
  dequantize_row(embd->type, embd->data, row.data(), 64);
  for (float v : row) EXPECT_TRUE(std::isfinite(v));
}

// ---- truncation ----------------------------------------------------------------------------

// A small file whose last tensor ends exactly at the end of the file (its size is a multiple
// of the alignment), so every proper prefix is missing something.
std::vector<uint8_t> small_valid_file() {
  GgufWriter writer;
  for (const auto& [k, v] : every_value_type()) writer.set(k, v);
  writer.add_tensor("q8", DType::Q8_0, {64}, quantized(DType::Q8_0, 64, 1, 1.0f));
  writer.add_tensor("last", DType::F32, {8, 2},
                    f32_bytes({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}));
  return writer.serialize();
}

TEST(GgufTruncation, EveryPrefixOfASmallFileFails) {
  const std::vector<uint8_t> full = small_valid_file();
  ASSERT_NO_THROW(parse_bytes(full));
  for (size_t length = 0; length < full.size(); ++length) {
    const std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<long>(length));
    EXPECT_THROW(parse_bytes(prefix), Error) << "prefix of " << length << " bytes parsed";
  }
}

TEST(GgufTruncation, EveryPrefixOfThePeerFileFails) {
  const auto file = MappedFile::open(shared_path("models/peer/stories260K.gguf"));
  ASSERT_NO_THROW(GgufFile::parse(file));
  for (size_t length = 0; length < file->size(); length += 256) {
    // Short prefixes get an exact-size copy (ASan sees overreads); past the header the
    // parser never touches the bytes, so a view of the mapping is enough.
    if (length <= 65536) {
      const std::vector<uint8_t> prefix(file->data(), file->data() + length);
      EXPECT_THROW(parse_bytes(prefix), Error) << length;
    } else {
      auto view = MappedFile::borrow(std::span<const uint8_t>(file->data(), length), "prefix");
      EXPECT_THROW(GgufFile::parse(view), Error) << length;
    }
  }
  const std::vector<uint8_t> all_but_one(file->data(), file->data() + file->size() - 1);
  EXPECT_THROW(parse_bytes(all_but_one), Error);
}

// ---- corrupt headers, built byte by byte -----------------------------------------------------

class RawGguf {
 public:
  RawGguf& u8(uint8_t v) { return le(v, 1); }
  RawGguf& u32(uint32_t v) { return le(v, 4); }
  RawGguf& u64(uint64_t v) { return le(v, 8); }
  RawGguf& str(const std::string& s) {
    u64(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  RawGguf& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    bytes = {'G', 'G', 'U', 'F'};
    return u32(version).u64(tensors).u64(kvs);
  }
  RawGguf& kv_u32(const std::string& key, uint32_t v) { return str(key).u32(4).u32(v); }
  RawGguf& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                  uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
  // Pads to `alignment` and appends `n` data bytes.
  RawGguf& data(size_t n, size_t alignment = 32) {
    bytes.resize((bytes.size() + alignment - 1) / alignment * alignment, 0);
    bytes.resize(bytes.size() + n, 0x3C);
    return *this;
  }
  std::vector<uint8_t> bytes;

 private:
  RawGguf& le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
};

TEST(GgufCorrupt, BuilderMakesValidFiles) {
  const auto ok = RawGguf().header(1, 1).kv_u32("k", 1).tensor("t", {8}, 0, 0).data(32).bytes;
  const Parsed parsed = parse_bytes(ok);
  EXPECT_EQ(parsed.file.tensors()[0].dims[0], 8);
  const auto v2 = RawGguf().header(0, 1, 2).kv_u32("k", 1).bytes;
  EXPECT_EQ(parse_bytes(v2).file.version(), 2u);
}

TEST(GgufCorrupt, MagicAndVersion) {
  auto bad_magic = RawGguf().header(0, 0).bytes;
  bad_magic[0] = 'X';
  EXPECT_PARSE_ERROR(bad_magic, "magic");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 0, 1).bytes, "version 1");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 0, 4).bytes, "version 4");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 0, 0x03000000).bytes, "big-endian");
  EXPECT_PARSE_ERROR((std::vector<uint8_t>{'G', 'G'}), "2 bytes");
  EXPECT_PARSE_ERROR(std::vector<uint8_t>(), "0 bytes");
}

TEST(GgufCorrupt, CountsThatCannotFit) {
  EXPECT_PARSE_ERROR(RawGguf().header(uint64_t{1} << 60, 0).bytes, "tensor count");
  EXPECT_PARSE_ERROR(RawGguf().header(0, uint64_t{1} << 60).bytes, "metadata count");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 2).kv_u32("k", 1).bytes, "metadata count 2");
  EXPECT_PARSE_ERROR(RawGguf().header(0, ~uint64_t{0}).bytes, "metadata count");
  // An array claiming 2^60 elements.
  EXPECT_PARSE_ERROR(RawGguf().header(0, 1).str("a").u32(9).u32(4).u64(uint64_t{1} << 60).bytes,
                     "array length");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 1).str("a").u32(9).u32(8).u64(3).str("x").bytes,
                     "array length");
}

TEST(GgufCorrupt, StringsPastTheEnd) {
  EXPECT_PARSE_ERROR(RawGguf().header(0, 1).u64(1000).u64(0).bytes, "metadata key length 1000");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 1).str("k").u32(8).u64(~uint64_t{0}).bytes,
                     "string value length");
  EXPECT_PARSE_ERROR(
      RawGguf().header(1, 0).u64(uint64_t{1} << 62).u32(1).u64(1).u32(0).u64(0).bytes,
      "tensor name length");
}

TEST(GgufCorrupt, ValueTypes) {
  EXPECT_PARSE_ERROR(RawGguf().header(0, 1).str("k").u32(13).u32(0).bytes, "unknown value type 13");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 1).str("k").u32(9).u32(77).u64(0).bytes,
                     "unknown array element type 77");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 1).str("k").u32(7).u8(2).bytes, "bool value 2");
  EXPECT_PARSE_ERROR(RawGguf().header(0, 2).kv_u32("k", 1).kv_u32("k", 2).bytes,
                     "duplicate metadata key \"k\"");
  // Arrays of arrays 20 deep.
  RawGguf deep;
  deep.header(0, 1).str("deep").u32(9);
  for (int i = 0; i < 20; ++i) deep.u32(9).u64(1);
  deep.u32(4).u64(0);
  EXPECT_PARSE_ERROR(deep.bytes, "nested deeper than");
  // Eight levels are fine.
  RawGguf ok;
  ok.header(0, 1).str("deep").u32(9);
  for (int i = 0; i < 7; ++i) ok.u32(9).u64(1);
  ok.u32(4).u64(0);
  EXPECT_EQ(parse_error(ok.bytes), "");
}

TEST(GgufCorrupt, TensorTypesAndDims) {
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {8}, 99, 0).data(32).bytes,
                     "tensor \"w\" has unknown type id 99");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {8}, 4, 0).data(32).bytes,
                     "unknown type id 4");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {}, 0, 0).u64(0).data(32).bytes,
                     "has 0 dimensions");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {1, 1, 1, 1, 1}, 0, 0).data(32).bytes,
                     "has 5 dimensions");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {8, 0}, 0, 0).data(32).bytes,
                     "dimension 1 is 0");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {~uint64_t{0}}, 0, 0).data(32).bytes,
                     "dimension 0 is -1");
  EXPECT_PARSE_ERROR(
      RawGguf().header(1, 0).tensor("w", {1u << 31, 1u << 31, 1u << 31}, 0, 0).data(32).bytes,
      "element count overflows");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {1u << 30, 1u << 30}, 0, 0).data(32).bytes,
                     "larger than the file");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {16}, 2, 0).data(32).bytes,
                     "row length 16 is not a multiple of the q4_0 block size 32");
  EXPECT_PARSE_ERROR(
      RawGguf().header(2, 0).tensor("w", {8}, 0, 0).tensor("w", {8}, 0, 32).data(64).bytes,
      "duplicate tensor name \"w\"");
  // Names with control characters are escaped: the message stays on one line.
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("a\nb", {8}, 99, 0).data(32).bytes, "a\\nb");
}

TEST(GgufCorrupt, TensorOffsets) {
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {8}, 0, 4).data(64).bytes,
                     "offset 4 is not a multiple of the alignment 32");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {8}, 0, 32).data(32).bytes,
                     "runs past the end");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {8}, 0, ~uint64_t{31}).data(32).bytes,
                     "runs past the end");
  EXPECT_PARSE_ERROR(RawGguf().header(1, 0).tensor("w", {8}, 0, 0).data(31).bytes,
                     "runs past the end");
}

TEST(GgufCorrupt, Alignment) {
  auto with_alignment = [](uint32_t type, uint64_t value) {
    RawGguf raw;
    raw.header(1, 1).str("general.alignment").u32(type);
    if (type == 4) raw.u32(static_cast<uint32_t>(value));
    if (type == 10) raw.u64(value);
    if (type == 8) raw.str("32");
    return raw.tensor("w", {8}, 0, 0).data(32, 64).bytes;
  };
  EXPECT_EQ(parse_error(with_alignment(4, 64)), "");
  EXPECT_EQ(parse_bytes(with_alignment(4, 64)).file.alignment(), 64u);
  EXPECT_PARSE_ERROR(with_alignment(4, 0), "general.alignment 0 is not a power of two");
  EXPECT_PARSE_ERROR(with_alignment(4, 48), "general.alignment 48 is not a power of two");
  EXPECT_PARSE_ERROR(with_alignment(10, uint64_t{1} << 63), "is not a power of two");
  EXPECT_PARSE_ERROR(with_alignment(8, 0), "general.alignment must be an integer");
}

TEST(GgufCorrupt, EmptyFileOnDisk) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("skiff_empty_" + std::to_string(getpid()) + ".gguf"))
                               .string();
  GgufWriter().write(path);  // a valid file first, then empty it
  std::filesystem::resize_file(path, 0);
  EXPECT_THROW(GgufFile::open(path), Error);
  std::filesystem::remove(path);
  EXPECT_THROW(GgufFile::open(path), Error);  // missing file
}

}  // namespace
}  // namespace skiff

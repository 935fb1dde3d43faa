// Safetensors reader and the Hugging Face folder loader: a round trip through bytes written
// here, a hostile-header suite (every defect an Error naming the file and what is wrong, on one
// line; truncation at every byte never crashes), and a checkpoint folder written here whose
// weights must come back as views into the mapped files (zero-copy), byte for byte.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test_util.h"

namespace skiff {
namespace {

using Json = nlohmann::json;
using test::f32_bytes;

struct Entry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

std::vector<uint8_t> with_header(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header.size());
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Header padded with spaces so the data section starts at a multiple of 8, as writers do.
std::vector<uint8_t> serialize(const std::vector<Entry>& entries, const Json& metadata = nullptr) {
  Json h = Json::object();
  if (!metadata.is_null()) h["__metadata__"] = metadata;
  std::vector<uint8_t> data;
  for (const Entry& e : entries) {
    h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {data.size(), data.size() + e.data.size()}}};
    data.insert(data.end(), e.data.begin(), e.data.end());
  }
  std::string text = h.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  return with_header(text, data);
}

std::vector<uint8_t> bf16_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = fp32_to_bf16(v[i]);
    std::memcpy(&b[2 * i], &h, 2);
  }
  return b;
}

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>((i * 37) % 17) - 0.25f;
  return v;
}

using Parsed = test::Parsed<SafetensorsFile>;

// Exact-size copy: ASan sees any overread.
Parsed parse_bytes(const std::vector<uint8_t>& bytes, const std::string& name = "test.safetensors") {
  return test::parse_copy<SafetensorsFile>(bytes, name);
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  return test::error_of([&] { parse_bytes(bytes, "bad.safetensors"); });
}

#define EXPECT_PARSE_ERROR(bytes, fragment)                                     \
  do {                                                                          \
    const std::string message = parse_error(bytes);                             \
    EXPECT_NE(message.find(fragment), std::string::npos)                        \
        << "message: \"" << message << "\" lacks \"" << (fragment) << "\"";     \
    EXPECT_EQ(message.rfind("bad.safetensors: ", 0), 0u) << message;            \
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;                \
  } while (0)

std::vector<Entry> two_tensors() {
  return {{"a", "F32", {2, 3}, f32_bytes(ramp(6, 1.0f))}, {"b", "BF16", {4}, bf16_bytes(ramp(4, 0.5f))}};
}

TEST(Safetensors, RoundTrip) {
  Parsed p = parse_bytes(serialize(two_tensors(), {{"format", "pt"}}));
  ASSERT_EQ(p.file.tensors().size(), 2u);
  EXPECT_EQ(p.file.metadata().at("format"), "pt");
  EXPECT_EQ(p.file.data_offset() % 8, 0u);
  const SafetensorsTensor* a = p.file.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, "F32");
  EXPECT_EQ(a->type, DType::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->nbytes(), 24u);
  EXPECT_EQ(a->data, p.bytes->data() + p.file.data_offset());  // a view, not a copy
  EXPECT_EQ(std::memcmp(a->data, f32_bytes(ramp(6, 1.0f)).data(), 24), 0);
  const SafetensorsTensor* b = p.file.find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, DType::BF16);
  EXPECT_EQ(b->begin, 24u);
  EXPECT_EQ(p.file.find("c"), nullptr);
}

TEST(Safetensors, UnsupportedDtypesParseWithoutAType) {
  Parsed p = parse_bytes(serialize({{"i", "I8", {3}, {1, 2, 3}}, {"d", "F64", {1}, std::vector<uint8_t>(8)},
                                    {"empty", "F32", {0, 4}, {}}, {"scalar", "I32", {}, std::vector<uint8_t>(4)}}));
  EXPECT_FALSE(p.file.find("i")->type.has_value());
  EXPECT_FALSE(p.file.find("d")->type.has_value());
  EXPECT_EQ(p.file.find("empty")->element_count(), 0);
  EXPECT_EQ(p.file.find("scalar")->element_count(), 1);
}

TEST(Safetensors, HostileHeaders) {
  const std::vector<uint8_t> data = f32_bytes(ramp(6, 1.0f));
  auto one = [&](const std::string& entry) { return with_header("{\"a\":" + entry + "}", data); };
  EXPECT_PARSE_ERROR(std::vector<uint8_t>(5), "too short");
  EXPECT_EQ(parse_error(with_header("{}", {})), "");
  std::vector<uint8_t> past = with_header("{}", {});
  past[0] = 200;
  EXPECT_PARSE_ERROR(past, "runs past the end of the file");
  std::vector<uint8_t> huge = with_header("{}", {});
  huge[7] = 0x40;
  EXPECT_PARSE_ERROR(huge, "larger than the 100 MiB limit");
  EXPECT_PARSE_ERROR(with_header("", {}), "header length is 0");
  EXPECT_PARSE_ERROR(with_header("{\"a\":", data), "not valid JSON");
  EXPECT_PARSE_ERROR(with_header("[1,2]", data), "not a JSON object");
  EXPECT_PARSE_ERROR(one("[]"), "tensor a: entry is not a JSON object");
  EXPECT_PARSE_ERROR(one("{\"shape\":[6],\"data_offsets\":[0,24]}"), "tensor a: missing field dtype");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"data_offsets\":[0,24]}"), "tensor a: missing field shape");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[6]}"), "tensor a: missing field data_offsets");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"Q4\",\"shape\":[6],\"data_offsets\":[0,24]}"), "unknown dtype 'Q4'");
  EXPECT_PARSE_ERROR(one("{\"dtype\":7,\"shape\":[6],\"data_offsets\":[0,24]}"), "dtype is not a string");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[-6],\"data_offsets\":[0,24]}"), "not a non-negative integer");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[6.0],\"data_offsets\":[0,24]}"), "not a non-negative integer");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,24]}"),
                     "too many elements");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[18446744073709551615],\"data_offsets\":[0,24]}"),
                     "too many elements");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,24]}"), "make 20 bytes");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[0,24]}"), "make 12 bytes");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,28]}"), "past the end of the data");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[24,0]}"), "begin after end");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0]}"), "not an array [begin, end]");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,-24]}"), "not non-negative");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[[6]],\"data_offsets\":[0,24]}"), "nested deeper");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24],\"dtype\":\"F16\"}"),
                     "duplicate field 'dtype'");
  EXPECT_PARSE_ERROR(with_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
                                 "\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]}}", data),
                     "duplicate entry 'a'");
  EXPECT_PARSE_ERROR(with_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", data),
                     "tensor b (bytes [8, 24)) overlaps tensor a (bytes [0, 16))");
  EXPECT_PARSE_ERROR(with_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", data),
                     "leaving bytes [4, 8) unused");
  EXPECT_PARSE_ERROR(one("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}"), "8 bytes unaccounted for");
  EXPECT_PARSE_ERROR(with_header("{\"__metadata__\":{\"k\":1}}", {}), "__metadata__ value of 'k' is not a string");
  EXPECT_PARSE_ERROR(with_header("{\"__metadata__\":[]}", {}), "__metadata__ is not a JSON object");
  EXPECT_PARSE_ERROR(with_header(std::string(200, '[') + std::string(200, ']'), {}), "nested deeper");
}

// Every prefix of a valid file is refused with an Error, never read past its end.
TEST(Safetensors, TruncatedAtEveryByte) {
  const std::vector<uint8_t> good = serialize(two_tensors(), {{"format", "pt"}});
  for (size_t n = 0; n < good.size(); ++n) {
    const std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_NE(parse_error(cut), "") << "prefix of " << n << " bytes parsed";
  }
}

// ---------------------------------------------------------------------------------------------
// A Hugging Face folder written here.
class HfFolder {
 public:
  HfFolder() {
    path_ = std::filesystem::temp_directory_path() / ("skiff-hf-" + std::to_string(::getpid()) + "-" +
                                                      std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~HfFolder() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }
  void write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::ofstream(path_ / name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                        static_cast<std::streamsize>(bytes.size()));
  }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path_ / name) << text; }

 private:
  std::filesystem::path path_;
  static inline int counter_ = 0;
};

constexpr int kDim = 16, kHeads = 2, kKvHeads = 1, kFfn = 24, kVocab = 40, kLayers = 2;

Json tiny_config() {
  return {{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", kDim}, {"num_hidden_layers", kLayers},
          {"num_attention_heads", kHeads}, {"num_key_value_heads", kKvHeads}, {"intermediate_size", kFfn},
          {"vocab_size", kVocab}, {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-5},
          {"rope_theta", 500000.0}, {"tie_word_embeddings", true},
          {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}}}};
}

// The tensors of the tiny model: matrices BF16 (norms BF16 too), in two lists (two shards).
std::vector<std::vector<Entry>> tiny_tensors() {
  const int hd = kDim / kHeads;
  auto matrix = [](std::string name, int64_t rows, int64_t cols) {
    return Entry{std::move(name), "BF16", {rows, cols}, bf16_bytes(ramp(static_cast<size_t>(rows * cols), 0.01f))};
  };
  auto vector = [](std::string name) { return Entry{std::move(name), "BF16", {kDim}, bf16_bytes(ramp(kDim, 0.1f))}; };
  std::vector<std::vector<Entry>> shards(2);
  shards[0].push_back(matrix("model.embed_tokens.weight", kVocab, kDim));
  shards[1].push_back(vector("model.norm.weight"));
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto& s = shards[static_cast<size_t>(l)];
    s.push_back(vector(p + "input_layernorm.weight"));
    s.push_back(matrix(p + "self_attn.q_proj.weight", kHeads * hd, kDim));
    s.push_back(matrix(p + "self_attn.k_proj.weight", kKvHeads * hd, kDim));
    s.push_back(matrix(p + "self_attn.v_proj.weight", kKvHeads * hd, kDim));
    s.push_back(matrix(p + "self_attn.o_proj.weight", kDim, kHeads * hd));
    s.push_back(vector(p + "post_attention_layernorm.weight"));
    s.push_back(matrix(p + "mlp.gate_proj.weight", kFfn, kDim));
    s.push_back(matrix(p + "mlp.up_proj.weight", kFfn, kDim));
    s.push_back(matrix(p + "mlp.down_proj.weight", kDim, kFfn));
  }
  return shards;
}

void write_tiny(const HfFolder& dir, const Json& config = tiny_config()) {
  dir.write("config.json", config.dump());
  Json map = Json::object();
  const auto shards = tiny_tensors();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = "model-0000" + std::to_string(i + 1) + "-of-00002.safetensors";
    dir.write(name, serialize(shards[i], {{"format", "pt"}}));
    for (const Entry& e : shards[i]) map[e.name] = name;
  }
  dir.write("model.safetensors.index.json", Json{{"weight_map", map}}.dump());
  dir.write("generation_config.json", Json{{"bos_token_id", 3}, {"eos_token_id", {5, 7}}}.dump());
}

bool inside(const uint8_t* p, const MappedFile& f) { return p >= f.data() && p < f.data() + f.size(); }

TEST(HfLoader, ViewsIntoTheShardsByteForByte) {
  HfFolder dir;
  write_tiny(dir);
  std::unique_ptr<Model> model = load_model(dir.str());
  EXPECT_EQ(model->format, "hf");
  ASSERT_EQ(model->shards.size(), 2u);
  const ModelConfig& c = model->config;
  EXPECT_EQ(c.dim, kDim);
  EXPECT_EQ(c.n_kv_heads, kKvHeads);
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.rope_layout, RopeLayout::kHalves);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(c.rope_scaling.original_context, 16);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_TRUE(model->tied_output);
  EXPECT_EQ(model->output.data, model->token_embd.data);

  const auto shards = tiny_tensors();
  auto expect_view = [&](const TensorView& v, const Entry& e, const MappedFile& shard) {
    EXPECT_EQ(v.type, DType::BF16) << e.name;
    EXPECT_TRUE(inside(v.data, shard)) << e.name << " is not a view into " << shard.name();
    ASSERT_EQ(v.nbytes(), e.data.size()) << e.name;
    EXPECT_EQ(std::memcmp(v.data, e.data.data(), e.data.size()), 0) << e.name;
  };
  expect_view(model->token_embd, shards[0][0], *model->shards[0]);
  for (int l = 0; l < kLayers; ++l) {
    const LayerWeights& w = model->layers[static_cast<size_t>(l)];
    const auto& s = shards[static_cast<size_t>(l)];
    const MappedFile& f = *model->shards[static_cast<size_t>(l)];
    // s[0] is the embedding (shard 0) or the output norm (shard 1), s[1] the layer's first norm.
    expect_view(w.wq, s[2], f);
    expect_view(w.wk, s[3], f);
    expect_view(w.wv, s[4], f);
    expect_view(w.wo, s[5], f);
    expect_view(w.ffn_gate, s[7], f);
    expect_view(w.ffn_up, s[8], f);
    expect_view(w.ffn_down, s[9], f);
    // Norms come back as F32 with the BF16 values.
    ASSERT_EQ(w.attn_norm.type, DType::F32);
    const std::vector<float> want = ramp(kDim, 0.1f);
    for (int i = 0; i < kDim; ++i) EXPECT_EQ(w.attn_norm.f32()[i], bf16_to_fp32(fp32_to_bf16(want[static_cast<size_t>(i)])));
  }
  // No tokenizer.json: placeholder tokens; generation_config's ids.
  const Tokenizer& tok = *model->tokenizer;
  EXPECT_EQ(tok.vocab().size(), kVocab);
  EXPECT_EQ(tok.bos(), 3);
  EXPECT_TRUE(tok.is_eog(5));
  EXPECT_TRUE(tok.is_eog(7));
  EXPECT_FALSE(tok.is_eog(6));
  EXPECT_EQ(tok.token_bytes(9), "<tok_9>");
}

std::string load_error(const std::string& dir) {
  return test::error_of([&] { load_model(dir); });
}

TEST(HfLoader, ConfigAndTensorDefects) {
  auto expect = [](const Json& config, const std::string& fragment) {
    HfFolder dir;
    write_tiny(dir, config);
    const std::string message = load_error(dir.str());
    EXPECT_NE(message.find(fragment), std::string::npos) << "\"" << message << "\" lacks \"" << fragment << "\"";
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  };
  Json c = tiny_config();
  c["architectures"] = {"GPT2LMHeadModel"};
  expect(c, "architecture GPT2LMHeadModel is not supported");
  c = tiny_config();
  c.erase("hidden_size");
  expect(c, "config.json: missing field hidden_size");
  c = tiny_config();
  c["intermediate_size"] = 25;
  expect(c, "tensor model.layers.0.mlp.gate_proj.weight has shape [24, 16], expected [25, 16]");
  c = tiny_config();
  c["vocab_size"] = 41;
  expect(c, "model.embed_tokens.weight has shape [40, 16], expected [41, 16]");
  c = tiny_config();
  c["num_hidden_layers"] = 3;
  expect(c, "missing tensor model.layers.2.input_layernorm.weight");
  c = tiny_config();
  c["rope_scaling"]["rope_type"] = "dynamic";
  expect(c, "rope_scaling type 'dynamic' is not supported");
  c = tiny_config();
  c["num_attention_heads"] = "2";
  expect(c, "field num_attention_heads = \"2\" is not an integer");
}

}  // namespace
}  // namespace skiff

// Flash packs (flash/pack.h): bundles carry exactly the dense model's up row, down column and
// gate row; resident.gguf loads without ffn_up/ffn_down; every damaged or mismatched
// bundles.bin is an Error naming the problem. Also the skiff.ffn_activation key and the
// loader's optional up/down tensors, and `skiff flash-pack` / `skiff synth --activation`.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "flash/pack.h"
#include "io/export_gguf.h"
#include "io/gguf.h"
#include "model/model.h"
#include "test_util.h"

namespace skiff::flash {
namespace {

namespace fs = std::filesystem;

using test::error_of;
using test::read_bytes;

const std::string kVocabModel = std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf";

// A folder under the temp dir, removed with its contents.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& name)
      : path((fs::temp_directory_path() /
              ("skiff_pack_test_" + std::to_string(getpid()) + "_" + name))
                 .string()) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (fs::path(path) / name).string(); }
};

struct TinySpec {
  int dim = 48, ffn_dim = 40, n_layers = 3, n_heads = 4, n_kv_heads = 2;
  DType ffn_type = DType::F32;
  std::string activation;  // "" leaves the key out
};

std::vector<uint8_t> random_matrix(DType type, int64_t cols, int64_t rows, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> v(static_cast<size_t>(cols * rows));
  for (float& f : v) f = normal(rng);
  std::vector<uint8_t> out(row_bytes(type, cols) * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(type, v.data() + r * cols, out.data() + row_bytes(type, cols) * r, cols);
  return out;
}

// Writes a random llama GGUF of `s`'s shape (tokenizer from stories260K) to `path`.
void write_tiny_model(const TinySpec& s, const std::string& path, uint32_t seed = 7) {
  GgufFile vocab = GgufFile::open(kVocabModel);
  const int64_t n_vocab = vocab.find("tokenizer.ggml.tokens")->as_array("tokens").size();
  GgufWriter w;
  w.set("general.architecture", GgufValue::str("llama"));
  w.set("general.name", GgufValue::str("pack-test"));
  auto u32 = [](int v) { return GgufValue::u32(static_cast<uint32_t>(v)); };
  w.set("llama.context_length", u32(64));
  w.set("llama.embedding_length", u32(s.dim));
  w.set("llama.block_count", u32(s.n_layers));
  w.set("llama.feed_forward_length", u32(s.ffn_dim));
  w.set("llama.attention.head_count", u32(s.n_heads));
  w.set("llama.attention.head_count_kv", u32(s.n_kv_heads));
  if (!s.activation.empty()) w.set("skiff.ffn_activation", GgufValue::str(s.activation));
  for (const auto& [key, value] : vocab.metadata())
    if (key.rfind("tokenizer.ggml.", 0) == 0) w.set(key, value);

  std::mt19937 rng(seed);
  const int kv_dim = s.dim / s.n_heads * s.n_kv_heads;
  auto add = [&](const std::string& name, DType type, int64_t cols, int64_t rows) {
    std::vector<int64_t> dims = rows == 1 ? std::vector<int64_t>{cols} : std::vector{cols, rows};
    w.add_tensor(name, type, dims, random_matrix(type, cols, rows, rng));
  };
  add("token_embd.weight", DType::F32, s.dim, n_vocab);
  add("output_norm.weight", DType::F32, s.dim, 1);
  for (int l = 0; l < s.n_layers; ++l) {
    std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", DType::F32, s.dim, 1);
    add(p + "attn_q.weight", DType::F32, s.dim, s.dim);
    add(p + "attn_k.weight", DType::F32, s.dim, kv_dim);
    add(p + "attn_v.weight", DType::F32, s.dim, kv_dim);
    add(p + "attn_output.weight", DType::F32, s.dim, s.dim);
    add(p + "ffn_norm.weight", DType::F32, s.dim, 1);
    add(p + "ffn_gate.weight", s.ffn_type, s.dim, s.ffn_dim);
    add(p + "ffn_up.weight", s.ffn_type, s.dim, s.ffn_dim);
    add(p + "ffn_down.weight", s.ffn_type, s.ffn_dim, s.dim);
  }
  w.write(path);
}

void write_all(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::vector<float> dequant(DType type, const uint8_t* p, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  dequantize_row(type, p, v.data(), n);
  return v;
}

// What the pack should hold for `x`: the value converted to the bundle type and back.
float as_bundle(float x, DType type) {
  if (type == DType::F16) return fp16_to_fp32(fp32_to_fp16(x));
  if (type == DType::BF16) return bf16_to_fp32(fp32_to_bf16(x));
  return x;
}

// Every bundle of the pack in `dir` against the dense model in `model_path`, bit for bit.
void expect_bundles_match(const std::string& model_path, const std::string& dir, DType type) {
  std::unique_ptr<Model> dense = load_model(model_path);
  PackHeader h = read_pack_header(bundles_path(dir));
  ASSERT_EQ(h.type, type);
  const ModelConfig& c = dense->config;
  std::vector<uint8_t> bytes = read_bytes(bundles_path(dir));
  ASSERT_EQ(bytes.size(), h.file_bytes);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = dense->layers[static_cast<size_t>(l)];
    std::vector<float> down(static_cast<size_t>(c.dim) * c.ffn_dim);
    for (int r = 0; r < c.dim; ++r)
      dequantize_row(w.ffn_down.type, w.ffn_down.row(r), down.data() + r * c.ffn_dim, c.ffn_dim);
    for (int i = 0; i < c.ffn_dim; ++i) {
      const uint8_t* b = bytes.data() + h.offset(l, i);
      std::vector<float> up = dequant(type, b + h.up_offset(), c.dim);
      std::vector<float> dn = dequant(type, b + h.down_offset(), c.dim);
      std::vector<float> gate = dequant(type, b + h.gate_offset(), c.dim);
      std::vector<float> up_ref = dequant(w.ffn_up.type, w.ffn_up.row(i), c.dim);
      std::vector<float> gate_ref = dequant(w.ffn_gate.type, w.ffn_gate.row(i), c.dim);
      for (int k = 0; k < c.dim; ++k) {
        ASSERT_EQ(up[k], as_bundle(up_ref[k], type)) << "layer " << l << " neuron " << i;
        ASSERT_EQ(gate[k], as_bundle(gate_ref[k], type)) << "layer " << l << " neuron " << i;
        ASSERT_EQ(dn[k], as_bundle(down[static_cast<size_t>(k) * c.ffn_dim + i], type))
            << "layer " << l << " neuron " << i;
      }
      for (uint64_t p = 3 * h.row_bytes; p < h.stride; ++p) ASSERT_EQ(b[p], 0) << "padding";
    }
  }
}

// A packed tiny model, shared by the corruption tests.
class PackFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    write_tiny_model(TinySpec{}, model_path);
    std::unique_ptr<Model> model = load_model(model_path);
    write_pack(*model, dir.path);
    good = read_bytes(bundles_path(dir.path));
    header = read_pack_header(bundles_path(dir.path));
  }
  // Writes `bytes` as bundles.bin and returns read_pack_header's error.
  std::string header_error(const std::vector<uint8_t>& bytes) {
    write_all(bundles_path(dir.path), bytes);
    return error_of([&] { read_pack_header(bundles_path(dir.path)); });
  }
  // bundles.bin with the header re-encoded (valid checksum) after `edit`.
  template <typename F>
  std::vector<uint8_t> with_header(F&& edit) {
    PackHeader h = header;
    edit(h);
    std::vector<uint8_t> bytes = good;
    std::vector<uint8_t> encoded = encode_pack_header(h);
    std::copy(encoded.begin(), encoded.end(), bytes.begin());
    return bytes;
  }

  TempDir dir{"files"};
  std::string model_path = dir.file("model.gguf");
  std::vector<uint8_t> good;
  PackHeader header;
};

TEST(FlashPack, F32BundlesHoldTheDenseRowsAndColumnsExactly) {
  TempDir dir("f32");
  TinySpec spec;
  write_tiny_model(spec, dir.file("model.gguf"));
  std::unique_ptr<Model> model = load_model(dir.file("model.gguf"));
  std::vector<std::pair<int64_t, int64_t>> calls;
  PackOptions options;
  options.progress = [&](int64_t done, int64_t total) { calls.emplace_back(done, total); };
  write_pack(*model, dir.file("pack"), options);
  expect_bundles_match(dir.file("model.gguf"), dir.file("pack"), DType::F32);

  PackHeader h = read_pack_header(bundles_path(dir.file("pack")));
  EXPECT_EQ(h.n_layers, 3);
  EXPECT_EQ(h.dim, 48);
  EXPECT_EQ(h.ffn_dim, 40);
  EXPECT_EQ(h.row_bytes, 48u * 4);
  EXPECT_EQ(h.stride, 576u);  // 3 * 192 = 576, already a multiple of 64
  EXPECT_EQ(h.data_offset, kPackAlign);
  EXPECT_EQ(h.file_bytes, kPackAlign + 3u * 40 * 576);
  ASSERT_EQ(calls.size(), 4u);  // 0, then one per layer
  EXPECT_EQ(calls.back(), (std::pair<int64_t, int64_t>{120, 120}));
}

TEST(FlashPack, F16SourceKeepsF16AndConvertsExactly) {
  TempDir dir("f16");
  TinySpec spec;
  spec.ffn_type = DType::F16;
  write_tiny_model(spec, dir.file("model.gguf"));
  std::unique_ptr<Model> model = load_model(dir.file("model.gguf"));
  write_pack(*model, dir.file("pack"));
  expect_bundles_match(dir.file("model.gguf"), dir.file("pack"), DType::F16);
  PackHeader h = read_pack_header(bundles_path(dir.file("pack")));
  EXPECT_EQ(h.row_bytes, 96u);
  EXPECT_EQ(h.stride, 320u);  // 288 rounded up to 64

  PackOptions to_f32;
  to_f32.type = DType::F32;
  write_pack(*model, dir.file("pack32"), to_f32);
  expect_bundles_match(dir.file("model.gguf"), dir.file("pack32"), DType::F32);
}

TEST(FlashPack, BF16AndQuantizedSources) {
  TempDir dir("bf16");
  write_tiny_model(TinySpec{}, dir.file("model.gguf"));
  std::unique_ptr<Model> model = load_model(dir.file("model.gguf"));
  PackOptions bf16;
  bf16.type = DType::BF16;
  write_pack(*model, dir.file("pack"), bf16);
  expect_bundles_match(dir.file("model.gguf"), dir.file("pack"), DType::BF16);

  TinySpec q;
  q.dim = 64;  // Q8_0 rows need a multiple of 32 elements
  q.ffn_dim = 64;
  q.ffn_type = DType::Q8_0;
  write_tiny_model(q, dir.file("q8.gguf"));
  std::unique_ptr<Model> quant = load_model(dir.file("q8.gguf"));
  write_pack(*quant, dir.file("packq"));  // default for quantized sources: F16
  expect_bundles_match(dir.file("q8.gguf"), dir.file("packq"), DType::F16);

  PackOptions bad;
  bad.type = DType::Q8_0;
  EXPECT_NE(error_of([&] { write_pack(*model, dir.file("packbad"), bad); }).find("q8_0"),
            std::string::npos);
}

TEST(FlashPack, ResidentModelLoadsWithoutUpAndDown) {
  TempDir dir("resident");
  write_tiny_model(TinySpec{}, dir.file("model.gguf"));
  std::unique_ptr<Model> dense = load_model(dir.file("model.gguf"));
  write_pack(*dense, dir.path);
  LoadedPack pack = load_pack(dir.path);
  ASSERT_EQ(pack.model->layers.size(), 3u);
  EXPECT_EQ(pack.header.ffn_dim, 40);
  EXPECT_EQ(pack.bundles_file, bundles_path(dir.path));
  for (size_t l = 0; l < 3; ++l) {
    const LayerWeights& w = pack.model->layers[l];
    EXPECT_TRUE(w.ffn_up.empty());
    EXPECT_TRUE(w.ffn_down.empty());
    ASSERT_FALSE(w.ffn_gate.empty());
    const LayerWeights& d = dense->layers[l];
    ASSERT_EQ(w.ffn_gate.nbytes(), d.ffn_gate.nbytes());
    EXPECT_EQ(std::memcmp(w.ffn_gate.data, d.ffn_gate.data, d.ffn_gate.nbytes()), 0);
    EXPECT_EQ(std::memcmp(w.wq.data, d.wq.data, d.wq.nbytes()), 0);
  }
  EXPECT_EQ(pack.model->tokenizer->vocab().size(), dense->tokenizer->vocab().size());
  const int64_t up_down = int64_t{3} * 2 * 48 * 40;
  EXPECT_EQ(pack.model->parameter_count(), dense->parameter_count() - up_down);
  EXPECT_EQ(pack.model->weight_bytes(), dense->weight_bytes() - up_down * 4);

  // Without the option the loader still insists on the tensors.
  EXPECT_NE(
      error_of([&] { load_model(resident_path(dir.path)); }).find("missing tensor blk.0.ffn_up"),
      std::string::npos);
  // A resident model cannot be packed again (its FFN is not dense).
  EXPECT_NE(error_of([&] { write_pack(*pack.model, dir.file("again")); }).find("no ffn_up"),
            std::string::npos);
  // ... and exporting it skips the absent tensors.
  save_model_gguf(*pack.model, dir.file("resaved.gguf"), DType::F32);
  LoadOptions optional;
  optional.ffn_up_down_optional = true;
  auto resaved = load_model_gguf(MappedFile::open(dir.file("resaved.gguf")), optional);
  EXPECT_TRUE(resaved->layers[0].ffn_up.empty());
}

TEST(FlashPack, PresentUpDownAreStillShapeChecked) {
  TempDir dir("shape");
  write_tiny_model(TinySpec{}, dir.file("model.gguf"));
  GgufFile src = GgufFile::open(dir.file("model.gguf"));
  GgufWriter w;
  for (const auto& [k, v] : src.metadata()) w.set(k, v);
  for (const GgufTensorInfo& t : src.tensors()) {
    if (t.name == "blk.1.ffn_down.weight") continue;
    if (t.name == "blk.1.ffn_up.weight") {  // a transposed (wrong-shape) up
      w.add_tensor(t.name, t.type, {t.dims[1], t.dims[0]}, std::span(t.data, t.nbytes));
      continue;
    }
    w.add_tensor(t.name, t.type, t.dims, std::span(t.data, t.nbytes));
  }
  w.write(dir.file("bad.gguf"));
  LoadOptions optional;
  optional.ffn_up_down_optional = true;
  std::string e =
      error_of([&] { load_model_gguf(MappedFile::open(dir.file("bad.gguf")), optional); });
  EXPECT_NE(e.find("blk.1.ffn_up.weight has shape [40, 48]"), std::string::npos) << e;
}

TEST_F(PackFiles, TruncatedHeaderAtEvery512Bytes) {
  for (uint64_t cut = 0; cut < kPackAlign; cut += 512) {
    std::string e = header_error(std::vector<uint8_t>(good.begin(), good.begin() + cut));
    EXPECT_NE(e.find("truncated"), std::string::npos) << cut << ": " << e;
    EXPECT_NE(e.find("bundles.bin"), std::string::npos) << e;
  }
}

TEST_F(PackFiles, TruncatedOrOverlongData) {
  for (uint64_t cut : {kPackAlign, kPackAlign + 1, kPackAlign + header.stride,
                       header.file_bytes / 2, header.file_bytes - 1}) {
    std::string e = header_error(std::vector<uint8_t>(good.begin(), good.begin() + cut));
    EXPECT_NE(e.find("truncated: " + std::to_string(cut) + " bytes"), std::string::npos) << e;
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_NE(header_error(longer).find("trailing"), std::string::npos);
  EXPECT_EQ(header_error(good), "");
}

TEST_F(PackFiles, EveryFlippedHeaderByteIsCaught) {
  for (size_t i = 0; i < kPackHeaderUsedBytes; ++i) {
    std::vector<uint8_t> bytes = good;
    bytes[i] ^= 0x20;
    std::string e = header_error(bytes);
    bool named = e.find("magic") != std::string::npos || e.find("version") != std::string::npos ||
                 e.find("checksum") != std::string::npos;
    EXPECT_TRUE(named) << "byte " << i << ": " << e;
  }
  for (size_t i : {size_t{28}, size_t{72}, size_t{1000}, size_t{kPackAlign - 1}}) {
    std::vector<uint8_t> bytes = good;
    bytes[i] ^= 1;
    std::string e = header_error(bytes);
    EXPECT_NE(e, "") << "byte " << i;
    if (i >= kPackHeaderUsedBytes) {
      EXPECT_NE(e.find("reserved header byte " + std::to_string(i)), std::string::npos) << e;
    }
  }
}

TEST_F(PackFiles, WrongMagicVersionAndType) {
  std::vector<uint8_t> bytes = good;
  bytes[0] = 'X';
  EXPECT_NE(header_error(bytes).find("bad magic"), std::string::npos);
  EXPECT_NE(header_error(with_header([](PackHeader& h) {
              h.version = 2;
            })).find("unsupported pack version 2"),
            std::string::npos);
  EXPECT_NE(header_error(with_header([](PackHeader& h) {
              h.type = DType::Q8_0;
            })).find("bundle type 8 (q8_0) is not f32, f16 or bf16"),
            std::string::npos);
  EXPECT_NE(header_error(with_header([](PackHeader& h) {
              h.type = static_cast<DType>(99);
            })).find("bundle type 99 (unknown)"),
            std::string::npos);
  // F16 with F32's row_bytes: the row size is checked against the type.
  EXPECT_NE(header_error(with_header([](PackHeader& h) {
              h.type = DType::F16;
            })).find("row_bytes 192 does not match 48 elements of f16"),
            std::string::npos);
}

TEST_F(PackFiles, LayoutFieldsAreChecked) {
  auto err = [&](auto edit) { return header_error(with_header(edit)); };
  EXPECT_NE(err([](PackHeader& h) {
              h.stride = 3 * h.row_bytes - 64;
            }).find("stride 512 is smaller than a bundle (3 * row_bytes = 576)"),
            std::string::npos);
  EXPECT_NE(err([](PackHeader& h) { h.stride += 8; }).find("not a multiple of 64"),
            std::string::npos);
  EXPECT_NE(err([](PackHeader& h) { h.data_offset = 0; }).find("data_offset 0"), std::string::npos);
  EXPECT_NE(err([](PackHeader& h) { h.file_bytes += 576; }).find("file_bytes"), std::string::npos);
  EXPECT_NE(err([](PackHeader& h) { h.n_layers = 0; }).find("n_layers = 0 is out of range"),
            std::string::npos);
  EXPECT_NE(err([](PackHeader& h) { h.dim = 1 << 20; }).find("dim = 1048576 is out of range"),
            std::string::npos);
  EXPECT_NE(err([](PackHeader& h) { h.ffn_dim = -1; }).find("ffn_dim = 4294967295"),
            std::string::npos);
  // A consistent header for a bigger layout: caught by the file size.
  EXPECT_NE(err([](PackHeader& h) {
              h.stride = 640;
              h.file_bytes = h.offset(h.n_layers, 0);
            }).find("truncated"),
            std::string::npos);
}

TEST_F(PackFiles, HeaderThatDisagreesWithTheResidentModel) {
  // Bundles of a 3-layer model beside the resident.gguf of a 2-layer one.
  TinySpec two;
  two.n_layers = 2;
  write_tiny_model(two, dir.file("two.gguf"));
  write_pack(*load_model(dir.file("two.gguf")), dir.file("two"));
  fs::copy_file(resident_path(dir.file("two")), resident_path(dir.path),
                fs::copy_options::overwrite_existing);
  std::string e = error_of([&] { load_pack(dir.path); });
  EXPECT_NE(e.find("header says n_layers = 3 but the resident model has 2"), std::string::npos)
      << e;

  ModelConfig c;
  c.n_layers = 3;
  c.dim = 64;
  c.ffn_dim = 40;
  EXPECT_NE(error_of([&] { check_pack_matches(header, c, "b.bin"); }).find("dim = 48"),
            std::string::npos);
  c.dim = 48;
  c.ffn_dim = 41;
  EXPECT_NE(error_of([&] { check_pack_matches(header, c, "b.bin"); }).find("ffn_dim = 40"),
            std::string::npos);
  c.ffn_dim = 40;
  EXPECT_EQ(error_of([&] { check_pack_matches(header, c, "b.bin"); }), "");
}

TEST_F(PackFiles, ResidentWithoutGateOrBundlesIsAnError) {
  std::string e = error_of([&] {
    copy_gguf(GgufFile::open(model_path), resident_path(dir.path), [](const GgufTensorInfo& t) {
      return t.name.find("ffn_") == std::string::npos ||
             t.name.find("ffn_norm") != std::string::npos;
    });
    load_pack(dir.path);
  });
  EXPECT_NE(e.find("missing tensor blk.0.ffn_gate.weight"), std::string::npos) << e;

  write_pack(*load_model(model_path), dir.path);
  EXPECT_EQ(error_of([&] { load_pack(dir.path); }), "");
  fs::remove(bundles_path(dir.path));
  EXPECT_NE(error_of([&] { load_pack(dir.path); }).find("bundles.bin"), std::string::npos);
}

TEST(FlashPack, FuzzSeedsAreWhatTheirNamesSay) {
  const std::string seeds = std::string(SKIFF_SOURCE_DIR) + "/fuzz/seeds/fuzz_flash_pack/";
  PackHeader f32 = read_pack_header(seeds + "f32_1x1x1.bin");
  EXPECT_EQ(f32.type, DType::F32);
  EXPECT_EQ(f32.stride, 64u);
  PackHeader f16 = read_pack_header(seeds + "f16_2x3x5.bin");
  EXPECT_EQ(f16.n_layers * f16.dim * f16.ffn_dim, 30);
  EXPECT_NE(error_of([&] { read_pack_header(seeds + "header_only.bin"); }).find("truncated"),
            std::string::npos);
}

TEST(FfnActivationKey, ReluRoundTripAndUnknownValues) {
  TempDir dir("activation");
  TinySpec relu;
  relu.activation = "relu";
  write_tiny_model(relu, dir.file("relu.gguf"));
  std::unique_ptr<Model> m = load_model(dir.file("relu.gguf"));
  EXPECT_EQ(m->config.ffn_activation, FfnActivation::kRelu);

  // save_model_gguf keeps the key for ReLU models and leaves it out for SiLU ones.
  save_model_gguf(*m, dir.file("relu2.gguf"), DType::F16);
  EXPECT_EQ(GgufFile::open(dir.file("relu2.gguf")).get_string("skiff.ffn_activation", ""), "relu");
  EXPECT_EQ(load_model(dir.file("relu2.gguf"))->config.ffn_activation, FfnActivation::kRelu);
  m->config.ffn_activation = FfnActivation::kSilu;
  save_model_gguf(*m, dir.file("silu.gguf"), DType::F16);
  EXPECT_EQ(GgufFile::open(dir.file("silu.gguf")).find("skiff.ffn_activation"), nullptr);
  EXPECT_EQ(load_model(dir.file("silu.gguf"))->config.ffn_activation, FfnActivation::kSilu);

  // The pack's resident model carries the key too.
  write_pack(*load_model(dir.file("relu.gguf")), dir.file("pack"));
  EXPECT_EQ(load_pack(dir.file("pack")).model->config.ffn_activation, FfnActivation::kRelu);

  TinySpec silu;
  silu.activation = "silu";
  write_tiny_model(silu, dir.file("silu_key.gguf"));
  EXPECT_EQ(load_model(dir.file("silu_key.gguf"))->config.ffn_activation, FfnActivation::kSilu);

  TinySpec gelu;
  gelu.activation = "gelu";
  write_tiny_model(gelu, dir.file("gelu.gguf"));
  std::string e = error_of([&] { load_model(dir.file("gelu.gguf")); });
  EXPECT_NE(e.find("skiff.ffn_activation = 'gelu' is not a known activation"), std::string::npos)
      << e;
}

// Runs `skiff args` with stderr and stdout into `out`; returns the exit code.
int run_skiff(const std::string& args, std::string* out) {
  std::string log = fs::temp_directory_path() / ("skiff_pack_cli_" + std::to_string(getpid()));
  int status = std::system((std::string(SKIFF_BINARY) + " " + args + " >" + log + " 2>&1").c_str());
  *out = test::read_text(log);
  fs::remove(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(FlashPackCli, PacksAndReportsBadInputOnOneLine) {
  TempDir dir("cli");
  TinySpec spec;
  spec.ffn_type = DType::F16;
  write_tiny_model(spec, dir.file("model.gguf"));
  std::string out;
  ASSERT_EQ(run_skiff("flash-pack " + dir.file("model.gguf") + " -o " + dir.file("pack"), &out), 0)
      << out;
  EXPECT_NE(out.find("stride 320 B"), std::string::npos) << out;
  expect_bundles_match(dir.file("model.gguf"), dir.file("pack"), DType::F16);

  auto expect_error = [&](const std::string& args, const std::string& what) {
    std::string o;
    EXPECT_EQ(run_skiff(args, &o), 1) << o;
    EXPECT_EQ(o.rfind("error: ", 0), 0u) << o;
    EXPECT_NE(o.find(what), std::string::npos) << o;
    EXPECT_EQ(std::count(o.begin(), o.end(), '\n'), 1) << o;
  };
  write_all(dir.file("text.gguf"), {'h', 'e', 'l', 'l', 'o'});
  expect_error("flash-pack " + dir.file("text.gguf") + " -o " + dir.file("p2"), "not a GGUF file");
  expect_error("flash-pack " + dir.file("model.gguf") + " -o " + dir.file("p2") + " --type q8_0",
               "--type q8_0");
  copy_gguf(GgufFile::open(dir.file("model.gguf")), dir.file("noup.gguf"),
            [](const GgufTensorInfo& t) { return t.name != "blk.2.ffn_up.weight"; });
  expect_error("flash-pack " + dir.file("noup.gguf") + " -o " + dir.file("p2"),
               "missing tensor blk.2.ffn_up.weight");
  expect_error("flash-pack " + dir.file("absent.gguf") + " -o " + dir.file("p2"), "absent.gguf");
}

TEST(FlashPackCli, SynthWritesReluModels) {
  TempDir dir("synth");
  const std::string vocab = test::shared_path("models/ggml-vocab-llama-spm.gguf");
  std::string out;
  ASSERT_EQ(run_skiff("synth --shape tiny --type f32 --activation relu -t 2 --vocab " + vocab +
                          " -o " + dir.file("relu.gguf"),
                      &out),
            0)
      << out;
  EXPECT_EQ(load_model(dir.file("relu.gguf"))->config.ffn_activation, FfnActivation::kRelu);
  EXPECT_EQ(run_skiff("synth --shape tiny --activation gelu --vocab " + vocab + " -o " +
                          dir.file("gelu.gguf"),
                      &out),
            1);
  EXPECT_NE(out.find("unknown activation 'gelu'"), std::string::npos) << out;
}

}  // namespace
}  // namespace skiff::flash

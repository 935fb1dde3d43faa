// skiff synth's random models and skiff quantize's output load and run: finite logits,
// the shape asked for, K-quants where rows allow them and F32 where they do not.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/export_gguf.h"
#include "io/quant_scheme.h"
#include "kernels/cpu.h"
#include "model/forward.h"
#include "synth/synth.h"
#include "test_util.h"

namespace skiff {
namespace {

const std::string kVocab = test::shared_path("models/ggml-vocab-llama-spm.gguf");

struct TempFile {
  std::string path;
  ~TempFile() { std::filesystem::remove(path); }
};

void expect_runs(const Model& model) {
  Context ctx(model, 32, 2);
  std::vector<int32_t> tokens = {1, 450, 4996, 17354, 1701, 432};
  std::vector<float> logits = eval_tokens(ctx, tokens);
  ASSERT_EQ(logits.size(), static_cast<size_t>(model.config.vocab_size));
  float spread = 0;
  for (float v : logits) {
    ASSERT_TRUE(std::isfinite(v));
    spread = std::max(spread, std::fabs(v - logits[0]));
  }
  EXPECT_GT(spread, 0.0f);  // not all equal
}

TEST(Synth, ShapesAreTheDocumentedOnes) {
  auto t = synth_shape("tinyllama");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->dim, 2048);
  EXPECT_EQ(t->n_layers, 16);
  EXPECT_EQ(t->n_heads, 32);
  EXPECT_EQ(t->n_kv_heads, 8);
  EXPECT_EQ(t->ffn_dim, 5632);
  EXPECT_EQ(t->vocab_size, 32000);
  EXPECT_EQ(t->context_length, 2048);
  EXPECT_FALSE(synth_shape("nope").has_value());
}

TEST(Synth, TinyModelsLoadAndGiveFiniteLogitsInEveryType) {
  for (DType type : {DType::F16, DType::Q8_0, DType::Q4_0, DType::BF16}) {
    SynthOptions o;
    o.shape = *synth_shape("tiny");
    o.type = type;
    o.vocab_path = kVocab;
    o.threads = 2;
    TempFile f{test::temp_path("test_synth", std::string(dtype_name(type)) + ".gguf")};
    write_synthetic_model(o, f.path);
    auto model = load_model(f.path);
    EXPECT_EQ(model->config.dim, 64);
    EXPECT_EQ(model->config.n_kv_heads, 2);
    EXPECT_EQ(model->config.vocab_size, 32000);
    EXPECT_EQ(model->layers[0].wq.type, type);
    EXPECT_EQ(model->layers[0].ffn_down.type, type);
    EXPECT_EQ(model->tokenizer->vocab().pieces[450], "\xE2\x96\x81The");  // LLaMA-2's vocabulary
    expect_runs(*model);
  }
}

// pack_weights (kernels/repack.h) on a loaded model: packs where the path has packed
// kernels, skips everything when the copies would not fit in the memory headroom (a model
// larger than memory must still run from its mapping), and gives the unpacked logits up to
// float summation order.
TEST(PackWeights, PacksWhenTheCopiesFitAndSkipsWhenTheyWouldNot) {
  for (DType type : {DType::Q4_0, DType::Q8_0}) {
    SynthOptions o;
    o.shape = *synth_shape("tiny");
    o.type = type;
    o.vocab_path = kVocab;
    TempFile f{test::temp_path("test_synth", "pack-" + std::string(dtype_name(type)) + ".gguf")};
    write_synthetic_model(o, f.path);
    LoadOptions plain;
    plain.pack_weights = false;
    auto unpacked = load_model_gguf(MappedFile::open(f.path), plain);
    auto model = load_model_gguf(MappedFile::open(f.path), plain);
    EXPECT_EQ(pack_weights(*model, 0), 0u);
    EXPECT_EQ(model->layers[0].wq.packed, nullptr);
    if (best_cpu_path() != CpuPath::Avx512) {  // no packed kernels on this CPU: nothing to pack
      EXPECT_EQ(pack_weights(*model, SIZE_MAX), 0u);
      continue;
    }
    const size_t bytes = pack_weights(*model, SIZE_MAX);
    EXPECT_GT(bytes, 0u);
    EXPECT_NE(model->layers[0].ffn_down.packed, nullptr);
    for (const LayerWeights& l : model->layers)
      for (const TensorView* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down})
        EXPECT_EQ(w->packed != nullptr, w->type == type) << w->name;
    const std::vector<int32_t> prompt = {1, 450, 4996, 17354};
    Context a(*unpacked, 64, 2), b(*model, 64, 2);
    const std::vector<float> want = eval_tokens(a, prompt), got = eval_tokens(b, prompt);
    ASSERT_EQ(want.size(), got.size());
    double worst = 0, scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(want[i] - got[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
    }
    EXPECT_LT(worst, 1e-4 * (1 + scale)) << dtype_name(type);
  }
  EXPECT_GT(memory_headroom(), size_t{0});
}

TEST(Synth, SameSeedSameFileOtherSeedOtherWeights) {
  SynthOptions o;
  o.shape = *synth_shape("tiny");
  o.type = DType::Q8_0;
  o.vocab_path = kVocab;
  TempFile a{test::temp_path("test_synth", "a.gguf")}, b{test::temp_path("test_synth", "b.gguf")},
      c{test::temp_path("test_synth", "c.gguf")};
  o.threads = 1;
  write_synthetic_model(o, a.path);
  o.threads = 2;  // the thread count does not change the weights
  write_synthetic_model(o, b.path);
  o.seed = 2;
  write_synthetic_model(o, c.path);
  auto ma = load_model(a.path), mb = load_model(b.path), mc = load_model(c.path);
  const size_t n = ma->layers[1].wv.nbytes();
  EXPECT_EQ(std::memcmp(ma->layers[1].wv.data, mb->layers[1].wv.data, n), 0);
  EXPECT_NE(std::memcmp(ma->layers[1].wv.data, mc->layers[1].wv.data, n), 0);
}

TEST(QuantizeModel, KQuantsWhereRowsAllowThemF32ElsewhereAndTheOutputRuns) {
  // dim 256 rows take Q4_K / Q6_K blocks of 256; the FFN down rows (ffn 192) cannot.
  SynthOptions o;
  o.shape = llama_shape("k", 256, 1, 4, 2, 192, 32000, 64);
  o.type = DType::F16;
  o.vocab_path = kVocab;
  TempFile src{test::temp_path("test_synth", "k_src.gguf")};
  write_synthetic_model(o, src.path);
  auto model = load_model(src.path);
  for (DType type : {DType::Q4_K, DType::Q6_K, DType::Q4_0, DType::BF16}) {
    TempFile out{test::temp_path("test_synth", "k_" + std::string(dtype_name(type)) + ".gguf")};
    int calls = 0;
    save_model_gguf(*model, out.path, type, [&](int done, int total) {
      ++calls;
      EXPECT_LE(done, total);
    });
    EXPECT_GT(calls, 0);
    auto q = load_model(out.path);
    EXPECT_EQ(q->layers[0].wq.type, type);
    EXPECT_EQ(q->layers[0].ffn_gate.type, type);
    const bool fits = 192 % traits(type).block_size == 0;
    EXPECT_EQ(q->layers[0].ffn_down.type, fits ? type : DType::F32) << dtype_name(type);
    EXPECT_EQ(q->layers[0].attn_norm.type, DType::F32);
    expect_runs(*q);
  }
}

TEST(QuantScheme, Q4KMFollowsLlamaCppsLayerRule) {
  const QuantScheme m = *parse_quant_scheme("Q4_K_M");
  EXPECT_TRUE(m.q4_k_m);
  EXPECT_EQ(m.name(), "q4_k_m");
  EXPECT_EQ(quant_scheme_file_type(m), 15u);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  EXPECT_FALSE(parse_quant_scheme("q4_k_x").has_value());
  EXPECT_EQ(parse_quant_scheme("q8_0")->base, DType::Q8_0);
  // 16 layers: the first and last eighth (0, 1, 14, 15) and every third in between (4, 7, 10, 13).
  std::string more;
  for (int l = 0; l < 16; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const DType v = quant_tensor_type(m, p + "attn_v.weight", 2048, 16, true);
    EXPECT_EQ(quant_tensor_type(m, p + "ffn_down.weight", 8192, 16, true), v) << l;
    EXPECT_EQ(quant_tensor_type(m, p + "attn_q.weight", 2048, 16, true), DType::Q4_K);
    EXPECT_EQ(quant_tensor_type(m, p + "ffn_up.weight", 2048, 16, true), DType::Q4_K);
    if (v == DType::Q6_K) more += std::to_string(l) + " ";
  }
  EXPECT_EQ(more, "0 1 4 7 10 13 14 15 ");
  EXPECT_EQ(quant_tensor_type(m, "output.weight", 2048, 16, true), DType::Q6_K);
  EXPECT_EQ(quant_tensor_type(m, "token_embd.weight", 2048, 16, true), DType::Q4_K);
  EXPECT_EQ(quant_tensor_type(m, "token_embd.weight", 2048, 16, false), DType::Q6_K);  // tied head
  // Rows that K-quant blocks do not divide fall back as llama.cpp's do.
  EXPECT_EQ(quant_tensor_type(m, "blk.1.attn_q.weight", 192, 16, true), DType::Q5_0);
  EXPECT_EQ(quant_tensor_type(m, "blk.0.attn_v.weight", 192, 16, true), DType::Q8_0);
  EXPECT_EQ(quant_tensor_type(m, "output.weight", 192, 16, true), DType::Q8_0);
  EXPECT_EQ(quant_tensor_type(m, "blk.1.attn_q.weight", 48, 16, true), DType::F16);
}

TEST(QuantizeModel, Q4KMMixLoadsAndGenerates) {
  // 8 layers: layers 0, 3, 6 and 7 get Q6_K attn_v and ffn_down.
  SynthOptions o;
  o.shape = llama_shape("m", 256, 8, 4, 2, 512, 32000, 64);
  o.type = DType::F16;
  o.vocab_path = kVocab;
  o.threads = 2;
  TempFile src{test::temp_path("test_synth", "m_src.gguf")},
      out{test::temp_path("test_synth", "m_q4_k_m.gguf")},
      syn{test::temp_path("test_synth", "m_synth.gguf")};
  write_synthetic_model(o, src.path);
  save_model_gguf(*load_model(src.path), out.path, *parse_quant_scheme("q4_k_m"));
  o.scheme = parse_quant_scheme("q4_k_m");
  o.shape.tied = true;
  write_synthetic_model(o, syn.path);  // synth goes through the same rule
  for (const std::string& path : {out.path, syn.path}) {
    auto q = load_model(path);
    const bool tied = path == syn.path;
    EXPECT_EQ(q->tied_output, tied);
    if (!tied) {
      EXPECT_EQ(q->output.type, DType::Q6_K);
    }
    EXPECT_EQ(q->token_embd.type, tied ? DType::Q6_K : DType::Q4_K);
    for (int l = 0; l < 8; ++l) {
      const LayerWeights& w = q->layers[static_cast<size_t>(l)];
      const DType more = (l == 0 || l == 3 || l == 6 || l == 7) ? DType::Q6_K : DType::Q4_K;
      EXPECT_EQ(w.wv.type, more) << path << " layer " << l;
      EXPECT_EQ(w.ffn_down.type, more) << path << " layer " << l;
      for (const TensorView* t : {&w.wq, &w.wk, &w.wo, &w.ffn_gate, &w.ffn_up})
        EXPECT_EQ(t->type, DType::Q4_K);
      EXPECT_EQ(w.attn_norm.type, DType::F32);
    }
    expect_runs(*q);
    // Generates: greedy tokens from the logits of each step.
    Context ctx(*q, 32, 2);
    std::vector<int32_t> tokens = {1, 450};
    for (int i = 0; i < 8; ++i) {
      std::vector<float> logits = eval_tokens(ctx, std::span<const int32_t>(&tokens.back(), 1));
      tokens.push_back(
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    }
    EXPECT_EQ(tokens.size(), 10u);
    EXPECT_EQ(ctx.cache().length(0), 8);
  }
}

}  // namespace
}  // namespace skiff

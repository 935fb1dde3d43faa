// The layer-range forward API and the per-layer KV cache, on the real stories260K model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "base/error.h"
#include "model/forward.h"
#include "speculative_test_util.h"
#include "test_util.h"

namespace skiff {
namespace {

const std::string kModel = std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf";

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

class Forward : public ::testing::Test {
 protected:
  void SetUp() override { model = load_model(kModel); }
  std::unique_ptr<Model> model;
  std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 271, 300, 42, 99, 7};
};

// Bit-exact, not approximately: self-speculative verification runs a batch where plain
// decoding ran single steps, and greedy output must be identical token for token. So every
// kernel must compute a row's result the same way whatever T is (batch invariance).
TEST_F(Forward, PrefillEqualsSingleStepsBitExactly) {
  const int dim = model->config.dim, L = model->config.n_layers;
  Context batch(*model, 0, 2), steps(*model, 0, 1);
  std::vector<float> h1(tokens.size() * dim), h2(tokens.size() * dim);
  embed(*model, tokens, h1.data());
  forward(batch, h1.data(), static_cast<int64_t>(tokens.size()), 0, L);
  for (size_t t = 0; t < tokens.size(); ++t) {
    embed(*model, std::span<const int32_t>(&tokens[t], 1), &h2[t * dim]);
    forward(steps, &h2[t * dim], 1, 0, L);
  }
  EXPECT_EQ(max_abs_diff(h1, h2), 0.0f);
  for (int l = 0; l < L; ++l) EXPECT_EQ(batch.cache().length(l), static_cast<int>(tokens.size()));
}

// Decoding with more threads than (row, KV head) pairs splits each group of query heads
// into parts (4 and 4 of 8 here) that run as separate jobs: the same bits as one thread.
TEST(ForwardThreads, AttentionSplitAcrossThreadsIsBitExact) {
  testing_spec::RandomShape shape;
  shape.dim = 128;
  shape.n_heads = 16;  // head_dim 8
  shape.n_kv_heads = 2;
  shape.ffn_dim = 96;
  testing_spec::OwnedModel m = testing_spec::make_random_model(shape);
  const int dim = m->config.dim, L = m->config.n_layers;
  Context one(*m, 0, 1), many(*m, 0, 16);
  const std::vector<int32_t> ids = {1, 5, 9, 3, 17, 4, 11};
  for (size_t t = 0; t < ids.size(); ++t) {
    std::vector<float> a(dim), b(dim);
    embed(*m, std::span<const int32_t>(&ids[t], 1), a.data());
    b = a;
    forward(one, a.data(), 1, 0, L);
    forward(many, b.data(), 1, 0, L);
    ASSERT_EQ(max_abs_diff(a, b), 0.0f) << "position " << t;
  }
}

// Continuous batching: sequences at different positions (one decoding, one prefilling a
// chunk, one starting) forwarded together give exactly what each gives alone.
TEST_F(Forward, BatchOfSequencesEqualsEachAloneBitExactly) {
  const int dim = model->config.dim, L = model->config.n_layers;
  ThreadPool pool(2);
  Context a(*model, 0, pool), b(*model, 0, pool), c(*model, 0, pool);
  Context alone(*model, 0, 2);
  // Give a and b some history first (a: 6 positions, b: 2).
  auto run = [&](Context& ctx, std::span<const int32_t> toks) {
    std::vector<float> h(toks.size() * dim);
    embed(*model, toks, h.data());
    forward(ctx, h.data(), static_cast<int64_t>(toks.size()), 0, L);
    return h;
  };
  const std::span<const int32_t> all(tokens);
  run(a, all.subspan(0, 6));
  run(b, all.subspan(0, 2));
  // One step: a decodes token 6, b prefills tokens 2..5, c starts with tokens 7..9.
  std::vector<int32_t> rows = {tokens[6], tokens[2], tokens[3], tokens[4], tokens[5], tokens[7], tokens[8], tokens[9]};
  std::vector<float> h(rows.size() * dim);
  embed(*model, rows, h.data());
  const BatchSeq seqs[] = {{&a, 1}, {&b, 4}, {&c, 3}};
  forward_batch(seqs, h.data(), 0, L);
  EXPECT_EQ(a.cache().length(L - 1), 7);
  EXPECT_EQ(b.cache().length(0), 6);
  EXPECT_EQ(c.cache().length(0), 3);
  // The same rows, each sequence alone.
  std::vector<float> expect;
  auto append = [&](const std::vector<float>& v, size_t from_row) {
    expect.insert(expect.end(), v.begin() + static_cast<long>(from_row * dim), v.end());
  };
  append(run(alone, all.subspan(0, 7)), 6);
  alone.cache().clear();
  append(run(alone, all.subspan(0, 6)), 2);
  alone.cache().clear();
  append(run(alone, all.subspan(7, 3)), 0);
  EXPECT_EQ(max_abs_diff(h, expect), 0.0f);

  // A prefix copied from another cache continues exactly like the original.
  Context d(*model, 0, pool);
  d.cache().copy_prefix_from(a.cache(), 5);
  EXPECT_EQ(d.cache().length(0), 5);
  std::vector<float> x = run(d, all.subspan(5, 1));
  alone.cache().clear();
  std::vector<float> y = run(alone, all.subspan(0, 6));
  EXPECT_EQ(max_abs_diff(x, std::vector<float>(y.end() - dim, y.end())), 0.0f);

  // A sequence that would pass its context fails before anything is written.
  Context tiny(*model, 4, pool);
  const BatchSeq over[] = {{&a, 1}, {&tiny, 5}};
  std::vector<float> h5(6 * dim);
  EXPECT_THROW(forward_batch(over, h5.data(), 0, L), Error);
  EXPECT_EQ(a.cache().length(0), 7);
}

// Sequences for a batch over per-sequence layer ranges: each its own context (one shared
// pool), its rows run alone through [0, before[i]) first; `expect` holds each one's rows run
// alone, in a fresh context, through [0, reference[i]).
struct RangedBatch {
  std::vector<std::unique_ptr<Context>> ctxs;
  std::vector<BatchSeq> seqs;
  std::vector<float> batch, expect;
};
RangedBatch ranged_batch(const Model& model, ThreadPool& pool, const std::vector<std::span<const int32_t>>& rows,
                         const std::vector<int>& before, const std::vector<int>& reference) {
  RangedBatch b;
  const int dim = model.config.dim;
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t T = static_cast<int64_t>(rows[i].size());
    b.ctxs.push_back(std::make_unique<Context>(model, 0, pool));
    b.seqs.push_back({b.ctxs.back().get(), T});
    std::vector<float> h(static_cast<size_t>(T) * dim);
    embed(model, rows[i], h.data());
    forward(*b.ctxs.back(), h.data(), T, 0, before[i]);
    b.batch.insert(b.batch.end(), h.begin(), h.end());
    Context alone(model, 0, 1);
    embed(model, rows[i], h.data());
    forward(alone, h.data(), T, 0, reference[i]);
    b.expect.insert(b.expect.end(), h.begin(), h.end());
  }
  return b;
}

// The server's speculative verification in the batched pass: a sequence whose rows already
// went through layers [0, E) (its drafts) enters the batch at layer E, beside sequences that
// start at layer 0; each gives exactly what its whole forward alone gives.
TEST_F(Forward, SequencesEnteringAtLaterLayersEqualEachAloneBitExactly) {
  const int L = model->config.n_layers;
  ASSERT_GE(L, 3);
  ThreadPool pool(2);
  const std::span<const int32_t> all(tokens);
  const std::vector<std::span<const int32_t>> rows = {all.subspan(0, 4), all.subspan(2, 3), all.subspan(5, 5)};
  const std::vector<int> entries = {0, 1, L - 1};
  RangedBatch b = ranged_batch(*model, pool, rows, entries, {L, L, L});
  forward_batch_entering(b.seqs, entries, b.batch.data(), L);
  EXPECT_EQ(max_abs_diff(b.batch, b.expect), 0.0f);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int l = 0; l < L; ++l) EXPECT_EQ(b.ctxs[i]->cache().length(l), static_cast<int>(rows[i].size())) << i;
  }
  // Entries must not decrease (each layer range runs over a prefix of the rows) nor pass L.
  const std::vector<int> decreasing = {0, 2, 1}, past = {0, 1, L + 1}, short_list = {0, 1};
  EXPECT_THROW(forward_batch_entering(b.seqs, decreasing, b.batch.data(), L), Error);
  EXPECT_THROW(forward_batch_entering(b.seqs, past, b.batch.data(), L), Error);
  EXPECT_THROW(forward_batch_entering(b.seqs, short_list, b.batch.data(), L), Error);
}

// Lockstep self-speculative drafting: sequences leaving at different exit layers in one batch
// give exactly the states and caches each gives alone over its layers [0, E).
TEST_F(Forward, SequencesLeavingAtEarlierLayersEqualEachAloneBitExactly) {
  const int L = model->config.n_layers;
  ASSERT_GE(L, 3);
  ThreadPool pool(2);
  const std::span<const int32_t> all(tokens);
  const std::vector<std::span<const int32_t>> rows = {all.subspan(0, 1), all.subspan(1, 3), all.subspan(4, 2),
                                                      all.subspan(6, 1)};
  const std::vector<int> exits = {L, L - 1, 1, 0};
  RangedBatch b = ranged_batch(*model, pool, rows, {0, 0, 0, 0}, exits);
  forward_batch_leaving(b.seqs, exits, b.batch.data());
  EXPECT_EQ(max_abs_diff(b.batch, b.expect), 0.0f);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int l = 0; l < L; ++l) {
      EXPECT_EQ(b.ctxs[i]->cache().length(l), l < exits[i] ? static_cast<int>(rows[i].size()) : 0) << i << " " << l;
    }
  }
  const std::vector<int> increasing = {1, 2, 1, 0}, past = {L + 1, 1, 1, 0}, short_list = {2, 1};
  EXPECT_THROW(forward_batch_leaving(b.seqs, increasing, b.batch.data()), Error);
  EXPECT_THROW(forward_batch_leaving(b.seqs, past, b.batch.data()), Error);
  EXPECT_THROW(forward_batch_leaving(b.seqs, short_list, b.batch.data()), Error);
}

TEST_F(Forward, LayerRangesComposeAndLateLayersMayLag) {
  // forward(0, 2) then forward(2, L) equals forward(0, L): the seam self-speculation uses.
  const int dim = model->config.dim, L = model->config.n_layers;
  Context whole(*model), split(*model);
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<float> a(T * dim), b(T * dim);
  embed(*model, tokens, a.data());
  embed(*model, tokens, b.data());
  forward(whole, a.data(), T, 0, L);
  forward(split, b.data(), T, 0, 2);
  EXPECT_EQ(split.cache().length(1), T);
  EXPECT_EQ(split.cache().length(2), 0);  // late layers lag behind until they are run
  forward(split, b.data(), T, 2, L);
  EXPECT_EQ(max_abs_diff(a, b), 0.0f);
}

TEST_F(Forward, TruncatingTheCacheRewindsExactly) {
  const int dim = model->config.dim, L = model->config.n_layers, V = model->config.vocab_size;
  Context ctx(*model);
  std::vector<float> first = eval_tokens(ctx, tokens);
  // Append a wrong continuation, then truncate every layer back and re-evaluate.
  std::vector<int32_t> junk = {5, 6, 7};
  eval_tokens(ctx, junk);
  for (int l = 0; l < L; ++l) ctx.cache().truncate(l, static_cast<int>(tokens.size()) - 1);
  std::vector<float> again = eval_tokens(ctx, std::span<const int32_t>(&tokens.back(), 1));
  ASSERT_EQ(first.size(), static_cast<size_t>(V));
  EXPECT_LT(max_abs_diff(first, again), 1e-5);
  (void)dim;
  EXPECT_THROW(ctx.cache().truncate(0, 1000), Error);
}

TEST_F(Forward, EarlyExitLogitsAreAvailableAfterAnyLayer) {
  const int dim = model->config.dim, V = model->config.vocab_size, L = model->config.n_layers;
  for (int exit = 1; exit <= L; ++exit) {
    Context ctx(*model);
    std::vector<float> h(tokens.size() * dim), logits(tokens.size() * V);
    embed(*model, tokens, h.data());
    forward(ctx, h.data(), static_cast<int64_t>(tokens.size()), 0, exit);
    compute_logits(ctx, h.data(), static_cast<int64_t>(tokens.size()), logits.data());
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
    EXPECT_EQ(ctx.cache().length(exit - 1), static_cast<int>(tokens.size()));
    if (exit < L) {
      EXPECT_EQ(ctx.cache().length(exit), 0);
    }
  }
}

TEST_F(Forward, PassingTheContextLengthIsAnErrorNotACrash) {
  Context ctx(*model, 8);
  std::vector<float> h(16 * model->config.dim);
  std::vector<int32_t> many(9, 5);
  embed(*model, many, h.data());
  EXPECT_THROW(forward(ctx, h.data(), 9, 0, model->config.n_layers), Error);
  EXPECT_EQ(ctx.cache().length(0), 0);  // nothing written
  EXPECT_THROW(forward(ctx, h.data(), 1, 0, model->config.n_layers + 1), Error);
  EXPECT_THROW(Context(*model, model->config.context_length + 1), Error);
  std::vector<int32_t> bad = {model->config.vocab_size};
  EXPECT_THROW(embed(*model, bad, h.data()), Error);
}

TEST(ModelLoad, Llama2cAndGgufGiveTheSameLogits) {
  auto gguf = load_model(kModel);
  auto l2c = load_model(test::shared_path("models/stories260K.bin"),
                        test::shared_path("models/tok512.bin"));
  auto v1 = load_model(test::shared_path("models/stories260K_v1export.bin"),
                       test::shared_path("models/tok512.bin"));
  std::vector<int32_t> tokens = {1, 403, 407, 261};
  Context a(*gguf), b(*l2c), c(*v1);
  auto la = eval_tokens(a, tokens), lb = eval_tokens(b, tokens), lc = eval_tokens(c, tokens);
  // The same weights, bit for bit...
  auto same = [](const TensorView& x, const TensorView& y) {
    if (x.type != y.type || x.rows != y.rows || x.cols != y.cols) return false;
    for (int64_t r = 0; r < x.rows; ++r)
      if (std::memcmp(x.row(r), y.row(r), row_bytes(x.type, x.cols)) != 0) return false;
    return true;
  };
  for (size_t l = 0; l < gguf->layers.size(); ++l) {
    const LayerWeights &g = gguf->layers[l], &k = l2c->layers[l];
    for (auto m : {&LayerWeights::wq, &LayerWeights::wk, &LayerWeights::wv, &LayerWeights::wo, &LayerWeights::ffn_gate,
                   &LayerWeights::ffn_up, &LayerWeights::ffn_down, &LayerWeights::attn_norm, &LayerWeights::ffn_norm})
      EXPECT_TRUE(same(g.*m, k.*m)) << "layer " << l;
  }
  EXPECT_TRUE(same(gguf->token_embd, l2c->token_embd));
  // ...so the same logits: exactly where both run the same kernels (the llama2.c loaders keep
  // their own F32 copy, which is not packed; the GGUF file's F32 matrices are on AVX-512).
  EXPECT_EQ(lb, lc);
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) ASSERT_NEAR(la[i], lb[i], 1e-5f * (1 + std::fabs(lb[i]))) << i;
  EXPECT_EQ(l2c->config.n_kv_heads, 4);
  EXPECT_TRUE(l2c->tied_output);
}

TEST(ModelLoad, MissingTokenizerAndBadFilesAreErrors) {
  EXPECT_THROW(load_model("/nonexistent/model.gguf"), Error);
  EXPECT_THROW(load_model(test::shared_path("models/tok512.bin")), Error);
  try {
    load_model(test::shared_path("models/ggml-vocab-llama-spm.gguf"));
    FAIL() << "a vocabulary-only GGUF loaded as a model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token_embd"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace skiff

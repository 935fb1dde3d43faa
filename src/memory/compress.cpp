#include "memory/compress.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"
#include "kernels/dot.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/rope.h"

namespace skiff::memory {

namespace {

// received[h][t]: the attention entry position t (< n) of KV head h gets, the query heads of
// its group summed, in the layer whose input rows are x[rows][dim] and whose keys the cache
// holds at positions 0..rows-1. rows > n: the probe's rows n.. observe (summed); rows == n:
// every later row of the entry, averaged over the rows that see t.
std::vector<std::vector<double>> attention_received(Context& ctx, int layer, const float* x, int64_t n,
                                                     int64_t rows) {
  const ModelConfig& c = ctx.model().config;
  const LayerWeights& w = ctx.model().layers[static_cast<size_t>(layer)];
  const int hd = c.head_dim, q_dim = c.q_dim(), group = c.n_heads / c.n_kv_heads;
  // The layer's queries as forward() computed them: rope(wq rmsnorm(x)).
  std::vector<float> norm(static_cast<size_t>(rows) * c.dim), q(static_cast<size_t>(rows) * q_dim);
  for (int64_t t = 0; t < rows; ++t) rmsnorm(&norm[t * c.dim], x + t * c.dim, w.attn_norm.f32(), c.dim, c.rms_eps);
  matmul(w.wq, norm.data(), rows, q.data(), ctx.pool());
  for (int64_t t = 0; t < rows; ++t)
    rope_rotate(&q[t * q_dim], c.n_heads, hd, c.rope_dim, ctx.rope_row(static_cast<int>(t)), c.rope_layout);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const KvCache& cache = ctx.cache();
  std::vector<std::vector<double>> received(static_cast<size_t>(c.n_kv_heads), std::vector<double>(static_cast<size_t>(n), 0.0));
  std::vector<float> p(static_cast<size_t>(rows));
  for (int g = 0; g < c.n_heads; ++g) {
    const int h = g / group;
    for (int64_t r = rows > n ? n : 0; r < rows; ++r) {
      for (int64_t t = 0; t <= r; ++t)
        p[static_cast<size_t>(t)] = dot_f32(&q[r * q_dim + g * hd], cache.key(layer, static_cast<int>(t)) + h * hd, hd) * scale;
      softmax(p.data(), r + 1);
      for (int64_t t = 0; t < std::min(r, n); ++t) received[static_cast<size_t>(h)][static_cast<size_t>(t)] += p[static_cast<size_t>(t)];
    }
  }
  if (rows == n)  // no probe: average over the rows that see t
    for (auto& row : received)
      for (int64_t t = 0; t + 1 < n; ++t) row[static_cast<size_t>(t)] /= static_cast<double>(n - 1 - t);
  return received;
}

// The `slots` best positions of a score row (ties: the earlier), ascending.
std::vector<int> best_positions(const std::vector<double>& score, int slots) {
  std::vector<int> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)]; });
  order.resize(static_cast<size_t>(slots));
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace

EncodedEntry encode_entry_slots(Context& ctx, std::span<const int32_t> tokens, int slots,
                                std::span<const int32_t> probe, SlotChoice* choice) {
  if (slots < 1) fail("memory: {} slots per entry (at least 1)", slots);
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n <= slots) {
    EncodedEntry e = encode_entry(ctx, tokens);
    if (choice) {
      const ModelConfig& c = ctx.model().config;
      std::vector<int> all(static_cast<size_t>(n));
      std::iota(all.begin(), all.end(), 0);
      choice->assign(static_cast<size_t>(c.n_layers), std::vector<std::vector<int>>(static_cast<size_t>(c.n_kv_heads), all));
    }
    return e;
  }
  const ModelConfig& c = ctx.model().config;
  if (!ctx.cache().types().is_f32()) fail("memory: entries are encoded with an F32 KV cache");
  if (n + static_cast<int64_t>(probe.size()) > ctx.context_length())
    fail("memory: a text of {} tokens and a probe of {} are longer than the context ({})", n, probe.size(),
         ctx.context_length());
  ctx.cache().clear();
  const int hd = c.head_dim, kv = c.kv_dim();
  // The probe follows the entry: it sees the entry, the entry does not see it (its keys and
  // values are the entry's own, as encode_entry's).
  std::vector<int32_t> all(tokens.begin(), tokens.end());
  all.insert(all.end(), probe.begin(), probe.end());
  const int64_t rows = static_cast<int64_t>(all.size());
  std::vector<float> hidden(static_cast<size_t>(rows) * c.dim), input;
  embed(ctx.model(), all, hidden.data());
  EncodedEntry e;
  e.keys.resize(static_cast<size_t>(c.n_layers) * static_cast<size_t>(slots) * static_cast<size_t>(kv));
  e.values.resize(e.keys.size());
  if (choice) choice->assign(static_cast<size_t>(c.n_layers), {});
  const RopeFrequencies freq = rope_frequencies(c);
  std::vector<float> angles(static_cast<size_t>(c.rope_dim));
  for (int l = 0; l < c.n_layers; ++l) {
    input = hidden;  // the layer's input rows, for its queries
    forward(ctx, hidden.data(), rows, l, l + 1);
    const std::vector<std::vector<double>> received = attention_received(ctx, l, input.data(), n, rows);
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const std::vector<int> keep = best_positions(received[static_cast<size_t>(h)], slots);
      if (choice) (*choice)[static_cast<size_t>(l)].push_back(keep);
      for (int j = 0; j < slots; ++j) {
        const int t = keep[static_cast<size_t>(j)];
        float* k = &e.keys[(static_cast<size_t>(l) * slots + j) * kv + static_cast<size_t>(h) * hd];
        float* v = &e.values[(static_cast<size_t>(l) * slots + j) * kv + static_cast<size_t>(h) * hd];
        std::copy_n(ctx.cache().key(l, t) + h * hd, hd, k);
        std::copy_n(ctx.cache().value(l, t) + h * hd, hd, v);
        // From position t to row j: rotate by j - t (magnitude 1; any YaRN scale is in k).
        rope_angles(c.rope_dim, j - t, freq.inv_freq.data(), 1.0f, angles.data());
        rope_rotate(k, 1, hd, c.rope_dim, angles.data(), c.rope_layout);
      }
    }
  }
  e.vector = pool_hidden_states(hidden, static_cast<size_t>(n), c.dim);
  return e;
}

}  // namespace skiff::memory

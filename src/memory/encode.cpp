#include "memory/encode.h"

#include <cmath>
#include <cstring>

#include "base/error.h"

namespace skiff::memory {

namespace {

// Runs the tokens through every layer of a cleared ctx; returns the final hidden states.
std::vector<float> run_alone(Context& ctx, std::span<const int32_t> tokens) {
  const ModelConfig& c = ctx.model().config;
  if (tokens.empty()) fail("memory: cannot encode an empty text");
  if (static_cast<int>(tokens.size()) > ctx.context_length())
    fail("memory: a text of {} tokens is longer than the context ({})", tokens.size(), ctx.context_length());
  ctx.cache().clear();
  std::vector<float> hidden(tokens.size() * static_cast<size_t>(c.dim));
  embed(ctx.model(), tokens, hidden.data());
  forward(ctx, hidden.data(), static_cast<int64_t>(tokens.size()), 0, c.n_layers);
  return hidden;
}

}  // namespace

std::vector<float> pool_hidden_states(std::span<const float> hidden, size_t n, int dim) {
  std::vector<double> sum(static_cast<size_t>(dim), 0.0);
  for (size_t t = 0; t < n; ++t) {
    const float* h = &hidden[t * static_cast<size_t>(dim)];
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += static_cast<double>(h[i]) * h[i];
    const double r = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int i = 0; i < dim; ++i) sum[static_cast<size_t>(i)] += h[i] * r;
  }
  double norm = 0;
  for (double v : sum) norm += v * v;
  norm = norm > 0 ? 1.0 / std::sqrt(norm) : 0.0;
  std::vector<float> out(static_cast<size_t>(dim));
  for (int i = 0; i < dim; ++i) out[static_cast<size_t>(i)] = static_cast<float>(sum[static_cast<size_t>(i)] * norm);
  return out;
}

EncodedEntry encode_entry(Context& ctx, std::span<const int32_t> tokens) {
  const KvCache& cache = ctx.cache();
  if (!cache.types().is_f32()) fail("memory: entries are encoded with an F32 KV cache");
  const ModelConfig& c = ctx.model().config;
  const std::vector<float> hidden = run_alone(ctx, tokens);
  const size_t n = tokens.size(), kv = static_cast<size_t>(c.kv_dim());
  EncodedEntry e;
  e.keys.resize(static_cast<size_t>(c.n_layers) * n * kv);
  e.values.resize(e.keys.size());
  for (int l = 0; l < c.n_layers; ++l) {
    // Positions 0..n-1 of a layer are consecutive rows of the cache.
    std::memcpy(&e.keys[static_cast<size_t>(l) * n * kv], cache.key(l, 0), n * kv * sizeof(float));
    std::memcpy(&e.values[static_cast<size_t>(l) * n * kv], cache.value(l, 0), n * kv * sizeof(float));
  }
  e.vector = pool_hidden_states(hidden, n, c.dim);
  return e;
}

std::vector<float> retrieval_vector(Context& ctx, std::span<const int32_t> tokens) {
  return pool_hidden_states(run_alone(ctx, tokens), tokens.size(), ctx.model().config.dim);
}

}  // namespace skiff::memory

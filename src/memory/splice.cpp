#include "memory/splice.h"

#include <algorithm>
#include <vector>

#include "base/error.h"
#include "kernels/ops.h"
#include "model/rope.h"
#include "tensor/dtype.h"

namespace skiff::memory {

namespace {

// The checks both entry points share; returns the common cache length.
int check_cache(Context& ctx, const MemoryStore& store) {
  const ModelConfig& c = ctx.model().config;
  const KvCache& cache = ctx.cache();
  if (store.n_layers() != c.n_layers || store.kv_dim() != c.kv_dim())
    fail("{}: built for {} layers of KV width {}, the model has {} of {}", store.name(), store.n_layers(),
         store.kv_dim(), c.n_layers, c.kv_dim());
  if (cache.first_stored() != 0 || cache.last_stored() != c.n_layers)
    fail("memory: splicing needs every layer's cache in this process");
  const int length = cache.length(0);
  for (int l = 1; l < c.n_layers; ++l) {
    if (cache.length(l) != length) fail("memory: splicing needs every layer at the same length");
  }
  return length;
}

// The first `rows` rows of entry e at positions start.. (keys rotated on by `start` when
// correcting).
void append_rows(Context& ctx, const MemoryStore& store, const RopeFrequencies& freq, size_t e, int rows, int start,
                 bool correct_positions) {
  const ModelConfig& c = ctx.model().config;
  KvCache& cache = ctx.cache();
  const int kv = c.kv_dim();
  std::vector<float> k(static_cast<size_t>(kv)), v(static_cast<size_t>(kv)), angles(static_cast<size_t>(c.rope_dim));
  // The rotation by the entry's start: magnitude 1, the stored key carries any YaRN scale.
  rope_angles(c.rope_dim, start, freq.inv_freq.data(), 1.0f, angles.data());
  for (int l = 0; l < c.n_layers; ++l) {
    const uint8_t* keys = store.keys(e, l);
    const uint8_t* values = store.values(e, l);
    for (int j = 0; j < rows; ++j) {
      dequantize_row(store.types().k, keys + static_cast<size_t>(j) * store.key_row_bytes(), k.data(), kv);
      dequantize_row(store.types().v, values + static_cast<size_t>(j) * store.value_row_bytes(), v.data(), kv);
      if (correct_positions) rope_rotate(k.data(), c.n_kv_heads, c.head_dim, c.rope_dim, angles.data(), c.rope_layout);
      cache.store(l, start + j, k.data(), v.data());
    }
  }
  for (int l = 0; l < c.n_layers; ++l) cache.extend(l, rows);
}

}  // namespace

void splice(Context& ctx, const MemoryStore& store, std::span<const size_t> entries, bool correct_positions) {
  const int start = check_cache(ctx, store);
  int total = 0;
  for (size_t e : entries) {
    store.verify_entry(e);
    total += store.entry(e).kv_rows;
  }
  if (start + total > ctx.cache().context_length())
    fail("memory: {} spliced tokens after {} do not fit in the context of {} (use fewer entries or a larger -c)",
         total, start, ctx.cache().context_length());
  const RopeFrequencies freq = rope_frequencies(ctx.model().config);
  int pos = start;
  for (size_t e : entries) {
    append_rows(ctx, store, freq, e, store.entry(e).kv_rows, pos, correct_positions);
    pos += store.entry(e).kv_rows;
  }
}

void splice_prefix(Context& ctx, const MemoryStore& store, size_t entry, int rows) {
  const int start = check_cache(ctx, store);
  store.verify_entry(entry);
  if (rows < 0 || rows > store.entry(entry).kv_rows)
    fail("memory: {} rows of entry {}, which has {}", rows, store.entry(entry).id, store.entry(entry).kv_rows);
  if (start + rows > ctx.cache().context_length())
    fail("memory: {} spliced tokens after {} do not fit in the context of {} (use fewer entries or a larger -c)",
         rows, start, ctx.cache().context_length());
  append_rows(ctx, store, rope_frequencies(ctx.model().config), entry, rows, start, true);
}

int recomputed_rows(const MemoryStore& store, size_t entry, int recompute) {
  const MemoryStore::Entry e = store.entry(entry);
  if (e.kv_rows != e.n_tokens)
    fail("memory: splice-recompute needs a store of whole entries; {} keeps {} of entry {}'s {} rows", store.name(),
         e.kv_rows, e.id, e.n_tokens);
  return std::min(recompute, e.n_tokens);
}

int splice_recomputing(Context& ctx, const MemoryStore& store, std::span<const size_t> entries, int recompute) {
  const ModelConfig& c = ctx.model().config;
  int prefilled = 0;
  for (size_t e : entries) {
    const int n = store.entry(e).n_tokens, redo = recomputed_rows(store, e, recompute);
    splice_prefix(ctx, store, e, n - redo);
    prefilled += redo;
    if (redo == 0) continue;
    std::vector<float> h(static_cast<size_t>(redo) * c.dim);
    embed(ctx.model(), store.tokens(e).subspan(static_cast<size_t>(n - redo)), h.data());
    forward(ctx, h.data(), redo, 0, c.n_layers);
  }
  return prefilled;
}

}  // namespace skiff::memory

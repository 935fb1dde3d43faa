#include "memory/splice.h"

#include <vector>

#include "base/error.h"
#include "kernels/ops.h"
#include "model/rope.h"
#include "tensor/dtype.h"

namespace skiff::memory {

void splice(Context& ctx, const MemoryStore& store, std::span<const size_t> entries, bool correct_positions) {
  const ModelConfig& c = ctx.model().config;
  KvCache& cache = ctx.cache();
  if (store.n_layers() != c.n_layers || store.kv_dim() != c.kv_dim())
    fail("{}: built for {} layers of KV width {}, the model has {} of {}", store.name(), store.n_layers(),
         store.kv_dim(), c.n_layers, c.kv_dim());
  if (cache.first_stored() != 0 || cache.last_stored() != c.n_layers)
    fail("memory: splicing needs every layer's cache in this process");
  const int start = cache.length(0);
  for (int l = 1; l < c.n_layers; ++l) {
    if (cache.length(l) != start) fail("memory: splicing needs every layer at the same length");
  }
  int total = 0;
  for (size_t e : entries) {
    store.verify_entry(e);
    total += store.entry(e).kv_rows;
  }
  if (start + total > cache.context_length())
    fail("memory: {} spliced tokens after {} do not fit in the context of {} (use fewer entries or a larger -c)",
         total, start, cache.context_length());

  const RopeFrequencies freq = rope_frequencies(c);
  const int kv = c.kv_dim();
  std::vector<float> k(static_cast<size_t>(kv)), v(static_cast<size_t>(kv)), angles(static_cast<size_t>(c.rope_dim));
  int pos = start;
  for (size_t e : entries) {
    const int n = store.entry(e).kv_rows;  // the tokens', or a compressed store's slots
    // The rotation by the entry's start: magnitude 1, the stored key carries any YaRN scale.
    rope_angles(c.rope_dim, pos, freq.inv_freq.data(), 1.0f, angles.data());
    for (int l = 0; l < c.n_layers; ++l) {
      const uint8_t* keys = store.keys(e, l);
      const uint8_t* values = store.values(e, l);
      for (int j = 0; j < n; ++j) {
        dequantize_row(store.types().k, keys + static_cast<size_t>(j) * store.key_row_bytes(), k.data(), kv);
        dequantize_row(store.types().v, values + static_cast<size_t>(j) * store.value_row_bytes(), v.data(), kv);
        if (correct_positions) rope_rotate(k.data(), c.n_kv_heads, c.head_dim, c.rope_dim, angles.data(), c.rope_layout);
        cache.store(l, pos + j, k.data(), v.data());
      }
    }
    for (int l = 0; l < c.n_layers; ++l) cache.extend(l, n);
    pos += n;
  }
}

}  // namespace skiff::memory

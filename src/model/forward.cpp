#include "model/forward.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "kernels/attention.h"
#include "kernels/dot.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace skiff {

Context::Context(const Model& model, int context_length, int n_threads, KvTypes kv_types)
    : Context(model, context_length, nullptr, n_threads, {0, model.config.n_layers}, kv_types) {}

Context::Context(const Model& model, int context_length, ThreadPool& shared_pool, KvTypes kv_types)
    : Context(model, context_length, &shared_pool, 0, {0, model.config.n_layers}, kv_types) {}

Context::Context(const Model& model, int context_length, int n_threads, StoredLayers stored, KvTypes kv_types)
    : Context(model, context_length, nullptr, n_threads, stored, kv_types) {}

Context::Context(const Model& model, int context_length, ThreadPool& shared_pool, StoredLayers stored, KvTypes kv_types)
    : Context(model, context_length, &shared_pool, 0, stored, kv_types) {}

Context::Context(const Model& model, int context_length, ThreadPool* shared_pool, int n_threads, StoredLayers stored,
                 KvTypes kv_types)
    : model_(model),
      cache_(model.config.n_layers,
             context_length > 0 ? context_length : std::min(model.config.context_length, kDefaultContext),
             model.config.kv_dim(), stored.first, stored.last, kv_types, model.config.head_dim),
      owned_pool_(shared_pool ? nullptr : std::make_unique<ThreadPool>(n_threads)),
      pool_(shared_pool ? shared_pool : owned_pool_.get()),
      rope_freq_(rope_frequencies(model.config)) {
  if (context_length > model.config.context_length)
    fail("context length {} exceeds the model's {}", context_length, model.config.context_length);
}

void Context::reserve_rope(int n) {
  if (n <= rope_rows_) return;
  const ModelConfig& c = model_.config;
  // Grow geometrically (decoding adds one position at a time), never past the context.
  const int rows = std::min(context_length(), std::max(n, 2 * rope_rows_));
  rope_width_ = static_cast<size_t>(c.rope_dim);
  rope_.resize(static_cast<size_t>(rows) * rope_width_);
  for (int pos = rope_rows_; pos < rows; ++pos)
    rope_angles(c.rope_dim, pos, rope_freq_.inv_freq.data(), rope_freq_.mscale,
                rope_.data() + static_cast<size_t>(pos) * rope_width_);
  rope_rows_ = rows;
}

Context::Scratch& Context::scratch(int64_t T) {
  if (T > scratch_T_) {
    const ModelConfig& c = model_.config;
    auto size = [&](std::vector<float>& v, int64_t width) { v.assign(static_cast<size_t>(T * width), 0.0f); };
    size(scratch_.norm, c.dim);
    size(scratch_.q, c.q_dim());
    size(scratch_.k, c.kv_dim());
    size(scratch_.v, c.kv_dim());
    size(scratch_.attn, c.q_dim());
    size(scratch_.proj, c.dim);
    size(scratch_.gate, c.ffn_dim);
    size(scratch_.up, c.ffn_dim);
    scratch_T_ = T;
  }
  // One row of attention scores per thread.
  size_t want = static_cast<size_t>(pool_->size()) * static_cast<size_t>(context_length());
  if (scratch_.scores.size() < want) scratch_.scores.assign(want, 0.0f);
  return scratch_;
}

void embed(const Model& model, std::span<const int32_t> tokens, float* hidden) {
  const int dim = model.config.dim;
  for (size_t t = 0; t < tokens.size(); ++t) {
    int32_t id = tokens[t];
    if (id < 0 || id >= model.config.vocab_size)
      fail("token id {} is outside the vocabulary (size {})", id, model.config.vocab_size);
    dequantize_tensor_row(model.token_embd, id, hidden + t * dim);
  }
}

namespace {

// Calls fn(begin, end) over [0, n) items of `item_size` values each, shared among the
// pool's threads when there is enough work (prefill); no result depends on the split.
template <class Fn>
void split_items(ThreadPool& pool, int64_t n, int64_t item_size, Fn&& fn) {
  constexpr int64_t kParallelValues = int64_t{1} << 16;
  if (n * item_size < kParallelValues || pool.size() == 1) {
    fn(0, n);
    return;
  }
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) { fn(b, e); });
}

// x[i] += y[i] for i < n.
void add_rows(ThreadPool& pool, float* x, const float* y, int64_t n) {
  split_items(pool, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] += y[i];
  });
}

// out[t] = rmsnorm(x[t]) for T rows of dim.
void rmsnorm_rows(float* out, const float* x, const float* weight, int64_t T, int dim, float eps, ThreadPool& pool) {
  split_items(pool, T, dim, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) rmsnorm(out + t * dim, x + t * dim, weight, dim, eps);
  });
}

// Query heads per attention job: the whole group of a KV head, or, with fewer (row, KV head)
// pairs than threads (decode on a many-core machine), parts of a multiple of 4 heads, which
// the kernel computes exactly as in one call.
int heads_per_job(int group, int64_t pairs, int threads) {
  if (pairs >= threads || group <= 4) return group;
  const int64_t parts = std::min<int64_t>((group + 3) / 4, (threads + pairs - 1) / pairs);
  return static_cast<int>(((group + parts - 1) / parts + 3) / 4 * 4);
}

// Causal grouped-query attention of each sequence's new rows against its own cache: rows
// [row0, row0 + rows) of q/out belong to seqs[i], at positions pos0[i] .. + rows - 1. A job is
// a (row, KV head) pair: the query heads sharing that KV head read its keys and values together
// (attend_heads_kv); scores_all holds scores_stride floats per thread (group * positions).
void attention(std::span<const BatchSeq> seqs, const int* pos0, int layer, const float* q, float* out,
               float* scores_all, int64_t scores_stride, ThreadPool& pool) {
  const ModelConfig& c = seqs[0].ctx->model().config;
  const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  int64_t total = 0, work = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    total += seqs[i].rows;
    work += seqs[i].rows * c.n_heads * static_cast<int64_t>(pos0[i] + seqs[i].rows) * hd;
  }
  const int64_t pairs = total * c.n_kv_heads;
  const int part = heads_per_job(group, pairs, pool.size());
  const int parts = (group + part - 1) / part;
  auto body = [&](int64_t begin, int64_t end, int thread) {
    float* scores = scores_all + thread * scores_stride;
    size_t i = 0;
    int64_t first_row = 0;  // first row of seqs[i], the sequence of the job's row
    for (int64_t job = begin; job < end; ++job) {
      const int64_t pair = job / parts;
      const int64_t row = pair / c.n_kv_heads;
      while (row >= first_row + seqs[i].rows) first_row += seqs[i++].rows;
      const KvCache& cache = seqs[i].ctx->cache();
      const int kv_head = static_cast<int>(pair % c.n_kv_heads);
      const int first_head = static_cast<int>(job % parts) * part;
      const int heads = std::min(part, group - first_head);
      const int64_t q_off = row * c.q_dim() + (static_cast<int64_t>(kv_head) * group + first_head) * hd;
      // Causal: up to and including itself, from the row's first visible position (block attention).
      const int first = seqs[i].first_visible ? seqs[i].first_visible[row - first_row] : 0;
      const int n_pos = pos0[i] + static_cast<int>(row - first_row) + 1 - first;
      // A head's slice starts kv_head * hd values into each row: whole blocks (KvCache checks).
      const KvTypes types = cache.types();
      const KvSlice keys{cache.key_row(layer, first) + row_bytes(types.k, int64_t{kv_head} * hd), types.k,
                         static_cast<int64_t>(cache.key_row_bytes())};
      const KvSlice values{cache.value_row(layer, first) + row_bytes(types.v, int64_t{kv_head} * hd), types.v,
                           static_cast<int64_t>(cache.value_row_bytes())};
      attend_heads_kv(q + q_off, keys, values, heads, n_pos, hd, scale, scores, out + q_off);
    }
  };
  // Small attention (short contexts, tiny models) runs on the calling thread: waking the
  // pool costs more than the work.
  if (work < (int64_t{1} << 20)) body(0, pairs * parts, 0);
  else pool.parallel_for(pairs * parts, body);
}

}  // namespace

void forward(Context& ctx, float* hidden, int64_t T, int first_layer, int last_layer) {
  const BatchSeq seq{&ctx, T};
  forward_batch({&seq, 1}, hidden, first_layer, last_layer);
}

namespace {

// Every check of a batched pass, before anything is written: the same model, pool, stored
// layers and remote for every sequence; [first, last) stored here or remote; room in every
// layer's cache. Returns the rows.
int64_t check_batch(std::span<const BatchSeq> seqs, int first_layer, int last_layer) {
  Context& ctx0 = *seqs[0].ctx;
  const ModelConfig& c = ctx0.model().config;
  if (first_layer < 0 || last_layer > c.n_layers || first_layer > last_layer)
    fail("layer range [{}, {}) is outside the model's {} layers", first_layer, last_layer, c.n_layers);
  const KvCache& cache0 = ctx0.cache();
  int64_t T = 0;
  for (const BatchSeq& seq : seqs) {
    const KvCache& cache = seq.ctx->cache();
    if (&seq.ctx->model() != &ctx0.model() || &seq.ctx->pool() != &ctx0.pool() ||
        seq.ctx->remote_layers() != ctx0.remote_layers() || cache.first_stored() != cache0.first_stored() ||
        cache.last_stored() != cache0.last_stored())
      fail("forward_batch: every sequence must use the same model, thread pool and stages");
    const int held_to = seq.ctx->remote_layers() ? c.n_layers : cache.last_stored();
    if (first_layer < last_layer && (first_layer < cache.first_stored() || last_layer > held_to))
      fail("layers [{}, {}) are not all held by this process (it holds [{}, {}))", first_layer, last_layer,
           cache.first_stored(), cache.last_stored());
    for (int l = first_layer; l < last_layer; ++l) {
      if (cache.length(l) + seq.rows > cache.context_length())
        fail("context length {} exceeded: layer {} holds {} positions and {} more were asked for",
             cache.context_length(), l, cache.length(l), seq.rows);
    }
    T += seq.rows;
  }
  return T;
}

// Layers [first_layer, last_layer), all stored in this process (checked).
void forward_local(std::span<const BatchSeq> seqs, float* hidden, int64_t T, int first_layer, int last_layer) {
  Context& ctx0 = *seqs[0].ctx;
  const Model& m = ctx0.model();
  const ModelConfig& c = m.config;
  int max_context = 0;
  for (const BatchSeq& seq : seqs) max_context = std::max(max_context, seq.ctx->context_length());
  FfnProvider* ffn = ctx0.ffn_provider();
  if (ffn && seqs.size() > 1) fail("forward_batch: a custom FFN provider runs one sequence at a time");
  Context::Scratch& s = ctx0.scratch(T);
  ThreadPool& pool = ctx0.pool();
  const int64_t scores_stride = int64_t{max_context} * (c.n_heads / c.n_kv_heads);
  if (s.scores.size() < static_cast<size_t>(pool.size()) * static_cast<size_t>(scores_stride))
    s.scores.assign(static_cast<size_t>(pool.size()) * static_cast<size_t>(scores_stride), 0.0f);
  const int dim = c.dim, kv_dim = c.kv_dim(), q_dim = c.q_dim();
  std::vector<int> pos0(seqs.size());

  for (int l = first_layer; l < last_layer; ++l) {
    const LayerWeights& w = m.layers[static_cast<size_t>(l)];

    // Attention block: x += wo(attention(rope(wq h), rope(wk h), wv h)), h = rmsnorm(x).
    rmsnorm_rows(s.norm.data(), hidden, w.attn_norm.f32(), T, dim, c.rms_eps, pool);
    const MatmulJob qkv[] = {{&w.wq, s.q.data()}, {&w.wk, s.k.data()}, {&w.wv, s.v.data()}};
    matmul_many(qkv, s.norm.data(), T, pool);
    int64_t row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      Context& ctx = *seqs[i].ctx;
      KvCache& cache = ctx.cache();
      pos0[i] = cache.length(l);
      ctx.reserve_rope(pos0[i] + static_cast<int>(seqs[i].rows));
      for (int64_t t = 0; t < seqs[i].rows; ++t, ++row) {
        const int pos = pos0[i] + static_cast<int>(t);
        rope_rotate(&s.q[row * q_dim], c.n_heads, c.head_dim, c.rope_dim, ctx.rope_row(pos), c.rope_layout);
        rope_rotate(&s.k[row * kv_dim], c.n_kv_heads, c.head_dim, c.rope_dim, ctx.rope_row(pos), c.rope_layout);
        cache.store(l, pos, &s.k[row * kv_dim], &s.v[row * kv_dim]);
      }
      cache.extend(l, static_cast<int>(seqs[i].rows));
    }
    attention(seqs, pos0.data(), l, s.q.data(), s.attn.data(), s.scores.data(), scores_stride, pool);
    matmul(w.wo, s.attn.data(), T, s.proj.data(), pool);
    add_rows(pool, hidden, s.proj.data(), T * dim);

    // Feed-forward block: x += down(act(gate h) * up h), h = rmsnorm(x), act = SiLU or ReLU.
    rmsnorm_rows(s.norm.data(), hidden, w.ffn_norm.f32(), T, dim, c.rms_eps, pool);
    if (ffn) {
      ffn->run(ctx0, l, s.norm.data(), T, s.proj.data());
    } else {
      const MatmulJob gate_up[] = {{&w.ffn_gate, s.gate.data()}, {&w.ffn_up, s.up.data()}};
      matmul_many(gate_up, s.norm.data(), T, pool);
      split_items(pool, T * c.ffn_dim, 1, [&](int64_t b, int64_t e) {
        if (c.ffn_activation == FfnActivation::kRelu) reglu(s.gate.data() + b, s.up.data() + b, e - b);
        else swiglu(s.gate.data() + b, s.up.data() + b, e - b);
      });
      matmul(w.ffn_down, s.gate.data(), T, s.proj.data(), pool);
    }
    add_rows(pool, hidden, s.proj.data(), T * dim);
  }
}

}  // namespace

int64_t start_forward_batch(std::span<const BatchSeq> seqs, float* hidden, int first_layer, int last_layer) {
  if (seqs.empty()) return kNoTicket;
  const int64_t T = check_batch(seqs, first_layer, last_layer);
  const int split = seqs[0].ctx->cache().last_stored();
  RemoteLayers* remote = seqs[0].ctx->remote_layers();
  if (first_layer < split) forward_local(seqs, hidden, T, first_layer, std::min(last_layer, split));
  if (!remote || last_layer <= split) return kNoTicket;
  return remote->submit(seqs, hidden, std::max(first_layer, split), last_layer);
}

void finish_forward_batch(std::span<const BatchSeq> seqs, int64_t ticket, float* hidden) {
  if (ticket == kNoTicket) return;
  seqs[0].ctx->remote_layers()->wait(ticket, seqs, hidden);
}

void forward_batch(std::span<const BatchSeq> seqs, float* hidden, int first_layer, int last_layer) {
  finish_forward_batch(seqs, start_forward_batch(seqs, hidden, first_layer, last_layer), hidden);
}

void forward_batch_entering(std::span<const BatchSeq> seqs, std::span<const int> entry_layers, float* hidden,
                            int last_layer) {
  if (entry_layers.size() != seqs.size())
    fail("forward_batch_entering: {} entry layers for {} sequences", entry_layers.size(), seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (entry_layers[i] < 0 || entry_layers[i] > last_layer || (i > 0 && entry_layers[i] < entry_layers[i - 1]))
      fail("forward_batch_entering: sequence {} enters at layer {} (entries must not decrease, at most {})", i,
           entry_layers[i], last_layer);
  }
  // Layers [layer, next) run over the sequences that have entered by `layer`: a prefix.
  size_t active = 0;
  for (int layer = seqs.empty() ? last_layer : entry_layers[0]; layer < last_layer;) {
    while (active < seqs.size() && entry_layers[active] <= layer) ++active;
    const int next = active < seqs.size() ? entry_layers[active] : last_layer;
    forward_batch(seqs.subspan(0, active), hidden, layer, next);
    layer = next;
  }
}

void forward_batch_leaving(std::span<const BatchSeq> seqs, std::span<const int> exit_layers, float* hidden) {
  if (exit_layers.size() != seqs.size())
    fail("forward_batch_leaving: {} exit layers for {} sequences", exit_layers.size(), seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int L = seqs[i].ctx->model().config.n_layers;
    if (exit_layers[i] < 0 || exit_layers[i] > L || (i > 0 && exit_layers[i] > exit_layers[i - 1]))
      fail("forward_batch_leaving: sequence {} leaves at layer {} (exits must not increase, at most {})", i,
           exit_layers[i], L);
  }
  // Layers [layer, next) run over the sequences still in at `layer`: a prefix.
  size_t active = seqs.size();
  for (int layer = 0;; ) {
    while (active > 0 && exit_layers[active - 1] <= layer) --active;
    if (active == 0) break;
    const int next = exit_layers[active - 1];
    forward_batch(seqs.subspan(0, active), hidden, layer, next);
    layer = next;
  }
}

void copy_sequence_prefix(const Context& from, Context& to, int n) {
  to.cache().copy_prefix_from(from.cache(), n);
  if (to.remote_layers() != from.remote_layers()) fail("copy_sequence_prefix: the contexts are in different stages");
  if (RemoteLayers* remote = to.remote_layers()) remote->copy_prefix(from, to, n);
}

void forward_masked(Context& ctx, float* hidden, int64_t T, int first_layer, int last_layer,
                    std::span<const int32_t> first_visible) {
  const KvCache& cache = ctx.cache();
  if (static_cast<int64_t>(first_visible.size()) != T)
    fail("block attention: {} first-visible positions for {} rows", first_visible.size(), T);
  if (first_layer < last_layer) {
    const int pos0 = cache.length(first_layer);
    for (int l = first_layer; l < last_layer; ++l) {
      if (cache.length(l) != pos0)
        fail("block attention needs every layer at the same length (layer {} holds {}, layer {} holds {})",
             first_layer, pos0, l, cache.length(l));
    }
    for (int64_t t = 0; t < T; ++t) {
      if (first_visible[static_cast<size_t>(t)] < 0 || first_visible[static_cast<size_t>(t)] > pos0 + t)
        fail("block attention: row {} (position {}) cannot start attending at position {}", t, pos0 + t,
             first_visible[static_cast<size_t>(t)]);
    }
  }
  if (ctx.remote_layers() && last_layer > cache.last_stored())
    fail("block attention runs in one process: layers {}.. are in another pipeline stage", cache.last_stored());
  const BatchSeq seq{&ctx, T, first_visible.data()};
  check_batch({&seq, 1}, first_layer, last_layer);
  forward_local({&seq, 1}, hidden, T, first_layer, last_layer);
}

void compute_logits(Context& ctx, const float* hidden, int64_t T, float* logits, const TensorView* head) {
  const Model& m = ctx.model();
  const int dim = m.config.dim;
  Context::Scratch& s = ctx.scratch(T);
  for (int64_t t = 0; t < T; ++t)
    rmsnorm(&s.norm[t * dim], hidden + t * dim, m.output_norm.f32(), dim, m.config.rms_eps);
  matmul(head ? *head : m.output, s.norm.data(), T, logits, ctx.pool());
}

std::vector<float> eval_tokens(Context& ctx, std::span<const int32_t> tokens) {
  const ModelConfig& c = ctx.model().config;
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<float> hidden(static_cast<size_t>(T * c.dim));
  embed(ctx.model(), tokens, hidden.data());
  forward(ctx, hidden.data(), T, 0, c.n_layers);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  compute_logits(ctx, hidden.data() + (T - 1) * c.dim, 1, logits.data());
  return logits;
}

}  // namespace skiff

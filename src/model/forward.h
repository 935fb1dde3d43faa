// The forward pass over a RANGE of layers, for T positions at once (T = 1: decode; T > 1:
// prefill or speculative verification). Hidden states go in and come out, so a caller can
// stop after any layer and ask for logits there (early exit), or resume at a later layer
// from states it kept (self-speculative verification), or hand them to another process
// (pipeline stages).
//
//   autoregressive:  embed -> forward(0, L) -> logits
//   early exit:      embed -> forward(0, E) -> logits
//
// Each layer l places its T inputs at positions cache.length(l) .. + T - 1.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/thread_pool.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/rope.h"

namespace skiff {

class Context;

// Takes over the feed-forward block of every layer (LLM in a Flash streams the FFN neurons
// from disk instead of reading dense matrices). A layer's FFN weights may then be absent.
class FfnProvider {
 public:
  virtual ~FfnProvider() = default;
  // out[T][dim] = down(act(gate x) * up x) for layer `layer`, x[T][dim] already normalized.
  virtual void run(Context& ctx, int layer, const float* x, int64_t T, float* out) = 0;
};

// One sequence's share of a batched forward pass: `rows` consecutive rows of the hidden
// states, appended to ctx's cache at its own positions.
struct BatchSeq {
  Context* ctx;
  int64_t rows;
  // Block attention (forward_masked): row t attends to positions [first_visible[t], its
  // own] only. nullptr: causal over the whole cache.
  const int32_t* first_visible = nullptr;
};

// Runs the layers that live in other processes (pipeline stages, src/dist/pipeline.h). A
// context whose cache stores only layers [0, k) hands forward()'s layers k.. to it; the
// decode loops above do not know. Batches go out without waiting (submit), so that a
// server can keep several batches of different sequences in flight through the stages.
class RemoteLayers {
 public:
  virtual ~RemoteLayers() = default;
  // Sends the rows of `seqs` (contexts attached to this RemoteLayers, at most one pending
  // batch each) through layers [first_layer, last_layer), copying hidden[T][dim]; returns
  // the ticket to wait on.
  virtual int64_t submit(std::span<const BatchSeq> seqs, const float* hidden, int first_layer, int last_layer) = 0;
  // Waits for a submitted batch: hidden[T][dim] as the local layers would leave it, and
  // every sequence's cache lengths of those layers extended by its rows.
  virtual void wait(int64_t ticket, std::span<const BatchSeq> seqs, float* hidden) = 0;
  // `to`'s layers elsewhere take the first n positions of `from`'s (a shared prompt).
  virtual void copy_prefix(const Context& from, Context& to, int n) = 0;
};

// One sequence being decoded: its KV cache, a thread pool and scratch space.
class Context {
 public:
  // context_length <= 0 uses the model's, at most kDefaultContext (as llama.cpp's default
  // n_ctx: Llama 3.1 declares 131072 positions, whose F32 KV cache would not fit in memory);
  // more than the model's is an error.
  static constexpr int kDefaultContext = 4096;
  // kv_types: the KV cache's element types (default F32).
  Context(const Model& model, int context_length = 0, int n_threads = 0, KvTypes kv_types = {});
  // The same with a thread pool shared with other contexts (a server's slots): contexts that
  // are forwarded together (forward_batch) must share one pool.
  Context(const Model& model, int context_length, ThreadPool& shared_pool, KvTypes kv_types = {});
  // A pipeline stage's context: keys and values stored for layers [first_stored,
  // last_stored) only (KvCache); forward() on other layers needs set_remote_layers.
  struct StoredLayers {
    int first, last;
  };
  Context(const Model& model, int context_length, int n_threads, StoredLayers stored, KvTypes kv_types = {});
  Context(const Model& model, int context_length, ThreadPool& shared_pool, StoredLayers stored, KvTypes kv_types = {});

  const Model& model() const { return model_; }
  KvCache& cache() { return cache_; }
  const KvCache& cache() const { return cache_; }
  ThreadPool& pool() { return *pool_; }
  int context_length() const { return cache_.context_length(); }
  // nullptr: the dense FFN of the model's weights (default).
  void set_ffn_provider(FfnProvider* ffn) { ffn_ = ffn; }
  FfnProvider* ffn_provider() const { return ffn_; }
  // nullptr (default): every layer is computed here, and must be stored in the cache.
  void set_remote_layers(RemoteLayers* remote) { remote_ = remote; }
  RemoteLayers* remote_layers() const { return remote_; }

  // Scratch buffers sized for T positions (grown on demand, never shrunk).
  struct Scratch {
    std::vector<float> norm, q, k, v, attn, proj, gate, up, scores;
  };
  Scratch& scratch(int64_t T);
  // RoPE angles of positions 0 .. n-1 (rope_angles: n_rot cos/sin values each), computed
  // once per position as the sequence grows; row(pos) is valid until the next reserve.
  void reserve_rope(int n);
  const float* rope_row(int pos) const { return rope_.data() + static_cast<size_t>(pos) * rope_width_; }

 private:
  Context(const Model& model, int context_length, ThreadPool* shared_pool, int n_threads, StoredLayers stored,
          KvTypes kv_types);

  const Model& model_;
  KvCache cache_;
  std::unique_ptr<ThreadPool> owned_pool_;
  ThreadPool* pool_;
  Scratch scratch_;
  int64_t scratch_T_ = 0;
  RopeFrequencies rope_freq_;
  std::vector<float> rope_;  // [positions][rope_dim]
  int rope_rows_ = 0;
  size_t rope_width_ = 0;
  FfnProvider* ffn_ = nullptr;
  RemoteLayers* remote_ = nullptr;
};

// hidden[T][dim] = embeddings of the tokens. Throws Error for an id outside the vocabulary.
void embed(const Model& model, std::span<const int32_t> tokens, float* hidden);

// Runs layers [first_layer, last_layer) over hidden[T][dim] in place, appending T positions
// to each of those layers' KV cache. Throws Error when a layer's cache would pass the
// context length (nothing is written then). Layers past the cache's stored ones go to the
// context's RemoteLayers (pipeline stages), after the local ones.
void forward(Context& ctx, float* hidden, int64_t T, int first_layer, int last_layer);

// forward() with block attention: row t attends only to cache positions
// [first_visible[t], pos(t)] of every layer (pos(t) = the layer's length before the call + t).
// Memory-augmented generation reads independently encoded entries this way: an entry's rows
// see only the entry, the question's rows see everything (src/memory/). Throws Error when
// first_visible has not T values, a value lies outside [0, pos(t)], or the layers' lengths
// differ. Local layers only (no RemoteLayers).
void forward_masked(Context& ctx, float* hidden, int64_t T, int first_layer, int last_layer,
                    std::span<const int32_t> first_visible);

// forward() for several sequences at once (continuous batching): each matrix is read once
// for the rows of every sequence, attention runs per sequence against its own cache. Every
// ctx must share one thread pool, the same model, the same stored layers and RemoteLayers.
// Results are bit-identical to forwarding each sequence alone (matmul is batch-invariant).
// Throws Error, before anything is written, when a sequence would pass its context length
// or a layer is neither stored here nor remote.
void forward_batch(std::span<const BatchSeq> seqs, float* hidden, int first_layer, int last_layer);

// forward_batch where sequence i enters at layer entry_layers[i] (all leave at last_layer):
// self-speculative verification, whose drafts already went through the early layers, batched
// with sequences that start at layer 0. The entry layers must not decrease along seqs, so that
// every layer range runs over a prefix of the rows. Throws Error for a decreasing or
// out-of-range entry layer, or a mismatched count.
void forward_batch_entering(std::span<const BatchSeq> seqs, std::span<const int> entry_layers, float* hidden,
                            int last_layer);

// forward_batch where sequence i runs layers [0, exit_layers[i]): several self-speculating
// sequences' draft steps at their own exit layers in one batch. The exit layers must not
// increase along seqs, so that every layer range runs over a prefix of the rows. Throws
// Error for an increasing or out-of-range exit layer, or a mismatched count.
void forward_batch_leaving(std::span<const BatchSeq> seqs, std::span<const int> exit_layers, float* hidden);

// forward_batch in two halves, for pipeline stages: start runs the local layers and hands
// the later ones to the RemoteLayers without waiting, finish waits for them (seqs and
// hidden as given to start, untouched in between). kNoTicket: every layer was local.
constexpr int64_t kNoTicket = -1;
int64_t start_forward_batch(std::span<const BatchSeq> seqs, float* hidden, int first_layer, int last_layer);
void finish_forward_batch(std::span<const BatchSeq> seqs, int64_t ticket, float* hidden);

// `to` takes the first n positions of `from`'s cache (every layer, here and remote): a
// sequence sharing another's prompt (n > 1 choices).
void copy_sequence_prefix(const Context& from, Context& to, int n);

// logits[T][vocab] = output(rmsnorm(hidden) * output_norm): valid after ANY layer. `head`
// replaces the output matrix (self-speculation's quantized draft head).
void compute_logits(Context& ctx, const float* hidden, int64_t T, float* logits, const TensorView* head = nullptr);

// Convenience: embed + all layers + logits for the last position only.
std::vector<float> eval_tokens(Context& ctx, std::span<const int32_t> tokens);

}  // namespace skiff

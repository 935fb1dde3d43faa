#include "flash/flash_ffn.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "base/error.h"
#include "flash/budget.h"
#include "flash/bundle_math.h"
#include "kernels/matmul.h"

namespace skiff::flash {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Conservative bytes of one layer's NeuronCache of `capacity` slots (slot buffer, alignment
// slack, slot maps): the plan must never promise less than the caches take.
uint64_t layer_cache_bytes(int ffn_dim, int capacity, uint64_t slot_bytes) {
  return static_cast<uint64_t>(capacity) * (slot_bytes + 16) + static_cast<uint64_t>(ffn_dim) * 4 + 128;
}

}  // namespace

// Applies op(field of a, same field of b) to every counter, so += and - cannot drift apart.
template <class Op>
void each_counter(FlashStats& a, const FlashStats& b, Op op) {
  op(a.tokens, b.tokens);
  op(a.io_wait_ms, b.io_wait_ms);
  op(a.memory_ms, b.memory_ms);
  op(a.compute_ms, b.compute_ms);
  op(a.bytes_read, b.bytes_read);
  op(a.bundle_bytes, b.bundle_bytes);
  op(a.cached, b.cached);
  op(a.reads, b.reads);
  op(a.active, b.active);
  op(a.considered, b.considered);
  op(a.hits, b.hits);
  op(a.misses, b.misses);
  op(a.true_active, b.true_active);
  op(a.predicted_true, b.predicted_true);
}

FlashStats& FlashStats::operator+=(const FlashStats& o) {
  each_counter(*this, o, [](auto& x, const auto& y) { x += y; });
  return *this;
}

FlashStats FlashStats::operator-(const FlashStats& o) const {
  FlashStats d = *this;
  each_counter(d, o, [](auto& x, const auto& y) { x -= y; });
  return d;
}

uint64_t cached_bundle_bytes(const PackHeader& header, FlashOptions::Mode mode) {
  return (mode == FlashOptions::Mode::kThreshold ? 2 : 3) * header.row_bytes;
}

uint64_t resident_weight_bytes(const Model& model, const FlashOptions& options) {
  const FlashOptions::Mode mode = options.mode;
  uint64_t total = model.output_norm.nbytes() + model.output.nbytes();
  for (const LayerWeights& w : model.layers) {
    total += w.attn_norm.nbytes() + w.wq.nbytes() + w.wk.nbytes() + w.wv.nbytes() + w.wo.nbytes();
    total += w.ffn_norm.nbytes() + w.ffn_up.nbytes() + w.ffn_down.nbytes();
    if (mode == FlashOptions::Mode::kThreshold) total += w.ffn_gate.nbytes();
  }
  if (mode == FlashOptions::Mode::kPredictor && options.predictors) total += options.predictors->bytes();
  return total;  // a tied output IS token_embd: counted once, as the output
}

uint64_t dense_model_bytes(const Model& model, const PackHeader& header) {
  uint64_t total = model.weight_bytes();
  for (const LayerWeights& w : model.layers) total -= w.ffn_gate.nbytes();
  return total + static_cast<uint64_t>(header.n_layers) * static_cast<uint64_t>(header.ffn_dim) *
                     3 * header.row_bytes;
}

FlashPlan plan_memory(const Model& model, const PackHeader& header, const FlashOptions& options,
                      uint64_t budget, uint64_t context_bytes) {
  FlashPlan p;
  p.budget = budget;
  p.resident = resident_weight_bytes(model, options);
  p.context = context_bytes;
  p.io_buffers = DirectReader::max_buffer_bytes(options.io);
  p.slot_bytes = round_up(cached_bundle_bytes(header, options.mode), 64);
  const int F = header.ffn_dim, L = header.n_layers;
  const int min_capacity = std::min(F, 64);
  const uint64_t fixed = p.resident + p.context + p.io_buffers;
  p.minimum = fixed + static_cast<uint64_t>(L) * layer_cache_bytes(F, min_capacity, p.slot_bytes);
  if (budget == 0) {
    p.capacity = F;
  } else {
    if (budget < p.minimum) {
      fail("--mem-budget {} is below the minimum {}: resident weights {}, KV cache and scratch {}, "
           "I/O buffers {}, {} neurons cached per layer {}",
           format_bytes(budget), format_bytes(p.minimum), format_bytes(p.resident),
           format_bytes(p.context), format_bytes(p.io_buffers), min_capacity,
           format_bytes(p.minimum - fixed));
    }
    const uint64_t per_layer = (budget - fixed) / static_cast<uint64_t>(L);
    const uint64_t base = layer_cache_bytes(F, 0, p.slot_bytes);
    p.capacity = static_cast<int>(std::min<uint64_t>(F, (per_layer - base) / (p.slot_bytes + 16)));
  }
  p.cache = static_cast<uint64_t>(L) * layer_cache_bytes(F, p.capacity, p.slot_bytes);
  return p;
}

FlashFfn::FlashFfn(const Model& model, const PackHeader& header, const std::string& bundles_file,
                   const FlashOptions& options, int capacity)
    : model_(model), header_(header), options_(options) {
  const ModelConfig& c = model.config;
  if (options.window < 1) fail("--window must be at least 1 (got {})", options.window);
  if (!(options.threshold >= 0.0f)) fail("the flash threshold must be >= 0");
  if (options.sparsity >= 1.0f) fail("the flash sparsity must be below 1 (got {})", options.sparsity);
  if (capacity < 1 || capacity > header.ffn_dim)
    fail("neuron cache capacity {} is outside 1..{}", capacity, header.ffn_dim);
  if (options.mode == FlashOptions::Mode::kThreshold) {
    for (int l = 0; l < c.n_layers; ++l)
      if (model.layers[static_cast<size_t>(l)].ffn_gate.empty())
        fail("the gate threshold needs layer {}'s ffn_gate in the resident set", l);
  }
  if (options.mode == FlashOptions::Mode::kPredictor) {
    const Predictors* p = options.predictors;
    if (p == nullptr) fail("flash: predictor mode without predictors");
    if (static_cast<int>(p->layers.size()) != c.n_layers || p->dim != header.dim || p->ffn_dim != header.ffn_dim)
      fail("flash: the predictors do not fit the pack's shape");
  }
  read_bytes_ = cached_bundle_bytes(header, options.mode);
  IoOptions io = options.io;
  if (options.gap_one_bundle) io.max_gap = 2 * header.stride - read_bytes_;
  reader_ = std::make_unique<DirectReader>(bundles_file, io);
  caches_.reserve(static_cast<size_t>(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l)
    caches_.emplace_back(header.ffn_dim, capacity, round_up(read_bytes_, 64));
  thresholds_.assign(static_cast<size_t>(c.n_layers), options.threshold);
  calibrated_.assign(static_cast<size_t>(c.n_layers), options.sparsity < 0.0f);
  step_.assign(static_cast<size_t>(c.n_layers), 0);
}

uint64_t FlashFfn::cache_bytes() const {
  uint64_t total = reader_->buffer_bytes();
  for (const NeuronCache& cache : caches_) total += cache.bytes();
  return total;
}

void FlashFfn::clear_caches() {
  for (NeuronCache& cache : caches_) cache.clear();
}

void FlashFfn::preload_all() {
  for (int l = 0; l < header_.n_layers; ++l) {
    NeuronCache& cache = caches_[static_cast<size_t>(l)];
    if (cache.capacity() < header_.ffn_dim) fail("preloading needs room for every neuron");
    cache.clear();
    std::vector<int> all(static_cast<size_t>(header_.ffn_dim));
    for (int i = 0; i < header_.ffn_dim; ++i) all[static_cast<size_t>(i)] = i;
    submit_reads(l, all);
    reader_->wait();
  }
}

// Inserts `neurons` (absent) into layer's cache with last use "next step" (so they are
// protected from eviction until computed) and starts reading them.
void FlashFfn::submit_reads(int layer, const std::vector<int>& neurons) {
  NeuronCache& cache = caches_[static_cast<size_t>(layer)];
  const int64_t protect = step_[static_cast<size_t>(layer)] + 1;
  requests_.clear();
  for (int id : neurons) {
    const int slot = cache.insert(id, protect);
    requests_.push_back({header_.offset(layer, id), read_bytes_, cache.data(slot)});
  }
  stats_.bundle_bytes += requests_.size() * read_bytes_;
  if (!requests_.empty()) reader_->submit(requests_);
}

void FlashFfn::decide(Context& ctx, int layer, const float* x, const float* gate, int64_t T) {
  const int F = header_.ffn_dim;
  active_.clear();
  if (options_.mode == FlashOptions::Mode::kDense) {
    for (int i = 0; i < F; ++i) active_.push_back(i);
    return;
  }
  if (options_.mode == FlashOptions::Mode::kPredictor) {
    const LayerPredictor& p = options_.predictors->layers[static_cast<size_t>(layer)];
    gate_.resize(static_cast<size_t>(T * F));
    predict_scores(p, header_.dim, F, x, T, gate_.data(), hidden_, ctx.pool());
    chosen_.resize(static_cast<size_t>(T * F));
    for (size_t k = 0; k < chosen_.size(); ++k) chosen_[k] = gate_[k] > p.cutoff ? 1 : 0;
    for (int i = 0; i < F; ++i) {
      for (int64_t t = 0; t < T; ++t) {
        if (chosen_[static_cast<size_t>(t * F + i)]) {
          active_.push_back(i);
          break;
        }
      }
    }
    return;
  }
  const FfnActivation act = model_.config.ffn_activation;
  const size_t l = static_cast<size_t>(layer);
  if (!calibrated_[l]) {
    // Threshold at the requested quantile of |act(gate)| over this call's positions.
    std::vector<float> mags(static_cast<size_t>(T * F));
    for (size_t k = 0; k < mags.size(); ++k) mags[k] = std::fabs(apply_ffn_activation(act, gate[k]));
    const size_t kth = std::min(mags.size() - 1, static_cast<size_t>(options_.sparsity * mags.size()));
    std::nth_element(mags.begin(), mags.begin() + static_cast<std::ptrdiff_t>(kth), mags.end());
    thresholds_[l] = mags[kth];
    calibrated_[l] = true;
  }
  const float thr = thresholds_[l];
  for (int i = 0; i < F; ++i) {
    for (int64_t t = 0; t < T; ++t) {
      if (std::fabs(apply_ffn_activation(act, gate[t * F + i])) > thr) {
        active_.push_back(i);
        break;
      }
    }
  }
}

// Exact gate from the resident matrix (a measurement: untimed, not charged to the budget):
// which (position, neuron) pairs are truly active, and how many of them were predicted.
void FlashFfn::count_recall(Context& ctx, int layer, const float* x, int64_t T) {
  const int F = header_.ffn_dim;
  std::vector<float>& gate = truth_gate_;
  gate.resize(static_cast<size_t>(T * F));
  matmul(model_.layers[static_cast<size_t>(layer)].ffn_gate, x, T, gate.data(), ctx.pool());
  const FfnActivation act = model_.config.ffn_activation;
  const float thr = options_.predictors->label_threshold;
  for (size_t k = 0; k < gate.size(); ++k) {
    if (std::fabs(apply_ffn_activation(act, gate[k])) > thr) {
      ++stats_.true_active;
      stats_.predicted_true += chosen_[k];
    }
  }
}

void FlashFfn::compute(Context& ctx, int layer, const std::vector<int>& slots, const float* x,
                       const float* gate, int64_t T) {
  if (slots.empty()) return;
  const NeuronCache& cache = caches_[static_cast<size_t>(layer)];
  const int D = header_.dim, F = header_.ffn_dim;
  const DType type = header_.type;
  const uint64_t rb = header_.row_bytes;
  // Threshold mode knows the gate; the others compute it from the bundle's gate row.
  const bool own_gate = options_.mode != FlashOptions::Mode::kThreshold;
  const bool predicted = options_.mode == FlashOptions::Mode::kPredictor;
  const float thr = thresholds_[static_cast<size_t>(layer)];
  const FfnActivation act = model_.config.ffn_activation;
  ctx.pool().parallel_for(static_cast<int64_t>(slots.size()), [&](int64_t b, int64_t e, int th) {
    float* acc = partial_.data() + static_cast<size_t>(th) * static_cast<size_t>(T * D);
    for (int64_t k = b; k < e; ++k) {
      const int slot = slots[static_cast<size_t>(k)];
      const uint8_t* bundle = cache.data(slot);
      const int neuron = cache.neuron(slot);
      for (int64_t t = 0; t < T; ++t) {
        if (predicted && !chosen_[static_cast<size_t>(t * F + neuron)]) continue;  // not predicted here
        const float* xt = x + t * D;
        const float g = own_gate ? dot_row(type, bundle + 2 * rb, xt, D) : gate[t * F + neuron];
        const float a = apply_ffn_activation(act, g);
        if (a == 0.0f || (!own_gate && !(std::fabs(a) > thr))) continue;  // inactive here
        const float u = dot_row(type, bundle, xt, D);
        axpy_row(type, a * u, bundle + rb, acc + t * D, D);
      }
    }
  });
}

void FlashFfn::run(Context& ctx, int layer, const float* x, int64_t T, float* out) {
  const size_t l = static_cast<size_t>(layer);
  NeuronCache& cache = caches_[l];
  const int D = header_.dim, F = header_.ffn_dim;
  const int64_t step = step_[l];
  const int threads = ctx.pool().size();
  const uint64_t bytes_before = reader_->stats().bytes_read, reads_before = reader_->stats().reads;
  partial_.assign(static_cast<size_t>(threads) * static_cast<size_t>(T * D), 0.0f);

  // 1. The gate, exactly, from the resident matrix (threshold mode).
  auto t0 = Clock::now();
  const float* gate = nullptr;
  if (options_.mode == FlashOptions::Mode::kThreshold) {
    gate_.resize(static_cast<size_t>(T * F));
    matmul(model_.layers[l].ffn_gate, x, T, gate_.data(), ctx.pool());
    gate = gate_.data();
  }
  if (options_.mode == FlashOptions::Mode::kPredictor) decide(ctx, layer, x, nullptr, T);
  stats_.compute_ms += ms_since(t0);
  if (options_.mode == FlashOptions::Mode::kPredictor && options_.measure_recall) count_recall(ctx, layer, x, T);

  // 2. Active neurons, split into cached (hits) and missing; the window drops neurons no
  // token in the last `window` used. Hits are marked "next step" until computed.
  t0 = Clock::now();
  if (options_.mode != FlashOptions::Mode::kPredictor) decide(ctx, layer, x, gate, T);
  misses_.clear();
  std::vector<int> hit_ids;
  for (int id : active_) {
    if (cache.contains(id)) {
      cache.touch(id, step + 1);
      hit_ids.push_back(id);
    } else {
      misses_.push_back(id);
    }
  }
  cache.evict_older_than(step - options_.window + 1);
  stats_.active += static_cast<int64_t>(active_.size());
  stats_.considered += F;
  stats_.hits += static_cast<int64_t>(hit_ids.size());
  stats_.misses += static_cast<int64_t>(misses_.size());

  // 3. Misses are read in chunks that fit beside what is being computed: all at once when
  // the cache has room, else half the cache at a time (double buffering).
  const size_t need = misses_.size();
  size_t next = 0;
  const size_t room_now = static_cast<size_t>(cache.capacity()) - hit_ids.size();
  const size_t half = std::max<size_t>(1, static_cast<size_t>(cache.capacity()) / 2);
  auto load = [&](size_t limit, std::vector<int>& chunk) {
    chunk.clear();
    size_t n = std::min(limit, need - next);
    if (n == 0) return;
    const size_t free = static_cast<size_t>(cache.free_slots());
    if (free < n) cache.evict_lru(static_cast<int>(n - free), step + 1);
    n = std::min(n, static_cast<size_t>(cache.free_slots()));
    chunk.assign(misses_.begin() + static_cast<std::ptrdiff_t>(next),
                 misses_.begin() + static_cast<std::ptrdiff_t>(next + n));
    next += n;
    submit_reads(layer, chunk);
  };
  auto slots_of = [&](const std::vector<int>& ids) {
    std::vector<int> slots;
    slots.reserve(ids.size());
    for (int id : ids) slots.push_back(cache.slot(id));
    return slots;
  };
  std::vector<int> current, upcoming;
  load(need <= room_now ? need : std::min(room_now, half), current);
  const std::vector<int> hit_slots = slots_of(hit_ids);
  stats_.memory_ms += ms_since(t0);

  // 4. Compute the hits while the first chunk is read.
  t0 = Clock::now();
  compute(ctx, layer, hit_slots, x, gate, T);
  for (int id : hit_ids) cache.touch(id, step);
  stats_.compute_ms += ms_since(t0);

  while (!current.empty() || next < need) {
    t0 = Clock::now();
    if (current.empty()) load(half, current);  // no room before the hits were done
    stats_.memory_ms += ms_since(t0);
    if (current.empty()) fail("flash: no room in layer {}'s neuron cache", layer);
    t0 = Clock::now();
    reader_->wait();
    stats_.io_wait_ms += ms_since(t0);
    t0 = Clock::now();
    load(half, upcoming);  // read the next chunk while this one is computed
    const std::vector<int> slots = slots_of(current);
    stats_.memory_ms += ms_since(t0);
    t0 = Clock::now();
    compute(ctx, layer, slots, x, gate, T);
    for (int id : current) cache.touch(id, step);
    stats_.compute_ms += ms_since(t0);
    std::swap(current, upcoming);
  }

  // 5. Sum the threads' partial outputs in a fixed order.
  t0 = Clock::now();
  std::copy_n(partial_.data(), static_cast<size_t>(T * D), out);
  for (int th = 1; th < threads; ++th) {
    const float* p = partial_.data() + static_cast<size_t>(th) * static_cast<size_t>(T * D);
    for (int64_t k = 0; k < T * D; ++k) out[k] += p[k];
  }
  stats_.compute_ms += ms_since(t0);
  stats_.bytes_read += reader_->stats().bytes_read - bytes_before;
  stats_.reads += reader_->stats().reads - reads_before;
  stats_.cached += cache.size();
  if (layer == header_.n_layers - 1) stats_.tokens += T;
  step_[l] = step + 1;
}

}  // namespace skiff::flash

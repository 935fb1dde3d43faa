#include "dist/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "base/error.h"
#include "dist/wire.h"

namespace skiff::dist {

namespace {

using Clock = std::chrono::steady_clock;

// Start-up waits (the fingerprints, the plan) get ten times the timeout: ranks load their
// models at their own pace (a copy with --no-mmap, a slow disk), and a rank that dies then
// is noticed by mpirun anyway.
constexpr double kStartupPatience = 10.0;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

enum Tag : int {
  kHello = 1,    // stage s -> 0: Hello
  kPlan = 2,     // 0 -> s: context length, sequences, stage count, the ranges
  kForward = 3,  // s -> s+1: BatchHeader, SeqRows[n_seqs], hidden[T][dim]
  kResult = 4,   // last stage -> 0: the same
  kStop = 5,     // s -> s+1 (in order after every earlier message): no payload
  kStats = 6,    // s -> 0: WorkerStats
  kCopy = 7,     // s -> s+1: CopyPrefix
};

struct Hello {
  ModelFingerprint model;
  double free_bytes;  // memory available on the rank (0: unknown)
};

struct WorkerStats {
  int64_t messages, bytes, forwards, peak_rss_kib;
  double wait_seconds, sim_seconds, compute_seconds;
};

// This process's peak resident set (VmHWM: mapped weight pages it touched included), KiB;
// 0 when /proc cannot say.
int64_t peak_rss_kib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  long long kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %lld kB", &kib) == 1) break;
  std::fclose(f);
  return kib;
}

// Memory this rank could still use, bytes: SKIFF_STAGE_MEMORY_MIB when set (tests give ranks
// on one host different sizes), else memory_headroom() (MemAvailable, within the cgroup's
// limit); 0 when unknown.
double free_memory_bytes() {
  if (const char* mib = std::getenv("SKIFF_STAGE_MEMORY_MIB")) {
    char* end = nullptr;
    const double v = std::strtod(mib, &end);
    if (end == mib || *end != '\0' || !(v >= 0)) fail("SKIFF_STAGE_MEMORY_MIB='{}' is not a number of MiB", mib);
    return v * (1 << 20);
  }
  const size_t headroom = memory_headroom();
  return headroom == SIZE_MAX ? 0.0 : static_cast<double>(headroom);
}

// Plain structs go as their bytes: every rank runs the same build on the same architecture.
template <typename T>
std::span<const uint8_t> as_bytes(const T& value) {
  return {reinterpret_cast<const uint8_t*>(&value), sizeof(T)};
}
template <typename T>
T from_bytes(const Message& m, const char* what) {
  if (m.bytes.size() < sizeof(T)) fail("pipeline: a {} message of {} bytes from rank {} is too short", what, m.bytes.size(), m.source);
  T value;
  std::memcpy(&value, m.bytes.data(), sizeof(T));
  return value;
}

// Test hook (tests/cli/test_mpi_pipeline.py), documented in docs/DISTRIBUTED.md:
// SKIFF_PIPELINE_FAULT=hang:R:N or exit:R:N makes rank R stop answering (hang) or die
// (_exit) when its N-th forward message arrives.
void maybe_fault(int rank, int64_t forwards) {
  const char* spec = std::getenv("SKIFF_PIPELINE_FAULT");
  if (!spec) return;
  char kind[8] = {};
  int r = -1;
  long long n = -1;
  if (std::sscanf(spec, "%7[a-z]:%d:%lld", kind, &r, &n) != 3 || r != rank || n != forwards) return;
  if (std::strcmp(kind, "exit") == 0) _exit(3);
  if (std::strcmp(kind, "hang") == 0)
    while (true) std::this_thread::sleep_for(std::chrono::seconds(1));
}

std::string human_bytes(double b) {
  if (b >= 1 << 20) return fmt::format("{:.1f} MiB", b / (1 << 20));
  if (b >= 1 << 10) return fmt::format("{:.1f} KiB", b / (1 << 10));
  return fmt::format("{:.0f} B", b);
}

}  // namespace

Pipeline::Pipeline(std::unique_ptr<Link> link, const Model& model, const PipelineOptions& options)
    : link_(std::move(link)), model_(model), options_(options) {
  if (!(options.timeout_seconds > 0)) fail("--stage-timeout must be positive, got {}", options.timeout_seconds);
  if (options.sequences < 1) fail("pipeline: {} sequences", options.sequences);
  link_->set_timeout(options.timeout_seconds);
  if (!options.sim_link.empty()) link_->set_sim_link(parse_sim_link(options.sim_link));
  const int S = link_->size();
  const Hello mine{fingerprint(model), free_memory_bytes()};

  if (head()) {
    // Bad flags are an error before anyone waits.
    const int L = model.config.n_layers;
    if (!options.stage_layers.empty()) {
      if (!options.stages.empty()) fail("give --stages or --stage-layers, not both");
      plan_ = parse_stage_layers(options.stage_layers);
      validate_stage_plan(plan_, L, S, options.keep_on_first);
    } else {
      if (options.stages != "auto" && options.stages != std::to_string(S))
        fail("--stages {}: use 'auto' or the number of MPI ranks ({})", options.stages, S);
      plan_ = place_stages(L, S, options.keep_on_first);  // by count; 'auto' re-places by memory below
    }
    // Context's rule, checked here so that rank 0 says it before the others build theirs.
    if (options.context_length > model.config.context_length)
      fail("context length {} exceeds the model's {}", options.context_length, model.config.context_length);
    context_length_ = options.context_length > 0 ? options.context_length
                                                 : std::min(model.config.context_length, Context::kDefaultContext);
    sequences_ = options.sequences;
    std::vector<double> free_bytes = {mine.free_bytes};
    for (int s = 1; s < S; ++s) {
      Message m = link_->recv(s, "the model fingerprint", kStartupPatience);
      if (m.tag != kHello) fail("pipeline: rank {} sent message {} before its fingerprint", s, m.tag);
      const Hello theirs = from_bytes<Hello>(m, "fingerprint");
      if (!(theirs.model == mine.model))
        fail("pipeline: rank {} loaded a different model ({}) than rank 0 ({}, {})", s, theirs.model.describe(),
             model.source, mine.model.describe());
      free_bytes.push_back(theirs.free_bytes);
    }
    if (options.stages == "auto") place(free_bytes);
    const std::vector<uint8_t> msg = encode_plan({context_length_, sequences_, plan_});
    for (int s = 1; s < S; ++s) link_->send(s, kPlan, msg);
  } else {
    link_->send(0, kHello, as_bytes(mine));
    Message m = link_->recv(0, "the stage plan", kStartupPatience);
    if (m.tag != kPlan) fail("pipeline: expected the stage plan from rank 0, got message {}", m.tag);
    PlanMessage p = parse_plan(m.bytes, S, model.config.n_layers);
    context_length_ = p.context_length;
    sequences_ = p.sequences;
    plan_ = std::move(p.plan);
  }
}

void Pipeline::place(const std::vector<double>& free_bytes) {
  // What each layer costs where it lives: its weights as stored and its KV cache for every
  // sequence; stage 0 also holds the embeddings, the final norm and the head.
  const ModelConfig& c = model_.config;
  const double kv_per_layer = static_cast<double>(KvCache::bytes_per_position(1, c.kv_dim(), options_.kv_types)) *
                              context_length_ * sequences_;
  std::vector<double> layer_bytes;
  for (const LayerWeights& w : model_.layers) layer_bytes.push_back(kv_per_layer + static_cast<double>(w.nbytes()));
  const double head_bytes = static_cast<double>(model_.token_embd.nbytes() + model_.output_norm.nbytes() +
                                                (model_.tied_output ? 0 : model_.output.nbytes()));
  plan_ = place_stages_by_memory(layer_bytes, head_bytes, free_bytes, options_.keep_on_first);
  for (int s = 0; s < plan_.stages(); ++s) {
    const LayerRange& r = plan_.ranges[static_cast<size_t>(s)];
    double need = s == 0 ? head_bytes : 0.0;
    for (int l = r.first; l < r.last; ++l) need += layer_bytes[static_cast<size_t>(l)];
    if (free_bytes[static_cast<size_t>(s)] > 0 && need > free_bytes[static_cast<size_t>(s)])
      std::fprintf(stderr,
                   "warning: pipeline stage %d (layers %d:%d) needs %.0f MiB for weights and KV but its rank has %.0f MiB "
                   "free: its pages will be read from disk again and again\n",
                   s, r.first, r.last, need / (1 << 20), free_bytes[static_cast<size_t>(s)] / (1 << 20));
  }
}

int Pipeline::stage_of(int layer) const {
  for (int s = 0; s < plan_.stages(); ++s)
    if (layer >= plan_.ranges[static_cast<size_t>(s)].first && layer < plan_.ranges[static_cast<size_t>(s)].last) return s;
  fail("pipeline: layer {} is in no stage", layer);
}

int Pipeline::seq_of(const Context& ctx) const {
  for (const auto& [c, seq] : seq_ids_)
    if (c == &ctx) return seq;
  fail("pipeline: a context that is not one of the pipeline's sequences");
}

std::unique_ptr<Context> Pipeline::make_context(int seq, ThreadPool* pool) {
  if (seq < 0 || seq >= sequences_) fail("pipeline: sequence {} of {}", seq, sequences_);
  for (const auto& [c, s] : seq_ids_)
    if (s == seq) fail("pipeline: sequence {} already has a context", seq);
  const LayerRange& r = plan_.ranges[0];
  const Context::StoredLayers stored{r.first, r.last};
  auto ctx = pool ? std::make_unique<Context>(model_, context_length_, *pool, stored, options_.kv_types)
                  : std::make_unique<Context>(model_, context_length_, options_.threads, stored, options_.kv_types);
  if (plan_.stages() > 1) ctx->set_remote_layers(this);
  seq_ids_.emplace_back(ctx.get(), seq);
  return ctx;
}

int64_t Pipeline::submit(std::span<const BatchSeq> seqs, const float* hidden, int first_layer, int last_layer) {
  const int dim = model_.config.dim;
  BatchHeader h{next_ticket_++, static_cast<int32_t>(seqs.size()), 0, first_layer, last_layer};
  Flight flight{first_layer, last_layer, stage_of(last_layer - 1), {}};
  std::vector<SeqRows> rows;
  for (const BatchSeq& s : seqs) {
    const KvCache& cache = s.ctx->cache();
    const int seq = seq_of(*s.ctx);
    for (const auto& [ticket, f] : in_flight_)
      for (const auto& [other, n] : f.seqs)
        if (other == seq) fail("pipeline: sequence {} already has a batch in flight", seq);
    const int pos = cache.length(first_layer);
    for (int l = first_layer; l < last_layer; ++l)
      if (cache.length(l) != pos)
        fail("pipeline: layers {}..{} of later stages hold different lengths ({} and {})", first_layer, last_layer - 1,
             pos, cache.length(l));
    if (s.first_visible) fail("pipeline: block attention runs in one process");
    rows.push_back({seq, pos, static_cast<int32_t>(s.rows)});
    flight.seqs.emplace_back(seq, s.rows);
    h.T += static_cast<int32_t>(s.rows);
  }
  buffer_ = encode_batch(h, rows, hidden, dim);
  link_->send(stage_of(first_layer), kForward, buffer_);
  in_flight_.emplace(h.ticket, std::move(flight));
  return h.ticket;
}

void Pipeline::wait(int64_t ticket, std::span<const BatchSeq> seqs, float* hidden) {
  const Clock::time_point start = Clock::now();
  auto it = in_flight_.find(ticket);
  if (it == in_flight_.end()) fail("pipeline: no batch {} in flight", ticket);
  const Flight& f = it->second;
  // A stage answers in the order it was asked; results of other batches from the same last
  // stage that come first are kept for their wait.
  while (!arrived_.count(ticket)) {
    Message m = link_->recv(f.last_stage, fmt::format("the hidden states of layers {}..{}", f.first, f.last - 1));
    const BatchHeader back = from_bytes<BatchHeader>(m, "result");  // parse_batch checks the rest
    if (m.tag != kResult || !in_flight_.count(back.ticket))
      fail("pipeline: rank {} sent message {} for no batch in flight", m.source, m.tag);
    arrived_.emplace(back.ticket, std::move(m));
  }
  Message m = std::move(arrived_.at(ticket));
  arrived_.erase(ticket);
  const Batch back = parse_batch(m.bytes, model_.config.dim, model_.config.n_layers, sequences_, context_length_);
  bool same = seqs.size() == f.seqs.size() && back.seqs.size() == f.seqs.size() && back.header.first == f.first &&
              back.header.last == f.last;
  for (size_t i = 0; same && i < seqs.size(); ++i)
    same = seq_of(*seqs[i].ctx) == f.seqs[i].first && seqs[i].rows == f.seqs[i].second &&
           back.seqs[i].seq == f.seqs[i].first && back.seqs[i].rows == f.seqs[i].second;
  if (!same) fail("pipeline: rank {} answered layers {}..{} with a mismatched message", m.source, f.first, f.last - 1);
  std::memcpy(hidden, m.bytes.data() + back.payload_offset,
              static_cast<size_t>(back.header.T) * model_.config.dim * sizeof(float));
  for (const BatchSeq& s : seqs)
    for (int l = f.first; l < f.last; ++l) s.ctx->cache().extend(l, static_cast<int>(s.rows));
  in_flight_.erase(it);
  wait_seconds_ += seconds_since(start);
}

void Pipeline::copy_prefix(const Context& from, Context& to, int n) {
  if (plan_.stages() < 2) return;
  const CopyPrefix c{seq_of(from), seq_of(to), n};
  link_->send(1, kCopy, as_bytes(c));
}

Context& Pipeline::worker_context(int seq) {
  std::unique_ptr<Context>& ctx = contexts_.at(static_cast<size_t>(seq));
  if (!ctx) {
    const LayerRange mine = plan_.ranges[static_cast<size_t>(link_->rank())];
    ctx = std::make_unique<Context>(model_, context_length_, *pool_, Context::StoredLayers{mine.first, mine.last},
                                    options_.kv_types);
  }
  return *ctx;
}

void Pipeline::serve_forward(Message& m) {
  const int me = link_->rank();
  const LayerRange mine = plan_.ranges[static_cast<size_t>(me)];
  const int dim = model_.config.dim;
  const Batch batch = parse_batch(m.bytes, dim, model_.config.n_layers, sequences_, context_length_);
  const BatchHeader& h = batch.header;
  const int a = std::max(h.first, mine.first), b = std::min(h.last, mine.last);
  if (a >= b)
    fail("pipeline: stage {} ({}:{}) got a message for layers {}..{} from rank {}", me, mine.first, mine.last, h.first,
         h.last - 1, m.source);
  std::vector<BatchSeq> seqs;
  for (const SeqRows& r : batch.seqs) {
    Context& ctx = worker_context(r.seq);
    KvCache& cache = ctx.cache();
    // Rejected drafts and other cut-backs on stage 0 arrive as an earlier start position.
    for (int l = a; l < b; ++l) {
      if (cache.length(l) < r.pos)
        fail("pipeline: stage {} layer {} of sequence {} holds {} positions but a message starts at {}", me, l, r.seq,
             cache.length(l), r.pos);
      cache.truncate(l, r.pos);
    }
    seqs.push_back({&ctx, r.rows});
  }
  const size_t head_bytes = batch.payload_offset;
  const size_t payload = static_cast<size_t>(h.T) * dim * sizeof(float);
  hidden_.resize(static_cast<size_t>(h.T) * dim);
  std::memcpy(hidden_.data(), m.bytes.data() + head_bytes, payload);
  const Clock::time_point start = Clock::now();
  forward_batch(seqs, hidden_.data(), a, b);
  compute_seconds_ += seconds_since(start);
  std::memcpy(m.bytes.data() + head_bytes, hidden_.data(), payload);
  if (h.last > mine.last) link_->send(me + 1, kForward, m.bytes);
  else link_->send(0, kResult, m.bytes);
}

void Pipeline::serve_copy(const Message& m) {
  const int me = link_->rank();
  const CopyPrefix c = parse_copy(m.bytes, sequences_, context_length_);
  worker_context(c.to).cache().copy_prefix_from(worker_context(c.from).cache(), c.n);
  if (me + 1 < plan_.stages()) link_->send(me + 1, kCopy, m.bytes);
}

void Pipeline::serve(bool idle_forever) {
  const int me = link_->rank();
  pool_ = std::make_unique<ThreadPool>(options_.threads);
  contexts_.resize(static_cast<size_t>(sequences_));
  while (true) {
    // Twice the timeout: between messages this rank also waits for rank 0's own work, and when
    // a later stage is stuck, rank 0 (waiting for it since its last send) should be the one
    // to report it.
    Message m = link_->recv(me - 1, "the next message", idle_forever ? 1e9 / link_->timeout() : 2.0);
    if (m.tag == kStop) break;
    if (m.tag == kCopy) {
      serve_copy(m);
      continue;
    }
    if (m.tag != kForward) fail("pipeline: stage {} got an unexpected message {} from rank {}", me, m.tag, m.source);
    maybe_fault(me, ++forwards_);
    serve_forward(m);
  }
  if (me + 1 < plan_.stages()) link_->send(me + 1, kStop, {});
  const LinkStats& ls = link_->stats();
  const WorkerStats ws{ls.messages_sent, ls.bytes_sent, forwards_, peak_rss_kib(), ls.wait_seconds, ls.sim_seconds,
                       compute_seconds_};
  link_->send(0, kStats, as_bytes(ws));
  link_->flush();
}

std::string Pipeline::finish(int64_t tokens) {
  const int S = plan_.stages();
  if (!in_flight_.empty()) fail("pipeline: {} batches still in flight at the end", in_flight_.size());
  std::string compute, rss = fmt::format("{:.1f}", peak_rss_kib() / 1024.0);
  if (S > 1) link_->send(1, kStop, {});  // passed down the stages, after everything sent before
  LinkStats total = link_->stats();
  for (int s = 1; s < S; ++s) {
    Message m = link_->recv(s, "the stage's counts");
    if (m.tag != kStats) fail("pipeline: rank {} sent message {} instead of its counts", s, m.tag);
    const WorkerStats ws = from_bytes<WorkerStats>(m, "stats");
    total.messages_sent += ws.messages;
    total.bytes_sent += ws.bytes;
    total.sim_seconds += ws.sim_seconds;
    compute += fmt::format("{}{:.3f}", compute.empty() ? "" : " ", ws.compute_seconds);
    rss += fmt::format(" {:.1f}", ws.peak_rss_kib / 1024.0);
  }
  link_->flush();
  std::string line = fmt::format("pipeline: {} stages {}", S, plan_.describe());
  if (S > 1) {
    line += fmt::format(" | {} messages, {} sent (all ranks), {:.0f} bytes/token over {} tokens | stages 1..{} compute s: {}"
                        " | stage 0 waited {:.3f} s for them",
                        total.messages_sent, human_bytes(static_cast<double>(total.bytes_sent)),
                        tokens > 0 ? static_cast<double>(total.bytes_sent) / static_cast<double>(tokens) : 0.0, tokens,
                        S - 1, compute, wait_seconds_);
  }
  line += fmt::format(" | peak RSS MiB per rank: {}", rss);
  if (!options_.sim_link.empty())
    line += fmt::format(" | sim link {} (delay of all messages {:.3f} s, all ranks)",
                        parse_sim_link(options_.sim_link).describe(), total.sim_seconds);
  return line;
}

}  // namespace skiff::dist

#include "dist/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "base/error.h"

namespace skiff::dist {

namespace {

using Clock = std::chrono::steady_clock;

// Start-up waits (the fingerprints, the plan) get ten times the timeout: ranks load their
// models at their own pace (a copy with --no-mmap, a slow disk), and a rank that dies then
// is noticed by mpirun anyway.
constexpr double kStartupPatience = 10.0;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

enum Tag : int {
  kHello = 1,    // stage s -> 0: ModelFingerprint
  kPlan = 2,     // 0 -> s: context length, stage count, the ranges
  kForward = 3,  // s -> s+1: Header + hidden[T][dim]
  kResult = 4,   // last stage -> 0: Header + hidden[T][dim]
  kStop = 5,     // 0 -> s: no payload
  kStats = 6,    // s -> 0: WorkerStats
};

// Hidden states for T positions entering layer `first`, to run through layers [first, last);
// `pos` is the position of the first row (every stage cuts its cache back to it first).
struct Header {
  int32_t pos, T, first, last;
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
  link_->set_timeout(options.timeout_seconds);
  if (!options.sim_link.empty()) link_->set_sim_link(parse_sim_link(options.sim_link));
  const int S = link_->size();
  const ModelFingerprint mine = fingerprint(model);

  if (head()) {
    // The plan first: bad flags are an error before anyone waits.
    const int L = model.config.n_layers;
    if (!options.stage_layers.empty()) {
      if (!options.stages.empty()) fail("give --stages or --stage-layers, not both");
      plan_ = parse_stage_layers(options.stage_layers);
      validate_stage_plan(plan_, L, S, options.keep_on_first);
    } else {
      if (options.stages != "auto" && options.stages != std::to_string(S))
        fail("--stages {}: use 'auto' or the number of MPI ranks ({})", options.stages, S);
      plan_ = place_stages(L, S, options.keep_on_first);
    }
    // Context's rule, checked here so that rank 0 says it before the others build theirs.
    if (options.context_length > model.config.context_length)
      fail("context length {} exceeds the model's {}", options.context_length, model.config.context_length);
    context_length_ = options.context_length > 0 ? options.context_length
                                                 : std::min(model.config.context_length, Context::kDefaultContext);
    for (int s = 1; s < S; ++s) {
      Message m = link_->recv(s, "the model fingerprint", kStartupPatience);
      if (m.tag != kHello) fail("pipeline: rank {} sent message {} before its fingerprint", s, m.tag);
      const ModelFingerprint theirs = from_bytes<ModelFingerprint>(m, "fingerprint");
      if (!(theirs == mine))
        fail("pipeline: rank {} loaded a different model ({}) than rank 0 ({}, {})", s, theirs.describe(),
             model.source, mine.describe());
    }
    std::vector<int32_t> msg = {context_length_, S};
    for (const LayerRange& r : plan_.ranges) {
      msg.push_back(r.first);
      msg.push_back(r.last);
    }
    for (int s = 1; s < S; ++s)
      link_->send(s, kPlan, {reinterpret_cast<const uint8_t*>(msg.data()), msg.size() * sizeof(int32_t)});
  } else {
    link_->send(0, kHello, as_bytes(mine));
    Message m = link_->recv(0, "the stage plan", kStartupPatience);
    if (m.tag != kPlan || m.bytes.size() < 2 * sizeof(int32_t)) fail("pipeline: expected the stage plan from rank 0");
    std::vector<int32_t> msg(m.bytes.size() / sizeof(int32_t));
    std::memcpy(msg.data(), m.bytes.data(), msg.size() * sizeof(int32_t));
    context_length_ = msg[0];
    if (msg[1] != S || msg.size() != 2 + 2 * static_cast<size_t>(S)) fail("pipeline: a malformed stage plan");
    for (int s = 0; s < S; ++s) plan_.ranges.push_back({msg[2 + 2 * s], msg[3 + 2 * s]});
  }
}

int Pipeline::stage_of(int layer) const {
  for (int s = 0; s < plan_.stages(); ++s)
    if (layer >= plan_.ranges[static_cast<size_t>(s)].first && layer < plan_.ranges[static_cast<size_t>(s)].last) return s;
  fail("pipeline: layer {} is in no stage", layer);
}

std::unique_ptr<Context> Pipeline::make_context() {
  const LayerRange& r = plan_.ranges[0];
  auto ctx = std::make_unique<Context>(model_, context_length_, options_.threads, Context::StoredLayers{r.first, r.last},
                                       options_.kv_types);
  if (plan_.stages() > 1) ctx->set_remote_layers(this);
  return ctx;
}

void Pipeline::run(Context& ctx, float* hidden, int64_t T, int first_layer, int last_layer) {
  const Clock::time_point start = Clock::now();
  KvCache& cache = ctx.cache();
  const int dim = model_.config.dim;
  const int pos = cache.length(first_layer);
  for (int l = first_layer; l < last_layer; ++l)
    if (cache.length(l) != pos)
      fail("pipeline: layers {}..{} of later stages hold different lengths ({} and {})", first_layer, last_layer - 1,
           pos, cache.length(l));
  const Header h{pos, static_cast<int32_t>(T), first_layer, last_layer};
  const size_t payload = static_cast<size_t>(T) * dim * sizeof(float);
  buffer_.resize(sizeof(Header) + payload);
  std::memcpy(buffer_.data(), &h, sizeof(Header));
  std::memcpy(buffer_.data() + sizeof(Header), hidden, payload);
  link_->send(stage_of(first_layer), kForward, buffer_);
  const int last_stage = stage_of(last_layer - 1);
  Message m = link_->recv(last_stage, fmt::format("the hidden states of layers {}..{}", first_layer, last_layer - 1));
  const Header back = from_bytes<Header>(m, "result");
  if (m.tag != kResult || back.pos != h.pos || back.T != h.T || back.first != h.first || back.last != h.last ||
      m.bytes.size() != sizeof(Header) + payload)
    fail("pipeline: rank {} answered layers {}..{} with a mismatched message", m.source, first_layer, last_layer - 1);
  std::memcpy(hidden, m.bytes.data() + sizeof(Header), payload);
  for (int l = first_layer; l < last_layer; ++l) cache.extend(l, static_cast<int>(T));
  remote_seconds_ += seconds_since(start);
  ++forwards_;
}

void Pipeline::serve() {
  const int me = link_->rank();
  const LayerRange mine = plan_.ranges[static_cast<size_t>(me)];
  ctx_ = std::make_unique<Context>(model_, context_length_, options_.threads, Context::StoredLayers{mine.first, mine.last},
                                  options_.kv_types);
  KvCache& cache = ctx_->cache();
  const int dim = model_.config.dim;
  std::vector<float> hidden;
  double compute_seconds = 0;
  while (true) {
    // Twice the timeout: between messages this rank also waits for rank 0's own work, and when
    // a later stage is stuck, rank 0 (waiting for it since its last send) should be the one
    // to report it.
    Message m = link_->recv(Link::kAnySource, "the next message", 2.0);
    if (m.tag == kStop) break;
    if (m.tag != kForward) fail("pipeline: stage {} got an unexpected message {} from rank {}", me, m.tag, m.source);
    maybe_fault(me, ++forwards_);
    const Header h = from_bytes<Header>(m, "forward");
    const size_t payload = static_cast<size_t>(h.T) * dim * sizeof(float);
    const int a = std::max(h.first, mine.first), b = std::min(h.last, mine.last);
    if (h.T < 1 || m.bytes.size() != sizeof(Header) + payload || a >= b || h.pos < 0)
      fail("pipeline: stage {} ({}:{}) got a malformed message for layers {}..{} from rank {}", me, mine.first,
           mine.last, h.first, h.last - 1, m.source);
    // Rejected drafts and other cut-backs on stage 0 arrive as an earlier start position.
    for (int l = a; l < b; ++l) {
      if (cache.length(l) < h.pos)
        fail("pipeline: stage {} layer {} holds {} positions but a message starts at {}", me, l, cache.length(l), h.pos);
      cache.truncate(l, h.pos);
    }
    hidden.resize(static_cast<size_t>(h.T) * dim);
    std::memcpy(hidden.data(), m.bytes.data() + sizeof(Header), payload);
    const Clock::time_point start = Clock::now();
    forward(*ctx_, hidden.data(), h.T, a, b);
    compute_seconds += seconds_since(start);
    std::memcpy(m.bytes.data() + sizeof(Header), hidden.data(), payload);
    if (h.last > mine.last) link_->send(me + 1, kForward, m.bytes);
    else link_->send(0, kResult, m.bytes);
  }
  const LinkStats& ls = link_->stats();
  const WorkerStats ws{ls.messages_sent, ls.bytes_sent, forwards_, peak_rss_kib(), ls.wait_seconds, ls.sim_seconds,
                       compute_seconds};
  link_->send(0, kStats, as_bytes(ws));
}

std::string Pipeline::finish(int64_t tokens) {
  const int S = plan_.stages();
  LinkStats total = link_->stats();
  std::string compute, rss = fmt::format("{:.1f}", peak_rss_kib() / 1024.0);
  for (int s = 1; s < S; ++s) link_->send(s, kStop, {});
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
  std::string line = fmt::format("pipeline: {} stages {}", S, plan_.describe());
  if (S > 1) {
    line += fmt::format(" | {} messages, {} sent (all ranks), {:.0f} bytes/token over {} tokens | stages 1..{} compute s: {}"
                        " | stage 0 waited {:.3f} s for them",
                        total.messages_sent, human_bytes(static_cast<double>(total.bytes_sent)),
                        tokens > 0 ? static_cast<double>(total.bytes_sent) / static_cast<double>(tokens) : 0.0, tokens,
                        S - 1, compute, remote_seconds_);
  }
  line += fmt::format(" | peak RSS MiB per rank: {}", rss);
  if (!options_.sim_link.empty())
    line += fmt::format(" | sim link {} (slept {:.3f} s, all ranks)", parse_sim_link(options_.sim_link).describe(),
                        total.sim_seconds);
  return line;
}

}  // namespace skiff::dist

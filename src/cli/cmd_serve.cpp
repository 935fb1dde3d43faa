// skiff serve: an OpenAI-compatible HTTP server (src/server/). It listens first, loads the
// model (/health says 503 meanwhile, then 200), and serves until SIGINT or SIGTERM: then it
// stops accepting, lets requests in flight finish for --shutdown-grace seconds, ends the
// rest, and exits 0.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <thread>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/spec_common.h"
#include "cli/stage_flags.h"
#include "decode/model_drafter.h"
#include "memory/ann.h"
#include "memory/query.h"
#include "memory/store.h"
#include "server/http_server.h"
#include "server/scheduler.h"

namespace skiff::cli {
namespace {

struct ServeFlags {
  ModelFlags model;
  server::ServerOptions server;
  server::SchedulerOptions scheduler;
  int request_timeout_s = 600;
  int read_timeout_s = 10;
  int shutdown_grace_s = 30;
  int stream_interval_ms = 5;
  size_t max_body_kib = 8192;
  std::string draft_model;
  std::string draft_head;             // self-spec: the early head's own copy in this type
  std::string draft_copy;             // with --self-spec E: a copy of layers 0..E-1 + head drafts
  std::vector<std::string> memories;  // NAME=STORE
  KvCacheFlags kv;
  StageFlags stages;
  int micro_batches = 0;  // 0: one per stage (at most --parallel)
};

// --memory NAME=STORE: each store opened (memory-mapped) and checked against the model; its
// HNSW index STORE.hnsw searched when there is one (skiff memory build --ann, memory index).
struct Memories {
  std::vector<std::unique_ptr<memory::MemoryStore>> stores;
  std::vector<std::unique_ptr<memory::AnnIndex>> indexes;  // STORE.hnsw where present
  std::vector<std::unique_ptr<memory::QueryRetriever>> retrievers;
  std::map<std::string, const memory::QueryRetriever*> by_name;
};

void open_memories(const std::vector<std::string>& specs, const Model& model, Memories& out) {
  for (const std::string& spec : specs) {
    const size_t eq = spec.find('=');
    if (eq == 0 || eq == std::string::npos || eq + 1 == spec.size())
      fail("--memory {}: expected NAME=STORE (a name requests use, and a store built by skiff memory build)", spec);
    const std::string name = spec.substr(0, eq);
    if (out.by_name.count(name)) fail("--memory: the name '{}' is given twice", name);
    out.stores.push_back(std::make_unique<memory::MemoryStore>(spec.substr(eq + 1)));
    out.retrievers.push_back(std::make_unique<memory::QueryRetriever>(model, *out.stores.back()));
    out.indexes.push_back(memory::AnnIndex::load_if_present(*out.stores.back()));
    out.retrievers.back()->use_index(out.indexes.back().get());
    out.by_name[name] = out.retrievers.back().get();
  }
}

void run_serve(ServeFlags& f, const CLI::App& cmd) {
  // Signals go to one thread that waits for them; every other thread (the server's included)
  // is created with them blocked.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that left must not kill the server

  // Pipeline stages (mpirun): rank 0 is the server; the other ranks only run their layers
  // (with SIGINT/SIGTERM blocked, so they stop when rank 0 tells them, after its drain).
  std::unique_ptr<dist::Link> link;
  if (stages_requested(cmd)) {
    if (!f.memories.empty()) fail("--memory needs every layer in one process; it does not run with --stages");
    link = dist::open_mpi_link();
    f.model.pack = false;  // stages pack only their own layers
    if (link->rank() != 0) {
      std::unique_ptr<Model> model = open_model(f.model);
      start_pipeline(f.stages, cmd, *model, f.scheduler.context_length, f.model.threads,
                     f.server.default_spec.exit_layer, kv_types(f.kv), f.scheduler.slots, std::move(link))
          ->serve(true);
      return;
    }
  } else if (cmd.count("--micro-batches") > 0) {
    fail("--micro-batches needs --stages or --stage-layers");
  }

  server::ServerOptions& o = f.server;
  // --self-spec E --draft-copy TYPE: the copy is the server's draft model, and drafting with
  // it the requests' default (in place of the shared-cache self-speculation).
  int copy_exit = 0;
  if (!f.draft_copy.empty()) {
    if (o.default_spec.exit_layer == 0) fail("--draft-copy needs --self-spec E (the layers it copies)");
    draft_copy_type(f.draft_copy);
    if (!f.draft_model.empty()) fail("--draft-copy and --draft-model exclude each other (both are the draft model)");
    if (!f.draft_head.empty()) check_draft_copy_alone({"--draft-head"});
    if (stages_requested(cmd)) fail("--draft-copy does not run with --stages (yet)");
    copy_exit = o.default_spec.exit_layer;
    o.default_spec.exit_layer = 0;
  }
  o.request_timeout = std::chrono::seconds(f.request_timeout_s);
  o.read_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.read_timeout_s) * 1000);
  o.max_body_bytes = f.max_body_kib * 1024;
  o.stream_interval = std::chrono::milliseconds(f.stream_interval_ms);
  o.limits.max_n = std::min(o.limits.max_n, f.scheduler.slots);
  if (o.http_threads == 0) o.http_threads = f.scheduler.slots + f.scheduler.max_queue + 8;
  if (o.model_id.empty())
    o.model_id = f.model.model.empty() ? "skiff-default" : std::filesystem::path(f.model.model).filename().string();

  server::HttpServer http(o);
  const int port = http.start();
  std::fprintf(stderr, "skiff serve: listening on http://%s:%d (loading the model)\n", o.host.c_str(), port);

  if (o.default_spec.exit_layer > 0 && o.default_spec.lookup_ngram > 0) fail("choose one of --self-spec and --lookup");
  if (!f.draft_model.empty() && o.default_spec.enabled())
    fail("--draft-model drafts by default; --self-spec and --lookup would replace it");
  std::unique_ptr<Model> model = open_model(f.model);
  if (o.default_spec.exit_layer >= model->config.n_layers)
    fail("--self-spec {} must be below the model's {} layers", o.default_spec.exit_layer, model->config.n_layers);
  f.scheduler.threads = f.model.threads;
  f.scheduler.draft_head = draft_head_from_flag(*model, f.draft_head);
  f.scheduler.kv_types = kv_types(f.kv);
  std::unique_ptr<Model> draft;
  if (copy_exit > 0) {
    draft = early_exit_copy_from_flag(*model, copy_exit, f.draft_copy);
    f.scheduler.draft_model = draft.get();  // the default for requests (HttpServer::attach)
  }
  if (!f.draft_model.empty()) {
    ModelFlags df = f.model;
    df.model = f.draft_model;
    draft = open_model(df);
    check_same_vocabulary(*model, *draft);
    f.scheduler.draft_model = draft.get();  // the default for requests (HttpServer::attach)
  }
  std::unique_ptr<dist::Pipeline> pipeline =
      start_pipeline(f.stages, cmd, *model, f.scheduler.context_length, f.model.threads,
                     f.server.default_spec.exit_layer, f.scheduler.kv_types, f.scheduler.slots, std::move(link));
  if (pipeline) {
    dist::Pipeline* p = pipeline.get();
    f.scheduler.make_context = [p](int slot, ThreadPool& pool) { return p->make_context(slot, &pool); };
    f.scheduler.micro_batches =
        f.micro_batches > 0 ? f.micro_batches : std::min(pipeline->plan().stages(), f.scheduler.slots);
  }
  Memories memories;
  open_memories(f.memories, *model, memories);
  server::Scheduler scheduler(*model, f.scheduler);
  http.attach(*model, scheduler, memories.by_name);
  // Before "ready": scripts wait for that line and may read everything above it.
  if (pipeline)
    std::fprintf(stderr, "skiff serve: %d pipeline stages %s, %d micro-batch group%s\n", pipeline->plan().stages(),
                 pipeline->plan().describe().c_str(), f.scheduler.micro_batches,
                 f.scheduler.micro_batches == 1 ? "" : "s");
  std::fprintf(stderr, "skiff serve: ready: %s, %d slots x %d positions, model id '%s'; %s per slot\n",
               model->source.c_str(), scheduler.slots(), scheduler.context_length(), o.model_id.c_str(),
               describe_kv_cache(model->config, f.scheduler.kv_types, scheduler.context_length()).c_str());


  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "skiff serve: %s: finishing requests in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    // New requests get 503; those in flight finish (or end, past the grace) and their
    // responses complete; then the listener stops.
    http.drain();
    scheduler.shutdown(std::chrono::seconds(f.shutdown_grace_s));
    http.wait_idle(std::chrono::seconds(5));
    http.stop();
  });
  http.wait();
  // The listener can also stop on its own (it never does in practice): wake the watcher.
  pthread_kill(watcher.native_handle(), SIGTERM);
  watcher.join();
  if (pipeline) {
    const server::SchedulerStats st = scheduler.stats();
    std::fprintf(stderr, "%s\n", pipeline->finish(st.prompt_tokens + st.generated_tokens).c_str());
  }
  std::fprintf(stderr, "skiff serve: stopped\n");
}

}  // namespace

void register_serve(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (chat, completions, embeddings)");
  add_model_flags(cmd, f->model);
  cmd->add_option("--host", f->server.host, "address to listen on (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", f->server.port, "port (default 8080; 0: any free port, printed on stderr)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel,--np", f->scheduler.slots, "slots: sequences decoded together (default 1)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("-c,--ctx-size", f->scheduler.context_length,
                  "context length of each slot (default: the model's, at most 4096)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-b,--batch-size", f->scheduler.batch_rows, "most tokens in one forward pass (default 256)")
      ->check(CLI::Range(1, 1 << 16));
  add_kv_cache_flags(cmd, f->kv);
  cmd->add_option("--max-queue", f->scheduler.max_queue, "requests waiting for a slot before 429 (default 64)")
      ->check(CLI::Range(0, 1 << 16));
  cmd->add_option("--api-key", f->server.api_key, "require 'Authorization: Bearer KEY' (not for /health)");
  cmd->add_option("--cors", f->server.cors_origin, "allow cross-origin requests from ORIGIN ('*': any)");
  cmd->add_option("--alias", f->server.model_id, "model id reported by /v1/models (default: the file name)");
  cmd->add_option("--max-tokens", f->server.limits.max_tokens, "ceiling on max_tokens per request (default 4096)")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--max-body", f->max_body_kib, "largest request body in KiB (default 8192)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--timeout", f->request_timeout_s, "seconds a request may take in all (default 600)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--read-timeout", f->read_timeout_s,
                  "seconds a client may take to send a request (default 10)")
      ->check(CLI::Range(1, 3600));
  cmd->add_option("--shutdown-grace", f->shutdown_grace_s,
                  "seconds requests in flight may run after SIGTERM (default 30)")
      ->check(CLI::Range(0, 3600));
  cmd->add_option("--self-spec", f->server.default_spec.exit_layer,
                  "default for requests: self-speculative decoding drafting with layers 0..E-1")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--lookup", f->server.default_spec.lookup_ngram,
                  "default for requests: prompt-lookup drafting with n-grams of this size")
      ->check(CLI::Range(1, 8));
  cmd->add_option("--draft-model", f->draft_model,
                  "a smaller model with the same vocabulary drafting for requests (the default with it)");
  cmd->add_option("--stream-interval", f->stream_interval_ms,
                  "a stream writes at most once per MS milliseconds; tokens generated meanwhile share a chunk "
                  "(default 5; 0: a chunk per token)")
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--memory", f->memories,
                  "NAME=STORE: a memory store (skiff memory build) requests may splice from with "
                  "\"skiff\": {\"memory\": NAME, \"k\": K}; repeatable")
      ->type_name("NAME=STORE");
  cmd->add_option("--draft-head", f->draft_head,
                  "self-speculation (every request's): the early head reads its own q8_0 or q4_0 copy of the "
                  "output matrix, made once (output unchanged)");
  cmd->add_option("--draft-copy", f->draft_copy,
                  "with --self-spec E: requests draft with a q8_0 or q4_0 copy of layers 0..E-1 and the head, in "
                  "KV caches of their own (fewer bytes per draft on F16/BF16 models; verification runs every "
                  "layer; output unchanged)");
  cmd->add_option("--draft-max", f->server.default_spec.draft_max, "most drafted tokens per round (default 4)")
      ->check(CLI::Range(1, 16));
  cmd->add_option("--draft-p-min", f->server.default_spec.draft_p_min,
                  "self-speculation and --draft-model: drafting stops below this top probability (default 0.8)")
      ->check(CLI::Range(0.0, 1.0));
  add_stage_flags(cmd, f->stages);
  cmd->add_option("--micro-batches", f->micro_batches,
                  "with --stages: groups of slots whose batches overlap in the stages (default: one per stage, at "
                  "most --parallel; 1: no overlap)")
      ->check(CLI::Range(1, 256));
  cmd->callback([f, cmd] { run_serve(*f, *cmd); });
}

}  // namespace skiff::cli

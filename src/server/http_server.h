// The HTTP edge of `skiff serve`: OpenAI-compatible routes on cpp-httplib. Parsing and
// checking live in request.*, the model work in scheduler.*, the JSON shapes in responses.*;
// this file wires them to HTTP: authentication, CORS, limits, streaming (SSE), errors.
//
// The server listens before the model is loaded: /health answers 503 until attach() is
// called, then 200; every other route answers 503 meanwhile.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "model/model.h"
#include "server/request.h"
#include "server/scheduler.h"

namespace skiff::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;         // 0: any free port (see HttpServer::port())
  std::string api_key;     // non-empty: every route but /health and / needs "Authorization: Bearer KEY"
  std::string cors_origin; // non-empty: CORS headers for this origin ("*" for any)
  size_t max_body_bytes = 8u << 20;
  int http_threads = 0;    // 0: slots + queue + 8
  // A stream writes at most once per interval: tokens generated meanwhile go out in one chunk,
  // so a fast model does not wake the client (and the HTTP thread) for every token on cores
  // the model needs. 0: a chunk per token.
  std::chrono::milliseconds stream_interval{5};
  std::chrono::seconds request_timeout{600};    // a request's whole life
  std::chrono::milliseconds read_timeout{10000};  // a connection's time outside handlers (slow clients)
  RequestLimits limits;
  SpecRequest default_spec;
  std::string model_id;    // the name /v1/models reports
};

class HttpServer {
 public:
  explicit HttpServer(ServerOptions options);
  ~HttpServer();

  // Binds host:port (Error when that fails) and starts answering; returns the bound port.
  int start();
  // The model is ready: routes start serving it. The scheduler must outlive the server.
  // memories: the --memory stores requests may name ("skiff": {"memory": NAME}).
  void attach(const Model& model, Scheduler& scheduler,
              std::map<std::string, const memory::QueryRetriever*> memories = {});
  // Graceful shutdown, first step: new requests get 503 (Connection: close); requests in
  // flight go on. wait_idle() then waits (at most `limit`) until none is left.
  void drain();
  void wait_idle(std::chrono::milliseconds limit);
  // Stops accepting and returns once the listener has stopped.
  void stop();
  // Blocks until stop() (from another thread or a signal watcher).
  void wait();
  int port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace skiff::server

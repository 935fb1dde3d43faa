#include "server/http_server.h"

#include <httplib.h>

#include <cstring>
#include <ctime>
#include <thread>

#include "base/error.h"
#include "memory/store.h"
#include "server/api_error.h"
#include "server/chat_page.h"
#include "server/connection_guard.h"
#include "server/responses.h"

namespace skiff::server {

namespace {

// Consecutive text events of one choice as one (text and tokens joined): a chunk per write.
std::vector<Event> merge_text_events(std::vector<Event> events) {
  std::vector<Event> out;
  for (Event& e : events) {
    if (!out.empty() && e.kind == Event::Kind::kText && out.back().kind == Event::Kind::kText &&
        out.back().choice == e.choice) {
      out.back().text += e.text;
      out.back().tokens.insert(out.back().tokens.end(), e.tokens.begin(), e.tokens.end());
    } else {
      out.push_back(std::move(e));
    }
  }
  return out;
}

// The ids of the entries a memory request read, in the order they were spliced.
nlohmann::json memory_entry_ids(const GenerationRequest& r) {
  nlohmann::json ids = nlohmann::json::array();
  for (size_t e : r.memory_entries) ids.push_back(std::string(r.memory->entry(e).id));
  return ids;
}

}  // namespace


using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, e.to_json()); }

// Constant-time comparison, so the key cannot be guessed byte by byte from response times.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "unavailable_error";
    default: return status < 500 ? "invalid_request_error" : "server_error";
  }
}

std::string status_message(int status) {
  switch (status) {
    case 400: return "bad request";
    case 404: return "no such route";
    case 405: return "method not allowed";
    case 413: return "the request body is larger than the server accepts";
    case 414: return "the request URI is too long";
    default: return fmt::format("HTTP {}", status);
  }
}

std::string base64_floats(const std::vector<float>& v) {
  static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(v.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), v.data(), bytes.size());  // x86-64: little-endian already
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t w = 0;
    for (size_t k = 0; k < 3; ++k) w = w << 8 | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? digits[(w >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

}  // namespace

struct HttpServer::Impl {
  explicit Impl(ServerOptions o) : opt(std::move(o)), guard(opt.read_timeout) {}

  ServerOptions opt;
  httplib::Server http;
  ConnectionGuard guard;
  std::thread listener;
  std::atomic<bool> ready{false};
  const Model* model = nullptr;
  Scheduler* scheduler = nullptr;
  ServedModel served;
  std::string fingerprint;
  int64_t started = 0;
  std::atomic<int64_t> rejected_busy{0}, client_errors{0}, http_requests{0};
  std::atomic<int> in_flight{0};  // routes running, streams included
  std::atomic<bool> draining{false};
  std::atomic<bool> stopped{false};  // stop() was called

  // Runs a route: the connection is busy for the guard meanwhile, errors become OpenAI-shaped
  // responses. `streams`: the route may hand the response to a content provider, which calls
  // guard.leave itself when it ends.
  template <class Fn>
  void route(const httplib::Request& req, httplib::Response& res, Fn&& fn) {
    ++http_requests;
    ++in_flight;
    guard.enter(req.remote_addr, req.remote_port);
    bool streaming = false;
    try {
      streaming = fn();
    } catch (const ApiError& e) {
      ++client_errors;
      send_error(res, e);
    } catch (const json::exception& e) {
      ++client_errors;
      send_error(res, ApiError(400, "invalid_request_error", "", "", fmt::format("bad request: {}", e.what())));
    } catch (const Error& e) {
      ++client_errors;
      send_error(res, ApiError(400, "invalid_request_error", "", "", e.what()));
    }
    if (!streaming) {
      guard.leave(req.remote_addr, req.remote_port);
      --in_flight;
    }
  }

  // Queues a task: 429 when the queue is full, 503 when shutting down.
  void submit_or_throw(const std::shared_ptr<Task>& task) {
    if (scheduler->submit(task)) return;
    if (draining) throw ApiError(503, "unavailable_error", "", "", "The server is shutting down.");
    ++rejected_busy;
    throw ApiError(429, "rate_limit_error", "", "rate_limit_exceeded",
                   "The server is busy: its request queue is full. Retry later.");
  }

  json model_json() const {
    return {{"id", served.id},
            {"object", "model"},
            {"created", started},
            {"owned_by", "skiff"},
            {"meta",
             {{"n_ctx", served.context_length},
              {"n_layers", served.n_layers},
              {"n_params", model->parameter_count()},
              {"slots", served.slots},
              {"chat_template", served.chat_template.name}}}};
  }

  void setup();
  bool generate(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  void embeddings(const httplib::Request& req, httplib::Response& res);
  std::string metrics() const;
};

HttpServer::HttpServer(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->started = static_cast<int64_t>(std::time(nullptr));
  impl_->setup();
}

HttpServer::~HttpServer() {
  stop();
  wait();
}

void HttpServer::attach(const Model& model, Scheduler& scheduler,
                        std::map<std::string, const memory::QueryRetriever*> memories) {
  Impl& s = *impl_;
  s.served.memories = std::move(memories);
  s.model = &model;
  s.scheduler = &scheduler;
  s.served.tokenizer = model.tokenizer.get();
  s.served.context_length = scheduler.context_length();
  s.served.n_layers = model.config.n_layers;
  s.served.slots = scheduler.slots();
  s.served.has_draft_model = scheduler.has_draft_model();
  if (scheduler.has_draft_model() && !s.opt.default_spec.enabled()) s.opt.default_spec.draft_model = true;
  s.served.id = s.opt.model_id;
  const Vocab& vocab = model.tokenizer->vocab();
  s.served.chat_template = detect_chat_template(vocab.chat_template);
  if (vocab.bos_id >= 0) s.served.render.bos_token = vocab.pieces[static_cast<size_t>(vocab.bos_id)];
  if (vocab.eos_id >= 0) s.served.render.eos_token = vocab.pieces[static_cast<size_t>(vocab.eos_id)];
  s.fingerprint = fmt::format("fp_skiff_{:08x}", static_cast<uint32_t>(std::hash<std::string>{}(
                                                     fmt::format("{}:{}", model.source, model.weight_bytes()))));
  s.ready = true;
}

int HttpServer::start() {
  Impl& s = *impl_;
  port_ = s.opt.port == 0 ? s.http.bind_to_any_port(s.opt.host) : (s.http.bind_to_port(s.opt.host, s.opt.port) ? s.opt.port : -1);
  if (port_ < 0) fail("cannot listen on {}:{} (address in use, or not an address of this machine)", s.opt.host, s.opt.port);
  s.guard.start(port_);
  s.listener = std::thread([&s] { s.http.listen_after_bind(); });
  return port_;
}

void HttpServer::drain() { impl_->draining = true; }

void HttpServer::wait_idle(std::chrono::milliseconds limit) {
  const auto until = Clock::now() + limit;
  while (impl_->in_flight.load() > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

void HttpServer::stop() {
  Impl& s = *impl_;
  if (s.stopped.exchange(true)) return;
  // httplib's stop() does nothing before its listen loop has started, which would then run
  // forever: an error right after start() (a bad flag, a foreign memory store) waits for it.
  if (s.listener.joinable()) {
    for (int i = 0; i < 5000 && !s.http.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  s.http.stop();
}

void HttpServer::wait() {
  if (impl_->listener.joinable()) impl_->listener.join();
  impl_->guard.stop();
}

void HttpServer::Impl::setup() {
  const int threads = opt.http_threads > 0 ? opt.http_threads : 8 + 64 + 8;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http.set_payload_max_length(opt.max_body_bytes);
  http.set_read_timeout(std::chrono::duration_cast<std::chrono::seconds>(opt.read_timeout).count() + 1, 0);
  http.set_write_timeout(10, 0);
  http.set_keep_alive_timeout(5);
  http.set_keep_alive_max_count(100);

  // Before the body is read: CORS preflight, the loading state, the API key.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!opt.cors_origin.empty()) {
      res.set_header("Access-Control-Allow-Origin", opt.cors_origin);
      res.set_header("Vary", "Origin");
      if (req.method == "OPTIONS") {
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
        res.set_header("Access-Control-Max-Age", "600");
        res.status = 204;
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    const bool public_route = req.path == "/health" || req.path == "/" || req.path == "/index.html";
    if (!opt.api_key.empty() && !public_route) {
      const std::string auth = req.get_header_value("Authorization");
      const std::string bearer = "Bearer ";
      if (auth.compare(0, bearer.size(), bearer) != 0 || !same_secret(auth.substr(bearer.size()), opt.api_key)) {
        ++client_errors;
        send_error(res, ApiError(401, "authentication_error", "", "invalid_api_key",
                                 "Incorrect or missing API key: send 'Authorization: Bearer <key>'."));
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (draining) {
      res.set_header("Connection", "close");
      send_error(res, ApiError(503, "unavailable_error", "", "", "The server is shutting down."));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!ready && req.path != "/" && req.path != "/index.html") {
      send_error(res, ApiError(503, "unavailable_error", "", "", "Loading model"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Errors httplib answers itself (404, 413, ...) get the OpenAI shape too.
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    send_error(res, ApiError(res.status, error_type(res.status), "", "", status_message(res.status)));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "server_error", "", "", what));
  });

  http.Get("/health", [this](const httplib::Request& req, httplib::Response& res) {
    route(req, res, [&] {
      send_json(res, 200, {{"status", "ok"}});
      return false;
    });
  });
  auto page = [](const httplib::Request&, httplib::Response& res) {
    res.set_content(chat_page_html(), "text/html; charset=utf-8");
  };
  http.Get("/", page);
  http.Get("/index.html", page);
  http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    route(req, res, [&] {
      send_json(res, 200, {{"object", "list"}, {"data", json::array({model_json()})}});
      return false;
    });
  });
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    route(req, res, [&] {
      if (req.matches[1] != served.id)
        throw ApiError(404, "invalid_request_error", "model", "model_not_found",
                       fmt::format("The model '{}' does not exist; this server serves '{}'.",
                                   std::string(req.matches[1]), served.id));
      send_json(res, 200, model_json());
      return false;
    });
  });
  for (const char* path : {"/v1/chat/completions", "/chat/completions"}) {
    http.Post(path, [this](const httplib::Request& req, httplib::Response& res) {
      route(req, res, [&] { return generate(req, res, Endpoint::kChat); });
    });
  }
  for (const char* path : {"/v1/completions", "/completions"}) {
    http.Post(path, [this](const httplib::Request& req, httplib::Response& res) {
      route(req, res, [&] { return generate(req, res, Endpoint::kCompletion); });
    });
  }
  for (const char* path : {"/v1/embeddings", "/embeddings"}) {
    http.Post(path, [this](const httplib::Request& req, httplib::Response& res) {
      route(req, res, [&] {
        embeddings(req, res);
        return false;
      });
    });
  }
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    route(req, res, [&] {
      const json body = parse_body(req.body, opt.limits.max_json_depth);
      send_json(res, 200, {{"tokens", parse_tokenize_request(body, served)}});
      return false;
    });
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    route(req, res, [&] {
      const json body = parse_body(req.body, opt.limits.max_json_depth);
      const std::vector<int32_t> ids = parse_detokenize_request(body, served);
      std::string text;
      for (int32_t id : ids) text += served.tokenizer->token_bytes(id);
      send_json(res, 200, {{"content", text}});
      return false;
    });
  });
  http.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    route(req, res, [&] {
      res.set_content(metrics(), "text/plain; version=0.0.4");
      return false;
    });
  });
}

bool HttpServer::Impl::generate(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  const json body = parse_body(req.body, opt.limits.max_json_depth);
  GenerationRequest r = parse_generation_request(body, endpoint, served, opt.limits, opt.default_spec);
  if (r.json_object) {
    r.json_constraint = std::make_shared<const JsonConstraint>(JsonConstraint::any_object());
  } else if (r.json_schema) {
    // Again from the text, keeping the schema's key order: properties are generated in it.
    const auto ordered = nlohmann::ordered_json::parse(req.body, nullptr, false);
    try {
      r.json_constraint = std::make_shared<const JsonConstraint>(
          JsonConstraint::from_schema(ordered.at("response_format").at("json_schema").at("schema")));
    } catch (const Error& e) {
      bad_request("response_format", "{}", e.what());
    }
  }
  auto task = std::make_shared<Task>(Task::Kind::kGenerate, std::move(r), Clock::now() + opt.request_timeout);
  submit_or_throw(task);
  const GenerationRequest& request = task->request();
  ResponseMeta meta;
  meta.id = new_id(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  meta.created = static_cast<int64_t>(std::time(nullptr));
  meta.model = request.model.empty() ? served.id : request.model;
  meta.fingerprint = fingerprint;
  meta.endpoint = endpoint;
  const int n_choices = task->sequences();
  std::vector<std::string> prefix(static_cast<size_t>(n_choices));
  if (request.echo) {
    for (int i = 0; i < n_choices; ++i)
      prefix[static_cast<size_t>(i)] = served.tokenizer->decode(request.prompts[static_cast<size_t>(i / request.n)]);
  }

  if (!request.stream) {
    std::vector<ChoiceResult> choices(static_cast<size_t>(n_choices));
    while (true) {
      // Woken by the end (or every 100 ms, to notice a client that left), not by every token:
      // a thread waking per token takes a core from the decode threads on a small machine.
      const bool done = task->wait_done_until(Clock::now() + std::chrono::milliseconds(100));
      for (Event& e : task->take(std::chrono::milliseconds(0))) {
        if (e.kind == Event::Kind::kError) {
          const bool shutting_down = e.text.find("shutting down") != std::string::npos;
          throw ApiError(shutting_down ? 503 : 408, shutting_down ? "unavailable_error" : "timeout_error", "", "",
                         e.text);
        }
        ChoiceResult& c = choices[static_cast<size_t>(e.choice)];
        if (e.kind == Event::Kind::kText) {
          c.text += e.text;
          c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
        } else if (e.kind == Event::Kind::kFinish) {
          c.finish_reason = e.finish_reason;
        }
      }
      if (done) break;
      if (guard.peer_closed(req.remote_addr, req.remote_port)) {
        task->cancel();  // nobody will read the answer: the scheduler frees the slots at its next step
        throw ApiError(400, "invalid_request_error", "", "", "the client closed the connection before the answer");
      }
    }
    json out = final_response(meta, *served.tokenizer, choices, task->usage(), request.logprobs, prefix);
    out["timings"] = timings_json(task->timings(), task->usage(), task->sequences());
    if (request.memory) out["skiff"] = {{"memory_entries", memory_entry_ids(request)}};
    send_json(res, 200, out);
    return false;
  }

  // Streaming: server-sent events, one chunk per piece of text, then [DONE].
  struct Stream {
    bool started = false;
    bool finished = false;
    Clock::time_point last_write{};
    std::vector<size_t> offsets;  // completions logprobs: text offset per choice
    int finishes = 0;             // finish chunks sent; the last carries the timings
  };
  auto state = std::make_shared<Stream>();
  state->offsets.assign(static_cast<size_t>(n_choices), 0);
  for (int i = 0; i < n_choices; ++i) state->offsets[static_cast<size_t>(i)] = prefix[static_cast<size_t>(i)].size();
  const std::string addr = req.remote_addr;
  const int port = req.remote_port;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, task, state, meta, prefix, n_choices](size_t, httplib::DataSink& sink) {
        const GenerationRequest& r = task->request();
        auto send = [&](const json& j) {
          const std::string line = "data: " + dump(j) + "\n\n";
          if (!sink.write(line.data(), line.size())) {
            task->cancel();  // the client left: the scheduler frees its slot at its next step
            return false;
          }
          return true;
        };
        if (!state->started) {
          state->started = true;
          for (int i = 0; i < n_choices; ++i) {
            json first = chunk_role(meta, i, r.include_usage);
            if (r.memory) first["skiff"] = {{"memory_entries", memory_entry_ids(r)}};
            if (meta.endpoint == Endpoint::kCompletion) first["choices"][0]["text"] = prefix[static_cast<size_t>(i)];
            if (!send(first)) return false;
          }
        }
        // At most one write per stream_interval: what is generated meanwhile waits and goes out
        // together (the first chunk is never held back).
        const auto next_write = state->last_write + opt.stream_interval;
        if (Clock::now() < next_write) task->wait_done_until(next_write);
        const bool done = task->done();
        // With an interval of 0 every token keeps its own chunk, however far the writer lags.
        std::vector<Event> events = task->take(std::chrono::milliseconds(50));
        if (opt.stream_interval.count() > 0) events = merge_text_events(std::move(events));
        if (!events.empty()) state->last_write = Clock::now();
        for (Event& e : events) {
          if (e.kind == Event::Kind::kError) {
            send(ApiError(408, "timeout_error", "", "", e.text).to_json());
            state->finished = true;
            sink.done();
            return true;
          }
          if (e.kind == Event::Kind::kText) {
            if (e.text.empty() && !r.logprobs) continue;
            size_t& offset = state->offsets[static_cast<size_t>(e.choice)];
            if (!send(chunk_text(meta, *served.tokenizer, e.choice, e.text, r.logprobs ? &e.tokens : nullptr, offset,
                                 r.include_usage)))
              return false;
            offset += e.text.size();
          } else if (e.kind == Event::Kind::kFinish) {
            json finish = chunk_finish(meta, e.choice, e.finish_reason, r.include_usage);
            // The last choice's finish comes after every token was counted: the timings are final.
            if (++state->finishes == n_choices)
              finish["timings"] = timings_json(task->timings(), task->usage(), task->sequences());
            if (!send(finish)) return false;
          }
        }
        if (done && !state->finished) {
          state->finished = true;
          if (r.include_usage) {
            json usage = chunk_usage(meta, task->usage());
            usage["timings"] = timings_json(task->timings(), task->usage(), task->sequences());
            if (!send(usage)) return false;
          }
          const std::string end = "data: [DONE]\n\n";
          if (!sink.write(end.data(), end.size())) return false;
          sink.done();
        }
        return true;
      },
      [this, task, addr, port](bool) {
        task->cancel();  // no effect once it is done; frees the slots if the stream broke
        guard.leave(addr, port);
        --in_flight;
      });
  return true;
}

void HttpServer::Impl::embeddings(const httplib::Request& req, httplib::Response& res) {
  const json body = parse_body(req.body, opt.limits.max_json_depth);
  std::vector<std::vector<int32_t>> inputs = parse_embedding_inputs(body, served, opt.limits);
  // The OpenAI SDKs ask for base64 by default: the float32 values' little-endian bytes.
  const auto format = body.find("encoding_format");
  const bool base64 = format != body.end() && *format == "base64";
  std::string model_name = served.id;
  if (const auto it = body.find("model"); it != body.end() && it->is_string()) model_name = it->get<std::string>();
  json data = json::array();
  int prompt_tokens = 0;
  // At most one input per slot in a task; larger requests run as several tasks in turn.
  for (size_t first = 0; first < inputs.size(); first += static_cast<size_t>(served.slots)) {
    GenerationRequest r;
    const size_t last = std::min(inputs.size(), first + static_cast<size_t>(served.slots));
    r.prompts.assign(inputs.begin() + static_cast<long>(first), inputs.begin() + static_cast<long>(last));
    auto task = std::make_shared<Task>(Task::Kind::kEmbed, std::move(r), Clock::now() + opt.request_timeout);
    submit_or_throw(task);
    std::vector<std::vector<float>> vectors(last - first);
    while (true) {
      const bool done = task->wait_done_until(Clock::now() + std::chrono::milliseconds(100));
      for (Event& e : task->take(std::chrono::milliseconds(0))) {
        if (e.kind == Event::Kind::kError) throw ApiError(408, "timeout_error", "", "", e.text);
        if (e.kind == Event::Kind::kEmbedding) vectors[static_cast<size_t>(e.choice)] = std::move(e.embedding);
      }
      if (done) break;
    }
    for (size_t i = 0; i < vectors.size(); ++i) {
      json v = vectors[i];
      if (base64) v = base64_floats(vectors[i]);
      data.push_back({{"object", "embedding"}, {"index", first + i}, {"embedding", std::move(v)}});
    }
    prompt_tokens += task->usage().prompt_tokens;
  }
  send_json(res, 200,
            {{"object", "list"},
             {"data", data},
             {"model", model_name},
             {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}});
}

std::string HttpServer::Impl::metrics() const {
  const SchedulerStats s = scheduler->stats();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out += fmt::format("# HELP skiff_{} {}\n# TYPE skiff_{} {}\nskiff_{} {}\n", name, help, name, type, name, value);
  };
  metric("requests_total", "counter", "Generation and embedding requests completed.", double(s.requests));
  metric("http_requests_total", "counter", "HTTP requests routed.", double(http_requests.load()));
  metric("client_errors_total", "counter", "Requests answered with a 4xx error.", double(client_errors.load()));
  metric("requests_rejected_busy_total", "counter", "Requests refused with 429 (queue full).",
         double(rejected_busy.load()));
  metric("slow_connections_closed_total", "counter", "Connections closed for sending too slowly.",
         double(guard.closed()));
  metric("prompt_tokens_total", "counter", "Prompt tokens prefilled.", double(s.prompt_tokens));
  metric("prompt_tokens_cached_total", "counter", "Prompt tokens reused from a slot's cache.", double(s.cached_tokens));
  metric("generated_tokens_total", "counter", "Tokens generated.", double(s.generated_tokens));
  metric("steps_total", "counter", "Batched forward passes.", double(s.steps));
  metric("speculative_rounds_total", "counter", "Speculative rounds (draft, then verify) of ended sequences.",
         double(s.spec_rounds));
  metric("draft_tokens_total", "counter", "Draft tokens proposed by speculative sequences that ended.",
         double(s.draft_tokens));
  metric("draft_tokens_accepted_total", "counter", "Of those, accepted by the model.", double(s.draft_accepted));
  metric("busy_seconds_total", "counter", "Seconds spent in forward passes and sampling.", s.busy_seconds);
  metric("tokens_per_second", "gauge", "Tokens (prompt and generated) per busy second since start.",
         s.busy_seconds > 0 ? double(s.prompt_tokens + s.generated_tokens) / s.busy_seconds : 0.0);
  metric("queue_depth", "gauge", "Requests waiting for a slot.", s.queue_depth);
  metric("slots_busy", "gauge", "Slots serving a request.", s.slots_busy);
  metric("slots_total", "gauge", "Slots (--parallel).", s.slots);
  metric("kv_cache_used_positions", "gauge", "Positions held in all slots' KV caches.", double(s.kv_used));
  metric("kv_cache_capacity_positions", "gauge", "Positions all slots' KV caches can hold.", double(s.kv_capacity));
  metric("kv_cache_usage_ratio", "gauge", "Used / capacity.",
         s.kv_capacity > 0 ? double(s.kv_used) / double(s.kv_capacity) : 0.0);
  return out;
}

}  // namespace skiff::server

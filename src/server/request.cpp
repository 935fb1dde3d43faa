#include "server/request.h"

#include <cmath>
#include <limits>
#include <random>

#include "base/error.h"
#include "memory/query.h"
#include "memory/splice.h"
#include "memory/store.h"
#include "server/api_error.h"
#include "tokenizer/chat_encode.h"

namespace skiff::server {

using nlohmann::json;

namespace {

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

const char* type_name(const json& v) { return v.type_name(); }

// The getters take `prefix`, the path of the object they read from ("skiff.lookup."), so that
// an error inside a nested object names the whole path as its param.
bool get_bool(const json& body, const char* name, bool fallback, const std::string& prefix = "") {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_boolean()) bad_request(prefix + name, "'{}{}' must be a boolean, not {}", prefix, name, type_name(*v));
  return v->get<bool>();
}

double get_number(const json& body, const char* name, double fallback, double lo, double hi,
                  const std::string& prefix = "") {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) bad_request(prefix + name, "'{}{}' must be a number, not {}", prefix, name, type_name(*v));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad_request(prefix + name, "'{}{}' must be in [{}, {}], got {}", prefix, name, lo, hi, x);
  return x;
}

// An integer in [lo, hi] (a number with an integral value, such as 5.0, is accepted).
int64_t as_integer(const json& v, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.is_number()) bad_request(name, "'{}' must be an integer, not {}", name, type_name(v));
  int64_t x;
  if (v.is_number_unsigned()) {  // any literal without a '-': 0 included, so `lo` is checked below
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) bad_request(name, "'{}' must be in [{}, {}], got {}", name, lo, hi, u);
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15)
      bad_request(name, "'{}' must be an integer, got {}", name, d);
    x = static_cast<int64_t>(d);
  }
  if (x < lo || x > hi) bad_request(name, "'{}' must be in [{}, {}], got {}", name, lo, hi, x);
  return x;
}

int64_t get_integer(const json& body, const char* name, int64_t fallback, int64_t lo, int64_t hi,
                    const std::string& prefix = "") {
  const json* v = field(body, name);
  return v ? as_integer(*v, prefix + name, lo, hi) : fallback;
}

const json* get_object(const json& body, const char* name, const std::string& prefix = "") {
  const json* v = field(body, name);
  if (v && !v->is_object())
    bad_request(prefix + name, "'{}{}' must be an object, not {}", prefix, name, type_name(*v));
  return v;
}

// Ids of one token array, each inside the vocabulary.
std::vector<int32_t> token_array(const json& arr, const std::string& name, const ServedModel& model) {
  std::vector<int32_t> ids;
  ids.reserve(arr.size());
  const int64_t vocab = static_cast<int64_t>(model.tokenizer->vocab().pieces.size());
  for (const json& v : arr) ids.push_back(static_cast<int32_t>(as_integer(v, name, 0, vocab - 1)));
  return ids;
}

std::vector<int32_t> encode_prompt(const std::string& text, const ServedModel& model) {
  const Vocab& vocab = model.tokenizer->vocab();
  return model.tokenizer->encode(text, vocab.add_bos, /*parse_special=*/true);
}

std::vector<std::string> parse_stop(const json& body, const RequestLimits& limits) {
  const json* v = field(body, "stop");
  std::vector<std::string> stops;
  if (!v) return stops;
  auto add = [&](const json& s) {
    if (!s.is_string()) bad_request("stop", "'stop' must be a string or an array of strings");
    std::string text = s.get<std::string>();
    if (text.empty()) bad_request("stop", "stop strings must not be empty");
    if (text.size() > limits.max_stop_bytes)
      bad_request("stop", "a stop string is {} bytes; the limit is {}", text.size(), limits.max_stop_bytes);
    stops.push_back(std::move(text));
  };
  if (v->is_array()) {
    if (static_cast<int>(v->size()) > limits.max_stop)
      bad_request("stop", "at most {} stop strings are allowed, got {}", limits.max_stop, v->size());
    for (const json& s : *v) add(s);
  } else {
    add(*v);
  }
  return stops;
}

void parse_response_format(const json& body, GenerationRequest& r) {
  const json* f = get_object(body, "response_format");
  if (!f) return;
  const json* type = field(*f, "type");
  if (!type || !type->is_string()) bad_request("response_format", "'response_format.type' must be a string");
  const std::string t = type->get<std::string>();
  if (t == "text") return;
  if (t == "json_object") {
    r.json_object = true;
    return;
  }
  if (t != "json_schema")
    bad_request("response_format", "'response_format.type' must be text, json_object or json_schema, not '{}'", t);
  const json* js = get_object(*f, "json_schema", "response_format.");
  if (!js) bad_request("response_format", "'response_format.json_schema' is missing");
  const json* schema = field(*js, "schema");
  if (!schema) {
    r.json_object = true;  // a json_schema without a schema: any JSON object
    return;
  }
  if (!schema->is_object()) bad_request("response_format", "'response_format.json_schema.schema' must be an object");
  r.json_schema = *schema;
}

void parse_skiff_extensions(const json& body, const ServedModel& model, GenerationRequest& r) {
  const json* ext = get_object(body, "skiff");
  if (!ext) return;
  r.truncate = get_bool(*ext, "truncate", false, "skiff.");
  const json* self = get_object(*ext, "self_spec", "skiff.");
  const json* lookup = get_object(*ext, "lookup", "skiff.");
  const json* draft = get_object(*ext, "draft_model", "skiff.");
  if ((self != nullptr) + (lookup != nullptr) + (draft != nullptr) > 1)
    bad_request("skiff", "choose one of skiff.self_spec, skiff.lookup and skiff.draft_model");
  const double p_min = r.spec.draft_p_min;  // the server's --draft-p-min
  if (self) {
    r.spec = {};
    r.spec.exit_layer = static_cast<int>(
        get_integer(*self, "exit_layer", 0, 1, std::max(1, model.n_layers - 1), "skiff.self_spec."));
    if (r.spec.exit_layer == 0) bad_request("skiff.self_spec", "'skiff.self_spec.exit_layer' is required");
    r.spec.draft_max = static_cast<int>(get_integer(*self, "draft_max", 4, 1, 16, "skiff.self_spec."));
    r.spec.adaptive = get_bool(*self, "adaptive", false, "skiff.self_spec.");
    r.spec.lookup_ngram = static_cast<int>(get_integer(*self, "lookup_ngram", 0, 0, 8, "skiff.self_spec."));
    r.spec.dynamic_exit = get_bool(*self, "dynamic_exit", false, "skiff.self_spec.");
    r.spec.draft_p_min =
        static_cast<float>(get_number(*self, "draft_p_min", p_min, 0.0, 1.0, "skiff.self_spec."));
    if (r.spec.dynamic_exit && r.spec.adaptive)
      bad_request("skiff.self_spec", "'dynamic_exit' and 'adaptive' exclude each other");
  } else if (lookup) {
    r.spec = {};
    r.spec.lookup_ngram = static_cast<int>(get_integer(*lookup, "ngram", 3, 1, 8, "skiff.lookup."));
    r.spec.draft_max = static_cast<int>(get_integer(*lookup, "draft_max", 4, 1, 16, "skiff.lookup."));
  } else if (draft) {
    if (!model.has_draft_model)
      bad_request("skiff.draft_model", "this server has no draft model (start it with --draft-model FILE)");
    r.spec = {};
    r.spec.draft_model = true;
    r.spec.draft_max = static_cast<int>(get_integer(*draft, "draft_max", 4, 1, 16, "skiff.draft_model."));
    r.spec.draft_p_min =
        static_cast<float>(get_number(*draft, "draft_p_min", p_min, 0.0, 1.0, "skiff.draft_model."));
  }
  // "speculative": false turns the server's default off for this request.
  if (!get_bool(*ext, "speculative", true, "skiff.")) r.spec = {};
}

void reject_unsupported(const json& body) {
  for (const char* name : {"tools", "functions", "tool_choice", "function_call", "audio", "modalities", "suffix",
                           "prediction"}) {
    if (field(body, name)) bad_request(name, "'{}' is not supported by this server", name);
  }
  if (const json* b = field(body, "best_of"); b && as_integer(*b, "best_of", 0, 1 << 20) > 1)
    bad_request("best_of", "'best_of' > 1 is not supported");
}

// Fits the prompt and the completion into the context: OpenAI's context_length_exceeded
// unless the client asked for truncation, which keeps the prompt's end.
void fit_context(GenerationRequest& r, std::vector<int32_t>& prompt, const ServedModel& model,
                 bool max_tokens_given) {
  const int ctx = model.context_length;
  const int asked = max_tokens_given ? r.max_tokens : 0;
  const int64_t need = static_cast<int64_t>(prompt.size()) + std::max(asked, 1);
  if (need > ctx) {
    if (!r.truncate) {
      throw ApiError(400, "invalid_request_error", r.endpoint == Endpoint::kChat ? "messages" : "prompt",
                     "context_length_exceeded",
                     fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens "
                                 "({} in the prompt, {} for the completion). Please reduce the length of the prompt "
                                 "or max_tokens, or ask for truncation with \"skiff\": {{\"truncate\": true}}.",
                                 ctx, need, prompt.size(), std::max(asked, 1)));
    }
    const int keep = ctx - std::max(asked, std::max(1, ctx / 4));
    if (keep < 1) bad_request("max_tokens", "max_tokens {} leaves no room for the prompt in {} positions", asked, ctx);
    prompt.erase(prompt.begin(), prompt.end() - keep);
  }
}

}  // namespace

json parse_body(std::string_view body, int max_depth) {
  // Nesting is checked on the raw text first: nlohmann's parser recurses per level.
  int depth = 0;
  bool in_string = false, escape = false;
  for (char c : body) {
    if (in_string) {
      if (escape) escape = false;
      else if (c == '\\') escape = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) bad_request("", "the request body nests deeper than {} levels", max_depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) bad_request("", "the request body is not valid JSON");
  if (!j.is_object()) bad_request("", "the request body must be a JSON object, not {}", type_name(j));
  return j;
}

namespace {

// The messages of a chat request, checked.
std::vector<ChatMessage> chat_messages(const json& messages, const RequestLimits& limits) {
  if (!messages.is_array()) bad_request("messages", "'messages' must be an array, not {}", type_name(messages));
  if (messages.empty()) bad_request("messages", "'messages' must not be empty");
  if (static_cast<int>(messages.size()) > limits.max_messages)
    bad_request("messages", "at most {} messages are allowed", limits.max_messages);
  std::vector<ChatMessage> list;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad_request(where, "'{}' must be an object", where);
    const json* role = field(m, "role");
    if (!role || !role->is_string()) bad_request(where + ".role", "'{}.role' must be a string", where);
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant")
      bad_request(where + ".role", "role '{}' is not supported (system, developer, user, assistant)", r);
    const json* content = field(m, "content");
    std::string text;
    if (!content) {
      if (r != "assistant") bad_request(where + ".content", "'{}.content' is missing", where);
    } else if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      for (const json& part : *content) {
        const json* type = part.is_object() ? field(part, "type") : nullptr;
        if (!type || *type != "text")
          bad_request(where + ".content", "only text content parts are supported in '{}.content'", where);
        const json* t = field(part, "text");
        if (!t || !t->is_string()) bad_request(where + ".content", "a text part needs a string 'text'");
        text += t->get<std::string>();
      }
    } else {
      bad_request(where + ".content", "'{}.content' must be a string or an array of parts", where);
    }
    list.push_back({r, std::move(text)});
  }
  return list;
}

}  // namespace

std::string render_chat(const json& messages, const ServedModel& model, const RequestLimits& limits) {
  try {
    std::string text = apply_chat_template(model.chat_template, chat_messages(messages, limits), true, model.render);
    if (model.tokenizer->vocab().add_bos) text = std::string(strip_bos_text(text, model.render.bos_token));
    return text;
  } catch (const Error& e) {
    bad_request("messages", "{}", e.what());
  }
}

std::vector<int32_t> encode_chat_request(const json& messages, const ServedModel& model, const RequestLimits& limits) {
  try {
    return encode_chat(*model.tokenizer, model.chat_template, chat_messages(messages, limits), true, model.render);
  } catch (const Error& e) {
    bad_request("messages", "{}", e.what());
  }
}

namespace {

// The text a memory request retrieves with when it gives no skiff.query: the prompt string, or
// the last user message's text.
std::string default_memory_query(const json& body, Endpoint endpoint) {
  if (endpoint == Endpoint::kCompletion) {
    const json* p = field(body, "prompt");
    if (p && p->is_string()) return p->get<std::string>();
    bad_request("skiff.query", "a memory request with a token or multi-prompt 'prompt' needs 'skiff.query'");
  }
  const json& messages = body.at("messages");  // checked by chat_messages
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->value("role", "") != "user") continue;
    const json* content = field(*it, "content");
    if (content && content->is_string()) return content->get<std::string>();
    std::string text;
    for (const json& part : *content) text += part.at("text").get<std::string>();
    return text;
  }
  bad_request("skiff.query", "a memory request without a user message needs 'skiff.query'");
}

// "skiff": {"memory": NAME, "k": K, "query": TEXT, "recompute": N}: retrieves and puts the entries' tokens
// after BOS in prompts[0] (the scheduler splices their stored KV there).
void parse_memory(const json& body, Endpoint endpoint, const ServedModel& model, GenerationRequest& r) {
  const json* ext = get_object(body, "skiff");
  const json* name = ext ? field(*ext, "memory") : nullptr;
  if (!name) return;
  if (!name->is_string()) bad_request("skiff.memory", "'skiff.memory' must be the name of a store (a string)");
  auto it = model.memories.find(name->get<std::string>());
  if (it == model.memories.end()) {
    std::string names;
    for (const auto& [n, _] : model.memories) names += (names.empty() ? "" : ", ") + n;
    bad_request("skiff.memory", "no memory store '{}' on this server ({})", name->get<std::string>(),
                names.empty() ? "it has none: start it with --memory NAME=STORE" : "it has " + names);
  }
  if (r.prompts.size() != 1 || r.n != 1 || r.spec.enabled() || r.truncate || r.echo)
    bad_request("skiff.memory", "a memory request takes one prompt, n = 1, no speculation, truncation or echo");
  const int k = static_cast<int>(get_integer(*ext, "k", 8, 1, 64, "skiff."));
  r.memory_recompute = static_cast<int>(get_integer(*ext, "recompute", 0, 0, 4096, "skiff."));
  std::string query;
  if (const json* q = field(*ext, "query")) {
    if (!q->is_string() || q->get<std::string>().empty())
      bad_request("skiff.query", "'skiff.query' must be a non-empty string");
    query = q->get<std::string>();
  } else {
    query = default_memory_query(body, endpoint);
  }
  const memory::QueryRetriever& retriever = *it->second;
  try {
    r.memory_entries = retriever.top_k(query, std::min(k, static_cast<int>(retriever.store().size())));
  } catch (const Error& e) {
    bad_request("skiff.query", "{}", e.what());
  }
  r.memory = &retriever.store();
  // [BOS] [entry 1] ... [entry k] prompt: the layout `skiff memory ask --method splice` reads.
  const int32_t bos = model.tokenizer->bos();
  std::vector<int32_t>& prompt = r.prompts[0];
  std::vector<int32_t> laid = {bos};
  for (size_t e : r.memory_entries) {
    const std::span<const int32_t> t = r.memory->tokens(e);
    if (r.memory_recompute > 0) {
      try {
        memory::recomputed_rows(*r.memory, e, r.memory_recompute);
      } catch (const Error& err) {
        bad_request("skiff.recompute", "{}", err.what());
      }
    }
    laid.insert(laid.end(), t.begin(), t.end());
  }
  r.memory_positions = static_cast<int>(laid.size());
  laid.insert(laid.end(), prompt.begin() + (!prompt.empty() && prompt[0] == bos), prompt.end());
  prompt = std::move(laid);
}

}  // namespace

GenerationRequest parse_generation_request(const json& body, Endpoint endpoint, const ServedModel& model,
                                           const RequestLimits& limits, const SpecRequest& default_spec) {
  GenerationRequest r;
  r.endpoint = endpoint;
  r.spec = default_spec;
  reject_unsupported(body);
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) bad_request("model", "'model' must be a string");
    r.model = m->get<std::string>();
  }

  // Prompts.
  if (endpoint == Endpoint::kChat) {
    const json* messages = field(body, "messages");
    if (!messages) bad_request("messages", "'messages' is required");
    r.prompts.push_back(encode_chat_request(*messages, model, limits));
  } else {
    const json* p = field(body, "prompt");
    if (!p) bad_request("prompt", "'prompt' is required");
    if (p->is_string()) {
      r.prompts.push_back(encode_prompt(p->get<std::string>(), model));
    } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
      r.prompts.push_back(token_array(*p, "prompt", model));
    } else if (p->is_array() && !p->empty()) {
      if (static_cast<int>(p->size()) > limits.max_prompts)
        bad_request("prompt", "at most {} prompts are allowed in one request", limits.max_prompts);
      for (const json& e : *p) {
        if (e.is_string()) r.prompts.push_back(encode_prompt(e.get<std::string>(), model));
        else if (e.is_array()) r.prompts.push_back(token_array(e, "prompt", model));
        else bad_request("prompt", "'prompt' must be a string, an array of strings, of token ids or of id arrays");
      }
    } else {
      bad_request("prompt", "'prompt' must be a non-empty string or array");
    }
    r.echo = get_bool(body, "echo", false);
  }
  for (const auto& p : r.prompts)
    if (p.empty()) bad_request(endpoint == Endpoint::kChat ? "messages" : "prompt", "the prompt has no tokens");

  // Lengths.
  const json* mt = field(body, "max_completion_tokens");
  const char* mt_name = "max_completion_tokens";
  if (!mt) {
    mt = field(body, "max_tokens");
    mt_name = "max_tokens";
  }
  if (mt) r.max_tokens = static_cast<int>(as_integer(*mt, mt_name, 1, limits.max_tokens));
  r.n = static_cast<int>(get_integer(body, "n", 1, 1, std::min(limits.max_n, model.slots)));
  if (r.n * static_cast<int>(r.prompts.size()) > model.slots)
    bad_request("n", "{} prompts x n = {} sequences do not fit the server's {} slots", r.prompts.size(),
                r.n * r.prompts.size(), model.slots);

  // Sampling: OpenAI's defaults (temperature 1, top_p 1), llama.cpp's extensions off.
  SamplerParams& s = r.sampling;
  s.temperature = static_cast<float>(get_number(body, "temperature", 1.0, 0.0, 2.0));
  s.top_p = static_cast<float>(get_number(body, "top_p", 1.0, 0.0, 1.0));
  if (s.top_p <= 0.0f) bad_request("top_p", "'top_p' must be greater than 0");
  s.top_k = static_cast<int>(get_integer(body, "top_k", 0, 0, 1 << 20));
  s.min_p = static_cast<float>(get_number(body, "min_p", 0.0, 0.0, 1.0));
  s.presence_penalty = static_cast<float>(get_number(body, "presence_penalty", 0.0, -2.0, 2.0));
  s.frequency_penalty = static_cast<float>(get_number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  s.repeat_penalty = static_cast<float>(get_number(body, "repeat_penalty", 1.0, 0.01, 10.0));
  s.repeat_last_n = static_cast<int>(get_integer(body, "repeat_last_n", 64, -1, 1 << 20));
  if (const json* seed = field(body, "seed")) {
    s.seed = static_cast<uint64_t>(as_integer(*seed, "seed", std::numeric_limits<int64_t>::min(),
                                              std::numeric_limits<int64_t>::max()));
    r.seed_given = true;
  } else {
    s.seed = std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}();
  }
  r.stop = parse_stop(body, limits);

  // Log probabilities: chat takes logprobs: bool + top_logprobs; completions logprobs: int.
  if (const json* lp = field(body, "logprobs")) {
    if (endpoint == Endpoint::kChat) {
      if (!lp->is_boolean()) bad_request("logprobs", "'logprobs' must be a boolean");
      r.logprobs = lp->get<bool>();
      r.top_logprobs = static_cast<int>(get_integer(body, "top_logprobs", 0, 0, 20));
      if (field(body, "top_logprobs") && !r.logprobs)
        bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    } else {
      r.top_logprobs = static_cast<int>(as_integer(*lp, "logprobs", 0, 5));
      r.logprobs = true;
    }
  } else if (field(body, "top_logprobs")) {
    bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  }
  if (const json* lb = get_object(body, "logit_bias")) {
    if (static_cast<int>(lb->size()) > limits.max_logit_bias)
      bad_request("logit_bias", "at most {} logit_bias entries are allowed", limits.max_logit_bias);
    const int64_t vocab = static_cast<int64_t>(model.tokenizer->vocab().pieces.size());
    for (auto it = lb->begin(); it != lb->end(); ++it) {
      // A key is a token id in decimal digits only (strtoll would also take " 7", "+7" and
      // "7\u0000junk").
      const std::string& key = it.key();
      int64_t id = 0;
      bool digits = !key.empty() && key.size() <= 10;
      for (char c : key) {
        if (c < '0' || c > '9') digits = false;
        if (digits) id = id * 10 + (c - '0');
      }
      if (!digits || id >= vocab)
        bad_request("logit_bias", "logit_bias key '{}' is not a token id of this model (0..{})", key, vocab - 1);
      if (!it->is_number()) bad_request("logit_bias", "logit_bias values must be numbers");
      const double bias = it->get<double>();
      if (!std::isfinite(bias) || bias < -100 || bias > 100)
        bad_request("logit_bias", "logit_bias values must be in [-100, 100], got {}", bias);
      r.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(bias));
    }
  }

  r.stream = get_bool(body, "stream", false);
  if (const json* so = get_object(body, "stream_options")) {
    if (!r.stream) bad_request("stream_options", "'stream_options' is only allowed when 'stream' is true");
    r.include_usage = get_bool(*so, "include_usage", false, "stream_options.");
  }
  parse_response_format(body, r);
  parse_skiff_extensions(body, model, r);
  // Speculation verifies drafts against the sampler's distribution: logit_bias, constrained
  // JSON, logprobs and several choices are not combined with it. Asked for explicitly that is
  // an error; the server's default just steps aside.
  const bool spec_explicit = [&] {
    const json* ext = get_object(body, "skiff");
    return ext && (field(*ext, "self_spec") || field(*ext, "lookup") || field(*ext, "draft_model"));
  }();
  if (r.spec.enabled() && (!r.logit_bias.empty() || r.json_object || r.json_schema || r.logprobs || r.n > 1)) {
    if (spec_explicit)
      bad_request("skiff", "speculative decoding cannot be combined with logit_bias, response_format, logprobs or n > 1");
    r.spec = {};
  }
  if (r.spec.enabled() && !spec_explicit && get_object(body, "skiff") && field(*get_object(body, "skiff"), "memory"))
    r.spec = {};  // the server's default steps aside for a memory request too
  parse_memory(body, endpoint, model, r);

  for (auto& p : r.prompts) fit_context(r, p, model, mt != nullptr);
  if (!mt) {
    // What fits after the longest prompt: every prompt's choices share one max_tokens.
    size_t longest = 0;
    for (const auto& p : r.prompts) longest = std::max(longest, p.size());
    r.max_tokens = std::min(limits.max_tokens, model.context_length - static_cast<int>(longest));
  }
  return r;
}

std::vector<int32_t> parse_tokenize_request(const json& body, const ServedModel& model) {
  const json* c = field(body, "content");
  if (!c || !c->is_string()) bad_request("content", "'content' must be a string");
  const bool add_special = get_bool(body, "add_special", false);
  const bool parse_special = get_bool(body, "parse_special", true);
  return model.tokenizer->encode(c->get<std::string>(), add_special && model.tokenizer->vocab().add_bos,
                                 parse_special);
}

std::vector<int32_t> parse_detokenize_request(const json& body, const ServedModel& model) {
  const json* t = field(body, "tokens");
  if (!t || !t->is_array()) bad_request("tokens", "'tokens' must be an array of token ids");
  return token_array(*t, "tokens", model);
}

std::vector<std::vector<int32_t>> parse_embedding_inputs(const json& body, const ServedModel& model,
                                                         const RequestLimits& limits) {
  const json* in = field(body, "input");
  if (!in) bad_request("input", "'input' is required");
  if (const json* f = field(body, "encoding_format"); f && *f != "float" && *f != "base64")
    bad_request("encoding_format", "encoding_format must be 'float' or 'base64'");
  if (field(body, "dimensions")) bad_request("dimensions", "'dimensions' is not supported");
  std::vector<std::vector<int32_t>> out;
  auto text = [&](const json& s) { out.push_back(model.tokenizer->encode(s.get<std::string>(), false, false)); };
  if (in->is_string()) {
    text(*in);
  } else if (in->is_array() && !in->empty() && (*in)[0].is_number()) {
    out.push_back(token_array(*in, "input", model));
  } else if (in->is_array() && !in->empty()) {
    if (static_cast<int>(in->size()) > limits.max_prompts * 16)
      bad_request("input", "at most {} inputs are allowed", limits.max_prompts * 16);
    for (const json& e : *in) {
      if (e.is_string()) text(e);
      else if (e.is_array()) out.push_back(token_array(e, "input", model));
      else bad_request("input", "'input' must be a string, an array of strings, of token ids or of id arrays");
    }
  } else {
    bad_request("input", "'input' must be a non-empty string or array");
  }
  for (const auto& ids : out) {
    if (ids.empty()) bad_request("input", "an input has no tokens");
    if (static_cast<int>(ids.size()) > model.context_length)
      throw ApiError(400, "invalid_request_error", "input", "context_length_exceeded",
                     fmt::format("an input has {} tokens; the context holds {}", ids.size(), model.context_length));
  }
  return out;
}

}  // namespace skiff::server

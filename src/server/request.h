// OpenAI requests (chat completions, completions) parsed and checked into what the scheduler
// runs. Every field is validated here, with the OpenAI error shape (api_error.h) naming the
// field at fault; nothing a client sends reaches the engine unchecked. Unknown fields are
// ignored, as OpenAI's API does; fields skiff cannot honor are an error, never silently dropped.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "decode/speculative.h"
#include "sample/json_constraint.h"
#include "sample/sampler.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace skiff::memory {
class MemoryStore;
class QueryRetriever;
}  // namespace skiff::memory

namespace skiff::server {

// Ceilings on what one request may ask for (all configurable from `skiff serve`).
struct RequestLimits {
  int max_tokens = 4096;       // ceiling on max_tokens (and the default when absent: what fits)
  int max_n = 8;               // choices per request (also at most the slot count)
  int max_prompts = 16;        // prompts in one /v1/completions request
  int max_stop = 8;            // stop strings, each at most max_stop_bytes
  size_t max_stop_bytes = 256;
  int max_logit_bias = 1024;   // entries
  int max_json_depth = 64;     // nesting of the request body
  int max_messages = 1024;
};

// Per-request speculative decoding: "skiff": {"self_spec": {"exit_layer": E, "draft_max": D,
// "adaptive": bool, "lookup_ngram": N}}, {"lookup": {"ngram": N, "draft_max": D}} or
// {"draft_model": {"draft_max": D}}; "skiff": {"speculative": false} turns the server's
// default off.
struct SpecRequest {
  int exit_layer = 0;   // > 0: self-speculation drafting with layers [0, exit_layer)
  int lookup_ngram = 0; // > 0: prompt-lookup drafting with n-grams of this size (with
                        // exit_layer: lookup first, the early exit continues)
  bool adaptive = false;  // self-speculation: the draft length from the cost model
  bool dynamic_exit = false;  // self-speculation: the exit layer chosen every round
  bool draft_model = false;  // the server's --draft-model drafts
  int draft_max = 4;
  // Self-speculation and a draft model: drafting stops when the draft's top probability falls
  // below this (not with `adaptive`).
  float draft_p_min = kDefaultDraftPMin;
  bool enabled() const { return exit_layer > 0 || lookup_ngram > 0 || draft_model; }
};

enum class Endpoint { kChat, kCompletion };

struct GenerationRequest {
  Endpoint endpoint = Endpoint::kCompletion;
  std::string model;
  // One prompt per entry (chat: exactly one); each gets n choices, numbered
  // prompt_index * n + i as OpenAI numbers them.
  std::vector<std::vector<int32_t>> prompts;
  int n = 1;
  int max_tokens = 0;
  SamplerParams sampling;
  bool seed_given = false;
  std::vector<std::string> stop;
  bool logprobs = false;
  int top_logprobs = 0;
  std::vector<std::pair<int32_t, float>> logit_bias;
  bool stream = false;
  bool include_usage = false;
  // response_format: json_object (any object) or json_schema (the schema).
  bool json_object = false;
  std::optional<nlohmann::json> json_schema;
  // The automaton for either, built by the caller from the schema in its original key order
  // (nlohmann::json sorts keys); the scheduler copies it per choice.
  std::shared_ptr<const JsonConstraint> json_constraint;
  SpecRequest spec;
  bool truncate = false;  // "skiff": {"truncate": true}: keep the end of a too-long prompt
  // "skiff": {"memory": NAME, "k": K, "query": TEXT}: the K entries of the server's --memory
  // store NAME nearest to the query (default: the prompt, or the last user message) are
  // spliced in as stored KV between BOS and the prompt (docs/MEMORY.md). prompts[0] is then
  // [BOS] + the entries' tokens + the prompt, and its first memory_positions positions come
  // from the store, not from a prefill. memory is null without a memory request.
  // "recompute": N prefills each entry's last N tokens after its stored rows instead
  // (`skiff memory ask --method splice-recompute`); 0: splice only.
  const memory::MemoryStore* memory = nullptr;
  std::vector<size_t> memory_entries;
  int memory_positions = 0;
  int memory_recompute = 0;
  bool echo = false;      // completions: the prompt text before the completion
};

// What parsing needs to know about the model being served.
struct ServedModel {
  const Tokenizer* tokenizer = nullptr;
  ChatTemplate chat_template;
  ChatRenderOptions render;
  std::string id;          // the model name reported by /v1/models
  int context_length = 0;  // of each slot
  int n_layers = 0;
  int slots = 1;
  bool has_draft_model = false;
  // --memory NAME=STORE: the stores requests may name, with their retrievers.
  std::map<std::string, const memory::QueryRetriever*> memories;
};

// The body as JSON. ApiError 400 for malformed JSON or nesting deeper than max_depth (checked
// before parsing, so a hostile body cannot exhaust the stack).
nlohmann::json parse_body(std::string_view body, int max_depth);

// A /v1/chat/completions or /v1/completions body. ApiError (400) naming the first bad field;
// a prompt that does not fit the context is 400 context_length_exceeded unless truncation was
// asked for. `defaults` gives the server's sampling and speculation defaults.
GenerationRequest parse_generation_request(const nlohmann::json& body, Endpoint endpoint, const ServedModel& model,
                                           const RequestLimits& limits, const SpecRequest& default_spec = {});

// The messages of a chat request rendered with the model's template.
std::string render_chat(const nlohmann::json& messages, const ServedModel& model, const RequestLimits& limits);
// ... and tokenized: the template's markers become control tokens, special-token text inside
// the messages stays text (tokenizer/chat_encode.h).
std::vector<int32_t> encode_chat_request(const nlohmann::json& messages, const ServedModel& model,
                                         const RequestLimits& limits);

// /tokenize {"content": str, "add_special": bool, "parse_special": bool} -> token ids;
// /detokenize {"tokens": [ids]} -> text. ApiError for bad fields or out-of-range ids.
std::vector<int32_t> parse_tokenize_request(const nlohmann::json& body, const ServedModel& model);
std::vector<int32_t> parse_detokenize_request(const nlohmann::json& body, const ServedModel& model);

// /v1/embeddings "input": a string, an array of strings, an array of ids or of id arrays.
std::vector<std::vector<int32_t>> parse_embedding_inputs(const nlohmann::json& body, const ServedModel& model,
                                                         const RequestLimits& limits);

}  // namespace skiff::server

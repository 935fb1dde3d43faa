// The OpenAI response shapes: chat.completion, chat.completion.chunk, text_completion (whole and
// streamed), usage with prompt_tokens_details.cached_tokens, both logprobs formats, embeddings,
// models. Pure functions of what the scheduler produced, so they can be tested alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/request.h"
#include "server/task.h"
#include "tokenizer/tokenizer.h"

namespace skiff::server {

// What every response of one request shares.
struct ResponseMeta {
  std::string id;           // chatcmpl-... / cmpl-...
  int64_t created = 0;      // unix seconds
  std::string model;
  std::string fingerprint;  // system_fingerprint
  Endpoint endpoint = Endpoint::kChat;
};

// One choice accumulated from events (non-streamed responses).
struct ChoiceResult {
  std::string text;
  std::vector<TokenLogprob> tokens;
  std::string finish_reason;
};

nlohmann::json usage_json(const Usage& u);
// llama-server's "timings" object: prompt_n/ms/per_second (tokens read, from the scheduler
// taking the task to its first token), predicted_n/ms/per_second (tokens generated; the time
// from the first token to the last; per second counts the tokens after each sequence's first,
// i.e. decoding steps, not the first token that came with the prompt).
nlohmann::json timings_json(const Timings& t, const Usage& u, int sequences);

// {"content": [{token, logprob, bytes, top_logprobs}]} (chat) for these tokens.
nlohmann::json chat_logprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& tokens);
// {tokens, token_logprobs, top_logprobs, text_offset} (completions); offsets start at `offset`.
nlohmann::json completion_logprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& tokens, size_t offset);

// A whole (non-streamed) response. `prefix[i]`: text before choice i's (echo), may be empty.
nlohmann::json final_response(const ResponseMeta& meta, const Tokenizer& tok, const std::vector<ChoiceResult>& choices,
                              const Usage& usage, bool logprobs, const std::vector<std::string>& prefix = {});

// Streamed chunks. `delta_text` / `tokens` for a text chunk; finish_reason for the last of a
// choice; `with_usage_null` adds "usage": null (stream_options.include_usage).
nlohmann::json chunk_role(const ResponseMeta& meta, int choice, bool with_usage_null);
nlohmann::json chunk_text(const ResponseMeta& meta, const Tokenizer& tok, int choice, const std::string& text,
                          const std::vector<TokenLogprob>* tokens, size_t text_offset, bool with_usage_null);
nlohmann::json chunk_finish(const ResponseMeta& meta, int choice, const std::string& finish_reason,
                            bool with_usage_null);
nlohmann::json chunk_usage(const ResponseMeta& meta, const Usage& usage);

// JSON text for responses: invalid UTF-8 (a token's partial bytes) is replaced, never thrown.
std::string dump(const nlohmann::json& j);

// "chatcmpl-" + 24 random hex digits, etc.
std::string new_id(const std::string& prefix);

}  // namespace skiff::server

#include "server/responses.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <fmt/format.h>

namespace skiff::server {

using nlohmann::json;

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

const char* object_name(Endpoint e, bool chunk) {
  if (e == Endpoint::kChat) return chunk ? "chat.completion.chunk" : "chat.completion";
  return "text_completion";
}

json base(const ResponseMeta& meta, bool chunk) {
  return {{"id", meta.id},
          {"object", object_name(meta.endpoint, chunk)},
          {"created", meta.created},
          {"model", meta.model},
          {"system_fingerprint", meta.fingerprint}};
}

}  // namespace

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string new_id(const std::string& prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return fmt::format("{}{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"completion_tokens_details", {{"reasoning_tokens", 0}}}};
}

json timings_json(const Timings& t, const Usage& u, int sequences) {
  auto ms = [](Timings::Clock::time_point a, Timings::Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const int prompt_n = u.prompt_tokens - u.cached_tokens;
  const double prompt_ms = t.started && t.tokens > 0 ? ms(t.start, t.first_token) : 0.0;
  const double predicted_ms = t.tokens > 0 ? ms(t.first_token, t.last_token) : 0.0;
  const int steps = std::max(0, t.tokens - sequences);
  json out = {{"prompt_n", prompt_n},       {"prompt_ms", prompt_ms},       {"prompt_per_second", nullptr},
              {"predicted_n", t.tokens}, {"predicted_ms", predicted_ms}, {"predicted_per_second", nullptr}};
  if (prompt_ms > 0) out["prompt_per_second"] = prompt_n * 1000.0 / prompt_ms;
  if (predicted_ms > 0 && steps > 0) out["predicted_per_second"] = steps * 1000.0 / predicted_ms;
  return out;
}

json chat_logprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& tokens) {
  json content = json::array();
  for (const TokenLogprob& t : tokens) {
    const std::string piece = tok.token_bytes(t.id);
    json top = json::array();
    for (const auto& [id, lp] : t.top) {
      const std::string p = tok.token_bytes(id);
      top.push_back({{"token", p}, {"logprob", lp}, {"bytes", bytes_of(p)}});
    }
    content.push_back({{"token", piece}, {"logprob", t.logprob}, {"bytes", bytes_of(piece)}, {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

json completion_logprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& tokens, size_t offset) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& t : tokens) {
    const std::string piece = tok.token_bytes(t.id);
    toks.push_back(piece);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [id, lp] : t.top) top[tok.token_bytes(id)] = lp;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += piece.size();
  }
  return {{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json final_response(const ResponseMeta& meta, const Tokenizer& tok, const std::vector<ChoiceResult>& choices,
                    const Usage& usage, bool logprobs, const std::vector<std::string>& prefix) {
  json out = base(meta, false);
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    const std::string pre = i < prefix.size() ? prefix[i] : "";
    json choice = {{"index", i}, {"finish_reason", c.finish_reason}, {"logprobs", nullptr}};
    if (meta.endpoint == Endpoint::kChat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}};
      if (logprobs) choice["logprobs"] = chat_logprobs(tok, c.tokens);
    } else {
      choice["text"] = pre + c.text;
      if (logprobs) choice["logprobs"] = completion_logprobs(tok, c.tokens, pre.size());
    }
    list.push_back(std::move(choice));
  }
  out["choices"] = std::move(list);
  out["usage"] = usage_json(usage);
  return out;
}

json chunk_role(const ResponseMeta& meta, int choice, bool with_usage_null) {
  json out = base(meta, true);
  json c = {{"index", choice}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (meta.endpoint == Endpoint::kChat) c["delta"] = {{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}};
  else c["text"] = "";
  out["choices"] = json::array({c});
  if (with_usage_null) out["usage"] = nullptr;
  return out;
}

json chunk_text(const ResponseMeta& meta, const Tokenizer& tok, int choice, const std::string& text,
                const std::vector<TokenLogprob>* tokens, size_t text_offset, bool with_usage_null) {
  json out = base(meta, true);
  json c = {{"index", choice}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (meta.endpoint == Endpoint::kChat) {
    c["delta"] = {{"content", text}};
    if (tokens) c["logprobs"] = chat_logprobs(tok, *tokens);
  } else {
    c["text"] = text;
    if (tokens) c["logprobs"] = completion_logprobs(tok, *tokens, text_offset);
  }
  out["choices"] = json::array({c});
  if (with_usage_null) out["usage"] = nullptr;
  return out;
}

json chunk_finish(const ResponseMeta& meta, int choice, const std::string& finish_reason, bool with_usage_null) {
  json out = base(meta, true);
  json c = {{"index", choice}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  if (meta.endpoint == Endpoint::kChat) c["delta"] = json::object();
  else c["text"] = "";
  out["choices"] = json::array({c});
  if (with_usage_null) out["usage"] = nullptr;
  return out;
}

json chunk_usage(const ResponseMeta& meta, const Usage& usage) {
  json out = base(meta, true);
  out["choices"] = json::array();
  out["usage"] = usage_json(usage);
  return out;
}

}  // namespace skiff::server

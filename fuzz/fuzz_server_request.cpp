// libFuzzer target for `skiff serve`'s request parsing (src/server/request.cpp): each input is a
// request body, read with parse_body (the nesting limit first) and then given to every parser a
// server endpoint uses: parse_generation_request for /v1/chat/completions and /v1/completions,
// parse_tokenize_request, parse_detokenize_request and parse_embedding_inputs. An ApiError or a
// skiff::Error is a rejected request, which is fine; a crash, a sanitizer report or any other
// exception is a bug. What is accepted is checked too: prompts non-empty, inside the vocabulary,
// and prompt + max_tokens inside the context; n and max_tokens inside their limits.
//
// The model is the LLaMA-2 vocabulary (SentencePiece, 32000 pieces) read at startup from
// $SKIFF_FUZZ_VOCAB, else ../shared/models/ggml-vocab-llama-spm.gguf next to the repo, served
// with a context of 256 positions and 4 slots. The chat template is chosen by the input's last
// byte among every family skiff renders, so every renderer sees fuzzed messages.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"
#include "server/api_error.h"
#include "server/request.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace {

using skiff::server::ServedModel;

std::string vocab_path() {
  const char* path = std::getenv("SKIFF_FUZZ_VOCAB");
  if (path != nullptr && *path != '\0') return path;
  std::string source = __FILE__;  // <repo>/fuzz/fuzz_server_request.cpp
  std::string repo = source.substr(0, source.rfind('/'));
  repo = repo.substr(0, repo.rfind('/'));
  return repo + "/../shared/models/ggml-vocab-llama-spm.gguf";
}

struct Served {
  std::unique_ptr<skiff::Tokenizer> tokenizer;
  std::vector<ServedModel> models;  // one per chat template family
};

const Served& served() {
  static const Served s = [] {
    Served out;
    const std::string path = vocab_path();
    try {
      out.tokenizer = std::make_unique<skiff::Tokenizer>(skiff::vocab_from_gguf(skiff::GgufFile::open(path)));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fuzz_server_request: cannot load %s: %s (set SKIFF_FUZZ_VOCAB)\n", path.c_str(),
                   e.what());
      std::abort();
    }
    const skiff::Vocab& vocab = out.tokenizer->vocab();
    for (const std::string& name : skiff::chat_template_names()) {
      ServedModel m;
      m.tokenizer = out.tokenizer.get();
      m.chat_template = skiff::chat_template_by_name(name);
      if (vocab.bos_id >= 0) m.render.bos_token = vocab.pieces[static_cast<size_t>(vocab.bos_id)];
      if (vocab.eos_id >= 0) m.render.eos_token = vocab.pieces[static_cast<size_t>(vocab.eos_id)];
      m.render.today = "26 Jul 2024";
      m.id = "fuzz";
      m.context_length = 256;
      m.n_layers = 8;
      m.slots = 4;
      out.models.push_back(std::move(m));
    }
    return out;
  }();
  return s;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_server_request: %s\n", what);
  std::abort();
}

void check_ids(const std::vector<int32_t>& ids, const ServedModel& model) {
  for (int32_t id : ids)
    if (id < 0 || id >= model.tokenizer->vocab().size()) fail("a token id outside the vocabulary");
}

// Runs one parser; rejections (ApiError, skiff::Error) are fine, anything else aborts.
template <typename F>
void expect_clean(const char* name, F&& f) {
  try {
    f();
  } catch (const skiff::server::ApiError& e) {
    if (e.status < 400 || e.status > 499) fail("an ApiError that is not a 4xx");
    (void)e.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const skiff::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_server_request: %s threw %s\n", name, e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Served& s = served();
  const std::string_view body_text(reinterpret_cast<const char*>(data), size);
  const ServedModel& model = s.models[size == 0 ? 0 : data[size - 1] % s.models.size()];
  skiff::server::RequestLimits limits;
  limits.max_tokens = 512;  // larger than the context: max_tokens alone can overflow it

  nlohmann::json body;
  try {
    body = skiff::server::parse_body(body_text, limits.max_json_depth);
  } catch (const skiff::server::ApiError& e) {
    if (e.status != 400) fail("parse_body: an ApiError that is not a 400");
    return 0;
  }
  if (!body.is_object()) fail("parse_body accepted a body that is not an object");

  for (auto endpoint : {skiff::server::Endpoint::kChat, skiff::server::Endpoint::kCompletion}) {
    expect_clean("parse_generation_request", [&] {
      const skiff::server::GenerationRequest r =
          skiff::server::parse_generation_request(body, endpoint, model, limits);
      if (r.prompts.empty()) fail("no prompt accepted");
      if (endpoint == skiff::server::Endpoint::kChat && r.prompts.size() != 1) fail("a chat with several prompts");
      if (r.n < 1 || r.n > limits.max_n || r.n * static_cast<int>(r.prompts.size()) > model.slots)
        fail("n outside its limits");
      if (r.max_tokens < 1 || r.max_tokens > limits.max_tokens) fail("max_tokens outside its limits");
      for (const auto& p : r.prompts) {
        if (p.empty()) fail("an empty prompt accepted");
        check_ids(p, model);
        if (static_cast<int64_t>(p.size()) + r.max_tokens > model.context_length)
          fail("prompt + max_tokens overflows the context");
      }
      if (r.top_logprobs < 0 || r.top_logprobs > 20) fail("top_logprobs outside [0, 20]");
      for (const auto& [id, bias] : r.logit_bias)
        if (id < 0 || id >= model.tokenizer->vocab().size() || !(bias >= -100 && bias <= 100))
          fail("a logit_bias entry outside its bounds");
      if (static_cast<int>(r.stop.size()) > limits.max_stop) fail("too many stop strings");
      for (const auto& stop : r.stop)
        if (stop.empty() || stop.size() > limits.max_stop_bytes) fail("a stop string outside its limits");
    });
  }
  expect_clean("parse_tokenize_request", [&] { check_ids(skiff::server::parse_tokenize_request(body, model), model); });
  expect_clean("parse_detokenize_request", [&] {
    const std::vector<int32_t> ids = skiff::server::parse_detokenize_request(body, model);
    check_ids(ids, model);
    (void)model.tokenizer->decode(ids);
  });
  expect_clean("parse_embedding_inputs", [&] {
    for (const auto& ids : skiff::server::parse_embedding_inputs(body, model, limits)) {
      if (ids.empty() || static_cast<int>(ids.size()) > model.context_length) fail("an embedding input out of bounds");
      check_ids(ids, model);
    }
  });
  return 0;
}

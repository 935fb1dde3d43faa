#include "memory/reader.h"

#include <algorithm>
#include <cctype>
#include <chrono>

#include "base/error.h"
#include "memory/encode.h"
#include "memory/splice.h"

namespace skiff::memory {

namespace {

constexpr Method kMethods[] = {Method::kNone,      Method::kOracle, Method::kRead,
                               Method::kReadBlock, Method::kSplice, Method::kSpliceUncorrected};
constexpr const char* kMethodNames[] = {"none", "oracle", "read", "read-block", "splice", "splice-uncorrected"};

int argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

const char* method_name(Method m) { return kMethodNames[static_cast<int>(m)]; }

std::optional<Method> parse_method(std::string_view name) {
  for (Method m : kMethods) {
    if (name == method_name(m)) return m;
  }
  return std::nullopt;
}

bool retrieves(Method m) { return m != Method::kNone && m != Method::kOracle; }

std::vector<int32_t> question_tokens(const Tokenizer& tok, const std::string& question) {
  return tok.encode("Q: " + question + " A:", false);
}

std::string normalize_answer(std::string_view s) {
  std::string out;
  for (char ch : s) out += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  auto junk = [](unsigned char ch) { return std::isspace(ch) || std::ispunct(ch); };
  while (!out.empty() && junk(static_cast<unsigned char>(out.back()))) out.pop_back();
  size_t b = 0;
  while (b < out.size() && junk(static_cast<unsigned char>(out[b]))) ++b;
  return out.substr(b);
}

Reader::Reader(const Model& model, const MemoryStore* store, int context_length, int threads)
    : model_(model),
      store_(store),
      ctx_(model, context_length, threads) {
  if (store) retriever_ = std::make_unique<QueryRetriever>(model, *store);
}

void Reader::use_index(const AnnIndex* index, int ef) {
  if (!retriever_) fail("memory: retrieval needs a store");
  retriever_->use_index(index, ef);
}

Reader::Layout Reader::layout(Method method, std::span<const size_t> entries,
                              std::span<const int32_t> question) const {
  if (!entries.empty() && !store_) fail("memory: reading entries needs a store");
  Layout out;
  out.tokens = {model_.tokenizer->bos()};
  out.first_visible = {0};
  if (method != Method::kNone) {
    const bool blocks = method == Method::kReadBlock || method == Method::kSplice || method == Method::kSpliceUncorrected;
    for (size_t e : entries) {
      const std::span<const int32_t> t = store_->tokens(e);
      const int32_t start = static_cast<int32_t>(out.tokens.size());
      out.tokens.insert(out.tokens.end(), t.begin(), t.end());
      out.first_visible.insert(out.first_visible.end(), t.size(), blocks ? start : 0);
    }
  }
  out.tokens.insert(out.tokens.end(), question.begin(), question.end());
  out.first_visible.insert(out.first_visible.end(), question.size(), 0);
  return out;
}

std::vector<float> Reader::prefill(Method method, std::span<const size_t> entries, std::span<const int32_t> question) {
  const ModelConfig& c = model_.config;
  if (question.empty()) fail("memory: empty question");
  Layout seq = layout(method, entries, question);
  if (static_cast<int>(seq.tokens.size()) > ctx_.context_length())
    fail("memory: {} entries and the question need {} positions, more than the context ({}); use a smaller -k or "
         "a larger -c",
         entries.size(), seq.tokens.size(), ctx_.context_length());
  ctx_.cache().clear();
  int64_t from = 0;  // the first position prefilled from tokens
  if (method == Method::kSplice || method == Method::kSpliceUncorrected) {
    // BOS, then the stored entries, then the question reads everything.
    std::vector<float> bos(static_cast<size_t>(c.dim));
    embed(model_, {seq.tokens.data(), 1}, bos.data());
    forward(ctx_, bos.data(), 1, 0, c.n_layers);
    splice(ctx_, *store_, entries, method == Method::kSplice);
    from = static_cast<int64_t>(seq.tokens.size() - question.size());
  }
  const int64_t T = static_cast<int64_t>(seq.tokens.size()) - from;
  std::vector<float> hidden(static_cast<size_t>(T) * c.dim);
  embed(model_, std::span<const int32_t>(seq.tokens).subspan(static_cast<size_t>(from)), hidden.data());
  if (method == Method::kReadBlock)
    forward_masked(ctx_, hidden.data(), T, 0, c.n_layers, std::span<const int32_t>(seq.first_visible));
  else forward(ctx_, hidden.data(), T, 0, c.n_layers);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  compute_logits(ctx_, hidden.data() + (T - 1) * c.dim, 1, logits.data());
  return logits;
}

std::vector<float> Reader::query_vector(const std::string& question) {
  if (!retriever_) fail("memory: retrieval needs a store");
  return retriever_->query_vector(question);
}

Answer Reader::answer(Method method, const std::string& question, int k, std::span<const size_t> given,
                      int max_tokens) {
  const Tokenizer& tok = *model_.tokenizer;
  const auto t0 = std::chrono::steady_clock::now();
  Answer a;
  const std::vector<int32_t> q = question_tokens(tok, question);
  if (method == Method::kOracle || (retrieves(method) && !given.empty())) {
    a.entries.assign(given.begin(), given.end());
  } else if (retrieves(method)) {
    if (!store_) fail("memory: method {} needs a store", method_name(method));
    a.entries = retriever_->top_k(question, k);
  }
  std::vector<float> logits = prefill(method, a.entries, q);
  a.first_logits = logits;
  a.ttft_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  a.prefill_tokens = 1 + static_cast<int>(q.size());
  if (method != Method::kSplice && method != Method::kSpliceUncorrected) {
    for (size_t e : a.entries) a.prefill_tokens += store_->entry(e).n_tokens;
  }
  // Greedy answer up to a newline or an end-of-generation token.
  std::vector<int32_t> out;
  std::string text;
  for (int i = 0; i < max_tokens; ++i) {
    const int32_t id = argmax(logits);
    if (tok.is_eog(id)) break;
    out.push_back(id);
    text = tok.decode(out);
    if (text.find('\n') != std::string::npos) break;
    if (ctx_.cache().length(0) >= ctx_.context_length()) break;
    logits = eval_tokens(ctx_, {&id, 1});
  }
  a.text = text.substr(0, text.find('\n'));
  while (!a.text.empty() && a.text.front() == ' ') a.text.erase(a.text.begin());
  return a;
}

}  // namespace skiff::memory

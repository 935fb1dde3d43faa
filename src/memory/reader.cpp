#include "memory/reader.h"

#include <algorithm>
#include <cctype>
#include <chrono>

#include "base/error.h"
#include "memory/encode.h"
#include "memory/splice.h"

namespace skiff::memory {

namespace {

constexpr Method kMethods[] = {Method::kNone,   Method::kOracle,           Method::kRead,           Method::kReadBlock,
                               Method::kSplice, Method::kSpliceUncorrected, Method::kSpliceRecompute};
constexpr const char* kMethodNames[] = {"none",   "oracle",             "read",            "read-block",
                                        "splice", "splice-uncorrected", "splice-recompute"};

int argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

bool splices(Method m) {
  return m == Method::kSplice || m == Method::kSpliceUncorrected || m == Method::kSpliceRecompute;
}

// A decoded answer up to its first newline, without leading spaces.
std::string trim_answer(const std::string& text) {
  std::string out = text.substr(0, text.find('\n'));
  while (!out.empty() && out.front() == ' ') out.erase(out.begin());
  return out;
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

void Reader::set_recompute(int rows) {
  if (rows < 1) fail("memory: --recompute must be at least 1, got {}", rows);
  recompute_ = rows;
}

int Reader::recomputed_rows(size_t entry) const { return memory::recomputed_rows(*store_, entry, recompute_); }

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
    const bool blocks = method == Method::kReadBlock || splices(method);
    const bool spliced = splices(method);
    for (size_t e : entries) {
      // A compressed store's entry takes its kept rows only: the first kv_rows tokens stand
      // for them (never embedded: splicing writes those rows).
      const std::span<const int32_t> t =
          store_->tokens(e).first(static_cast<size_t>(spliced ? store_->entry(e).kv_rows : store_->entry(e).n_tokens));
      const int32_t start = static_cast<int32_t>(out.tokens.size());
      out.tokens.insert(out.tokens.end(), t.begin(), t.end());
      out.first_visible.insert(out.first_visible.end(), t.size(), blocks ? start : 0);
      if (method == Method::kSpliceRecompute)
        std::fill(out.first_visible.end() - recomputed_rows(e), out.first_visible.end(), 0);
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
  if (splices(method)) {
    // BOS, then the stored entries, then the question reads everything.
    std::vector<float> bos(static_cast<size_t>(c.dim));
    embed(model_, {seq.tokens.data(), 1}, bos.data());
    forward(ctx_, bos.data(), 1, 0, c.n_layers);
    if (method == Method::kSpliceRecompute) {
      splice_recomputing(ctx_, *store_, entries, recompute_);
    } else {
      splice(ctx_, *store_, entries, method == Method::kSplice);
    }
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

std::vector<size_t> Reader::entries_for(Method method, const std::string& question, int k,
                                        std::span<const size_t> given) const {
  if (method == Method::kOracle || (retrieves(method) && !given.empty())) return {given.begin(), given.end()};
  if (!retrieves(method)) return {};
  if (!store_) fail("memory: method {} needs a store", method_name(method));
  return retriever_->top_k(question, k);
}

int Reader::prefill_count(Method method, std::span<const size_t> entries, std::span<const int32_t> question) const {
  int n = 1 + static_cast<int>(question.size());
  for (size_t e : entries)
    n += method == Method::kSpliceRecompute ? recomputed_rows(e) : splices(method) ? 0 : store_->entry(e).n_tokens;
  return n;
}

std::vector<Answer> Reader::answer_batch(Method method, std::span<const std::string> questions, int k,
                                         std::span<const std::vector<size_t>> given, int max_tokens) {
  const ModelConfig& c = model_.config;
  const Tokenizer& tok = *model_.tokenizer;
  const size_t B = questions.size();
  if (!given.empty() && given.size() != B) fail("memory: {} entry lists for {} questions", given.size(), B);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Answer> out(B);
  std::vector<Layout> seqs(B);
  std::vector<size_t> question_rows(B);
  const bool spliced = splices(method);
  while (batch_.size() < B)
    batch_.push_back(std::make_unique<Context>(model_, ctx_.context_length(), ctx_.pool()));
  for (size_t i = 0; i < B; ++i) {
    Answer& a = out[i];
    const std::vector<int32_t> q = question_tokens(tok, questions[i]);
    if (q.empty()) fail("memory: empty question");
    question_rows[i] = q.size();
    a.entries = entries_for(method, questions[i], k, given.empty() ? std::span<const size_t>() : given[i]);
    a.prefill_tokens = prefill_count(method, a.entries, q);
    seqs[i] = layout(method, a.entries, q);
    if (static_cast<int>(seqs[i].tokens.size()) > ctx_.context_length())
      fail("memory: {} entries and the question need {} positions, more than the context ({}); use a smaller -k "
           "or a larger -c",
           a.entries.size(), seqs[i].tokens.size(), ctx_.context_length());
    batch_[i]->cache().clear();
  }
  // The rows each sequence prefills: all of it, or for splicing BOS first (a pass of its
  // own: the entries go in between), then the question.
  std::vector<size_t> from(B, 0);
  auto run = [&](auto rows_of) {
    std::vector<BatchSeq> parts;
    std::vector<int32_t> ids;
    for (size_t i = 0; i < B; ++i) {
      const auto [b, e] = rows_of(i);
      if (b == e) continue;
      ids.insert(ids.end(), seqs[i].tokens.begin() + static_cast<int64_t>(b), seqs[i].tokens.begin() + static_cast<int64_t>(e));
      parts.push_back({batch_[i].get(), static_cast<int64_t>(e - b),
                       method == Method::kReadBlock ? seqs[i].first_visible.data() + b : nullptr});
    }
    std::vector<float> hidden(ids.size() * static_cast<size_t>(c.dim));
    embed(model_, ids, hidden.data());
    forward_batch(parts, hidden.data(), 0, c.n_layers);
    return hidden;
  };
  if (spliced) {
    run([](size_t) { return std::pair<size_t, size_t>{0, 1}; });
    if (method == Method::kSpliceRecompute) {
      // The j-th entry of every sequence together: each splices its stored rows but the
      // last few, then one batched pass prefills those.
      std::vector<size_t> at(B, 1);
      size_t most = 0;
      for (size_t i = 0; i < B; ++i) most = std::max(most, out[i].entries.size());
      for (size_t j = 0; j < most; ++j) {
        for (size_t i = 0; i < B; ++i) {
          if (j >= out[i].entries.size()) continue;
          const size_t e = out[i].entries[j];
          splice_prefix(*batch_[i], *store_, e, store_->entry(e).n_tokens - recomputed_rows(e));
        }
        run([&](size_t i) {
          if (j >= out[i].entries.size()) return std::pair<size_t, size_t>{0, 0};
          const size_t e = out[i].entries[j], end = at[i] + static_cast<size_t>(store_->entry(e).n_tokens);
          at[i] = end;
          return std::pair<size_t, size_t>{end - static_cast<size_t>(recomputed_rows(e)), end};
        });
      }
    } else {
      for (size_t i = 0; i < B; ++i) splice(*batch_[i], *store_, out[i].entries, method == Method::kSplice);
    }
    for (size_t i = 0; i < B; ++i) from[i] = seqs[i].tokens.size() - question_rows[i];
  }
  std::vector<float> hidden = run([&](size_t i) { return std::pair<size_t, size_t>{from[i], seqs[i].tokens.size()}; });
  // Every sequence's last row, then the logits of all of them in one pass.
  std::vector<float> last(B * static_cast<size_t>(c.dim));
  size_t row = 0;
  for (size_t i = 0; i < B; ++i) {
    row += seqs[i].tokens.size() - from[i];
    std::copy_n(hidden.begin() + static_cast<int64_t>((row - 1) * static_cast<size_t>(c.dim)), c.dim,
                last.begin() + static_cast<int64_t>(i * static_cast<size_t>(c.dim)));
  }
  const size_t V = static_cast<size_t>(c.vocab_size);
  std::vector<float> logits(B * V);
  compute_logits(ctx_, last.data(), static_cast<int64_t>(B), logits.data());
  const double ttft = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::vector<int32_t>> answer_ids(B);
  std::vector<size_t> active;
  for (size_t i = 0; i < B; ++i) {
    out[i].ttft_ms = ttft;
    out[i].first_logits.assign(logits.begin() + static_cast<int64_t>(i * V), logits.begin() + static_cast<int64_t>((i + 1) * V));
    active.push_back(i);
  }
  // Greedy decoding of the active answers together, as answer() stops each.
  for (int step = 0; step < max_tokens && !active.empty(); ++step) {
    std::vector<size_t> next;
    std::vector<int32_t> ids;
    for (size_t j = 0; j < active.size(); ++j) {
      const size_t i = active[j];
      const float* l = logits.data() + j * V;
      const auto id = static_cast<int32_t>(std::max_element(l, l + V) - l);
      if (tok.is_eog(id)) continue;
      answer_ids[i].push_back(id);
      out[i].text = tok.decode(answer_ids[i]);
      if (out[i].text.find('\n') != std::string::npos) continue;
      if (batch_[i]->cache().length(0) >= batch_[i]->context_length()) continue;
      if (step + 1 == max_tokens) continue;
      next.push_back(i);
      ids.push_back(id);
    }
    active = next;
    if (active.empty()) break;
    std::vector<BatchSeq> parts;
    for (size_t i : active) parts.push_back({batch_[i].get(), 1, nullptr});
    std::vector<float> h(active.size() * static_cast<size_t>(c.dim));
    embed(model_, ids, h.data());
    forward_batch(parts, h.data(), 0, c.n_layers);
    logits.resize(active.size() * V);
    compute_logits(ctx_, h.data(), static_cast<int64_t>(active.size()), logits.data());
  }
  for (Answer& a : out) a.text = trim_answer(a.text);
  return out;
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
  a.entries = entries_for(method, question, k, given);
  std::vector<float> logits = prefill(method, a.entries, q);
  a.first_logits = logits;
  a.ttft_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  a.prefill_tokens = prefill_count(method, a.entries, q);
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
  a.text = trim_answer(text);
  return a;
}

}  // namespace skiff::memory

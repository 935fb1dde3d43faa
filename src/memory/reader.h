// Answering a question from a knowledge base, by each of the methods `skiff memory eval`
// compares. Every method builds the same sequence of tokens,
//
//   [BOS] [entry 1] ... [entry k] ["Q: <question> A:"]  -> greedy answer up to a newline,
//
// each entry and the question tokenized on their own (as the store encodes entries), and
// differs in how the entries get into the KV cache:
//   none                no entries
//   oracle              the gold entries' text, prefilled causally
//   read                the retrieved entries' text, prefilled causally (retrieve-and-read)
//   read-block          the same with block attention (each entry sees only itself)
//   splice              the retrieved entries' stored KV, re-rotated to their positions
//   splice-uncorrected  the same without the re-rotation (a negative control)
//   splice-recompute    splice, but each entry's last R tokens (set_recompute) prefilled
//                       anew, attending to everything before them: BOS, the entries before,
//                       the entry's own stored rows (a partial recompute in the spirit of
//                       CacheBlend; docs/MEMORY.md has why the last tokens and not the first)
// The retriever (memory/retrieval.h) is the same for every method that retrieves.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "memory/ann.h"
#include "memory/lexical.h"
#include "memory/query.h"
#include "memory/retrieval.h"
#include "memory/store.h"
#include "model/forward.h"

namespace skiff::memory {

enum class Method { kNone, kOracle, kRead, kReadBlock, kSplice, kSpliceUncorrected, kSpliceRecompute };
const char* method_name(Method m);
std::optional<Method> parse_method(std::string_view name);
bool retrieves(Method m);

// "Q: <question> A:" without BOS.
std::vector<int32_t> question_tokens(const Tokenizer& tok, const std::string& question);

struct Answer {
  std::string text;              // up to the first newline, trimmed
  std::vector<size_t> entries;   // what was read (retrieved or gold)
  double ttft_ms = 0;            // question in -> first answer token's logits out
  int prefill_tokens = 0;        // tokens run through the model before the first answer token
  std::vector<float> first_logits;  // the distribution of the first answer token
};

class Reader {
 public:
  // store may be null for `none` and for reading given entries (prefill_with).
  Reader(const Model& model, const MemoryStore* store, int context_length, int threads);

  // Retrieves k entries (when the method does) and answers. `given`: the entries `oracle`
  // reads, and which the other methods read instead of retrieving when it is not empty.
  // max_tokens bounds the answer.
  Answer answer(Method method, const std::string& question, int k, std::span<const size_t> given = {},
                int max_tokens = 16);

  // answer() for several questions at once, as a server batches them: every forward pass
  // advances all of them (one batched prefill, then one batched decode step per answer
  // token), so small per-question passes share the weights' reads. The same answers as
  // answer() one by one (greedy; the logits differ only by summation order). given: empty,
  // or one list per question. Every answer's ttft_ms is the batch's: all first tokens come
  // out of the one prefill.
  std::vector<Answer> answer_batch(Method method, std::span<const std::string> questions, int k,
                                   std::span<const std::vector<size_t>> given = {}, int max_tokens = 16);

  // The whole sequence `method` reads (spliced entries included, as their tokens) and, per
  // position, the first position it attends to (0 but for entries under block attention or
  // splicing, which see only themselves; splice-recompute's last tokens of an entry see
  // everything before them).
  struct Layout {
    std::vector<int32_t> tokens, first_visible;
  };
  Layout layout(Method method, std::span<const size_t> entries, std::span<const int32_t> question) const;

  // The sequence built for `method` from these entries and question tokens, prefilled into
  // the reader's context; returns the logits after the last question token (tests compare
  // methods through this).
  std::vector<float> prefill(Method method, std::span<const size_t> entries, std::span<const int32_t> question);

  // How many last tokens of each entry splice-recompute prefills (>= 1; default 10).
  void set_recompute(int rows);
  int recompute() const { return recompute_; }

  // Retrieval searches this index (memory/ann.h) with `ef` candidates instead of exactly;
  // null: exact search again. The index must outlive the reader.
  void use_index(const AnnIndex* index, int ef = kDefaultEf);
  // The question's retrieval vector (the store's retriever).
  std::vector<float> query_vector(const std::string& question);

  Context& context() { return ctx_; }

 private:
  // What `method` reads: the given entries (oracle, or any retrieving method given some),
  // the retrieved k, or none.
  std::vector<size_t> entries_for(Method method, const std::string& question, int k,
                                  std::span<const size_t> given) const;
  // Tokens run through the model before the first answer token: BOS, the question, and the
  // entries' text unless they are spliced (splice-recompute: their last tokens).
  // The last rows of a stored entry that splice-recompute prefills.
  int recomputed_rows(size_t entry) const;
  int prefill_count(Method method, std::span<const size_t> entries, std::span<const int32_t> question) const;

  const Model& model_;
  const MemoryStore* store_;
  Context ctx_;
  std::unique_ptr<QueryRetriever> retriever_;  // with a store
  std::vector<std::unique_ptr<Context>> batch_;  // answer_batch's sequences (ctx_'s pool)
  int recompute_ = 10;
};

// Lower-cased, surrounding spaces and punctuation removed: what exact match compares.
std::string normalize_answer(std::string_view s);

}  // namespace skiff::memory

// Memory-augmented training episodes (MATTER-style block attention): each JSONL line
// {"entries": [...], "question": "...", "answer": "...", "more": [{"question", "answer"}, ...]}
// ("more" optional) becomes
//   [BOS][entry 1]...[entry k]["Q: " question " A:"][" " answer EOS] [more questions, same form]
// with every segment tokenized on its own (no BOS), as the engine tokenizes each memory entry
// when it builds the store. Entry rows attend only to their own entry (first_visible = the
// entry's first row), so an entry's keys and values do not depend on what precedes it and a
// KV cache computed for it alone can be spliced in; BOS and question/answer rows see the whole
// episode. Loss: a row counts when its target is in the same segment, plus the last row of a
// question (it predicts the answer's first token). A later question also sees the earlier
// questions and answers; "more" questions multiply the answer tokens a pass trains on, which
// otherwise are a few rows of a window filled with entries.
//
// Episodes are packed whole, in file order, into windows of T rows (T+1 tokens, as the text
// data): the rest of a window is padding (EOS tokens, first_visible = the padding's start, no
// loss). A run draws windows in a permutation per epoch from (seed, epoch), addressed by one
// counter, so the counter alone (derived from the step) positions a resumed run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "tokenizer/tokenizer.h"

namespace skiff::train {

struct QuestionAnswer {
  std::string question, answer;
};

struct Episode {
  std::vector<std::string> entries;
  std::vector<QuestionAnswer> questions;  // the first is "question"/"answer", then "more"
  int64_t line = 0;  // in its file (1-based), for errors
};

// Parses the JSONL file (blank lines skipped). Throws Error naming the file and line for bad
// JSON, missing or mistyped fields, or a file with no episode.
std::vector<Episode> read_episodes(const std::string& path);

// One episode's tokens with, per token, the first token it attends to (relative to the
// episode's first token) and whether the row has a loss (its target is the next token).
struct EpisodeTokens {
  int64_t line = 0;
  std::vector<int32_t> tokens, first_visible;
  std::vector<uint8_t> loss;  // loss[i]: row i predicts tokens[i + 1]; the last row never counts
};

EpisodeTokens tokenize_episode(const Tokenizer& tokenizer, const Episode& episode);

// A training batch's episode windows: tokens [T+1], first_visible [T], loss_mask [T] each.
class EpisodeSet {
 public:
  // Throws Error when an episode does not fit in seq_len rows (naming its line) or the file
  // is unreadable.
  EpisodeSet(const Tokenizer& tokenizer, const std::string& path, int seq_len, uint64_t seed,
             ThreadPool& pool);
  // From tokenized episodes directly (tests); `source` names them in errors; `pad` fills.
  EpisodeSet(const std::vector<EpisodeTokens>& episodes, int seq_len, uint64_t seed, int32_t pad,
             const std::string& source);

  int seq_len() const { return T_; }
  int64_t windows() const { return static_cast<int64_t>(first_visible_.size()) / T_; }
  int64_t episodes() const { return episodes_; }
  int64_t tokens() const { return episode_tokens_; }  // in episodes (no padding)

  // Packed window w (in file order).
  void window(int64_t w, int32_t* tokens, int32_t* first_visible, uint8_t* loss_mask) const;
  // The g-th window a run draws (g = 0, 1, ... over the whole run; epoch g / windows()).
  void train_window(int64_t g, int32_t* tokens, int32_t* first_visible, uint8_t* loss_mask);

 private:
  void pack(const std::vector<EpisodeTokens>& episodes, int32_t pad, const std::string& source);

  int T_;
  uint64_t seed_;
  int64_t episodes_ = 0, episode_tokens_ = 0;
  std::vector<int32_t> tokens_;         // [W][T+1]
  std::vector<int32_t> first_visible_;  // [W][T], absolute rows within the window
  std::vector<uint8_t> loss_mask_;      // [W][T]
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
};

// How many of micro-batch m's B samples are episode windows for mix fraction F: the
// difference of floor((m+1)·B·F) and floor(m·B·F), so every prefix of the run holds the
// fraction F up to one sample and the count before m is episode_windows_before(m).
int episode_samples(int64_t micro_batch, int batch, double mix);
int64_t episode_windows_before(int64_t micro_batch, int batch, double mix);

}  // namespace skiff::train

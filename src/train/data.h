// Training data: text files split into documents (at blank lines when the file has any,
// else one document per line), each tokenized with the model's tokenizer and preceded by
// BOS, concatenated into one stream and cut into windows of T+1 tokens at a stride of T
// (inputs are the first T, targets the last T). The validation split is a separate file or
// the LAST fraction of the documents. Each epoch visits the training windows in a
// permutation drawn from (seed, epoch), so a position (epoch, index) is all a resumed run
// needs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "tokenizer/tokenizer.h"

namespace skiff::train {

// Splits text into documents (see above); trims surrounding whitespace, drops empty ones.
std::vector<std::string> split_documents(const std::string& text);

struct DataConfig {
  std::vector<std::string> train_files;
  std::string val_file;        // empty: hold out the last val_fraction of the documents
  double val_fraction = 0.05;
  int seq_len = 256;
  uint64_t seed = 1;
};

struct DataPosition {
  int64_t epoch = 0;
  int64_t index = 0;  // next window within the epoch's order
};

class Dataset {
 public:
  // Throws Error when a file cannot be read or a split has less than one window.
  Dataset(const Tokenizer& tokenizer, const DataConfig& config, ThreadPool& pool);
  // From token streams directly (tests).
  Dataset(std::vector<int32_t> train, std::vector<int32_t> val, int seq_len, uint64_t seed);

  int seq_len() const { return T_; }
  int64_t train_windows() const { return static_cast<int64_t>(train_.size() - 1) / T_; }
  int64_t val_windows() const { return static_cast<int64_t>(val_.size() - 1) / T_; }
  size_t train_tokens() const { return train_.size(); }
  size_t val_tokens() const { return val_.size(); }
  int64_t documents() const { return documents_; }

  // Writes the next `count` training windows (T+1 tokens each) and advances `pos`.
  void next_train_batch(DataPosition& pos, int count, int32_t* out);
  void val_window(int64_t index, int32_t* out) const;

 private:
  void check() const;
  const std::vector<int64_t>& order(int64_t epoch);

  int T_;
  uint64_t seed_;
  int64_t documents_ = 0;
  std::vector<int32_t> train_, val_;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace skiff::train

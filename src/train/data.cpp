#include "train/data.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "train/layerskip.h"

namespace skiff::train {

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open data file {}", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("cannot read data file {}", path);
  return ss.str();
}

// The tokens of all documents, each preceded by BOS, in order.
std::vector<int32_t> tokenize(const Tokenizer& tok, const std::vector<std::string>& docs, ThreadPool& pool) {
  std::vector<std::vector<int32_t>> parts(docs.size());
  pool.parallel_for_dynamic(static_cast<int64_t>(docs.size()), 64, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) parts[static_cast<size_t>(i)] = tok.encode(docs[static_cast<size_t>(i)], true);
  });
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

std::vector<std::string> split_documents(const std::string& text) {
  const bool blank_lines = text.find("\n\n") != std::string::npos ||
                           text.find("\r\n\r\n") != std::string::npos;
  std::vector<std::string> docs;
  std::string current;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const bool empty = trim(line).empty();
    if (!blank_lines) {
      if (!empty) docs.push_back(trim(line));
      continue;
    }
    if (empty) {
      if (!trim(current).empty()) docs.push_back(trim(current));
      current.clear();
    } else {
      if (!current.empty()) current += '\n';
      current += line;
    }
  }
  if (!trim(current).empty()) docs.push_back(trim(current));
  return docs;
}

Dataset::Dataset(const Tokenizer& tokenizer, const DataConfig& config, ThreadPool& pool)
    : T_(config.seq_len), seed_(config.seed) {
  if (config.train_files.empty()) fail("train: no data files given");
  std::vector<std::string> docs;
  for (const std::string& path : config.train_files) {
    std::vector<std::string> d = split_documents(read_file(path));
    if (d.empty()) fail("data file {} holds no text", path);
    docs.insert(docs.end(), std::make_move_iterator(d.begin()), std::make_move_iterator(d.end()));
  }
  std::vector<std::string> val_docs;
  if (!config.val_file.empty()) {
    val_docs = split_documents(read_file(config.val_file));
  } else {
    if (!(config.val_fraction > 0 && config.val_fraction < 1))
      fail("train: validation fraction must be in (0, 1)");
    size_t n_val = static_cast<size_t>(std::ceil(config.val_fraction * static_cast<double>(docs.size())));
    if (n_val >= docs.size()) fail("train: too few documents ({}) to hold out a validation split", docs.size());
    val_docs.assign(docs.end() - static_cast<std::ptrdiff_t>(n_val), docs.end());
    docs.resize(docs.size() - n_val);
  }
  documents_ = static_cast<int64_t>(docs.size());
  train_ = tokenize(tokenizer, docs, pool);
  val_ = tokenize(tokenizer, val_docs, pool);
  check();
}

Dataset::Dataset(std::vector<int32_t> train, std::vector<int32_t> val, int seq_len, uint64_t seed)
    : T_(seq_len), seed_(seed), train_(std::move(train)), val_(std::move(val)) {
  check();
}

void Dataset::check() const {
  if (T_ < 1) fail("train: sequence length must be positive");
  if (train_.size() < static_cast<size_t>(T_) + 1)
    fail("train: the training split has {} tokens, fewer than one window of {}", train_.size(), T_ + 1);
  if (val_.size() < static_cast<size_t>(T_) + 1)
    fail("train: the validation split has {} tokens, fewer than one window of {}", val_.size(), T_ + 1);
}

const std::vector<int64_t>& Dataset::order(int64_t epoch) {
  if (epoch != order_epoch_) {
    const int64_t n = train_windows();
    order_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order_[static_cast<size_t>(i)] = i;
    for (int64_t i = n - 1; i > 0; --i) {  // Fisher-Yates
      double u = counter_uniform(seed_ ^ 0x53687566ull, static_cast<uint64_t>(epoch), static_cast<uint64_t>(i), 0, 0);
      int64_t j = static_cast<int64_t>(u * static_cast<double>(i + 1));
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
    }
    order_epoch_ = epoch;
  }
  return order_;
}

void Dataset::next_train_batch(DataPosition& pos, int count, int32_t* out) {
  for (int c = 0; c < count; ++c) {
    if (pos.index >= train_windows()) {
      ++pos.epoch;
      pos.index = 0;
    }
    int64_t w = order(pos.epoch)[static_cast<size_t>(pos.index)];
    std::memcpy(out + static_cast<int64_t>(c) * (T_ + 1), train_.data() + w * T_, sizeof(int32_t) * (T_ + 1));
    ++pos.index;
  }
}

void Dataset::val_window(int64_t index, int32_t* out) const {
  std::memcpy(out, val_.data() + (index % val_windows()) * T_, sizeof(int32_t) * (T_ + 1));
}

}  // namespace skiff::train

#include "train/episodes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "train/layerskip.h"

namespace skiff::train {

namespace {

using Json = nlohmann::json;

std::string string_field(const Json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) fail("{}: \"{}\" must be a string", where, key);
  return it->get<std::string>();
}

}  // namespace

std::vector<Episode> read_episodes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open episodes file {}", path);
  std::vector<Episode> out;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{} line {}", path, line_no);
    Json j = Json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail("{}: not a JSON object", where);
    Episode e;
    e.line = line_no;
    auto it = j.find("entries");
    if (it == j.end() || !it->is_array())
      fail("{}: \"entries\" must be an array of strings", where);
    for (const Json& x : *it) {
      if (!x.is_string()) fail("{}: \"entries\" must be an array of strings", where);
      e.entries.push_back(x.get<std::string>());
    }
    e.questions.push_back({string_field(j, "question", where), string_field(j, "answer", where)});
    if (auto more = j.find("more"); more != j.end()) {
      if (!more->is_array()) fail("{}: \"more\" must be an array of objects", where);
      for (const Json& m : *more) {
        if (!m.is_object()) fail("{}: \"more\" must be an array of objects", where);
        const std::string at = fmt::format("{}: \"more\"[{}]", where, e.questions.size() - 1);
        e.questions.push_back({string_field(m, "question", at), string_field(m, "answer", at)});
      }
    }
    out.push_back(std::move(e));
  }
  if (in.bad()) fail("cannot read episodes file {}", path);
  if (out.empty()) fail("episodes file {} holds no episode", path);
  return out;
}

EpisodeTokens tokenize_episode(const Tokenizer& tok, const Episode& e) {
  // Segment ids per token: the loss rule compares a row's segment with its target's.
  EpisodeTokens r;
  r.line = e.line;
  std::vector<int> segment;
  int next_segment = 0;
  auto append = [&](const std::vector<int32_t>& ids, int32_t first_visible) {
    const int s = next_segment++;
    for (int32_t id : ids) {
      r.tokens.push_back(id);
      r.first_visible.push_back(first_visible);
      segment.push_back(s);
    }
  };
  if (tok.bos() >= 0) append({tok.bos()}, 0);
  for (const std::string& entry : e.entries)
    append(tok.encode(entry, false), static_cast<int32_t>(r.tokens.size()));
  std::vector<uint8_t> is_question;  // per segment
  is_question.resize(static_cast<size_t>(next_segment), 0);
  for (const QuestionAnswer& qa : e.questions) {
    append(tok.encode("Q: " + qa.question + " A:", false), 0);
    is_question.push_back(1);
    // SentencePiece's dummy prefix already makes the answer start with a space; byte-level
    // BPE needs it written (" Paris" is the token that follows "A:" in running text).
    std::string answer = tok.vocab().add_space_prefix ? qa.answer : " " + qa.answer;
    if (tok.eos() < 0) answer += "\n";
    std::vector<int32_t> answer_ids = tok.encode(answer, false);
    if (tok.eos() >= 0) answer_ids.push_back(tok.eos());
    append(answer_ids, 0);
    is_question.push_back(0);
  }
  const size_t n = r.tokens.size();
  r.loss.assign(n, 0);
  for (size_t i = 0; i + 1 < n; ++i) {
    const int s = segment[i], t = segment[i + 1];
    r.loss[i] = s == t || (is_question[static_cast<size_t>(s)] && t == s + 1);
  }
  return r;
}

EpisodeSet::EpisodeSet(const Tokenizer& tokenizer, const std::string& path, int seq_len,
                       uint64_t seed, ThreadPool& pool)
    : T_(seq_len), seed_(seed) {
  const std::vector<Episode> episodes = read_episodes(path);
  std::vector<EpisodeTokens> tokens(episodes.size());
  pool.parallel_for_dynamic(static_cast<int64_t>(episodes.size()), 64,
                            [&](int64_t b, int64_t e, int) {
                              for (int64_t i = b; i < e; ++i)
                                tokens[static_cast<size_t>(i)] =
                                    tokenize_episode(tokenizer, episodes[static_cast<size_t>(i)]);
                            });
  pack(tokens, tokenizer.eos() >= 0 ? tokenizer.eos() : 0, path);
}

EpisodeSet::EpisodeSet(const std::vector<EpisodeTokens>& episodes, int seq_len, uint64_t seed,
                       int32_t pad, const std::string& source)
    : T_(seq_len), seed_(seed) {
  pack(episodes, pad, source);
}

void EpisodeSet::pack(const std::vector<EpisodeTokens>& episodes, int32_t pad,
                      const std::string& source) {
  if (T_ < 1) fail("train: sequence length must be positive");
  if (episodes.empty()) fail("{}: no episodes", source);
  const auto T = static_cast<size_t>(T_);
  size_t used = T;  // rows filled in the current window; T: start a new one
  auto new_window = [&] {
    tokens_.resize(tokens_.size() + T + 1, pad);
    first_visible_.resize(first_visible_.size() + T, 0);
    loss_mask_.resize(loss_mask_.size() + T, 0);
    used = 0;
  };
  // Padding from row `used` to the window's end: it sees only itself and has no loss.
  auto close_window = [&] {
    if (first_visible_.empty()) return;
    int32_t* fv = first_visible_.data() + first_visible_.size() - T;
    for (size_t t = used; t < T; ++t) fv[t] = static_cast<int32_t>(used);
  };
  for (const EpisodeTokens& e : episodes) {
    const size_t n = e.tokens.size();
    if (n > T)
      fail("{} line {}: the episode has {} tokens, more than --seq-len {}", source, e.line, n, T_);
    if (n == 0) continue;
    if (used + n > T) {
      close_window();
      new_window();
    }
    const size_t w = tokens_.size() / (T + 1) - 1;
    int32_t* tok = tokens_.data() + w * (T + 1);
    int32_t* fv = first_visible_.data() + w * T;
    uint8_t* loss = loss_mask_.data() + w * T;
    for (size_t i = 0; i < n; ++i) {
      tok[used + i] = e.tokens[i];
      fv[used + i] = static_cast<int32_t>(used) + e.first_visible[i];
      loss[used + i] = e.loss[i];
    }
    used += n;
    ++episodes_;
    episode_tokens_ += static_cast<int64_t>(n);
  }
  close_window();
  if (tokens_.empty()) fail("{}: every episode is empty", source);
}

void EpisodeSet::window(int64_t w, int32_t* tokens, int32_t* first_visible,
                        uint8_t* loss_mask) const {
  const auto T = static_cast<size_t>(T_);
  const auto i = static_cast<size_t>(w);
  std::memcpy(tokens, tokens_.data() + i * (T + 1), sizeof(int32_t) * (T + 1));
  std::memcpy(first_visible, first_visible_.data() + i * T, sizeof(int32_t) * T);
  std::memcpy(loss_mask, loss_mask_.data() + i * T, T);
}

void EpisodeSet::train_window(int64_t g, int32_t* tokens, int32_t* first_visible,
                              uint8_t* loss_mask) {
  const int64_t n = windows(), epoch = g / n;
  if (epoch != order_epoch_) {
    order_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order_[static_cast<size_t>(i)] = i;
    for (int64_t i = n - 1; i > 0; --i) {  // Fisher-Yates, a stream of its own (not the text's)
      double u = counter_uniform(seed_ ^ 0x45706973ull, static_cast<uint64_t>(epoch),
                                 static_cast<uint64_t>(i), 0, 0);
      auto j = static_cast<int64_t>(u * static_cast<double>(i + 1));
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
    }
    order_epoch_ = epoch;
  }
  window(order_[static_cast<size_t>(g % n)], tokens, first_visible, loss_mask);
}

int64_t episode_windows_before(int64_t micro_batch, int batch, double mix) {
  return static_cast<int64_t>(std::floor(static_cast<double>(micro_batch) * batch * mix));
}

int episode_samples(int64_t micro_batch, int batch, double mix) {
  return static_cast<int>(episode_windows_before(micro_batch + 1, batch, mix) -
                          episode_windows_before(micro_batch, batch, mix));
}

}  // namespace skiff::train

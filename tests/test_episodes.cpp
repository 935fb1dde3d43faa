// Memory-augmented episodes (src/train/episodes.h): one episode's token layout, block-attention
// masks and loss rule; packing into windows (whole episodes, padding that sees only itself and
// has no loss); errors naming the line; the mix of episode and text samples; the per-epoch
// window order.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "base/error.h"
#include "model/forward.h"
#include "train/episodes.h"

using namespace skiff;
using namespace skiff::train;

namespace {

const Tokenizer& test_tokenizer() {
  static std::unique_ptr<Model> m =
      load_model(std::string(SKIFF_SOURCE_DIR) + "/models/stories260K.gguf");
  return *m->tokenizer;
}

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::string write_temp(const std::string& name, const std::string& text) {
  auto p = std::filesystem::temp_directory_path() /
           ("skiff_episodes_" + name + "_" + std::to_string(::getpid()));
  std::ofstream(p) << text;
  return p.string();
}

// A hand-made episode of segments with the given lengths: BOS, entries, question, answer.
EpisodeTokens synthetic(int64_t line, std::vector<int> entries, int question, int answer) {
  EpisodeTokens e;
  e.line = line;
  auto add = [&](int n, int32_t fv, uint8_t loss_inside) {
    for (int i = 0; i < n; ++i) {
      e.tokens.push_back(static_cast<int32_t>(line * 100 + static_cast<int64_t>(e.tokens.size())));
      e.first_visible.push_back(fv);
      e.loss.push_back(i + 1 < n ? loss_inside : 0);
    }
  };
  add(1, 0, 0);
  for (int n : entries) add(n, static_cast<int32_t>(e.tokens.size()), 1);
  add(question, 0, 1);
  e.loss.back() = 1;  // the last question row predicts the answer
  add(answer, 0, 1);
  return e;
}

}  // namespace

TEST(Episodes, TokenLayoutMasksAndLoss) {
  const Tokenizer& tok = test_tokenizer();
  Episode e;
  e.entries = {"Lily has a red ball.", "Tom likes the park."};
  e.questions = {{"What does Lily have?", "a red ball"}};
  EpisodeTokens t = tokenize_episode(tok, e);
  // Each segment tokenized on its own, without BOS (SentencePiece: its dummy prefix gives the
  // answer its leading space).
  const auto e1 = tok.encode(e.entries[0], false), e2 = tok.encode(e.entries[1], false);
  const auto q = tok.encode("Q: What does Lily have? A:", false);
  auto a = tok.encode("a red ball", false);
  a.push_back(tok.eos());
  ASSERT_EQ(t.tokens, concat({{tok.bos()}, e1, e2, q, a}));
  ASSERT_EQ(t.first_visible.size(), t.tokens.size());
  ASSERT_EQ(t.loss.size(), t.tokens.size());
  const size_t s1 = 1, s2 = s1 + e1.size(), sq = s2 + e2.size(), sa = sq + q.size(),
               n = t.tokens.size();
  for (size_t i = 0; i < n; ++i) {
    int32_t want_fv = 0;
    if (i >= s1 && i < s2) want_fv = static_cast<int32_t>(s1);
    if (i >= s2 && i < sq) want_fv = static_cast<int32_t>(s2);
    EXPECT_EQ(t.first_visible[i], want_fv) << i;
    // No loss where the target starts another segment (BOS -> entry, entry -> entry,
    // entry -> question) nor on the last row; the last question row predicts the answer.
    const bool boundary = i + 1 == s1 || i + 1 == s2 || i + 1 == sq || i + 1 == n;
    EXPECT_EQ(t.loss[i], boundary ? 0 : 1) << i;
  }
  EXPECT_EQ(t.loss[sa - 1], 1);
}

TEST(Episodes, MoreQuestionsFollowEachAnswerAndSeeEverything) {
  const Tokenizer& tok = test_tokenizer();
  Episode e;
  e.entries = {"Lily has a red ball.", "Tom likes the park."};
  e.questions = {{"What does Lily have?", "a red ball"}, {"What does Tom like?", "the park"}};
  EpisodeTokens t = tokenize_episode(tok, e);
  const auto e1 = tok.encode(e.entries[0], false), e2 = tok.encode(e.entries[1], false);
  const auto q1 = tok.encode("Q: What does Lily have? A:", false);
  const auto q2 = tok.encode("Q: What does Tom like? A:", false);
  auto a1 = tok.encode("a red ball", false), a2 = tok.encode("the park", false);
  a1.push_back(tok.eos());
  a2.push_back(tok.eos());
  ASSERT_EQ(t.tokens, concat({{tok.bos()}, e1, e2, q1, a1, q2, a2}));
  const size_t s2 = 1 + e1.size(), sq1 = s2 + e2.size(), sa1 = sq1 + q1.size(),
               sq2 = sa1 + a1.size(), sa2 = sq2 + q2.size(), n = t.tokens.size();
  for (size_t i = sq1; i < n; ++i) EXPECT_EQ(t.first_visible[i], 0) << i;
  for (size_t i = sq1; i < n; ++i) {
    // Every row of questions and answers counts except the first answer's EOS row, whose
    // target starts the next question, and the last row.
    const bool boundary = i + 1 == sq2 || i + 1 == n;
    EXPECT_EQ(t.loss[i], boundary ? 0 : 1) << i;
  }
  EXPECT_EQ(t.loss[sa1 - 1], 1);
  EXPECT_EQ(t.loss[sa2 - 1], 1);
}

TEST(Episodes, PacksWholeEpisodesWithPadding) {
  // Lengths: 1 + 2 + 3 + 2 + 2 = 10, 1 + 4 + 2 + 1 = 8, 1 + 1 + 1 + 1 = 4; T = 20: the first
  // two share window 0 (18 rows + 2 padding), the third opens window 1.
  std::vector<EpisodeTokens> eps = {synthetic(1, {2, 3}, 2, 2), synthetic(2, {4}, 2, 1),
                                    synthetic(3, {1}, 1, 1)};
  const int T = 20;
  EpisodeSet set(eps, T, 7, /*pad=*/2, "test");
  ASSERT_EQ(set.windows(), 2);
  EXPECT_EQ(set.episodes(), 3);
  EXPECT_EQ(set.tokens(), 22);
  std::vector<int32_t> tokens(T + 1), fv(T);
  std::vector<uint8_t> mask(T);
  set.window(0, tokens.data(), fv.data(), mask.data());
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(tokens[i], eps[0].tokens[i]);
    EXPECT_EQ(fv[i], eps[0].first_visible[i]);
    EXPECT_EQ(mask[i], eps[0].loss[i]);
  }
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(tokens[10 + i], eps[1].tokens[i]);
    EXPECT_EQ(fv[10 + i], 10 + eps[1].first_visible[i]) << "shifted to the episode's start";
    EXPECT_EQ(mask[10 + i], eps[1].loss[i]);
  }
  EXPECT_EQ(mask[9], 0);  // an episode's last row never predicts the next episode
  EXPECT_EQ(mask[17], 0);
  for (int t = 18; t < T; ++t) {
    EXPECT_EQ(tokens[static_cast<size_t>(t)], 2);
    EXPECT_EQ(fv[static_cast<size_t>(t)], 18);  // padding sees only padding
    EXPECT_EQ(mask[static_cast<size_t>(t)], 0);
  }
  EXPECT_EQ(tokens[T], 2);
  set.window(1, tokens.data(), fv.data(), mask.data());
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(tokens[i], eps[2].tokens[i]);
  for (int t = 4; t < T; ++t) EXPECT_EQ(fv[static_cast<size_t>(t)], 4);
  for (int t = 0; t < T; ++t) EXPECT_LE(fv[static_cast<size_t>(t)], t);
}

TEST(Episodes, TooLongEpisodeNamesItsLine) {
  std::vector<EpisodeTokens> eps = {synthetic(1, {2}, 2, 2), synthetic(5, {20}, 2, 2)};
  try {
    EpisodeSet set(eps, 16, 1, 0, "qa.jsonl");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qa.jsonl line 5"), std::string::npos) << e.what();
  }
}

TEST(Episodes, ReadsJsonlAndNamesBadLines) {
  const std::string good =
      write_temp("good",
                 "{\"entries\": [\"a b\", \"c\"], \"question\": \"q?\", \"answer\": \"x\"}\n\n"
                 "{\"entries\": [], \"question\": \"r\", \"answer\": \"y\", \"extra\": 1}\n");
  std::vector<Episode> eps = read_episodes(good);
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0].entries, (std::vector<std::string>{"a b", "c"}));
  ASSERT_EQ(eps[1].questions.size(), 1u);
  EXPECT_EQ(eps[1].questions[0].question, "r");
  EXPECT_EQ(eps[1].line, 3);
  const std::string more = write_temp(
      "more",
      "{\"entries\": [\"a\"], \"question\": \"q\", \"answer\": \"x\", \"more\": "
      "[{\"question\": \"q2\", \"answer\": \"y\"}, {\"question\": \"q3\", \"answer\": \"z\"}]}\n");
  eps = read_episodes(more);
  ASSERT_EQ(eps[0].questions.size(), 3u);
  EXPECT_EQ(eps[0].questions[2].question, "q3");
  EXPECT_EQ(eps[0].questions[2].answer, "z");
  std::filesystem::remove(more);
  for (const char* bad :
       {"{\"entries\": [\"a\"], \"question\": \"q\"}",
        "{\"entries\": \"a\", \"question\": \"q\", \"answer\": \"x\"}", "not json",
        "{\"entries\": [1], \"question\": \"q\", \"answer\": \"x\"}",
        "{\"entries\": [], \"question\": \"q\", \"answer\": \"x\", \"more\": {}}",
        "{\"entries\": [], \"question\": \"q\", \"answer\": \"x\", \"more\": [{\"question\": \"q\"}]}"}) {
    const std::string path = write_temp(
        "bad",
        std::string("{\"entries\": [], \"question\": \"q\", \"answer\": \"x\"}\n") + bad + "\n");
    try {
      read_episodes(path);
      ADD_FAILURE() << "no error for " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    }
    std::filesystem::remove(path);
  }
  std::filesystem::remove(good);
}

TEST(Episodes, MixCountsPerMicroBatch) {
  for (int B : {1, 3, 4, 8})
    for (double mix : {0.0, 0.25, 0.5, 0.3, 1.0}) {
      int64_t total = 0;
      for (int64_t m = 0; m < 40; ++m) {
        const int n = episode_samples(m, B, mix);
        EXPECT_GE(n, 0);
        EXPECT_LE(n, B);
        EXPECT_EQ(episode_windows_before(m, B, mix), total);
        total += n;
      }
      EXPECT_NEAR(static_cast<double>(total), 40.0 * B * mix, 1.0) << B << " " << mix;
    }
  EXPECT_EQ(episode_samples(0, 8, 0.5), 4);
  EXPECT_EQ(episode_samples(5, 8, 1.0), 8);
  EXPECT_EQ(episode_samples(5, 8, 0.0), 0);
}

TEST(Episodes, EachEpochVisitsEveryWindowOnce) {
  std::vector<EpisodeTokens> eps;
  for (int i = 0; i < 7; ++i)
    eps.push_back(synthetic(i + 1, {3}, 2, 2));  // 8 tokens: one per window of 10
  EpisodeSet a(eps, 10, 3, 0, "t"), b(eps, 10, 3, 0, "t");
  ASSERT_EQ(a.windows(), 7);
  std::vector<int32_t> ta(11), tb(11), fv(10);
  std::vector<uint8_t> mask(10);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int32_t> seen;
    for (int64_t i = 0; i < 7; ++i) {
      a.train_window(epoch * 7 + i, ta.data(), fv.data(), mask.data());
      seen.insert(ta[1]);  // the first entry token identifies the episode
    }
    EXPECT_EQ(seen.size(), 7u);
  }
  // Random access (a resumed run) gives what a sequential run drew.
  b.train_window(9, tb.data(), fv.data(), mask.data());
  a.train_window(9, ta.data(), fv.data(), mask.data());
  EXPECT_EQ(ta, tb);
}

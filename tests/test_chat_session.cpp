// ChatSession keeps the KV cache between turns: a turn that extends the conversation must
// give exactly what generating on the whole conversation from an empty cache gives (greedy),
// with plain and self-speculative decoding, also when the new tokens diverge from the cached
// ones (the cache is cut back to the common prefix).
#include <gtest/gtest.h>

#include <vector>

#include "base/error.h"
#include "decode/chat_session.h"
#include "decode/early_exit_drafter.h"
#include "speculative_test_util.h"

namespace skiff {
namespace {

using testing_spec::make_random_model;
using testing_spec::OwnedModel;
using testing_spec::RandomShape;

std::vector<int32_t> fresh_greedy(const Model& model, const std::vector<int32_t>& prompt, int n) {
  Context ctx(model);
  Sampler sampler(SamplerParams{0.0f});
  std::vector<int32_t> out;
  generate(ctx, sampler, prompt, n, [&](int32_t t) {
    out.push_back(t);
    return true;
  });
  return out;
}

struct Turn {
  std::vector<int32_t> reply;
  ChatTurnStats stats;
};

Turn chat_turn(ChatSession& session, const std::vector<int32_t>& conversation, int n,
               Drafter* drafter = nullptr) {
  Sampler sampler(SamplerParams{0.0f});
  Turn t;
  t.stats = session.reply(
      conversation, sampler, n,
      [&](int32_t tok) {
        t.reply.push_back(tok);
        return true;
      },
      drafter, SpecParams{3});
  return t;
}

class ChatSessionTest : public ::testing::TestWithParam<bool> {};

TEST_P(ChatSessionTest, LaterTurnsPrefillOnlyNewTokensAndMatchFreshGeneration) {
  const bool self_spec = GetParam();
  RandomShape shape;
  shape.vocab = 40;
  OwnedModel m = make_random_model(shape);
  Context ctx(*m);
  std::unique_ptr<Drafter> drafter;
  if (self_spec) drafter = std::make_unique<EarlyExitDrafter>(ctx, 2, 0.0f);
  ChatSession session(ctx);

  std::vector<int32_t> conv = {1, 5, 9, 12, 7};
  Turn t1 = chat_turn(session, conv, 6, drafter.get());
  EXPECT_EQ(t1.reply, fresh_greedy(*m, conv, 6));
  EXPECT_EQ(t1.stats.reused, 0);
  EXPECT_EQ(t1.stats.generation.prompt_tokens, 5);

  // The next turn: the whole history, the reply, and a new "user turn".
  std::vector<int32_t> conv2 = conv;
  conv2.insert(conv2.end(), t1.reply.begin(), t1.reply.end());
  const int history = static_cast<int>(conv2.size());
  conv2.insert(conv2.end(), {2, 14, 15, 16});
  Turn t2 = chat_turn(session, conv2, 8, drafter.get());
  EXPECT_EQ(t2.reply, fresh_greedy(*m, conv2, 8));
  // Every token but the reply's last (never run: generation stopped at -n) was cached.
  EXPECT_EQ(t2.stats.reused, history - 1);
  EXPECT_EQ(t2.stats.generation.prompt_tokens, static_cast<int>(conv2.size()) - (history - 1));

  // A re-rendering that differs inside the history: cut back to the common prefix.
  std::vector<int32_t> conv3(conv2.begin(), conv2.begin() + 3);
  conv3.insert(conv3.end(), {20, 21, 22, 23});
  Turn t3 = chat_turn(session, conv3, 5, drafter.get());
  EXPECT_EQ(t3.stats.reused, 3);
  EXPECT_EQ(t3.reply, fresh_greedy(*m, conv3, 5));

  // The same conversation again: everything but the newest token comes from the cache.
  Turn t4 = chat_turn(session, conv3, 5, drafter.get());
  EXPECT_EQ(t4.stats.reused, static_cast<int>(conv3.size()) - 1);
  EXPECT_EQ(t4.reply, t3.reply);

  session.reset();
  EXPECT_EQ(ctx.cache().length(0), 0);
  Turn t5 = chat_turn(session, conv, 6, drafter.get());
  EXPECT_EQ(t5.stats.reused, 0);
  EXPECT_EQ(t5.reply, t1.reply);
}

INSTANTIATE_TEST_SUITE_P(PlainAndSelfSpec, ChatSessionTest, ::testing::Values(false, true));

TEST(ChatSession, ConversationLongerThanTheContextIsAnErrorAndChangesNothing) {
  RandomShape shape;
  shape.context = 16;
  OwnedModel m = make_random_model(shape);
  Context ctx(*m);
  ChatSession session(ctx);
  Sampler sampler(SamplerParams{0.0f});
  std::vector<int32_t> conv(17, 5);
  EXPECT_THROW(session.reply(conv, sampler, 4, [](int32_t) { return true; }), Error);
  EXPECT_EQ(ctx.cache().length(0), 0);
}

}  // namespace
}  // namespace skiff

// skiff chat: an interactive conversation. Each line read is a user message (stdin may be a
// pipe: one message per line; the "> " prompt only on a terminal); the reply streams to
// stdout. The KV cache is kept between turns, so a turn prefills only its new tokens
// (decode/chat_session.h). /reset forgets the conversation, /exit (or end of input) ends.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "base/error.h"
#include "cli/chat_common.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/generation_flags.h"
#include "decode/chat_session.h"
#include "tokenizer/chat_encode.h"
#include "decode/early_exit_drafter.h"
#include "decode/speculative.h"

namespace skiff::cli {
namespace {

struct ChatFlags {
  ModelFlags model;
  std::string system, chat_template;
  int n_predict = 256;
  int context = 0;
  int64_t seed = -1;
  SamplerParams sampling;
  int self_spec = 0;
  int draft_max = 4;
  float draft_p_min = kDefaultDraftPMin;
  bool verbose = false;
  KvCacheFlags kv;
};

void emit(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void run_chat(const ChatFlags& f, const CLI::App& cmd) {
  f.sampling.validate();
  const bool self_spec = cmd.count("--self-spec") > 0;
  if (!self_spec && (cmd.count("--draft-max") > 0 || cmd.count("--draft-p-min") > 0))
    fail("--draft-max and --draft-p-min need --self-spec");
  SpecParams spec;
  spec.draft_max = f.draft_max;
  if (self_spec) spec.validate();

  std::unique_ptr<Model> model = open_model(f.model);
  const Tokenizer& tok = *model->tokenizer;
  const Vocab& vocab = tok.vocab();
  const ChatTemplate tmpl = choose_chat_template(vocab.chat_template, f.chat_template);
  ChatRenderOptions render;
  if (vocab.bos_id >= 0 && vocab.bos_id < vocab.size())
    render.bos_token = vocab.pieces[static_cast<size_t>(vocab.bos_id)];
  if (vocab.eos_id >= 0 && vocab.eos_id < vocab.size())
    render.eos_token = vocab.pieces[static_cast<size_t>(vocab.eos_id)];

  SamplerParams params = f.sampling;
  params.seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed) : std::random_device{}();
  Sampler sampler(params);
  Context ctx(*model, f.context, f.model.threads, kv_types(f.kv));
  std::unique_ptr<Drafter> drafter;
  if (self_spec) drafter = std::make_unique<EarlyExitDrafter>(ctx, f.self_spec, f.draft_p_min);
  ChatSession session(ctx);

  std::vector<ChatMessage> messages;
  auto start_over = [&] {
    messages.clear();
    if (!f.system.empty()) messages.push_back({"system", f.system});
    session.reset();
  };
  start_over();
  const bool tty = isatty(fileno(stdin)) != 0;
  std::fprintf(
      stderr, "chat template: %s%s; /reset starts over, /exit ends\n", tmpl.name.c_str(),
      f.chat_template.empty() && vocab.chat_template.empty() ? " (the model has none)" : "");
  auto rate = [](int n, double s) { return s > 0 ? n / s : 0.0; };
  int turn = 0;
  std::string line;
  while (true) {
    if (tty) emit("> ");
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "/exit") break;
    if (line == "/reset") {
      start_over();
      turn = 0;
      std::fprintf(stderr, "[conversation reset]\n");
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    std::vector<int32_t> conversation;
    try {
      conversation = encode_chat(tok, tmpl, messages, true, render);
    } catch (const Error& e) {
      messages.pop_back();
      std::fprintf(stderr, "%s\n", e.what());
      continue;
    }
    if (static_cast<int64_t>(conversation.size()) >= ctx.context_length()) {
      messages.pop_back();
      std::fprintf(stderr,
                   "context full: the conversation would need %zu tokens but the context holds %d "
                   "(-c to raise it); /reset to start over\n",
                   conversation.size(), ctx.context_length());
      continue;
    }
    ++turn;
    StreamDecoder decoder(tok);
    decoder.set_after_bos(false);
    std::string reply;
    TokenCallback on_token = [&](int32_t token) {
      const std::string piece = decoder.push(token);
      reply += piece;
      emit(piece);
      return true;
    };
    const ChatTurnStats st =
        session.reply(conversation, sampler, f.n_predict, on_token, drafter.get(), spec);
    const std::string rest = decoder.flush();
    reply += rest;
    emit(rest + "\n");
    messages.push_back({"assistant", reply});

    const GenerateStats& g = st.generation;
    std::string spec_note;
    if (drafter)
      spec_note = fmt::format(" | acceptance {:.1f}% ({}/{})", 100.0 * st.spec.acceptance_rate(),
                              st.spec.accepted, st.spec.drafted);
    std::fprintf(stderr,
                 "[turn %d: %d tokens, %d reused, %d prefilled, %.1f tok/s | %d generated, %.1f "
                 "tok/s%s%s]\n",
                 turn, st.conversation_tokens, st.reused, g.prompt_tokens,
                 rate(g.prompt_tokens, g.prompt_seconds), g.generated_tokens,
                 rate(g.generated_tokens, g.generate_seconds), spec_note.c_str(),
                 g.hit_context_limit ? " | stopped: context full, /reset to start over" : "");
    if (f.verbose) {
      nlohmann::json j = {{"turn", turn},
                          {"tokens", st.conversation_tokens},
                          {"reused", st.reused},
                          {"prefilled", g.prompt_tokens},
                          {"generated", g.generated_tokens},
                          {"eos", g.hit_eos},
                          {"reply", reply}};
      std::fprintf(stderr, "turn-json: %s\n",
                   j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
  }
}

}  // namespace

void register_chat(CLI::App& app) {
  auto flags = std::make_shared<ChatFlags>();
  CLI::App* cmd =
      app.add_subcommand("chat", "interactive multi-turn chat (stdin: one user message per line)");
  add_model_flags(cmd, flags->model);
  add_kv_cache_flags(cmd, flags->kv);
  cmd->add_option("--system", flags->system, "system prompt");
  cmd->add_option("--chat-template", flags->chat_template,
                  "template by name (chatml, llama2, llama3, mistral-v7, ...; default: the "
                  "model's, else chatml)");
  cmd->add_option("-n,--n-predict", flags->n_predict, "most tokens per reply (default 256)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-c,--ctx-size", flags->context, "context length (default: the model's)")
      ->check(CLI::Range(0, 1 << 24));
  add_sampling_flags(cmd, flags->sampling);
  cmd->add_option("-s,--seed", flags->seed, "random seed (default: random)");
  cmd->add_option(
      "--self-spec", flags->self_spec,
      "self-speculative decoding: draft with layers 0..E-1, verify with E..L-1 (1..L-1)");
  cmd->add_option("--draft-max", flags->draft_max,
                  "most drafted tokens per round, >= 1 (default 4)");
  cmd->add_option(
      "--draft-p-min", flags->draft_p_min,
      fmt::format("stop drafting below this top probability (default {})", kDefaultDraftPMin));
  cmd->add_flag("--verbose", flags->verbose,
                "a JSON line per turn on stderr (token counts and the reply)");
  cmd->callback([flags, cmd] { run_chat(*flags, *cmd); });
}

}  // namespace skiff::cli

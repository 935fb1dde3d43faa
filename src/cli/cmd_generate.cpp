// skiff generate: stream a continuation of the prompt to stdout; timings to stderr.
#include <chrono>
#include <cstdio>
#include <random>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "decode/generate.h"

namespace skiff::cli {
namespace {

struct GenerateFlags {
  ModelFlags model;
  std::string prompt, prompt_file;
  int n_predict = 128;
  int context = 0;
  int64_t seed = -1;
  std::vector<std::string> stop;
  SamplerParams sampling;
};

void run_generate(const GenerateFlags& f) {
  f.sampling.validate();
  std::unique_ptr<Model> model = open_model(f.model);
  std::string text = read_prompt(f.prompt, f.prompt_file);
  const Tokenizer& tok = *model->tokenizer;
  std::vector<int32_t> prompt = tok.encode(text, tok.vocab().add_bos);
  if (prompt.empty()) prompt.push_back(tok.bos());  // a model without add_bos and no prompt

  SamplerParams params = f.sampling;
  params.seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed) : std::random_device{}();
  Sampler sampler(params);
  Context ctx(*model, f.context, f.model.threads);

  StreamDecoder decoder(tok);
  decoder.set_after_bos(prompt.size() == 1 && prompt[0] == tok.bos());
  StopStrings stops(f.stop);
  auto emit = [](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  GenerateStats stats = generate(ctx, sampler, prompt, f.n_predict, [&](int32_t token) {
    StopStrings::Output r = stops.push(decoder.push(token));
    emit(r.text);
    return !r.stopped;
  });
  if (!stops.stopped()) emit(stops.push(decoder.flush()).text + stops.flush());
  emit("\n");

  auto rate = [](int n, double s) { return s > 0 ? n / s : 0.0; };
  std::fprintf(stderr,
               "prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s | seed %llu%s\n",
               stats.prompt_tokens, rate(stats.prompt_tokens, stats.prompt_seconds),
               stats.generated_tokens, rate(stats.generated_tokens, stats.generate_seconds),
               static_cast<unsigned long long>(params.seed),
               stats.hit_context_limit ? " | stopped: context full" : "");
}

}  // namespace

void register_generate(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text after a prompt (stdout: the continuation only)");
  add_model_flags(cmd, flags->model);
  cmd->add_option("-p,--prompt", flags->prompt, "prompt text");
  cmd->add_option("-f,--file", flags->prompt_file, "read the prompt from a file");
  cmd->add_option("-n,--n-predict", flags->n_predict, "tokens to generate (default 128)")->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-c,--ctx-size", flags->context, "context length (default: the model's)")->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--temp", flags->sampling.temperature, "temperature; 0 = greedy (default 0.8)");
  cmd->add_option("--top-k", flags->sampling.top_k, "top-k, <= 0 off (default 40)");
  cmd->add_option("--top-p", flags->sampling.top_p, "top-p, 1 off (default 0.95)");
  cmd->add_option("--min-p", flags->sampling.min_p, "min-p, 0 off (default 0.05)");
  cmd->add_option("--repeat-penalty", flags->sampling.repeat_penalty, "repetition penalty, 1 off (default 1.0)");
  cmd->add_option("--repeat-last-n", flags->sampling.repeat_last_n, "tokens the penalties look back (default 64)");
  cmd->add_option("--presence-penalty", flags->sampling.presence_penalty, "presence penalty (default 0)");
  cmd->add_option("--frequency-penalty", flags->sampling.frequency_penalty, "frequency penalty (default 0)");
  cmd->add_option("-s,--seed", flags->seed, "random seed; same seed, same text (default: random)");
  cmd->add_option("--stop", flags->stop, "stop when this text is generated (repeatable)");
  cmd->callback([flags] { run_generate(*flags); });
}

}  // namespace skiff::cli

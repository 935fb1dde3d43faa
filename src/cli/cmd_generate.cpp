// skiff generate: stream a continuation of the prompt to stdout; timings to stderr.
#include <chrono>
#include <cstdio>
#include <random>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/flash_flags.h"
#include "cli/spec_common.h"
#include "cli/generation_flags.h"
#include "cli/stage_flags.h"
#include "decode/early_exit_drafter.h"
#include "decode/generate.h"
#include "decode/model_drafter.h"
#include "decode/ngram_drafter.h"
#include "decode/speculative.h"

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
  // Early exit and speculative decoding (at most one strategy).
  int exit_layer = 0;
  int self_spec = 0;
  std::string draft_model;
  int lookup = 0;
  int draft_max = 4;
  float draft_p_min = kDefaultDraftPMin;
  bool draft_adaptive = false;
  std::string draft_head;  // self-spec: the early head's own copy in this type
  std::string draft_copy;  // self-spec: draft with a copy of layers 0..E-1 + head in this type
  bool dynamic_exit = false;
  FlashFlags flash;
  KvCacheFlags kv;
  StageFlags stages;
};

// Which decoding strategy the flags ask for; Error for combinations that make no sense.
enum class Strategy { Autoregressive, EarlyExit, SelfSpec, DraftModel, Lookup };
Strategy pick_strategy(const GenerateFlags& f, const CLI::App& cmd) {
  const bool exit = cmd.count("--exit-layer") > 0, self = cmd.count("--self-spec") > 0,
             model = cmd.count("--draft-model") > 0, lookup = cmd.count("--lookup") > 0;
  // --self-spec with --lookup: lookup drafts first, the early exit continues (one strategy).
  if (exit + self + model + (lookup && !self) > 1)
    fail("--exit-layer, --self-spec, --draft-model and --lookup exclude each other (but --self-spec takes --lookup)");
  if (!(self || model || lookup) && (cmd.count("--draft-max") > 0 || cmd.count("--draft-p-min") > 0))
    fail("--draft-max and --draft-p-min need --self-spec, --draft-model or --lookup");
  if (!self && cmd.count("--draft-adaptive") > 0) fail("--draft-adaptive needs --self-spec");
  if (!self && cmd.count("--draft-head") > 0) fail("--draft-head needs --self-spec");
  if (!self && cmd.count("--dynamic-exit") > 0) fail("--dynamic-exit needs --self-spec");
  if (!self && cmd.count("--draft-copy") > 0) fail("--draft-copy needs --self-spec");
  if (cmd.count("--draft-copy") > 0) {
    std::vector<std::string> given;
    for (const char* o : {"--draft-head", "--dynamic-exit", "--draft-adaptive", "--lookup"})
      if (cmd.count(o) > 0) given.push_back(o);
    check_draft_copy_alone(given);
  }
  if (f.draft_adaptive && cmd.count("--draft-p-min") > 0)
    fail("--draft-adaptive and --draft-p-min exclude each other (the cost model decides when to stop)");
  if (exit) return Strategy::EarlyExit;
  if (self) return Strategy::SelfSpec;
  if (model) return Strategy::DraftModel;
  if (lookup) return Strategy::Lookup;
  return Strategy::Autoregressive;
}

void run_generate(const GenerateFlags& f, const CLI::App& cmd) {
  f.sampling.validate();
  const Strategy strategy = pick_strategy(f, cmd);
  SpecParams spec;
  spec.draft_max = f.draft_max;
  if (strategy != Strategy::Autoregressive && strategy != Strategy::EarlyExit) spec.validate();
  const flash::FlashOptions flash_opts = flash_options(f.flash, cmd);
  std::unique_ptr<Model> owned_model;
  flash::LoadedPack pack;
  if (!f.flash.pack.empty()) {
    if (!f.model.model.empty()) fail("give -m or --flash, not both (a pack holds its model)");
    pack = flash::load_pack(f.flash.pack);
  } else {
    ModelFlags mf = f.model;
    mf.pack = !stages_requested(cmd);  // stages pack only their own layers
    owned_model = open_model(mf);
  }
  const Model* model = pack.model ? pack.model.get() : owned_model.get();
  // Pipeline stages: ranks other than 0 only run their layers for rank 0's messages.
  if (pack.model && stages_requested(cmd)) fail("--flash does not run in pipeline stages (yet)");
  std::unique_ptr<dist::Pipeline> pipeline =
      owned_model ? start_pipeline(f.stages, cmd, *owned_model, f.context, f.model.threads,
                                   strategy == Strategy::SelfSpec && f.draft_copy.empty() ? f.self_spec : 0,
                                   kv_types(f.kv))
                  : nullptr;
  if (pipeline && !pipeline->head()) {
    pipeline->serve();
    return;
  }
  std::string text = read_prompt(f.prompt, f.prompt_file);
  const Tokenizer& tok = *model->tokenizer;
  std::vector<int32_t> prompt = tok.encode(text, tok.vocab().add_bos);
  if (prompt.empty()) prompt.push_back(tok.bos());  // a model without add_bos and no prompt
  std::unique_ptr<flash::FlashRun> flash_run;
  if (pack.model) {
    const int threads = f.model.threads > 0 ? f.model.threads : ThreadPool::default_thread_count();
    flash_run = flash::open_flash(std::move(pack), flash_opts, f.flash.budget, f.context,
                                  static_cast<int>(prompt.size()) + 8, threads);
    std::fprintf(stderr, "%s\n", describe_plan(*flash_run).c_str());
  }

  SamplerParams params = f.sampling;
  params.seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed) : std::random_device{}();
  Sampler sampler(params);
  std::unique_ptr<Context> owned_ctx =
      pipeline ? pipeline->make_context()
               : std::make_unique<Context>(*model, f.context, f.model.threads, kv_types(f.kv));
  Context& ctx = *owned_ctx;
  if (flash_run) ctx.set_ffn_provider(flash_run->ffn.get());

  StreamDecoder decoder(tok);
  decoder.set_after_bos(prompt.size() == 1 && prompt[0] == tok.bos());
  StopStrings stops(f.stop);
  auto emit = [](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  TokenCallback on_token = [&](int32_t token) {
    StopStrings::Output r = stops.push(decoder.push(token));
    emit(r.text);
    return !r.stopped;
  };
  std::unique_ptr<Model> draft_model;
  std::unique_ptr<Drafter> drafter;
  switch (strategy) {
    case Strategy::Autoregressive: break;
    case Strategy::EarlyExit: break;
    case Strategy::SelfSpec:
      if (!f.draft_copy.empty()) {  // a quantized copy of the early layers drafts on its own
        draft_model = early_exit_copy_from_flag(*model, f.self_spec, f.draft_copy);
        drafter = std::make_unique<ModelDrafter>(*model, *draft_model, f.context, ctx.pool(), f.draft_p_min);
        break;
      }
      drafter = std::make_unique<EarlyExitDrafter>(
          ctx, f.self_spec, f.draft_p_min,
          SelfSpecOptions{f.draft_adaptive, f.lookup, draft_head_from_flag(*model, f.draft_head), f.dynamic_exit});
      break;
    case Strategy::DraftModel:
      draft_model = load_model(f.draft_model);
      drafter = std::make_unique<ModelDrafter>(*model, *draft_model, f.context, f.model.threads,
                                               f.draft_p_min);
      break;
    case Strategy::Lookup:
      drafter = std::make_unique<NgramDrafter>(*model, f.lookup);
      break;
  }
  GenerateStats stats;
  SpecStats spec_stats;
  if (drafter) {
    spec_stats = generate_speculative(ctx, sampler, *drafter, prompt, f.n_predict, spec, on_token);
    stats = spec_stats.generation;
  } else if (strategy == Strategy::EarlyExit) {
    stats = generate_early_exit(ctx, sampler, prompt, f.exit_layer, f.n_predict, on_token);
  } else {
    stats = generate(ctx, sampler, prompt, f.n_predict, on_token);
  }
  if (!stops.stopped()) emit(stops.push(decoder.flush()).text + stops.flush());
  emit("\n");

  auto rate = [](int n, double s) { return s > 0 ? n / s : 0.0; };
  std::string spec_note;
  if (drafter) {
    spec_note = fmt::format(" | {}: {} rounds, acceptance {:.1f}% ({}/{}), {:.2f} tokens/round",
                            drafter->name(), spec_stats.rounds, 100.0 * spec_stats.acceptance_rate(),
                            spec_stats.accepted, spec_stats.drafted,
                            spec_stats.rounds > 0 ? double(stats.generated_tokens) / spec_stats.rounds : 0.0);
  }
  std::fprintf(stderr,
               "prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s | seed %llu%s%s\n",
               stats.prompt_tokens, rate(stats.prompt_tokens, stats.prompt_seconds),
               stats.generated_tokens, rate(stats.generated_tokens, stats.generate_seconds),
               static_cast<unsigned long long>(params.seed), spec_note.c_str(),
               stats.hit_context_limit ? " | stopped: context full" : "");
  if (flash_run) std::fprintf(stderr, "%s\n", describe_stats(flash_run->ffn->stats()).c_str());
  if (pipeline)
    std::fprintf(stderr, "%s\n", pipeline->finish(stats.prompt_tokens + stats.generated_tokens).c_str());
}

}  // namespace

void register_generate(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text after a prompt (stdout: the continuation only)");
  add_model_flags(cmd, flags->model);
  cmd->add_option("-p,--prompt", flags->prompt, "prompt text");
  cmd->add_option("-f,--file", flags->prompt_file, "read the prompt from a file");
  cmd->add_option("-n,--n-predict", flags->n_predict, "tokens to generate (default 128)")->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-c,--ctx-size", flags->context, "context length (default: the model's, at most 4096)")->check(CLI::Range(0, 1 << 24));
  add_kv_cache_flags(cmd, flags->kv);
  add_sampling_flags(cmd, flags->sampling);
  cmd->add_option("--presence-penalty", flags->sampling.presence_penalty, "presence penalty (default 0)");
  cmd->add_option("--frequency-penalty", flags->sampling.frequency_penalty, "frequency penalty (default 0)");
  cmd->add_option("-s,--seed", flags->seed, "random seed; same seed, same text (default: random)");
  cmd->add_option("--stop", flags->stop, "stop when this text is generated (repeatable)");
  cmd->add_option("--exit-layer", flags->exit_layer,
                  "early exit: run layers 0..E-1 only, then the final norm and head (1..L)");
  cmd->add_option("--self-spec", flags->self_spec,
                  "self-speculative decoding: draft with layers 0..E-1, verify with E..L-1 (1..L-1)");
  cmd->add_option("--draft-model", flags->draft_model,
                  "speculative decoding with this smaller model (same tokenizer) drafting");
  cmd->add_option("--lookup", flags->lookup,
                  "speculative decoding with prompt lookup: draft what followed the last N-gram (N..1)");
  add_flash_flags(cmd, flags->flash);
  add_stage_flags(cmd, flags->stages);
  cmd->add_option("--draft-max", flags->draft_max, "most drafted tokens per round, >= 1 (default 4)");
  cmd->add_option("--draft-p-min", flags->draft_p_min,
                  fmt::format("stop drafting when the draft's top probability is below this (default {})",
                              kDefaultDraftPMin));
  cmd->add_option("--draft-head", flags->draft_head,
                  "self-speculation: the early head reads its own q8_0 or q4_0 copy of the output matrix "
                  "(fewer bytes per draft; verification keeps the model's head, so the output is unchanged)");
  cmd->add_option("--draft-copy", flags->draft_copy,
                  "self-speculation: draft with a q8_0 or q4_0 copy of layers 0..E-1 and the head, in a KV cache "
                  "of its own; verification then runs every layer (about half the bytes per draft on F16/BF16 "
                  "models; output unchanged)");
  cmd->add_flag("--dynamic-exit", flags->dynamic_exit,
                "self-speculation: choose the exit layer every round from the acceptance seen at each (the "
                "first round uses --self-spec E; output unchanged)");
  cmd->add_flag("--draft-adaptive", flags->draft_adaptive,
                "self-speculation: draft while a draft's expected tokens pay for its measured cost, instead of "
                "--draft-p-min (greedy text unchanged; a sampled text is not reproducible by seed)");
  cmd->callback([flags, cmd] { run_generate(*flags, *cmd); });
}

}  // namespace skiff::cli

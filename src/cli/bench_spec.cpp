// skiff bench --self-spec E / --draft-model FILE / --lookup N: speculative against plain
// decoding in one run, on the bench/prompts set (see decode/spec_bench.h for what is timed).
#include "cli/bench_spec.h"

#include <cstdio>

#include <fmt/format.h>

#include "base/error.h"
#include "cli/spec_common.h"
#include "decode/early_exit_drafter.h"
#include "decode/model_drafter.h"
#include "decode/ngram_drafter.h"

namespace skiff::cli {

struct SpecBenchOptions {
  int self_spec = 0, lookup = 0, draft_max = 4, n_predict = 128;
  float draft_p_min = kDefaultDraftPMin, temperature = 0.0f;
  bool draft_adaptive = false, dynamic_exit = false;
  std::string draft_head, draft_copy;
  uint64_t seed = 1;
  std::string draft_model, prompts;
  CLI::Option *self_spec_flag = nullptr, *lookup_flag = nullptr, *draft_model_flag = nullptr;
};

std::shared_ptr<SpecBenchOptions> add_spec_bench_flags(CLI::App* bench) {
  auto o = std::make_shared<SpecBenchOptions>();
  o->self_spec_flag = bench->add_option("--self-spec", o->self_spec,
                                        "speculative: self-speculation with exit layer E (1..L-1)");
  o->draft_model_flag = bench->add_option("--draft-model", o->draft_model,
                                          "speculative: this smaller model (same tokenizer) drafts");
  o->lookup_flag = bench->add_option("--lookup", o->lookup, "speculative: prompt lookup with n-grams up to N");
  bench->add_option("--draft-max", o->draft_max, "speculative: most drafts per round (default 4)");
  bench->add_option("--draft-p-min", o->draft_p_min,
                    fmt::format("speculative: stop drafting below this top probability (default {})",
                                kDefaultDraftPMin));
  bench->add_flag("--draft-adaptive", o->draft_adaptive,
                  "speculative: self-spec drafts by the cost model instead of --draft-p-min (with --lookup: "
                  "lookup first, then the early exit)");
  bench->add_flag("--dynamic-exit", o->dynamic_exit,
                  "speculative: self-spec chooses the exit layer every round (starting at --self-spec E)");
  bench->add_option("--draft-head", o->draft_head,
                    "speculative: the self-spec early head reads its own q8_0 or q4_0 copy of the output matrix");
  bench->add_option("--draft-copy", o->draft_copy,
                    "speculative: self-spec drafts with a q8_0 or q4_0 copy of layers 0..E-1 and the head, in a KV "
                    "cache of its own (verification runs every layer)");
  bench->add_option("--prompts", o->prompts,
                    "speculative: jsonl prompt set (default bench/prompts/speculative.jsonl)");
  bench->add_option("--spec-tokens", o->n_predict, "speculative: tokens generated per prompt (default 128)");
  bench->add_option("--spec-temp", o->temperature, "speculative: temperature (default 0 = greedy)");
  bench->add_option("--spec-seed", o->seed, "speculative: sampler seed (default 1)");
  return o;
}

bool spec_bench_requested(const SpecBenchOptions& o) {
  return o.self_spec_flag->count() > 0 || o.lookup_flag->count() > 0 || o.draft_model_flag->count() > 0;
}

void run_spec_bench(const SpecBenchOptions& o, const ModelFlags& model_flags, int repetitions,
                    const std::string& output_format) {
  if (output_format != "md" && output_format != "json") fail("unknown output format '{}'", output_format);
  std::unique_ptr<Model> model = open_model(model_flags);
  SpecParams params;
  params.draft_max = o.draft_max;
  params.validate();
  SamplerParams sampling;
  sampling.temperature = o.temperature;
  sampling.validate();

  // Every strategy asked for, checked before anything is timed.
  struct Strategy {
    std::string name;
    nlohmann::json settings;
    DrafterFactory make;
  };
  std::vector<Strategy> strategies;
  std::unique_ptr<Model> draft_model, copy_model;
  Context ctx(*model, 0, model_flags.threads);
  if (o.draft_adaptive && o.self_spec_flag->count() == 0) fail("--draft-adaptive needs --self-spec");
  if (!o.draft_head.empty() && o.self_spec_flag->count() == 0) fail("--draft-head needs --self-spec");
  if (o.dynamic_exit && o.self_spec_flag->count() == 0) fail("--dynamic-exit needs --self-spec");
  if (!o.draft_copy.empty()) {
    if (o.self_spec_flag->count() == 0) fail("--draft-copy needs --self-spec");
    std::vector<std::string> given;
    if (o.draft_adaptive) given.push_back("--draft-adaptive");
    if (!o.draft_head.empty()) given.push_back("--draft-head");
    if (o.dynamic_exit) given.push_back("--dynamic-exit");
    check_draft_copy_alone(given);
    // Made once, outside the timed runs; each run drafts in a context of its own.
    copy_model = early_exit_copy_from_flag(*model, o.self_spec, o.draft_copy);
    const Model* draft = copy_model.get();
    const Model* target = model.get();
    ModelDrafter check(*target, *draft, 0, ctx.pool(), o.draft_p_min);
    const float p_min = o.draft_p_min;
    // On the target context's threads, as `generate --draft-copy` runs it.
    strategies.push_back({fmt::format("self-spec E={} copy {}", o.self_spec, o.draft_copy),
                          {{"strategy", "self-spec-copy"}, {"exit_layer", o.self_spec}, {"draft_copy", o.draft_copy},
                           {"draft_p_min", p_min}},
                          [=](Context& c) { return std::make_unique<ModelDrafter>(*target, *draft, 0, c.pool(), p_min); }});
  } else if (o.self_spec_flag->count() > 0) {
    // With --lookup as well: self-spec drafting from lookup first (and plain lookup below).
    // The head copy is made once, outside the timed runs, and shared by every drafter.
    const SelfSpecOptions options{o.draft_adaptive, o.lookup_flag->count() > 0 ? o.lookup : 0,
                                  draft_head_from_flag(*model, o.draft_head), o.dynamic_exit};
    EarlyExitDrafter check(ctx, o.self_spec, o.draft_p_min, options);
    const int e = o.self_spec;
    const float p_min = o.draft_p_min;
    std::string name = fmt::format("self-spec E={}", e);
    if (options.lookup_ngram > 0) name += fmt::format(" + lookup N={}", options.lookup_ngram);
    if (options.adaptive) name += " adaptive";
    if (options.head) name += fmt::format(" head {}", o.draft_head);
    if (options.dynamic_exit) name += " dynamic";
    strategies.push_back({name,
                          {{"strategy", "self-spec"}, {"exit_layer", e}, {"draft_p_min", p_min},
                           {"draft_adaptive", options.adaptive}, {"lookup", options.lookup_ngram},
                           {"draft_head", o.draft_head.empty() ? "model" : o.draft_head},
                           {"dynamic_exit", options.dynamic_exit}},
                          [e, p_min, options](Context& c) {
                            return std::make_unique<EarlyExitDrafter>(c, e, p_min, options);
                          }});
  }
  if (o.draft_model_flag->count() > 0) {
    draft_model = load_model(o.draft_model);
    const Model* draft = draft_model.get();
    const Model* target = model.get();
    ModelDrafter check(*target, *draft, 0, model_flags.threads, o.draft_p_min);
    const int threads = model_flags.threads;
    const float p_min = o.draft_p_min;
    strategies.push_back({"draft model",
                          {{"strategy", "draft-model"}, {"draft_model", o.draft_model}, {"draft_p_min", p_min}},
                          [=](Context&) { return std::make_unique<ModelDrafter>(*target, *draft, 0, threads, p_min); }});
  }
  if (o.lookup_flag->count() > 0) {
    NgramDrafter check(*model, o.lookup);
    const Model* target = model.get();
    const int n = o.lookup;
    strategies.push_back({fmt::format("lookup N={}", n), {{"strategy", "lookup"}, {"lookup", n}},
                          [target, n](Context&) { return std::make_unique<NgramDrafter>(*target, n); }});
  }

  SpecBenchConfig config;
  std::string source;
  config.prompts = load_spec_prompts(o.prompts, *model->tokenizer, source);
  config.n_predict = o.n_predict;
  config.sampling = sampling;
  config.seed = o.seed;
  config.repetitions = repetitions;

  nlohmann::json rows = nlohmann::json::array();
  std::string md;
  md += fmt::format("model: {} ({} layers) | threads: {} | prompts: {} ({}) | {} tokens each | {} | best of {}\n\n",
                    model->source, model->config.n_layers, ctx.pool().size(), source, config.prompts.size(),
                    config.n_predict, o.temperature == 0.0f ? "greedy" : fmt::format("temperature {}", o.temperature),
                    repetitions);
  md += "| strategy | D | task | AR t/s | spec t/s | speedup | acceptance | accepted/round | tokens/round | draft step | verify | same text |\n";
  md += "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const Strategy& s : strategies) {
    std::vector<SpecBenchResult> results = measure_speculative(ctx, s.make, params, config);
    for (const SpecBenchResult& r : results) {
      nlohmann::json settings = s.settings;
      settings["model"] = model->source;
      settings["n_layers"] = model->config.n_layers;
      settings["draft_max"] = params.draft_max;
      settings["n_predict"] = config.n_predict;
      settings["temperature"] = o.temperature;
      settings["repetitions"] = repetitions;
      settings["threads"] = ctx.pool().size();
      settings["decode_step_ms"] = r.decode_step_seconds * 1e3;
      rows.push_back(spec_result_json(r, settings));
      md += fmt::format("| {} | {} | {} | {:.1f} | {:.1f} | {:.2f}x | {:.1f}% | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {} |\n",
                        s.name, params.draft_max, r.task, r.ar_tps, r.spec_tps, r.speedup,
                        100.0 * r.acceptance_rate, r.mean_accepted_length, r.tokens_per_round,
                        r.draft_step_cost, r.verify_cost,
                        o.temperature != 0.0f ? "n/a (sampling)" : (r.identical ? "yes" : "NO"));
    }
  }
  md += "\nAR, spec: plain and speculative decoding, paired runs, end to end per request. draft step, verify: "
        "one drafter forward pass and one verification (D+1 positions) relative to one full decode step.\n";
  if (output_format == "json") {
    std::printf("%s\n", rows.dump(2).c_str());
  } else {
    std::fputs(md.c_str(), stdout);
  }
}

}  // namespace skiff::cli

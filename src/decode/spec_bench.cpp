#include "decode/spec_bench.h"

#include <algorithm>
#include <limits>

#include "base/error.h"
#include "decode/generate.h"

namespace skiff {

namespace {

TokenCallback collect_into(std::vector<int32_t>& out) {
  return [&out](int32_t token) {
    out.push_back(token);
    return true;
  };
}

struct Accumulator {
  SpecBenchResult result;
  double draft_seconds = 0, steady_verify_seconds = 0, ar_decode_seconds = 0;
  int64_t steady_rounds = 0, ar_decode_steps = 0;
};

// The fastest of a prompt's runs, for each decoder.
struct Best {
  double ar = std::numeric_limits<double>::infinity(), spec = std::numeric_limits<double>::infinity();
  GenerateStats ar_stats;
  SpecStats spec_stats;
  std::vector<int32_t> ar_out, spec_out;
};

}  // namespace

std::vector<SpecBenchResult> measure_speculative(Context& ctx, const DrafterFactory& make_drafter,
                                                 const SpecParams& params, const SpecBenchConfig& config) {
  if (config.prompts.empty()) fail("the benchmark has no prompts");
  if (config.repetitions < 1) fail("repetitions must be >= 1");
  for (const SpecBenchPrompt& p : config.prompts) check_generate_args(ctx, p.tokens, config.n_predict);
  params.validate();
  SamplerParams sp = config.sampling;
  sp.seed = config.seed;

  std::vector<std::string> order;
  std::vector<Accumulator> acc;  // per task, then "all" last
  auto slot = [&](const std::string& task) -> Accumulator& {
    auto it = std::find(order.begin(), order.end(), task);
    if (it != order.end()) return acc[static_cast<size_t>(it - order.begin())];
    order.push_back(task);
    acc.emplace_back();
    acc.back().result.task = task;
    return acc.back();
  };
  for (const SpecBenchPrompt& p : config.prompts) slot(p.task);
  slot("all");

  for (const SpecBenchPrompt& prompt : config.prompts) {
    Best best;
    for (int rep = 0; rep < config.repetitions; ++rep) {
      {
        Sampler sampler(sp);
        std::vector<int32_t> out;
        ctx.cache().clear();
        GenerateStats s = generate(ctx, sampler, prompt.tokens, config.n_predict, collect_into(out));
        if (s.prompt_seconds + s.generate_seconds < best.ar) {
          best.ar = s.prompt_seconds + s.generate_seconds;
          best.ar_stats = s;
          best.ar_out = std::move(out);
        }
      }
      {
        Sampler sampler(sp);
        ctx.cache().clear();
        std::unique_ptr<Drafter> drafter = make_drafter(ctx);
        std::vector<int32_t> out;
        SpecStats s = generate_speculative(ctx, sampler, *drafter, prompt.tokens, config.n_predict, params,
                                           collect_into(out));
        const double t = s.generation.prompt_seconds + s.generation.generate_seconds;
        if (t < best.spec) {
          best.spec = t;
          best.spec_stats = s;
          best.spec_out = std::move(out);
        }
      }
    }
    const bool same = config.sampling.temperature != 0.0f || best.spec_out == best.ar_out;
    // Plain decode steps: every generated token but the first (it comes from the prefill)
    // and, unless EOS ended the run, the last (never run through the model).
    const int ar_steps = best.ar_stats.generated_tokens - (best.ar_stats.hit_eos ? 0 : 1);
    const SpecStats& s = best.spec_stats;
    for (Accumulator* a : {&slot(prompt.task), &slot("all")}) {
      SpecBenchResult& r = a->result;
      ++r.prompts;
      r.ar_tokens += best.ar_stats.generated_tokens;
      r.ar_seconds += best.ar;
      r.spec_tokens += s.generation.generated_tokens;
      r.spec_seconds += best.spec;
      r.rounds += s.rounds;
      r.drafted += s.drafted;
      r.accepted += s.accepted;
      r.draft_steps += s.draft_steps;
      r.identical = r.identical && same;
      a->draft_seconds += s.draft_seconds;
      a->steady_verify_seconds += s.steady_verify_seconds;
      a->steady_rounds += s.steady_rounds;
      if (ar_steps > 0) {
        a->ar_decode_seconds += best.ar_stats.generate_seconds;
        a->ar_decode_steps += ar_steps;
      }
    }
  }
  ctx.cache().clear();

  std::vector<SpecBenchResult> results;
  for (Accumulator& a : acc) {
    SpecBenchResult& r = a.result;
    r.ar_tps = r.ar_seconds > 0 ? double(r.ar_tokens) / r.ar_seconds : 0.0;
    r.spec_tps = r.spec_seconds > 0 ? double(r.spec_tokens) / r.spec_seconds : 0.0;
    r.speedup = r.ar_tps > 0 ? r.spec_tps / r.ar_tps : 0.0;
    r.acceptance_rate = r.drafted > 0 ? double(r.accepted) / double(r.drafted) : 0.0;
    r.mean_accepted_length = r.rounds > 0 ? double(r.accepted) / double(r.rounds) : 0.0;
    r.tokens_per_round = r.rounds > 0 ? double(r.spec_tokens) / double(r.rounds) : 0.0;
    const double step = a.ar_decode_steps > 0 ? a.ar_decode_seconds / double(a.ar_decode_steps) : 0.0;
    r.decode_step_seconds = step;
    if (step > 0 && r.draft_steps > 0) r.draft_step_cost = a.draft_seconds / double(r.draft_steps) / step;
    if (step > 0 && r.drafted > 0) r.draft_cost_per_token = a.draft_seconds / double(r.drafted) / step;
    if (step > 0 && a.steady_rounds > 0) r.verify_cost = a.steady_verify_seconds / double(a.steady_rounds) / step;
    results.push_back(r);
  }
  return results;
}

}  // namespace skiff

// skiff bench --flash: per-token timings of the flash engine, the naive baseline and the
// all-in-RAM run on the same token sequence (the flash run decodes greedily; the others are
// fed its tokens, and their top-1 choices are compared with the flash run's).
#include "cli/bench_flash.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cli/flash_flags.h"
#include "model/forward.h"

namespace skiff::cli {

struct FlashBenchOptions {
  FlashFlags flash;
  int naive_tokens = 4;
};

std::shared_ptr<FlashBenchOptions> add_flash_bench_flags(CLI::App* bench) {
  auto o = std::make_shared<FlashBenchOptions>();
  add_flash_flags(bench, o->flash);
  bench->add_option("--naive-tokens", o->naive_tokens, "flash: tokens timed for the naive baseline (default 4)")
      ->check(CLI::Range(1, 1 << 16));
  return o;
}

bool flash_bench_requested(const FlashBenchOptions& o) { return !o.flash.pack.empty(); }

void check_no_flash_flags(const FlashBenchOptions& o, const CLI::App& cmd) {
  flash_options(o.flash, cmd);
  if (cmd.count("--naive-tokens") > 0) fail("--naive-tokens needs --flash PACK");
}

namespace {

using Clock = std::chrono::steady_clock;

struct Step {
  double ms = 0;
  int32_t top1 = 0;
  flash::FlashStats delta;  // flash runs only
};

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Prefills `prompt`, then steps through `tokens` one at a time (or, when `tokens` is empty,
// decodes `n_gen` greedy tokens into it). `before_step` runs untimed before each step.
std::vector<Step> run_steps(Context& ctx, const std::vector<int32_t>& prompt, std::vector<int32_t>& tokens,
                            int n_gen, flash::FlashFfn* ffn, bool naive) {
  std::vector<float> logits = eval_tokens(ctx, prompt);
  const bool decode = tokens.empty();
  std::vector<Step> steps;
  int32_t next = argmax(logits);
  for (int i = 0; i < n_gen; ++i) {
    if (decode) tokens.push_back(next);
    if (ffn && naive) ffn->clear_caches();  // naive: nothing survives between tokens
    const flash::FlashStats before = ffn ? ffn->stats() : flash::FlashStats{};
    const int32_t token = tokens[static_cast<size_t>(i)];
    const auto t0 = Clock::now();
    logits = eval_tokens(ctx, std::span<const int32_t>(&token, 1));
    Step s;
    s.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    s.top1 = next = argmax(logits);
    if (ffn) s.delta = ffn->stats() - before;
    steps.push_back(s);
  }
  return steps;
}

double median_ms(const std::vector<Step>& steps, size_t skip) {
  std::vector<double> v;
  for (size_t i = std::min(skip, steps.size() - 1); i < steps.size(); ++i) v.push_back(steps[i].ms);
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

void run_flash_bench(const FlashBenchOptions& o, const CLI::App& cmd, const ModelFlags& model_flags,
                     int n_prompt, int n_gen, const std::string& output_format) {
  flash::FlashOptions options = flash_options(o.flash, cmd);
  options.measure_recall = options.mode == flash::FlashOptions::Mode::kPredictor;
  const int threads = model_flags.threads > 0 ? model_flags.threads : ThreadPool::default_thread_count();
  n_prompt = std::max(1, n_prompt);
  n_gen = std::max(2, n_gen);
  const int ctx_len = n_prompt + n_gen + 8;

  // 1. The flash engine under the budget: decodes the sequence the others replay.
  std::vector<int32_t> prompt, tokens;
  std::vector<Step> flash_steps;
  nlohmann::json plan_json;
  std::string plan_line;
  flash::FlashStats flash_total, after_warmup;  // after_warmup: tokens past the first window
  double ffn_bytes = 0;                         // all layers' gate, up and down weights
  float threshold0 = 0.0f;
  {
    flash::LoadedPack pack = flash::load_pack(o.flash.pack);
    const Tokenizer& tok = *pack.model->tokenizer;
    prompt = tok.encode("Once upon a time, there was a little girl who loved to play in the park.", true);
    while (static_cast<int>(prompt.size()) < n_prompt) prompt.push_back(prompt[prompt.size() % 16 + 1]);
    prompt.resize(static_cast<size_t>(n_prompt));
    auto run = flash::open_flash(std::move(pack), options, o.flash.budget, ctx_len, n_prompt, threads);
    plan_line = describe_plan(*run);
    std::fprintf(stderr, "%s\n", plan_line.c_str());
    Context ctx(run->model(), ctx_len, threads);
    ctx.set_ffn_provider(run->ffn.get());
    flash_steps = run_steps(ctx, prompt, tokens, n_gen, run->ffn.get(), false);
    for (size_t i = 0; i < flash_steps.size(); ++i) {
      flash_total += flash_steps[i].delta;
      if (static_cast<int>(i) >= options.window) after_warmup += flash_steps[i].delta;
    }
    ffn_bytes = static_cast<double>(run->pack.header.n_layers) * run->pack.header.ffn_dim * 3.0 *
                static_cast<double>(run->pack.header.row_bytes);
    threshold0 = run->ffn->layer_threshold(0);
    plan_json = {{"budget_bytes", run->plan.budget}, {"dense_model_bytes", run->dense_bytes},
                 {"resident_bytes", run->plan.resident}, {"cache_bytes", run->plan.cache},
                 {"charged_bytes", run->budget.used()}, {"neurons_cached_per_layer", run->plan.capacity},
                 {"io_backend", run->ffn->reader().backend()}, {"o_direct", run->ffn->reader().direct()}};
  }

  // 2. Naive: every bundle read from disk each token, nothing kept between tokens.
  std::vector<Step> naive_steps;
  {
    flash::FlashOptions naive = options;
    naive.mode = flash::FlashOptions::Mode::kDense;
    naive.window = 1;
    naive.measure_recall = false;
    auto run = flash::open_flash(flash::load_pack(o.flash.pack), naive, o.flash.budget, ctx_len, n_prompt, threads);
    Context ctx(run->model(), ctx_len, threads);
    ctx.set_ffn_provider(run->ffn.get());
    std::vector<int32_t> replay(tokens.begin(), tokens.begin() + std::min<int>(o.naive_tokens, n_gen));
    naive_steps = run_steps(ctx, prompt, replay, static_cast<int>(replay.size()), run->ffn.get(), true);
  }

  // 3. All in RAM: the dense GGUF (-m) or the flash engine with every neuron cached.
  std::vector<Step> ram_steps;
  std::string ram_kind;
  if (!model_flags.model.empty()) {
    std::unique_ptr<Model> model = open_model(model_flags);
    Context ctx(*model, ctx_len, threads);
    ram_steps = run_steps(ctx, prompt, tokens, n_gen, nullptr, false);
    ram_kind = "dense model " + model_flags.model;
  } else {
    flash::FlashOptions ram = options;
    ram.mode = flash::FlashOptions::Mode::kDense;
    ram.measure_recall = false;
    auto run = flash::open_flash(flash::load_pack(o.flash.pack), ram, "", ctx_len, n_prompt, threads);
    run->ffn->preload_all();
    Context ctx(run->model(), ctx_len, threads);
    ctx.set_ffn_provider(run->ffn.get());
    ram_steps = run_steps(ctx, prompt, tokens, n_gen, run->ffn.get(), false);
    ram_kind = "every neuron cached (no -m)";
  }

  int agree = 0;
  for (size_t i = 0; i < flash_steps.size(); ++i) agree += flash_steps[i].top1 == ram_steps[i].top1;
  const double ms = median_ms(flash_steps, 1), naive_ms = median_ms(naive_steps, 0),
               ram_ms = median_ms(ram_steps, 1);
  const double n = static_cast<double>(std::max<int64_t>(1, flash_total.tokens));
  const int64_t lookups = flash_total.hits + flash_total.misses;
  const double hit_rate = lookups ? static_cast<double>(flash_total.hits) / static_cast<double>(lookups) : 0.0;
  const double active = flash_total.considered
                            ? static_cast<double>(flash_total.active) / static_cast<double>(flash_total.considered)
                            : 0.0;
  const bool has_recall = flash_total.true_active > 0;
  const double recall = has_recall ? static_cast<double>(flash_total.predicted_true) /
                                         static_cast<double>(flash_total.true_active)
                                   : 1.0;
  const double warm_tokens = static_cast<double>(std::max<int64_t>(1, after_warmup.tokens));
  const double warm_bytes = static_cast<double>(after_warmup.bytes_read) / warm_tokens;
  const double warm_bundle_bytes = static_cast<double>(after_warmup.bundle_bytes) / warm_tokens;
  // Mean fraction of each layer's neurons held in its cache (after each layer call).
  const double cache_fill = after_warmup.considered ? static_cast<double>(after_warmup.cached) /
                                                          static_cast<double>(after_warmup.considered)
                                                    : 0.0;

  if (output_format == "json") {
    nlohmann::json per_token = nlohmann::json::array();
    for (const Step& s : flash_steps) {
      const int64_t lk = s.delta.hits + s.delta.misses;
      per_token.push_back({{"ms", s.ms}, {"io_ms", s.delta.io_wait_ms}, {"memory_ms", s.delta.memory_ms},
                           {"compute_ms", s.delta.compute_ms}, {"bytes_read", s.delta.bytes_read},
                           {"cache_hit_rate", lk ? double(s.delta.hits) / double(lk) : 0.0},
                           {"active_fraction", s.delta.considered ? double(s.delta.active) / double(s.delta.considered) : 0.0},
                           {"predictor_recall", s.delta.true_active ? nlohmann::json(double(s.delta.predicted_true) /
                                                                                     double(s.delta.true_active))
                                                                    : nlohmann::json(nullptr)}});
    }
    nlohmann::json j = {{"pack", o.flash.pack}, {"n_threads", threads}, {"n_prompt", n_prompt},
                        {"n_gen", n_gen}, {"ms_per_token", ms}, {"naive_ms_per_token", naive_ms},
                        {"ram_ms_per_token", ram_ms}, {"speedup_vs_naive", ms > 0 ? naive_ms / ms : 0.0},
                        {"bytes_read_per_token", double(flash_total.bytes_read) / n},
                        {"cache_hit_rate", hit_rate}, {"active_fraction", active},
                        {"io_ms_per_token", flash_total.io_wait_ms / n},
                        {"memory_ms_per_token", flash_total.memory_ms / n},
                        {"compute_ms_per_token", flash_total.compute_ms / n},
                        // null for the gate threshold, which decides from the exact gate
                        {"predictor_recall", has_recall ? nlohmann::json(recall) : nlohmann::json(nullptr)},
                        {"mode", options.mode == flash::FlashOptions::Mode::kPredictor ? "predictor" : "threshold"},
                        {"ffn_bytes", ffn_bytes},
                        {"bytes_read_per_token_after_warmup", warm_bytes},
                        {"after_warmup_fraction_of_ffn_bytes", ffn_bytes > 0 ? warm_bytes / ffn_bytes : 0.0},
                        // the bundles asked for, without O_DIRECT's page alignment
                        {"bundle_bytes_per_token_after_warmup", warm_bundle_bytes},
                        {"after_warmup_bundle_fraction_of_ffn_bytes", ffn_bytes > 0 ? warm_bundle_bytes / ffn_bytes : 0.0},
                        {"cache_fill_after_warmup", cache_fill},
                        {"warmup_tokens", options.window},
                        {"threshold_layer0", threshold0},
                        {"top1_agreement_with_ram", double(agree) / double(flash_steps.size())},
                        {"ram_run", ram_kind}, {"plan", plan_json}, {"per_token", per_token}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("| token | ms | I/O wait ms | memory ms | compute ms | MB read | hit rate | active | recall |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < flash_steps.size(); ++i) {
    const flash::FlashStats& d = flash_steps[i].delta;
    const int64_t lk = d.hits + d.misses;
    // Recall: "exact" for the gate threshold, which decides from the true gate.
    const std::string recall =
        d.true_active ? fmt::format("{:.1f}%", 100.0 * double(d.predicted_true) / double(d.true_active)) : "exact";
    std::printf("| %zu | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f%% | %.1f%% | %s |\n", i, flash_steps[i].ms,
                d.io_wait_ms, d.memory_ms, d.compute_ms, double(d.bytes_read) / 1e6,
                lk ? 100.0 * double(d.hits) / double(lk) : 0.0,
                d.considered ? 100.0 * double(d.active) / double(d.considered) : 0.0, recall.c_str());
  }
  std::printf("\nflash %.2f ms/token (median after the first) | naive %.2f ms/token (%zu tokens) | "
              "all in RAM %.2f ms/token (%s)\n",
              ms, naive_ms, naive_steps.size(), ram_ms, ram_kind.c_str());
  std::printf("speedup vs naive %.2fx | %.2f MB read/token | cache hit rate %.1f%% | active %.1f%% | "
              "top-1 agreement with RAM %d/%zu\n",
              ms > 0 ? naive_ms / ms : 0.0, double(flash_total.bytes_read) / n / 1e6, 100.0 * hit_rate,
              100.0 * active, agree, flash_steps.size());
  const std::string recall_text = has_recall ? fmt::format(" | predictor recall {:.2f}%", 100.0 * recall) : "";
  const auto pct = [&](double bytes) { return ffn_bytes > 0 ? 100.0 * bytes / ffn_bytes : 0.0; };
  std::printf("after the first %d tokens (warm-up = the window): %.3f MB read/token = %.2f%% of the FFN "
              "weights (%.2f MB); bundles asked for %.3f MB = %.2f%% (the rest: O_DIRECT "
              "alignment and gaps read to merge requests); caches hold %.1f%% of the neurons%s\n",
              options.window, warm_bytes / 1e6, pct(warm_bytes), ffn_bytes / 1e6, warm_bundle_bytes / 1e6,
              pct(warm_bundle_bytes), 100.0 * cache_fill, recall_text.c_str());
}

}  // namespace skiff::cli

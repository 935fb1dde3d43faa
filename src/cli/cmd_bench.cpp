// skiff bench: llama-bench-style throughput (pp = prompt tokens/s in one batch from an empty
// cache, tg = single-token decode steps/s, pp+tg = a prompt then decode steps, (pp + tg) tokens
// over the total time as llama-bench's -pg), plus the weight-read bandwidth tg achieves against
// the machine's measured read bandwidth (`skiff bench --membw` measures only that).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "bench/system.h"
#include "cli/bench_flash.h"
#include "cli/bench_spec.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/stage_flags.h"
#include "kernels/cpu.h"
#include "model/forward.h"

namespace skiff::cli {
namespace {

struct Result {
  std::string test;
  int n_prompt = 0, n_gen = 0;
  std::vector<double> samples;  // tokens per second, one per repetition
  double mean() const {
    double s = 0;
    for (double v : samples) s += v;
    return samples.empty() ? 0 : s / static_cast<double>(samples.size());
  }
  double stddev() const {
    if (samples.size() < 2) return 0;
    double m = mean(), s = 0;
    for (double v : samples) s += (v - m) * (v - m);
    return std::sqrt(s / static_cast<double>(samples.size() - 1));
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<int32_t> random_tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> u(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = u(rng);
  return t;
}

// pp: one batch of n tokens from an empty cache, logits of the last one (as llama-bench).
double run_pp(Context& ctx, int n, uint32_t seed) {
  std::vector<int32_t> tokens = random_tokens(n, ctx.model().config.vocab_size, seed);
  ctx.cache().clear();
  auto t0 = std::chrono::steady_clock::now();
  eval_tokens(ctx, tokens);
  return n / seconds_since(t0);
}

// tg: n single-token steps from an empty cache, logits every step.
double run_tg(Context& ctx, int n, uint32_t seed) {
  std::vector<int32_t> tokens = random_tokens(n, ctx.model().config.vocab_size, seed);
  ctx.cache().clear();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) eval_tokens(ctx, std::span<const int32_t>(&tokens[static_cast<size_t>(i)], 1));
  return n / seconds_since(t0);
}

// pp+tg (llama-bench -pg): a prompt of n_prompt in one batch, then n_gen single-token steps,
// timed together; (n_prompt + n_gen) tokens over the total time, as llama-bench reports it.
double run_pg(Context& ctx, int n_prompt, int n_gen, uint32_t seed) {
  std::vector<int32_t> tokens = random_tokens(n_prompt + n_gen, ctx.model().config.vocab_size, seed);
  ctx.cache().clear();
  auto t0 = std::chrono::steady_clock::now();
  eval_tokens(ctx, std::span<const int32_t>(tokens.data(), static_cast<size_t>(n_prompt)));
  for (int i = n_prompt; i < n_prompt + n_gen; ++i)
    eval_tokens(ctx, std::span<const int32_t>(&tokens[static_cast<size_t>(i)], 1));
  return (n_prompt + n_gen) / seconds_since(t0);
}

// "PP,TG" of -pg: both positive.
std::pair<int, int> parse_pg(const std::string& text) {
  const size_t comma = text.find(',');
  int pp = 0, tg = 0;
  try {
    size_t used = 0;
    if (comma == std::string::npos) throw std::invalid_argument("no comma");
    pp = std::stoi(text.substr(0, comma), &used);
    if (used != comma) throw std::invalid_argument("pp");
    tg = std::stoi(text.substr(comma + 1), &used);
    if (used != text.size() - comma - 1) throw std::invalid_argument("tg");
  } catch (const std::exception&) {
    fail("-pg {}: expected PROMPT,GEN (two token counts, e.g. 1024,128)", text);
  }
  if (pp <= 0 || tg <= 0 || pp > (1 << 20) || tg > (1 << 20)) fail("-pg {}: both counts must be in 1..1048576", text);
  return {pp, tg};
}

std::string human_size(double bytes) {
  if (bytes >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", bytes / (1024.0 * 1024 * 1024));
  if (bytes >= 1024.0 * 1024) return fmt::format("{:.2f} MiB", bytes / (1024.0 * 1024));
  return fmt::format("{:.2f} KiB", bytes / 1024.0);
}

std::string human_params(double n) {
  if (n >= 1e9) return fmt::format("{:.2f} B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f} M", n / 1e6);
  return fmt::format("{:.2f} K", n / 1e3);
}

std::string model_label(const Model& m) {
  // The most common matrix type names the file, as llama-bench does ("llama 2048x16 Q4_0").
  std::map<DType, int64_t> count;
  for (const LayerWeights& l : m.layers)
    for (const TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down})
      count[t->type] += t->rows * t->cols;
  DType main = DType::F32;
  int64_t best = -1;
  for (auto [t, n] : count)
    if (n > best) best = n, main = t;
  std::string type(dtype_name(main));
  std::transform(type.begin(), type.end(), type.begin(), [](char c) { return static_cast<char>(std::toupper(c)); });
  return fmt::format("llama {}x{} {}", m.config.dim, m.config.n_layers, type);
}

}  // namespace

void register_bench(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    std::vector<int> n_prompt = {128}, n_gen = {64};  // lists, as llama-bench's -p 64,512
    std::vector<std::string> pg;                       // "PP,TG" tests
    int repetitions = 3;
    std::string output = "md";
    bool membw_only = false, no_membw = false;
    int membw_mib = 1024;
    KvCacheFlags kv;
    StageFlags stages;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("bench", "llama-bench-style throughput: pp (prompt) and tg (decode) tokens/s");
  add_model_flags(cmd, flags->model, true);
  cmd->add_option("-p,--n-prompt", flags->n_prompt,
                  "prompt tokens for the pp test; a comma list runs several (0: skip; default 128)")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-n,--n-gen", flags->n_gen, "tokens for the tg test; a comma list runs several (0: skip; default 64)")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--pg", flags->pg,
                  "PP,TG (alias -pg): a prompt of PP tokens then TG decode steps, timed together (test ppPP+tgTG, "
                  "(PP + TG) tokens/s as llama-bench's -pg); repeatable");
  cmd->add_option("-r,--repetitions", flags->repetitions, "repetitions of each test (default 3)")->check(CLI::Range(1, 1000));
  cmd->add_option("-o,--output", flags->output, "md (default) or json")->check(CLI::IsMember({"md", "json"}));
  cmd->add_flag("--membw", flags->membw_only, "only measure the memory read bandwidth with -t threads");
  cmd->add_flag("--no-membw", flags->no_membw, "skip the bandwidth measurement (no GB/s ratio)");
  cmd->add_option("--membw-mib", flags->membw_mib, "buffer for the bandwidth measurement, MiB (default 1024)")
      ->check(CLI::Range(16, 1 << 16));
  add_kv_cache_flags(cmd, flags->kv);
  add_stage_flags(cmd, flags->stages);
  std::shared_ptr<SpecBenchOptions> spec = add_spec_bench_flags(cmd);
  std::shared_ptr<FlashBenchOptions> flash = add_flash_bench_flags(cmd);
  cmd->callback([flags, spec, flash, cmd] {
    const bool kv_flags = cmd->count("--cache-type-k") + cmd->count("--cache-type-v") > 0;
    const bool staged = cmd->count("--stages") + cmd->count("--stage-layers") > 0;
    if (staged && (flash_bench_requested(*flash) || spec_bench_requested(*spec) || flags->membw_only))
      fail("--stages runs the pp/tg tests only (not --flash, speculative benchmarks or --membw)");
    if (kv_flags && (flash_bench_requested(*flash) || spec_bench_requested(*spec)))
      fail("--cache-type-k/-v apply to the pp/tg tests, not to --flash or speculative benchmarks");
    if (flash_bench_requested(*flash)) {
      if (flags->n_prompt.size() != 1 || flags->n_gen.size() != 1 || !flags->pg.empty())
        fail("--flash takes one -p and one -n value and no -pg");
      run_flash_bench(*flash, *cmd, flags->model, flags->n_prompt[0], flags->n_gen[0], flags->output);
      return;
    }
    check_no_flash_flags(*flash, *cmd);
    if (spec_bench_requested(*spec)) {
      run_spec_bench(*spec, flags->model, flags->repetitions, flags->output);
      return;
    }
    const int threads = flags->model.threads > 0 ? flags->model.threads : ThreadPool::default_thread_count();
    const size_t membw_bytes = static_cast<size_t>(flags->membw_mib) << 20;
    if (flags->membw_only) {
      double bw = measure_read_bandwidth(threads, membw_bytes);
      if (flags->output == "json") {
        nlohmann::json j = {{"test", "membw"}, {"n_threads", threads}, {"read_gbps", bw / 1e9},
                            {"buffer_bytes", membw_bytes}};
        std::printf("%s\n", nlohmann::json::array({j}).dump(2).c_str());
      } else {
        std::printf("memory read bandwidth: %.1f GB/s with %d thread%s (%s buffer)\n", bw / 1e9, threads,
                    threads == 1 ? "" : "s", human_size(static_cast<double>(membw_bytes)).c_str());
      }
      return;
    }

    std::vector<std::pair<int, int>> pgs;
    for (const std::string& text : flags->pg) pgs.push_back(parse_pg(text));
    flags->model.pack = !staged;  // stages pack only their own layers
    std::unique_ptr<Model> model = open_model(flags->model);
    const ModelConfig& c = model->config;
    int need = 1, max_prompt = 0;
    bool any_gen = false;
    for (int n : flags->n_prompt) need = std::max(need, n), max_prompt = std::max(max_prompt, n);
    for (int n : flags->n_gen) need = std::max(need, n), any_gen = any_gen || n > 0;
    for (auto [pp, tg] : pgs) need = std::max(need, pp + tg), max_prompt = std::max(max_prompt, pp), any_gen = true;
    if (need > c.context_length) fail("the tests need {} positions; the model's context is {}", need, c.context_length);
    const KvTypes kv = kv_types(flags->kv);
    // Pipeline stages (mpirun): rank 0 runs the tests, the others their layers.
    std::unique_ptr<dist::Pipeline> pipeline = start_pipeline(flags->stages, *cmd, *model, need, threads, 0, kv);
    if (pipeline && !pipeline->head()) {
      pipeline->serve();
      return;
    }
    std::unique_ptr<Context> owned_ctx =
        pipeline ? pipeline->make_context() : std::make_unique<Context>(*model, need, threads, kv);
    Context& ctx = *owned_ctx;
    const size_t kv_per_position = KvCache::bytes_per_position(c.n_layers, c.kv_dim(), kv);

    // Warm-up (pages the weights in, sizes the scratch), as llama-bench does.
    const int warm_pp = max_prompt > 0 ? std::min(max_prompt, 32) : 0, warm_tg = any_gen ? 2 : 0;
    if (warm_pp > 0) run_pp(ctx, warm_pp, 99);
    if (warm_tg > 0) run_tg(ctx, warm_tg, 99);

    // In llama-bench's order: every pp, every tg, every pp+tg.
    std::vector<Result> results;
    for (int n : flags->n_prompt) {
      if (n == 0) continue;
      Result r{fmt::format("pp{}", n), n, 0, {}};
      for (int i = 0; i < flags->repetitions; ++i) r.samples.push_back(run_pp(ctx, n, 1 + i));
      results.push_back(r);
    }
    for (int n : flags->n_gen) {
      if (n == 0) continue;
      Result r{fmt::format("tg{}", n), 0, n, {}};
      for (int i = 0; i < flags->repetitions; ++i) r.samples.push_back(run_tg(ctx, n, 1 + i));
      results.push_back(r);
    }
    for (auto [pp, tg] : pgs) {
      Result r{fmt::format("pp{}+tg{}", pp, tg), pp, tg, {}};
      for (int i = 0; i < flags->repetitions; ++i) r.samples.push_back(run_pg(ctx, pp, tg, 1 + i));
      results.push_back(r);
    }
    const size_t resident = resident_bytes();
    const size_t weights = model->weight_bytes();
    size_t mapped_resident = 0;  // over every mapped file (a sharded checkpoint has several)
    for (const auto& f : model->shards.empty() ? std::vector<std::shared_ptr<MappedFile>>{model->file} : model->shards)
      if (f) mapped_resident += resident_bytes_of(f->data(), f->size());
    const bool copied = model->file && model->file->copied();
    // Bytes of weights one decode step reads: everything but the embedding table (one row),
    // unless the output head is the embedding table.
    const double read_per_token = static_cast<double>(weights) -
                                  (model->tied_output ? 0.0 : static_cast<double>(model->token_embd.nbytes()));
    int64_t bench_tokens = warm_pp + warm_tg;
    for (const Result& r : results) bench_tokens += static_cast<int64_t>(r.n_prompt + r.n_gen) * flags->repetitions;
    const std::string pipeline_line = pipeline ? pipeline->finish(bench_tokens) : "";
    const std::string stages = pipeline ? pipeline->plan().describe() : "";
    if (pipeline && flags->output == "json") std::fprintf(stderr, "%s\n", pipeline_line.c_str());
    double membw = 0;
    // With stages, rank 0 reads only its share of the weights: no bandwidth ratio.
    if (any_gen && !flags->no_membw && !pipeline) membw = measure_read_bandwidth(threads, membw_bytes);

    const std::string label = model_label(*model);
    const double params = static_cast<double>(model->parameter_count());
    const std::string path(cpu_path_name(active_cpu_path()));
    if (flags->output == "json") {
      nlohmann::json out = nlohmann::json::array();
      for (const Result& r : results) {
        nlohmann::json j = {{"model_type", label},
                            {"model_filename", model->source},
                            {"model_size", weights},
                            {"model_n_params", model->parameter_count()},
                            {"n_threads", threads},
                            {"cpu_path", path},
                            {"n_prompt", r.n_prompt},
                            {"n_gen", r.n_gen},
                            {"test", r.test},
                            {"avg_ts", r.mean()},
                            {"stddev_ts", r.stddev()},
                            {"samples_ts", r.samples},
                            {"resident_bytes", resident},
                            {"weights_resident_bytes", mapped_resident},
                            {"use_mmap", !copied},
                            {"type_k", dtype_name(kv.k)},
                            {"type_v", dtype_name(kv.v)},
                            {"kv_bytes_per_token", kv_per_position},
                            {"kv_bytes", kv_per_position * static_cast<size_t>(need)}};
        if (pipeline) j["stages"] = stages;
        if (r.n_gen > 0 && r.n_prompt == 0 && !pipeline) {  // pure decode: weights read per token
          j["weight_read_gbps"] = read_per_token * r.mean() / 1e9;
          if (membw > 0) {
            j["membw_gbps"] = membw / 1e9;
            j["bandwidth_ratio"] = read_per_token * r.mean() / membw;
          }
        }
        out.push_back(j);
      }
      std::printf("%s\n", out.dump(2).c_str());
      return;
    }
    std::printf("| model | size | params | threads | test | t/s |\n");
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (const Result& r : results)
      std::printf("| %s | %s | %s | %d | %s | %.2f ± %.2f |\n", label.c_str(),
                  human_size(static_cast<double>(weights)).c_str(), human_params(params).c_str(), threads,
                  r.test.c_str(), r.mean(), r.stddev());
    std::printf("\ncpu path %s; resident %s (weights %s %s, %s of them paged in)\n", path.c_str(),
                human_size(static_cast<double>(resident)).c_str(), human_size(static_cast<double>(weights)).c_str(),
                copied ? "copied into huge pages (--no-mmap)" : "memory-mapped",
                human_size(static_cast<double>(mapped_resident)).c_str());
    std::printf("%s\n", describe_kv_cache(c, kv, need).c_str());
    if (pipeline) {
      std::printf("%s\n", pipeline_line.c_str());
      return;
    }
    for (const Result& r : results) {
      if (r.n_gen == 0 || r.n_prompt > 0) continue;
      const double gbps = read_per_token * r.mean() / 1e9;
      std::printf("%s: %.1f MB of weights per token, %.1f GB/s", r.test.c_str(), read_per_token / 1e6, gbps);
      if (membw > 0)
        std::printf(" = %.0f%% of the measured read bandwidth %.1f GB/s (%d thread%s); ceiling %.1f t/s",
                    100.0 * gbps * 1e9 / membw, membw / 1e9, threads, threads == 1 ? "" : "s",
                    membw / read_per_token);
      std::printf("\n");
    }
  });
}

}  // namespace skiff::cli

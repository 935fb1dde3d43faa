// skiff bench: llama-bench-style throughput (pp = prompt tokens/s in one batch from an empty
// cache, tg = single-token decode steps/s), plus the weight-read bandwidth tg achieves against
// the machine's measured read bandwidth (`skiff bench --membw` measures only that).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "bench/system.h"
#include "cli/bench_flash.h"
#include "cli/bench_spec.h"
#include "cli/commands.h"
#include "cli/common.h"
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
    int n_prompt = 128, n_gen = 64, repetitions = 3;
    std::string output = "md";
    bool membw_only = false, no_membw = false;
    int membw_mib = 1024;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("bench", "llama-bench-style throughput: pp (prompt) and tg (decode) tokens/s");
  add_model_flags(cmd, flags->model, true);
  cmd->add_option("-p,--n-prompt", flags->n_prompt, "prompt tokens for the pp test (0: skip; default 128)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-n,--n-gen", flags->n_gen, "tokens for the tg test (0: skip; default 64)")->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-r,--repetitions", flags->repetitions, "repetitions of each test (default 3)")->check(CLI::Range(1, 1000));
  cmd->add_option("-o,--output", flags->output, "md (default) or json")->check(CLI::IsMember({"md", "json"}));
  cmd->add_flag("--membw", flags->membw_only, "only measure the memory read bandwidth with -t threads");
  cmd->add_flag("--no-membw", flags->no_membw, "skip the bandwidth measurement (no GB/s ratio)");
  cmd->add_option("--membw-mib", flags->membw_mib, "buffer for the bandwidth measurement, MiB (default 1024)")
      ->check(CLI::Range(16, 1 << 16));
  std::shared_ptr<SpecBenchOptions> spec = add_spec_bench_flags(cmd);
  std::shared_ptr<FlashBenchOptions> flash = add_flash_bench_flags(cmd);
  cmd->callback([flags, spec, flash, cmd] {
    if (flash_bench_requested(*flash)) {
      run_flash_bench(*flash, *cmd, flags->model, flags->n_prompt, flags->n_gen, flags->output);
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

    std::unique_ptr<Model> model = open_model(flags->model);
    const ModelConfig& c = model->config;
    const int need = std::max(flags->n_prompt, flags->n_gen);
    if (need > c.context_length) fail("the tests need {} positions; the model's context is {}", need, c.context_length);
    Context ctx(*model, std::max(need, 1), threads);

    // Warm-up (pages the weights in, sizes the scratch), as llama-bench does.
    if (flags->n_prompt > 0) run_pp(ctx, std::min(flags->n_prompt, 32), 99);
    if (flags->n_gen > 0) run_tg(ctx, 2, 99);

    std::vector<Result> results;
    if (flags->n_prompt > 0) {
      Result r{fmt::format("pp{}", flags->n_prompt), flags->n_prompt, 0, {}};
      for (int i = 0; i < flags->repetitions; ++i) r.samples.push_back(run_pp(ctx, flags->n_prompt, 1 + i));
      results.push_back(r);
    }
    if (flags->n_gen > 0) {
      Result r{fmt::format("tg{}", flags->n_gen), 0, flags->n_gen, {}};
      for (int i = 0; i < flags->repetitions; ++i) r.samples.push_back(run_tg(ctx, flags->n_gen, 1 + i));
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
    double membw = 0;
    if (flags->n_gen > 0 && !flags->no_membw) membw = measure_read_bandwidth(threads, membw_bytes);

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
                            {"use_mmap", !copied}};
        if (r.n_gen > 0) {
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
    for (const Result& r : results) {
      if (r.n_gen == 0) continue;
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

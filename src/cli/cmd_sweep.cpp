// skiff sweep: self-speculative decoding over a grid of exit layers E and draft lengths D,
// each cell paired with plain decoding runs of the same prompts; writes PREFIX.md, .csv, .json and an SVG heat-map of
// the speedup (PREFIX.svg).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "base/error.h"
#include "base/mapped_file.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/spec_common.h"
#include "decode/early_exit_drafter.h"

namespace skiff::cli {
namespace {

struct SweepFlags {
  ModelFlags model;
  std::vector<int> exit_layers;               // empty: 1..L-1
  std::vector<int> draft_max = {1, 2, 3, 4, 6, 8};
  float draft_p_min = kDefaultDraftPMin;
  std::string prompts, output = "sweep";
  int n_predict = 128, repetitions = 1;
  float temperature = 0.0f;
  uint64_t seed = 1;
};

struct Cell {
  int exit_layer = 0, draft_max = 0;
  SpecBenchResult all;
};

void write_text(const std::string& path, const std::string& text) {
  write_file_atomically(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

// White at 1x, deepening green above and red below (saturating at 2x and 0.5x).
std::string speed_color(double s) {
  double t = std::clamp(std::log2(std::max(s, 1e-6)), -1.0, 1.0);
  auto mix = [](double a, double b, double f) { return static_cast<int>(std::lround(a + (b - a) * f)); };
  if (t >= 0) return fmt::format("#{:02x}{:02x}{:02x}", mix(255, 26, t), mix(255, 152, t), mix(255, 80, t));
  return fmt::format("#{:02x}{:02x}{:02x}", mix(255, 215, -t), mix(255, 48, -t), mix(255, 39, -t));
}

std::string heat_map_svg(const std::vector<int>& es, const std::vector<int>& ds, const std::vector<Cell>& cells,
                         const std::string& title) {
  const int cw = 64, ch = 40, left = 90, top = 60;
  const int width = std::max(600, left + cw * static_cast<int>(ds.size()) + 20);
  const int height = top + ch * static_cast<int>(es.size()) + 50;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"13\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n"
      "<text x=\"{}\" y=\"44\">speedup over autoregressive (tokens/s ratio), draft length D across, exit layer E down</text>\n",
      width, height, 10, xml_escape(title), 10);
  for (size_t j = 0; j < ds.size(); ++j)
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">D={}</text>\n", left + cw * j + cw / 2, top - 6, ds[j]);
  for (size_t i = 0; i < es.size(); ++i) {
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">E={}</text>\n", left - 8, top + ch * i + ch / 2 + 5, es[i]);
    for (size_t j = 0; j < ds.size(); ++j) {
      const Cell& c = cells[i * ds.size() + j];
      s += fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#888\"><title>E={} D={}: {:.2f}x, "
          "acceptance {:.0f}%</title></rect>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.2f}</text>\n",
          left + cw * j, top + ch * i, cw, ch, speed_color(c.all.speedup), c.exit_layer, c.draft_max,
          c.all.speedup, 100 * c.all.acceptance_rate, left + cw * j + cw / 2, top + ch * i + ch / 2 + 5, c.all.speedup);
    }
  }
  s += fmt::format("<text x=\"10\" y=\"{}\" fill=\"#555\">green: faster, red: slower, white: equal</text>\n</svg>\n",
                   height - 14);
  return s;
}

void run_sweep(const SweepFlags& f) {
  std::unique_ptr<Model> model = open_model(f.model);
  const int L = model->config.n_layers;
  std::vector<int> es = f.exit_layers;
  if (es.empty())
    for (int e = 1; e < L; ++e) es.push_back(e);
  if (es.empty()) fail("the model has {} layer(s): no exit layer leaves layers to verify with", L);
  if (f.draft_max.empty()) fail("--draft-max needs at least one value");
  if (f.repetitions < 1) fail("-r must be >= 1");
  Context ctx(*model, 0, f.model.threads);
  for (int e : es) EarlyExitDrafter check(ctx, e, f.draft_p_min);  // errors before any timing
  for (int d : f.draft_max) SpecParams{d}.validate();

  SpecBenchConfig config;
  std::string source;
  config.prompts = load_spec_prompts(f.prompts, *model->tokenizer, source);
  config.n_predict = f.n_predict;
  config.sampling.temperature = f.temperature;
  config.sampling.validate();
  config.seed = f.seed;
  config.repetitions = f.repetitions;

  std::vector<Cell> cells;
  nlohmann::json rows = nlohmann::json::array();
  std::string csv = "exit_layer,draft_max,draft_p_min,task,ar_tps,spec_tps,speedup,acceptance_rate,"
                    "mean_accepted_length,tokens_per_round,draft_step_cost,verify_cost,identical\n";
  const int total = static_cast<int>(es.size() * f.draft_max.size());
  for (int e : es) {
    for (int d : f.draft_max) {
      const float p_min = f.draft_p_min;
      DrafterFactory make = [e, p_min](Context& c) { return std::make_unique<EarlyExitDrafter>(c, e, p_min); };
      std::vector<SpecBenchResult> results = measure_speculative(ctx, make, SpecParams{d}, config);
      for (const SpecBenchResult& r : results) {
        nlohmann::json settings = {{"strategy", "self-spec"}, {"exit_layer", e}, {"draft_max", d},
                                   {"draft_p_min", p_min}, {"model", model->source}, {"n_layers", L},
                                   {"n_predict", f.n_predict}, {"temperature", f.temperature},
                                   {"repetitions", f.repetitions}, {"threads", ctx.pool().size()}};
        rows.push_back(spec_result_json(r, settings));
        csv += fmt::format("{},{},{},{},{:.2f},{:.2f},{:.4f},{:.4f},{:.3f},{:.3f},{:.4f},{:.4f},{}\n", e, d, p_min,
                           r.task, r.ar_tps, r.spec_tps, r.speedup, r.acceptance_rate, r.mean_accepted_length,
                           r.tokens_per_round, r.draft_step_cost, r.verify_cost,
                           f.temperature != 0.0f ? "" : (r.identical ? "true" : "false"));
      }
      cells.push_back({e, d, results.back()});
      draw_progress("sweep", static_cast<int>(cells.size()), total);
    }
  }

  double ar_tps = 0, step_ms = 0;
  for (const Cell& c : cells) {
    ar_tps += c.all.ar_tps / static_cast<double>(cells.size());
    step_ms += c.all.decode_step_seconds * 1e3 / static_cast<double>(cells.size());
  }
  std::string md = fmt::format(
      "# Self-speculative sweep: {}\n\n{} layers, {} prompts from {}, {} tokens each, {}, draft p-min {}, "
      "best of {} paired runs, {} thread(s). Plain decoding: {:.1f} tokens/s on average over the cells "
      "({:.3f} ms per decode step).\n\n",
      model->source, L, config.prompts.size(), source, f.n_predict,
      f.temperature == 0.0f ? "greedy" : fmt::format("temperature {}", f.temperature), f.draft_p_min, f.repetitions,
      ctx.pool().size(), ar_tps, step_ms);
  md += "## Speedup (all prompts)\n\n| E \\ D |";
  for (int d : f.draft_max) md += fmt::format(" {} |", d);
  md += "\n|---|";
  for (size_t j = 0; j < f.draft_max.size(); ++j) md += "---:|";
  md += "\n";
  for (size_t i = 0; i < es.size(); ++i) {
    md += fmt::format("| {} |", es[i]);
    for (size_t j = 0; j < f.draft_max.size(); ++j) md += fmt::format(" {:.2f}x |", cells[i * f.draft_max.size() + j].all.speedup);
    md += "\n";
  }
  md += "\n## Every cell (all prompts)\n\n| E | D | AR t/s | spec t/s | speedup | acceptance | accepted/round | "
        "tokens/round | draft step | verify | same text |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const Cell& c : cells) {
    const SpecBenchResult& r = c.all;
    md += fmt::format("| {} | {} | {:.1f} | {:.1f} | {:.2f}x | {:.1f}% | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {} |\n",
                      c.exit_layer, c.draft_max, r.ar_tps, r.spec_tps, r.speedup, 100 * r.acceptance_rate, r.mean_accepted_length,
                      r.tokens_per_round, r.draft_step_cost, r.verify_cost,
                      f.temperature != 0.0f ? "n/a" : (r.identical ? "yes" : "NO"));
  }
  md += "\ndraft step, verify: one drafter forward pass and one verification (D+1 positions) relative to one "
        "full decode step. Per-task rows are in the .csv and .json files.\n";

  write_text(f.output + ".md", md);
  write_text(f.output + ".csv", csv);
  write_text(f.output + ".json", rows.dump(2) + "\n");
  write_text(f.output + ".svg", heat_map_svg(es, f.draft_max, cells,
                                             fmt::format("skiff self-speculation: {}", model->source)));
  std::fputs(md.c_str(), stdout);
  std::fprintf(stderr, "wrote %s.md, .csv, .json, .svg\n", f.output.c_str());
}

}  // namespace

void register_sweep(CLI::App& app) {
  auto flags = std::make_shared<SweepFlags>();
  CLI::App* cmd = app.add_subcommand(
      "sweep", "self-speculative decoding over exit layers x draft lengths: md/csv/json table and SVG heat-map");
  add_model_flags(cmd, flags->model);
  cmd->add_option("--exit-layers", flags->exit_layers, "exit layers E to try (default: 1..L-1)")->delimiter(',');
  cmd->add_option("--draft-max", flags->draft_max, "draft lengths D to try (default 1,2,3,4,6,8)")->delimiter(',');
  cmd->add_option("--draft-p-min", flags->draft_p_min,
                  fmt::format("stop drafting below this top probability (default {})", kDefaultDraftPMin));
  cmd->add_option("--prompts", flags->prompts, "jsonl prompt set (default bench/prompts/speculative.jsonl)");
  cmd->add_option("-n,--n-predict", flags->n_predict, "tokens generated per prompt (default 128)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-r,--repetitions", flags->repetitions, "runs per prompt, the fastest counts (default 1)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--temp", flags->temperature, "temperature (default 0 = greedy)");
  cmd->add_option("-s,--seed", flags->seed, "sampler seed (default 1)");
  cmd->add_option("-o,--output", flags->output, "output prefix: PREFIX.md/.csv/.json/.svg (default sweep)");
  cmd->callback([flags] { run_sweep(*flags); });
}

}  // namespace skiff::cli

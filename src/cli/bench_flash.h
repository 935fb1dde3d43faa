// The LLM-in-a-Flash half of `skiff bench`: --flash PACK --mem-budget ... times decoding
// with neurons streamed from disk against, in the same run, the naive baseline (every FFN
// weight read from disk with O_DIRECT each token) and the all-in-RAM model.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/common.h"

namespace skiff::cli {

struct FlashBenchOptions;  // defined in bench_flash.cpp

std::shared_ptr<FlashBenchOptions> add_flash_bench_flags(CLI::App* bench);
bool flash_bench_requested(const FlashBenchOptions& options);
// Error when a flash-only flag was given without --flash.
void check_no_flash_flags(const FlashBenchOptions& options, const CLI::App& cmd);
// -m (optional) names the dense GGUF for the all-in-RAM run; without it the RAM run is the
// flash engine with every neuron cached. n_prompt / n_gen: prompt and decoded tokens.
void run_flash_bench(const FlashBenchOptions& options, const CLI::App& cmd, const ModelFlags& model,
                     int n_prompt, int n_gen, const std::string& output_format);

}  // namespace skiff::cli

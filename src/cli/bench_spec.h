// The speculative-decoding half of `skiff bench` (LayerSkip issue): flags and runner live in
// bench_spec.cpp; cmd_bench.cpp adds the flags to `bench` and hands over when they are set.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/common.h"

namespace skiff::cli {

struct SpecBenchOptions;  // defined in bench_spec.cpp

// Adds --self-spec, --draft-max, --draft-model, --lookup, ... to `bench`; the returned object
// receives their values and lives as long as the command.
std::shared_ptr<SpecBenchOptions> add_spec_bench_flags(CLI::App* bench);
// True when any speculative flag was given (then `bench` runs the speculative benchmark).
bool spec_bench_requested(const SpecBenchOptions& options);
// Runs it: model flags, repetitions, output format come from the plain bench flags.
void run_spec_bench(const SpecBenchOptions& options, const ModelFlags& model, int repetitions,
                    const std::string& output_format);

}  // namespace skiff::cli

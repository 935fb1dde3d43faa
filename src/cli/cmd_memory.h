// Pieces shared by the `skiff memory` subcommands (cmd_memory.cpp, cmd_memory_scale.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "memory/build.h"

namespace skiff::cli {

// --ann auto|on|off (memory build and add).
void add_ann_flag(CLI::App* cmd, std::string& mode);
memory::AnnMode parse_ann_mode(const std::string& mode);
// --ef N and --exact (memory ask and eval).
void add_search_flags(CLI::App* cmd, int& ef, bool& exact);
// The p-quantile (0..1) of v, nearest rank.
double percentile(std::vector<double> v, double p);
// add, index and search-bench.
void register_memory_scale(CLI::App* parent);

}  // namespace skiff::cli

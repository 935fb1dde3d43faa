// What `skiff generate` and `skiff chat` share: the sampling flags.
#pragma once

#include <CLI/CLI.hpp>

#include "sample/sampler.h"

namespace skiff::cli {

// Adds --temp, --top-k, --top-p, --min-p, --repeat-penalty and --repeat-last-n to `cmd`, with
// SamplerParams' defaults (`generate` adds --presence-penalty and --frequency-penalty after
// them; `chat` has neither).
void add_sampling_flags(CLI::App* cmd, SamplerParams& sampling);

}  // namespace skiff::cli

#include "cli/generation_flags.h"

namespace skiff::cli {

void add_sampling_flags(CLI::App* cmd, SamplerParams& sampling) {
  cmd->add_option("--temp", sampling.temperature, "temperature; 0 = greedy (default 0.8)");
  cmd->add_option("--top-k", sampling.top_k, "top-k, <= 0 off (default 40)");
  cmd->add_option("--top-p", sampling.top_p, "top-p, 1 off (default 0.95)");
  cmd->add_option("--min-p", sampling.min_p, "min-p, 0 off (default 0.05)");
  cmd->add_option("--repeat-penalty", sampling.repeat_penalty,
                  "repetition penalty, 1 off (default 1.0)");
  cmd->add_option("--repeat-last-n", sampling.repeat_last_n,
                  "tokens the penalties look back (default 64)");
}

}  // namespace skiff::cli

// One register_* function per subcommand, each in its own cmd_*.cpp.
#pragma once

#include <CLI/CLI.hpp>

namespace skiff::cli {

void register_generate(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_info(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_convert(CLI::App& app);
void register_dump_logits(CLI::App& app);
void register_train(CLI::App& app);
void register_bench(CLI::App& app);
void register_synth(CLI::App& app);
void register_sweep(CLI::App& app);
void register_flash_pack(CLI::App& app);
void register_flash_train_predictor(CLI::App& app);
void register_chat(CLI::App& app);
void register_chat_template(CLI::App& app);
void register_serve(CLI::App& app);
void register_memory(CLI::App& app);

inline void register_commands(CLI::App& app) {
  register_generate(app);
  register_tokenize(app);
  register_info(app);
  register_perplexity(app);
  register_convert(app);
  register_dump_logits(app);
  register_train(app);
  register_bench(app);
  register_synth(app);
  register_sweep(app);
  register_flash_pack(app);
  register_flash_train_predictor(app);
  register_chat(app);
  register_chat_template(app);
  register_serve(app);
  register_memory(app);
}

}  // namespace skiff::cli

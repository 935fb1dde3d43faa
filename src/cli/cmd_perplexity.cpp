// skiff perplexity: llama.cpp-comparable perplexity of a text file.
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/perplexity.h"

namespace skiff::cli {

void register_perplexity(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    std::string file;
    int context = 512;
    int chunks = 0;
    std::string format = "text";
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("perplexity", "perplexity of a text file (llama.cpp's method)");
  add_model_flags(cmd, flags->model);
  cmd->add_option("-f,--file", flags->file, "text file")->required();
  cmd->add_option("-c,--ctx-size", flags->context, "tokens per chunk (default 512)");
  cmd->add_option("--chunks", flags->chunks, "score at most this many chunks (default: all)");
  cmd->add_option("-o,--output", flags->format, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([flags] {
    std::unique_ptr<Model> model = open_model(flags->model);
    std::string text = read_text_file(flags->file);
    std::vector<int32_t> tokens = model->tokenizer->encode(text, true);
    PerplexityResult r = perplexity(*model, tokens, flags->context, flags->model.threads, flags->chunks,
                                    [](int done, int total) { draw_progress("perplexity", done, total); });
    if (flags->format == "json")
      std::printf("{\"ppl\": %.6f, \"ppl_err\": %.6f, \"tokens\": %lld, \"chunks\": %d, \"ctx\": %d}\n", r.ppl,
                  r.ppl_err, static_cast<long long>(r.tokens), r.chunks, flags->context);
    else
      std::printf("PPL = %.4f +/- %.4f (%lld tokens scored in %d chunks of %d)\n", r.ppl, r.ppl_err,
                  static_cast<long long>(r.tokens), r.chunks, flags->context);
  });
}

}  // namespace skiff::cli

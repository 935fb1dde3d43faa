// skiff tokenize: the token ids of a text, space-separated on one line.
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/gguf.h"

namespace skiff::cli {

void register_tokenize(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    std::string prompt, prompt_file;
    bool no_bos = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text (BOS first when the model adds it)");
  add_model_flags(cmd, flags->model, false);
  cmd->add_option("-p,--prompt", flags->prompt, "text to tokenize");
  cmd->add_option("-f,--file", flags->prompt_file, "read the text from a file");
  cmd->add_flag("--no-bos", flags->no_bos, "do not add BOS");
  cmd->callback([flags] {
    // A GGUF needs only its tokenizer.ggml.* metadata, so vocabulary-only files work too.
    std::unique_ptr<Model> model;
    std::unique_ptr<Tokenizer> vocab_only;
    if (is_gguf_file(flags->model.model)) {
      vocab_only = std::make_unique<Tokenizer>(vocab_from_gguf(GgufFile::open(flags->model.model)));
    } else {
      model = open_model(flags->model);
    }
    const Tokenizer& tok = vocab_only ? *vocab_only : *model->tokenizer;
    std::string text = read_prompt(flags->prompt, flags->prompt_file);
    std::vector<int32_t> ids = tok.encode(text, tok.vocab().add_bos && !flags->no_bos);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
  });
}

}  // namespace skiff::cli

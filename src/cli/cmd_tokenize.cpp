// skiff tokenize: the token ids of a text, space-separated on one line. Special-token text
// (<|eot_id|>, <s>, ...) is parsed by default, as llama-tokenize does. --bench times the
// encoding instead; a hidden --dump-unicode-classes serves tests/reference/test_unicode_tables.py.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "io/gguf.h"
#include "tokenizer/unicode.h"

namespace skiff::cli {
namespace {

// One byte per code point 0..0x10FFFF: the class bits of tokenizer/unicode.h.
void dump_unicode_classes(const std::string& path) {
  std::string bytes(0x110000, '\0');
  for (uint32_t cp = 0; cp < 0x110000; ++cp) bytes[cp] = static_cast<char>(code_point_bits(cp));
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) fail("{}: cannot write", path);
}

void bench_encode(const Tokenizer& tok, const std::string& text, int rounds, bool parse_special) {
  std::vector<double> seconds;
  size_t n_tokens = 0;
  for (int r = 0; r < rounds; ++r) {
    auto start = std::chrono::steady_clock::now();
    n_tokens = tok.encode(text, false, parse_special).size();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  std::printf("| bytes | tokens | rounds | median s | MB/s |\n|---:|---:|---:|---:|---:|\n");
  std::printf("| %zu | %zu | %d | %.4f | %.2f |\n", text.size(), n_tokens, rounds, median,
              static_cast<double>(text.size()) / 1e6 / median);
}

}  // namespace

void register_tokenize(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    std::string prompt, prompt_file, hf_tokenizer, hf_config, dump_unicode;
    bool no_bos = false;
    bool no_parse_special = false;
    int bench = 0;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text (BOS first when the model adds it)");
  add_model_flags(cmd, flags->model, false);
  cmd->add_option("-p,--prompt", flags->prompt, "text to tokenize");
  cmd->add_option("-f,--file", flags->prompt_file, "read the text from a file");
  cmd->add_flag("--no-bos", flags->no_bos, "do not add BOS");
  cmd->add_flag("--no-parse-special", flags->no_parse_special,
                "treat special-token text such as <|eot_id|> as plain text");
  cmd->add_option("--hf-tokenizer", flags->hf_tokenizer,
                  "use a Hugging Face tokenizer.json (byte-level BPE) instead of a model's vocabulary");
  cmd->add_option("--hf-config", flags->hf_config, "its tokenizer_config.json (BOS/EOS, chat template)");
  cmd->add_option("--bench", flags->bench, "encode the text this many times and print the speed instead of ids")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--dump-unicode-classes", flags->dump_unicode)->group("");
  cmd->callback([flags] {
    if (!flags->dump_unicode.empty()) return dump_unicode_classes(flags->dump_unicode);
    // A GGUF needs only its tokenizer.ggml.* metadata, so vocabulary-only files work too.
    std::unique_ptr<Model> model;
    std::unique_ptr<Tokenizer> vocab_only;
    if (!flags->hf_tokenizer.empty()) {
      if (!flags->model.model.empty()) fail("give -m or --hf-tokenizer, not both");
      vocab_only = std::make_unique<Tokenizer>(vocab_from_hf_tokenizer(flags->hf_tokenizer, flags->hf_config));
    } else if (is_gguf_file(flags->model.model)) {
      vocab_only = std::make_unique<Tokenizer>(vocab_from_gguf(GgufFile::open(flags->model.model)));
    } else {
      model = open_model(flags->model);
    }
    const Tokenizer& tok = vocab_only ? *vocab_only : *model->tokenizer;
    std::string text = read_prompt(flags->prompt, flags->prompt_file);
    if (flags->bench > 0) return bench_encode(tok, text, flags->bench, !flags->no_parse_special);
    std::vector<int32_t> ids =
        tok.encode(text, tok.vocab().add_bos && !flags->no_bos, !flags->no_parse_special);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
  });
}

}  // namespace skiff::cli

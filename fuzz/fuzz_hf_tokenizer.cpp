// libFuzzer target for vocab_from_hf_tokenizer: each input is written to a file and read as
// tokenizer.json (no config), then as tokenizer_config.json next to a small valid
// tokenizer.json. Loading must succeed or throw skiff::Error; what loads must tokenize.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace {

constexpr char kValidTokenizer[] = R"({
  "added_tokens": [{"id": 5, "content": "<s>", "special": true}, {"id": 6, "content": "</s>", "special": true}],
  "pre_tokenizer": {"type": "ByteLevel", "use_regex": true},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120a": 4},
            "merges": ["a b", ["\u0120", "a"]]}
})";

std::string write_temp(const std::string& name, const void* data, size_t size) {
  const std::string path = "/tmp/fuzz_hf_" + std::to_string(getpid()) + "_" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

void try_load(const std::string& json, const std::string& config) {
  try {
    skiff::Tokenizer tok(skiff::vocab_from_hf_tokenizer(json, config));
    (void)tok.decode(tok.encode("ab a<s>b </s>", true, true));
  } catch (const skiff::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string valid = write_temp("valid.json", kValidTokenizer, sizeof kValidTokenizer - 1);
  static const int remove_at_exit = std::atexit([] { std::remove(valid.c_str()); });
  (void)remove_at_exit;
  const std::string input = write_temp("input.json", data, size);
  try_load(input, "");
  try_load(valid, input);
  std::remove(input.c_str());
  return 0;
}

// Byte-level BPE pre-tokenizers: split a text's code points into words before merging, as
// llama.cpp does for each tokenizer.ggml.pre. Each splitter is a hand-written matcher for one
// regex of llama.cpp's list (applied in order; every stage splits the pieces of the one
// before, keeping unmatched text as pieces too), over the generated Unicode classes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace skiff {

enum class PreTokenizer { kDefault, kLlama3, kGpt2, kStarcoder, kFalcon, kQwen2 };

struct PreTokenizerInfo {
  PreTokenizer kind;
  bool ignore_merges;  // a word that is itself a vocabulary piece is emitted whole
  bool clean_spaces;   // llama.cpp's detokenize removes " ," style spaces
};

// The splitter llama.cpp uses for a tokenizer.ggml.pre name ("" is llama.cpp's fallback,
// "default"). Throws Error naming the pre-tokenizer and the supported names otherwise.
PreTokenizerInfo find_pre_tokenizer(std::string_view name);
// The names find_pre_tokenizer accepts, comma-separated.
std::string supported_pre_tokenizers();

// Splits cpts into words: appends each word's length in code points to `lengths`
// (lengths sum to cpts.size()). `scratch` is reused between calls to avoid allocation.
void pre_tokenize(PreTokenizer kind, std::span<const uint32_t> cpts, std::vector<uint32_t>& lengths,
                  std::vector<uint32_t>& scratch);

}  // namespace skiff

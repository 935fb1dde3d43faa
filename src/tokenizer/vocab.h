// The vocabulary a tokenizer works from, loaded from GGUF `tokenizer.ggml.*` metadata or a
// llama2.c tokenizer.bin. Token types follow llama.cpp: 1 normal, 2 unknown, 3 control,
// 4 user-defined, 5 unused, 6 byte.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace skiff {

class GgufFile;

enum class TokenType : int32_t {
  Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

struct Vocab {
  std::vector<std::string> pieces;  // token text, with U+2581 standing for a space
  std::vector<float> scores;        // merge priority: higher merges first
  std::vector<TokenType> types;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t unk_id = 0;
  int32_t pad_id = -1;
  bool add_bos = true;
  bool add_eos = false;
  bool add_space_prefix = true;  // SentencePiece's dummy prefix: " " before the text

  int32_t size() const { return static_cast<int32_t>(pieces.size()); }
};

// From GGUF metadata (tokenizer.ggml.model must be "llama"). Throws Error when a key is
// missing, arrays disagree in length, or special ids are out of range.
Vocab vocab_from_gguf(const GgufFile& gguf);
// From a llama2.c tokenizer.bin (int32 max_token_length; per token: f32 score, int32 len,
// bytes). `vocab_size` from the checkpoint; the file must hold at least that many tokens.
// Types are derived: "<unk>" unknown, "<s>"/"</s>" control, "<0xNN>" byte, else normal.
Vocab vocab_from_llama2c(const std::string& path, int32_t vocab_size);
// The same from bytes already in memory; `name` is used in error messages.
Vocab vocab_from_llama2c_bytes(std::span<const uint8_t> bytes, int32_t vocab_size,
                               const std::string& name);

// Checks a vocabulary built elsewhere (in code, or by the loaders above): non-empty, arrays
// of equal length, scores not NaN, types known, special ids in range (pad may be -1).
// Throws Error naming `source`.
void validate_vocab(const Vocab& vocab, const std::string& source);

}  // namespace skiff

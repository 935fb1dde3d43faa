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

// Which algorithm the pieces are for: SentencePiece BPE (GGUF "llama") or byte-level BPE
// (GGUF "gpt2": Llama 3, GPT-2, StarCoder, ...).
enum class VocabKind { kSpm, kBpe };

struct Vocab {
  VocabKind kind = VocabKind::kSpm;
  std::vector<std::string> pieces;  // token text: SPM with U+2581 for a space, BPE byte-to-unicode mapped
  std::vector<float> scores;        // SPM merge priority: higher merges first
  std::vector<TokenType> types;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t unk_id = 0;
  int32_t pad_id = -1;
  bool add_bos = true;
  bool add_eos = false;
  bool add_space_prefix = true;  // SentencePiece's dummy prefix: " " before the text

  // Byte-level BPE only.
  std::string pre;                  // pre-tokenizer name (tokenizer.ggml.pre), e.g. "llama-bpe"
  std::vector<std::string> merges;  // "left right", rank = position (earlier merges first)

  // End of generation: eos_id plus end-of-turn / end-of-message and any other token that
  // ends a reply (<|eot_id|>, <|eom_id|>, <|im_end|>, ...). -1 when absent.
  int32_t eot_id = -1;
  int32_t eom_id = -1;
  std::vector<int32_t> eog_ids;     // every end-of-generation id, eos_id included

  std::string chat_template;        // tokenizer.chat_template (Jinja text), "" when none

  int32_t size() const { return static_cast<int32_t>(pieces.size()); }
};

// From GGUF metadata: tokenizer.ggml.model "llama" (SentencePiece) or "gpt2" (byte-level BPE,
// with tokenizer.ggml.merges and .pre). Throws Error when a key is missing, arrays disagree
// in length, special ids are out of range, or the model or pre-tokenizer is unknown.
Vocab vocab_from_gguf(const GgufFile& gguf);
// Writes the vocabulary as the GGUF tokenizer.ggml.* keys llama.cpp reads (and
// tokenizer.chat_template when there is one).
class GgufWriter;
void write_vocab_gguf(const Vocab& vocab, GgufWriter& writer);
// Finds end-of-turn / end-of-message tokens by their text when eot_id / eom_id are unset and
// fills eog_ids (EOS included) as llama.cpp does; those tokens become control tokens.
void fill_end_of_generation(Vocab& vocab);
// From a llama2.c tokenizer.bin (int32 max_token_length; per token: f32 score, int32 len,
// bytes). `vocab_size` from the checkpoint; the file must hold at least that many tokens.
// Types are derived: "<unk>" unknown, "<s>"/"</s>" control, "<0xNN>" byte, else normal.
Vocab vocab_from_llama2c(const std::string& path, int32_t vocab_size);
// The same from bytes already in memory; `name` is used in error messages.
Vocab vocab_from_llama2c_bytes(std::span<const uint8_t> bytes, int32_t vocab_size,
                               const std::string& name);

// From a Hugging Face tokenizer.json (+ tokenizer_config.json, may be "" when absent):
// byte-level BPE models (Llama 3, Mistral-era BPE, SmolLM, ...). Throws Error naming the
// file and field when something is missing or malformed.
Vocab vocab_from_hf_tokenizer(const std::string& tokenizer_json_path,
                              const std::string& tokenizer_config_path);

// Checks a vocabulary built elsewhere (in code, or by the loaders above): non-empty, arrays
// of equal length, scores not NaN, types known, special ids in range (pad may be -1).
// Throws Error naming `source`.
void validate_vocab(const Vocab& vocab, const std::string& source);

}  // namespace skiff

// The two tokenizers llama.cpp calls SPM and BPE, with its semantics:
// - SentencePiece-style BPE (LLaMA 1/2): spaces become U+2581, a dummy space prefix is
//   added, the text is split into UTF-8 characters, adjacent pairs are merged highest-score
//   first, and any piece not in the vocabulary falls back to its bytes as <0xNN> tokens.
// - Byte-level BPE (GPT-2, Llama 3, ...): a pre-tokenizer splits the text into words, each
//   word's bytes are mapped to GPT-2's printable stand-ins and merged lowest merge rank first.
// Both split special-token text out first (tokenizer_st_partition in llama.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/merge_table.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/vocab.h"

namespace skiff {

// Bytes [begin, end) of a text.
struct ByteRange {
  size_t begin = 0;
  size_t end = 0;
};

class Tokenizer {
 public:
  // Throws Error when the vocabulary is inconsistent (see validate_vocab).
  explicit Tokenizer(Vocab vocab);

  const Vocab& vocab() const { return vocab_; }
  int32_t bos() const { return vocab_.bos_id; }
  int32_t eos() const { return vocab_.eos_id; }
  // True for every token that ends generation (EOS, end of turn, end of message, ...).
  bool is_eog(int32_t id) const;

  // Encodes text; prepends BOS when add_bos (callers pass vocab().add_bos for the default).
  // EOS is never appended here (callers append eos() when vocab().add_eos). Text equal to a
  // user-defined token is split out first, as llama.cpp does; control-token text only when
  // parse_special (e.g. "<|eot_id|>" in a rendered chat prompt).
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const;
  // As above with parse_special, except inside `literal` (byte ranges, sorted, disjoint):
  // control-token text there stays text. A rendered chat prompt passes its messages' content,
  // so "<|eot_id|>" typed by a user cannot end the user's turn (tokenizer/chat_encode.h).
  std::vector<int32_t> encode_with_literal(std::string_view text, bool add_bos,
                                           std::span<const ByteRange> literal) const;
  // Whether encode(text, ..., parse_special=true) would turn some of `text` into a control or
  // unknown token (user-defined tokens are split out either way).
  bool has_control_text(std::string_view text) const;

  // The bytes a token stands for: byte tokens give their byte, U+2581 gives a space,
  // control, unknown and unused tokens give "", user-defined tokens their text. When
  // `after_bos` is true (and the vocabulary adds a dummy prefix) a leading space is dropped,
  // as llama.cpp does for the first piece after BOS.
  // Throws Error for an id outside the vocabulary.
  std::string token_bytes(int32_t id, bool after_bos = false) const;
  // Decodes a whole sequence (a leading BOS is skipped and the dummy-prefix space dropped).
  // Exact: decode(encode(text)) == text for valid UTF-8 without special-token text.
  std::string decode(const std::vector<int32_t>& ids) const;
  // decode() plus llama.cpp's clean-up of spaces (llama_detokenize: " ," -> ",", " 's" ->
  // "'s", ...) for the byte-level BPE vocabularies whose pre-tokenizer asks for it.
  std::string detokenize(const std::vector<int32_t>& ids) const;

 private:
  // Looks strings up by std::string_view without building a std::string.
  struct PieceHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  int32_t find_piece(std::string_view piece) const;  // -1 when absent
  // The SentencePiece merge loop over one fragment (already escaped and prefixed).
  void encode_fragment(std::string_view text, std::vector<int32_t>& out) const;

  // Buffers reused across the words of one encode() call.
  struct BpeScratch;
  // Byte-level BPE over one fragment of text without special tokens.
  void encode_bpe_fragment(std::string_view text, std::vector<int32_t>& out, BpeScratch& scratch) const;
  // Merges one byte-mapped word and appends its tokens.
  void encode_bpe_word(std::string_view word, std::vector<int32_t>& out, BpeScratch& scratch) const;

  // Text split into special tokens and plain text (token -1).
  struct Fragment {
    size_t start;
    size_t length;
    int32_t token;
  };
  std::vector<Fragment> partition(std::string_view text, bool parse_special,
                                  std::span<const ByteRange> literal = {}) const;
  std::vector<int32_t> encode_fragments(std::string_view text, bool add_bos, const std::vector<Fragment>& fragments) const;

  Vocab vocab_;
  std::unordered_map<std::string, int32_t, PieceHash, std::equal_to<>> piece_to_id_;
  int32_t byte_tokens_[256];           // id of <0xNN> (else of the 1-byte piece), or -1
  std::vector<std::string> bytes_;     // what each token decodes to (token_bytes)
  // Control, user-defined and unknown tokens, split out of the text first, longest first
  // (control and unknown ones only when parsing special tokens).
  std::vector<int32_t> special_;
  bool special_first_byte_[256] = {};  // some special token starts with this byte

  // Byte-level BPE only.
  PreTokenizerInfo pre_{};
  MergeTable merges_;
};

// Streams decoded text so that a UTF-8 character split across tokens is emitted whole:
// push() returns the complete characters available so far; flush() returns the rest.
// At most 3 bytes are held back, and only while they can still become a valid character.
// Pushing ids one by one yields exactly what decode() gives for the whole sequence.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(int32_t id);
  std::string flush();
  // true (the default): the next id starts a sequence, as in decode(): a leading BOS is
  // skipped and the first piece loses its dummy-prefix space. false: ids continue a sequence
  // (e.g. only the generated tokens after a prompt are pushed), so nothing is dropped.
  void set_after_bos(bool v) { state_ = v ? State::Start : State::Inside; }

 private:
  enum class State { Start, AfterBos, Inside };
  const Tokenizer& tokenizer_;
  std::string pending_;
  State state_ = State::Start;
};

}  // namespace skiff

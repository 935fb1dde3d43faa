// The SentencePiece BPE tokenizer, step for step as llama.cpp's llm_tokenizer_spm: escape
// spaces, split into UTF-8 characters, merge the best-scoring adjacent pair until none is in
// the vocabulary, then emit each symbol as its token or as byte tokens. The byte-level BPE
// tokenizer as llm_tokenizer_bpe: pre-tokenize, map bytes to stand-ins, merge by rank.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <limits>
#include <queue>

#include "base/error.h"
#include "tokenizer/unicode.h"

namespace skiff {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581

// Length of a UTF-8 sequence from its first byte, as llama.cpp's unicode_len_utf8 counts it:
// stray continuation bytes count as one-byte characters.
size_t utf8_sequence_length(uint8_t first) {
  static constexpr uint8_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[first >> 4];
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte of a "<0xNN>" piece, or -1.
int byte_piece_value(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int hi = hex_value(piece[3]);
  int lo = hex_value(piece[4]);
  if (hi < 0 || lo < 0) return -1;
  return hi * 16 + lo;
}

std::string unescape_spaces(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  size_t i = 0;
  while (i < piece.size()) {
    if (piece.substr(i, kSpaceMark.size()) == kSpaceMark) {
      out += ' ';
      i += kSpaceMark.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

// How many bytes at the end of `s` are the start of a UTF-8 character still waiting for its
// continuation bytes (0 when the tail is complete or can never become valid).
size_t incomplete_utf8_tail(const std::string& s) {
  const size_t n = s.size();
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    auto c = static_cast<uint8_t>(s[n - k]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
    size_t need = 0;
    if ((c & 0xE0) == 0xC0) {
      need = 2;
    } else if ((c & 0xF0) == 0xE0) {
      need = 3;
    } else if ((c & 0xF8) == 0xF0) {
      need = 4;
    }
    return need > k ? k : 0;
  }
  return 0;
}

// One piece of the text during merging: a byte range linked to its neighbours. A symbol
// merged into its left neighbour keeps length 0.
struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;
  size_t length;
};

// A candidate merge of two adjacent symbols. `length` is the merged length when it was
// queued: if either side has changed since, the entry is stale and skipped.
struct Bigram {
  float score;
  int32_t left;
  int32_t right;
  size_t length;
};

// A candidate byte-level BPE merge, as Bigram with the merge rank (lower first).
struct RankedBigram {
  int32_t rank;
  int32_t left;
  int32_t right;
  size_t length;
};

// Highest score first; on equal scores the leftmost pair first.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

// `text` as one symbol per UTF-8 character (a truncated sequence at the end is one symbol),
// linked in order, into the empty `symbols`.
void split_into_symbols(std::string_view text, std::vector<Symbol>& symbols) {
  for (size_t offset = 0; offset < text.size();) {
    size_t length =
        std::min(utf8_sequence_length(static_cast<uint8_t>(text[offset])), text.size() - offset);
    auto index = static_cast<int32_t>(symbols.size());
    offset += length;
    symbols.push_back({index - 1, offset == text.size() ? -1 : index + 1, offset - length, length});
  }
}

// One merge step of the SPM and the byte-level BPE loops (Bigram or RankedBigram): the right
// symbol joins the left one, the list is relinked, and the two new neighbouring pairs go to
// try_add_bigram(left, right).
template <typename AnyBigram, typename TryAdd>
void merge_into_left(std::vector<Symbol>& symbols, const AnyBigram& bigram,
                     TryAdd& try_add_bigram) {
  Symbol& left = symbols[static_cast<size_t>(bigram.left)];
  Symbol& right = symbols[static_cast<size_t>(bigram.right)];
  if (left.length == 0 || right.length == 0 || left.length + right.length != bigram.length) {
    return;  // one side was merged into something else since this pair was queued
  }
  left.length += right.length;
  right.length = 0;
  left.next = right.next;
  if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = bigram.left;
  try_add_bigram(left.prev, bigram.left);
  try_add_bigram(bigram.left, left.next);
}

// A byte-level BPE piece back to bytes: each stand-in code point gives its byte; any other
// code point is kept as its UTF-8 (llama.cpp prints an [UNK_BYTE_...] marker there).
std::string unmap_bytes(std::string_view piece) {
  std::vector<uint32_t> cpts;
  decode_utf8(piece, cpts);
  std::string out;
  for (uint32_t cp : cpts) {
    const int byte = unicode_to_byte(cp);
    if (byte >= 0) {
      out += static_cast<char>(byte);
    } else {
      append_utf8(cp, out);
    }
  }
  return out;
}

// llama_detokenize's clean_spaces passes, on the decoded text.
std::string clean_spaces(const std::string& text) {
  if (text.size() < 2) return text;
  // " ?", " !", " .", " ," lose the space.
  std::string a(1, text[0]);
  for (size_t i = 1; i < text.size(); ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) a.pop_back();
    a += x;
  }
  // " ' " becomes "'"; the space consumed after it no longer counts as a space.
  std::string src = a;
  std::string b(1, src[0]);
  for (size_t i = 1; i < src.size(); ++i) {
    const char x = src[i];
    if (x == '\'' && i + 1 < src.size() && src[i - 1] == ' ' && src[i + 1] == ' ') {
      b.pop_back();
      src[++i] = '\0';
    }
    b += x;
  }
  // " 's", " 'm", " 're", " 've" lose the space (" 't", " 'd", " 'll" keep it).
  std::string c(1, b[0]);
  for (size_t i = 1; i < b.size(); ++i) {
    const char x = b[i];
    if (b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
      const char x1 = b[i + 1];
      if (x1 == 's' || x1 == 'm') {
        c.pop_back();
      } else if (x1 != 't' && x1 != 'd' && i + 2 < b.size()) {
        const char x2 = b[i + 2];
        if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) c.pop_back();
      }
    }
    c += x;
  }
  return c;
}

}  // namespace

struct Tokenizer::BpeScratch {
  std::vector<uint32_t> cpts;
  std::vector<uint32_t> lengths;
  std::vector<uint32_t> split_scratch;
  std::string word;
  std::vector<Symbol> symbols;
  std::vector<RankedBigram> queue;  // a heap: lowest rank, then leftmost, on top
};

Tokenizer::Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {
  validate_vocab(vocab_, "tokenizer");
  const bool bpe = vocab_.kind == VocabKind::kBpe;
  if (bpe) {
    pre_ = find_pre_tokenizer(vocab_.pre);
    merges_ = MergeTable(vocab_.merges);
  }
  const int32_t n = vocab_.size();
  piece_to_id_.reserve(static_cast<size_t>(n));
  bytes_.resize(static_cast<size_t>(n));
  for (int32_t id = 0; id < n; ++id) {
    const std::string& piece = vocab_.pieces[static_cast<size_t>(id)];
    // A later duplicate wins, as in llama.cpp. Empty pieces can never match a symbol.
    if (!piece.empty()) piece_to_id_[piece] = id;

    std::string& bytes = bytes_[static_cast<size_t>(id)];
    switch (vocab_.types[static_cast<size_t>(id)]) {
      case TokenType::Normal:
        bytes = bpe ? unmap_bytes(piece) : unescape_spaces(piece);
        break;
      case TokenType::Byte: {
        if (bpe) break;  // llama.cpp prints nothing for them in a byte-level vocabulary
        int value = byte_piece_value(piece);
        // A byte token whose text is not <0xNN> is decoded as if it were normal text.
        bytes = value >= 0 ? std::string(1, static_cast<char>(value)) : unescape_spaces(piece);
        break;
      }
      case TokenType::UserDefined:
        bytes = piece;
        break;
      case TokenType::Undefined:
      case TokenType::Unknown:
      case TokenType::Control:
      case TokenType::Unused:
        break;  // nothing, as llama.cpp prints them when not rendering special tokens
    }
    const TokenType type = vocab_.types[static_cast<size_t>(id)];
    if (!piece.empty() &&
        (type == TokenType::Control || type == TokenType::UserDefined || type == TokenType::Unknown)) {
      special_.push_back(id);
      special_first_byte_[static_cast<uint8_t>(piece[0])] = true;
    }
  }
  for (int b = 0; b < 256; ++b) {
    int32_t id = find_piece(fmt::format("<0x{:02X}>", b));
    if (id < 0) id = find_piece(std::string(1, static_cast<char>(b)));
    byte_tokens_[b] = id;
  }
  // llama.cpp splits special text out longest first.
  std::stable_sort(special_.begin(), special_.end(), [&](int32_t a, int32_t b) {
    return vocab_.pieces[static_cast<size_t>(a)].size() >
           vocab_.pieces[static_cast<size_t>(b)].size();
  });
}

int32_t Tokenizer::find_piece(std::string_view piece) const {
  auto it = piece_to_id_.find(piece);
  return it == piece_to_id_.end() ? -1 : it->second;
}

void Tokenizer::encode_fragment(std::string_view text, std::vector<int32_t>& out) const {
  if (text.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    fail("tokenizer: a text of {} bytes is too long to encode", text.size());
  }
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  split_into_symbols(text, symbols);
  if (symbols.empty()) return;

  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  auto try_add_bigram = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[static_cast<size_t>(left)];
    const Symbol& r = symbols[static_cast<size_t>(right)];
    // Merged symbols stay contiguous in the text, so the pair is one substring.
    int32_t id = find_piece(text.substr(l.start, l.length + r.length));
    if (id < 0) return;
    queue.push({vocab_.scores[static_cast<size_t>(id)], left, right, l.length + r.length});
  };
  for (size_t i = 1; i < symbols.size(); ++i) {
    try_add_bigram(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    merge_into_left(symbols, bigram, try_add_bigram);
  }

  // Every merged symbol is a vocabulary piece (it was merged because it is one), so only
  // single characters can be missing; llama.cpp's rev_merge re-split never applies to them.
  for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
    const Symbol& symbol = symbols[static_cast<size_t>(i)];
    std::string_view piece = text.substr(symbol.start, symbol.length);
    int32_t id = find_piece(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : piece) {
      int32_t byte_id = byte_tokens_[static_cast<uint8_t>(c)];
      out.push_back(byte_id >= 0 ? byte_id : vocab_.unk_id);
    }
  }
}

bool Tokenizer::is_eog(int32_t id) const {
  if (id == vocab_.eos_id) return true;
  return std::find(vocab_.eog_ids.begin(), vocab_.eog_ids.end(), id) != vocab_.eog_ids.end();
}

std::vector<Tokenizer::Fragment> Tokenizer::partition(std::string_view text, bool parse_special,
                                                     std::span<const ByteRange> literal) const {
  std::vector<Fragment> fragments{{0, text.size(), -1}};
  // Most texts hold no special-token text at all: one pass over the bytes settles that.
  bool maybe_special = false;
  for (char c : text) {
    if (special_first_byte_[static_cast<uint8_t>(c)]) {
      maybe_special = true;
      break;
    }
  }
  if (!maybe_special) return fragments;
  std::vector<Fragment> split;
  for (int32_t id : special_) {
    const TokenType type = vocab_.types[static_cast<size_t>(id)];
    if (!parse_special && type != TokenType::UserDefined) continue;
    const std::string& piece = vocab_.pieces[static_cast<size_t>(id)];
    if (text.find(piece) == std::string_view::npos) continue;
    // A hit that overlaps a literal range stays text (user-defined tokens are split anyway).
    auto in_literal = [&](size_t hit) {
      if (type == TokenType::UserDefined) return false;
      for (const ByteRange& r : literal)
        if (hit < r.end && hit + piece.size() > r.begin) return true;
      return false;
    };
    split.clear();
    for (const Fragment& fragment : fragments) {
      if (fragment.token >= 0) {
        split.push_back(fragment);
        continue;
      }
      const size_t end = fragment.start + fragment.length;
      const std::string_view window = text.substr(0, end);
      size_t position = fragment.start, from = fragment.start;
      while (true) {
        size_t hit = window.find(piece, from);
        if (hit == std::string_view::npos) break;
        if (in_literal(hit)) {
          from = hit + 1;
          continue;
        }
        if (hit > position) split.push_back({position, hit - position, -1});
        split.push_back({hit, piece.size(), id});
        position = from = hit + piece.size();
      }
      if (position < end) split.push_back({position, end - position, -1});
    }
    fragments.swap(split);
  }
  return fragments;
}

bool Tokenizer::has_control_text(std::string_view text) const {
  for (const Fragment& f : partition(text, /*parse_special=*/true)) {
    if (f.token >= 0 && vocab_.types[static_cast<size_t>(f.token)] != TokenType::UserDefined) return true;
  }
  return false;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  return encode_fragments(text, add_bos, partition(text, parse_special));
}

std::vector<int32_t> Tokenizer::encode_with_literal(std::string_view text, bool add_bos,
                                                    std::span<const ByteRange> literal) const {
  return encode_fragments(text, add_bos, partition(text, /*parse_special=*/true, literal));
}

std::vector<int32_t> Tokenizer::encode_fragments(std::string_view text, bool add_bos,
                                                 const std::vector<Fragment>& fragments) const {
  std::vector<int32_t> out;
  if (add_bos) out.push_back(vocab_.bos_id);
  if (text.empty()) return out;  // SentencePiece: no dummy prefix for empty text

  if (vocab_.kind == VocabKind::kBpe) {
    BpeScratch scratch;
    for (const Fragment& fragment : fragments) {
      if (fragment.token >= 0) {
        out.push_back(fragment.token);
      } else {
        encode_bpe_fragment(text.substr(fragment.start, fragment.length), out, scratch);
      }
    }
    return out;
  }

  bool previous_was_special = true;  // the first text fragment gets the dummy prefix
  std::string escaped;
  for (const Fragment& fragment : fragments) {
    if (fragment.token >= 0) {
      out.push_back(fragment.token);
      previous_was_special = true;
      continue;
    }
    escaped.clear();
    if (vocab_.add_space_prefix && previous_was_special) escaped += kSpaceMark;
    for (char c : text.substr(fragment.start, fragment.length)) {
      if (c == ' ') {
        escaped += kSpaceMark;
      } else {
        escaped += c;
      }
    }
    encode_fragment(escaped, out);
    previous_was_special = false;
  }
  return out;
}

void Tokenizer::encode_bpe_fragment(std::string_view text, std::vector<int32_t>& out,
                                    BpeScratch& scratch) const {
  scratch.cpts.clear();
  decode_utf8(text, scratch.cpts);
  scratch.lengths.clear();
  pre_tokenize(pre_.kind, scratch.cpts, scratch.lengths, scratch.split_scratch);
  size_t start = 0;
  char utf8[4];
  for (uint32_t length : scratch.lengths) {
    scratch.word.clear();
    for (size_t i = start; i < start + length; ++i) {
      // The code point's UTF-8 bytes, each replaced by its stand-in.
      const uint32_t cp = scratch.cpts[i];
      size_t n = 0;
      if (cp < 0x80) {
        utf8[n++] = static_cast<char>(cp);
      } else if (cp < 0x800) {
        utf8[n++] = static_cast<char>(0xC0 | (cp >> 6));
        utf8[n++] = static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        utf8[n++] = static_cast<char>(0xE0 | (cp >> 12));
        utf8[n++] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        utf8[n++] = static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        utf8[n++] = static_cast<char>(0xF0 | (cp >> 18));
        utf8[n++] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        utf8[n++] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        utf8[n++] = static_cast<char>(0x80 | (cp & 0x3F));
      }
      for (size_t k = 0; k < n; ++k) scratch.word += byte_to_unicode(static_cast<uint8_t>(utf8[k]));
    }
    start += length;
    encode_bpe_word(scratch.word, out, scratch);
  }
}

void Tokenizer::encode_bpe_word(std::string_view word, std::vector<int32_t>& out,
                                BpeScratch& scratch) const {
  if (pre_.ignore_merges) {
    // Llama 3: a word that is itself a piece is taken whole, whatever the merges would make.
    int32_t id = find_piece(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<Symbol>& symbols = scratch.symbols;
  symbols.clear();
  split_into_symbols(word, symbols);

  // Lowest rank first, then leftmost: a max-heap under the reversed order.
  auto later = [](const RankedBigram& a, const RankedBigram& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::vector<RankedBigram>& queue = scratch.queue;
  queue.clear();
  auto try_add_bigram = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[static_cast<size_t>(left)];
    const Symbol& r = symbols[static_cast<size_t>(right)];
    int32_t rank = merges_.rank(word.substr(l.start, l.length), word.substr(r.start, r.length));
    if (rank < 0) return;
    queue.push_back({rank, left, right, l.length + r.length});
    std::push_heap(queue.begin(), queue.end(), later);
  };
  for (size_t i = 1; i < symbols.size(); ++i) {
    try_add_bigram(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), later);
    const RankedBigram bigram = queue.back();
    queue.pop_back();
    merge_into_left(symbols, bigram, try_add_bigram);
  }

  for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
    const Symbol& symbol = symbols[static_cast<size_t>(i)];
    std::string_view piece = word.substr(symbol.start, symbol.length);
    int32_t id = find_piece(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    // As llama.cpp: each byte of the piece that is itself a piece, the others dropped.
    for (size_t k = 0; k < piece.size(); ++k) {
      int32_t byte_id = find_piece(piece.substr(k, 1));
      if (byte_id >= 0) out.push_back(byte_id);
    }
  }
}

std::string Tokenizer::token_bytes(int32_t id, bool after_bos) const {
  if (id < 0 || id >= vocab_.size()) {
    fail("tokenizer: token id {} is out of range for a vocabulary of {} tokens", id, vocab_.size());
  }
  const std::string& bytes = bytes_[static_cast<size_t>(id)];
  if (after_bos && vocab_.add_space_prefix && !bytes.empty() && bytes[0] == ' ') {
    return bytes.substr(1);
  }
  return bytes;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  size_t i = !ids.empty() && ids[0] == vocab_.bos_id ? 1 : 0;
  for (bool first = true; i < ids.size(); ++i, first = false) out += token_bytes(ids[i], first);
  return out;
}

std::string Tokenizer::detokenize(const std::vector<int32_t>& ids) const {
  std::string text = decode(ids);
  if (vocab_.kind == VocabKind::kBpe && pre_.clean_spaces) return clean_spaces(text);
  return text;
}

std::string StreamDecoder::push(int32_t id) {
  // The same rule as decode(): skip a leading BOS, strip the space of the piece after it.
  if (state_ == State::Start && id == tokenizer_.bos()) {
    state_ = State::AfterBos;
    return "";
  }
  pending_ += tokenizer_.token_bytes(id, state_ != State::Inside);
  state_ = State::Inside;
  const size_t ready = pending_.size() - incomplete_utf8_tail(pending_);
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace skiff

// The regexes (llama.cpp src/llama-vocab.cpp, llm_tokenizer_bpe) and how each is matched:
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|
//           \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+   (qwen2: \p{N})
// The others are runs or single characters of a class. llama.cpp runs some of these through
// std::regex over text whose non-ASCII characters are collapsed to one byte per class
// (whitespace first); the class tests below give the same matches.
#include "tokenizer/pretokenize.h"

#include "base/error.h"
#include "tokenizer/unicode.h"

namespace skiff {
namespace {

struct NamedPre {
  const char* name;
  PreTokenizerInfo info;
};

constexpr NamedPre kPreTokenizers[] = {
    {"default", {PreTokenizer::kDefault, false, true}},
    {"llama-bpe", {PreTokenizer::kLlama3, true, true}},
    {"llama3", {PreTokenizer::kLlama3, true, true}},
    {"llama-v3", {PreTokenizer::kLlama3, true, true}},
    {"falcon3", {PreTokenizer::kLlama3, true, true}},
    {"dbrx", {PreTokenizer::kLlama3, false, true}},
    {"smaug-bpe", {PreTokenizer::kLlama3, false, true}},
    {"gpt-2", {PreTokenizer::kGpt2, false, true}},
    {"phi-2", {PreTokenizer::kGpt2, false, true}},
    {"roberta-bpe", {PreTokenizer::kGpt2, false, true}},
    {"mpt", {PreTokenizer::kGpt2, false, true}},
    {"olmo", {PreTokenizer::kGpt2, false, true}},
    {"jais", {PreTokenizer::kGpt2, false, true}},
    {"starcoder", {PreTokenizer::kStarcoder, false, true}},
    {"refact", {PreTokenizer::kStarcoder, false, true}},
    {"command-r", {PreTokenizer::kStarcoder, false, false}},
    {"smollm", {PreTokenizer::kStarcoder, false, false}},
    {"codeshell", {PreTokenizer::kStarcoder, false, true}},
    {"exaone", {PreTokenizer::kStarcoder, false, true}},
    {"minerva-7b", {PreTokenizer::kStarcoder, false, true}},
    {"falcon", {PreTokenizer::kFalcon, false, true}},
    {"qwen2", {PreTokenizer::kQwen2, false, false}},
    {"deepseek-r1-qwen", {PreTokenizer::kQwen2, false, false}},
    {"megrez", {PreTokenizer::kQwen2, false, true}},
    {"stablelm2", {PreTokenizer::kQwen2, false, true}},
};

constexpr uint8_t kInsideBit = 16;

// The piece being split. bits(): the class bits of the code point at pos with kInsideBit
// set, or 0 outside [begin, end), where no class test passes.
struct Window {
  std::span<const uint32_t> cpts;
  size_t begin, end;
  uint32_t cpt(size_t pos) const { return pos >= begin && pos < end ? cpts[pos] : 0xFFFFFFFF; }
  uint8_t bits(size_t pos) const {
    return pos >= begin && pos < end ? static_cast<uint8_t>(code_point_bits(cpts[pos]) | kInsideBit) : 0;
  }
};

constexpr uint8_t kWhitespaceBit = 8;
bool is_letter(uint8_t b) { return (b & 7) == static_cast<uint8_t>(CodePointClass::kLetter) && !(b & kWhitespaceBit); }
bool is_number(uint8_t b) { return (b & 7) == static_cast<uint8_t>(CodePointClass::kNumber) && !(b & kWhitespaceBit); }
bool is_space(uint8_t b) { return (b & kWhitespaceBit) != 0; }
bool is_punctuation(uint8_t b) {
  return (b & 7) == static_cast<uint8_t>(CodePointClass::kPunctuation) && !(b & kWhitespaceBit);
}

// A splitter appends the lengths of the pieces of [begin, end) to out.
using Lengths = std::vector<uint32_t>;

void push(Lengths& out, size_t length) {
  if (length > 0) out.push_back(static_cast<uint32_t>(length));
}

bool ascii_lower_is(uint32_t cp, char c) { return cp < 128 && (cp | 0x20) == static_cast<uint32_t>(c); }

// 's|'t|'re|'ve|'m|'ll|'d at pos: the length matched, else 0. case_insensitive for llama3.
size_t contraction(const Window& w, size_t pos, bool case_insensitive) {
  if (w.cpt(pos) != '\'' || pos + 1 >= w.end) return 0;
  auto is = [&](uint32_t cp, char c) {
    return case_insensitive ? ascii_lower_is(cp, c) : cp == static_cast<uint32_t>(c);
  };
  const uint32_t a = w.cpt(pos + 1);
  if (is(a, 's') || is(a, 't') || is(a, 'm') || is(a, 'd')) return 2;
  if (pos + 2 >= w.end) return 0;
  const uint32_t b = w.cpt(pos + 2);
  if ((is(a, 'r') && is(b, 'e')) || (is(a, 'v') && is(b, 'e')) || (is(a, 'l') && is(b, 'l'))) return 3;
  return 0;
}

// After letters/numbers/punctuation failed: \s+(?!\S)|\s+ at pos; else one character.
size_t whitespace_or_one(const Window& w, size_t pos) {
  size_t n = 0;
  while (is_space(w.bits(pos + n))) ++n;
  if (n > 1 && pos + n < w.end) return n - 1;  // leave the last space to the next word
  return n > 0 ? n : 1;
}

void split_gpt2(const Window& w, Lengths& out) {
  size_t pos = w.begin;
  while (pos < w.end) {
    size_t n = contraction(w, pos, false);
    if (n == 0) {
      const bool space = w.cpt(pos) == ' ';
      const uint8_t first = w.bits(pos + (space ? 1 : 0));
      size_t k = pos + (space ? 1 : 0);
      if (is_letter(first)) {
        while (is_letter(w.bits(k))) ++k;
        n = k - pos;
      } else if (is_number(first)) {
        while (is_number(w.bits(k))) ++k;
        n = k - pos;
      } else if (first != 0 && !is_space(first)) {  // [^\s\p{L}\p{N}]+, inside the text
        auto other = [](uint8_t b) { return b != 0 && !is_space(b) && !is_letter(b) && !is_number(b); };
        while (other(w.bits(k))) ++k;
        n = k - pos;
      } else {
        n = whitespace_or_one(w, pos);
      }
    }
    push(out, n);
    pos += n;
  }
}

void split_llama3(const Window& w, size_t max_digits, Lengths& out) {
  size_t pos = w.begin;
  while (pos < w.end) {
    size_t n = contraction(w, pos, true);
    const uint32_t cp = w.cpt(pos);
    const uint8_t bits = w.bits(pos);
    if (n == 0 && cp != '\r' && cp != '\n' && !is_number(bits) &&
        (is_letter(bits) || is_letter(w.bits(pos + 1)))) {
      size_t k = pos + 1;  // [^\r\n\p{L}\p{N}]?\p{L}+
      while (is_letter(w.bits(k))) ++k;
      n = k - pos;
    }
    if (n == 0 && is_number(bits)) {  // \p{N}{1,max_digits}, repeated
      size_t k = pos;
      while (is_number(w.bits(k))) {
        ++k;
        if (k - pos == max_digits) break;
      }
      n = k - pos;
    }
    if (n == 0) {
      const uint8_t next = cp == ' ' ? w.bits(pos + 1) : bits;
      auto other = [](uint8_t b) { return b != 0 && !is_space(b) && !is_letter(b) && !is_number(b); };
      if (other(next) || (cp == ' ' && next == 0)) {  // ?[^\s\p{L}\p{N}]+[\r\n]*
        size_t k = pos + (cp == ' ' ? 1 : 0);
        while (other(w.bits(k))) ++k;
        while (w.cpt(k) == '\r' || w.cpt(k) == '\n') ++k;
        n = k - pos;
      }
    }
    if (n == 0) {
      size_t spaces = 0, last_newline_end = 0;
      while (is_space(w.bits(pos + spaces))) {
        const uint32_t c = w.cpt(pos + spaces);
        ++spaces;
        if (c == '\r' || c == '\n') last_newline_end = spaces;
      }
      if (last_newline_end > 0) {
        n = last_newline_end;  // \s*[\r\n]+
      } else {
        n = whitespace_or_one(w, pos);
      }
    }
    push(out, n);
    pos += n;
  }
}

// Regex matches of a class, the text between them kept as pieces. `runs`: class+, else one
// character per match.
template <typename Pred>
void split_class(const Window& w, Pred pred, bool runs, Lengths& out) {
  size_t gap_start = w.begin;
  size_t pos = w.begin;
  while (pos < w.end) {
    if (!pred(w.cpt(pos), w.bits(pos))) {
      ++pos;
      continue;
    }
    size_t k = pos + 1;
    if (runs) {
      while (k < w.end && pred(w.cpt(k), w.bits(k))) ++k;
    }
    push(out, pos - gap_start);
    push(out, k - pos);
    pos = gap_start = k;
  }
  push(out, w.end - gap_start);
}

// [0-9][0-9][0-9]: leftmost non-overlapping triples of ASCII digits.
void split_ascii_digit_triples(const Window& w, Lengths& out) {
  auto digit = [&](size_t p) { return p < w.end && w.cpt(p) >= '0' && w.cpt(p) <= '9'; };
  size_t gap_start = w.begin;
  size_t pos = w.begin;
  while (pos < w.end) {
    if (digit(pos) && digit(pos + 1) && digit(pos + 2)) {
      push(out, pos - gap_start);
      push(out, 3);
      pos = gap_start = pos + 3;
    } else {
      ++pos;
    }
  }
  push(out, w.end - gap_start);
}

// [\p{P}\$\+<=>\^~\|`]+ (falcon) and the same without the backtick (default).
bool punctuation_or_ascii_symbol(uint32_t cp, uint8_t bits, bool backtick) {
  switch (cp) {
    case '$': case '+': case '<': case '=': case '>': case '^': case '~': case '|':
      return true;
    case '`':
      return backtick;
    default:
      return is_punctuation(bits);
  }
}

enum class Stage { kGpt2, kLlama3, kQwen2, kNumberEach, kNumberRuns, kPunctFalcon, kPunctDefault, kDigits3 };

std::span<const Stage> stages(PreTokenizer kind) {
  static constexpr Stage kDefault[] = {Stage::kPunctDefault, Stage::kGpt2, Stage::kNumberRuns, Stage::kDigits3};
  static constexpr Stage kLlama3[] = {Stage::kLlama3};
  static constexpr Stage kGpt2[] = {Stage::kGpt2};
  static constexpr Stage kStarcoder[] = {Stage::kNumberEach, Stage::kGpt2};
  static constexpr Stage kFalcon[] = {Stage::kPunctFalcon, Stage::kGpt2, Stage::kDigits3};
  static constexpr Stage kQwen2[] = {Stage::kQwen2};
  switch (kind) {
    case PreTokenizer::kDefault: return kDefault;
    case PreTokenizer::kLlama3: return kLlama3;
    case PreTokenizer::kGpt2: return kGpt2;
    case PreTokenizer::kStarcoder: return kStarcoder;
    case PreTokenizer::kFalcon: return kFalcon;
    case PreTokenizer::kQwen2: return kQwen2;
  }
  return kDefault;
}

void run_stage(Stage stage, const Window& w, Lengths& out) {
  switch (stage) {
    case Stage::kGpt2: return split_gpt2(w, out);
    case Stage::kLlama3: return split_llama3(w, 3, out);
    case Stage::kQwen2: return split_llama3(w, 1, out);
    case Stage::kNumberEach:
      return split_class(w, [](uint32_t, uint8_t b) { return is_number(b); }, false, out);
    case Stage::kNumberRuns:
      return split_class(w, [](uint32_t, uint8_t b) { return is_number(b); }, true, out);
    case Stage::kPunctFalcon:
      return split_class(w, [](uint32_t c, uint8_t b) { return punctuation_or_ascii_symbol(c, b, true); },
                         true, out);
    case Stage::kPunctDefault:
      return split_class(w, [](uint32_t c, uint8_t b) { return punctuation_or_ascii_symbol(c, b, false); },
                         true, out);
    case Stage::kDigits3: return split_ascii_digit_triples(w, out);
  }
}

}  // namespace

std::string supported_pre_tokenizers() {
  std::string names;
  for (const NamedPre& pre : kPreTokenizers) names += (names.empty() ? "" : ", ") + std::string(pre.name);
  return names;
}

PreTokenizerInfo find_pre_tokenizer(std::string_view name) {
  if (name.empty()) return kPreTokenizers[0].info;
  for (const NamedPre& pre : kPreTokenizers) {
    if (name == pre.name) return pre.info;
  }
  fail("unsupported pre-tokenizer \"{}\" (tokenizer.ggml.pre); supported: {}", name,
       supported_pre_tokenizers());
}

void pre_tokenize(PreTokenizer kind, std::span<const uint32_t> cpts, std::vector<uint32_t>& lengths,
                  std::vector<uint32_t>& scratch) {
  const size_t first = lengths.size();
  if (cpts.empty()) return;
  std::span<const Stage> list = stages(kind);
  // Stage 0 splits the whole text; each later stage splits every piece of the one before.
  run_stage(list[0], Window{cpts, 0, cpts.size()}, lengths);
  for (size_t s = 1; s < list.size(); ++s) {
    scratch.assign(lengths.begin() + static_cast<std::ptrdiff_t>(first), lengths.end());
    lengths.resize(first);
    size_t start = 0;
    for (uint32_t length : scratch) {
      run_stage(list[s], Window{cpts, start, start + length}, lengths);
      start += length;
    }
  }
}

}  // namespace skiff

// libFuzzer target for the tokenizer and the llama2.c vocabulary parser. Each input is
// (1) encoded and decoded with a small vocabulary built in code (so the target needs no
// file; SKIFF_FUZZ_TOKENIZER=path/to/tokenizer.bin uses that file instead), checking
// decode(encode(x)) == x for valid UTF-8 without NUL or U+2581, and that streaming decode
// agrees with decode; (2) encoded with a vocabulary that has user-defined tokens and no byte
// tokens (UNK fallback), for crashes only; (3) parsed as a tokenizer.bin, which must either
// load or throw skiff::Error, and whatever loads must tokenize without crashing.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/mapped_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace {

using skiff::TokenType;
using skiff::Vocab;

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";

void add(Vocab& v, std::string piece, float score, TokenType type) {
  v.pieces.push_back(std::move(piece));
  v.scores.push_back(score);
  v.types.push_back(type);
}

// A small LLaMA-like vocabulary: <unk> <s> </s>, 256 byte tokens, single characters and a
// few dozen merges, some with equal scores so ties are exercised.
Vocab embedded_vocab(bool byte_tokens, bool user_defined) {
  Vocab v;
  add(v, "<unk>", 0, TokenType::Unknown);
  add(v, "<s>", 0, TokenType::Control);
  add(v, "</s>", 0, TokenType::Control);
  if (byte_tokens) {
    char name[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      add(v, name, 0, TokenType::Byte);
    }
  }
  const std::string s(kSpaceMark);
  const char* merges[] = {"he",        "in",
                          "er",        "an",
                          "on",        "ou",
                          "re",        "is",
                          "at",        "it",
                          "en",        "ed",
                          "or",        "ing",
                          "the",       "and",
                          "ll",        "ee",
                          "oo",        "aa",
                          "aaa",       "ab",
                          "bc",        "abc",
                          "\xC3\xA9t", "\xE6\x97\xA5\xE6\x9C\xAC"};
  float score = -1;
  for (const char* word : {"t", "a", "s", "w", "the", "to", "and", "is", "in", "h", "b"}) {
    add(v, s + word, score, TokenType::Normal);
    score -= 1;
  }
  add(v, s + s, -3, TokenType::Normal);  // ties with "s"
  add(v, s + s + s + s, -3, TokenType::Normal);
  for (const char* merge : merges) {
    add(v, merge, score, TokenType::Normal);
    score -= 0.5f;  // pairs of equal-looking neighbours, no exact order between them
  }
  add(v, s, score - 1, TokenType::Normal);
  for (int c = 0x21; c < 0x7F; ++c)
    add(v, std::string(1, static_cast<char>(c)), score - 2, TokenType::Normal);
  for (const char* c : {"\xC3\xA9", "\xE6\x97\xA5", "\xE6\x9C\xAC", "\xF0\x9F\x98\x80"}) {
    add(v, c, score - 3, TokenType::Normal);
  }
  if (user_defined) {
    add(v, "<|user|>", 0, TokenType::UserDefined);
    add(v, "ab", 0, TokenType::UserDefined);  // also a normal piece above: the later one wins
    add(v, "unused", -1, TokenType::Unused);
  }
  return v;
}

// Counts the tokens a tokenizer.bin holds, to load a user-given file whole.
int32_t count_tokens(std::span<const uint8_t> bytes) {
  size_t offset = 4;
  int32_t n = 0;
  while (bytes.size() >= offset + 8) {
    int32_t length;
    std::memcpy(&length, bytes.data() + offset + 4, 4);
    if (length < 0 || static_cast<size_t>(length) > bytes.size() - offset - 8) break;
    offset += 8 + static_cast<size_t>(length);
    ++n;
  }
  return n;
}

const skiff::Tokenizer& main_tokenizer() {
  static const std::unique_ptr<skiff::Tokenizer> tokenizer = [] {
    const char* path = std::getenv("SKIFF_FUZZ_TOKENIZER");
    if (path != nullptr && *path != '\0') {
      auto file = skiff::MappedFile::open(path);
      return std::make_unique<skiff::Tokenizer>(
          skiff::vocab_from_llama2c(path, count_tokens(file->bytes())));
    }
    return std::make_unique<skiff::Tokenizer>(embedded_vocab(true, false));
  }();
  return *tokenizer;
}

const skiff::Tokenizer& odd_tokenizer() {
  static const skiff::Tokenizer tokenizer(embedded_vocab(false, true));
  return tokenizer;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<uint8_t>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      auto d = static_cast<uint8_t>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n;
  }
  return true;
}

void check_tokenizer(const skiff::Tokenizer& tokenizer, std::string_view text, bool round_trip) {
  for (bool add_bos : {false, true}) {
    std::vector<int32_t> ids = tokenizer.encode(text, add_bos);
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer.vocab().size()) __builtin_trap();
    }
    std::string decoded = tokenizer.decode(ids);
    if (round_trip && decoded != text) {
      std::fprintf(stderr, "round trip failed: %zu bytes in, %zu out\n", text.size(),
                   decoded.size());
      __builtin_trap();
    }
    skiff::StreamDecoder stream(tokenizer);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    if (streamed != decoded) {
      std::fprintf(stderr, "stream decode differs from decode\n");
      __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool round_trip = valid_utf8(text) && text.find('\0') == std::string_view::npos &&
                          text.find(kSpaceMark) == std::string_view::npos;
  check_tokenizer(main_tokenizer(), text, round_trip);
  check_tokenizer(odd_tokenizer(), text, false);

  // The same bytes as a tokenizer.bin, with a few vocabulary sizes (one taken from the input).
  std::span<const uint8_t> bytes(data, size);
  const int32_t sizes[] = {size > 4 ? 1 + data[size - 1] % 64 : 3, 3, 4, 259, count_tokens(bytes)};
  for (int32_t vocab_size : sizes) {
    try {
      skiff::Tokenizer tokenizer(skiff::vocab_from_llama2c_bytes(bytes, vocab_size, "fuzz.bin"));
      check_tokenizer(tokenizer, "Hello, world! \xC3\xA9\xF0\x9F\x98\x80 \x80\xFF", false);
      if (size <= 4096) check_tokenizer(tokenizer, text, false);
    } catch (const skiff::Error&) {
      // Rejected with a message: what a malformed file should get.
    }
  }
  return 0;
}

// Code point classes, UTF-8 and GPT-2's byte-to-unicode map for the byte-level BPE
// tokenizer. Classes come from tables generated offline (scripts/gen_unicode_tables.py);
// UTF-8 decoding follows llama.cpp exactly (one U+FFFD per byte it cannot decode), since the
// pre-tokenizers must split malformed text the same way.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace skiff {

// llama.cpp's grouping of the general categories (\p{N}, \p{L}, ...); Cn is kUndefined.
enum class CodePointClass : uint8_t {
  kUndefined = 0, kNumber = 1, kLetter = 2, kSeparator = 3, kMark = 4, kPunctuation = 5,
  kSymbol = 6, kControl = 7,
};

// Bits 0-2: CodePointClass, bit 3: White_Space. Code points above U+10FFFF are undefined.
uint8_t code_point_bits(uint32_t cp);
inline CodePointClass code_point_class(uint32_t cp) {
  return static_cast<CodePointClass>(code_point_bits(cp) & 7);
}
inline bool is_unicode_whitespace(uint32_t cp) { return (code_point_bits(cp) & 8) != 0; }
// The Unicode version the tables were generated from.
const char* unicode_tables_version();

// Decodes as llama.cpp's unicode_cpts_from_utf8: a byte that does not start a complete
// sequence becomes U+FFFD and decoding resumes at the next byte (overlong forms and
// surrogates are accepted as encoded); code points past U+10FFFF also become U+FFFD.
void decode_utf8(std::string_view text, std::vector<uint32_t>& out);
// Appends the UTF-8 encoding of cp (surrogates included; cp <= 0x10FFFF).
void append_utf8(uint32_t cp, std::string& out);

// GPT-2's printable stand-in for each byte, as UTF-8 (1 or 2 bytes).
std::string_view byte_to_unicode(uint8_t byte);
// The byte a stand-in code point represents, or -1 when cp is not one.
int unicode_to_byte(uint32_t cp);

}  // namespace skiff

// Class lookup over the generated ranges (a flat table for the BMP, binary search above),
// UTF-8 as llama.cpp decodes it, and GPT-2's bytes_to_unicode.
#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace skiff {
namespace unicode_data {
extern const char kUnicodeVersion[];
extern const uint32_t kRangeCount;
extern const uint32_t kRangeStart[];
extern const uint8_t kRangeClass[];
}  // namespace unicode_data

namespace {

uint8_t lookup_ranges(uint32_t cp) {
  using namespace unicode_data;
  const uint32_t* end = kRangeStart + kRangeCount;
  const uint32_t* it = std::upper_bound(kRangeStart, end, cp);
  return kRangeClass[(it - kRangeStart) - 1];  // kRangeStart[0] == 0
}

constexpr uint32_t kFlatLimit = 0x10000;

const std::array<uint8_t, kFlatLimit>& flat_table() {
  static const auto table = [] {
    std::array<uint8_t, kFlatLimit> t{};
    for (uint32_t cp = 0; cp < kFlatLimit; ++cp) t[cp] = lookup_ranges(cp);
    return t;
  }();
  return table;
}

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 324> from_unicode;  // stand-ins are all below U+0144
};

const ByteMap& byte_map() {
  static const ByteMap map = [] {
    ByteMap m;
    m.from_unicode.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the rest are moved to U+0100 and up.
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : next++;
      append_utf8(cp, m.to_unicode[static_cast<size_t>(b)]);
      m.from_unicode[cp] = static_cast<int16_t>(b);
    }
    return m;
  }();
  return map;
}

}  // namespace

uint8_t code_point_bits(uint32_t cp) {
  if (cp < kFlatLimit) return flat_table()[cp];
  if (cp > 0x10FFFF) return 0;
  return lookup_ranges(cp);
}

const char* unicode_tables_version() { return unicode_data::kUnicodeVersion; }

void decode_utf8(std::string_view text, std::vector<uint32_t>& out) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  auto cont = [&](size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      out.push_back(c);
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && cont(i + 1)) {
      out.push_back((uint32_t{c} & 0x1F) << 6 | (s[i + 1] & 0x3F));
      i += 2;
    } else if ((c & 0xF0) == 0xE0 && cont(i + 1) && cont(i + 2)) {
      out.push_back((uint32_t{c} & 0x0F) << 12 | (uint32_t{s[i + 1]} & 0x3F) << 6 | (s[i + 2] & 0x3F));
      i += 3;
    } else if ((c & 0xF8) == 0xF0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      uint32_t cp = (uint32_t{c} & 0x07) << 18 | (uint32_t{s[i + 1]} & 0x3F) << 12 |
                    (uint32_t{s[i + 2]} & 0x3F) << 6 | (s[i + 3] & 0x3F);
      // llama.cpp throws on these when re-encoding; a replacement character is the safe reading.
      out.push_back(cp > 0x10FFFF ? 0xFFFD : cp);
      i += 4;
    } else {
      out.push_back(0xFFFD);
      i += 1;
    }
  }
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string_view byte_to_unicode(uint8_t byte) { return byte_map().to_unicode[byte]; }

int unicode_to_byte(uint32_t cp) {
  const auto& from = byte_map().from_unicode;
  return cp < from.size() ? from[cp] : -1;
}

}  // namespace skiff

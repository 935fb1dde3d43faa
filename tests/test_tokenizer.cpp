// Tokenizer and vocabulary loaders: llama.cpp's own SPM test cases (through both the GGUF and
// the llama2.c vocabulary), round trips over real text, streaming of split UTF-8, and
// malformed tokenizer files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/mapped_file.h"
#include "io/gguf.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace skiff {
namespace {

using test::read_bytes;
using test::read_text;
using test::shared_path;

// Loaded once per process: gtest_discover_tests runs each test in its own process anyway.
const Tokenizer& tok512() {
  static const Tokenizer t(vocab_from_llama2c(shared_path("models/tok512.bin"), 512));
  return t;
}
const Tokenizer& llama_bin() {
  static const Tokenizer t(vocab_from_llama2c(shared_path("models/llama2c_tokenizer.bin"), 32000));
  return t;
}
const Tokenizer& llama_gguf() {
  static const Tokenizer t(
      vocab_from_gguf(GgufFile::open(shared_path("models/ggml-vocab-llama-spm.gguf"))));
  return t;
}

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
bool valid_utf8(const std::string& s) {
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

// --- llama.cpp's test-tokenizer-0 cases ------------------------------------------------------

void check_llama_cases(const Tokenizer& tokenizer) {
  const auto cases = test::read_vocab_cases(shared_path("models/ggml-vocab-llama-spm.gguf"));
  ASSERT_EQ(cases.size(), 46u);
  for (const test::VocabCase& c : cases) {
    EXPECT_EQ(tokenizer.encode(c.text, false), c.ids) << "text: \"" << c.text << "\"";
    EXPECT_EQ(tokenizer.decode(c.ids), c.text);
    std::vector<int32_t> with_bos = c.ids;
    with_bos.insert(with_bos.begin(), 1);
    EXPECT_EQ(tokenizer.encode(c.text, true), with_bos);
    EXPECT_EQ(tokenizer.decode(with_bos), c.text);
  }
}

TEST(Tokenizer, LlamaSpmCasesFromGguf) { check_llama_cases(llama_gguf()); }

TEST(Tokenizer, LlamaSpmCasesFromLlama2c) { check_llama_cases(llama_bin()); }

TEST(Tokenizer, MeaningOfLife) {
  const std::vector<int32_t> expected = {1, 306, 4658, 278, 6593, 310, 2834, 338};
  const std::string text = "I believe the meaning of life is";
  EXPECT_EQ(llama_gguf().encode(text, true), expected);
  EXPECT_EQ(llama_bin().encode(text, true), expected);
  EXPECT_EQ(llama_bin().decode(expected), text);
}

// --- vocabularies --------------------------------------------------------------------------

TEST(Vocab, GgufLlamaSpm) {
  const Vocab& v = llama_gguf().vocab();
  EXPECT_EQ(v.size(), 32000);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.unk_id, 0);
  EXPECT_EQ(v.pad_id, -1);
  EXPECT_TRUE(v.add_bos);
  EXPECT_FALSE(v.add_eos);
  EXPECT_TRUE(v.add_space_prefix);
  EXPECT_EQ(v.pieces[1], "<s>");
  EXPECT_EQ(v.types[0], TokenType::Unknown);
  EXPECT_EQ(v.types[2], TokenType::Control);
  EXPECT_EQ(v.types[3 + 0x41], TokenType::Byte);
  EXPECT_EQ(v.pieces[259], "\xE2\x96\x81\xE2\x96\x81");
}

// The llama2.c export of the LLaMA 2 tokenizer is the same vocabulary once spaces are
// normalized back to U+2581.
TEST(Vocab, Llama2cMatchesGguf) {
  const Vocab& a = llama_bin().vocab();
  const Vocab& b = llama_gguf().vocab();
  ASSERT_EQ(a.size(), b.size());
  for (int32_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a.pieces[i], b.pieces[i]) << "token " << i;
    ASSERT_EQ(a.scores[i], b.scores[i]) << "token " << i;
    ASSERT_EQ(a.types[i], b.types[i]) << "token " << i;
  }
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
  EXPECT_EQ(a.unk_id, b.unk_id);
}

TEST(Vocab, Tok512) {
  const Vocab& v = tok512().vocab();
  ASSERT_EQ(v.size(), 512);
  EXPECT_EQ(v.pieces[0], "<unk>");
  EXPECT_EQ(v.pieces[1], "<s>");
  EXPECT_EQ(v.pieces[2], "</s>");
  EXPECT_EQ(v.types[1], TokenType::Control);
  EXPECT_EQ(v.types[3], TokenType::Byte);
  EXPECT_EQ(v.pieces[259], "\xE2\x96\x81t");
  for (const std::string& piece : v.pieces) EXPECT_EQ(piece.find(' '), std::string::npos);
}

// --- round trips ---------------------------------------------------------------------------

// Splits text into chunks of about `size` bytes at line ends, so newlines are inside chunks.
std::vector<std::string> chunks(const std::string& text, size_t size) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', std::min(pos + size, text.size() - 1));
    end = end == std::string::npos ? text.size() : end + 1;
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

void check_round_trip(const Tokenizer& tokenizer, const std::string& text, size_t chunk_size) {
  size_t n_tokens = 0;
  for (const std::string& chunk : chunks(text, chunk_size)) {
    std::vector<int32_t> ids = tokenizer.encode(chunk, true);
    n_tokens += ids.size();
    ASSERT_EQ(tokenizer.decode(ids), chunk);
  }
  // Sanity: the tokenizer compresses English text.
  EXPECT_LT(n_tokens, text.size() / 2);
}

TEST(Tokenizer, RoundTripTinyStoriesValidTok512) {
  check_round_trip(tok512(), read_text(shared_path("data/tinystories_valid_prefix.txt")), 2000);
}

TEST(Tokenizer, RoundTripTinyStoriesValidLlama) {
  check_round_trip(llama_bin(), read_text(shared_path("data/tinystories_valid_prefix.txt")), 2000);
}

TEST(Tokenizer, RoundTripTinyStoriesTrainSample) {
  std::string text = read_text(shared_path("data/tinystories_train_lowercase.txt"));
  // A sample: every 8th story.
  std::string sample;
  std::istringstream lines(text);
  std::string line;
  for (int i = 0; std::getline(lines, line); ++i) {
    if (i % 8 == 0) sample += line + "\n";
  }
  check_round_trip(tok512(), sample, 1000);
  check_round_trip(llama_bin(), sample, 1000);
}

TEST(Tokenizer, Tok512KnownIds) {
  // "Once upon a time" in the stories vocabulary: every word is a single piece.
  std::vector<int32_t> ids = tok512().encode("Once upon a time", true);
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok512().vocab().pieces[ids[1]], "\xE2\x96\x81Once");
  EXPECT_EQ(tok512().vocab().pieces[ids[2]], "\xE2\x96\x81upon");
}

TEST(Tokenizer, WhitespaceEdgeCases) {
  for (const Tokenizer* t : {&tok512(), &llama_bin()}) {
    EXPECT_EQ(t->encode("", false), std::vector<int32_t>{});
    EXPECT_EQ(t->encode("", true), std::vector<int32_t>{1});
    EXPECT_EQ(t->decode({}), "");
    EXPECT_EQ(t->decode({1}), "");
    for (std::string text :
         {" ", "  ", "     ", " leading", "trailing ", "  both  ", "multiple   spaces  here", "\n",
          "\n\n", "line one\nline two\n", " \n \n", "\t tab", "a", "ab a\r\n", "x  \n  y"}) {
      std::vector<int32_t> ids = t->encode(text, true);
      EXPECT_EQ(t->decode(ids), text) << "\"" << text << "\"";
      EXPECT_EQ(t->decode(t->encode(text, false)), text) << "\"" << text << "\"";
    }
  }
  // The dummy prefix joins the first word: " Hello" and "Hello" differ only by that.
  EXPECT_EQ(llama_bin().encode(" ", false), std::vector<int32_t>{259});
}

// --- streaming decode ----------------------------------------------------------------------

std::string stream_decode(const Tokenizer& t, const std::vector<int32_t>& ids,
                          std::vector<std::string>* pieces = nullptr) {
  StreamDecoder decoder(t);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = decoder.push(id);
    EXPECT_TRUE(valid_utf8(piece)) << "token " << id;
    if (pieces) pieces->push_back(piece);
    out += piece;
  }
  out += decoder.flush();
  return out;
}

TEST(StreamDecoder, SplitUtf8ThroughByteTokens) {
  const Tokenizer& t = tok512();
  const std::string text =
      "Hi \xF0\x9F\x98\x80 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E caf\xC3\xA9 \xE2\x9C\x85!";
  std::vector<int32_t> ids = t.encode(text, true);
  // The emoji is not in the 512-token vocabulary: it falls back to 4 byte tokens.
  int byte_tokens = 0;
  for (int32_t id : ids) byte_tokens += t.vocab().types[id] == TokenType::Byte;
  EXPECT_GE(byte_tokens, 4 + 9);
  std::vector<std::string> pieces;
  EXPECT_EQ(stream_decode(t, ids, &pieces), text);
  EXPECT_EQ(t.decode(ids), text);
  // Some pushes held bytes back (returned "") while a character was incomplete.
  int empty = 0;
  for (const std::string& p : pieces) empty += p.empty();
  EXPECT_GE(empty, 3 + 1);  // BOS, and 3 of the emoji's 4 bytes at least
}

TEST(StreamDecoder, MatchesDecodeOnRealText) {
  const std::string text =
      read_text(shared_path("data/tinystories_valid_prefix.txt")).substr(0, 20000) +
      " \xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x81 \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99.";
  for (const Tokenizer* t : {&tok512(), &llama_bin()}) {
    std::vector<int32_t> ids = t->encode(text, true);
    EXPECT_EQ(stream_decode(*t, ids), text);
  }
}

TEST(StreamDecoder, InvalidBytesAreNotHeldForever) {
  const Tokenizer& t = tok512();
  auto byte = [&](int b) { return 3 + b; };  // <0xNN> ids in the llama2.c layout
  StreamDecoder decoder(t);
  decoder.set_after_bos(false);
  EXPECT_EQ(decoder.push(byte(0xE2)), "");
  EXPECT_EQ(decoder.push(byte(0x82)), "");
  // 'A' cannot continue the sequence: everything comes out.
  std::string out = decoder.push(t.encode("A", false).back());
  EXPECT_EQ(out, std::string("\xE2\x82") + 'A');
  EXPECT_EQ(decoder.push(byte(0x80)), "\x80");  // stray continuation byte
  EXPECT_EQ(decoder.push(byte(0xF0)), "");
  EXPECT_EQ(decoder.flush(), "\xF0");
  EXPECT_EQ(decoder.flush(), "");
}

TEST(StreamDecoder, LeadingSpaceAfterBos) {
  const Tokenizer& t = llama_bin();
  std::vector<int32_t> ids = t.encode("Hello world", true);  // 1 15043 3186
  StreamDecoder from_prompt(t);
  std::string s;
  for (int32_t id : ids) s += from_prompt.push(id);
  EXPECT_EQ(s, "Hello world");
  StreamDecoder generated(t);
  generated.set_after_bos(false);
  EXPECT_EQ(generated.push(3186), " world");
  // Only a BOS at the very start is skipped, exactly as decode() does (found by the fuzzer).
  for (std::vector<int32_t> seq :
       {std::vector<int32_t>{15043, 1, 3186}, std::vector<int32_t>{1, 1, 15043},
        std::vector<int32_t>{2, 15043}, std::vector<int32_t>{1, 2, 15043, 1, 3186}}) {
    EXPECT_EQ(stream_decode(t, seq), t.decode(seq));
  }
  EXPECT_EQ(t.decode({1, 1, 15043}), " Hello");
}

// --- small vocabularies built in code --------------------------------------------------------

Vocab make_vocab(const std::vector<std::pair<std::string, float>>& normal, bool byte_tokens) {
  Vocab v;
  auto add = [&](std::string piece, float score, TokenType type) {
    v.pieces.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0, TokenType::Unknown);
  add("<s>", 0, TokenType::Control);
  add("</s>", 0, TokenType::Control);
  if (byte_tokens) {
    for (int b = 0; b < 256; ++b) add(fmt::format("<0x{:02X}>", b), 0, TokenType::Byte);
  }
  for (const auto& [piece, score] : normal) add(piece, score, TokenType::Normal);
  return v;
}

int32_t id_of(const Tokenizer& t, const std::string& piece) {
  const auto& p = t.vocab().pieces;
  return static_cast<int32_t>(std::find(p.begin(), p.end(), piece) - p.begin());
}

TEST(Tokenizer, EqualScoresMergeLeftmostFirst) {
  Vocab v = make_vocab({{"a", -1}, {"aa", -2}, {"\xE2\x96\x81", -3}}, false);
  v.add_space_prefix = false;
  Tokenizer t(std::move(v));
  const int32_t a = id_of(t, "a"), aa = id_of(t, "aa");
  EXPECT_EQ(t.encode("aaa", false), (std::vector<int32_t>{aa, a}));
  EXPECT_EQ(t.encode("aaaaa", false), (std::vector<int32_t>{aa, aa, a}));
  EXPECT_EQ(t.decode(t.encode("aaaaa", false)), "aaaaa");
}

TEST(Tokenizer, HigherScoreMergesFirst) {
  // "abc": ab (-5) vs bc (-1): bc wins, and a + bc is not a piece.
  Vocab v = make_vocab({{"a", -1}, {"b", -1}, {"c", -1}, {"ab", -5}, {"bc", -1}}, false);
  v.add_space_prefix = false;
  Tokenizer t(v);
  EXPECT_EQ(t.encode("abc", false), (std::vector<int32_t>{id_of(t, "a"), id_of(t, "bc")}));
  // With "abc" in the vocabulary the merge goes on: a + bc.
  v.pieces.push_back("abc");
  v.scores.push_back(-9);
  v.types.push_back(TokenType::Normal);
  Tokenizer t2(v);
  EXPECT_EQ(t2.encode("abc", false), (std::vector<int32_t>{id_of(t2, "abc")}));
  // When "ab" scores higher it merges first, and ab + c reaches "abc" the other way.
  v = make_vocab({{"a", -1}, {"b", -1}, {"c", -1}, {"ab", -5}, {"bc", -1}, {"abc", -9}}, false);
  v.scores[3 + 3] = -0.5f;  // now "ab" beats "bc"
  v.add_space_prefix = false;
  Tokenizer t3(v);
  EXPECT_EQ(t3.encode("abc", false), (std::vector<int32_t>{id_of(t3, "abc")}));
  EXPECT_EQ(t3.encode("abcbc", false), (std::vector<int32_t>{id_of(t3, "abc"), id_of(t3, "bc")}));
}

TEST(Tokenizer, UnknownWithoutByteTokens) {
  Vocab v = make_vocab({{"\xE2\x96\x81", -1}, {"x", -1}}, false);
  Tokenizer t(std::move(v));
  // "x?" -> ▁ x <unk>: '?' has no piece and there are no byte tokens.
  EXPECT_EQ(t.encode("x?", false),
            (std::vector<int32_t>{id_of(t, "\xE2\x96\x81"), id_of(t, "x"), 0}));
  // A multi-byte character becomes one UNK per byte, as llama.cpp does.
  EXPECT_EQ(t.encode("\xC3\xA9", false).size(), 3u);
}

TEST(Tokenizer, InvalidUtf8NeverCrashesAndRoundTrips) {
  const Tokenizer& t = tok512();
  for (std::string text :
       {std::string("\xFF\xFE\xFD"), std::string("\xC3"), std::string("a\xE2\x82"),
        std::string("\x80\x80 x"), std::string("\xF0\x9F\x98"), std::string("nul\0inside", 10)}) {
    std::vector<int32_t> ids = t.encode(text, true);
    EXPECT_EQ(t.decode(ids), text);
  }
}

TEST(Tokenizer, UserDefinedTokensAreSplitOut) {
  Vocab v = make_vocab(
      {{"\xE2\x96\x81", -1}, {"h", -2}, {"i", -3}, {"\xE2\x96\x81h", -1}, {"\xE2\x96\x81hi", -1}},
      true);
  v.pieces.push_back("<|sep|>");
  v.scores.push_back(0);
  v.types.push_back(TokenType::UserDefined);
  Tokenizer t(std::move(v));
  const int32_t sep = t.vocab().size() - 1, hi = id_of(t, "\xE2\x96\x81hi");
  // llama.cpp adds the dummy prefix again to text following a user-defined token.
  EXPECT_EQ(t.encode("hi<|sep|>hi", false), (std::vector<int32_t>{hi, sep, hi}));
  EXPECT_EQ(t.encode("<|sep|>", false), (std::vector<int32_t>{sep}));
  EXPECT_EQ(t.token_bytes(sep), "<|sep|>");
  // Control-token text is ordinary text.
  std::vector<int32_t> ids = t.encode("<s>", false);
  EXPECT_GT(ids.size(), 1u);
  EXPECT_EQ(t.decode(ids), "<s>");
}

TEST(Tokenizer, TokenBytes) {
  const Tokenizer& t = llama_bin();
  EXPECT_EQ(t.token_bytes(1), "");
  EXPECT_EQ(t.token_bytes(2), "");
  EXPECT_EQ(t.token_bytes(0), "");
  EXPECT_EQ(t.token_bytes(3 + 0x0A), "\n");
  EXPECT_EQ(t.token_bytes(15043), " Hello");
  EXPECT_EQ(t.token_bytes(15043, true), "Hello");
  EXPECT_THROW(t.token_bytes(-1), Error);
  EXPECT_THROW(t.token_bytes(32000), Error);
  EXPECT_THROW(t.decode({1, 5, 99999}), Error);
}

TEST(Tokenizer, RejectsInconsistentVocab) {
  Vocab v = make_vocab({{"a", -1}}, false);
  v.scores.pop_back();
  EXPECT_THROW(Tokenizer{v}, Error);
  v = make_vocab({{"a", -1}}, false);
  v.bos_id = 4;
  EXPECT_THROW(Tokenizer{v}, Error);
  v = make_vocab({{"a", -1}}, false);
  v.scores[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(Tokenizer{v}, Error);
  v = make_vocab({{"a", -1}}, false);
  v.types[3] = static_cast<TokenType>(17);
  EXPECT_THROW(Tokenizer{v}, Error);
  EXPECT_THROW(Tokenizer{Vocab{}}, Error);
}

// --- malformed tokenizer.bin ---------------------------------------------------------------

TEST(Vocab, Llama2cTruncatedAtEveryOffset) {
  const std::vector<uint8_t> bytes = read_bytes(shared_path("models/tok512.bin"));
  EXPECT_NO_THROW(vocab_from_llama2c_bytes(bytes, 512, "tok512.bin"));
  for (size_t size = 0; size < bytes.size(); ++size) {
    std::span<const uint8_t> prefix(bytes.data(), size);
    EXPECT_THROW(vocab_from_llama2c_bytes(prefix, 512, "tok512.bin"), Error) << size;
  }
  // The LLaMA tokenizer at a spread of offsets.
  const std::vector<uint8_t> big = read_bytes(shared_path("models/llama2c_tokenizer.bin"));
  for (size_t size = 0; size < big.size(); size += 997) {
    std::span<const uint8_t> prefix(big.data(), size);
    EXPECT_THROW(vocab_from_llama2c_bytes(prefix, 32000, "tokenizer.bin"), Error) << size;
  }
}

TEST(Vocab, Llama2cBadLengthsAndSizes) {
  const std::vector<uint8_t> good = read_bytes(shared_path("models/tok512.bin"));
  auto with_i32 = [&](size_t offset, int32_t value) {
    std::vector<uint8_t> b = good;
    std::memcpy(b.data() + offset, &value, 4);
    return b;
  };
  // Token 0's length field is at offset 8, token 1's at 8 + 4 + 5 + 4 = 21.
  for (int32_t bad : {-1, -100, std::numeric_limits<int32_t>::min(), 7000, 1 << 30,
                      std::numeric_limits<int32_t>::max()}) {
    EXPECT_THROW(vocab_from_llama2c_bytes(with_i32(8, bad), 512, "t"), Error) << bad;
    EXPECT_THROW(vocab_from_llama2c_bytes(with_i32(21, bad), 512, "t"), Error) << bad;
  }
  EXPECT_THROW(vocab_from_llama2c_bytes(with_i32(0, -1), 512, "t"), Error);  // max_token_length
  float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> nan_score = good;
  std::memcpy(nan_score.data() + 4, &nan, 4);
  EXPECT_THROW(vocab_from_llama2c_bytes(nan_score, 512, "t"), Error);
  for (int32_t size : {513, 600, 32000, std::numeric_limits<int32_t>::max(), 0, -1, -512,
                       std::numeric_limits<int32_t>::min(), 1, 2}) {
    EXPECT_THROW(vocab_from_llama2c_bytes(good, size, "t"), Error) << size;
  }
  // Fewer tokens than the file holds is allowed (trailing bytes are ignored).
  EXPECT_EQ(vocab_from_llama2c_bytes(good, 300, "t").size(), 300);
  EXPECT_THROW(vocab_from_llama2c("/nonexistent/tokenizer.bin", 512), Error);
  try {
    vocab_from_llama2c_bytes(with_i32(21, -1), 512, "some/tokenizer.bin");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("some/tokenizer.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("token 1"), std::string::npos) << e.what();
  }
}

// --- malformed GGUF tokenizer metadata ------------------------------------------------------

GgufWriter good_gguf_vocab() {
  GgufWriter w;
  std::vector<GgufValue> tokens, scores, types;
  const std::vector<std::pair<std::string, int>> pieces = {{"<unk>", 2},
                                                           {"<s>", 3},
                                                           {"</s>", 3},
                                                           {"\xE2\x96\x81", 1},
                                                           {"a", 1},
                                                           {"\xE2\x96\x81"
                                                            "a",
                                                            1}};
  for (size_t i = 0; i < pieces.size(); ++i) {
    tokens.push_back(GgufValue::str(pieces[i].first));
    scores.push_back(GgufValue::f32(-static_cast<float>(i)));
    types.push_back(GgufValue::i32(pieces[i].second));
  }
  w.set("tokenizer.ggml.model", GgufValue::str("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::array(GgufType::STRING, tokens));
  w.set("tokenizer.ggml.scores", GgufValue::array(GgufType::FLOAT32, scores));
  w.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, types));
  return w;
}

Vocab vocab_from_writer(const GgufWriter& w) {
  std::vector<uint8_t> bytes = w.serialize();
  return vocab_from_gguf(GgufFile::parse(MappedFile::borrow(bytes, "test.gguf")));
}

TEST(Vocab, GgufDefaultsAndOptionalKeys) {
  Vocab v = vocab_from_writer(good_gguf_vocab());
  EXPECT_EQ(v.size(), 6);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.unk_id, 0);
  EXPECT_EQ(v.pad_id, -1);
  EXPECT_TRUE(v.add_bos);
  EXPECT_FALSE(v.add_eos);
  EXPECT_TRUE(v.add_space_prefix);
  EXPECT_EQ(v.scores[5], -5.0f);
  Tokenizer t(v);
  EXPECT_EQ(t.encode("a a", true), (std::vector<int32_t>{1, 5, 5}));

  GgufWriter w = good_gguf_vocab();
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(false));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(false));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(3));
  w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(0));
  v = vocab_from_writer(w);
  EXPECT_FALSE(v.add_space_prefix);
  EXPECT_FALSE(v.add_bos);
  EXPECT_EQ(v.bos_id, 3);
  EXPECT_EQ(v.pad_id, 0);
  EXPECT_EQ(Tokenizer(v).encode("a a", false), (std::vector<int32_t>{4, 5}));

  // Without scores and types: zeros and NORMAL, as llama.cpp assumes.
  GgufWriter bare;
  bare.set("tokenizer.ggml.model", GgufValue::str("llama"));
  bare.set("tokenizer.ggml.tokens",
           GgufValue::array(GgufType::STRING, {GgufValue::str("<unk>"), GgufValue::str("<s>"),
                                               GgufValue::str("</s>")}));
  v = vocab_from_writer(bare);
  EXPECT_EQ(v.types[1], TokenType::Normal);
  EXPECT_EQ(v.scores[2], 0.0f);
}

TEST(Vocab, GgufRejectsBadMetadata) {
  auto expect_error = [](const GgufWriter& w, const std::string& needle) {
    try {
      vocab_from_writer(w);
      ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("test.gguf"), std::string::npos) << e.what();
    }
  };
  GgufWriter w = good_gguf_vocab();
  w.set("tokenizer.ggml.model", GgufValue::str("t5"));
  expect_error(w, "tokenizer.ggml.model");

  w = good_gguf_vocab();
  w.set("tokenizer.ggml.scores", GgufValue::array(GgufType::FLOAT32, {GgufValue::f32(0)}));
  expect_error(w, "tokenizer.ggml.scores");

  w = good_gguf_vocab();
  w.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, {GgufValue::i32(1)}));
  expect_error(w, "tokenizer.ggml.token_type");

  w = good_gguf_vocab();
  std::vector<GgufValue> types(6, GgufValue::i32(1));
  types[4] = GgufValue::i32(9);
  w.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, types));
  expect_error(w, "token_type[4]");

  w = good_gguf_vocab();
  w.set("tokenizer.ggml.tokens", GgufValue::array(GgufType::STRING, {}));
  expect_error(w, "tokenizer.ggml.tokens");

  w = good_gguf_vocab();
  w.set("tokenizer.ggml.tokens", GgufValue::str("not an array"));
  expect_error(w, "tokenizer.ggml.tokens");

  w = good_gguf_vocab();
  w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(6));
  expect_error(w, "EOS");

  w = good_gguf_vocab();
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::i32(-3));
  expect_error(w, "unknown");

  w = good_gguf_vocab();
  w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(1000));
  expect_error(w, "padding");

  w = good_gguf_vocab();
  std::vector<GgufValue> scores(6, GgufValue::f32(0));
  scores[2] = GgufValue::f32(std::nanf(""));
  w.set("tokenizer.ggml.scores", GgufValue::array(GgufType::FLOAT32, scores));
  expect_error(w, "NaN");

  GgufWriter empty;
  empty.set("general.architecture", GgufValue::str("llama"));
  expect_error(empty, "tokenizer.ggml.model");
}

}  // namespace
}  // namespace skiff

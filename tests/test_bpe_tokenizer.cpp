// Byte-level BPE: llama.cpp's test vectors for every supported pre-tokenizer, the Llama 3
// chat prompt with special tokens, the Hugging Face loader against the GGUF vocabulary,
// GGUF write/read, round trips, streaming, and the error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"
#include "test_util.h"
#include "tokenizer/merge_table.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace skiff {
namespace {

using test::read_text;
using test::shared_path;

std::string vocab_path(const std::string& name) {
  return shared_path("models/vocab/ggml-vocab-" + name + ".gguf");
}

// Loading the 128k-token Llama 3 vocabulary takes a moment: once per vocabulary.
const Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<Tokenizer>(vocab_from_gguf(GgufFile::open(vocab_path(name))));
  return *slot;
}

void check_cases(const std::string& name, const Tokenizer& tok) {
  const std::vector<test::VocabCase> cases = test::read_vocab_cases(vocab_path(name));
  ASSERT_GE(cases.size(), 40u) << name;
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(tok.encode(cases[i].text, false), cases[i].ids) << name << " case " << i << ": \"" << cases[i].text << "\"";
  }
}

const char* const kVocabs[] = {"llama-bpe", "gpt-2", "starcoder", "refact", "falcon", "mpt"};

TEST(BpeTokenizer, LlamaCppCasesLlamaBpe) { check_cases("llama-bpe", tokenizer("llama-bpe")); }
TEST(BpeTokenizer, LlamaCppCasesGpt2) { check_cases("gpt-2", tokenizer("gpt-2")); }
TEST(BpeTokenizer, LlamaCppCasesStarcoder) { check_cases("starcoder", tokenizer("starcoder")); }
TEST(BpeTokenizer, LlamaCppCasesRefact) { check_cases("refact", tokenizer("refact")); }
TEST(BpeTokenizer, LlamaCppCasesFalcon) { check_cases("falcon", tokenizer("falcon")); }
TEST(BpeTokenizer, LlamaCppCasesMpt) { check_cases("mpt", tokenizer("mpt")); }

TEST(BpeTokenizer, Llama3ChatPromptWithSpecialTokens) {
  const Tokenizer& tok = tokenizer("llama-bpe");
  const std::string prompt =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
      "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_"
      "header_id|>assistant<|end_header_id|>\n\n";
  const std::vector<int32_t> expected = {128000, 128006, 9125, 128007, 271,   2675,   527,
                                         264,    11190,  18328, 128009, 128006, 882,  128007,
                                         271,    9906,   128009, 128006, 78191, 128007, 271};
  EXPECT_EQ(tok.encode(prompt, false, true), expected);
  // Without parse_special the control-token text is ordinary text.
  std::vector<int32_t> plain = tok.encode(prompt, false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 128006), 0);
  // Control tokens decode to nothing, the text around them exactly.
  EXPECT_EQ(tok.decode(expected),
            "system\n\nYou are a helpful assistantuser\n\nHelloassistant\n\n");
}

TEST(BpeTokenizer, Llama3VocabularyFacts) {
  const Vocab& v = tokenizer("llama-bpe").vocab();
  EXPECT_EQ(v.kind, VocabKind::kBpe);
  EXPECT_EQ(v.pre, "llama-bpe");
  EXPECT_EQ(v.size(), 128256);
  EXPECT_EQ(v.merges.size(), 280147u);
  EXPECT_EQ(v.bos_id, 128000);
  EXPECT_TRUE(v.add_bos);
  EXPECT_FALSE(v.add_space_prefix);
  EXPECT_EQ(v.eot_id, 128009);
  EXPECT_EQ(v.eom_id, -1);  // Llama 3.0 has no <|eom_id|> (3.1 made it of reserved 128008)
  const Tokenizer& tok = tokenizer("llama-bpe");
  EXPECT_TRUE(tok.is_eog(128009));
  EXPECT_FALSE(tok.is_eog(128008));
  EXPECT_TRUE(tok.is_eog(v.eos_id));
  EXPECT_FALSE(tok.is_eog(9906));
  EXPECT_FALSE(v.chat_template.empty());
}

TEST(BpeTokenizer, Gpt2EndOfText) {
  const Tokenizer& tok = tokenizer("gpt-2");
  EXPECT_EQ(tok.vocab().eos_id, 50256);
  EXPECT_TRUE(tok.is_eog(50256));
  EXPECT_EQ(tok.encode("a<|endoftext|>", false, true), (std::vector<int32_t>{64, 50256}));
  EXPECT_NE(tok.encode("a<|endoftext|>", false, false).back(), 50256);
}

std::string random_utf8(std::mt19937& rng, size_t n_chars) {
  std::string s;
  std::uniform_int_distribution<int> kind(0, 9);
  for (size_t i = 0; i < n_chars; ++i) {
    uint32_t cp;
    switch (kind(rng)) {
      case 0: case 1: case 2: cp = std::uniform_int_distribution<uint32_t>(0x20, 0x7E)(rng); break;
      case 3: cp = " \n\t\r'"[std::uniform_int_distribution<int>(0, 4)(rng)]; break;
      case 4: cp = std::uniform_int_distribution<uint32_t>(0, 0x7F)(rng); break;
      case 5: cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7FF)(rng); break;
      case 6: cp = std::uniform_int_distribution<uint32_t>(0x800, 0xFFFF)(rng); break;
      case 7: cp = std::uniform_int_distribution<uint32_t>(0x10000, 0x10FFFF)(rng); break;
      case 8: cp = std::uniform_int_distribution<uint32_t>('0', '9')(rng); break;
      default: cp = std::uniform_int_distribution<uint32_t>(0x4E00, 0x4E80)(rng); break;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
    append_utf8(cp, s);
  }
  return s;
}

TEST(BpeTokenizer, RoundTripsTinyStoriesAndRandomUtf8) {
  const std::string stories = read_text(shared_path("data/tinystories_valid_prefix.txt"));
  for (const char* name : kVocabs) {
    const Tokenizer& tok = tokenizer(name);
    EXPECT_EQ(tok.decode(tok.encode(stories, false)), stories) << name;
    // A byte whose stand-in is no piece cannot be encoded (llama.cpp drops it): StarCoder's
    // vocabulary lacks a few; random texts avoid those bytes.
    bool missing[256] = {};
    for (int b = 0; b < 256; ++b) {
      const std::string_view piece = byte_to_unicode(static_cast<uint8_t>(b));
      missing[b] = std::find(tok.vocab().pieces.begin(), tok.vocab().pieces.end(), piece) ==
                   tok.vocab().pieces.end();
    }
    std::mt19937 rng(42);
    for (int i = 0; i < 200; ++i) {
      const std::string text = random_utf8(rng, static_cast<size_t>(i % 50));
      if (std::any_of(text.begin(), text.end(), [&](char c) { return missing[static_cast<uint8_t>(c)]; })) continue;
      ASSERT_EQ(tok.decode(tok.encode(text, false)), text) << name << " random case " << i;
    }
  }
}

TEST(BpeTokenizer, StreamDecoderSplitsUtf8AcrossTokens) {
  const Tokenizer& tok = tokenizer("gpt-2");
  // Rare characters become one token per byte: the decoder must hold partial characters.
  const std::string text = "caf\xC3\xA9 \xF0\x9F\xA6\x99 \xE6\xBC\xA2\xE5\xAD\x97 \xF0\x90\x8D\x88!";
  const std::vector<int32_t> ids = tok.encode(text, false);
  StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) {
    std::string piece = stream.push(id);
    // Every chunk is whole characters.
    std::vector<uint32_t> cpts;
    decode_utf8(piece, cpts);
    EXPECT_EQ(std::count(cpts.begin(), cpts.end(), 0xFFFDu), 0) << "chunk " << piece;
    streamed += piece;
  }
  streamed += stream.flush();
  EXPECT_EQ(streamed, text);
  EXPECT_GT(ids.size(), 8u);
}

TEST(BpeTokenizer, DetokenizeCleansSpacesLikeLlamaCpp) {
  const Tokenizer& tok = tokenizer("gpt-2");
  const std::string text = "Hello , world ! it 's ok . don 't ' quote '";
  const std::vector<int32_t> ids = tok.encode(text, false);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.detokenize(ids), "Hello, world! it's ok. don 't'quote '");
}

TEST(BpeTokenizer, GgufWriteReadKeepsEncodings) {
  const std::string sample = read_text(shared_path("data/tinystories_valid_prefix.txt")).substr(0, 20000);
  for (const char* name : kVocabs) {
    const Tokenizer& original = tokenizer(name);
    GgufWriter writer;
    write_vocab_gguf(original.vocab(), writer);
    const std::string path = ::testing::TempDir() + "/skiff_bpe_roundtrip.gguf";
    writer.write(path);
    Tokenizer reread(vocab_from_gguf(GgufFile::open(path)));
    const Vocab& a = original.vocab();
    const Vocab& b = reread.vocab();
    EXPECT_EQ(a.pieces, b.pieces) << name;
    EXPECT_EQ(a.merges, b.merges) << name;
    EXPECT_EQ(a.pre, b.pre) << name;
    EXPECT_EQ(a.bos_id, b.bos_id) << name;
    EXPECT_EQ(a.eos_id, b.eos_id) << name;
    EXPECT_EQ(a.eog_ids, b.eog_ids) << name;
    EXPECT_EQ(a.add_bos, b.add_bos) << name;
    EXPECT_EQ(a.chat_template, b.chat_template) << name;
    EXPECT_EQ(reread.encode(sample, true, true), original.encode(sample, true, true)) << name;
    for (const test::VocabCase& c : test::read_vocab_cases(vocab_path(name))) {
      EXPECT_EQ(reread.encode(c.text, false), c.ids) << name;
    }
  }
}

TEST(BpeTokenizer, HfTokenizerJsonMatchesGguf) {
  const Tokenizer hf(vocab_from_hf_tokenizer(shared_path("models/vocab/llama3-tokenizer.json"),
                                             shared_path("models/vocab/llama3-tokenizer_config.json")));
  const Tokenizer& gguf = tokenizer("llama-bpe");
  EXPECT_EQ(hf.vocab().pieces, gguf.vocab().pieces);
  EXPECT_EQ(hf.vocab().types, gguf.vocab().types);
  EXPECT_EQ(hf.vocab().merges, gguf.vocab().merges);
  EXPECT_EQ(hf.vocab().pre, "llama-bpe");
  EXPECT_EQ(hf.vocab().bos_id, 128000);
  EXPECT_TRUE(hf.vocab().add_bos);
  EXPECT_FALSE(hf.vocab().chat_template.empty());
  EXPECT_TRUE(hf.is_eog(128009));
  check_cases("llama-bpe", hf);
}

TEST(BpeTokenizer, UnknownPreTokenizerIsOneLineError) {
  Vocab v = tokenizer("gpt-2").vocab();
  v.pre = "no-such-pre";
  try {
    Tokenizer t(std::move(v));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("no-such-pre"), std::string::npos) << message;
    EXPECT_NE(message.find("llama-bpe"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(BpeTokenizer, UnknownTokenizerModelIsAnError) {
  GgufWriter writer;
  write_vocab_gguf(tokenizer("gpt-2").vocab(), writer);
  writer.set("tokenizer.ggml.model", GgufValue::str("t5"));
  const std::string path = ::testing::TempDir() + "/skiff_bpe_t5.gguf";
  writer.write(path);
  try {
    vocab_from_gguf(GgufFile::open(path));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"t5\""), std::string::npos) << e.what();
  }
}

TEST(BpeTokenizer, InvalidUtf8NeverCrashes) {
  for (const char* name : kVocabs) {
    const Tokenizer& tok = tokenizer(name);
    std::mt19937 rng(7);
    for (int i = 0; i < 300; ++i) {
      std::string bytes(static_cast<size_t>(i % 40), '\0');
      for (char& c : bytes) c = static_cast<char>(rng());
      std::vector<int32_t> ids = tok.encode(bytes, true, i % 2 == 0);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab().size());
      (void)tok.decode(ids);
    }
  }
}

TEST(MergeTable, RanksByPositionFirstDuplicateWins) {
  MergeTable table({"a b", "ab c", "a b", "noSpace", "x  y"});
  EXPECT_EQ(table.rank("a", "b"), 0);
  EXPECT_EQ(table.rank("ab", "c"), 1);
  EXPECT_EQ(table.rank("a", "bc"), -1);
  EXPECT_EQ(table.rank("x", " y"), 4);
  EXPECT_EQ(table.size(), 3u);
}

TEST(PreTokenizer, Llama3SplitsAsTheRegex) {
  auto split = [](PreTokenizer kind, const std::string& text) {
    std::vector<uint32_t> cpts, lengths, scratch;
    decode_utf8(text, cpts);
    pre_tokenize(kind, cpts, lengths, scratch);
    std::vector<std::string> words;
    size_t start = 0;
    for (uint32_t n : lengths) {
      std::string w;
      for (size_t i = start; i < start + n; ++i) append_utf8(cpts[i], w);
      words.push_back(w);
      start += n;
    }
    return words;
  };
  using W = std::vector<std::string>;
  EXPECT_EQ(split(PreTokenizer::kLlama3, "I'VE 12345 apples!!\n\n  ok   "),
            (W{"I", "'VE", " ", "123", "45", " apples", "!!\n\n", " ", " ok", "   "}));
  EXPECT_EQ(split(PreTokenizer::kGpt2, "I've 12345 apples!!\n\n  ok"),
            (W{"I", "'ve", " 12345", " apples", "!!", "\n\n ", " ok"}));
  EXPECT_EQ(split(PreTokenizer::kQwen2, "a123"), (W{"a", "1", "2", "3"}));
  EXPECT_EQ(split(PreTokenizer::kStarcoder, " 12a"), (W{" ", "1", "2", "a"}));
  EXPECT_EQ(split(PreTokenizer::kFalcon, "x=1234;"), (W{"x", "=", "123", "4", ";"}));
}

}  // namespace
}  // namespace skiff

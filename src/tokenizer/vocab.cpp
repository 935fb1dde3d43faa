// Vocabulary loaders (GGUF and llama2.c; Hugging Face in vocab_hf.cpp) and the GGUF writer.
// SentencePiece pieces keep U+2581 for a space, byte-level BPE pieces GPT-2's byte stand-ins.
// Every count, length and id read from a file is checked against the file before it is used.
#include "tokenizer/vocab.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/error.h"
#include "base/mapped_file.h"
#include "io/gguf.h"
#include "tokenizer/pretokenize.h"

namespace skiff {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's space

bool is_hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

// "<0xNN>": how SentencePiece names its byte-fallback pieces.
bool is_byte_piece(std::string_view piece) {
  return piece.size() == 6 && piece.substr(0, 3) == "<0x" && is_hex_digit(piece[3]) &&
         is_hex_digit(piece[4]) && piece[5] == '>';
}

std::string escape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == ' ') {
      out += kSpaceMark;
    } else {
      out += c;
    }
  }
  return out;
}

// A GGUF array of one entry per token; throws when absent (if required), not an array, or of
// another length.
const std::vector<GgufValue>* token_array(const GgufFile& gguf, const std::string& key,
                                          size_t n_tokens, bool required) {
  const GgufValue* value = gguf.find(key);
  if (value == nullptr) {
    if (required) fail("{}: missing metadata key {}", gguf.path(), key);
    return nullptr;
  }
  if (value->type != GgufType::ARRAY) fail("{}: metadata key {} is not an array", gguf.path(), key);
  const auto& items = value->as_array(gguf.path() + ": " + key);
  if (n_tokens != 0 && items.size() != n_tokens) {
    fail("{}: {} has {} entries, expected {} (one per token)", gguf.path(), key, items.size(),
         n_tokens);
  }
  return &items;
}

int32_t special_id(const GgufFile& gguf, const std::string& key, int32_t fallback) {
  int64_t id = gguf.get_int(key, fallback);
  // llama.cpp's converters write "no such token" as uint32 0xFFFFFFFF (that is, -1).
  if (id == 0xFFFFFFFF) id = -1;
  if (id < std::numeric_limits<int32_t>::min() || id > std::numeric_limits<int32_t>::max()) {
    fail("{}: {} = {} is out of range", gguf.path(), key, id);
  }
  return static_cast<int32_t>(id);
}

}  // namespace

void validate_vocab(const Vocab& vocab, const std::string& source) {
  const size_t n = vocab.pieces.size();
  if (n == 0) fail("{}: the vocabulary is empty", source);
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    fail("{}: the vocabulary has {} tokens, more than an int32 id can address", source, n);
  }
  if (vocab.scores.size() != n) {
    fail("{}: {} scores for {} tokens", source, vocab.scores.size(), n);
  }
  if (vocab.types.size() != n) {
    fail("{}: {} token types for {} tokens", source, vocab.types.size(), n);
  }
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(vocab.scores[i])) fail("{}: the score of token {} is NaN", source, i);
    auto type = static_cast<int32_t>(vocab.types[i]);
    if (type < 0 || type > static_cast<int32_t>(TokenType::Byte)) {
      fail("{}: token {} has unknown type {}", source, i, type);
    }
  }
  const int32_t size = vocab.size();
  auto check = [&](const char* what, int32_t id, bool optional) {
    if (optional && id == -1) return;
    if (id < 0 || id >= size) {
      fail("{}: {} token id {} is out of range for a vocabulary of {} tokens", source, what, id,
           size);
    }
  };
  check("BOS", vocab.bos_id, false);
  check("EOS", vocab.eos_id, false);
  check("unknown", vocab.unk_id, vocab.kind == VocabKind::kBpe);  // BPE may have none
  check("end-of-turn", vocab.eot_id, true);
  check("end-of-message", vocab.eom_id, true);
  for (int32_t id : vocab.eog_ids) check("end-of-generation", id, false);
  if (vocab.kind == VocabKind::kBpe) {
    try {
      find_pre_tokenizer(vocab.pre);
    } catch (const Error& e) {
      fail("{}: {}", source, e.what());
    }
  }
  check("padding", vocab.pad_id, true);
}

void fill_end_of_generation(Vocab& vocab) {
  // llama.cpp (llama_vocab::impl::load) finds these by their text when the ids are not given,
  // and makes each of them a control token.
  static constexpr std::string_view kEndOfTurn[] = {
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
      "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",  // DeepSeek
  };
  static constexpr std::string_view kEndOfGeneration[] = {
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>",
      // fill-in-the-middle pad, repository and file separators end generation too
      "<|fim_pad|>", "<fim-pad>", "<PAD>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
      "<|file_sep|>",
  };
  auto is_one_of = [](std::string_view text, std::span<const std::string_view> list) {
    return std::find(list.begin(), list.end(), text) != list.end();
  };
  std::vector<int32_t> eog;
  auto add = [&](int32_t id) {
    if (id >= 0 && std::find(eog.begin(), eog.end(), id) == eog.end()) eog.push_back(id);
  };
  for (int32_t id = 0; id < vocab.size(); ++id) {
    const std::string& text = vocab.pieces[static_cast<size_t>(id)];
    bool control = false;
    if (vocab.eot_id < 0 && is_one_of(text, kEndOfTurn)) {
      vocab.eot_id = id;
      control = true;
    }
    if (vocab.eom_id < 0 && text == "<|eom_id|>") {
      vocab.eom_id = id;
      control = true;
    }
    if (is_one_of(text, kEndOfGeneration)) {
      add(id);
      control = true;
    }
    if (control) vocab.types[static_cast<size_t>(id)] = TokenType::Control;
  }
  add(vocab.eos_id);
  add(vocab.eot_id);
  add(vocab.eom_id);
  std::sort(eog.begin(), eog.end());
  vocab.eog_ids = std::move(eog);
}

Vocab vocab_from_gguf(const GgufFile& gguf) {
  const std::string& path = gguf.path();
  const GgufValue* model = gguf.find("tokenizer.ggml.model");
  if (model == nullptr) fail("{}: missing metadata key tokenizer.ggml.model", path);
  const std::string& model_name = model->as_string(path + ": tokenizer.ggml.model");
  if (model_name != "llama" && model_name != "gpt2") {
    fail("{}: tokenizer.ggml.model is \"{}\"; supported: \"llama\" (SentencePiece), \"gpt2\" "
         "(byte-level BPE)",
         path, model_name);
  }
  const bool bpe = model_name == "gpt2";

  const auto& tokens = *token_array(gguf, "tokenizer.ggml.tokens", 0, true);
  const size_t n = tokens.size();
  if (n == 0) fail("{}: tokenizer.ggml.tokens is empty", path);
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    fail("{}: tokenizer.ggml.tokens has {} entries, too many for int32 ids", path, n);
  }
  const auto* scores = token_array(gguf, "tokenizer.ggml.scores", n, false);
  const auto* types = token_array(gguf, "tokenizer.ggml.token_type", n, false);

  Vocab vocab;
  vocab.kind = bpe ? VocabKind::kBpe : VocabKind::kSpm;
  vocab.pieces.reserve(n);
  vocab.scores.assign(n, 0.0f);  // llama.cpp's defaults when the arrays are absent
  vocab.types.assign(n, TokenType::Normal);
  for (size_t i = 0; i < n; ++i) {
    const auto* text = std::get_if<std::string>(&tokens[i].value);
    if (tokens[i].type != GgufType::STRING || text == nullptr) {
      fail("{}: tokenizer.ggml.tokens[{}] is not a string", path, i);
    }
    vocab.pieces.push_back(*text);
  }
  if (scores != nullptr) {
    const std::string what = path + ": tokenizer.ggml.scores";
    for (size_t i = 0; i < n; ++i) {
      if (!(*scores)[i].is_number()) fail("{}: tokenizer.ggml.scores[{}] is not a number", path, i);
      double score = (*scores)[i].as_double(what);
      if (std::isnan(score)) fail("{}: tokenizer.ggml.scores[{}] is NaN", path, i);
      vocab.scores[i] = static_cast<float>(score);
    }
  }
  if (types != nullptr) {
    const std::string what = path + ": tokenizer.ggml.token_type";
    for (size_t i = 0; i < n; ++i) {
      if (!(*types)[i].is_integer()) {
        fail("{}: tokenizer.ggml.token_type[{}] is not an integer", path, i);
      }
      int64_t type = (*types)[i].as_int(what);
      if (type < 0 || type > static_cast<int64_t>(TokenType::Byte)) {
        fail("{}: tokenizer.ggml.token_type[{}] = {} is not a known token type", path, i, type);
      }
      vocab.types[i] = static_cast<TokenType>(type);
    }
  }

  if (bpe) {
    const auto& merges = *token_array(gguf, "tokenizer.ggml.merges", 0, true);
    vocab.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const auto* text = std::get_if<std::string>(&merges[i].value);
      if (merges[i].type != GgufType::STRING || text == nullptr) {
        fail("{}: tokenizer.ggml.merges[{}] is not a string", path, i);
      }
      vocab.merges.push_back(*text);
    }
    const GgufValue* pre = gguf.find("tokenizer.ggml.pre");
    if (pre != nullptr) vocab.pre = pre->as_string(path + ": tokenizer.ggml.pre");
  }

  // llama.cpp's defaults: SentencePiece <unk> 0, <s> 1, </s> 2, BOS added, a dummy prefix;
  // byte-level BPE 11 for both (GPT-2's "," is no token to rely on, the keys are always
  // there in practice), no unknown token, BOS only for Llama 3's pre-tokenizer.
  const bool llama3 = bpe && find_pre_tokenizer(vocab.pre).ignore_merges;
  vocab.bos_id = special_id(gguf, "tokenizer.ggml.bos_token_id", bpe ? 11 : 1);
  vocab.eos_id = special_id(gguf, "tokenizer.ggml.eos_token_id", bpe ? 11 : 2);
  vocab.unk_id = special_id(gguf, "tokenizer.ggml.unknown_token_id", bpe ? -1 : 0);
  vocab.pad_id = special_id(gguf, "tokenizer.ggml.padding_token_id", -1);
  vocab.eot_id = special_id(gguf, "tokenizer.ggml.eot_token_id", -1);
  vocab.eom_id = special_id(gguf, "tokenizer.ggml.eom_token_id", -1);
  vocab.add_bos = gguf.get_bool("tokenizer.ggml.add_bos_token", !bpe || llama3);
  vocab.add_eos = gguf.get_bool("tokenizer.ggml.add_eos_token", false);
  vocab.add_space_prefix = gguf.get_bool("tokenizer.ggml.add_space_prefix", !bpe);
  const GgufValue* chat_template = gguf.find("tokenizer.chat_template");
  if (chat_template != nullptr) {
    vocab.chat_template = chat_template->as_string(path + ": tokenizer.chat_template");
  }
  validate_vocab(vocab, path);  // ids in range before they index the pieces
  fill_end_of_generation(vocab);
  return vocab;
}

Vocab vocab_from_llama2c_bytes(std::span<const uint8_t> bytes, int32_t vocab_size,
                               const std::string& name) {
  if (vocab_size <= 0) fail("{}: vocab_size {} must be positive", name, vocab_size);
  const size_t size = bytes.size();
  if (size < 4) fail("{}: {} bytes is too short for a tokenizer.bin header", name, size);
  auto read_i32 = [&](size_t offset) {
    int32_t v;
    std::memcpy(&v, bytes.data() + offset, sizeof v);
    return v;
  };
  auto read_f32 = [&](size_t offset) {
    float v;
    std::memcpy(&v, bytes.data() + offset, sizeof v);
    return v;
  };
  const int32_t max_token_length = read_i32(0);
  if (max_token_length < 0) fail("{}: negative max_token_length {}", name, max_token_length);
  // Each token takes at least 8 bytes (score and length): reject an impossible vocab_size
  // before reserving memory for it.
  if ((size - 4) / 8 < static_cast<size_t>(vocab_size)) {
    fail("{}: the file ({} bytes) cannot hold {} tokens", name, size, vocab_size);
  }

  Vocab vocab;
  vocab.pieces.reserve(static_cast<size_t>(vocab_size));
  vocab.scores.reserve(static_cast<size_t>(vocab_size));
  vocab.types.reserve(static_cast<size_t>(vocab_size));
  size_t offset = 4;
  for (int32_t i = 0; i < vocab_size; ++i) {
    if (size - offset < 8) {
      fail("{}: token {} of {} at offset {}: the file ends ({} bytes)", name, i, vocab_size, offset,
           size);
    }
    const float score = read_f32(offset);
    const int32_t length = read_i32(offset + 4);
    if (std::isnan(score)) fail("{}: token {} at offset {}: the score is NaN", name, i, offset);
    if (length < 0) fail("{}: token {} at offset {}: negative length {}", name, i, offset, length);
    offset += 8;
    if (static_cast<size_t>(length) > size - offset) {
      fail("{}: token {} at offset {}: length {} runs past the end of the file ({} bytes)", name, i,
           offset - 8, length, size);
    }
    std::string_view text(reinterpret_cast<const char*>(bytes.data() + offset),
                          static_cast<size_t>(length));
    offset += static_cast<size_t>(length);

    // llama2.c's export writes BOS/EOS as "\n<s>\n" / "\n</s>\n" and spaces as ' '.
    if (text == "\n<s>\n") text = "<s>";
    if (text == "\n</s>\n") text = "</s>";
    TokenType type = TokenType::Normal;
    if (text == "<unk>") {
      type = TokenType::Unknown;
    } else if (text == "<s>" || text == "</s>" || text.empty()) {
      type = TokenType::Control;
    } else if (is_byte_piece(text)) {
      type = TokenType::Byte;
    }
    vocab.pieces.push_back(escape_spaces(text));
    vocab.scores.push_back(score);
    vocab.types.push_back(type);
  }
  // llama2.c fixes these: <unk> 0, <s> 1, </s> 2; a dummy space prefix, BOS added.
  vocab.bos_id = 1;
  vocab.eos_id = 2;
  vocab.unk_id = 0;
  vocab.pad_id = -1;
  vocab.add_bos = true;
  vocab.add_eos = false;
  vocab.add_space_prefix = true;
  validate_vocab(vocab, name);
  return vocab;
}

Vocab vocab_from_llama2c(const std::string& path, int32_t vocab_size) {
  auto file = MappedFile::open(path);
  return vocab_from_llama2c_bytes(file->bytes(), vocab_size, path);
}

}  // namespace skiff

namespace skiff {

void write_vocab_gguf(const Vocab& vocab, GgufWriter& writer) {
  const bool bpe = vocab.kind == VocabKind::kBpe;
  auto strings = [](const std::vector<std::string>& v) {
    std::vector<GgufValue> out;
    out.reserve(v.size());
    for (const auto& s : v) out.push_back(GgufValue::str(s));
    return out;
  };
  auto id = [](int32_t v) { return GgufValue::u32(static_cast<uint32_t>(v)); };
  std::vector<GgufValue> types;
  types.reserve(vocab.types.size());
  for (TokenType type : vocab.types) types.push_back(GgufValue::i32(static_cast<int32_t>(type)));

  writer.set("tokenizer.ggml.model", GgufValue::str(bpe ? "gpt2" : "llama"));
  if (bpe) writer.set("tokenizer.ggml.pre", GgufValue::str(vocab.pre.empty() ? "default" : vocab.pre));
  writer.set("tokenizer.ggml.tokens", GgufValue::array(GgufType::STRING, strings(vocab.pieces)));
  if (bpe) {
    // llama.cpp's converters write no scores for byte-level BPE: the merges order it.
    writer.set("tokenizer.ggml.merges", GgufValue::array(GgufType::STRING, strings(vocab.merges)));
  } else {
    std::vector<GgufValue> scores;
    scores.reserve(vocab.scores.size());
    for (float score : vocab.scores) scores.push_back(GgufValue::f32(score));
    writer.set("tokenizer.ggml.scores", GgufValue::array(GgufType::FLOAT32, std::move(scores)));
  }
  writer.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, std::move(types)));
  writer.set("tokenizer.ggml.bos_token_id", id(vocab.bos_id));
  writer.set("tokenizer.ggml.eos_token_id", id(vocab.eos_id));
  if (vocab.unk_id >= 0) writer.set("tokenizer.ggml.unknown_token_id", id(vocab.unk_id));
  if (vocab.pad_id >= 0) writer.set("tokenizer.ggml.padding_token_id", id(vocab.pad_id));
  if (vocab.eot_id >= 0) writer.set("tokenizer.ggml.eot_token_id", id(vocab.eot_id));
  if (vocab.eom_id >= 0) writer.set("tokenizer.ggml.eom_token_id", id(vocab.eom_id));
  writer.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(vocab.add_bos));
  writer.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(vocab.add_eos));
  if (bpe && vocab.add_space_prefix) {
    writer.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(true));
  }
  if (!vocab.chat_template.empty()) {
    writer.set("tokenizer.chat_template", GgufValue::str(vocab.chat_template));
  }
}

}  // namespace skiff

// Hugging Face tokenizer.json (+ tokenizer_config.json) to a byte-level BPE Vocab, the way
// llama.cpp's convert_hf_to_gguf.py builds its GGUF: vocabulary and added tokens by id
// (special added tokens are control tokens, the others user-defined, gaps "[PADn]" unused),
// merges in order, and the pre-tokenizer recognised by its regex.
#include <nlohmann/json.hpp>

#include <fstream>
#include <limits>
#include <sstream>

#include "base/error.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/vocab.h"

namespace skiff {
namespace {

using Json = nlohmann::json;

Json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::ostringstream text;
  text << in.rdbuf();
  Json json = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) fail("{}: not valid JSON", path);
  return json;
}

// A field of an object, or nullptr when absent or null.
const Json* field(const Json& object, const char* name) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

const Json& require(const Json& object, const char* name, const std::string& path,
                    const std::string& where) {
  const Json* value = field(object, name);
  if (value == nullptr) fail("{}: missing field {}{}", path, where, name);
  return *value;
}

const std::string& string_of(const Json& value, const std::string& path, const std::string& what) {
  if (!value.is_string()) fail("{}: {} is not a string", path, what);
  return value.get_ref<const std::string&>();
}

int32_t id_of(const Json& value, int32_t limit, const std::string& path, const std::string& what) {
  if (!value.is_number_integer()) fail("{}: {} is not an integer", path, what);
  const int64_t id = value.get<int64_t>();
  if (id < 0 || id >= limit) fail("{}: {} = {} is out of range", path, what, id);
  return static_cast<int32_t>(id);
}

// The pattern string of a Split pre-tokenizer ({"Regex": ...} or {"String": ...}).
std::string split_pattern(const Json& split, const std::string& path) {
  const Json& pattern = require(split, "pattern", path, "pre_tokenizer Split.");
  if (const Json* regex = field(pattern, "Regex")) return string_of(*regex, path, "pre_tokenizer Split.pattern.Regex");
  if (const Json* text = field(pattern, "String")) return string_of(*text, path, "pre_tokenizer Split.pattern.String");
  fail("{}: pre_tokenizer Split.pattern has neither Regex nor String", path);
}

std::string pre_for_regex(const std::string& regex, const std::string& path) {
  static const std::pair<const char*, const char*> kKnown[] = {
      {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
       "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "llama-bpe"},
      {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
       "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "llama-bpe"},
      {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
       "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "qwen2"},
      {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", "gpt-2"},
      {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "gpt-2"},
  };
  for (const auto& [pattern, pre] : kKnown) {
    if (regex == pattern) return pre;
  }
  fail("{}: pre_tokenizer Split regex \"{}\" is not one of the known pre-tokenizers ({})", path,
       regex, supported_pre_tokenizers());
}

bool byte_level_uses_regex(const Json& byte_level) {
  const Json* use_regex = field(byte_level, "use_regex");
  return use_regex == nullptr || (use_regex->is_boolean() && use_regex->get<bool>());
}

// llama.cpp's pre-tokenizer name for the tokenizer.json pre_tokenizer.
std::string pre_tokenizer_name(const Json& root, const std::string& path) {
  const Json* pre = field(root, "pre_tokenizer");
  if (pre == nullptr) fail("{}: missing field pre_tokenizer (byte-level BPE needs one)", path);
  const std::string type = string_of(require(*pre, "type", path, "pre_tokenizer."), path, "pre_tokenizer.type");
  if (type == "ByteLevel") {
    if (byte_level_uses_regex(*pre)) return "gpt-2";
    fail("{}: pre_tokenizer ByteLevel without use_regex splits nothing; not supported", path);
  }
  if (type != "Sequence") fail("{}: pre_tokenizer type \"{}\" is not supported", path, type);
  const Json& list = require(*pre, "pretokenizers", path, "pre_tokenizer.");
  if (!list.is_array()) fail("{}: pre_tokenizer.pretokenizers is not an array", path);
  std::vector<std::string> types;
  for (const Json& item : list) {
    types.push_back(string_of(require(item, "type", path, "pre_tokenizer.pretokenizers[]."), path,
                              "pre_tokenizer.pretokenizers[].type"));
  }
  if (types == std::vector<std::string>{"Split", "ByteLevel"} && !byte_level_uses_regex(list[1])) {
    return pre_for_regex(split_pattern(list[0], path), path);
  }
  if (types == std::vector<std::string>{"ByteLevel"} && byte_level_uses_regex(list[0])) return "gpt-2";
  if (types == std::vector<std::string>{"Digits", "ByteLevel"} && byte_level_uses_regex(list[1])) {
    const Json* individual = field(list[0], "individual_digits");
    if (individual != nullptr && individual->is_boolean() && individual->get<bool>()) return "starcoder";
  }
  std::string joined;
  for (const std::string& t : types) joined += (joined.empty() ? "" : ", ") + t;
  fail("{}: pre_tokenizer Sequence [{}] is not one of the known pre-tokenizers ({})", path, joined,
       supported_pre_tokenizers());
}

// bos_token / eos_token: "text" or {"content": "text", ...}.
std::string special_text(const Json& value, const std::string& path, const std::string& name) {
  if (value.is_string()) return value.get<std::string>();
  if (const Json* content = field(value, "content")) return string_of(*content, path, name + ".content");
  fail("{}: {} is neither a string nor an object with content", path, name);
}

}  // namespace

Vocab vocab_from_hf_tokenizer(const std::string& tokenizer_json_path,
                              const std::string& tokenizer_config_path) {
  const std::string& path = tokenizer_json_path;
  const Json root = read_json(path);
  if (!root.is_object()) fail("{}: the top level is not an object", path);
  const Json& model = require(root, "model", path, "");
  const std::string& type = string_of(require(model, "type", path, "model."), path, "model.type");
  if (type != "BPE") fail("{}: model.type is \"{}\"; only BPE is supported", path, type);
  const Json& vocab_json = require(model, "vocab", path, "model.");
  if (!vocab_json.is_object()) fail("{}: model.vocab is not an object", path);
  const Json* added = field(root, "added_tokens");
  if (added != nullptr && !added->is_array()) fail("{}: added_tokens is not an array", path);

  constexpr int32_t kMaxTokens = 1 << 24;
  int32_t n_tokens = 0;
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    n_tokens = std::max(n_tokens, id_of(it.value(), kMaxTokens, path, "model.vocab[\"" + it.key() + "\"]") + 1);
  }
  if (added != nullptr) {
    for (const Json& token : *added) {
      n_tokens = std::max(n_tokens, id_of(require(token, "id", path, "added_tokens[]."), kMaxTokens, path,
                                          "added_tokens[].id") + 1);
    }
  }
  if (n_tokens == 0) fail("{}: model.vocab is empty", path);

  Vocab vocab;
  vocab.kind = VocabKind::kBpe;
  vocab.add_space_prefix = false;
  vocab.unk_id = -1;
  vocab.pieces.resize(static_cast<size_t>(n_tokens));
  vocab.scores.assign(static_cast<size_t>(n_tokens), 0.0f);
  vocab.types.assign(static_cast<size_t>(n_tokens), TokenType::Unused);
  std::vector<bool> filled(static_cast<size_t>(n_tokens), false);
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    const auto id = static_cast<size_t>(it.value().get<int64_t>());
    vocab.pieces[id] = it.key();
    vocab.types[id] = TokenType::Normal;
    filled[id] = true;
  }
  if (added != nullptr) {
    for (const Json& token : *added) {
      const auto id = static_cast<size_t>(token["id"].get<int64_t>());
      vocab.pieces[id] = string_of(require(token, "content", path, "added_tokens[]."), path, "added_tokens[].content");
      const Json* special = field(token, "special");
      const bool is_special = special != nullptr && special->is_boolean() && special->get<bool>();
      vocab.types[id] = is_special ? TokenType::Control : TokenType::UserDefined;
      filled[id] = true;
    }
  }
  for (size_t id = 0; id < filled.size(); ++id) {
    if (!filled[id]) vocab.pieces[id] = "[PAD" + std::to_string(id) + "]";
  }

  const Json& merges = require(model, "merges", path, "model.");
  if (!merges.is_array()) fail("{}: model.merges is not an array", path);
  vocab.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& merge = merges[i];
    if (merge.is_string()) {
      vocab.merges.push_back(merge.get<std::string>());
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      vocab.merges.push_back(merge[0].get<std::string>() + " " + merge[1].get<std::string>());
    } else {
      fail("{}: model.merges[{}] is neither \"left right\" nor [left, right]", path, i);
    }
  }
  // ignore_merges follows the pre-tokenizer, as in llama.cpp (Llama 3's has it).
  vocab.pre = pre_tokenizer_name(root, path);
  const PreTokenizerInfo pre = find_pre_tokenizer(vocab.pre);

  auto find_text = [&](const std::string& text) -> int32_t {
    for (int32_t id = vocab.size() - 1; id >= 0; --id) {  // added tokens sit at the end
      if (vocab.pieces[static_cast<size_t>(id)] == text) return id;
    }
    return -1;
  };
  vocab.add_bos = pre.ignore_merges;  // llama.cpp's default: BOS for Llama 3's pre-tokenizer
  vocab.add_eos = false;
  vocab.bos_id = -1;
  vocab.eos_id = -1;
  if (!tokenizer_config_path.empty()) {
    const std::string& cpath = tokenizer_config_path;
    const Json config = read_json(cpath);
    if (!config.is_object()) fail("{}: the top level is not an object", cpath);
    for (const char* name : {"bos_token", "eos_token"}) {
      const Json* value = field(config, name);
      if (value == nullptr) continue;
      const std::string text = special_text(*value, cpath, name);
      const int32_t id = find_text(text);
      if (id < 0) fail("{}: {} \"{}\" is not a token of {}", cpath, name, text, path);
      (std::string(name) == "bos_token" ? vocab.bos_id : vocab.eos_id) = id;
    }
    for (const char* name : {"add_bos_token", "add_eos_token"}) {
      const Json* value = field(config, name);
      if (value == nullptr) continue;
      if (!value->is_boolean()) fail("{}: {} is not a boolean", cpath, name);
      (std::string(name) == "add_bos_token" ? vocab.add_bos : vocab.add_eos) = value->get<bool>();
    }
    if (const Json* chat_template = field(config, "chat_template")) {
      if (chat_template->is_string()) {
        vocab.chat_template = chat_template->get<std::string>();
      } else if (chat_template->is_array()) {
        for (const Json& entry : *chat_template) {
          const Json* name = field(entry, "name");
          const Json* text = field(entry, "template");
          if (name != nullptr && name->is_string() && name->get<std::string>() == "default") {
            if (text == nullptr) fail("{}: chat_template \"default\" has no template", cpath);
            vocab.chat_template = string_of(*text, cpath, "chat_template[default].template");
          }
        }
        if (vocab.chat_template.empty()) fail("{}: chat_template lists no template named \"default\"", cpath);
      } else {
        fail("{}: chat_template is neither a string nor a list of {{name, template}}", cpath);
      }
    }
  }
  // Without a config (or without the keys): the usual names.
  for (const char* text : {"<|begin_of_text|>", "<s>", "<|endoftext|>"}) {
    if (vocab.bos_id < 0) vocab.bos_id = find_text(text);
  }
  for (const char* text : {"<|end_of_text|>", "</s>", "<|endoftext|>"}) {
    if (vocab.eos_id < 0) vocab.eos_id = find_text(text);
  }
  if (vocab.bos_id < 0 || vocab.eos_id < 0) {
    fail("{}: no bos_token/eos_token (give tokenizer_config.json)", path);
  }
  validate_vocab(vocab, path);
  fill_end_of_generation(vocab);
  return vocab;
}

}  // namespace skiff

// Builds a Model from a Hugging Face checkpoint folder (LlamaForCausalLM / MistralForCausalLM):
// hyper-parameters from config.json, weights as views into the mapped *.safetensors files (one
// file, shards named by model.safetensors.index.json, or every *.safetensors in the folder),
// each tensor checked against the shape config.json implies. HF keeps q/k rows in the
// rotate-half layout, so the config says RopeLayout::kHalves; nothing is permuted or copied.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/safetensors.h"
#include "model/load_util.h"
#include "model/model.h"

namespace skiff {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

Json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read", path);
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return Json::parse(text.str());
  } catch (const Json::exception& e) {
    std::string what = e.what();
    if (size_t p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    std::replace(what.begin(), what.end(), '\n', ' ');
    fail("{}: not valid JSON: {}", path, what);
  }
}

// Typed reads of config.json fields; errors name the file and the field.
struct JsonFields {
  const std::string& path;
  const Json& object;
  std::string prefix;  // "rope_scaling." for the nested object

  const Json* find(const char* key) const {
    auto it = object.find(key);
    return it == object.end() || it->is_null() ? nullptr : &*it;
  }
  int integer(const char* key, std::optional<int> fallback = std::nullopt) const {
    const Json* v = find(key);
    if (v == nullptr) {
      if (!fallback) fail("{}: missing field {}{}", path, prefix, key);
      return *fallback;
    }
    if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > (int64_t{1} << 30))
      fail("{}: field {}{} = {} is not an integer in 0..2^30", path, prefix, key, v->dump());
    return static_cast<int>(v->get<int64_t>());
  }
  float number(const char* key, float fallback) const {
    const Json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_number()) fail("{}: field {}{} = {} is not a number", path, prefix, key, v->dump());
    return static_cast<float>(v->get<double>());
  }
  bool boolean(const char* key, bool fallback) const {
    const Json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail("{}: field {}{} = {} is not true or false", path, prefix, key, v->dump());
    return v->get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    const Json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) fail("{}: field {}{} = {} is not a string", path, prefix, key, v->dump());
    return v->get<std::string>();
  }
  // An id or a list of ids (generation_config's eos_token_id may be either).
  std::vector<int32_t> ids(const char* key) const {
    const Json* v = find(key);
    std::vector<int32_t> out;
    if (v == nullptr) return out;
    auto add = [&](const Json& id) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (int64_t{1} << 30))
        fail("{}: field {}{} = {} is not a token id or a list of them", path, prefix, key, v->dump());
      out.push_back(static_cast<int32_t>(id.get<int64_t>()));
    };
    if (v->is_array()) {
      for (const Json& id : *v) add(id);
    } else {
      add(*v);
    }
    return out;
  }
};

void read_architecture(const JsonFields& f) {
  const Json* archs = f.find("architectures");
  std::string arch;
  if (archs != nullptr) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string())
      fail("{}: field architectures = {} is not a list of names", f.path, archs->dump());
    arch = (*archs)[0].get<std::string>();
  } else {
    std::string type = f.string("model_type", "");
    if (type.empty()) fail("{}: missing field architectures", f.path);
    arch = type == "llama" ? "LlamaForCausalLM" : type == "mistral" ? "MistralForCausalLM" : "model_type " + type;
  }
  if (arch != "LlamaForCausalLM" && arch != "MistralForCausalLM")
    fail("{}: architecture {} is not supported (LlamaForCausalLM, MistralForCausalLM)", f.path, arch);
}

RopeScaling read_rope_scaling(const JsonFields& config) {
  RopeScaling s;
  const Json* j = config.find("rope_scaling");
  if (j == nullptr) return s;
  if (!j->is_object()) fail("{}: field rope_scaling = {} is not an object", config.path, j->dump());
  JsonFields f{config.path, *j, "rope_scaling."};
  // Newer configs say rope_type, older ones type.
  std::string type = f.string("rope_type", f.string("type", ""));
  if (type.empty()) fail("{}: missing field rope_scaling.rope_type", config.path);
  if (type == "default") return s;
  s.factor = f.number("factor", 1.0f);
  if (!(s.factor > 0)) fail("{}: field rope_scaling.factor = {} must be positive", config.path, s.factor);
  // HF reads original_max_position_embeddings inside rope_scaling; some configs put it at the top.
  const int top_original = config.integer("original_max_position_embeddings", 0);
  s.original_context = f.integer("original_max_position_embeddings", top_original);
  if (type == "linear") {
    s.type = RopeScalingType::kLinear;
  } else if (type == "llama3") {
    s.type = RopeScalingType::kLlama3;
    if (s.original_context == 0) fail("{}: missing field rope_scaling.original_max_position_embeddings", config.path);
    s.low_freq_factor = f.number("low_freq_factor", 1.0f);
    s.high_freq_factor = f.number("high_freq_factor", 4.0f);
    if (!(s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor))
      fail("{}: rope_scaling.high_freq_factor ({}) must exceed low_freq_factor ({}) > 0", config.path,
           s.high_freq_factor, s.low_freq_factor);
  } else if (type == "yarn") {
    s.type = RopeScalingType::kYarn;
    if (s.original_context == 0) s.original_context = config.integer("max_position_embeddings", 2048);
    s.beta_fast = f.number("beta_fast", 32.0f);
    s.beta_slow = f.number("beta_slow", 1.0f);
    s.attn_factor = f.number("attention_factor", 0.0f);
  } else {
    fail("{}: rope_scaling type '{}' is not supported (linear, yarn, llama3)", config.path, type);
  }
  return s;
}

ModelConfig read_config(const std::string& path, const Json& j) {
  if (!j.is_object()) fail("{}: not a JSON object", path);
  JsonFields f{path, j, ""};
  read_architecture(f);
  ModelConfig c;
  c.name = f.string("_name_or_path", "");
  c.dim = f.integer("hidden_size");
  c.n_layers = f.integer("num_hidden_layers");
  c.n_heads = f.integer("num_attention_heads");
  c.n_kv_heads = f.integer("num_key_value_heads", c.n_heads);
  c.head_dim = f.integer("head_dim", c.n_heads > 0 ? c.dim / c.n_heads : 0);
  c.rope_dim = c.head_dim;
  c.ffn_dim = f.integer("intermediate_size");
  c.vocab_size = f.integer("vocab_size", 0);  // 0: from the embedding's rows
  c.context_length = f.integer("max_position_embeddings", 2048);
  c.rms_eps = f.number("rms_norm_eps", 1e-6f);
  c.rope_theta = f.number("rope_theta", 10000.0f);
  c.rope_layout = RopeLayout::kHalves;
  c.rope_scaling = read_rope_scaling(f);
  std::string act = f.string("hidden_act", "silu");
  std::optional<FfnActivation> a = parse_ffn_activation(act);
  if (!a) fail("{}: field hidden_act = '{}' is not supported (silu, relu)", path, act);
  c.ffn_activation = *a;
  if (f.boolean("attention_bias", false)) fail("{}: field attention_bias = true is not supported", path);
  if (f.boolean("mlp_bias", false)) fail("{}: field mlp_bias = true is not supported", path);
  return c;
}

// Every tensor of the checkpoint, by name, and the file that holds it.
struct Shards {
  std::vector<SafetensorsFile> files;
  std::map<std::string, const SafetensorsTensor*> tensors;
  std::map<std::string, const SafetensorsFile*> file_of;
};

// A file name from the index: a plain name inside the folder, nothing that climbs out of it.
void check_shard_name(const std::string& index_path, const std::string& tensor, const std::string& file) {
  if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos ||
      file == "." || file == "..")
    fail("{}: weight_map[\"{}\"] = \"{}\" is not a file name in the folder", index_path, tensor, file);
}

Shards open_shards(const std::string& dir, Residency residency) {
  Shards s;
  const fs::path root(dir);
  std::vector<std::string> names;             // files to open, in order
  std::map<std::string, std::string> wanted;  // tensor -> file, from the index
  const fs::path index = root / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const std::string index_path = index.string();
    Json j = read_json(index_path);
    if (!j.is_object()) fail("{}: not a JSON object", index_path);
    auto map = j.find("weight_map");
    if (map == j.end()) fail("{}: missing field weight_map", index_path);
    if (!map->is_object() || map->empty()) fail("{}: field weight_map is not a non-empty object", index_path);
    for (const auto& [tensor, file] : map->items()) {
      if (!file.is_string()) fail("{}: weight_map[\"{}\"] = {} is not a file name", index_path, tensor, file.dump());
      const std::string name = file.get<std::string>();
      check_shard_name(index_path, tensor, name);
      wanted[tensor] = name;
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
  } else if (fs::exists(root / "model.safetensors")) {
    names.push_back("model.safetensors");
  } else {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(root, ec))
      if (entry.path().extension() == ".safetensors") names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    if (names.empty()) {
      if (fs::exists(root / "pytorch_model.bin") || fs::exists(root / "pytorch_model.bin.index.json"))
        fail("{}: only pytorch_model.bin weights; skiff reads *.safetensors only", dir);
      fail("{}: no model.safetensors, model.safetensors.index.json or *.safetensors", dir);
    }
  }

  s.files.reserve(names.size());  // tensors point into the elements: no reallocation after this
  for (const std::string& name : names) s.files.push_back(SafetensorsFile::open((root / name).string(), residency));
  for (const SafetensorsFile& file : s.files) {
    for (const SafetensorsTensor& t : file.tensors()) {
      if (!wanted.empty()) {
        auto it = wanted.find(t.name);
        if (it == wanted.end() || file.path() != (root / it->second).string()) continue;  // the index names another file
      }
      auto [at, inserted] = s.tensors.emplace(t.name, &t);
      if (!inserted) fail("{}: tensor {} is also in {}", file.path(), t.name, s.file_of[t.name]->path());
      s.file_of[t.name] = &file;
    }
  }
  for (const auto& [tensor, file] : wanted)
    if (s.tensors.count(tensor) == 0)
      fail("{}: weight_map says {} is in {}, which has no such tensor", index.string(), tensor, file);
  return s;
}

struct HfLoader {
  Model& model;
  const Shards& shards;
  std::string dir;

  const SafetensorsTensor& find(const std::string& name) const {
    auto it = shards.tensors.find(name);
    if (it == shards.tensors.end()) fail("{}: missing tensor {}", dir, name);
    return *it->second;
  }
  const std::string& file_of(const std::string& name) const { return shards.file_of.at(name)->path(); }

  // A [rows, cols] matrix (PyTorch's [out, in]), or a [cols] vector when rows == 0.
  TensorView view(const std::string& name, int64_t rows, int64_t cols) {
    const SafetensorsTensor& t = find(name);
    const std::vector<int64_t> want = rows == 0 ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
    if (t.shape != want)
      fail("{}: tensor {} has shape {}, expected {} from config.json", file_of(name), name, shape_string(t.shape),
           shape_string(want));
    if (!t.type)
      fail("{}: dtype {} of tensor {} is not supported (F32, F16, BF16)", file_of(name), t.dtype, name);
    TensorView v;
    v.name = name;
    v.type = *t.type;
    v.cols = cols;
    v.rows = rows == 0 ? 1 : rows;
    v.data = t.data;
    v.row_stride = row_bytes(v.type, cols);
    // The format aligns offsets to the element size only relative to the data section, whose
    // start (8 + header length) writers pad to 8 bytes; a file that does not gets a copy.
    const size_t element = row_bytes(v.type, 1);
    if (reinterpret_cast<uintptr_t>(t.data) % element != 0) {
      std::vector<float>& buf = model.owned.emplace_back((t.nbytes() + sizeof(float) - 1) / sizeof(float));
      std::copy(t.data, t.data + t.nbytes(), reinterpret_cast<uint8_t*>(buf.data()));
      v.data = reinterpret_cast<const uint8_t*>(buf.data());
    }
    return v;
  }
  TensorView matrix(const std::string& name, int64_t rows, int64_t cols) { return view(name, rows, cols); }
  TensorView vector(const std::string& name, int64_t n) { return f32_vector(model, view(name, 0, n)); }
};

// A vocabulary of n placeholder tokens "<tok_N>", for checkpoints without tokenizer.json:
// enough to run token ids (dump-logits --tokens) and print ids back, not to encode text.
Vocab placeholder_vocab(int n) {
  Vocab v;
  v.kind = VocabKind::kSpm;
  v.add_space_prefix = false;
  for (int i = 0; i < n; ++i) {
    v.pieces.push_back("<tok_" + std::to_string(i) + ">");
    v.scores.push_back(0.0f);
    v.types.push_back(TokenType::Normal);
  }
  v.unk_id = 0;
  v.bos_id = std::min(1, n - 1);
  v.eos_id = std::min(2, n - 1);
  v.add_bos = false;
  return v;
}

// BOS and end-of-generation ids from generation_config.json (else config.json).
void apply_special_ids(Vocab& vocab, bool placeholder, const std::string& path, const Json& j) {
  if (!j.is_object()) fail("{}: not a JSON object", path);
  JsonFields f{path, j, ""};
  auto check = [&](int32_t id, const char* field) {
    if (id >= vocab.size())
      fail("{}: field {} = {} is outside the vocabulary of {} tokens", path, field, id, vocab.size());
  };
  for (int32_t id : f.ids("bos_token_id")) {
    check(id, "bos_token_id");
    vocab.bos_id = id;
    if (placeholder) vocab.add_bos = true;
  }
  std::vector<int32_t> eos = f.ids("eos_token_id");
  for (int32_t id : eos) {
    check(id, "eos_token_id");
    if (std::find(vocab.eog_ids.begin(), vocab.eog_ids.end(), id) == vocab.eog_ids.end()) vocab.eog_ids.push_back(id);
  }
  if (placeholder && !eos.empty()) vocab.eos_id = eos[0];
}

}  // namespace

std::unique_ptr<Model> load_model_hf(const std::string& dir, Residency residency) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) fail("{}: not a folder", dir);
  const fs::path config_path = root / "config.json";
  if (!fs::exists(config_path)) fail("{}: no config.json (not a Hugging Face checkpoint folder)", dir);

  auto model = std::make_unique<Model>();
  model->source = dir;
  model->format = "hf";
  const Json config_json = read_json(config_path.string());
  ModelConfig& c = model->config;
  c = read_config(config_path.string(), config_json);
  if (c.name.empty()) c.name = root.filename().string();
  const bool tie = JsonFields{config_path.string(), config_json, ""}.boolean("tie_word_embeddings", false);

  Shards shards = open_shards(dir, residency);
  HfLoader load{*model, shards, dir};
  const std::string kEmbed = "model.embed_tokens.weight";
  const SafetensorsTensor& embd = load.find(kEmbed);
  if (embd.shape.size() != 2)
    fail("{}: tensor {} has shape {}, expected [vocab_size, {}]", load.file_of(kEmbed), kEmbed,
         shape_string(embd.shape), c.dim);
  if (c.vocab_size == 0) c.vocab_size = static_cast<int>(std::min<int64_t>(embd.shape[0], int64_t{1} << 30));
  c.validate(config_path.string());

  model->token_embd = load.matrix(kEmbed, c.vocab_size, c.dim);
  model->output_norm = load.vector("model.norm.weight", c.dim);
  if (tie || shards.tensors.count("lm_head.weight") == 0) {
    model->output = model->token_embd;
    model->tied_output = true;
  } else {
    model->output = load.matrix("lm_head.weight", c.vocab_size, c.dim);
  }
  for (int l = 0; l < c.n_layers; ++l) {
    auto name = [&](const char* what) { return "model.layers." + std::to_string(l) + "." + what + ".weight"; };
    for (const char* bias : {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"}) {
      const std::string b = "model.layers." + std::to_string(l) + "." + bias;
      if (shards.tensors.count(b)) fail("{}: tensor {}: attention biases are not supported", load.file_of(b), b);
    }
    LayerWeights w;
    w.attn_norm = load.vector(name("input_layernorm"), c.dim);
    w.wq = load.matrix(name("self_attn.q_proj"), c.q_dim(), c.dim);
    w.wk = load.matrix(name("self_attn.k_proj"), c.kv_dim(), c.dim);
    w.wv = load.matrix(name("self_attn.v_proj"), c.kv_dim(), c.dim);
    w.wo = load.matrix(name("self_attn.o_proj"), c.dim, c.q_dim());
    w.ffn_norm = load.vector(name("post_attention_layernorm"), c.dim);
    w.ffn_gate = load.matrix(name("mlp.gate_proj"), c.ffn_dim, c.dim);
    w.ffn_up = load.matrix(name("mlp.up_proj"), c.ffn_dim, c.dim);
    w.ffn_down = load.matrix(name("mlp.down_proj"), c.dim, c.ffn_dim);
    model->layers.push_back(std::move(w));
  }

  const fs::path tokenizer_json = root / "tokenizer.json";
  const bool placeholder = !fs::exists(tokenizer_json);
  Vocab vocab;
  if (placeholder) {
    vocab = placeholder_vocab(c.vocab_size);
  } else {
    const fs::path tokenizer_config = root / "tokenizer_config.json";
    vocab = vocab_from_hf_tokenizer(tokenizer_json.string(),
                                    fs::exists(tokenizer_config) ? tokenizer_config.string() : "");
  }
  const fs::path generation_config = root / "generation_config.json";
  if (fs::exists(generation_config)) {
    apply_special_ids(vocab, placeholder, generation_config.string(), read_json(generation_config.string()));
  } else {
    apply_special_ids(vocab, placeholder, config_path.string(), config_json);
  }
  if (std::find(vocab.eog_ids.begin(), vocab.eog_ids.end(), vocab.eos_id) == vocab.eog_ids.end())
    vocab.eog_ids.insert(vocab.eog_ids.begin(), vocab.eos_id);
  if (vocab.size() > c.vocab_size)
    fail("{}: tokenizer has {} tokens but {} only {} rows", tokenizer_json.string(), vocab.size(), kEmbed,
         c.vocab_size);
  model->tokenizer = std::make_unique<Tokenizer>(std::move(vocab));

  for (SafetensorsFile& f : shards.files) model->shards.push_back(f.file());
  model->file = model->shards.front();
  // Only once the load has succeeded, so a failed load prints its one error line alone.
  if (placeholder) std::fprintf(stderr, "warning: %s: no tokenizer.json: token ids only\n", dir.c_str());
  return model;
}

}  // namespace skiff

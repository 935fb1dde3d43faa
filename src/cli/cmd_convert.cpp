// skiff convert (llama2.c checkpoint or Hugging Face folder -> GGUF; GGUF -> its first E layers
// with --first-layers) and skiff quantize (GGUF -> GGUF of another type).
#include <cstdio>
#include <filesystem>
#include <string_view>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "io/export_gguf.h"

namespace skiff::cli {
namespace {

DType parse_type_flag(const std::string& name) {
  std::optional<DType> t = parse_dtype(name);
  if (!t) fail("unknown tensor type '{}'", name);
  return *t;
}

// The layer a tensor named "blk.N.<...>" belongs to; -1 for any other tensor.
int tensor_layer(std::string_view name) {
  if (!name.starts_with("blk.")) return -1;
  name.remove_prefix(4);
  int layer = 0;
  size_t i = 0;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) layer = layer * 10 + (name[i] - '0');
  return i > 0 && i < name.size() && name[i] == '.' ? layer : -1;
}

// Writes the first `layers` layers of `in` with the final norm, the head, the token embeddings
// and every metadata key (block_count set to `layers`, per-layer arrays cut to their first
// `layers` entries): the early-exit draft model a llama.cpp user would make. Tensor bytes are
// copied as they are.
void write_first_layers(const std::string& in, const std::string& out, int layers) {
  if (!is_gguf_file(in)) fail("--first-layers needs a GGUF model; {} is not one", in);
  GgufFile source = GgufFile::open(in);
  const std::string arch = source.get_string("general.architecture", "");
  if (arch.empty()) fail("{}: no general.architecture", in);
  const std::string block_count = arch + ".block_count";
  const int64_t n_layers = source.get_int(block_count);
  if (layers < 1 || layers >= n_layers)
    fail("--first-layers {} must be in 1..{} ({} has {} layers)", layers, n_layers - 1, in, n_layers);
  std::vector<std::pair<std::string, GgufValue>> extra = {
      {block_count, GgufValue::u32(static_cast<uint32_t>(layers))}};
  for (const auto& [key, value] : source.metadata()) {
    if (!key.starts_with(arch + ".") || value.type != GgufType::ARRAY) continue;
    const std::vector<GgufValue>& items = value.as_array(key);
    if (static_cast<int64_t>(items.size()) != n_layers) continue;
    std::vector<GgufValue> first(items.begin(), items.begin() + layers);
    extra.push_back({key, GgufValue::array(value.array_type, std::move(first))});
  }
  copy_gguf(source, out, [layers](const GgufTensorInfo& t) { return tensor_layer(t.name) < layers; }, extra);
}

}  // namespace

void register_convert(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    std::string output, type = "f32";
    std::string in, out, hf;
    int first_layers = 0;
    std::vector<std::string> files;  // IN OUT, with --first-layers
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* convert = app.add_subcommand(
      "convert", "convert a llama2.c checkpoint (+ tokenizer.bin) or a Hugging Face checkpoint folder to GGUF");
  add_model_flags(convert, flags->model, false);
  convert->add_option("--hf", flags->hf, "Hugging Face checkpoint folder (config.json + *.safetensors)");
  convert->add_option("-o,--output", flags->output, "output GGUF file");
  CLI::Option* type_flag = convert->add_option(
      "--type", flags->type, "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q6_K (default f32)");
  CLI::Option* first_layers = convert->add_option(
      "--first-layers", flags->first_layers,
      "GGUF IN -> GGUF OUT holding only layers 0..E-1 (with the final norm, head, embeddings, tokenizer and "
      "metadata; block_count = E; tensors copied as they are): an early-exit draft model");
  convert->add_option("files", flags->files, "IN OUT (with --first-layers; or -m IN -o OUT)");
  convert->callback([flags, type_flag, first_layers] {
    if (first_layers->count() > 0) {
      if (!flags->hf.empty()) fail("--first-layers takes a GGUF model, not --hf");
      if (type_flag->count() > 0) fail("--first-layers copies tensors as they are; --type does not apply");
      std::vector<std::string> files = flags->files;
      if (!flags->model.model.empty()) files.insert(files.begin(), flags->model.model);
      if (!flags->output.empty()) files.push_back(flags->output);
      if (files.size() != 2) fail("convert --first-layers E needs one input and one output: IN OUT");
      write_first_layers(files[0], files[1], flags->first_layers);
      std::fprintf(stderr, "wrote %s (layers 0..%d of %s)\n", files[1].c_str(), flags->first_layers - 1,
                   files[0].c_str());
      return;
    }
    if (!flags->files.empty()) fail("convert takes IN OUT arguments only with --first-layers (else -m and -o)");
    if (flags->output.empty()) fail("convert needs -o OUTPUT");
    if (!flags->hf.empty()) {
      if (!flags->model.model.empty()) fail("give the model with -m or --hf, not both");
      if (!std::filesystem::is_directory(flags->hf)) fail("--hf {}: not a folder", flags->hf);
      flags->model.model = flags->hf;
    }
    if (flags->model.model.empty()) fail("convert needs -m MODEL or --hf DIR");
    const DType type = parse_type_flag(flags->type);
    std::unique_ptr<Model> model = open_model(flags->model);
    save_model_gguf(*model, flags->output, type, [](int done, int total) { draw_progress("convert", done, total); });
    std::fprintf(stderr, "wrote %s (%s)\n", flags->output.c_str(), flags->type.c_str());
  });

  CLI::App* quantize = app.add_subcommand("quantize", "rewrite a model with another weight type: IN OUT TYPE");
  quantize->add_option("input", flags->in, "input model")->required();
  quantize->add_option("output", flags->out, "output GGUF file")->required();
  quantize->add_option("type", flags->type,
                        "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q6_K, or q4_k_m (llama.cpp's "
                        "Q4_K_M mix: Q6_K for the head and for attn_v / ffn_down of some layers, Q4_K elsewhere)")
      ->required();
  quantize->callback([flags] {
    std::optional<QuantScheme> scheme = parse_quant_scheme(flags->type);
    if (!scheme) fail("unknown tensor type '{}'", flags->type);
    std::unique_ptr<Model> model = load_model(flags->in);
    save_model_gguf(*model, flags->out, *scheme,
                    [](int done, int total) { draw_progress("quantize", done, total); });
    std::fprintf(stderr, "wrote %s (%s)\n", flags->out.c_str(), flags->type.c_str());
  });
}

}  // namespace skiff::cli

// skiff convert (llama2.c checkpoint or Hugging Face folder -> GGUF) and skiff quantize (GGUF ->
// GGUF of another type).
#include <cstdio>
#include <filesystem>

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

}  // namespace

void register_convert(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    std::string output, type = "f32";
    std::string in, out, hf;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* convert = app.add_subcommand(
      "convert", "convert a llama2.c checkpoint (+ tokenizer.bin) or a Hugging Face checkpoint folder to GGUF");
  add_model_flags(convert, flags->model, false);
  convert->add_option("--hf", flags->hf, "Hugging Face checkpoint folder (config.json + *.safetensors)");
  convert->add_option("-o,--output", flags->output, "output GGUF file")->required();
  convert->add_option("--type", flags->type,
                      "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q6_K (default f32)");
  convert->callback([flags] {
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

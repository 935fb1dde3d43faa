// skiff flash-pack: turns a GGUF model into a flash pack folder (resident.gguf + bundles.bin,
// see flash/pack.h) for LLM-in-a-Flash style inference that reads FFN rows from disk.
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "flash/pack.h"

namespace skiff::cli {
namespace {

std::optional<DType> parse_bundle_type(const std::string& name) {
  if (name.empty()) return std::nullopt;  // the model's own (F16 for quantized models)
  std::optional<DType> t = parse_dtype(name);
  if (!t || (*t != DType::F32 && *t != DType::F16 && *t != DType::BF16))
    fail("--type {}: bundles are f32, f16 or bf16", name);
  return t;
}

std::string mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", bytes / (1024.0 * 1024.0)); }

}  // namespace

void register_flash_pack(CLI::App& app) {
  struct Flags {
    std::string input, output, type, gate_type;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand(
      "flash-pack", "write a flash pack (resident.gguf + bundles.bin) of a GGUF model: IN -o DIR");
  cmd->add_option("input", flags->input, "input GGUF model")->required();
  cmd->add_option("-o,--output", flags->output, "output pack folder")->required();
  cmd->add_option("--type", flags->type,
                  "bundle type: f32, f16 or bf16 (default: the model's, f16 if quantized)");
  cmd->add_option("--gate-type", flags->gate_type,
                  "type of the resident gate copy, e.g. q8_0 (default: the model's)");
  cmd->callback([flags] {
    flash::PackOptions options;
    options.type = parse_bundle_type(flags->type);
    if (!flags->gate_type.empty()) {
      options.gate_type = parse_dtype(flags->gate_type);
      if (!options.gate_type) fail("--gate-type {}: unknown type", flags->gate_type);
    }
    if (std::filesystem::is_directory(flags->input))
      fail("{}: a folder, not a GGUF file (flash-pack needs one; for a Hugging Face checkpoint run "
           "skiff convert --hf {} -o MODEL.gguf first)", flags->input, flags->input);
    std::shared_ptr<MappedFile> file = MappedFile::open(flags->input);
    if (file->size() < 4 || std::memcmp(file->data(), "GGUF", 4) != 0)
      fail("{}: not a GGUF file (flash-pack needs one)", flags->input);
    LoadOptions load_options;
    load_options.pack_weights = false;  // the pack reads the file's own rows
    std::unique_ptr<Model> model = load_model_gguf(std::move(file), load_options);
    options.progress = [](int64_t done, int64_t total) {
      draw_progress("flash-pack", static_cast<int>(done), static_cast<int>(total));
    };
    flash::write_pack(*model, flags->output, options);
    const std::string bundles = flash::bundles_path(flags->output);
    flash::PackHeader h = flash::read_pack_header(bundles);
    uint64_t resident = std::filesystem::file_size(flash::resident_path(flags->output));
    std::printf(
        "wrote %s: resident.gguf %s, bundles.bin %s (%s, %d layers x %d bundles, stride %llu B)\n",
        flags->output.c_str(), mib(resident).c_str(), mib(h.file_bytes).c_str(),
        std::string(dtype_name(h.type)).c_str(), h.n_layers, h.ffn_dim,
        static_cast<unsigned long long>(h.stride));
  });
}

}  // namespace skiff::cli

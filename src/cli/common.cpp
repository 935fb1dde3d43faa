#include "cli/common.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "base/error.h"

extern "C" const uint8_t skiff_default_model_begin[];
extern "C" const uint8_t skiff_default_model_end[];
extern "C" const uint8_t skiff_reader_model_begin[];
extern "C" const uint8_t skiff_reader_model_end[];

namespace skiff::cli {

void add_kv_cache_flags(CLI::App* cmd, KvCacheFlags& flags) {
  const CLI::Validator kv_type(
      [](std::string& value) {
        return parse_kv_type(value) ? std::string() : "'" + value + "' is not a KV cache type (f32, f16 or q8_0)";
      },
      "f32|f16|q8_0");
  cmd->add_option("--cache-type-k", flags.type_k, "KV cache key type (alias -ctk): f32 (default), f16 or q8_0")
      ->check(kv_type);
  cmd->add_option("--cache-type-v", flags.type_v, "KV cache value type (alias -ctv): f32 (default), f16 or q8_0")
      ->check(kv_type);
}

KvTypes kv_types(const KvCacheFlags& flags) {
  std::optional<DType> k = parse_kv_type(flags.type_k), v = parse_kv_type(flags.type_v);
  if (!k) fail("'{}' is not a KV cache type (f32, f16 or q8_0)", flags.type_k);
  if (!v) fail("'{}' is not a KV cache type (f32, f16 or q8_0)", flags.type_v);
  return {*k, *v};
}

std::string describe_kv_cache(const ModelConfig& c, KvTypes types, int context) {
  const size_t per = KvCache::bytes_per_position(c.n_layers, c.kv_dim(), types);
  auto human = [](double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB"};
    int u = 0;
    while (b >= 1024 && u < 3) b /= 1024, ++u;
    return fmt::format("{:.2f} {}", b, units[u]);
  };
  return fmt::format("KV cache {}/{}: {} per position, {} for {} positions", dtype_name(types.k), dtype_name(types.v),
                     human(static_cast<double>(per)), human(static_cast<double>(per) * context), context);
}

void add_model_flags(CLI::App* cmd, ModelFlags& flags, bool with_threads) {
  cmd->add_option("-m,--model", flags.model,
                  fmt::format("model: a GGUF file, a llama2.c checkpoint or a Hugging Face checkpoint folder "
                              "(config.json + *.safetensors) (default: the built-in {})",
                              flags.builtin == BuiltinModel::kReader ? "stories3M-reader" : "stories3M-layerskip"));
  cmd->add_option("--tokenizer", flags.tokenizer, "tokenizer.bin for a llama2.c checkpoint");
  cmd->add_flag("--no-mmap", flags.no_mmap,
                "copy the weights into transparent huge pages instead of mapping the file (one copy in "
                "RAM: the file's page cache is dropped); faster where TLB misses are costly");
  if (with_threads)
    cmd->add_option("-t,--threads", flags.threads, "threads (default: one per core)")
        ->check(CLI::Range(0, 1024));
}

std::unique_ptr<Model> open_model(const ModelFlags& flags) {
  if (!flags.model.empty())
    return load_model(flags.model, flags.tokenizer, flags.no_mmap ? Residency::kHugePages : Residency::kMapped,
                      flags.pack);
  if (!flags.tokenizer.empty()) fail("--tokenizer needs -m (the built-in model has its tokenizer)");
  if (flags.builtin == BuiltinModel::kReader) {
    std::span<const uint8_t> bytes(skiff_reader_model_begin,
                                   static_cast<size_t>(skiff_reader_model_end - skiff_reader_model_begin));
    return load_model_gguf(MappedFile::borrow(bytes, "<built-in stories3M-reader>"));
  }
  std::span<const uint8_t> bytes(skiff_default_model_begin,
                                 static_cast<size_t>(skiff_default_model_end - skiff_default_model_begin));
  return load_model_gguf(MappedFile::borrow(bytes, "<built-in stories3M-layerskip>"));
}

bool is_gguf_file(const std::string& path) {
  if (path.empty()) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string(magic, 4) == "GGUF";
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string read_prompt(const std::string& text, const std::string& file) {
  if (!text.empty() && !file.empty()) fail("give the prompt with -p or -f, not both");
  return file.empty() ? text : read_text_file(file);
}

void draw_progress(const char* label, int done, int total) {
  // On a terminal the bar is redrawn in place; into a file or pipe, a line per 10%.
  static const bool tty = isatty(fileno(stderr)) != 0;
  if (!tty) {
    if (total > 0 && done * 10 / total != (done - 1) * 10 / total)
      std::fprintf(stderr, "%s %d/%d\n", label, done, total);
    return;
  }
  constexpr int kWidth = 30;
  int filled = total > 0 ? done * kWidth / total : kWidth;
  std::string bar(static_cast<size_t>(filled), '=');
  if (filled < kWidth) bar += '>';
  bar.resize(kWidth, ' ');
  std::fprintf(stderr, "\r%s [%s] %d/%d", label, bar.c_str(), done, total);
  if (done >= total) std::fputc('\n', stderr);
  std::fflush(stderr);
}

}  // namespace skiff::cli

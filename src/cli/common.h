// Pieces every `skiff` subcommand shares: the model flags (with the linked-in default model),
// prompt input, and a progress bar on stderr.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "model/kv_cache.h"
#include "model/model.h"

namespace skiff::cli {

// The models linked into the binary: the default of every command, and the reader trained
// for memory-augmented generation (the default of `skiff memory`).
enum class BuiltinModel { kDefault, kReader };

struct ModelFlags {
  BuiltinModel builtin = BuiltinModel::kDefault;  // what an empty `model` opens
  std::string model;      // empty: the built-in model
  std::string tokenizer;  // llama2.c checkpoints only
  int threads = 0;        // 0: one per core
  bool no_mmap = false;   // copy the weights into huge pages instead of mapping the file
  bool pack = true;       // not a flag: pipeline stages load unpacked (start_pipeline packs their layers)
};

// Adds -m/--model, --tokenizer, --no-mmap and (when with_threads) -t/--threads to `cmd`.
void add_model_flags(CLI::App* cmd, ModelFlags& flags, bool with_threads = true);
std::unique_ptr<Model> open_model(const ModelFlags& flags);
// True when `path` names a file that starts with the GGUF magic ("" is the built-in model:
// false, it is opened with open_model).
bool is_gguf_file(const std::string& path);

// --cache-type-k / --cache-type-v (llama.cpp's -ctk / -ctv): the KV cache's element types.
struct KvCacheFlags {
  std::string type_k = "f32", type_v = "f32";
};
// Adds the two flags (values f32, f16, q8_0; anything else is a one-line usage error).
void add_kv_cache_flags(CLI::App* cmd, KvCacheFlags& flags);
KvTypes kv_types(const KvCacheFlags& flags);
// "KV cache f16/f16: 16.00 KiB per position, 64.00 MiB for 4096 positions".
std::string describe_kv_cache(const ModelConfig& config, KvTypes types, int context);

// The prompt from -p TEXT or -f FILE (exactly one may be given; neither gives "").
std::string read_prompt(const std::string& text, const std::string& file);
std::string read_text_file(const std::string& path);

// A one-line progress bar redrawn on stderr: "label [=====>    ] 12/40".
void draw_progress(const char* label, int done, int total);

}  // namespace skiff::cli

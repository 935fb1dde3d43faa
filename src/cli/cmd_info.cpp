// skiff info: what a model file (or a flash pack folder) holds and what running it costs.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "bench/system.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "flash/flash_run.h"
#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "model/rope.h"

namespace skiff::cli {
namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.2f} {}", b, units[u]);
}

size_t mapped_resident_bytes(const std::vector<std::shared_ptr<MappedFile>>& files) {
  size_t n = 0;
  for (const auto& f : files) n += resident_bytes_of(f->data(), f->size());
  return n;
}

void print_tensor(const TensorView& t) {
  std::printf("  %-28s %-6s [%lld, %lld] %zu bytes\n", t.name.c_str(),
              std::string(dtype_name(t.type)).c_str(), static_cast<long long>(t.cols),
              static_cast<long long>(t.rows), t.nbytes());
}

// A flash pack: the bundle file, the resident model, the predictors and the smallest budgets.
void print_pack_info(const std::string& dir, int context) {
  flash::LoadedPack pack = flash::load_pack(dir);
  const flash::PackHeader& h = pack.header;
  const Model& m = *pack.model;
  std::printf("flash pack: %s\n", dir.c_str());
  std::printf("bundles.bin: %s, %d layers x %d neurons, %s bundles [up | down | gate] of %llu B (stride %llu B)\n",
              human_bytes(static_cast<double>(h.file_bytes)).c_str(), h.n_layers, h.ffn_dim,
              std::string(dtype_name(h.type)).c_str(), static_cast<unsigned long long>(3 * h.row_bytes),
              static_cast<unsigned long long>(h.stride));
  const ModelConfig& c = m.config;
  std::printf("resident.gguf: %s; dim %d, layers %d, heads %d, kv heads %d, ffn %d (%s), vocab %d, context %d\n",
              human_bytes(static_cast<double>(std::filesystem::file_size(flash::resident_path(dir)))).c_str(), c.dim,
              c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_dim, ffn_activation_name(c.ffn_activation), c.vocab_size,
              c.context_length);
  std::printf("dense model: %s\n", human_bytes(static_cast<double>(flash::dense_model_bytes(m, h))).c_str());
  std::unique_ptr<flash::Predictors> predictors;
  if (std::filesystem::exists(flash::predictors_path(dir))) {
    predictors = std::make_unique<flash::Predictors>(
        flash::load_predictors(flash::predictors_path(dir), h.n_layers, h.dim, h.ffn_dim));
    std::printf("predictors.gguf: %s, label threshold %g\n", human_bytes(static_cast<double>(predictors->bytes())).c_str(),
                static_cast<double>(predictors->label_threshold));
    for (size_t l = 0; l < predictors->layers.size(); ++l) {
      const flash::LayerPredictor& p = predictors->layers[l];
      std::printf("  layer %zu: rank %d, cutoff %.3f, held-out recall %.2f%%, precision %.1f%%\n", l, p.rank,
                  static_cast<double>(p.cutoff), 100.0 * p.recall, 100.0 * p.precision);
    }
  } else {
    std::printf("predictors.gguf: none (skiff flash-train-predictor makes them)\n");
  }
  const uint64_t ctx_bytes = flash::context_bytes(c, context, 1, ThreadPool::default_thread_count());
  flash::FlashOptions threshold;
  std::printf("smallest --mem-budget at context %d: %s (gate threshold)",
              context > 0 ? context : c.context_length,
              flash::format_bytes(flash::plan_memory(m, h, threshold, 0, ctx_bytes).minimum).c_str());
  if (predictors) {
    flash::FlashOptions predict;
    predict.mode = flash::FlashOptions::Mode::kPredictor;
    predict.predictors = predictors.get();
    std::printf(", %s (--flash-predict)", flash::format_bytes(flash::plan_memory(m, h, predict, 0, ctx_bytes).minimum).c_str());
  }
  std::printf("\n");
}

}  // namespace

void register_info(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    int context = 0;
    KvCacheFlags kv;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("info", "print a model's (or a flash pack's) metadata, tensors and memory needs");
  add_model_flags(cmd, flags->model, false);
  cmd->add_option("-c,--ctx-size", flags->context, "context length for the memory estimate (default: the model's, at most 4096)");
  add_kv_cache_flags(cmd, flags->kv);
  cmd->callback([flags] {
    // A folder is a flash pack when it has bundles.bin or resident.gguf, else a Hugging Face checkpoint.
    const std::string& path = flags->model.model;
    if (!path.empty() && std::filesystem::is_directory(path) &&
        (std::filesystem::exists(flash::bundles_path(path)) || std::filesystem::exists(flash::resident_path(path)))) {
      print_pack_info(flags->model.model, flags->context);
      return;
    }
    std::unique_ptr<Model> model = open_model(flags->model);
    const ModelConfig& c = model->config;
    std::printf("file: %s (%s)\n", model->source.c_str(), model->format.c_str());
    if (model->gguf) {
      std::printf("gguf version %u, alignment %llu, %zu metadata keys, %zu tensors\n", model->gguf->version(),
                  static_cast<unsigned long long>(model->gguf->alignment()), model->gguf->metadata().size(),
                  model->gguf->tensors().size());
      std::printf("metadata:\n");
      for (const auto& [key, value] : model->gguf->metadata())
        std::printf("  %s = %s\n", key.c_str(), value.to_display_string().c_str());
    }
    if (model->format == "hf") {
      std::printf("hugging face checkpoint, %zu safetensors file%s:\n", model->shards.size(),
                  model->shards.size() == 1 ? "" : "s");
      for (const auto& shard : model->shards)
        std::printf("  %s %s\n", shard->name().c_str(), human_bytes(static_cast<double>(shard->size())).c_str());
    }
    std::printf("hyper-parameters:\n");
    std::printf("  dim %d, layers %d, heads %d, kv heads %d, head dim %d, ffn %d, vocab %d\n", c.dim,
                c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size);
    std::printf("  context %d, rope dims %d, rope base %g, rms eps %g, output %s\n", c.context_length,
                c.rope_dim, c.rope_theta, c.rms_eps, model->tied_output ? "tied to token_embd" : "separate");
    std::printf("  rope scaling %s (factor %g, original context %d), %zu rope_freqs divisors, %s pairs\n",
                rope_scaling_name(c.rope_scaling.type), c.rope_scaling.factor, c.rope_scaling.original_context,
                c.rope_freq_factors.size(), c.rope_layout == RopeLayout::kHalves ? "rotate-half" : "interleaved");
    std::printf("tensors:\n");
    print_tensor(model->token_embd);
    print_tensor(model->output_norm);
    if (!model->tied_output) print_tensor(model->output);
    // The weight types of the matrix products (not the norms, not an untied embedding), for
    // how each treats its input on this CPU (accuracy).
    std::vector<DType> types;
    auto note_type = [&](const TensorView& t) {
      const bool vector = t.rows == 1;  // a norm's weights
      if (!vector && std::find(types.begin(), types.end(), t.type) == types.end()) types.push_back(t.type);
    };
    note_type(model->tied_output ? model->token_embd : model->output);
    for (const LayerWeights& l : model->layers) {
      for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.ffn_gate,
                                  &l.ffn_up, &l.ffn_down}) {
        print_tensor(*t);
        note_type(*t);
      }
    }
    std::string inputs;
    for (DType t : types) {
      const int64_t block = matmul_input_block(t);
      inputs += fmt::format("{}{} {}", inputs.empty() ? "" : ", ", dtype_name(t),
                            block                   ? fmt::format("8-bit/{}", block)
                            : matmul_input_bf16(t) ? std::string("bf16")
                                                   : std::string("float"));
    }
    std::printf("cpu path %s; matmul inputs: %s\n", std::string(cpu_path_name(active_cpu_path())).c_str(),
                inputs.c_str());
    int ctx = flags->context > 0 ? flags->context : std::min(c.context_length, Context::kDefaultContext);
    double weights = static_cast<double>(model->weight_bytes());
    const KvTypes kv_type = kv_types(flags->kv);
    double kv = static_cast<double>(KvCache::bytes_per_position(c.n_layers, c.kv_dim(), kv_type)) * ctx;
    double scratch = 4.0 * (4.0 * c.dim + 2.0 * c.ffn_dim + c.vocab_size);
    std::printf("parameters: %lld\n", static_cast<long long>(model->parameter_count()));
    std::vector<std::shared_ptr<MappedFile>> files = model->shards;
    if (files.empty() && model->file) files.push_back(model->file);
    const bool copied = !files.empty() && files.front()->copied();
    std::printf("memory: weights %s (%s) + kv cache %s at context %d + scratch %s = %s\n",
                human_bytes(weights).c_str(), copied ? "copied into huge pages, --no-mmap" : "memory-mapped",
                human_bytes(kv).c_str(), ctx, human_bytes(scratch).c_str(), human_bytes(weights + kv + scratch).c_str());
    // What each cache type would take (-ctk/-ctv); q8_0 needs head slices of whole blocks.
    std::string others;
    for (DType t : {DType::F32, DType::F16, DType::Q8_0}) {
      if (c.head_dim % traits(t).block_size != 0) continue;
      others += fmt::format("{}{} {}/token", others.empty() ? "" : ", ", dtype_name(t),
                            human_bytes(static_cast<double>(KvCache::bytes_per_position(c.n_layers, c.kv_dim(), {t, t}))));
    }
    std::printf("%s (k and v alike: %s)\n", describe_kv_cache(c, kv_type, ctx).c_str(), others.c_str());
    // Weights are used in place from the mapping: only what has been read is resident.
    std::printf("resident: %s now (%s of the %s)\n",
                human_bytes(static_cast<double>(resident_bytes())).c_str(),
                human_bytes(static_cast<double>(mapped_resident_bytes(files))).c_str(),
                copied ? "copied file" : "mapped file paged in");
  });
}

}  // namespace skiff::cli

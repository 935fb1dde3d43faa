// skiff perplexity: llama.cpp-comparable perplexity of a text file, from a model or from a
// flash pack (--flash: FFN neurons streamed from disk, as generate --flash runs them).
#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/flash_flags.h"
#include "cli/stage_flags.h"
#include "eval/perplexity.h"

namespace skiff::cli {

void register_perplexity(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    FlashFlags flash;
    std::string file;
    int context = 512;
    int chunks = 0;
    std::string format = "text";
    KvCacheFlags kv;
    StageFlags stages;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("perplexity", "perplexity of a text file (llama.cpp's method)");
  add_model_flags(cmd, flags->model);
  add_flash_flags(cmd, flags->flash);
  add_kv_cache_flags(cmd, flags->kv);
  add_stage_flags(cmd, flags->stages);
  cmd->add_option("-f,--file", flags->file, "text file")->required();
  cmd->add_option("-c,--ctx-size", flags->context, "tokens per chunk (default 512)");
  cmd->add_option("--chunks", flags->chunks, "score at most this many chunks (default: all)");
  cmd->add_option("-o,--output", flags->format, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([flags, cmd] {
    const flash::FlashOptions flash_opts = flash_options(flags->flash, *cmd);
    std::unique_ptr<Model> owned;
    std::unique_ptr<flash::FlashRun> flash_run;
    if (!flags->flash.pack.empty()) {
      if (!flags->model.model.empty()) fail("give -m or --flash, not both (a pack holds its model)");
      const int threads = flags->model.threads > 0 ? flags->model.threads : ThreadPool::default_thread_count();
      flash_run = flash::open_flash(flash::load_pack(flags->flash.pack), flash_opts, flags->flash.budget,
                                    flags->context, flags->context, threads);
      std::fprintf(stderr, "%s\n", describe_plan(*flash_run).c_str());
    } else {
      flags->model.pack = !stages_requested(*cmd);  // stages pack only their own layers
      owned = open_model(flags->model);
    }
    const Model& model = flash_run ? flash_run->model() : *owned;
    // Pipeline stages (mpirun): rank 0 reads and scores the text, the others run their layers.
    if (flash_run && stages_requested(*cmd)) fail("--flash does not run in pipeline stages (yet)");
    std::unique_ptr<dist::Pipeline> pipeline =
        owned ? start_pipeline(flags->stages, *cmd, *owned, flags->context, flags->model.threads, 0, kv_types(flags->kv))
              : nullptr;
    if (pipeline && !pipeline->head()) {
      pipeline->serve();
      return;
    }
    std::string text = read_text_file(flags->file);
    std::vector<int32_t> tokens = model.tokenizer->encode(text, true);
    auto progress = [](int done, int total) { draw_progress("perplexity", done, total); };
    std::unique_ptr<Context> ctx = pipeline ? pipeline->make_context() : nullptr;
    PerplexityResult r = ctx ? perplexity(*ctx, tokens, flags->context, flags->chunks, progress)
                             : perplexity(model, tokens, flags->context, flags->model.threads, flags->chunks,
                                          progress, flash_run ? flash_run->ffn.get() : nullptr, kv_types(flags->kv));
    if (pipeline) std::fprintf(stderr, "%s\n", pipeline->finish(static_cast<int64_t>(r.chunks) * flags->context).c_str());
    if (flash_run) std::fprintf(stderr, "%s\n", describe_stats(flash_run->ffn->stats()).c_str());
    if (flags->format == "json")
      std::printf("{\"ppl\": %.6f, \"ppl_err\": %.6f, \"tokens\": %lld, \"chunks\": %d, \"ctx\": %d}\n", r.ppl,
                  r.ppl_err, static_cast<long long>(r.tokens), r.chunks, flags->context);
    else
      std::printf("PPL = %.4f +/- %.4f (%lld tokens scored in %d chunks of %d)\n", r.ppl, r.ppl_err,
                  static_cast<long long>(r.tokens), r.chunks, flags->context);
  });
}

}  // namespace skiff::cli

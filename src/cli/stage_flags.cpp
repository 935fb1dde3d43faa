#include "cli/stage_flags.h"

#include "base/error.h"

namespace skiff::cli {

void add_stage_flags(CLI::App* cmd, StageFlags& flags) {
  cmd->add_option("--stages", flags.stages,
                  "pipeline stages under mpirun -np S: 'auto' splits the layers evenly over the ranks");
  cmd->add_option("--stage-layers", flags.stage_layers,
                  "pipeline stages by hand: each rank's layers, e.g. 0:6,6:16 (one range per rank)");
  cmd->add_option("--sim-link", flags.sim_link,
                  "simulate a link between stages: BANDWIDTH,LATENCY, e.g. 1Gbit,200us (a sleep before each send)");
  cmd->add_option("--stage-timeout", flags.timeout_seconds,
                  "seconds a rank waits for another before the job ends with an error (default 60)");
}

std::unique_ptr<dist::Pipeline> start_pipeline(const StageFlags& flags, const CLI::App& cmd, Model& model,
                                               int context_length, int threads, int keep_on_first,
                                               KvTypes kv_types, int sequences, std::unique_ptr<dist::Link> link) {
  const bool wanted = stages_requested(cmd);
  int ranks = 1;
  if (!wanted) {
    if (dist::launched_by_mpi(ranks) && ranks > 1)
      fail("started by mpirun with {} ranks: give --stages auto or --stage-layers to split the model", ranks);
    if (cmd.count("--sim-link") > 0 || cmd.count("--stage-timeout") > 0)
      fail("--sim-link and --stage-timeout need --stages or --stage-layers");
    return nullptr;
  }
  dist::PipelineOptions options;
  options.stages = flags.stages;
  options.stage_layers = flags.stage_layers;
  options.sim_link = flags.sim_link;
  options.timeout_seconds = flags.timeout_seconds;
  options.keep_on_first = keep_on_first;
  options.context_length = context_length;
  options.threads = threads;
  options.kv_types = kv_types;
  options.sequences = sequences;
  auto pipeline = std::make_unique<dist::Pipeline>(link ? std::move(link) : dist::open_mpi_link(), model, options);
  const dist::LayerRange mine = pipeline->plan().ranges[static_cast<size_t>(pipeline->rank())];
  pack_weights(model, memory_headroom(), mine.first, mine.last, pipeline->head());
  return pipeline;
}

bool stages_requested(const CLI::App& cmd) { return cmd.count("--stages") > 0 || cmd.count("--stage-layers") > 0; }

}  // namespace skiff::cli

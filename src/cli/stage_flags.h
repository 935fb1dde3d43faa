// The pipeline-stage flags (docs/DISTRIBUTED.md) of the commands that run under
// `mpirun -np S`: --stages, --stage-layers, --sim-link, --stage-timeout.
#pragma once

#include <memory>

#include <CLI/CLI.hpp>

#include "dist/pipeline.h"

namespace skiff::cli {

struct StageFlags {
  std::string stages, stage_layers, sim_link;
  double timeout_seconds = 60;
};

void add_stage_flags(CLI::App* cmd, StageFlags& flags);

// nullptr when no stage flag was given (Error when the process was nevertheless started
// by mpirun with several ranks: each would run the whole command); otherwise joins the MPI
// job and agrees on the plan (dist::Pipeline). Rank 0 then decodes in make_context(); the
// other ranks serve().
// `sequences`: decoded at once (a server's slots); `link`: the job already joined (serve
// joins before it loads the model, to know whether it is rank 0), else joined here.
// The model should be loaded unpacked (ModelFlags::pack = false): each rank packs only its
// own layers (and rank 0 the head) once the plan is agreed.
std::unique_ptr<dist::Pipeline> start_pipeline(const StageFlags& flags, const CLI::App& cmd, Model& model,
                                               int context_length, int threads, int keep_on_first,
                                               KvTypes kv_types = {}, int sequences = 1,
                                               std::unique_ptr<dist::Link> link = nullptr);

// --stages or --stage-layers given.
bool stages_requested(const CLI::App& cmd);

}  // namespace skiff::cli

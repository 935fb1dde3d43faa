// Pipeline stages (docs/DISTRIBUTED.md): a model's layers split over the ranks of an MPI job.
// Rank 0 (stage 0) owns the tokenizer, embeddings, its own layers, the head and sampling;
// every other rank runs its layers on the hidden states it receives and passes them on; the
// last stage's states return to rank 0.
//
// The decode loops do not know: stage 0's Context stores only its own layers and hands
// forward()'s later layers to the Pipeline (model/forward.h's RemoteLayers). A message
// carries hidden states for T positions and the position of the first; a stage first cuts
// its own cache back to that position, so a rejected speculative draft (the verifier's
// truncate_all on stage 0) needs no message of its own. With --self-spec E, layers 0..E-1
// stay on stage 0 and drafting sends nothing; verification flows through the stages.
//
// Every rank maps the whole file but touches only its own tensors (weights are views into
// the mapping) and sizes its KV cache for its own layers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "dist/link.h"
#include "dist/stage_plan.h"
#include "model/fingerprint.h"
#include "model/forward.h"

namespace skiff::dist {

struct PipelineOptions {
  std::string stages;        // --stages: "auto" or the number of ranks; empty: stage_layers
  std::string stage_layers;  // --stage-layers "0:6,6:16"
  std::string sim_link;      // --sim-link "1Gbit,200us"; empty: off
  double timeout_seconds = 60;
  int keep_on_first = 0;     // layers 0..keep_on_first-1 must be on stage 0 (--self-spec E)
  int context_length = 0;    // as Context's (0: the model's, at most Context::kDefaultContext)
  int threads = 0;
  KvTypes kv_types;          // every stage's KV cache element types
};


class Pipeline : public RemoteLayers {
 public:
  // Joins the job through `link`: every rank sends rank 0 its model's fingerprint, rank 0
  // checks them (Error naming the rank whose model differs), places the stages and sends
  // the plan and context length. Error on bad flags or when a rank does not answer in time.
  Pipeline(std::unique_ptr<Link> link, const Model& model, const PipelineOptions& options);

  bool head() const { return link_->rank() == 0; }
  int rank() const { return link_->rank(); }
  const StagePlan& plan() const { return plan_; }
  Link& link() { return *link_; }

  // Stage 0: the context to decode in (stores stage 0's layers; the rest run remotely).
  std::unique_ptr<Context> make_context();
  // Stages 1..: run layers for messages until stage 0 says stop.
  void serve();
  // Stage 0: stops the other stages and gathers their counts; returns a one-line summary
  // ("pipeline: ..."), bytes per token counted over `tokens` (prompt + generated).
  std::string finish(int64_t tokens);

  void run(Context& ctx, float* hidden, int64_t T, int first_layer, int last_layer) override;

 private:
  int stage_of(int layer) const;

  std::unique_ptr<Link> link_;
  const Model& model_;
  PipelineOptions options_;
  StagePlan plan_;
  int context_length_ = 0;
  std::unique_ptr<Context> ctx_;  // a worker's
  std::vector<uint8_t> buffer_;
  double remote_seconds_ = 0;     // stage 0: waiting for the later stages (their compute + links)
  int64_t forwards_ = 0;
};

}  // namespace skiff::dist

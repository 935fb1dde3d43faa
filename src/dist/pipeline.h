// Pipeline stages (docs/DISTRIBUTED.md): a model's layers split over the ranks of an MPI job.
// Several batches of different sequences can be in flight at once (a server's micro-batches:
// stage 0 computes one while later stages compute others); each stage keeps a KV cache per
// sequence.
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
#include <map>
#include <memory>
#include <string>

#include "dist/link.h"
#include "dist/stage_plan.h"
#include "model/fingerprint.h"
#include "model/forward.h"

namespace skiff::dist {

struct PipelineOptions {
  std::string stages;        // --stages: "auto" (by free memory) or the number of ranks (even by count); empty: stage_layers
  std::string stage_layers;  // --stage-layers "0:6,6:16"
  std::string sim_link;      // --sim-link "1Gbit,200us"; empty: off
  double timeout_seconds = 60;
  int keep_on_first = 0;     // layers 0..keep_on_first-1 must be on stage 0 (--self-spec E)
  int context_length = 0;    // as Context's (0: the model's, at most Context::kDefaultContext)
  int threads = 0;
  int sequences = 1;         // sequences decoded at once (a server's slots): each stage keeps a cache per sequence
  KvTypes kv_types;          // every stage's KV cache element types
};

class Pipeline : public RemoteLayers {
 public:
  // Joins the job through `link`: every rank sends rank 0 its model's fingerprint and free
  // memory, rank 0 checks them (Error naming the rank whose model differs), places the
  // stages and sends the plan. Error on bad flags or when a rank does not answer in time.
  Pipeline(std::unique_ptr<Link> link, const Model& model, const PipelineOptions& options);

  bool head() const { return link_->rank() == 0; }
  int rank() const { return link_->rank(); }
  const StagePlan& plan() const { return plan_; }
  Link& link() { return *link_; }
  int context_length() const { return context_length_; }

  // Stage 0: the context of sequence `seq` (0 <= seq < options.sequences), storing stage
  // 0's layers; the rest run remotely. `pool`: a thread pool shared with the other
  // sequences' contexts (forward_batch needs one), else its own of options.threads.
  std::unique_ptr<Context> make_context(int seq = 0, ThreadPool* pool = nullptr);
  // Stages 1..: run layers for messages until stage 0 says stop. `idle_forever`: a server's
  // stages, which may wait for the next request without end (a dead rank 0 ends the job
  // through mpirun); otherwise twice the timeout.
  void serve(bool idle_forever = false);
  // Stage 0: waits for batches still in flight, stops the other stages and gathers their
  // counts; returns a one-line summary ("pipeline: ..."), bytes per token counted over
  // `tokens` (prompt + generated).
  std::string finish(int64_t tokens);

  int64_t submit(std::span<const BatchSeq> seqs, const float* hidden, int first_layer, int last_layer) override;
  void wait(int64_t ticket, std::span<const BatchSeq> seqs, float* hidden) override;
  void copy_prefix(const Context& from, Context& to, int n) override;

 private:
  struct Flight {
    int first = 0, last = 0;
    int last_stage = 0;                         // whose answer it is
    std::vector<std::pair<int, int64_t>> seqs;  // (sequence, rows)
  };
  int stage_of(int layer) const;
  int seq_of(const Context& ctx) const;
  void place(const std::vector<double>& free_bytes);
  void serve_forward(Message& m);
  void serve_copy(const Message& m);
  Context& worker_context(int seq);

  std::unique_ptr<Link> link_;
  const Model& model_;
  PipelineOptions options_;
  StagePlan plan_;
  int context_length_ = 0;
  int sequences_ = 1;
  std::vector<uint8_t> buffer_;
  // Stage 0.
  std::vector<std::pair<const Context*, int>> seq_ids_;
  std::map<int64_t, Flight> in_flight_;
  std::map<int64_t, Message> arrived_;  // results that came while waiting for another
  int64_t next_ticket_ = 0;
  double wait_seconds_ = 0;  // blocked in wait(): the later stages' compute and links not hidden
  // Stages 1..
  std::unique_ptr<ThreadPool> pool_;
  std::vector<std::unique_ptr<Context>> contexts_;  // per sequence, made on first use
  std::vector<float> hidden_;
  int64_t forwards_ = 0;
  double compute_seconds_ = 0;
};

}  // namespace skiff::dist

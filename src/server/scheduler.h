// Continuous batching over a fixed set of slots. Each slot is one sequence with its own KV
// cache (a Context sharing the server's thread pool). One thread runs the model: every step
// it gathers, for each busy slot, the tokens not yet in its cache (one for a decoding
// sequence, a chunk of the prompt for a new one), runs them all in ONE forward pass
// (forward_batch: each weight matrix is read once per step, whatever the number of
// clients), samples the sequences whose rows are all in, and pushes their text to the tasks.
//
// Prefix reuse: a slot keeps its tokens and cache after its request ends; a new sequence
// goes to the free slot sharing the longest prefix with its prompt and prefills only the
// rest (a chat's next turn re-reads nothing of its history). n > 1 prefills the prompt once
// and copies its KV into the other choices' slots.
//
// Speculative sequences (self-speculation, lookup, a draft model) draft their round before
// the pass, and the pass verifies the drafts with everyone else's rows: self-speculation's
// rows enter at the exit layer their drafts reached (forward_batch_entering), so the late
// layers, too, are read once per step for every sequence. Self-speculating sequences draft
// in lockstep: each draft step of all of them is one batched pass over the early layers
// (forward_batch_leaving) and one early-head pass.
//
// Pipeline stages: slots form micro-batch groups that take turns; a group's step sends its
// batch on to the later stages and the group's next turn waits for it, so stage 0 and the
// later stages work on different groups at once.
//
// The queue is bounded (submit() says no, the server answers 429); a cancelled task (client
// gone, deadline passed) frees its slots at the next step.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/thread_pool.h"
#include "decode/early_exit_drafter.h"
#include "decode/speculative.h"
#include "model/forward.h"
#include "sample/json_constraint.h"
#include "server/task.h"

namespace skiff::server {

struct SchedulerOptions {
  int slots = 1;
  int context_length = 0;  // per slot; 0: the model's (at most Context::kDefaultContext)
  int threads = 0;
  int batch_rows = 256;    // most rows (tokens) in one forward pass: bounds prefill chunks
  int max_queue = 64;      // tasks waiting for slots
  const Model* draft_model = nullptr;  // for requests asking for draft-model speculation
  std::shared_ptr<const DraftHead> draft_head;  // self-spec requests' early head (null: the model's)
  KvTypes kv_types;                    // every slot's KV cache (default F32)
  // Pipeline stages (src/dist/): makes slot i's context, whose later layers run in other
  // processes; null: every layer here.
  std::function<std::unique_ptr<Context>(int slot, ThreadPool& pool)> make_context;
  // Slots are split into this many groups (slot i in group i % micro_batches) whose passes
  // overlap: while the later stages run one group's batch, stage 0 runs the next group's
  // layers. 1: one batch per step, waited for.
  int micro_batches = 1;
};

struct SchedulerStats {
  int64_t requests = 0;          // tasks finished
  int64_t prompt_tokens = 0;     // prefilled
  int64_t cached_tokens = 0;     // reused from a slot's cache
  int64_t generated_tokens = 0;
  int64_t steps = 0;
  // Speculative sequences (counted when each ends): rounds, drafts proposed, drafts accepted.
  int64_t spec_rounds = 0;
  int64_t draft_tokens = 0;
  int64_t draft_accepted = 0;
  double busy_seconds = 0;       // in forward passes and sampling
  int queue_depth = 0;
  int slots_busy = 0;
  int slots = 0;
  int64_t kv_used = 0;           // positions held in all slots' caches
  int64_t kv_capacity = 0;
};

class Scheduler {
 public:
  Scheduler(const Model& model, const SchedulerOptions& options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a task; false when the queue is full. A task needing more slots than exist is the
  // caller's error (request parsing caps n).
  bool submit(std::shared_ptr<Task> task);
  // Lets running and queued tasks finish for at most `grace`, then cancels what is left and
  // stops the model thread.
  void shutdown(std::chrono::milliseconds grace);

  SchedulerStats stats() const;
  int context_length() const { return context_length_; }
  int slots() const { return static_cast<int>(slots_.size()); }
  bool has_draft_model() const { return options_.draft_model != nullptr; }

 private:
  struct Slot;
  // A group's batched pass whose later layers are still in other pipeline stages.
  struct Flight {
    bool active = false;
    int64_t ticket = kNoTicket;
    std::vector<BatchSeq> seqs;
    std::vector<Slot*> in_batch;
    std::vector<float> hidden;
  };
  void loop();
  void admit();
  // A memory request's BOS and spliced entries into its slot's cache, each entry's last
  // tokens prefilled for "recompute" (throws Error); returns the positions read from the store.
  int splice_memory(Slot& slot, const GenerationRequest& r);
  // One turn of group `group` (every slot with one group): ends its batch in flight, frees
  // ended tasks' slots, drafts speculative slots' rounds, runs the next batch, whose pass
  // verifies the drafts (pipeline stages: the rounds run after it, on their own).
  void step(int group);
  // The part of a step after the batched pass: logits, sampling, embeddings. Returns the
  // prompt rows it read.
  int64_t finish_batch(Flight& flight);
  void release(Slot& slot);
  void finish(Slot& slot, const char* reason);
  void sample_and_emit(Slot& slot, const float* logits);
  void emit_token(Slot& slot, int32_t token, const float* logits);
  // Appends a generated token's text (stop strings held back); true when a stop string matched.
  bool push_text(Slot& slot, int32_t token, const float* logits);
  // A speculating slot: its task asks for speculation (and is a generation).
  bool speculative(const Slot& slot) const;
  // Its drafter and run, once the batched pass has prefilled its prompt but the newest token.
  void start_spec(Slot& slot);
  // Its run has ended: finish the sequence.
  void end_spec(Slot& slot);
  // Its prompt is in (all but the newest token) and its group's turn has come.
  bool spec_ready(const Slot& slot, int group) const;
  // Every ready speculating slot of `group` drafts its round (self-speculating ones in
  // lockstep); returns them with their verification, ordered by entry layer. None with
  // pipeline stages.
  std::vector<Slot*> draft_rounds(int group);
  // Pipeline stages: each ready speculating slot runs a whole round on its own.
  void remote_rounds(int group, int64_t& prompt_rows, int64_t& busy);
  // Self-speculating slots' proposals (begun), drafted together: each draft step of all of
  // them in one batched pass over the early layers and one early-head pass.
  void draft_in_lockstep(const std::vector<Slot*>& slots);

  const Model& model_;
  const SchedulerOptions options_;
  int context_length_ = 0;
  ThreadPool pool_;
  std::vector<std::unique_ptr<Slot>> slots_;

  mutable std::mutex mutex_;  // queue_, stats_, stopping_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Task>> queue_;
  SchedulerStats stats_;
  bool stopping_ = false;
  std::atomic<bool> drain_deadline_passed_{false};

  // Model thread only: counters published into stats_ after each step, step buffers.
  int64_t finished_tasks_ = 0, generated_ = 0;
  int64_t spec_rounds_ = 0, draft_tokens_ = 0, draft_accepted_ = 0;
  std::vector<int32_t> rows_;
  std::vector<Flight> flights_;  // per group
  std::vector<float> last_hidden_, spec_hidden_, logits_, biased_;
  std::vector<int> entry_layers_, exit_layers_;
  std::vector<int32_t> draft_rows_;
  std::vector<BatchSeq> draft_seqs_;
  std::vector<float> draft_hidden_, head_states_, draft_logits_;
  std::unique_ptr<JsonTokenMask> json_mask_;  // built at the first response_format request
  int64_t side_prompt_rows_ = 0;  // prompt rows prefilled outside the batched pass (a memory's BOS)
  std::thread thread_;
};

}  // namespace skiff::server

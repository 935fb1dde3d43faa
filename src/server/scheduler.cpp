#include "server/scheduler.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "decode/early_exit_drafter.h"
#include "decode/model_drafter.h"
#include "decode/ngram_drafter.h"
#include "kernels/ops.h"
#include "memory/splice.h"
#include "memory/store.h"

namespace skiff::server {

using Clock = std::chrono::steady_clock;

struct Scheduler::Slot {
  Slot(std::unique_ptr<Context> context, int group) : owned(std::move(context)), ctx(*owned), group(group) {}

  std::unique_ptr<Context> owned;
  Context& ctx;
  int group = 0;           // micro-batch group
  bool in_flight = false;  // its rows are in the group's batch in flight
  // The sequence: its first cached() tokens are in the cache, the rest wait for a forward pass
  // (a prompt's unread part, or the one token just sampled).
  std::vector<int32_t> tokens;
  std::shared_ptr<Task> task;  // null: free (the cache is kept for prefix reuse)
  int seq = 0;                 // choice index, or input index for embeddings
  int generated = 0;
  Slot* leader = nullptr;      // n > 1: this slot waits for the leader to prefill the prompt
  std::vector<Slot*> followers;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StreamDecoder> decoder;
  std::unique_ptr<StopStrings> stops;
  std::vector<double> pooled;  // embeddings: sum of the final normalized states
  int pooled_rows = 0;
  std::optional<JsonConstraint> json;  // response_format: the text so far, as JSON
  // Speculative decoding: a round per step, its verification in the batched pass.
  std::unique_ptr<Drafter> drafter;
  EarlyExitDrafter* early = nullptr;  // the drafter, when it is self-speculation's
  std::unique_ptr<SpeculativeRun> spec;
  std::optional<SpeculativeRun::Verification> verification;  // this step's round, drafted
  bool stop_matched = false;

  bool busy() const { return task != nullptr; }
  int cached() const { return ctx.cache().length(0); }
  int uncached() const { return static_cast<int>(tokens.size()) - cached(); }
};

namespace {

size_t common_prefix(const std::vector<int32_t>& a, int a_len, const std::vector<int32_t>& b) {
  const size_t n = std::min(static_cast<size_t>(a_len), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// log-softmax of the logits at `id`, and the `top` most likely tokens.
TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int top) {
  float mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, x);
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x - mx));
  const float log_z = mx + static_cast<float>(std::log(sum));
  TokenLogprob lp;
  lp.id = id;
  lp.logprob = logits[static_cast<size_t>(id)] - log_z;
  if (top > 0) {
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    const size_t k = std::min(static_cast<size_t>(top), ids.size());
    std::partial_sort(ids.begin(), ids.begin() + static_cast<long>(k), ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (size_t i = 0; i < k; ++i) lp.top.emplace_back(ids[i], logits[static_cast<size_t>(ids[i])] - log_z);
  }
  return lp;
}

}  // namespace

Scheduler::Scheduler(const Model& model, const SchedulerOptions& options)
    : model_(model), options_(options), pool_(options.threads) {
  if (options.slots < 1 || options.slots > 256) fail("--parallel must be in 1..256, got {}", options.slots);
  if (options.batch_rows < 1) fail("batch rows must be positive");
  if (options.micro_batches < 1 || options.micro_batches > options.slots)
    fail("--micro-batches must be in 1..--parallel ({}), got {}", options.slots, options.micro_batches);
  for (int i = 0; i < options.slots; ++i) {
    std::unique_ptr<Context> ctx = options.make_context
                                       ? options.make_context(i, pool_)
                                       : std::make_unique<Context>(model, options.context_length, pool_, options.kv_types);
    slots_.push_back(std::make_unique<Slot>(std::move(ctx), i % options.micro_batches));
  }
  flights_.resize(static_cast<size_t>(options.micro_batches));
  context_length_ = slots_[0]->ctx.context_length();
  stats_.slots = options.slots;
  stats_.kv_capacity = static_cast<int64_t>(context_length_) * options.slots;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { shutdown(std::chrono::milliseconds(0)); }

bool Scheduler::submit(std::shared_ptr<Task> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || static_cast<int>(queue_.size()) >= options_.max_queue) return false;
    queue_.push_back(std::move(task));
    stats_.queue_depth = static_cast<int>(queue_.size());
  }
  cv_.notify_all();
  return true;
}

void Scheduler::shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (!thread_.joinable()) return;
  const auto until = Clock::now() + grace;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty() && stats_.slots_busy == 0) break;
    }
    if (Clock::now() >= until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  drain_deadline_passed_ = true;
  cv_.notify_all();
  thread_.join();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Scheduler::loop() {
  for (int group = 0;; group = (group + 1) % options_.micro_batches) {
    admit();
    const bool any_busy = std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->busy(); });
    if (!any_busy) {
      std::unique_lock lock(mutex_);
      if (stopping_ && (queue_.empty() || drain_deadline_passed_)) break;
      cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return !queue_.empty() || stopping_; });
      continue;
    }
    step(group);
  }
  // Whatever is still queued at the end is refused.
  std::lock_guard lock(mutex_);
  for (auto& t : queue_) t->fail("the server is shutting down");
  queue_.clear();
  stats_.queue_depth = 0;
}

void Scheduler::admit() {
  std::unique_lock lock(mutex_);
  const auto now = Clock::now();
  while (!queue_.empty()) {
    std::shared_ptr<Task> task = queue_.front();
    if (task->cancelled() || now > task->deadline() || drain_deadline_passed_) {
      queue_.pop_front();
      if (!task->cancelled())
        task->fail(drain_deadline_passed_ ? "the server is shutting down" : "request deadline exceeded in the queue");
      continue;
    }
    std::vector<Slot*> free;
    for (auto& s : slots_)
      if (!s->busy()) free.push_back(s.get());
    if (static_cast<int>(free.size()) < task->sequences()) break;  // FIFO: wait for slots
    queue_.pop_front();
    task->mark_start();
    const GenerationRequest& r = task->request();
    int next_seq = 0;
    for (const std::vector<int32_t>& prompt : r.prompts) {
      // The leader is the free slot holding the longest prefix of this prompt.
      auto best = free.begin();
      size_t best_len = 0;
      for (auto it = free.begin(); it != free.end(); ++it) {
        const size_t len = common_prefix((*it)->tokens, (*it)->cached(), prompt);
        if (len > best_len) best = it, best_len = len;
      }
      const int group = task->kind() == Task::Kind::kEmbed ? 1 : r.n;
      std::vector<Slot*> members = {*best};
      free.erase(best);
      for (int i = 1; i < group; ++i) {
        members.push_back(free.back());
        free.pop_back();
      }
      // Embeddings pool every position, so they read the whole prompt; a memory request's
      // entries are spliced in afresh.
      const int reuse = task->kind() == Task::Kind::kEmbed || r.memory
                            ? 0
                            : static_cast<int>(std::min(best_len, prompt.size() - 1));
      for (size_t i = 0; i < members.size(); ++i) {
        Slot& s = *members[i];
        s.task = task;
        s.seq = next_seq++;
        s.generated = 0;
        s.tokens = prompt;
        s.ctx.cache().truncate_all(i == 0 ? reuse : 0);
        s.leader = i == 0 ? nullptr : members[0];
        if (i > 0) members[0]->followers.push_back(&s);
        if (task->kind() == Task::Kind::kEmbed) {
          s.pooled.assign(static_cast<size_t>(model_.config.dim), 0.0);
          s.pooled_rows = 0;
          continue;
        }
        SamplerParams sp = r.sampling;
        sp.seed += static_cast<uint64_t>(s.seq);  // n > 1: each choice its own stream
        s.sampler = std::make_unique<Sampler>(sp);
        s.decoder = std::make_unique<StreamDecoder>(*model_.tokenizer);
        s.decoder->set_after_bos(false);
        s.stops = std::make_unique<StopStrings>(r.stop);
        if (r.json_constraint) s.json = *r.json_constraint;
        s.stop_matched = false;
      }
      int spliced = 0;
      if (r.memory) {
        try {
          spliced = splice_memory(*members[0], r);
        } catch (const Error& e) {
          task->fail(e.what());
          release(*members[0]);
          break;
        }
      }
      task->add_usage(static_cast<int>(prompt.size()), 0, reuse + spliced);
      stats_.cached_tokens += reuse;
    }
  }
  stats_.queue_depth = static_cast<int>(queue_.size());
}

int Scheduler::splice_memory(Slot& slot, const GenerationRequest& r) {
  // BOS first (position 0, as the store's reader was trained), then each entry's stored KV
  // re-rotated to its positions; the batched pass then prefills the prompt, which reads all.
  const ModelConfig& c = model_.config;
  if (slot.ctx.remote_layers())
    fail("memory-augmented requests need every layer in one process; this server runs pipeline stages");
  std::vector<float> bos(static_cast<size_t>(c.dim));
  embed(model_, {slot.tokens.data(), 1}, bos.data());
  forward(slot.ctx, bos.data(), 1, 0, c.n_layers);
  side_prompt_rows_ += 1;
  int stored = r.memory_positions - 1;
  if (r.memory_recompute == 0) {
    memory::splice(slot.ctx, *r.memory, r.memory_entries);
  } else {
    const int prefilled = memory::splice_recomputing(slot.ctx, *r.memory, r.memory_entries, r.memory_recompute);
    side_prompt_rows_ += prefilled;
    stored -= prefilled;
  }
  if (slot.cached() != r.memory_positions)
    fail("memory: the spliced entries hold {} positions, the request laid out {}", slot.cached() - 1,
         r.memory_positions - 1);
  return stored;
}

void Scheduler::release(Slot& slot) {
  // Keep what every layer's cache holds (self-speculation's late layers can lag before its
  // first verification) for prefix reuse; not spliced memories, whose block-attention KV a
  // prompt with the same tokens must not reuse.
  KvCache& cache = slot.ctx.cache();
  int held = static_cast<int>(slot.tokens.size());
  if (slot.task && slot.task->request().memory) held = 0;
  for (int l = 0; l < cache.n_layers(); ++l) held = std::min(held, cache.length(l));
  cache.truncate_all(held);
  slot.tokens.resize(static_cast<size_t>(held));
  slot.task.reset();
  if (slot.spec) {
    const SpecStats& st = slot.spec->stats();
    spec_rounds_ += st.rounds;
    draft_tokens_ += st.drafted;
    draft_accepted_ += st.accepted;
  }
  slot.verification.reset();
  slot.spec.reset();
  slot.early = nullptr;
  slot.drafter.reset();
  slot.json.reset();
  slot.leader = nullptr;
  slot.followers.clear();
  slot.sampler.reset();
  slot.decoder.reset();
  slot.stops.reset();
}

void Scheduler::finish(Slot& slot, const char* reason) {
  Task& task = *slot.task;
  if (!slot.stops->stopped()) {
    StopStrings::Output out = slot.stops->push(slot.decoder->flush());
    std::string text = out.text;
    if (!out.stopped) text += slot.stops->flush();
    if (!text.empty()) {
      Event e;
      e.choice = slot.seq;
      e.text = std::move(text);
      task.push(std::move(e));
    }
  }
  Event e;
  e.kind = Event::Kind::kFinish;
  e.choice = slot.seq;
  e.finish_reason = reason;
  task.push(std::move(e));
  task.add_usage(0, slot.generated, 0);
  task.sequence_done();
  if (task.done()) ++finished_tasks_;
  release(slot);
}

bool Scheduler::push_text(Slot& slot, int32_t token, const float* logits) {
  Task& task = *slot.task;
  const GenerationRequest& r = task.request();
  ++slot.generated;
  ++generated_;
  task.mark_token();
  Event e;
  e.choice = slot.seq;
  const size_t vocab = static_cast<size_t>(model_.config.vocab_size);
  if (r.logprobs && logits) e.tokens.push_back(token_logprob({logits, vocab}, token, r.top_logprobs));
  else e.tokens.push_back({token, 0, {}});
  StopStrings::Output out = slot.stops->push(slot.decoder->push(token));
  e.text = std::move(out.text);
  task.push(std::move(e));
  slot.stop_matched = out.stopped;
  return out.stopped;
}

void Scheduler::emit_token(Slot& slot, int32_t token, const float* logits) {
  if (model_.tokenizer->is_eog(token)) {
    finish(slot, "stop");
    return;
  }
  slot.tokens.push_back(token);
  if (slot.json) slot.json->accept(model_.tokenizer->token_bytes(token));
  if (push_text(slot, token, logits)) finish(slot, "stop");
  else if (slot.generated >= slot.task->request().max_tokens) finish(slot, "length");
  else if (static_cast<int>(slot.tokens.size()) > context_length_) finish(slot, "length");
}

bool Scheduler::speculative(const Slot& slot) const {
  return slot.busy() && slot.task->kind() == Task::Kind::kGenerate && slot.task->request().spec.enabled();
}

void Scheduler::start_spec(Slot& slot) {
  // The batched pass has prefilled every prompt token but the newest, which the first
  // round's verification takes (the run's invariant between rounds).
  const GenerationRequest& r = slot.task->request();
  if (r.spec.exit_layer > 0) {
    auto early = std::make_unique<EarlyExitDrafter>(
        slot.ctx, r.spec.exit_layer, r.spec.draft_p_min,
        SelfSpecOptions{r.spec.adaptive, r.spec.lookup_ngram, options_.draft_head, r.spec.dynamic_exit});
    slot.early = early.get();
    slot.drafter = std::move(early);
  } else if (r.spec.lookup_ngram > 0) slot.drafter = std::make_unique<NgramDrafter>(model_, r.spec.lookup_ngram);
  else if (options_.draft_model)  // its own small cache, on the model thread's pool (drafting is between passes)
    slot.drafter = std::make_unique<ModelDrafter>(model_, *options_.draft_model, context_length_, pool_, r.spec.draft_p_min);
  else fail("draft-model speculation was asked for but the server has no draft model");
  SpecParams params;
  params.draft_max = r.spec.draft_max;
  Slot* s = &slot;
  auto on_token = [this, s](int32_t token) {
    s->tokens.push_back(token);
    return !push_text(*s, token, nullptr);
  };
  slot.spec = std::make_unique<SpeculativeRun>(slot.ctx, *slot.sampler, *slot.drafter, slot.tokens, slot.cached(),
                                               r.max_tokens, params, on_token);
}

void Scheduler::end_spec(Slot& slot) {
  const GenerateStats& g = slot.spec->stats().generation;
  finish(slot, g.hit_eos || slot.stop_matched ? "stop" : "length");
}

void Scheduler::sample_and_emit(Slot& slot, const float* logits) {
  const GenerationRequest& r = slot.task->request();
  const size_t vocab = static_cast<size_t>(model_.config.vocab_size);
  // The logits row may be shared with other choices of the request: bias and mask a copy.
  if (!r.logit_bias.empty() || slot.json) {
    biased_.assign(logits, logits + vocab);
    for (const auto& [id, bias] : r.logit_bias) biased_[static_cast<size_t>(id)] += bias;
    if (slot.json) {
      if (!json_mask_) json_mask_ = std::make_unique<JsonTokenMask>(*model_.tokenizer);
      json_mask_->apply(*slot.json, biased_);
    }
    logits = biased_.data();
  }
  const int32_t token = slot.sampler->sample({logits, vocab}, slot.tokens);
  emit_token(slot, token, logits);
}

void Scheduler::step(int group) {
  const auto start = Clock::now();
  const ModelConfig& c = model_.config;
  auto mine = [&](const Slot& s) { return s.group == group; };
  Flight& flight = flights_[static_cast<size_t>(group)];
  int64_t prompt_rows = 0, busy = 0;
  if (flight.active) {
    prompt_rows += finish_batch(flight);
    busy += static_cast<int64_t>(flight.hidden.size()) / c.dim;
  }

  // Ended tasks free their slots first: the client left, the deadline passed, or shutdown.
  for (auto& s : slots_) {
    if (!s->busy() || !mine(*s)) continue;
    Task& t = *s->task;
    if (t.cancelled() || t.done() || start > t.deadline() || drain_deadline_passed_) {
      if (!t.cancelled() && !t.done())
        t.fail(drain_deadline_passed_ ? "the server is shutting down" : "request deadline exceeded");
      release(*s);
    }
  }

  // Speculating sequences draft first; their verification rows join the batch.
  const std::vector<Slot*> verifying = draft_rounds(group);

  // The rows of this step: decoding sequences first (one token each), so a long prompt never
  // stalls them, then speculative verifications, then prompt chunks while the row budget
  // lasts (a speculating sequence's chunks stop short of its newest token, which its first
  // round verifies). Verification rows go last in the batch, ordered by entry layer.
  flight.seqs.clear();
  flight.in_batch.clear();
  rows_.clear();
  int budget = options_.batch_rows;
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& s : slots_) {
      if (!s->busy() || !mine(*s) || s->leader || s->in_flight) continue;
      const bool spec = speculative(*s);
      const int n = s->uncached() - (spec ? 1 : 0);
      if (n <= 0 || (pass == 0) != (n == 1 && !spec)) continue;
      const int take = std::min(n, budget);
      if (take == 0) continue;
      budget -= take;
      rows_.insert(rows_.end(), s->tokens.begin() + s->cached(), s->tokens.begin() + s->cached() + take);
      flight.seqs.push_back({&s->ctx, take});
      flight.in_batch.push_back(s.get());
    }
    if (pass == 0)
      for (const Slot* s : verifying) budget -= static_cast<int>(s->verification->rows);
    budget = std::max(budget, 0);
  }
  if (!flight.seqs.empty() || !verifying.empty()) {
    const int64_t embedded = static_cast<int64_t>(rows_.size());
    int64_t T = embedded;
    for (const Slot* s : verifying) T += s->verification->rows;
    flight.hidden.resize(static_cast<size_t>(T) * c.dim);
    embed(model_, rows_, flight.hidden.data());
    entry_layers_.assign(flight.seqs.size(), 0);
    float* out = flight.hidden.data() + static_cast<size_t>(embedded) * c.dim;
    for (Slot* s : verifying) {
      const SpeculativeRun::Verification& v = *s->verification;
      out = std::copy(v.hidden, v.hidden + static_cast<size_t>(v.rows) * c.dim, out);
      flight.seqs.push_back({&s->ctx, v.rows});
      flight.in_batch.push_back(s);
      entry_layers_.push_back(v.first_layer);
    }
    if (verifying.empty()) {
      flight.ticket = start_forward_batch(flight.seqs, flight.hidden.data(), 0, c.n_layers);
    } else {
      forward_batch_entering(flight.seqs, entry_layers_, flight.hidden.data(), c.n_layers);
      flight.ticket = kNoTicket;
    }
    flight.active = true;
    for (Slot* s : flight.in_batch) s->in_flight = true;
    // One process (or one group): the pass is done, finish it now; pipeline stages with
    // several groups: its next turn finishes it, the other groups go first.
    if (flight.ticket == kNoTicket || options_.micro_batches == 1) {
      prompt_rows += finish_batch(flight);
      busy += T;
    }
  }
  if (slots_[0]->ctx.remote_layers()) remote_rounds(group, prompt_rows, busy);

  int slots_busy = 0;
  int64_t kv_used = 0;
  for (auto& s : slots_) {
    slots_busy += s->busy();
    kv_used += s->cached();
  }
  std::lock_guard lock(mutex_);
  if (busy > 0 || flight.active) {
    ++stats_.steps;
    stats_.busy_seconds += std::chrono::duration<double>(Clock::now() - start).count();
  }
  stats_.prompt_tokens += prompt_rows + side_prompt_rows_;
  side_prompt_rows_ = 0;
  stats_.generated_tokens = generated_;
  stats_.requests = finished_tasks_;
  stats_.spec_rounds = spec_rounds_;
  stats_.draft_tokens = draft_tokens_;
  stats_.draft_accepted = draft_accepted_;
  stats_.slots_busy = slots_busy;
  stats_.kv_used = kv_used;
}

bool Scheduler::spec_ready(const Slot& slot, int group) const {
  return speculative(slot) && slot.group == group && !slot.in_flight && slot.uncached() == 1;
}

std::vector<Scheduler::Slot*> Scheduler::draft_rounds(int group) {
  // With pipeline stages (layers in other processes) rounds run on their own after the batch.
  std::vector<Slot*> verifying, lockstep;
  if (slots_[0]->ctx.remote_layers()) return verifying;
  for (auto& s : slots_) {
    if (!spec_ready(*s, group)) continue;
    if (!s->spec) start_spec(*s);
    const std::optional<SpeculativeRun::Proposal> p = s->spec->start_round();
    if (!p) {
      end_spec(*s);
    } else if (s->early) {
      s->early->begin_proposal(p->tokens, p->max_drafts, *p->sampler, *p->out);
      lockstep.push_back(s.get());
    } else {
      s->drafter->propose(p->tokens, p->max_drafts, *p->sampler, *p->out);
      s->verification = s->spec->drafted();
      verifying.push_back(s.get());
    }
  }
  draft_in_lockstep(lockstep);
  for (Slot* s : lockstep) {
    s->verification = s->spec->drafted();
    verifying.push_back(s);
  }
  // Ordered by entry layer: forward_batch_entering runs each layer range over a prefix.
  std::stable_sort(verifying.begin(), verifying.end(), [](const Slot* a, const Slot* b) {
    return a->verification->first_layer < b->verification->first_layer;
  });
  return verifying;
}

void Scheduler::remote_rounds(int group, int64_t& prompt_rows, int64_t& busy) {
  for (auto& s : slots_) {
    if (!spec_ready(*s, group)) continue;
    if (!s->spec) start_spec(*s);
    const int before = s->generated;
    if (!s->spec->round()) end_spec(*s);
    if (before == 0) ++prompt_rows;  // the prompt's newest token went into the first round
    busy += std::max(1, s->generated - before);
  }
}

void Scheduler::draft_in_lockstep(const std::vector<Slot*>& slots) {
  // Each pass runs, for every self-speculating slot still drafting, its next early step (one
  // token: the newest or its last draft; lookup drafts: several) through layers [0, E) of
  // its own exit E, then one early-head pass over the last states of those that draft on.
  // Slots leaving earlier go last in the batch (forward_batch_leaving).
  const ModelConfig& c = model_.config;
  std::vector<Slot*> step;
  for (;;) {
    step.clear();
    for (Slot* s : slots)
      if (!s->early->early_tokens().empty()) step.push_back(s);
    if (step.empty()) return;
    std::stable_sort(step.begin(), step.end(),
                     [](const Slot* a, const Slot* b) { return a->early->exit_layer() > b->early->exit_layer(); });
    draft_rows_.clear();
    draft_seqs_.clear();
    exit_layers_.clear();
    for (Slot* s : step) {
      const std::span<const int32_t> t = s->early->early_tokens();
      draft_rows_.insert(draft_rows_.end(), t.begin(), t.end());
      draft_seqs_.push_back({&s->ctx, static_cast<int64_t>(t.size())});
      exit_layers_.push_back(s->early->exit_layer());
    }
    draft_hidden_.resize(draft_rows_.size() * static_cast<size_t>(c.dim));
    embed(model_, draft_rows_, draft_hidden_.data());
    forward_batch_leaving(draft_seqs_, exit_layers_, draft_hidden_.data());
    // The early head over the last state of each slot that drafts on (one head: every
    // slot's is the server's --draft-head copy or the model's output).
    head_states_.clear();
    std::vector<bool> wants(step.size());
    int64_t row = 0;
    for (size_t i = 0; i < step.size(); ++i) {
      row += draft_seqs_[i].rows;
      wants[i] = step[i]->early->wants_logits();
      if (!wants[i]) continue;
      if (step[i]->early->head() != step[0]->early->head()) fail("self-speculating slots with different early heads");
      const float* h = &draft_hidden_[static_cast<size_t>(row - 1) * c.dim];
      head_states_.insert(head_states_.end(), h, h + c.dim);
    }
    const int64_t heads = static_cast<int64_t>(head_states_.size()) / c.dim;
    if (heads > 0) {
      draft_logits_.resize(static_cast<size_t>(heads) * c.vocab_size);
      compute_logits(step[0]->ctx, head_states_.data(), heads, draft_logits_.data(), step[0]->early->head());
    }
    row = 0;
    int64_t head_row = 0;
    for (size_t i = 0; i < step.size(); ++i) {
      EarlyExitDrafter& d = *step[i]->early;
      d.early_done(&draft_hidden_[static_cast<size_t>(row) * c.dim]);
      row += draft_seqs_[i].rows;
      if (!wants[i]) continue;
      d.drafted({&draft_logits_[static_cast<size_t>(head_row++) * c.vocab_size], static_cast<size_t>(c.vocab_size)});
    }
  }
}

int64_t Scheduler::finish_batch(Flight& flight) {
  const ModelConfig& c = model_.config;
  finish_forward_batch(flight.seqs, flight.ticket, flight.hidden.data());
  flight.active = false;
  for (Slot* s : flight.in_batch) s->in_flight = false;
  std::vector<float>& hidden = flight.hidden;
  const std::vector<BatchSeq>& seqs = flight.seqs;
  const std::vector<Slot*>& in_batch = flight.in_batch;

  // Sequences whose tokens are now all in the cache get logits (or their pooled state).
  int64_t prompt_rows = 0;
  std::vector<Slot*> sampled;
  last_hidden_.clear();
  int64_t row = 0;
  std::vector<Slot*> verified;
  spec_hidden_.clear();
  for (size_t i = 0; i < in_batch.size(); ++i) {
    Slot& s = *in_batch[i];
    const int64_t end = row + seqs[i].rows;
    if (s.verification) {
      // A speculative round: the target's logits of its drafts' positions and the next. Of
      // its rows only the first round's first, the prompt's newest token, is the prompt's.
      if (s.generated == 0) ++prompt_rows;
      verified.push_back(&s);
      const int64_t from = end - s.verification->logit_rows;
      spec_hidden_.insert(spec_hidden_.end(), &hidden[static_cast<size_t>(from) * c.dim],
                          &hidden[static_cast<size_t>(end) * c.dim]);
      row = end;
      continue;
    }
    if (s.generated == 0) prompt_rows += seqs[i].rows;  // rows before the first token are the prompt's
    if (s.task->kind() == Task::Kind::kEmbed) {
      std::vector<float> norm(static_cast<size_t>(c.dim));
      for (int64_t t = row; t < end; ++t) {
        rmsnorm(norm.data(), &hidden[static_cast<size_t>(t) * c.dim], model_.output_norm.f32(), c.dim, c.rms_eps);
        for (int d = 0; d < c.dim; ++d) s.pooled[static_cast<size_t>(d)] += norm[static_cast<size_t>(d)];
      }
      s.pooled_rows += static_cast<int>(seqs[i].rows);
    } else if (s.uncached() == 0) {
      sampled.push_back(&s);
      const float* h = &hidden[static_cast<size_t>(end - 1) * c.dim];
      last_hidden_.insert(last_hidden_.end(), h, h + c.dim);
    }
    row = end;
  }
  for (Slot* s : in_batch) {
    if (s->task->kind() != Task::Kind::kEmbed || s->uncached() != 0) continue;
    // Mean of the final normalized states, scaled to unit length (as OpenAI's embeddings).
    Event e;
    e.kind = Event::Kind::kEmbedding;
    e.choice = s->seq;
    double norm2 = 0;
    for (double v : s->pooled) norm2 += (v / s->pooled_rows) * (v / s->pooled_rows);
    const double inv = norm2 > 0 ? 1.0 / std::sqrt(norm2) : 0.0;
    for (double v : s->pooled) e.embedding.push_back(static_cast<float>(v / s->pooled_rows * inv));
    s->task->push(std::move(e));
    s->task->sequence_done();
    if (s->task->done()) ++finished_tasks_;
    release(*s);
  }
  // One head pass for every row that needs logits: sampled sequences' last rows, then the
  // speculative rounds' rows.
  const int64_t k = static_cast<int64_t>(sampled.size());
  last_hidden_.insert(last_hidden_.end(), spec_hidden_.begin(), spec_hidden_.end());
  const int64_t logit_rows = static_cast<int64_t>(last_hidden_.size()) / c.dim;
  if (logit_rows > 0) {
    logits_.resize(static_cast<size_t>(logit_rows) * c.vocab_size);
    compute_logits(slots_[0]->ctx, last_hidden_.data(), logit_rows, logits_.data());
  }
  int64_t spec_row = k;
  for (Slot* s : verified) {
    const float* logits = &logits_[static_cast<size_t>(spec_row) * c.vocab_size];
    spec_row += s->verification->logit_rows;
    s->verification.reset();
    if (!s->spec->end_round(logits)) end_spec(*s);
  }
  if (!sampled.empty()) {
    for (int64_t i = 0; i < k; ++i) {
      Slot& s = *sampled[static_cast<size_t>(i)];
      const float* logits = &logits_[static_cast<size_t>(i) * c.vocab_size];
      // n > 1: the other choices take the prompt's KV and sample from the same logits (a
      // follower whose task ended meanwhile has another leader, or none).
      std::vector<Slot*> followers = std::move(s.followers);
      s.followers.clear();
      sample_and_emit(s, logits);
      for (Slot* f : followers) {
        if (!f->busy() || f->leader != &s) continue;
        copy_sequence_prefix(s.ctx, f->ctx, static_cast<int>(f->tokens.size()));
        f->leader = nullptr;
        sample_and_emit(*f, logits);
      }
    }
  }
  return prompt_rows;
}

}  // namespace skiff::server

// One request in flight between an HTTP thread and the scheduler: the scheduler pushes events
// (text of a choice, its end, an error), the HTTP thread takes them as they come (streaming)
// or all at the end. Either side may end it: cancel() (the client left, the deadline passed)
// is seen by the scheduler at its next step, which frees the request's slots.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "server/request.h"

namespace skiff::server {

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely tokens, descending
};

struct Event {
  enum class Kind { kText, kFinish, kError, kEmbedding };
  Kind kind = Kind::kText;
  int choice = 0;                    // kText/kFinish: choice index; kEmbedding: input index
  std::string text;                  // kText: text safe to show; kError: the message
  std::vector<TokenLogprob> tokens;  // kText: tokens generated in this step (with logprobs if asked)
  std::string finish_reason;         // kFinish: "stop" or "length"
  std::vector<float> embedding;      // kEmbedding
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;  // prompt tokens whose KV was already in a slot (prefix reuse)
};

// When a task's work happened: prefill from `start` (the scheduler took it) to the first
// token, decoding from the first token to the last (of any choice).
struct Timings {
  using Clock = std::chrono::steady_clock;
  Clock::time_point start{}, first_token{}, last_token{};
  bool started = false;
  int tokens = 0;
};

class Task {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Kind { kGenerate, kEmbed };

  Task(Kind kind, GenerationRequest request, Clock::time_point deadline)
      : kind_(kind), request_(std::move(request)), deadline_(deadline) {}

  Kind kind() const { return kind_; }
  const GenerationRequest& request() const { return request_; }
  Clock::time_point deadline() const { return deadline_; }
  // Sequences the task runs: prompts x n (embeddings: one per input).
  int sequences() const { return static_cast<int>(request_.prompts.size()) * request_.n; }

  // HTTP side. Waits up to `timeout` for events and returns those available (maybe none).
  std::vector<Event> take(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return !events_.empty() || done_; });
    std::vector<Event> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }
  // Every sequence has finished (or the task failed) and the last events were pushed.
  bool done() const {
    std::lock_guard lock(mutex_);
    return done_;
  }
  // Sleeps until `until` or until the task is done, whichever is first; true when done. Tokens
  // pushed meanwhile do not wake it (the stream writer batches them), the end does: the last
  // chunk of a stream is not held back by the write interval.
  bool wait_done_until(Clock::time_point until) const {
    std::unique_lock lock(mutex_);
    return done_cv_.wait_until(lock, until, [&] { return done_; });
  }
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  Usage usage() const {
    std::lock_guard lock(mutex_);
    return usage_;
  }
  Timings timings() const {
    std::lock_guard lock(mutex_);
    return timings_;
  }

  // Scheduler side.
  void push(Event e) {
    {
      std::lock_guard lock(mutex_);
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  void mark_start() {
    std::lock_guard lock(mutex_);
    if (timings_.started) return;
    timings_.started = true;
    timings_.start = Clock::now();
  }
  // A token was generated (before its text is pushed, so the timing is final with the last event).
  void mark_token() {
    const auto now = Clock::now();
    std::lock_guard lock(mutex_);
    if (timings_.tokens++ == 0) timings_.first_token = now;
    timings_.last_token = now;
  }
  void add_usage(int prompt, int completion, int cached) {
    std::lock_guard lock(mutex_);
    usage_.prompt_tokens += prompt;
    usage_.completion_tokens += completion;
    usage_.cached_tokens += cached;
  }
  // One sequence ended; the task is done after the last.
  void sequence_done() {
    {
      std::lock_guard lock(mutex_);
      if (++finished_ >= sequences()) done_ = true;
    }
    cv_.notify_all();
    done_cv_.notify_all();
  }
  // Ends the task with an error event (the remaining sequences are abandoned).
  void fail(const std::string& message) {
    {
      std::lock_guard lock(mutex_);
      Event e;
      e.kind = Event::Kind::kError;
      e.text = message;
      events_.push_back(std::move(e));
      done_ = true;
    }
    cv_.notify_all();
    done_cv_.notify_all();
  }

 private:
  const Kind kind_;
  const GenerationRequest request_;
  const Clock::time_point deadline_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mutex_;
  std::condition_variable cv_;               // events or the end
  mutable std::condition_variable done_cv_;  // the end only
  std::deque<Event> events_;
  Usage usage_;
  Timings timings_;
  int finished_ = 0;
  bool done_ = false;
};

}  // namespace skiff::server

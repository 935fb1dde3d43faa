// A fixed pool of worker threads for data-parallel loops. The calling thread takes part, so
// a pool of n threads starts n-1 workers. Idle workers sleep on a condition variable (no
// spinning); a loop is split into one contiguous chunk per thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace skiff {

class ThreadPool {
 public:
  // n_threads <= 0 means one per available core.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end, thread_index) over a partition of [0, n) into at most size() chunks
  // and returns when all are done. Not reentrant: fn must not call parallel_for.
  using Body = std::function<void(int64_t begin, int64_t end, int thread)>;
  void parallel_for(int64_t n, const Body& fn);

  static int default_thread_count();

 private:
  void worker_loop(int index);
  void run_chunk(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const Body* body_ = nullptr;
  int64_t n_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
};

}  // namespace skiff

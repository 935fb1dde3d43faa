// A fixed pool of worker threads for data-parallel loops. The calling thread takes part, so
// a pool of n threads starts n-1 workers. Between loops a worker spins briefly (decode runs
// hundreds of small loops per token, and a futex wake-up costs more than most of them), then
// sleeps on a futex, so an idle pool burns no CPU. Results never depend on the thread count:
// callers compute each output element wholly inside one chunk.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
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

  // Like parallel_for, but [0, n) is cut into chunks of `grain` that threads take as they
  // become free: balances uneven work and cores shared with other processes.
  void parallel_for_dynamic(int64_t n, int64_t grain, const Body& fn);

  // Runs fn over the chunks [bounds[i], bounds[i + 1]) of [bounds[0], bounds.back()), which
  // threads take in order as they become free. Decreasing sizes (guided_bounds) keep the
  // last chunk small, so no thread waits long for another at the end.
  void parallel_for_chunks(std::span<const int64_t> bounds, const Body& fn);

  // How long an idle worker spins before it sleeps (microseconds; 0 sleeps at once).
  void set_spin_microseconds(int us) { spin_us_ = us; }

  static int default_thread_count();

 private:
  void worker_loop(int index);
  // Claims and runs chunks of the current loop until none is left.
  void run_chunks(int index);
  void dispatch(int64_t n, int64_t grain, const Body& fn, const int64_t* bounds = nullptr, uint32_t chunks = 0);

  int n_threads_;
  int spin_us_ = 200;
  std::vector<std::thread> workers_;
  // The current loop. Chunks are claimed through claim_, so a worker that wakes late (its
  // core busy with another process) never holds the caller up: the caller runs the
  // unclaimed chunks itself and waits only for chunks already started. job_ and claim_ carry
  // the loop's epoch in their high 32 bits, so a late worker cannot claim a chunk of a loop
  // that has already finished; body_, n_ and grain_ are only read after a successful claim.
  const Body* body_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  const int64_t* bounds_ = nullptr;  // explicit chunk boundaries, or chunks of grain_
  uint32_t epoch_ = 0;
  alignas(64) std::atomic<uint64_t> job_{0};    // epoch << 32 | number of chunks
  alignas(64) std::atomic<uint64_t> claim_{0};  // epoch << 32 | next chunk
  alignas(64) std::atomic<uint32_t> done_{0};   // chunks finished
  alignas(64) std::atomic<uint32_t> wake_{0};   // bumped for each loop; idle workers wait on it
  std::atomic<bool> stopping_{false};
};

// Chunk boundaries over [0, n) for `threads` threads, each chunk about 1/(2 threads) of what
// is left, at least min_chunk: 128 units on 2 threads -> 32, 24, 18, 14, 10, ... 1. Appends to
// `out` (cleared first).
void guided_bounds(int64_t n, int threads, int64_t min_chunk, std::vector<int64_t>& out);

}  // namespace skiff

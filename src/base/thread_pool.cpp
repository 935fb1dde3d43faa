#include "base/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace skiff {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Waits until `value` differs from `old`: spins for up to spin_us, then sleeps on a futex
// (std::atomic::wait). Returns the new value.
template <class T>
T wait_for_change(const std::atomic<T>& value, T old, int spin_us) {
  T now = value.load(std::memory_order_acquire);
  if (now != old) return now;
  if (spin_us > 0) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
    for (;;) {
      for (int i = 0; i < 64; ++i) {
        cpu_relax();
        now = value.load(std::memory_order_acquire);
        if (now != old) return now;
      }
      if (std::chrono::steady_clock::now() > deadline) break;
    }
  }
  for (;;) {
    value.wait(old, std::memory_order_acquire);
    now = value.load(std::memory_order_acquire);
    if (now != old) return now;
  }
}

}  // namespace

int ThreadPool::default_thread_count() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int n_threads)
    : n_threads_(n_threads <= 0 ? default_thread_count() : n_threads) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stopping_.store(true, std::memory_order_release);
  wake_.fetch_add(1, std::memory_order_acq_rel);
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::run_chunks(int index) {
  for (;;) {
    const uint64_t job = job_.load(std::memory_order_acquire);
    uint64_t claim = claim_.load(std::memory_order_acquire);
    if ((job >> 32) != (claim >> 32)) continue;  // the caller is publishing a loop right now
    const uint32_t total = static_cast<uint32_t>(job);
    const uint32_t chunk = static_cast<uint32_t>(claim);
    if (chunk >= total) return;
    if (!claim_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel)) continue;
    if (bounds_ != nullptr) {
      (*body_)(bounds_[chunk], bounds_[chunk + 1], index);
    } else {
      const int64_t begin = static_cast<int64_t>(chunk) * grain_;
      (*body_)(begin, std::min(n_, begin + grain_), index);
    }
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == total) done_.notify_one();
  }
}

void ThreadPool::worker_loop(int index) {
  uint32_t seen = 0;
  for (;;) {
    seen = wait_for_change(wake_, seen, spin_us_);
    if (stopping_.load(std::memory_order_acquire)) return;
    run_chunks(index);
  }
}

void ThreadPool::dispatch(int64_t n, int64_t grain, const Body& fn, const int64_t* bounds, uint32_t chunks) {
  grain = std::max<int64_t>(1, grain);
  const auto total = bounds != nullptr ? chunks : static_cast<uint32_t>((n + grain - 1) / grain);
  body_ = &fn;
  n_ = n;
  grain_ = grain;
  bounds_ = bounds;
  done_.store(0, std::memory_order_relaxed);
  const uint64_t epoch = uint64_t{++epoch_} << 32;
  job_.store(epoch | total, std::memory_order_release);
  claim_.store(epoch, std::memory_order_release);
  wake_.fetch_add(1, std::memory_order_acq_rel);
  wake_.notify_all();
  run_chunks(0);
  uint32_t done = done_.load(std::memory_order_acquire);
  while (done != total) done = wait_for_change(done_, done, spin_us_);
  body_ = nullptr;
  bounds_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, const Body& fn) {
  if (n <= 0) return;
  if (n_threads_ == 1 || n == 1) {
    fn(0, n, 0);
    return;
  }
  // One chunk per thread, as a static split would cut them; any thread may take any chunk.
  dispatch(n, (n + n_threads_ - 1) / n_threads_, fn);
}

void ThreadPool::parallel_for_dynamic(int64_t n, int64_t grain, const Body& fn) {
  if (n <= 0) return;
  if (n_threads_ == 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  dispatch(n, grain, fn);
}

void ThreadPool::parallel_for_chunks(std::span<const int64_t> bounds, const Body& fn) {
  if (bounds.size() < 2) return;
  const auto chunks = static_cast<uint32_t>(bounds.size() - 1);
  if (n_threads_ == 1 || chunks == 1) {
    fn(bounds.front(), bounds.back(), 0);
    return;
  }
  dispatch(bounds.back(), 1, fn, bounds.data(), chunks);
}

void guided_bounds(int64_t n, int threads, int64_t min_chunk, std::vector<int64_t>& out) {
  out.clear();
  out.push_back(0);
  const int64_t parts = 2 * std::max(1, threads);
  min_chunk = std::max<int64_t>(1, min_chunk);
  for (int64_t at = 0; at < n;) {
    const int64_t size = std::max(min_chunk, (n - at + parts - 1) / parts);
    at = std::min(n, at + size);
    out.push_back(at);
  }
}

}  // namespace skiff
